"""The session manager: live connections, per-session state, bounded outbound queues.

Owns: the life of one WebSocket connection after the upgrade (hello, events,
pings, idle expiry), the registry of live sessions shared by the connections of a
process, the per-connection token bucket, and the outbound queue in which a newer
recs frame replaces an unsent older one. It speaks to the socket through the small
`Transport` protocol, so it imports neither starlette nor uvicorn. Abuse is raised
as `errors.Abuse` subclasses; the server edge maps them to close codes.

Order of work for one event: validate -> record durably in the store -> apply to
the in-memory session (once per event id) -> ack -> recommend -> recs. An event
the store could not record is applied in memory and answered with recs and an
error frame, but never acked: the client sends it again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import protocol
from .config import Settings
from .errors import (
    Forbidden,
    HelloTimeout,
    IdleTimeout,
    ProtocolError,
    RateLimited,
    SlowConsumer,
    StoreUnavailable,
)
from .identity import verify_token
from .metrics import Metrics
from .recommend.base import RecContext, RecList, Recommender
from .store.base import Store
from .types import Event

log = logging.getLogger("liverec.sessions")

APPLIED_IDS_KEPT = 512  # event ids remembered per live session for in-memory dedup
RATE_ERRORS_SENT = 3  # rate_limited error frames per run of refused events; then silence
FLUSH_ON_CLOSE_S = 1.0  # how long queued frames may take to go out before a close


class CatalogView(Protocol):
    """What the session manager needs from the catalog (see catalog.py)."""

    def is_available(self, item_id: str) -> bool:
        """False for out-of-stock and removed items: they are never recommended."""

    def describe(self, item_ids: list[str]) -> list[dict[str, Any]] | None:
        """Metadata for the widget, one dict per item (same order), or None."""


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """What listeners (the live feed, metrics) hear about each handled frame."""

    kind: str  # "open" | "event" | "close"
    session_id: str
    at: float  # epoch seconds
    event: Event | None = None
    recs: RecList | None = None
    latency_s: float | None = None
    placement: str | None = None
    acked: bool = True
    duplicate: bool = False


Listener = Callable[[FeedEntry], None]


class Transport(Protocol):
    """What the session manager needs from a WebSocket."""

    async def receive(self) -> str | bytes | None:
        """The next message; None once the peer has gone."""

    async def send(self, data: str | bytes) -> None: ...


@dataclass(slots=True)
class LiveSession:
    """In-process state of one session, shared by all its connections here."""

    session_id: str
    user_id: str | None
    items: list[str]
    purchases: set[str] = field(default_factory=set)
    ratings: dict[str, float] = field(default_factory=dict)
    applied: set[str] = field(default_factory=set)
    applied_order: deque[str] = field(default_factory=deque)
    connections: int = 0
    position: int = -1  # items taken in total; `items` keeps the newest session_max_items

    def __post_init__(self) -> None:
        if self.position < 0:
            self.position = len(self.items)

    def seen(self, event_id: str) -> bool:
        return event_id in self.applied

    def apply(self, event: Event, max_items: int) -> None:
        self.applied.add(event.id)
        self.applied_order.append(event.id)
        if len(self.applied_order) > APPLIED_IDS_KEPT:
            self.applied.discard(self.applied_order.popleft())
        self.items.append(event.item_id)
        self.position += 1
        if len(self.items) > max_items:
            del self.items[: len(self.items) - max_items]
        if event.action == "purchase":
            self.purchases.add(event.item_id)
        elif event.action == "rate" and event.rating is not None:
            self.ratings[event.item_id] = event.rating


class TokenBucket:
    """Events per second per connection, with a burst allowance."""

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
        self.frames: deque[dict[str, Any]] = deque()
        self.on_replace = on_replace

    def put(self, frame: dict[str, Any]) -> None:
        if frame["type"] == "recs":
            for i, queued in enumerate(self.frames):
                if queued["type"] == "recs":
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
        self.outbox = Outbox(settings.outbound_queue, lambda: metrics.dropped_frames.inc())
        self.writer: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None
        self.session: LiveSession | None = None
        self.user_id: str | None = None
        self.k = settings.default_k
        self.placement: str | None = None
        self.bucket: TokenBucket | None = None
        self.limited = 0  # events refused by the rate limit since the last accepted one
        self.closing = False

    def push(self, frame: dict[str, Any]) -> None:
        """Queue a frame and make sure a writer drains the queue."""
        if self.failure is not None:
            raise self.failure
        self.outbox.put(frame)
        if self.writer is None or self.writer.done():
            self.writer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        # Writer tasks exist only while there is something to send: idle sockets cost none.
        try:
            while self.outbox.frames:
                frame = self.outbox.frames.popleft()
                await self.transport.send(protocol.encode(frame, self.encoding))
        except Exception as exc:  # the socket is gone; the reader sees it too
            self.failure = exc

    async def flush(self, timeout: float) -> None:
        if self.writer is not None and not self.writer.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self.writer), timeout)

    def cancel_writer(self) -> None:
        if self.writer is not None and not self.writer.done():
            self.writer.cancel()


class SessionManager:
    """Registry of live connections and sessions of this process."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        recommender: Recommender,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        catalog: CatalogView | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        # Called synchronously on the event loop after each frame; must be cheap and
        # must not raise (the feed puts entries on bounded queues).
        self.listeners: list[Listener] = []
        self.store = store
        self.recommender = recommender
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.limits = protocol.Limits(
            settings.max_frame_bytes, settings.max_id_chars, settings.default_k, settings.max_k
        )
        self.sessions: dict[str, LiveSession] = {}
        self.connections: set[Connection] = set()
        self.address_connections: dict[str, int] = {}
        self.address_buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.accepting = True
        self.store_ok = True

    # --- connection life -----------------------------------------------------------

    def refusal(self, address: str) -> str | None:
        """Why a new connection from `address` is refused now, or None to admit it."""
        if not self.accepting:
            return "server shutting down"
        if len(self.connections) >= self.settings.max_connections:
            return "server at capacity"
        if self.address_connections.get(address, 0) >= self.settings.max_connections_per_address:
            return "too many connections from this address"
        bucket = self.address_buckets.get(address)
        if bucket is not None and bucket.peek(time.monotonic()) < 1.0:
            return "this address is over its event rate"
        return None

    def address_allows(self, address: str, events: int = 1) -> bool:
        """Take `events` tokens from the address's bucket (shared by its connections)."""
        now = time.monotonic()
        bucket = self.address_buckets.get(address)
        if bucket is None:
            bucket = TokenBucket(
                self.settings.address_events_per_s, self.settings.address_events_burst, now
            )
            self.address_buckets[address] = bucket
            if len(self.address_buckets) > self.settings.max_tracked_addresses:
                self.address_buckets.popitem(last=False)
        else:
            self.address_buckets.move_to_end(address)
        return all(bucket.take(now) for _ in range(events))

    async def serve(self, transport: Transport, address: str = "") -> None:
        """Run one connection until the peer leaves; raises Abuse subclasses on abuse."""
        conn = Connection(transport, self.settings, self.metrics, address)
        self.connections.add(conn)
        self.address_connections[address] = self.address_connections.get(address, 0) + 1
        self.metrics.connections.inc()
        self.metrics.connections_open += 1
        try:
            await self._hello_phase(conn)
            if conn.session is not None:
                await self._event_phase(conn)
            await conn.flush(FLUSH_ON_CLOSE_S)
        except (HelloTimeout, RateLimited, IdleTimeout, ProtocolError):
            await conn.flush(FLUSH_ON_CLOSE_S)  # let the last error frame go out first
            raise
        finally:
            conn.cancel_writer()
            self.connections.discard(conn)
            left = self.address_connections.get(address, 1) - 1
            if left > 0:
                self.address_connections[address] = left
            else:
                self.address_connections.pop(address, None)
            self.metrics.connections_open -= 1
            self._release(conn)

    def _release(self, conn: Connection) -> None:
        live = conn.session
        if live is not None and self.listeners:
            self._notify(FeedEntry("close", live.session_id, self.clock()))
        if live is not None:
            live.connections -= 1
            if live.connections <= 0:
                self.sessions.pop(live.session_id, None)
                self.recommender.forget(live.session_id)
        conn.session = None

    async def _receive(self, conn: Connection, timeout: float | None) -> str | bytes | None:
        if conn.failure is not None:
            return None
        if timeout is None:
            return await conn.transport.receive()
        return await asyncio.wait_for(conn.transport.receive(), timeout)

    async def _hello_phase(self, conn: Connection) -> None:
        deadline = time.monotonic() + self.settings.hello_timeout_s
        while conn.session is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HelloTimeout("no hello frame in time")
            try:
                data = await self._receive(conn, remaining)
            except TimeoutError:
                raise HelloTimeout("no hello frame in time") from None
            if data is None:
                return
            conn.encoding = protocol.encoding_of(data)
            try:
                msg, _ = protocol.decode(data, self.limits)
                if isinstance(msg, protocol.Ping):
                    conn.push(protocol.pong())
                elif isinstance(msg, protocol.EventMsg):
                    raise ProtocolError("hello_required", "send a hello frame first", msg.id)
                else:
                    await self._start_session(conn, msg)
            except Forbidden as exc:
                self._error(conn, exc.code, exc.message)
            except ProtocolError as exc:
                if exc.code == "frame_too_large":
                    raise
                self._error(conn, exc.code, exc.message, exc.ref)

    async def _start_session(self, conn: Connection, hello: protocol.Hello) -> None:
        user_id = None
        if hello.user_token is not None:
            user_id = verify_token(hello.user_token, self.settings.jwt_secret)
        session_id = hello.session_id or secrets.token_urlsafe(16)
        now = self.clock()
        live = self.sessions.get(session_id)
        resumed = live is not None
        if live is None:
            try:
                record, resumed = await self.store.open_session(session_id, user_id, now)
            except StoreUnavailable:
                self._store_failed()
                record = None
            if record is not None and record.user_id is not None and record.user_id != user_id:
                raise Forbidden("session_forbidden", "this session belongs to another user")
            live = LiveSession(session_id, user_id, list(record.items) if record else [])
            if user_id is not None:
                await self._load_profile(live, user_id)
            live = self.sessions.setdefault(session_id, live)
        elif live.user_id is not None and live.user_id != user_id:
            raise Forbidden("session_forbidden", "this session belongs to another user")
        live.connections += 1
        conn.session, conn.user_id = live, user_id
        conn.k, conn.placement = hello.k, hello.placement
        conn.bucket = TokenBucket(
            self.settings.events_per_s, self.settings.events_burst, time.monotonic()
        )
        conn.push(protocol.welcome(session_id, resumed, self.recommender.version))
        current = live.items[-1] if live.items else None
        recs = await self._recommend(live, conn.k, current, conn.placement)
        conn.push(self.recs_frame(session_id, None, recs))
        self._notify(FeedEntry("open", session_id, now, recs=recs, placement=conn.placement))

    async def _load_profile(self, live: LiveSession, user_id: str) -> None:
        try:
            profile = await self.store.get_profile(user_id)
        except StoreUnavailable:
            self._store_failed()
            return
        live.purchases |= profile.purchases
        live.ratings.update(profile.ratings)

    async def _event_phase(self, conn: Connection) -> None:
        idle = self.settings.idle_timeout_s
        while True:
            try:
                data = await self._receive(conn, idle)
            except TimeoutError:
                raise IdleTimeout("no frame within the idle timeout") from None
            if data is None:
                return
            started = time.perf_counter()
            conn.encoding = protocol.encoding_of(data)
            try:
                msg, _ = protocol.decode(data, self.limits)
                if isinstance(msg, protocol.EventMsg):
                    await self._on_event(conn, msg, started)
                elif isinstance(msg, protocol.Ping):
                    conn.push(protocol.pong())
                else:
                    raise ProtocolError("already_hello", "hello was already received")
            except ProtocolError as exc:
                if exc.code == "frame_too_large":
                    raise
                self._error(conn, exc.code, exc.message, exc.ref)

    async def _on_event(self, conn: Connection, msg: protocol.EventMsg, started: float) -> None:
        assert conn.session is not None and conn.bucket is not None
        if not conn.bucket.take(time.monotonic()) or not self.address_allows(conn.address):
            conn.limited += 1
            if conn.limited > self.settings.events_burst:
                raise RateLimited("event rate limit exceeded repeatedly")
            if conn.limited > RATE_ERRORS_SENT:
                self.metrics.errors.inc("rate_limited")
                return  # dropped unanswered: a flood must not cost us a frame per event
            raise ProtocolError(
                "rate_limited",
                f"more than {self.settings.events_per_s:g} events/s; event dropped, send it later",
                msg.id,
            )
        conn.limited = 0
        live = conn.session
        event, acked, duplicate = await self.apply_event(live, msg, conn.user_id)
        if acked:
            conn.push(protocol.ack(msg.id, duplicate))
        else:
            self._error(conn, "store_unavailable", "event not recorded; send it again", msg.id)
        recs = await self._recommend(live, conn.k, msg.item_id, conn.placement)
        conn.push(self.recs_frame(live.session_id, msg.id, recs))
        latency = time.perf_counter() - started
        self.metrics.recs_latency.observe(latency, recs.model)
        if self.listeners:
            self._notify(
                FeedEntry(
                    "event",
                    live.session_id,
                    event.ts,
                    event,
                    recs,
                    latency,
                    conn.placement,
                    acked,
                    duplicate,
                )
            )

    # --- shared with the HTTP API ------------------------------------------------------

    async def apply_event(
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
            self._store_failed()
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

    async def open_transient(
        self, session_id: str, user_id: str | None, create: bool
    ) -> LiveSession | None:
        """A session for an HTTP request: the live one when connected here, else from the store."""
        live = self.sessions.get(session_id)
        if live is not None:
            if live.user_id is not None and live.user_id != user_id:
                raise Forbidden("session_forbidden", "this session belongs to another user")
            return live
        if create:
            record, _ = await self.store.open_session(session_id, user_id, self.clock())
        else:
            found = await self.store.get_session(session_id)
            if found is None:
                return None
            record = found
        if record.user_id is not None and record.user_id != user_id:
            raise Forbidden("session_forbidden", "this session belongs to another user")
        live = LiveSession(session_id, user_id, list(record.items))
        if user_id is not None:
            await self._load_profile(live, user_id)
        return live

    async def recommend_for(
        self, live: LiveSession, k: int, placement: str | None = None
    ) -> RecList:
        current = live.items[-1] if live.items else None
        return await self._recommend(live, k, current, placement)

    async def _recommend(
        self, live: LiveSession, k: int, current: str | None, placement: str | None
    ) -> RecList:
        ctx = RecContext(
            session_id=live.session_id,
            items=live.items,
            k=k,
            current_item=current,
            exclude=live.purchases,
            ratings=live.ratings,
            placement=placement,
            position=live.position,
            available=self.catalog.is_available if self.catalog is not None else None,
        )
        return await self.recommender.recommend(ctx)

    # --- helpers ----------------------------------------------------------------------

    def recs_frame(self, session_id: str, for_event: str | None, recs: RecList) -> dict[str, Any]:
        """A recs frame; with a catalog, each item carries the widget's metadata."""
        frame = protocol.recs(session_id, for_event, recs.items, recs.model)
        if self.catalog is not None and recs.items:
            meta = self.catalog.describe([r.item_id for r in recs.items])
            if meta is not None:
                for entry, extra in zip(frame["items"], meta, strict=True):
                    entry.update(extra)
        return frame

    def _notify(self, entry: FeedEntry) -> None:
        for listener in self.listeners:
            try:
                listener(entry)
            except Exception:  # a listener must never break the event path
                log.exception("feed listener failed")

    def _error(self, conn: Connection, code: str, message: str, ref: str | None = None) -> None:
        self.metrics.errors.inc(code)
        conn.push(protocol.error(code, message, ref))

    def _store_failed(self) -> None:
        self.metrics.store_failures.inc()
        if self.store_ok:  # log once per outage, not once per event
            self.store_ok = False
            log.error(
                "store unavailable: %s; events are not acked until it returns", self.store.url
            )
