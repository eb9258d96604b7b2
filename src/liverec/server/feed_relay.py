"""The live feed across processes: what goes between the FeedHubs over the store's pub/sub.

Owns: telling the other processes that an operator page on this one watches the feed
(a notice on `notify:feed-watch` every second while a page is open), sending this
process's feed entries and figures while one on another process watches (on
`notify:feed`: the entries in batches of up to `BATCH_MAX` every `BATCH_INTERVAL_S`,
the figures of `FeedHub.beat` once a second), and handing the other processes'
entries and figures to this process's hub while a page here watches.

Costs: while no page watches anywhere, an event costs nothing more (the hub's
`relay_out` is None) and a process sends nothing; it only listens on the watch
channel. While one watches, each process describes each entry once more, keeps at
most `feed_queue` of them waiting (the oldest go first, counted as dropped on the
pages) and publishes about ten messages a second; only the processes with a page
open subscribe to the entries. A process stops sending `feed_watch_s` after the
last watch notice. Only for a store shared between processes (`Store.shared_log`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from ..errors import StoreError
from ..notify import Notices
from ..store.base import Store
from .feed import BATCH_INTERVAL_S, BATCH_MAX, FeedHub

log = logging.getLogger("liverec.feed")

WATCH_CHANNEL: Final = "notify:feed-watch"
FEED_CHANNEL: Final = "notify:feed"


class _Watches(Notices):
    channel = WATCH_CHANNEL

    def __init__(self, store: Store, relay: FeedRelay) -> None:
        super().__init__(store)
        self.relay = relay

    async def hear(self, message: str) -> bool:
        return self.relay.watched_from(message)


class _Entries(Notices):
    channel = FEED_CHANNEL

    def __init__(self, store: Store, relay: FeedRelay) -> None:
        super().__init__(store)
        self.relay = relay

    async def hear(self, message: str) -> bool:
        return self.relay.heard(message)


class FeedRelay:
    """Shares one process's feed with the operator pages of the others, and back."""

    def __init__(
        self,
        store: Store,
        hub: FeedHub,
        watch_s: float,
        queue: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.hub = hub
        self.origin = store.origin
        self.watch_s = watch_s
        self.clock = clock
        self.outbox: deque[dict[str, Any]] = deque()
        self.capacity = queue
        self.dropped = 0  # entries lost since the last batch sent
        self.sent = 0  # entries published
        self.heard_entries = 0  # entries of other processes handed to this hub
        self.watched_until = 0.0  # clock: send until then
        self._beat_now = False  # a page elsewhere just started watching
        self._watches = _Watches(store, self)
        self._entries: _Entries | None = None  # listening while a page here watches
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    @property
    def sending(self) -> bool:
        return self.clock() < self.watched_until

    async def start(self) -> None:
        await self._watches.start()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="liverec-feed-relay")

    async def close(self) -> None:
        self.hub.relay_out = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._listen(False)
        await self._watches.close()

    # --- this process's entries, while a page elsewhere watches ---------------------------

    def put(self, shown: dict[str, Any]) -> None:
        """The hub's `relay_out`: keep an entry for the next batch (bounded)."""
        if len(self.outbox) >= self.capacity:
            self.outbox.popleft()  # the oldest goes: a live feed wants the newest
            self.dropped += 1
        self.outbox.append(shown)

    def watched_from(self, origin: str) -> bool:
        """A watch notice: a page on process `origin` watches (this one's own: ignored)."""
        if origin == self.origin:
            return False
        if not self.sending:
            self._beat_now = True  # its counts at once, not at the next second
        self.watched_until = self.clock() + self.watch_s
        self.hub.relay_out = self.put
        return True

    # --- the other processes' entries, while a page here watches --------------------------

    def heard(self, message: str) -> bool:
        """One message on the feed channel (ValueError when malformed)."""
        try:
            data = json.loads(message)
            if data["o"] == self.origin:
                return False
            if "beat" in data:
                self.hub.heard_beat(str(data["o"]), data["beat"])
            else:
                entries = [e for e in data["entries"][:BATCH_MAX] if isinstance(e, dict)]
                self.hub.heard_entries(entries, int(data.get("dropped", 0)))
                self.heard_entries += len(entries)
        except (TypeError, KeyError) as exc:
            raise ValueError(f"feed message not understood: {exc!r}") from exc
        return True

    async def _listen(self, on: bool) -> None:
        if on and self._entries is None:
            self._entries = _Entries(self.store, self)
            await self._entries.start()
        elif not on and self._entries is not None:
            await self._entries.close()
            self._entries = None

    # --- the loop: batches every BATCH_INTERVAL_S, notices and figures every second --------

    async def _run(self) -> None:
        second = -1
        while True:
            await asyncio.sleep(BATCH_INTERVAL_S)
            try:
                await self._step(second)
                second = int(self.hub.clock())
            except Exception:  # never let the relay die
                log.exception("feed relay step failed")

    async def _step(self, last_second: int) -> None:
        watching_here = bool(self.hub.subscribers)
        await self._listen(watching_here)
        if not self.sending:
            self.hub.relay_out = None
            self.outbox.clear()
            self.dropped = 0
        while self.outbox:
            count = min(len(self.outbox), BATCH_MAX)
            entries = [self.outbox.popleft() for _ in range(count)]
            sent = {"o": self.origin, "entries": entries, "dropped": self.dropped}
            self.dropped = 0
            await self._publish(FEED_CHANNEL, json.dumps(sent))
            self.sent += count
        if int(self.hub.clock()) == last_second and not self._beat_now:
            return
        if watching_here:
            await self._publish(WATCH_CHANNEL, self.origin)
        if self.sending:
            self._beat_now = False
            beat = {"o": self.origin, "beat": self.hub.beat()}
            await self._publish(FEED_CHANNEL, json.dumps(beat))

    async def _publish(self, channel: str, message: str) -> None:
        try:
            await self.store.publish(channel, message)
        except StoreError as exc:
            if not self._failing:
                log.warning("feed not shared with other processes: %s", exc)
            self._failing = True
        else:
            if self._failing:
                log.warning("feed shared with other processes again")
            self._failing = False
