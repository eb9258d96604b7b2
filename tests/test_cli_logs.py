"""`liverec serve`'s log: one format for liverec's and uvicorn's lines, JSON on request,
per-connection lines only at DEBUG."""

from __future__ import annotations

import json
import re

from .servers import LiverecServer
from .wsclient import Client

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (DEBUG|INFO|WARNING|ERROR) \S+: ")


async def one_connection(server: LiverecServer) -> None:
    client = await Client.open(server.ws_url, origin=server.base)
    await client.hello()
    await client.event("i1")
    await client.ws.close()
    server.get_text("/healthz")


def lines_after_stop(server: LiverecServer) -> list[str]:
    server.stop()  # SIGTERM: a graceful shutdown, logged too
    return [line for line in server.log().splitlines() if line.strip()]


async def test_text_lines_share_one_format_and_sockets_are_quiet_at_info() -> None:
    server = LiverecServer("memory://", log_level="info").start()
    await one_connection(server)
    lines = lines_after_stop(server)
    assert any(" INFO uvicorn: " in line for line in lines), lines  # uvicorn's own lines
    assert any(" INFO liverec.server: liverec ready" in line for line in lines), lines
    for line in lines:
        assert TEXT_LINE.match(line), line
        assert '"WebSocket /v1/ws"' not in line and "GET /healthz" not in line, line


async def test_json_lines_and_connections_at_debug() -> None:
    server = LiverecServer("memory://", log_level="debug", log_format="json").start()
    await one_connection(server)
    entries = [json.loads(line) for line in lines_after_stop(server)]  # every line is JSON
    assert all(set(e) >= {"time", "level", "logger", "message"} for e in entries), entries
    debug = [e["message"] for e in entries if e["level"] == "debug"]
    assert any(m.endswith('"WebSocket /v1/ws" [accepted]') for m in debug), debug
    assert any("GET /healthz" in m for m in debug), debug
    assert any(e["logger"] == "liverec.server" and e["level"] == "info" for e in entries)
