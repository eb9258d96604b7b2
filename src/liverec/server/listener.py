"""The listening socket: open sockets counted exactly, and refused at accept.

Owns: the socket `liverec serve` listens on, wrapped so that each accept() counts
the socket it returns until that socket is closed, and asks an Admission (the edge's
guard) whether to take it; a refused one gets the admission's reply and is closed
at once, in the accept itself. So that a burst of new sockets cannot hold the event
loop from the open ones, at most `per_iteration` connections are taken and at most
`burst` refused per loop iteration; the rest wait in the kernel's accept queue
(asyncio itself would take up to `backlog` per iteration, each costing a transport
and a protocol: with refusals there too, the loop stalls of 20-40 ms that
bench/slow_clients.py measured, docs/reliability.md).

Why here and not in the protocol: asyncio accepts up to `backlog` connections per
loop iteration and only calls a protocol's connection_made two iterations later, so
a count kept by protocols lags behind the descriptors really open by up to two
batches: the limit held only while `fd_reserve` covered that lag and the process's
own descriptors (a full test run under load once saw EMFILE in accept). The count
here is taken in the accept call: exact. A refusal costs an accept, a send and a
close: no transport, protocol or timer.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Protocol


class Gauge:
    """Sockets accepted and not yet closed."""

    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open = 0


class Admission(Protocol):
    def at_accept(self, address: str, open_sockets: int) -> bytes | None:
        """The reply refusing a connection from `address` while `open_sockets`
        accepted sockets are open, or None to take it."""


class _Accepted(socket.socket):
    """An accepted socket that leaves its gauge when closed (or collected)."""

    __slots__ = ("_gauge",)

    _gauge: Gauge | None

    def close(self) -> None:
        super().close()
        self._leave()

    def __del__(self) -> None:
        self._leave()

    def _leave(self) -> None:
        gauge = getattr(self, "_gauge", None)
        if gauge is not None:
            self._gauge = None
            gauge.open -= 1


class Listener(socket.socket):
    """A listening socket whose accept() counts and refuses (see the module)."""

    __slots__ = ("_refused", "_taken", "admission", "burst", "gauge", "per_iteration")

    admission: Admission
    burst: int
    per_iteration: int
    gauge: Gauge
    _taken: int
    _refused: int

    @classmethod
    def wrap(
        cls, sock: socket.socket, admission: Admission, per_iteration: int, burst: int
    ) -> Listener:
        """Take over `sock` (bound, maybe listening; `sock` is detached)."""
        listener = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        listener.admission = admission
        listener.per_iteration = max(1, per_iteration)
        listener.burst = max(1, burst)
        listener.gauge = Gauge()
        listener._taken = listener._refused = 0
        return listener

    def accept(self) -> tuple[socket.socket, Any]:
        """The next connection the admission takes; those it refuses are refused on
        the way. Raises BlockingIOError when none is waiting, or when this loop
        iteration has had its share (asyncio's batch ends; the listening socket is
        still readable, so it calls again at the next iteration)."""
        if self._taken == 0 and self._refused == 0:
            asyncio.get_running_loop().call_soon(self._next_iteration)
        if self._taken >= self.per_iteration:
            raise BlockingIOError("taken enough connections in this loop iteration")
        while self._refused < self.burst:
            fd, address = self._accept()  # type: ignore[attr-defined]
            host = address[0] if isinstance(address, tuple) else ""
            refusal = self.admission.at_accept(host, self.gauge.open)
            if refusal is not None:
                self._refused += 1
                self._refuse(fd, refusal)
                continue
            conn = _Accepted(self.family, self.type, self.proto, fileno=fd)
            conn._gauge = self.gauge
            self.gauge.open += 1
            self._taken += 1
            return conn, address
        raise BlockingIOError("refused enough connections in this loop iteration")

    def _next_iteration(self) -> None:
        self._taken = self._refused = 0

    def _refuse(self, fd: int, reply: bytes) -> None:
        conn = socket.socket(self.family, self.type, self.proto, fileno=fd)
        try:
            conn.setblocking(False)
            conn.send(reply)  # a few hundred bytes into an empty send buffer
        except OSError:
            pass
        finally:
            conn.close()
