"""One socket write for the frames one event produces.

Owns: `BatchingWSProtocol`, uvicorn's websockets-sansio protocol with one addition:
a `websocket.send` message that carries `"liverec.more": True` is framed at once but
written with the next message's bytes, so the ack and the recs frame of an event (the
writer of live.py knows the second is queued behind the first) leave in one `send`
system call instead of two. On loopback a `send` costs the sender the receiver's TCP
processing too; it was a quarter of the server's CPU per event (docs/benchmarks.md).

Nothing waits for a later frame: the flag is set only when the next frame is already
queued and is sent by the same writer right after, and any message without the flag
(or any other write of the connection: a pong, a ping, a close) carries the held
bytes first, in order. Under any other ASGI server the key is ignored and each frame
is written on its own.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

MORE = "liverec.more"  # the ASGI message key: "more frames follow at once"


class BatchingWSProtocol(WebSocketsSansIOProtocol):
    """See the module docstring."""

    async def send(self, message: Any) -> None:
        if (  # read with defaults: a uvicorn whose protocol lacks one writes plainly
            message.get(MORE)
            and message["type"] == "websocket.send"
            and getattr(self, "handshake_complete", False)
            and getattr(self, "initial_response", True) is None
            and getattr(self, "close_sent", True) is False
        ):
            await self.writable.wait()
            if self.disconnected:
                raise ClientDisconnected()
            try:
                data = message.get("bytes")
                if data is not None:
                    self.conn.send_binary(data)
                else:
                    self.conn.send_text(message["text"].encode())
            except InvalidState:
                raise ClientDisconnected() from None
            return  # framed; its bytes go out with the next write
        await super().send(message)
