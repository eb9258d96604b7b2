"""The real-time loop over a real uvicorn server and a real websockets client."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .servers import LiverecServer
from .wsclient import Client


@pytest.fixture(scope="module")
def server() -> Iterator[LiverecServer]:
    srv = LiverecServer(
        "memory://", hello_timeout_s=1.0, max_frame_bytes=4096, events_per_s=200, events_burst=50
    ).start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("binary", [False, True], ids=["json", "msgpack"])
async def test_hello_event_ack_recs_in_both_encodings(server: LiverecServer, binary: bool) -> None:
    async with await Client.open(server.ws_url, binary=binary) as c:
        welcome, recs = await c.hello(k=5, placement="home")
        assert welcome["resumed"] is False and welcome["session_id"]
        assert welcome["model"] == recs["model"]
        assert recs["for_event"] is None and recs["session_id"] == welcome["session_id"]
        ack, recs = await c.event("sku-1", "view")
        assert ack["id"] == recs["for_event"]
        assert len(recs["items"]) <= 5
        for item in recs["items"]:
            assert set(item) == {"item_id", "score"} and isinstance(item["score"], float)
        await c.send({"type": "ping"})
        assert await c.recv() == {"type": "pong"}


async def test_recs_reflect_events_a_then_b(server: LiverecServer) -> None:
    # Many sessions in which A is followed by B (and noise): viewing A puts B on top.
    for i in range(8):
        async with await Client.open(server.ws_url) as c:
            await c.hello()
            await c.event(f"noise-{i}")
            await c.event("item-A")
            await c.event("item-B")
    async with await Client.open(server.ws_url) as c:
        await c.hello()
        _, recs = await c.event("item-A")
        ids = [r["item_id"] for r in recs["items"]]
        assert ids[0] == "item-B", ids
        assert "item-A" not in ids  # never the item just interacted with


async def test_duplicate_event_acked_again_applied_once(server: LiverecServer) -> None:
    async with await Client.open(server.ws_url) as c:
        welcome, _ = await c.hello()
        await c.event("dup-x", id="same-id")
        ack, _ = await c.event("dup-x", id="same-id")
        assert ack.get("duplicate") is True
    # Applied once: the stored sequence holds the item once.
    status, body = server.get_json(f"/v1/sessions/{welcome['session_id']}")
    assert status == 200 and body["items"] == ["dup-x"]
    assert "liverec_duplicate_events_total" in server.get_text("/metrics")


async def test_purchased_items_never_recommended(server: LiverecServer) -> None:
    for _ in range(5):
        async with await Client.open(server.ws_url) as c:
            await c.hello()
            await c.event("phone-1")
            await c.event("case-1")
            await c.event("charger-1")
    async with await Client.open(server.ws_url) as c:
        await c.hello()
        await c.event("case-1", "purchase")
        _, recs = await c.event("phone-1")
        ids = [r["item_id"] for r in recs["items"]]
        assert "case-1" not in ids and "phone-1" not in ids
        assert len(ids) == len(set(ids))


async def test_resume_same_session(server: LiverecServer) -> None:
    async with await Client.open(server.ws_url) as c:
        welcome, _ = await c.hello()
        sid = welcome["session_id"]
        await c.event("r-1")
    async with await Client.open(server.ws_url) as c:
        welcome, recs = await c.hello(session_id=sid)
        assert welcome["resumed"] is True and welcome["session_id"] == sid
        assert "r-1" not in [r["item_id"] for r in recs["items"]]


BAD_TEXT_FRAMES: list[tuple[str, str]] = [
    ("{not json", "bad_json"),
    ("[1, 2, 3]", "bad_frame"),
    ('"just a string"', "bad_frame"),
    ('{"no_type": 1}', "missing_field"),
    ('{"type": 5}', "bad_type"),
    ('{"type": "teleport"}', "unknown_type"),
    ('{"type": "event", "action": "view", "item_id": "a"}', "missing_field"),
    ('{"type": "event", "id": "x1", "action": "view"}', "missing_field"),
    ('{"type": "event", "id": "x2", "action": "sneeze", "item_id": "a"}', "bad_action"),
    ('{"type": "event", "id": 7, "action": "view", "item_id": "a"}', "bad_field"),
    ('{"type": "event", "id": "x3", "action": "view", "item_id": ["a"]}', "bad_field"),
    ('{"type": "event", "id": "x4", "action": "view", "item_id": ""}', "bad_field"),
    ('{"type": "event", "id": "x5", "action": "view", "item_id": "a b"}', "bad_id"),
    ('{"type": "event", "id": "x6", "action": "rate", "item_id": "a"}', "missing_field"),
    ('{"type": "event", "id": "x7", "action": "view", "item_id": "a", "ts": "now"}', "bad_field"),
    ('{"type": "event", "id": "x8", "action": "view", "item_id": "a", "ts": 1e300}', "bad_field"),
    (
        '{"type": "event", "id": "x9", "action": "view", "item_id": "' + "i" * 300 + '"}',
        "id_too_long",
    ),
    ('{"type": "hello"}', "already_hello"),
]


async def test_malformed_frames_get_errors_and_connection_stays(server: LiverecServer) -> None:
    async with await Client.open(server.ws_url) as c:
        await c.hello()
        for raw, code in BAD_TEXT_FRAMES:
            await c.ws.send(raw)
            frame = await c.recv()
            assert frame["type"] == "error" and frame["code"] == code, (raw, frame)
            assert frame["message"]
        # still alive and serving
        ack, recs = await c.event("after-errors")
        assert recs["for_event"] == ack["id"]


async def test_error_frames_name_the_event(server: LiverecServer) -> None:
    async with await Client.open(server.ws_url) as c:
        await c.hello()
        await c.send({"type": "event", "id": "bad-1", "action": "fly", "item_id": "a"})
        frame = await c.recv()
        assert frame["ref"] == "bad-1"


async def test_bad_msgpack_and_wrong_types_in_binary(server: LiverecServer) -> None:
    async with await Client.open(server.ws_url, binary=True) as c:
        await c.hello()
        await c.ws.send(b"\xc1\xc1\xc1")  # 0xc1 is never used in msgpack
        assert (await c.recv())["code"] == "bad_msgpack"
        await c.ws.send(msgpack.packb({"type": "event", "id": b"\x00", "action": "view"}))
        assert (await c.recv())["code"] in ("bad_field", "missing_field")
        await c.ws.send(msgpack.packb({1: 2}))
        assert (await c.recv())["code"] == "bad_msgpack"
        await c.event("still-fine")


async def test_event_before_hello_is_an_error_not_a_close(server: LiverecServer) -> None:
    async with await Client.open(server.ws_url) as c:
        await c.send({"type": "event", "id": "early", "action": "view", "item_id": "a"})
        frame = await c.recv()
        assert frame["code"] == "hello_required" and frame["ref"] == "early"
        await c.hello()


async def test_bad_hello_fields(server: LiverecServer) -> None:
    async with await Client.open(server.ws_url) as c:
        for bad, code in [
            ({"k": 0}, "bad_field"),
            ({"k": 101}, "bad_field"),
            ({"k": "ten"}, "bad_field"),
            ({"session_id": "x" * 500}, "id_too_long"),
            ({"user_token": "abc"}, "auth_disabled"),
        ]:
            await c.send({"type": "hello", **bad})
            frame = await c.recv()
            assert frame["type"] == "error" and frame["code"] == code, (bad, frame)
        await c.hello()


async def test_frame_over_limit_closes_1009(server: LiverecServer) -> None:
    c = await Client.open(server.ws_url)
    await c.hello()
    await c.ws.send(json.dumps({"type": "ping", "pad": "x" * 8000}))
    with pytest.raises(ConnectionClosed) as info:
        await c.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009


async def test_no_hello_in_time_closes_1008(server: LiverecServer) -> None:
    c = await Client.open(server.ws_url)
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await c.recv(timeout=5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008


async def test_flood_past_rate_limit(server: LiverecServer) -> None:
    # its own address: a flooder's address is refused for flood_penalty_s afterwards
    c = await Client.open(server.ws_url, local_addr=("127.0.0.6", 0))
    await c.hello()
    for i in range(400):  # burst 50, then 200/s; sent as fast as possible
        await c.send({"type": "event", "id": f"f{i}", "action": "view", "item_id": f"x{i % 7}"})
    codes: list[Any] = []
    with pytest.raises(ConnectionClosed) as info:
        while True:
            frame = await c.recv(timeout=5)
            if frame["type"] == "error":
                codes.append(frame["code"])
    assert "rate_limited" in codes
    assert info.value.rcvd is not None and info.value.rcvd.code == 1013
    # Cut off for flooding: its address is now refused before the handshake...
    with pytest.raises(InvalidStatus) as refused:
        await Client.open(server.ws_url, local_addr=("127.0.0.6", 0))
    assert refused.value.response.status_code == 429
    assert 1 <= int(refused.value.response.headers["Retry-After"]) <= 10
    assert b"flooding" in refused.value.response.body
    # ...while other addresses are served as before
    async with await Client.open(server.ws_url) as other:
        await other.hello()
        ack, _ = await other.event("sku-1", "view")
        assert ack["type"] == "ack"
    assert 'liverec_closes_total{code="429"} 1' in server.get_text("/metrics")
    assert "without completing handshake" not in server.log()  # no error line per refusal


def _closes_1013(metrics: str) -> float:
    """Closes counted with 1013 (the series is exported from 0, so read its value)."""
    found = re.search(r'^liverec_closes_total\{code="1013"\} (\S+)$', metrics, re.MULTILINE)
    return float(found.group(1)) if found is not None else 0.0


async def test_client_that_never_reads_is_cut_1013_and_does_not_hurt_others() -> None:
    # Its own server: no rate limit in the way, so only the outbound queue can cut it.
    srv = LiverecServer(
        "memory://",
        outbound_queue=8,
        events_per_s=1e5,
        events_burst=100000,
        address_events_per_s=1e5,
        address_events_burst=100000,
    ).start()
    try:
        # max_queue=1: the client library stops reading the socket at once
        slow = await Client.open(srv.ws_url, max_queue=1)
        await slow.send({"type": "hello", "k": 100})
        cut = False
        for i in range(20000):  # until kernel buffers fill and the server's queue with them
            try:
                await slow.send(
                    {"type": "event", "id": f"s{i}", "action": "view", "item_id": f"q{i % 300}"}
                )
            except ConnectionClosed:
                break
            if i % 500 == 499:
                await asyncio.sleep(0.05)
                if _closes_1013(srv.get_text("/metrics")) > 0:
                    cut = True
                    break
        for _ in range(200):  # the server may still be working through what it got
            if cut or _closes_1013(srv.get_text("/metrics")) > 0:
                cut = True
                break
            await asyncio.sleep(0.05)
        assert cut, "the server kept buffering for a client that does not read"
        # meanwhile others are served as before
        async with await Client.open(srv.ws_url) as c:
            await c.hello()
            for i in range(5):
                await c.event(f"fine-{i}")
        status, body = srv.get_json("/readyz")
        assert status == 200 and body["ready"] is True
        # reading at last, the slow client finds the close after what was sent before it
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await slow.recv(timeout=30)
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (1013, "client not reading")
    finally:
        srv.stop()


async def test_origin_check(server: LiverecServer) -> None:
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus):
        await Client.open(server.ws_url, origin="https://evil.example")
    ok = await Client.open(server.ws_url, origin=f"http://127.0.0.1:{server.port}")
    await ok.hello()
    await ok.close()


async def test_http_health_ready_metrics(server: LiverecServer) -> None:
    # Its own event and error: the histogram and the error counter exist once used, and
    # this test must not rely on earlier tests having used them.
    async with await Client.open(server.ws_url) as c:
        await c.hello()
        await c.event("metrics-1")
        await c.ws.send("{not json")
        assert (await c.recv())["code"] == "bad_json"
    assert server.get_json("/healthz") == (200, {"status": "ok"})
    status, body = server.get_json("/readyz")
    assert status == 200 and body["store"] is True
    text = server.get_text("/metrics")
    for name in (
        "liverec_connections_open",
        "liverec_events_total",
        "liverec_event_to_recs_seconds_bucket",
        "liverec_errors_total",
    ):
        assert name in text, name


def test_http_events_and_recommendations(server: LiverecServer) -> None:
    status, body = server.post_json(
        "/v1/events",
        {
            "k": 3,
            "events": [
                {"id": "h1", "action": "view", "item_id": "hA"},
                {"id": "h2", "action": "view", "item_id": "hB"},
            ],
        },
    )
    assert status == 200, body
    assert body["acked"] == ["h1", "h2"] and body["recs"]["type"] == "recs"
    sid = body["session_id"]  # issued by the server
    status, body = server.post_json(
        "/v1/events",
        {"session_id": sid, "events": [{"id": "h1", "action": "view", "item_id": "hA"}]},
    )
    assert status == 200 and body["duplicates"] == ["h1"]
    status, body = server.get_json(f"/v1/recommendations?session_id={sid}&k=2")
    assert status == 200 and len(body["items"]) <= 2 and body["session_id"] == sid
    assert server.get_json("/v1/recommendations?session_id=A" + "b" * 20 + "w")[0] == 404
    assert server.get_json("/v1/recommendations?k=0")[0] == 400
    status, body = server.post_json("/v1/events", b"{oops")
    assert status == 400 and body["error"]["code"] == "bad_json"
    status, body = server.post_json(
        "/v1/events", {"events": [{"id": "z", "action": "jump", "item_id": "a"}]}
    )
    assert status == 400 and body["error"]["code"] == "bad_action" and body["error"]["ref"] == "z"


def test_http_body_limit_without_reading_it_all(server: LiverecServer) -> None:
    import socket

    # A client that announces a huge body is refused at once, from the header alone.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000\r\n\r\n{"
        )
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:80]
    # A body just over the limit gets the same answer as a JSON error.
    status, body = server.post_json("/v1/events", b"[" + b"1," * 20000 + b"1]")
    assert status == 413 and body["error"]["code"] == "body_too_large"
