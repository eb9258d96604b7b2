"""The floor of our stack: a bare Starlette WebSocket endpoint that answers protocol v1.

Owns: a server that speaks just enough of the liverec protocol (JSON only) for the
load benchmark, with a FIXED list of 10 recommendations and no other work: no
validation beyond `json.loads`, no store, no recommender, no session state. It runs
on uvicorn with the same WebSocket options as `liverec serve` (websockets-sansio,
per-message deflate off, the same max frame size and ping settings), so whatever
liverec costs above this server is liverec's own cost.

    hello -> welcome + recs (for_event null)
    event -> ack + recs (for_event = the event id)
    ping  -> pong

    .venv/bin/python bench/echo_server.py --port 8765
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from liverec.config import Settings

ITEMS = [{"item_id": f"sku-{i}", "score": round(1.0 - i / 10, 6)} for i in range(10)]


def _dumps(frame: dict[str, object]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


async def endpoint(ws: WebSocket) -> None:
    await ws.accept()
    session_id = ""
    try:
        while True:
            msg = json.loads(await ws.receive_text())
            kind = msg.get("type")
            if kind == "event":
                await ws.send_text(_dumps({"type": "ack", "id": msg["id"]}))
                await ws.send_text(
                    _dumps(
                        {
                            "type": "recs",
                            "session_id": session_id,
                            "for_event": msg["id"],
                            "items": ITEMS,
                            "model": "echo",
                        }
                    )
                )
            elif kind == "hello":
                session_id = msg.get("session_id") or secrets.token_urlsafe(16)
                welcome = {"type": "welcome", "session_id": session_id, "resumed": False}
                await ws.send_text(_dumps({**welcome, "model": "echo", "protocol": 1}))
                recs = {"type": "recs", "session_id": session_id, "for_event": None}
                await ws.send_text(_dumps({**recs, "items": ITEMS, "model": "echo"}))
            elif kind == "ping":
                await ws.send_text(_dumps({"type": "pong"}))
    except WebSocketDisconnect:
        return


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def main() -> None:
    parser = argparse.ArgumentParser(description="liverec protocol echo floor")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    settings = Settings()  # the same frame size and heartbeat as a default `liverec serve`
    app = Starlette(routes=[WebSocketRoute("/v1/ws", endpoint), Route("/healthz", healthz)])
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        ws="websockets-sansio",
        ws_max_size=settings.max_frame_bytes,
        ws_per_message_deflate=False,
        ws_ping_interval=settings.ping_interval_s,
        ws_ping_timeout=settings.ping_timeout_s,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) or 1,
        log_level=args.log_level,
        lifespan="on",
        proxy_headers=False,
    )
    asyncio.run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
