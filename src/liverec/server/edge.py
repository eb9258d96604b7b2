"""The socket edge: what a connection may cost before it is a WebSocket.

Owns: the HTTP protocol `liverec serve` runs uvicorn with — uvicorn's h11 protocol,
subclassed — and what it adds, all from Settings:

- deadlines: a request's line and headers (`header_timeout_s`, also for the next
  request on a kept-alive connection; HTTP 408), its body (`body_timeout_s`), and
  the WebSocket handshake after the upgrade request (`handshake_timeout_s`);
- caps at accept on connections that are not (yet) WebSockets, per peer address
  (`max_pending_per_address`) and in total (`max_pending_connections`), and on all
  open sockets (the open-file limit minus `fd_reserve`), so that the descriptors
  that serve existing sockets, the store and the log stay free: HTTP 503, then
  closed. The listening socket (listener.py) asks `Guard.at_accept` in accept()
  itself, with an exact count of open sockets, and refuses there, before any
  transport exists; a connection accepted in the same batch as others from its
  address is counted by `Guard.admit` when its protocol starts, and refused there
  if it is over a cap after all;
- the event loop's "socket.accept() out of system resource" error, should the
  process run out of descriptors anyway, logged at most once per `log_repeat_s`.

uvicorn (0.55) has a keep-alive timeout but none for a request's head or body, and
no limit per address; docs/reliability.md has the measurement behind this choice.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
from collections.abc import Awaitable
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..config import Settings
from .gate import ForwardingPolicy
from .listener import Listener
from .throttle import LogThrottle

log = logging.getLogger("liverec.server")

_RESOURCE_MESSAGE = "socket.accept() out of system resource"


def _reply(status: int, reason: str, text: str) -> bytes:
    body = (text + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def open_file_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


class Guard:
    """Counts of connections not yet upgraded, per peer address and in total."""

    def __init__(self, settings: Settings, open_files: int | None = None) -> None:
        self.settings = settings
        self.max_sockets = max(1, (open_files or open_file_limit()) - settings.fd_reserve)
        self.trusted = ForwardingPolicy(settings.trusted_proxies)
        self.pending: dict[str, int] = {}
        self.total = 0
        self.throttle = LogThrottle(log, settings.log_repeat_s)
        self._replies: dict[str, bytes] = {}

    def at_accept(self, address: str, open_sockets: int) -> bytes | None:
        """listener.Admission: the 503 for a connection over a cap, else None."""
        reason = self._over(address)
        if open_sockets >= self.max_sockets:
            reason = f"open sockets at the limit ({self.max_sockets})"
        if reason is None:
            return None
        self.refused(address, reason)
        reply = self._replies.get(reason)
        if reply is None:
            reply = self._replies[reason] = _reply(503, "Service Unavailable", reason)
        return reply

    def admit(self, address: str) -> str | None:
        """Count a new connection in, or say why it is refused."""
        reason = self._over(address)
        if reason is None:
            self.pending[address] = self.pending.get(address, 0) + 1
            self.total += 1
        return reason

    def _over(self, address: str) -> str | None:
        if self.total >= self.settings.max_pending_connections:
            return "too many connections waiting for a request"
        count = self.pending.get(address, 0)
        if count >= self.settings.max_pending_per_address and not self.trusted.trusted(address):
            return "too many connections from this address"
        return None

    def release(self, address: str) -> None:
        count = self.pending.pop(address, 0) - 1
        if count > 0:
            self.pending[address] = count
        self.total -= 1

    def refused(self, address: str, reason: str) -> None:
        self.throttle.warning(reason, "refused a connection from %s: %s", address, reason)

    def listen_on(self, sock: socket.socket) -> Listener:
        """`sock` as a Listener that asks `at_accept` before taking a connection."""
        settings = self.settings
        return Listener.wrap(sock, self, settings.accepts_per_iteration, settings.accept_backlog)


class EdgeProtocol(H11Protocol):
    """uvicorn's h11 protocol with deadlines and the guard's caps (see the module)."""

    guard: ClassVar[Guard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._address: str | None = None  # set while counted as pending
        self._timer: asyncio.TimerHandle | None = None
        self._phase = ""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = self.client[0] if self.client else ""
        reason = self.guard.admit(address)
        if reason is not None:
            self.guard.refused(address, reason)
            transport.write(_reply(503, "Service Unavailable", reason))
            transport.close()
            return
        self._address = address
        self._arm("header")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._release()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.get_protocol() is self:
            self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.transport.get_protocol() is self:
            self._follow()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._disarm()
        self._release()
        super().handle_websocket_upgrade(event)
        timeout = self.guard.settings.handshake_timeout_s
        if timeout is not None:
            self.loop.call_later(timeout, _end_handshake, self.transport.get_protocol())

    def _follow(self) -> None:
        """Arm the deadline of the phase the request is in now."""
        state = self.conn.their_state
        if state is h11.IDLE:
            if self._phase != "header":
                self._arm("header")
        elif state is h11.SEND_BODY:
            if self._phase != "body":
                self._arm("body")
        elif self._phase:
            self._disarm()

    def _arm(self, phase: str) -> None:
        self._disarm()
        settings = self.guard.settings
        timeout = settings.header_timeout_s if phase == "header" else settings.body_timeout_s
        self._phase = phase
        if timeout is not None:
            self._timer = self.loop.call_later(timeout, self._expire, phase)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._phase = ""

    def _release(self) -> None:
        if self._address is not None:
            self.guard.release(self._address)
            self._address = None

    def _expire(self, phase: str) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        address = self.client[0] if self.client else ""
        self.guard.throttle.warning(
            f"slow {phase}", "closed a connection from %s: request %s too slow", address, phase
        )
        idle = self.cycle is None or self.cycle.response_complete
        if phase == "header" and idle:
            self.transport.write(_reply(408, "Request Timeout", "request head too slow"))
        self.transport.close()


def _end_handshake(protocol: Any) -> None:
    if not getattr(protocol, "handshake_complete", True):
        transport = protocol.transport
        if transport is not None and not transport.is_closing():
            transport.close()


def protocol_class(settings: Settings, open_files: int | None = None) -> type[EdgeProtocol]:
    """An EdgeProtocol class bound to one server's guard (uvicorn's `Config(http=...)`)."""
    guard = Guard(settings, open_files)
    return type("BoundEdgeProtocol", (EdgeProtocol,), {"guard": guard})


def install_loop_logging(loop: asyncio.AbstractEventLoop, interval_s: float) -> None:
    """Log the loop's descriptor-exhaustion error at most once per `interval_s`.

    asyncio (3.11) retries accept() after 1 s, once per failed call in a batch of up
    to `backlog` calls; each failure logs a traceback: hundreds of MB a minute.
    """
    throttle = LogThrottle(logging.getLogger("asyncio"), interval_s)
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if message.startswith(_RESOURCE_MESSAGE):
            skipped = throttle.should_log(_RESOURCE_MESSAGE)
            if skipped is None:
                return
            exc = context.get("exception")
            logging.getLogger("asyncio").error(
                "%s: %s (%d more not logged); refusing sockets above %s open",
                message,
                exc,
                skipped,
                "the open-file limit minus fd_reserve",
            )
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


async def serve(server: Any, settings: Settings, sockets: list[Any] | None = None) -> None:
    """Run a uvicorn.Server (on `sockets` a supervisor bound, else its own) with the
    loop's resource errors rate-limited and, when it runs the EdgeProtocol, its
    listening sockets wrapped by the guard (Guard.listen_on)."""
    install_loop_logging(asyncio.get_running_loop(), settings.log_repeat_s)
    guard = getattr(server.config.http, "guard", None)
    if isinstance(guard, Guard):
        bound = sockets if sockets is not None else [server.config.bind_socket()]
        sockets = [guard.listen_on(sock) for sock in bound]
    run: Awaitable[None] = server.serve(sockets=sockets)
    await run
