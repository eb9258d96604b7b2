"""The listening socket (liverec.server.listener) with the edge's guard, on real
loopback sockets: the count of open sockets is exact at accept (a closed socket
leaves it at once), those above the limit are answered 503 in accept itself, and one
loop iteration takes at most `accepts_per_iteration` connections."""

from __future__ import annotations

import asyncio
import socket

import pytest

from liverec.config import Settings
from liverec.server.edge import Guard
from liverec.server.listener import Listener


def listening(settings: Settings, max_sockets: int) -> Listener:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    guard = Guard(settings, open_files=settings.fd_reserve + max_sockets)
    return Listener.wrap(sock, guard, settings.accepts_per_iteration, settings.accept_backlog)


def clients(listener: Listener, n: int) -> list[socket.socket]:
    port = listener.getsockname()[1]
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]


async def test_open_sockets_are_counted_exactly_and_refused_in_accept() -> None:
    listener = listening(Settings(), max_sockets=3)
    peers = clients(listener, 5)
    try:
        taken = [listener.accept()[0] for _ in range(3)]
        with pytest.raises(BlockingIOError):  # the other two: refused on the way
            listener.accept()
        assert listener.gauge.open == 3
        for peer in peers[3:]:
            assert peer.recv(4096).startswith(b"HTTP/1.1 503 ")
        taken[0].close()  # one closed: one more may come in
        assert listener.gauge.open == 2
        later = clients(listener, 1)
        peers += later
        await asyncio.sleep(0)  # a new loop iteration
        taken.append(listener.accept()[0])
        assert listener.gauge.open == 3
        for conn in taken:
            conn.close()
        assert listener.gauge.open == 0
    finally:
        for peer in peers:
            peer.close()
        listener.close()


async def test_one_loop_iteration_takes_at_most_accepts_per_iteration() -> None:
    listener = listening(Settings(accepts_per_iteration=2), max_sockets=100)
    peers = clients(listener, 3)
    taken: list[socket.socket] = []
    try:
        taken += [listener.accept()[0] for _ in range(2)]
        with pytest.raises(BlockingIOError):  # the third waits for the next iteration
            listener.accept()
        await asyncio.sleep(0)
        taken.append(listener.accept()[0])
        assert listener.gauge.open == 3
    finally:
        for s in taken + peers:
            s.close()
        listener.close()
