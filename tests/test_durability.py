"""Acked events survive restarts; sessions resume across processes sharing a store."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from liverec.store import StoreLimits, open_store

from .conftest import RedisServer
from .servers import LiverecServer
from .wsclient import Client


async def _logged_ids(url: str) -> list[str]:
    store = open_store(url, StoreLimits())
    await store.open()
    try:
        ids: list[str] = []
        after = None
        while True:
            batch = await store.read_events(after=after, limit=1000)
            if not batch:
                return ids
            ids.extend(f"{e.event.session_id}/{e.event.id}" for e in batch)
            after = batch[-1].position
    finally:
        await store.close()


# Only ever a failure bound (a server that stopped answering): outcomes are frames and
# closes. Generous, for a machine busy with other work.
BOUND_S = 120.0


async def _stream_until_closed(c: Client, sid: str, acked: list[str], n: int) -> int | None:
    """Send events as fast as acks come back; return the close code seen."""
    pending: set[str] = set()
    sent = 0
    try:
        while sent < n or pending:
            if sent < n and len(pending) < 8:
                event_id = f"ev{sent}"
                await c.send(
                    {"type": "event", "id": event_id, "action": "view", "item_id": f"it{sent % 13}"}
                )
                pending.add(event_id)
                sent += 1
                continue
            frame = await c.recv(timeout=BOUND_S)
            if frame["type"] == "ack":
                pending.discard(frame["id"])
                acked.append(f"{sid}/{frame['id']}")
            elif frame["type"] == "error":
                raise AssertionError(frame)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None
    return None


@pytest.mark.parametrize("backend", ["embedded", "redis"])
async def test_sigterm_under_load_loses_no_acked_event(
    backend: str, tmp_path: Path, redis_url: str
) -> None:
    url = f"embedded://{tmp_path}/live.db" if backend == "embedded" else redis_url
    server = LiverecServer(url, events_per_s=1e6, events_burst=1000).start()
    acked: list[str] = []
    try:
        c = await Client.open(server.ws_url)
        welcome, _ = await c.hello()
        sid = welcome["session_id"]
        streamer = asyncio.create_task(_stream_until_closed(c, sid, acked, 100_000))
        while len(acked) < 200:  # under load when the signal arrives
            await asyncio.sleep(0.02)
            assert not streamer.done(), server.log()
        await asyncio.to_thread(server.stop, BOUND_S)  # SIGTERM, graceful
        code = await asyncio.wait_for(streamer, BOUND_S)
        assert code == 1012, (code, server.log())
    finally:
        server.stop()
    logged = await _logged_ids(url)
    assert len(logged) == len(set(logged)), "an event was logged twice"
    missing = set(acked) - set(logged)
    assert not missing, f"{len(missing)} acked events lost"

    # Restart on the same store: the session resumes with its sequence.
    server = LiverecServer(url).start()
    try:
        async with await Client.open(server.ws_url) as c:
            welcome, _recs = await c.hello(session_id=sid)
            assert welcome["resumed"] is True
        status, body = server.get_json(f"/v1/sessions/{sid}")
        assert status == 200 and len(body["items"]) > 0
    finally:
        server.stop()


async def test_resume_across_two_processes_sharing_redis(redis_url: str) -> None:
    a = LiverecServer(redis_url).start()
    b = LiverecServer(redis_url).start()
    try:
        async with await Client.open(a.ws_url, binary=True) as c:
            welcome, _ = await c.hello()
            sid = welcome["session_id"]
            for n, item in enumerate(("p1", "p2", "p3")):
                await c.event(item, id=f"on-a-{n}")
        async with await Client.open(b.ws_url) as c:
            welcome, recs = await c.hello(session_id=sid)
            assert welcome["resumed"] is True and welcome["session_id"] == sid
            # B's live session holds the sequence A stored (read while it is live in B)
            status, body = b.get_json(f"/v1/sessions/{sid}")
            assert status == 200 and body["items"] == ["p1", "p2", "p3"]
            # the current item (last of the resumed sequence) is never recommended
            assert "p3" not in [r["item_id"] for r in recs["items"]]
            await c.event("p4")
            # an event process A recorded, sent again to B: acked, not applied again
            ack, _ = await c.event("p1", id="on-a-0")
            assert ack.get("duplicate") is True
            ack, _ = await c.event("p5", id="on-b-new")
            assert ack.get("duplicate") is not True
        status, body = b.get_json(f"/v1/sessions/{sid}")
        assert status == 200 and body["items"] == ["p1", "p2", "p3", "p4", "p5"]
        status, body = a.get_json(f"/v1/sessions/{sid}")
        assert body["items"] == ["p1", "p2", "p3", "p4", "p5"]
    finally:
        a.stop()
        b.stop()


async def test_redis_outage_events_not_acked_recs_still_flow(tmp_path: Path) -> None:
    from .servers import free_port

    redis = RedisServer(free_port(), tmp_path)
    redis.start()
    server = LiverecServer(f"redis://127.0.0.1:{redis.port}/0?socket_timeout=0.5").start()
    try:
        async with await Client.open(server.ws_url) as c:
            await c.hello()
            await c.event("o1")
            redis.kill()
            await c.send({"type": "event", "id": "during", "action": "view", "item_id": "o2"})
            frames = [await c.recv(timeout=10), await c.recv(timeout=10)]
            kinds = {f["type"]: f for f in frames}
            assert (
                kinds["error"]["code"] == "store_unavailable" and kinds["error"]["ref"] == "during"
            )
            assert kinds["recs"]["for_event"] == "during"
            assert server.get_json("/readyz")[0] == 503
            redis.start()  # same port, same append-only file
            deadline = time.monotonic() + BOUND_S  # ready again: decided by /readyz
            while server.get_json("/readyz")[0] != 200:
                assert time.monotonic() < deadline, "not ready again after Redis restarted"
                await asyncio.sleep(0.1)
            ack, _ = await c.event("o2", id="during")  # the client resends; now it is acked
            assert ack["id"] == "during"
    finally:
        server.stop()
        with contextlib.suppress(Exception):
            redis.stop()


async def test_restart_keeps_what_the_online_model_learnt(tmp_path: Path) -> None:
    url = f"embedded://{tmp_path}/warm.db"
    server = LiverecServer(url).start()
    try:
        for i in range(5):
            async with await Client.open(server.ws_url) as c:
                await c.hello()
                await c.event(f"other-{i}")
                await c.event("lamp")
                await c.event("bulb")
    finally:
        server.stop()
    server = LiverecServer(url).start()  # a new process: the model is rebuilt from the log
    try:
        async with await Client.open(server.ws_url) as c:
            await c.hello()
            _, recs = await c.event("lamp")
            assert recs["items"][0]["item_id"] == "bulb"
    finally:
        server.stop()
