"""Attacks on the session layer (issue 12), replayed against a real `liverec serve`.

Each test plays one attack as a client would and asserts the refusal: ratings off
the scale, a user's session taken over during a store outage (a private
redis-server stopped mid-test), client-chosen session ids, a session begun
anonymously and continued after login, and floods of frames that are not events
(pings, frames before hello, malformed frames). Rows of docs/security.md's table
"Attacks and defences" name these tests.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from liverec.identity import mint_token

from .conftest import RedisServer
from .servers import LiverecServer, free_port
from .wsclient import Client

SECRET = "attack-suite-secret-0123456789-abcdefghij"
UNKNOWN_ID = "A" + "b" * 20 + "w"  # the form of an issued id, never issued


@pytest.fixture(scope="module")
def server() -> Iterator[LiverecServer]:
    srv = LiverecServer("memory://", jwt_secret=SECRET).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def stingy() -> Iterator[LiverecServer]:
    """Buckets that hardly refill (0.001 tokens/s): every count below is exact for
    the length of any test run, whatever the machine's speed."""
    srv = LiverecServer(
        "memory://",
        events_per_s=0.001,
        events_burst=10,
        address_events_per_s=0.001,
        address_events_burst=25,
        flood_penalty_s=30,
        hello_timeout_s=60,
    ).start()
    try:
        yield srv
    finally:
        srv.stop()


def _get_as(server: LiverecServer, path: str, user: str) -> tuple[int, Any]:
    """Status and JSON body of a GET with `user`'s bearer token."""
    headers = {"authorization": "Bearer " + mint_token(user, SECRET)}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(server.base + path, headers=headers), timeout=5
        ) as r:
            return int(r.status), json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read())


def _auth(user: str) -> dict[str, str]:
    return {"authorization": "Bearer " + mint_token(user, SECRET)}


async def _frames_until_closed(c: Client) -> tuple[list[dict[str, Any]], int | None]:
    frames: list[dict[str, Any]] = []
    try:
        while True:
            frames.append(await c.recv(timeout=20))
    except ConnectionClosed as closed:
        return frames, closed.rcvd.code if closed.rcvd is not None else None


# --- item 1 (protocol part): ratings on a declared scale --------------------------------


async def test_rating_off_the_scale_is_refused(server: LiverecServer) -> None:
    async with await Client.open(server.ws_url) as c:
        await c.hello()
        for rating in (1_000_000, 5.01, 0.99, -3):
            await c.send(
                {"type": "event", "id": f"r{rating}", "action": "rate", "item_id": "X",
                 "rating": rating}
            )  # fmt: skip
            frame = await c.recv()
            assert frame["type"] == "error" and frame["code"] == "bad_field", frame
            assert frame["ref"] == f"r{rating}" and "1..5" in frame["message"]
        ack, _ = await c.event("X", "rate", rating=5)  # the socket stays; on the scale: acked
        assert ack["id"]
    status, body = server.post_json(
        "/v1/events", {"events": [{"id": "h", "action": "rate", "item_id": "X", "rating": 1e6}]}
    )
    assert status == 400 and body["error"]["code"] == "bad_field"


def test_rating_scale_is_a_setting() -> None:
    srv = LiverecServer("memory://", rating_min=0, rating_max=10).start()
    try:
        ok = {"events": [{"id": "a", "action": "rate", "item_id": "X", "rating": 9}]}
        assert srv.post_json("/v1/events", ok)[0] == 200
        bad = {"events": [{"id": "b", "action": "rate", "item_id": "X", "rating": 11}]}
        status, body = srv.post_json("/v1/events", bad)
        assert status == 400 and "0..10" in body["error"]["message"]
    finally:
        srv.stop()


# --- item 3: ownership during a store outage --------------------------------------------


async def test_store_outage_does_not_open_a_users_session() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="liverec-attack-redis-"))
    redis = RedisServer(free_port(), workdir, appendonly=False)
    redis.start()
    srv = LiverecServer(redis.url, jwt_secret=SECRET).start()
    try:
        async with await Client.open(srv.ws_url) as alice:
            welcome, _ = await alice.hello(user_token=mint_token("alice", SECRET))
            sid = welcome["session_id"]
            await alice.event("private-1", "purchase")
        redis.stop()  # the store goes away; nobody holds Alice's session here now

        # The attacker knows the id. The socket: refused, given a fresh session.
        async with await Client.open(srv.ws_url) as c:
            await c.send({"type": "hello", "session_id": sid})
            frame = await c.recv()
            assert frame["type"] == "error" and frame["code"] == "session_unverified", frame
            welcome = await c.recv()
            assert welcome["type"] == "welcome" and welcome["resumed"] is False
            assert welcome["session_id"] != sid
        # HTTP: 503, neither read nor written.
        status, body = srv.get_json(f"/v1/sessions/{sid}")
        assert status == 503 and body["error"]["code"] == "store_unavailable"
        assert srv.get_json(f"/v1/recommendations?session_id={sid}")[0] == 503
        write = {"session_id": sid, "events": [{"id": "x", "action": "view", "item_id": "i"}]}
        assert srv.post_json("/v1/events", write)[0] == 503
        # Alice herself is not resumed either while her ownership cannot be read.
        async with await Client.open(srv.ws_url) as alice:
            await alice.send(
                {"type": "hello", "session_id": sid, "user_token": mint_token("alice", SECRET)}
            )
            frame = await alice.recv()
            assert frame["code"] == "session_unverified"
            assert (await alice.recv())["session_id"] != sid
    finally:
        srv.stop()
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def test_a_new_http_session_of_a_signed_in_user_carries_the_users_purchases(
    server: LiverecServer,
) -> None:
    """The one open path (registry.py): a new session opened by POST /v1/events for a
    signed-in user loads the user's profile, as a hello does, so what the user bought
    is never recommended back; an anonymous caller's list still holds it."""
    bought = "open-path-bought"
    async with await Client.open(server.ws_url) as c:
        await c.hello(user_token=mint_token("olga", SECRET))
        await c.event(bought, "purchase")

    def listed(n: str, headers: dict[str, str] | None) -> list[str]:
        event = {"id": f"open-path-{n}", "action": "view", "item_id": "open-path-other"}
        status, body = server.post_json("/v1/events", {"events": [event], "k": 50}, headers)
        assert status == 200 and len(body["session_id"]) == 22, body
        return [r["item_id"] for r in body["recs"]["items"]]

    assert bought in listed("anonymous", None)
    assert bought not in listed("olga", _auth("olga"))


# --- item 4: session ids issued by the server, claimed at login ---------------------------


@pytest.mark.parametrize("chosen", ["1", "my-session", "x" * 22, UNKNOWN_ID + "=="])
async def test_client_chosen_session_id_is_refused(server: LiverecServer, chosen: str) -> None:
    async with await Client.open(server.ws_url) as c:
        await c.send({"type": "hello", "session_id": chosen})
        frame = await c.recv()
        assert frame["type"] == "error" and frame["code"] == "bad_session_id", frame
        welcome = await c.recv()
        assert welcome["resumed"] is False and welcome["session_id"] != chosen
        assert len(welcome["session_id"]) == 22
    write = {"session_id": chosen, "events": [{"id": "c", "action": "view", "item_id": "i"}]}
    status, body = server.post_json("/v1/events", write)
    assert status == 400 and body["error"]["code"] == "bad_session_id"
    assert server.get_json(f"/v1/sessions/{chosen}")[0] == 400
    assert server.get_json(f"/v1/recommendations?session_id={chosen}")[0] == 400


async def test_well_formed_but_unissued_id_is_refused(server: LiverecServer) -> None:
    async with await Client.open(server.ws_url) as c:
        await c.send({"type": "hello", "session_id": UNKNOWN_ID})
        frame = await c.recv()
        assert frame["type"] == "error" and frame["code"] == "unknown_session", frame
        welcome = await c.recv()
        assert welcome["resumed"] is False and welcome["session_id"] != UNKNOWN_ID
    write = {"session_id": UNKNOWN_ID, "events": [{"id": "u", "action": "view", "item_id": "i"}]}
    assert server.post_json("/v1/events", write)[0] == 404
    assert server.get_json(f"/v1/sessions/{UNKNOWN_ID}")[0] == 404  # and it was not created


async def test_anonymous_session_is_claimed_at_the_first_signed_in_hello(
    server: LiverecServer,
) -> None:
    anon = await Client.open(server.ws_url)
    try:
        welcome, _ = await anon.hello()
        sid = welcome["session_id"]
        await anon.event("browsed-anonymously")
        # Alice logs in on another socket (the anonymous one is still open).
        async with await Client.open(server.ws_url) as alice:
            welcome, _ = await alice.hello(session_id=sid, user_token=mint_token("alice", SECRET))
            assert welcome["resumed"] is True and welcome["session_id"] == sid
            await alice.event("bought-after-login", "purchase")
        # The anonymous socket can no longer write to it.
        await anon.send({"type": "event", "id": "late", "action": "view", "item_id": "q"})
        frame = await anon.recv()
        assert frame["type"] == "error" and frame["code"] == "session_forbidden"
        assert frame["ref"] == "late"
    finally:
        await anon.close()
    # Nobody but Alice opens it again: not anonymous, not Bob; not over HTTP either.
    for token in (None, mint_token("bob", SECRET)):
        async with await Client.open(server.ws_url) as c:
            await c.send(
                {"type": "hello", "session_id": sid} | ({"user_token": token} if token else {})
            )
            frame = await c.recv()
            assert frame["type"] == "error" and frame["code"] == "session_forbidden"
    assert server.get_json(f"/v1/sessions/{sid}")[0] == 403
    assert _get_as(server, f"/v1/sessions/{sid}", "bob")[0] == 403
    assert server.get_json(f"/v1/recommendations?session_id={sid}")[0] == 403
    write = {"session_id": sid, "events": [{"id": "w", "action": "view", "item_id": "i"}]}
    assert server.post_json("/v1/events", write)[0] == 403
    status, body = _get_as(server, f"/v1/sessions/{sid}", "alice")
    assert status == 200 and body["items"] == ["browsed-anonymously", "bought-after-login"]


def test_anonymous_session_is_claimed_by_a_signed_in_http_write(server: LiverecServer) -> None:
    event = {"id": "a1", "action": "view", "item_id": "i"}
    status, body = server.post_json("/v1/events", {"events": [event]})
    assert status == 200
    sid = body["session_id"]
    write = {"session_id": sid, "events": [{"id": "a2", "action": "view", "item_id": "j"}]}
    assert server.post_json("/v1/events", write, headers=_auth("carol"))[0] == 200
    assert server.get_json(f"/v1/sessions/{sid}")[0] == 403
    assert _get_as(server, f"/v1/sessions/{sid}", "carol")[0] == 200


async def test_ids_and_claims_hold_across_two_processes_sharing_redis(redis_url: str) -> None:
    a = LiverecServer(redis_url, jwt_secret=SECRET).start()
    b = LiverecServer(redis_url, jwt_secret=SECRET).start()
    try:
        async with await Client.open(b.ws_url) as c:  # issued by B...
            welcome, _ = await c.hello()
            sid = welcome["session_id"]
            await c.event("anon-on-b")
        async with await Client.open(a.ws_url) as c:  # ...resumed and claimed on A
            welcome, _ = await c.hello(session_id=sid, user_token=mint_token("alice", SECRET))
            assert welcome["resumed"] is True and welcome["session_id"] == sid
        for srv in (a, b):  # neither process lets anyone else in now
            async with await Client.open(srv.ws_url) as c:
                await c.send({"type": "hello", "session_id": sid})
                frame = await c.recv()
                assert frame["type"] == "error" and frame["code"] == "session_forbidden"
            assert srv.get_json(f"/v1/sessions/{sid}")[0] == 403
    finally:
        a.stop()
        b.stop()


# --- item 7: frames that are not events count against the buckets ------------------------


async def test_pings_before_hello_are_rate_limited_and_cut(stingy: LiverecServer) -> None:
    c = await Client.open(stingy.ws_url, local_addr=("127.0.0.31", 0))
    for _ in range(300):
        try:
            await c.send({"type": "ping"})
        except ConnectionClosed:
            break
    frames, code = await _frames_until_closed(c)
    pongs = sum(f["type"] == "pong" for f in frames)
    told = [f for f in frames if f["type"] == "error"]
    assert pongs == 10  # the connection's burst, then nothing refills meanwhile
    assert [f["code"] for f in told] == ["rate_limited"] * 3  # told three times, then silence
    assert code == 1013
    # and the address is cut off for flooding
    with pytest.raises(InvalidStatus) as refused:
        await Client.open(stingy.ws_url, local_addr=("127.0.0.31", 0))
    assert refused.value.response.status_code == 429


async def test_malformed_frames_after_hello_are_rate_limited_and_cut(
    stingy: LiverecServer,
) -> None:
    c = await Client.open(stingy.ws_url, local_addr=("127.0.0.32", 0))
    await c.hello()  # one token of ten
    for _ in range(300):
        try:
            await c.ws.send("{oops")
        except ConnectionClosed:
            break
    frames, code = await _frames_until_closed(c)
    codes = [f["code"] for f in frames if f["type"] == "error"]
    assert codes == ["bad_json"] * 9 + ["rate_limited"] * 3
    assert code == 1013


async def test_pings_of_many_sockets_share_the_address_bucket(stingy: LiverecServer) -> None:
    sockets = [await Client.open(stingy.ws_url, local_addr=("127.0.0.33", 0)) for _ in range(10)]
    try:
        answers: list[str] = []
        for c in sockets:  # 3 pings each: well within a socket's own burst of 10
            for _ in range(3):
                await c.send({"type": "ping"})
                frame = await c.recv()
                answers.append(frame["type"] if frame["type"] == "pong" else frame["code"])
        # 30 pings from one address with a burst of 25: the rest are refused
        assert answers.count("pong") == 25
        assert answers.count("rate_limited") == 5
    finally:
        for c in sockets:
            await c.close()
