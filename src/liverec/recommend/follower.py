"""Following the shared event log: every process learns from every process's events.

Owns: one reader task per log partition that tails the log from "now" (cursors kept
here, in memory; no consumer group, so a process that goes away leaves nothing behind
in the store) and feeds each event another process recorded to the recommender's
`observe`, the entry point the session manager feeds with this process's own events.
Events this process logged itself carry its `Store.origin` and are skipped: they were
applied when they were recorded.

Only a store whose log other processes write (`Store.shared_log`: Redis, Redis
Cluster) is followed; the embedded store belongs to one process, which already sees
every event. Nothing is queued: a reader applies what one read returned (at most
`follow_batch` events) before it reads again, so a burst waits in the log, not in
memory. When the store is unreachable a reader waits `follow_block_s` and reads again
from its cursor; events trimmed from the log meanwhile are not seen.
"""

from __future__ import annotations

import asyncio
import logging

from ..errors import StoreError
from ..store.base import Store
from .base import Recommender

log = logging.getLogger("liverec.follow")


class LogFollower:
    """Tails every partition of `store`'s log into `recommender.observe`."""

    def __init__(
        self, store: Store, recommender: Recommender, block_s: float = 1.0, batch: int = 500
    ) -> None:
        self.store = store
        self.recommender = recommender
        self.block_s = block_s
        self.batch = batch
        self.applied = 0  # events of other processes fed to the recommender
        self.skipped = 0  # this process's own events, already applied
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        """Take a cursor at the end of every partition, then start the readers."""
        ends = await self.store.log_ends()
        loop = asyncio.get_running_loop()
        for n, cursor in enumerate(ends):
            name = f"liverec-follow-{n}"
            self._tasks.append(loop.create_task(self._read(n, cursor), name=name))

    async def _read(self, partition: int, cursor: str) -> None:
        origin = self.store.origin
        failing = False
        while not self._stopping:
            try:
                entries = await self.store.tail(partition, cursor, self.block_s, self.batch)
            except StoreError as exc:
                if not failing:
                    log.warning("following log partition %d: %s; retrying", partition, exc)
                    failing = True
                await asyncio.sleep(self.block_s)
                continue
            except Exception:  # a bug: say so, keep following
                log.exception("following log partition %d failed; retrying", partition)
                await asyncio.sleep(self.block_s)
                continue
            if failing:
                log.warning("following log partition %d again", partition)
                failing = False
            for logged in entries:
                cursor = logged.position
                if logged.origin == origin:
                    self.skipped += 1
                    continue
                self.recommender.observe(logged.event)
                self.applied += 1

    async def close(self) -> None:
        """Stop the readers: each ends after its current read (at most `block_s`).

        They are not cancelled mid-read: redis-py may take a cancellation that lands
        on a blocking read's own timeout for that timeout, retry, and go on reading.
        """
        self._stopping = True
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=2 * self.block_s + 5.0)
            for task in late:  # a read stuck on an unresponsive store
                task.cancel()
        self._tasks = []
