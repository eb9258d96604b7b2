"""The session manager: the socket loop of live connections.

Owns: the life of one WebSocket connection after the upgrade (hello, events,
feedback, pings, idle expiry) and the listeners that hear about each handled frame.
The sessions live in this process and the one open path for a session (hello and
the HTTP API alike) are registry.py's; the owner check itself is ownership.py's. Admission
(token buckets, penalties, refusals) is admission.py's, which `SessionManager`
extends. It speaks to the socket through the small `Transport` protocol, so it
imports neither starlette nor uvicorn. Abuse is raised as `errors.Abuse`
subclasses; the server edge maps them to close codes (server/close_codes.py).

Events go through the one pipeline entry (pipeline.py), which returns typed frames
(frames.py); this module queues them on the connection, whose writer encodes them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from . import frames, protocol
from .admission import Admission
from .config import Settings
from .errors import (
    Forbidden,
    HelloTimeout,
    IdleTimeout,
    ProtocolError,
    RateLimited,
    StoreUnavailable,
)
from .identity import verify_token
from .live import (
    CatalogView,
    Connection,
    FeedEntry,
    Listener,
    LiveSession,
    TokenBucket,
    Transport,
)
from .metrics import Metrics
from .pipeline import Pipeline, Reply
from .recommend.base import Recommender
from .registry import SessionRegistry
from .store.base import Store

__all__ = ["CatalogView", "FeedEntry", "LiveSession", "SessionManager", "Transport"]

log = logging.getLogger("liverec.sessions")

FLUSH_ON_CLOSE_S = 1.0  # how long queued frames may take to go out before a close


class SessionManager(Admission):
    """Registry of live connections and sessions of this process."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        recommender: Recommender,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        catalog: CatalogView | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock` stamps events and sessions (epoch seconds); `monotonic` drives the
        token buckets and penalties (tests inject both)."""
        metrics = metrics or Metrics()
        super().__init__(settings, metrics, monotonic)
        self.catalog = catalog
        # Called synchronously on the event loop after each frame; must be cheap and
        # must not raise (the feed puts entries on bounded queues).
        self.listeners: list[Listener] = []
        self.store = store
        self.recommender = recommender
        self.clock = clock
        self.pipeline = Pipeline(settings, store, recommender, self.metrics, clock, catalog)
        self.registry = SessionRegistry(settings, store, recommender, self.pipeline, clock)

    # --- connection life -----------------------------------------------------------

    async def serve(self, transport: Transport, address: str = "") -> None:
        """Run one connection until the peer leaves; raises Abuse subclasses on abuse."""
        conn = Connection(transport, self.settings, self.metrics, address)
        # Every frame takes a token, from the first one on: hello, pings, malformed
        # frames and events alike (the address's bucket too, see _admit).
        conn.bucket = TokenBucket(
            self.settings.events_per_s, self.settings.events_burst, self.monotonic()
        )
        self.connections.add(conn)
        self.address_connections[address] = self.address_connections.get(address, 0) + 1
        self.metrics.connections.inc()
        self.metrics.connections_open += 1
        try:
            await self._hello_phase(conn)
            if conn.session is not None:
                await self._event_phase(conn)
            await conn.flush(FLUSH_ON_CLOSE_S)
        except (HelloTimeout, RateLimited, IdleTimeout, ProtocolError) as exc:
            if isinstance(exc, RateLimited):
                self.penalize(address)
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
            self.registry.release(live)
        conn.session = None

    async def _receive(self, conn: Connection, timeout: float | None) -> str | bytes | None:
        if conn.failure is not None:
            return None
        if timeout is None:
            return await conn.transport.receive()
        async with asyncio.timeout(timeout):  # no extra task per frame, unlike wait_for
            return await conn.transport.receive()

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
            if not self._admit(conn):
                self._refuse(conn, data)
                continue
            try:
                msg, _ = protocol.decode(data, self.limits)
                if isinstance(msg, protocol.Ping):
                    conn.push(frames.PONG)
                elif isinstance(msg, protocol.EventMsg):
                    raise ProtocolError("hello_required", "send a hello frame first", msg.id)
                elif isinstance(msg, protocol.Feedback):
                    raise ProtocolError("hello_required", "send a hello frame first")
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
        now = self.clock()
        live = None
        if hello.session_id is not None:
            live = await self._resume(conn, hello.session_id, user_id)
        resumed = live is not None
        if live is None:
            live = await self.registry.open(None, user_id, write=True, keep=True)
            assert live is not None
        session_id = live.session_id
        live.connections += 1
        conn.session, conn.user_id = live, user_id
        conn.k, conn.placement = hello.k, hello.placement
        conn.push(frames.Welcome(session_id, resumed, self.recommender.version_for(session_id)))
        reply = await self.pipeline.handle_events(live, (), user_id, conn.k, conn.placement)
        assert reply.recs is not None
        conn.push(reply.recs)
        self._notify(
            FeedEntry("open", session_id, now, recs=reply.rec_list, placement=conn.placement)
        )

    async def _resume(
        self, conn: Connection, session_id: str, user_id: str | None
    ) -> LiveSession | None:
        """The session `session_id` opened by `user_id`, or None, after an error frame,
        when it cannot be resumed: an id the server did not issue, unknown or expired,
        or an owner that cannot be checked now (fail closed). Raises Forbidden for
        another user's session."""
        try:
            live = await self.registry.open(session_id, user_id, write=True, keep=True)
        except StoreUnavailable:
            self.pipeline.store_failed()
            self._error(
                conn,
                "session_unverified",
                "the session's owner cannot be checked now (store unreachable); "
                "a new session was started",
            )
            return None
        except ProtocolError as exc:
            self._error(conn, exc.code, f"{exc.message}; a new session was started")
            return None
        if live is None:
            message = "no such session (or it expired); a new session was started"
            self._error(conn, "unknown_session", message)
        return live

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
            if not self._admit(conn):
                self._refuse(conn, data)
                continue
            try:
                msg, _ = protocol.decode(data, self.limits)
                if isinstance(msg, protocol.EventMsg):
                    await self._on_event(conn, msg, started)
                elif isinstance(msg, protocol.Feedback):
                    self._on_feedback(conn, msg)
                elif isinstance(msg, protocol.Ping):
                    conn.push(frames.PONG)
                else:
                    raise ProtocolError("already_hello", "hello was already received")
            except ProtocolError as exc:
                if exc.code == "frame_too_large":
                    raise
                self._error(conn, exc.code, exc.message, exc.ref)

    async def _on_event(self, conn: Connection, msg: protocol.EventMsg, started: float) -> None:
        assert conn.session is not None
        live = conn.session
        reply = await self.handle_events(live, [msg], conn.user_id, conn.k, conn.placement)
        (outcome,) = reply.outcomes
        for frame in (outcome.receipt, reply.recs):
            if isinstance(frame, frames.Error):
                self.metrics.errors.inc(frame.code)
            if frame is not None:
                conn.push(frame)
        if reply.rec_list is None or outcome.event is None:
            return  # an ignored action: acked, nothing recommended
        latency = time.perf_counter() - started
        self.metrics.recs_latency.observe(latency, reply.rec_list.model)
        if self.listeners:
            self._notify(
                FeedEntry(
                    "event",
                    live.session_id,
                    outcome.event.ts,
                    outcome.event,
                    reply.rec_list,
                    latency,
                    conn.placement,
                    outcome.acked,
                    outcome.duplicate,
                )
            )

    # --- shared with the HTTP API ------------------------------------------------------

    async def handle_events(
        self,
        live: LiveSession,
        msgs: list[protocol.EventMsg],
        user_id: str | None,
        k: int,
        placement: str | None = None,
        *,
        recs_if_ignored: bool = False,
    ) -> Reply:
        """The one entry for events, WebSocket and HTTP alike (Pipeline.handle_events)."""
        return await self.pipeline.handle_events(
            live, msgs, user_id, k, placement, recs_if_ignored=recs_if_ignored
        )

    async def recs_for(self, live: LiveSession, k: int) -> frames.Recs:
        """A recs frame for a session's current state, without an event (HTTP GET)."""
        reply = await self.pipeline.handle_events(live, (), live.user_id, k)
        assert reply.recs is not None
        return reply.recs

    def _on_feedback(self, conn: Connection, msg: protocol.Feedback) -> None:
        """Count an impression or a click against the model and placement that made
        the list; each once per recs frame (and item)."""
        assert conn.session is not None
        shown = conn.session.shown.get(msg.recs_id)
        if shown is None:
            raise ProtocolError("unknown_recs", "no recent recs frame has this recs_id")
        labels = (shown.model, shown.placement)
        if msg.kind == "impression":
            if shown.impression:
                return
            shown.impression = True
            self.metrics.impressions.inc(*labels)
        else:
            assert msg.item_id is not None
            if msg.item_id not in shown.items:
                raise ProtocolError("bad_field", "'item_id' was not in that recs frame")
            if msg.item_id in shown.clicked:
                return
            shown.clicked.add(msg.item_id)
            self.metrics.rec_clicks.inc(*labels)
        if self.listeners:
            self._notify(
                FeedEntry(
                    msg.kind,
                    conn.session.session_id,
                    self.clock(),
                    placement=shown.placement,
                    model=shown.model,
                    item_id=msg.item_id,
                )
            )

    def _notify(self, entry: FeedEntry) -> None:
        for listener in self.listeners:
            try:
                listener(entry)
            except Exception:  # a listener must never break the event path
                log.exception("feed listener failed")

    def _error(self, conn: Connection, code: str, message: str, ref: str | None = None) -> None:
        self.metrics.errors.inc(code)
        conn.push(frames.Error(code, message, ref))
