"""The event pipeline: one entry for an event, from the WebSocket loop and the HTTP API.

Owns: `Pipeline.handle_events`, which takes decoded events of one live session and
returns what to send — a receipt per event (ack, or an error when the store could
not record it), then one recs frame — as typed frames (frames.py), complete with
the catalog's cards; the store's health as the pipeline sees it (logged once per
outage). It sends nothing and encodes nothing: the caller's edge does.

Order of work for one event: record durably in the store -> apply to the
in-memory session (once per event id) -> receipt -> recommend -> recs. An event
the store could not record is applied in memory and answered with recs and an
error frame, but never acked: the client sends it again later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import frames, protocol
from .config import Settings
from .errors import ProtocolError, StoreUnavailable
from .live import CatalogView, LiveSession
from .metrics import Metrics
from .recommend.base import RecContext, RecList, Recommender
from .store.base import Store
from .types import Event

log = logging.getLogger("liverec.sessions")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one event: its receipt, and (unless ignored) the event."""

    id: str  # the event's id
    receipt: frames.Ack | frames.Error
    event: Event | None  # None: an ignored action, acked and not recorded
    acked: bool
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Reply:
    """What to send for a batch of events: the receipts, then the recs frame."""

    outcomes: tuple[Outcome, ...]
    recs: frames.Recs | None  # None: every event was ignored (and none was asked)
    rec_list: RecList | None  # what the recommender returned, for listeners


class Pipeline:
    """Records events, applies them to live sessions, and makes recs frames."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        recommender: Recommender,
        metrics: Metrics,
        clock: Callable[[], float],
        catalog: CatalogView | None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.recommender = recommender
        self.metrics = metrics
        self.clock = clock
        self.catalog = catalog
        self.store_ok = True

    async def handle_events(
        self,
        live: LiveSession,
        msgs: Sequence[protocol.EventMsg],
        user_id: str | None,
        k: int,
        placement: str | None = None,
        *,
        recs_if_ignored: bool = False,
    ) -> Reply:
        """Record and apply `msgs` (in order) for `user_id`, then recommend `k` items
        for the last one. Raises ProtocolError when `live` was claimed by another user.
        When every event is ignored, no recs frame is made unless `recs_if_ignored`."""
        if live.user_id is not None and live.user_id != user_id:
            message = "a signed-in user claimed this session; start a new one"
            raise ProtocolError("session_forbidden", message, msgs[-1].id if msgs else None)
        outcomes: list[Outcome] = []
        for msg in msgs:
            if msg.ignored:  # a GA4 name liverec does not use: acked, not recorded
                ack = frames.Ack(msg.id, ignored=True)
                outcomes.append(Outcome(msg.id, ack, None, True, False))
                continue
            event, acked, duplicate = await self._apply(live, msg, user_id)
            receipt: frames.Ack | frames.Error
            if acked:
                receipt = frames.Ack(msg.id, duplicate)
            else:
                receipt = frames.Error(
                    "store_unavailable", "event not recorded; send it again", msg.id
                )
            outcomes.append(Outcome(msg.id, receipt, event, acked, duplicate))
        last = msgs[-1] if msgs else None
        if last is not None and not last.ignored:
            current: str | None = last.item_id
        elif recs_if_ignored or last is None:
            current = live.items[-1] if live.items else None
        else:
            return Reply(tuple(outcomes), None, None)
        rec_list = await self.recommend(live, k, current, placement)
        frame = self.recs_frame(live, last.id if last is not None else None, rec_list, placement)
        return Reply(tuple(outcomes), frame, rec_list)

    async def _apply(
        self, live: LiveSession, msg: protocol.EventMsg, user_id: str | None
    ) -> tuple[Event, bool, bool]:
        """Record and apply one event; returns (event, acked, duplicate)."""
        event = Event(
            id=msg.id,
            session_id=live.session_id,
            action=msg.action,
            item_id=msg.item_id,
            ts=msg.ts if msg.ts is not None else self.clock(),
            user_id=user_id,
            rating=msg.rating,
        )
        t0 = time.perf_counter()
        try:
            new = await self.store.record_event(event)
        except StoreUnavailable:
            self.store_failed()
            stored, new = False, True
        else:
            stored = True
            self.metrics.store_latency.observe(time.perf_counter() - t0)
            if not self.store_ok:
                self.store_ok = True
                log.warning("store reachable again: %s", self.store.url)
        duplicate = stored and not new
        if new and not live.seen(event.id):
            live.apply(event, self.settings.session_max_items)
            self.recommender.observe(event)
            self.metrics.events.inc(event.action)
        elif duplicate:
            self.metrics.duplicates.inc()
        return event, stored, duplicate

    async def recommend(
        self, live: LiveSession, k: int, current: str | None, placement: str | None
    ) -> RecList:
        items, position = live.context()
        ctx = RecContext(
            session_id=live.session_id,
            items=items,
            k=k,
            current_item=current,
            exclude=live.purchases,
            ratings=live.ratings,
            placement=placement,
            position=position,
            available=self.catalog.is_available if self.catalog is not None else None,
        )
        return await self.recommender.recommend(ctx)

    def recs_frame(
        self, live: LiveSession, for_event: str | None, recs: RecList, placement: str | None = None
    ) -> frames.Recs:
        """A complete recs frame with a recs_id for feedback; with a catalog, each
        item carries the widget's card fields."""
        recs_id = live.remember(recs, placement)
        entries = [{"item_id": r.item_id, "score": round(r.score, 6)} for r in recs.items]
        if self.catalog is not None and recs.items:
            cards = self.catalog.describe([r.item_id for r in recs.items])
            if cards is not None:
                entries = [entry | card for entry, card in zip(entries, cards, strict=True)]
        return frames.Recs(live.session_id, for_event, tuple(entries), recs.model, recs_id)

    def store_failed(self) -> None:
        self.metrics.store_failures.inc()
        if self.store_ok:  # log once per outage, not once per event
            self.store_ok = False
            log.error(
                "store unavailable: %s; events are not acked until it returns", self.store.url
            )
