"""The timers liverec hands to uvicorn: `ping_interval_s`, `ping_timeout_s` (WebSocket
keepalive) and `shutdown_grace_s` (how long SIGTERM waits for requests in flight).

A peer that must not answer pings cannot be a normal client (websockets answers them on
its own), so these tests drive websockets' sans-I/O client protocol over a plain TCP
stream and decide what goes back on the wire. Each outcome is an event (a frame, a
close, the process exiting, a log line), bounded by a generous deadline."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from .servers import LiverecServer
from .wsclient import Client

BOUND_S = 60.0  # only ever a failure bound: no outcome below waits for it


class Peer:
    """A WebSocket client (websockets' own protocol) whose automatic answers, pongs and
    the closing handshake's echo, are sent only when `answer` is True."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, proto: ClientProtocol
    ) -> None:
        self.reader, self.writer, self.proto = reader, writer, proto
        self.answer = True
        self.frames: list[Frame] = []  # every frame received, in order

    @classmethod
    async def open(cls, server: LiverecServer) -> Peer:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        proto = ClientProtocol(parse_uri(server.ws_url))
        proto.send_request(proto.connect())
        peer = cls(reader, writer, proto)
        await peer._flush(force=True)
        while not any(isinstance(e, Response) for e in await peer._read()):
            pass
        return peer

    async def _flush(self, force: bool = False) -> None:
        data = b"".join(self.proto.data_to_send())  # discarded when not answering
        if data and (self.answer or force) and not self.writer.is_closing():
            self.writer.write(data)
            await self.writer.drain()

    async def _read(self) -> list[Any]:
        data = await asyncio.wait_for(self.reader.read(65536), BOUND_S)
        if data:
            self.proto.receive_data(data)
        else:
            self.proto.receive_eof()
        events = self.proto.events_received()
        self.frames += [e for e in events if isinstance(e, Frame)]
        await self._flush()
        if not data and not events:
            raise EOFError
        return events

    async def hello(self) -> None:
        self.proto.send_text(json.dumps({"type": "hello"}).encode())
        await self._flush(force=True)
        async with asyncio.timeout(BOUND_S):
            while not any(f.opcode is Opcode.TEXT and b'"recs"' in f.data for f in self.frames):
                await self._read()

    async def until_closed(self) -> int | None:
        """Read until the server's close frame and EOF; return the close code."""
        try:
            async with asyncio.timeout(BOUND_S):  # for the whole wait, not per read
                while True:
                    await self._read()
        except EOFError:
            pass
        return self.proto.close_rcvd.code if self.proto.close_rcvd else None

    def count(self, opcode: Opcode) -> int:
        return sum(1 for f in self.frames if f.opcode is opcode)

    def close(self) -> None:
        self.writer.close()


async def test_the_server_pings_every_ping_interval_s() -> None:
    # The reference is another timer of the server's own: with pings every 0.2 s, a
    # connection closed for idling after 3 s has seen several; at the default 20 s
    # interval it would have seen none.
    server = LiverecServer(ping_interval_s=0.2, ping_timeout_s=60, idle_timeout_s=3).start()
    try:
        peer = await Peer.open(server)
        await peer.hello()
        assert await peer.until_closed() == 1000  # idle_timeout_s
        assert peer.count(Opcode.PING) >= 3
        peer.close()
    finally:
        server.stop()


async def test_a_peer_that_does_not_answer_pings_is_closed_1011() -> None:
    server = LiverecServer(ping_interval_s=0.2, ping_timeout_s=0.5).start()
    try:
        peer = await Peer.open(server)
        await peer.hello()
        async with await Client.open(server.ws_url) as other:  # answers pings (websockets)
            await other.hello()
            peer.answer = False
            assert await peer.until_closed() == 1011  # "keepalive ping timeout"
            assert peer.count(Opcode.PING) >= 1
            # the peer that answers is still served after the same pings and timeouts
            await other.send({"type": "ping"})
            assert (await other.recv())["type"] == "pong"
        peer.close()
    finally:
        server.stop()


async def test_sigterm_closes_sockets_1012_and_exits_after_shutdown_grace_s() -> None:
    # A request whose body never comes (body_timeout_s far away) keeps uvicorn waiting
    # at shutdown; shutdown_grace_s=1 cancels it and the process exits. The log line is
    # uvicorn's own, written when the grace ran out.
    server = LiverecServer(shutdown_grace_s=1, body_timeout_s=3600).start()
    stuck = socket.create_connection(("127.0.0.1", server.port))
    try:
        async with await Client.open(server.ws_url) as c:
            await c.hello()
            head = b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            stuck.sendall(head + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
            # Its bytes were in the kernel before this connection existed: once this is
            # answered, the loop has read them and the stuck request is in flight.
            status, _ = server.get_json("/healthz")
            assert status == 200
            assert server.proc is not None
            proc = server.proc
            proc.terminate()  # SIGTERM
            try:
                await asyncio.wait_for(c.recv(), BOUND_S)
                raise AssertionError("a frame after SIGTERM instead of the close")
            except ConnectionClosed as exc:
                assert exc.rcvd is not None and exc.rcvd.code == 1012
            # uvicorn raises the signal it caught again once it is done: -SIGTERM
            await asyncio.to_thread(proc.wait, BOUND_S)
        assert "Cancel 1 running task(s), timeout graceful shutdown exceeded" in server.log()
    finally:
        stuck.close()
        server.stop()
