"""Per-session and per-connection state of the session manager.

Owns: `LiveSession` (what this process holds of a session: its item sequence, the
user's purchases and ratings, the recs frames it was shown for feedback), the
token bucket, the bounded outbound queue in which a newer recs frame replaces an
unsent older one, `Connection` (one socket after the upgrade, with a writer task
that exists only while there is something to send), and the small protocols the
session manager talks through (`Transport`, `CatalogView`, listeners).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import protocol
from .config import Settings
from .errors import SlowConsumer
from .frames import Frame
from .metrics import Metrics
from .recommend.base import RecList
from .types import Event

APPLIED_IDS_KEPT = 512  # event ids remembered per live session for in-memory dedup
SHOWN_KEPT = 16  # recs frames remembered per live session for impression/click feedback


class CatalogView(Protocol):
    """What the session manager needs from the catalog (see catalog.py)."""

    def is_available(self, item_id: str) -> bool:
        """False for out-of-stock and removed items: they are never recommended."""

    def describe(self, item_ids: list[str]) -> list[dict[str, Any]] | None:
        """Metadata for the widget, one dict per item (same order), or None."""


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """What listeners (the live feed, metrics) hear about each handled frame."""

    kind: str  # "open" | "event" | "close" | "impression" | "click"
    session_id: str
    at: float  # epoch seconds
    event: Event | None = None
    recs: RecList | None = None
    latency_s: float | None = None
    placement: str | None = None
    acked: bool = True
    duplicate: bool = False
    model: str | None = None  # feedback: the model version that made the list
    item_id: str | None = None  # click: the recommended item clicked


Listener = Callable[[FeedEntry], None]


class Transport(Protocol):
    """What the session manager needs from a WebSocket."""

    async def receive(self) -> str | bytes | None:
        """The next message; None once the peer has gone."""

    async def send(self, data: str | bytes, more: bool = False) -> None:
        """Send one message; `more`: another follows at once (may be written with it)."""


@dataclass(slots=True)
class Shown:
    """One recs frame as shown: who made it, where, what it held, what was reported."""

    model: str
    placement: str
    items: tuple[str, ...]
    impression: bool = False
    clicked: set[str] = field(default_factory=set)


@dataclass(slots=True)
class LiveSession:
    """In-process state of one session, shared by all its connections here."""

    session_id: str
    user_id: str | None
    items: list[str]
    purchases: set[str] = field(default_factory=set)
    ratings: dict[str, float] = field(default_factory=dict)
    # Event ids applied here, oldest first (a dict is an insertion-ordered set, and an
    # empty one is small: idle sessions are the common case).
    applied: dict[str, None] = field(default_factory=dict)
    connections: int = 0
    position: int = -1  # items taken in total; `items` keeps the newest session_max_items
    # A returning user's recent interactions from earlier sessions: context for the
    # model before this session's own items (empty for anonymous sessions).
    history: list[str] = field(default_factory=list)
    shown: dict[str, Shown] = field(default_factory=dict)  # insertion-ordered
    frames: int = 0  # recs frames sent: numbers recs_id
    tag: str = ""  # random prefix of this live session's recs_ids

    def __post_init__(self) -> None:
        if self.position < 0:
            self.position = len(self.items)

    def context(self) -> tuple[list[str], int]:
        """The item sequence a recommender sees, and its position counter."""
        if not self.history:
            return self.items, self.position
        return self.history + self.items, len(self.history) + self.position

    def remember(self, recs: RecList, placement: str | None) -> str:
        """Keep what a recs frame showed, for feedback; returns its recs_id."""
        self.frames += 1
        if not self.tag:
            self.tag = secrets.token_hex(3)
        # Unique across live sessions of this id (reconnects, other processes), so a
        # stale recs_id is refused, never credited to another list.
        recs_id = f"{self.tag}.{self.frames}"
        self.shown[recs_id] = Shown(
            recs.model, placement or "", tuple(r.item_id for r in recs.items)
        )
        while len(self.shown) > SHOWN_KEPT:
            del self.shown[next(iter(self.shown))]
        return recs_id

    def seen(self, event_id: str) -> bool:
        return event_id in self.applied

    def apply(self, event: Event, max_items: int) -> None:
        self.applied[event.id] = None
        if len(self.applied) > APPLIED_IDS_KEPT:
            del self.applied[next(iter(self.applied))]
        self.items.append(event.item_id)
        self.position += 1
        if len(self.items) > max_items:
            del self.items[: len(self.items) - max_items]
        if event.action == "purchase":
            self.purchases.add(event.item_id)
        elif event.action == "rate" and event.rating is not None:
            self.ratings[event.item_id] = event.rating


class TokenBucket:
    """Events per second (of a connection or an address), with a burst allowance.
    Tokens below zero are a penalty being served (SessionManager.penalize)."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.last = float(burst), now

    def peek(self, now: float) -> float:
        return min(self.burst, self.tokens + (now - self.last) * self.rate)

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Outbox:
    """A bounded queue of frames; an unsent recs frame is replaced by a newer one."""

    __slots__ = ("capacity", "frames", "on_replace")

    def __init__(self, capacity: int, on_replace: Callable[[], None]) -> None:
        self.capacity = capacity
        self.frames: list[Frame] = []  # short; an empty list is cheaper than a deque
        self.on_replace = on_replace

    def put(self, frame: Frame) -> None:
        if frame.type == "recs":
            for i, queued in enumerate(self.frames):
                if queued.type == "recs":
                    del self.frames[i]
                    self.on_replace()
                    break
        if len(self.frames) >= self.capacity:
            raise SlowConsumer(f"outbound queue full ({self.capacity} frames): client not reading")
        self.frames.append(frame)


class Connection:
    """One WebSocket after the upgrade."""

    __slots__ = (
        "address",
        "bucket",
        "closing",
        "encoding",
        "failure",
        "k",
        "limited",
        "outbox",
        "placement",
        "session",
        "transport",
        "user_id",
        "writer",
    )

    def __init__(
        self, transport: Transport, settings: Settings, metrics: Metrics, address: str
    ) -> None:
        self.transport = transport
        self.address = address
        self.encoding: protocol.Encoding = "json"
        self.outbox = Outbox(settings.outbound_queue, metrics.dropped_frames.inc)
        self.writer: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None
        self.session: LiveSession | None = None
        self.user_id: str | None = None
        self.k = settings.default_k
        self.placement: str | None = None
        self.bucket: TokenBucket | None = None
        self.limited = 0  # events refused by the rate limit since the last accepted one
        self.closing = False

    def push(self, frame: Frame) -> None:
        """Queue a frame and make sure a writer drains the queue."""
        if self.failure is not None:
            raise self.failure
        self.outbox.put(frame)
        if self.writer is None:
            self.writer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        # Writer tasks exist only while there is something to send: idle sockets cost none.
        try:
            while self.outbox.frames:
                frame = self.outbox.frames.pop(0)
                data = protocol.encode(frame.wire(), self.encoding)
                await self.transport.send(data, bool(self.outbox.frames))
        except Exception as exc:  # the socket is gone; the reader sees it too
            self.failure = exc
        finally:
            self.writer = None  # a finished task kept referenced would cost ~0.7 KB

    async def flush(self, timeout: float) -> None:
        if self.writer is not None and not self.writer.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self.writer), timeout)

    def cancel_writer(self) -> None:
        if self.writer is not None and not self.writer.done():
            self.writer.cancel()
