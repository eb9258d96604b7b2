"""server/gate.py's DirectSockets, in process: which sockets skip the Starlette stack.

The gate's checks are tested against a real server in test_attacks_edge (host,
forwarded headers, GET rates); here plain ASGI calls show where a WebSocket scope
goes once they pass: the named path straight to its endpoint, anything else (other
paths, a scope under a root_path) through the rest of the stack as before."""

from __future__ import annotations

from typing import Any

from starlette.websockets import WebSocket

from liverec.config import Settings
from liverec.server.gate import PEER_TRUSTED, DirectSockets


def ws_scope(path: str, host: str = "127.0.0.1:8000", root_path: str = "") -> dict[str, Any]:
    return {
        "type": "websocket",
        "path": path,
        "root_path": root_path,
        "scheme": "ws",
        "client": ("127.0.0.1", 5000),
        "headers": [(b"host", host.encode())],
    }


async def route(scope: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    calls: list[str] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append("stack " + scope["path"])

    async def endpoint(ws: WebSocket) -> None:
        assert ws.scope[PEER_TRUSTED] is False and ws.client is not None
        assert ws.scope["app"] == "the starlette app"  # what ws.app.state is read from
        calls.append("direct " + ws.url.path)

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    direct = DirectSockets(app, "the starlette app", Settings(), {"/v1/ws": endpoint})  # type: ignore[arg-type]
    await direct(scope, receive, send)
    return calls, sent


async def test_the_named_websocket_path_goes_straight_to_its_endpoint() -> None:
    assert await route(ws_scope("/v1/ws")) == (["direct /v1/ws"], [])


async def test_other_sockets_a_root_path_and_http_go_through_the_stack() -> None:
    assert await route(ws_scope("/v1/feed")) == (["stack /v1/feed"], [])
    assert await route(ws_scope("/v1/ws/extra")) == (["stack /v1/ws/extra"], [])
    under = ws_scope("/shop/v1/ws", root_path="/shop")
    assert await route(under) == (["stack /shop/v1/ws"], [])
    http = {**ws_scope("/v1/ws"), "type": "http", "method": "GET"}
    assert await route(http) == (["stack /v1/ws"], [])


async def test_the_checks_come_first_on_the_direct_path_too() -> None:
    calls, sent = await route(ws_scope("/v1/ws", host="evil.example"))
    assert calls == []
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "host not allowed"}]
