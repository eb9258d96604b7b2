"""server/wsproto.py: frames handed over with "more" leave in one socket write, in order.

A real uvicorn server (in this process, on a free port) runs liverec's WebSocket
protocol class and a Starlette endpoint that sends through liverec's
`StarletteTransport`; a real `websockets` client reads. The only addition is a record
of every `transport.write` the protocol makes (a subclass wraps the write of the real
socket transport)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from liverec.server.ws import StarletteTransport
from liverec.server.wsproto import BatchingWSProtocol

from .servers import free_port

WRITES: list[bytes] = []


class RecordingProtocol(BatchingWSProtocol):
    def connection_made(self, transport: Any) -> None:
        real = transport.write

        def write(data: bytes) -> None:
            WRITES.append(bytes(data))
            real(data)

        transport.write = write
        super().connection_made(transport)


async def endpoint(ws: WebSocket) -> None:
    await ws.accept()
    out = StarletteTransport(ws)
    await out.send("first-frame", more=True)
    await out.send(b"second-frame")  # bytes and text alike
    await ws.receive_text()
    await out.send(b"third-frame", more=True)  # a close, not a send, comes next
    await ws.close(1000, "done")


@pytest.fixture
async def url() -> AsyncIterator[str]:
    port = free_port()
    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ws=RecordingProtocol,
        ws_per_message_deflate=False,  # as `liverec serve` runs it: frames readable
        log_config=None,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # uvicorn offers a flag, no event
        assert not task.done(), "the server did not start"
        await asyncio.sleep(0.01)
    WRITES.clear()
    yield f"ws://127.0.0.1:{port}/ws"
    server.should_exit = True
    await task


async def test_frames_marked_more_leave_with_the_next_write(url: str) -> None:
    async with websockets.connect(url) as client:
        assert await client.recv() == "first-frame"
        assert await client.recv() == b"second-frame"
        await client.send("go on")
        assert await client.recv() == b"third-frame"
        with pytest.raises(websockets.ConnectionClosedOK):
            await client.recv()
        assert client.close_code == 1000
    frames = [w for w in WRITES if not w.startswith(b"HTTP/1.1")]  # after the handshake
    # one write for the first two frames, one for the third and the close frame
    assert len(frames) == 2, frames
    assert b"first-frame" in frames[0] and frames[0].endswith(b"second-frame")
    assert frames[0].index(b"first-frame") < frames[0].index(b"second-frame")
    assert b"third-frame" in frames[1] and frames[1].endswith(b"done")
