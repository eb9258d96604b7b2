"""`liverec serve --workers N`: processes sharing one socket; sessions move between them."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from liverec.config import Settings
from liverec.server.workers import bind

from .servers import LiverecServer, free_port
from .wsclient import Client

DEADLINE_S = 30.0


def _workers(server: LiverecServer) -> set[int]:
    assert server.proc is not None
    pid = server.proc.pid
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in text.split()}


async def _wait_workers(server: LiverecServer, count: int, without: int = -1) -> set[int]:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        pids = _workers(server)
        if (len(pids) == count and without not in pids) or time.monotonic() > deadline:
            return pids
        await asyncio.sleep(0.05)


async def _resume(server: LiverecServer, sid: str) -> list[str]:
    async with await Client.open(server.ws_url) as c:
        welcome, recs = await c.hello(session_id=sid, k=5)
        assert welcome["resumed"] is True and welcome["session_id"] == sid, welcome
        return [r["item_id"] for r in recs["items"]]


async def test_sessions_move_between_workers_and_survive_a_killed_one(redis_url: str) -> None:
    server = LiverecServer(redis_url, workers=2, warm_events=0).start()
    try:
        first = await _wait_workers(server, 2)
        assert len(first) == 2, first
        async with await Client.open(server.ws_url) as c:
            welcome, _ = await c.hello(k=5)
            sid = welcome["session_id"]
            for item in ("cam", "lens", "bag", "cam", "tripod"):
                await c.event(item)
        # Each new connection lands on either worker; every one resumes the session.
        for _ in range(6):
            await _resume(server, sid)
        victim = sorted(first)[0]
        os.kill(victim, signal.SIGKILL)
        # Clients keep being served by the other worker while the victim is restarted.
        for _ in range(4):
            await _resume(server, sid)
        again = await _wait_workers(server, 2, without=victim)
        assert len(again) == 2 and victim not in again, again
        for _ in range(4):
            await _resume(server, sid)
        status, stored = server.get_json(f"/v1/sessions/{sid}")
        assert status == 200 and stored["items"] == ["cam", "lens", "bag", "cam", "tripod"]
    finally:
        assert server.stop() == 0, server.log()


def test_workers_refused_with_the_embedded_store(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEREC_")}
    cmd = [sys.executable, "-m", "liverec.cli", "serve", "--workers", "2"]
    cmd += ["--store", f"embedded://{tmp_path / 'db.sqlite'}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "workers" in lines[0] and "embedded" in lines[0], done.stderr


async def test_connections_accepted_on_the_supervisors_socket_send_without_delay() -> None:
    """The workers' connections have TCP_NODELAY, as uvicorn's own would: asyncio sets it
    only on sockets whose protocol says TCP. Without it each small frame waited for
    the peer's delayed ACK (p50 ~50 ms with --workers 2, 2 ms without; bench/scale.py)."""
    sock = bind(Settings(port=free_port()))
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            peer = transport.get_extra_info("socket")
            accepted.set_result(peer.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        try:
            assert await asyncio.wait_for(accepted, 10) != 0
        finally:
            writer.close()
            await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
