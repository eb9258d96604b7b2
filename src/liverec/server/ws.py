"""The /v1/ws endpoint: origin check, connection limit, close codes.

Owns: adapting Starlette's WebSocket to the session manager's `Transport`, and
sending the close code that close_codes.py maps each ending error to.
"""

from __future__ import annotations

import logging
import math

from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..sessions import SessionManager
from .close_codes import (
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TRY_LATER,
    close_code_for,
)
from .origins import OriginPolicy
from .wsproto import MORE

log = logging.getLogger("liverec.server")


class _DenialLogFilter(logging.Filter):
    """uvicorn's websockets-sansio protocol (0.54) logs "ASGI callable returned
    without completing handshake" at ERROR after an app sends a denial response (our
    HTTP 429 to a penalised flooder), although the response went out. One such line
    per refused reconnect would flood the log; this drops exactly that message."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("ASGI callable returned without completing")


def quiet_denial_logs() -> None:
    """Install the filter on uvicorn's error logger (once per process)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DenialLogFilter) for f in logger.filters):
        logger.addFilter(_DenialLogFilter())


class StarletteTransport:
    """The session manager's view of a Starlette WebSocket."""

    __slots__ = ("ws",)

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    async def receive(self) -> str | bytes | None:
        message = await self.ws.receive()
        kind = message["type"]
        if kind == "websocket.disconnect":
            return None
        text = message.get("text")
        if text is not None:
            return str(text)
        data = message.get("bytes")
        return bytes(data) if data is not None else b""

    async def send(self, data: str | bytes, more: bool = False) -> None:
        """`more`: another frame follows at once (wsproto.py writes both together)."""
        kind = "text" if isinstance(data, str) else "bytes"
        await self.ws.send({"type": "websocket.send", kind: data, MORE: more})


async def websocket_endpoint(ws: WebSocket) -> None:
    manager: SessionManager = ws.app.state.manager
    origins: OriginPolicy = ws.app.state.origins
    if not origins.allows(ws.headers, ws.scope["scheme"], ws.url.path):
        manager.metrics.closes.inc("403")
        await ws.close(CLOSE_POLICY, "origin not allowed")  # before accept: HTTP 403
        return
    address = ws.client.host if ws.client is not None else ""
    wait = manager.penalty_left(address)
    if wait > 0:  # cut off for flooding a moment ago: refused before the handshake
        manager.metrics.closes.inc("429")
        await ws.send_denial_response(
            PlainTextResponse(
                "this address was cut off for flooding; retry later\n",
                status_code=429,
                headers={"retry-after": str(math.ceil(wait))},
            )
        )
        return
    await ws.accept()
    refusal = manager.refusal(address)
    if refusal is not None:
        manager.metrics.closes.inc(str(CLOSE_TRY_LATER))
        await ws.close(CLOSE_TRY_LATER, refusal)
        return
    code, reason = CLOSE_NORMAL, ""
    try:
        await manager.serve(StarletteTransport(ws), address)
    except WebSocketDisconnect:
        return
    except Exception as exc:
        code, reason = close_code_for(exc)
        if code == CLOSE_INTERNAL:
            log.exception("connection handler failed")
    manager.metrics.closes.inc(str(code))
    if ws.application_state == WebSocketState.CONNECTED and (
        ws.client_state == WebSocketState.CONNECTED
    ):
        try:
            await ws.close(code, reason)
        except (RuntimeError, OSError, WebSocketDisconnect):
            pass  # the peer is already gone
