"""Documented limits of the socket and the HTTP API, each against a real server:
the idle close, the global connection limit, the 100-event request limit, the 503
with `not_recorded` when the store is down, and which address a limit counts
(X-Forwarded-For only from a trusted proxy)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from liverec.identity import mint_token
from liverec.ownership import new_session_id

from .conftest import RedisServer
from .servers import LiverecServer, free_port
from .wsclient import Client


@pytest.fixture(scope="module")
def server() -> Iterator[LiverecServer]:
    srv = LiverecServer("memory://", idle_timeout_s=0.5, max_connections=3).start()
    yield srv
    srv.stop()


async def _closed_with(c: Client) -> tuple[int, str]:
    """Read until the server closes; the close code and reason it sent."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await c.recv(timeout=30)
    assert info.value.rcvd is not None, "closed without a close frame from the server"
    return info.value.rcvd.code, info.value.rcvd.reason


async def test_idle_connection_is_closed_1000(server: LiverecServer) -> None:
    c = await Client.open(server.ws_url)
    await c.hello()
    await c.event("idle-1")  # a working session, then silence past idle_timeout_s
    assert await _closed_with(c) == (1000, "idle timeout")


async def test_connections_over_max_connections_are_closed_1013(server: LiverecServer) -> None:
    # max_connections=3 in total; each client from its own address, so the per-address
    # limit (256) plays no part.
    clients = [await Client.open(server.ws_url, local_addr=(f"127.0.1.{i}", 0)) for i in (1, 2, 3)]
    try:
        for c in clients:
            await c.send({"type": "ping"})  # pings keep them from idling out meanwhile
            assert await c.recv() == {"type": "pong"}
        extra = await Client.open(server.ws_url, local_addr=("127.0.1.4", 0))
        assert await _closed_with(extra) == (1013, "server at capacity")
    finally:
        for c in clients:
            await c.close()
    # a slot is free again once one leaves: wait until the server has seen the closes
    for _ in range(200):
        if "liverec_connections_open 0" in server.get_text("/metrics"):
            break
        await asyncio.sleep(0.05)
    async with await Client.open(server.ws_url, local_addr=("127.0.1.4", 0)) as again:
        await again.hello()


def _events(n: int, prefix: str) -> list[dict[str, str]]:
    return [{"id": f"{prefix}{i}", "action": "view", "item_id": f"it{i % 5}"} for i in range(n)]


def test_http_events_at_most_100_per_request(server: LiverecServer) -> None:
    status, reply = server.post_json("/v1/events", {"events": _events(100, "h")})
    assert status == 200 and len(reply["acked"]) == 100 and reply["not_recorded"] == []
    sid = reply["session_id"]  # issued by the server
    body = {"session_id": sid, "events": _events(101, "o")}
    status, reply = server.post_json("/v1/events", body)
    assert status == 400 and reply["error"]["code"] == "too_many_events"
    status, session = server.get_json(f"/v1/sessions/{sid}")
    assert status == 200 and len(session["items"]) == 100  # nothing of the 101 was recorded
    status, reply = server.post_json("/v1/events", {"events": _events(101, "n")})
    assert status == 400 and reply["error"]["code"] == "too_many_events"
    assert "session_id" not in reply  # no session was opened for it


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    redis = RedisServer(free_port(), tmp_path)
    redis.start()
    yield redis
    redis.stop()


SECRET = "limits-test-secret-of-at-least-32-bytes"


async def test_http_events_503_not_recorded_while_the_store_is_down(
    own_redis: RedisServer,
) -> None:
    srv = LiverecServer(
        f"redis://127.0.0.1:{own_redis.port}/0?socket_timeout=0.5", jwt_secret=SECRET
    ).start()
    token = mint_token("una", SECRET)
    bearer = {"Authorization": f"Bearer {token}"}
    try:
        # a signed-in user's session live in this process: its owner needs no store read
        async with await Client.open(srv.ws_url) as c:
            welcome, _ = await c.hello(user_token=token)
            sid = welcome["session_id"]
            own_redis.kill()
            body = {"session_id": sid, "events": _events(2, "down")}
            status, reply = srv.post_json("/v1/events", body, headers=bearer)
            assert status == 503, reply
            assert reply["acked"] == [] and reply["not_recorded"] == ["down0", "down1"]
            assert reply["recs"]["type"] == "recs"  # recommendations still answered
            # a session the process does not hold cannot even be opened: 503 as well
            body_elsewhere = {"session_id": new_session_id(), "events": _events(1, "x")}
            status, reply = srv.post_json("/v1/events", body_elsewhere)
            assert status == 503 and reply["error"]["code"] == "store_unavailable"
            own_redis.start()  # same port, same append-only file
            for _ in range(200):  # the client resends until the store takes them
                status, reply = srv.post_json("/v1/events", body, headers=bearer)
                if status == 200:
                    break
                await asyncio.sleep(0.05)
            assert status == 200 and reply["acked"] == ["down0", "down1"], reply
    finally:
        srv.stop()
        with contextlib.suppress(Exception):
            own_redis.stop()


# X-Forwarded-For names the client only when the peer is a trusted proxy. The per-address
# connection limit shows which address the server counted.
XFF_CASES = [
    pytest.param("127.0.0.1", True, id="trusted-proxy"),
    pytest.param("", False, id="no-trusted-proxy"),
    pytest.param("192.0.2.1", False, id="untrusted-peer"),
]


@pytest.mark.parametrize(("trusted", "honoured"), XFF_CASES)
async def test_x_forwarded_for_only_from_trusted_proxies(trusted: str, honoured: bool) -> None:
    srv = LiverecServer(
        "memory://", max_connections_per_address=1, **({"trusted_proxies": trusted})
    ).start()
    try:

        async def open_as(client: str) -> Client:
            return await Client.open(srv.ws_url, additional_headers={"x-forwarded-for": client})

        first = await open_as("203.0.113.1")
        await first.hello()
        second = await open_as("203.0.113.2")  # another shopper behind the same proxy
        if honoured:
            await second.hello()
            await second.close()
            same = await open_as("203.0.113.1")  # the first shopper's address again
            assert await _closed_with(same) == (1013, "too many connections from this address")
        else:  # every socket counts as the proxy's own address
            assert await _closed_with(second) == (1013, "too many connections from this address")
        await first.close()
    finally:
        srv.stop()
