"""The session layer in process: the shipped SessionManager driven through a fake
Transport, with injected clocks; no subprocess, no socket.

`PipeTransport` is a queue of client frames in and a list of frames out, with events
to wait on: a test waits for what it expects, never for time. The store is the
shipped in-memory one, or a real redis-server killed to make the store fail. The
HTTP API is exercised through its real route (`post_events`) on an in-process ASGI
app that shares the manager with the WebSocket side.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from liverec.config import Settings
from liverec.errors import IdleTimeout
from liverec.recommend.online import OnlineRecommender
from liverec.server.http import post_events
from liverec.sessions import SessionManager
from liverec.store import StoreLimits, open_store
from liverec.store.base import Store

from .conftest import RedisServer, free_port

WAIT_S = 10.0  # a deadline for awaited frames, never an outcome


class PipeTransport:
    """Client frames in through a queue; server frames out, decoded, in order."""

    def __init__(self, gated: bool = False) -> None:
        self.inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()
        self.blocked = asyncio.Event()  # set once a send waits on the closed gate
        self.idle = asyncio.Event()  # set once receive waits on an empty inbox

    async def receive(self) -> str | bytes | None:
        if self.inbox.empty():
            self.idle.set()
        return await self.inbox.get()

    async def send(self, data: str | bytes, more: bool = False) -> None:
        if not self.gate.is_set():
            self.blocked.set()
            await self.gate.wait()
        assert isinstance(data, str)
        self.sent.append(json.loads(data))
        self.changed.set()

    def put(self, **frame: Any) -> None:
        self.idle.clear()
        self.inbox.put_nowait(json.dumps(frame))

    async def frames(self, count: int) -> list[dict[str, Any]]:
        """The first `count` frames sent, once they are."""
        async with asyncio.timeout(WAIT_S):
            while len(self.sent) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.sent[:count]

    async def drained(self) -> None:
        """Once every queued client frame was taken and handled up to the next read."""
        async with asyncio.timeout(WAIT_S):
            await self.idle.wait()


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_manager(store: Store, clock: Clock | None = None, **settings: Any) -> SessionManager:
    return SessionManager(
        Settings(**settings),
        store,
        OnlineRecommender(),
        clock=lambda: 1_700_000_000.0,
        monotonic=clock or Clock(),
    )


async def connect(manager: SessionManager, transport: PipeTransport) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(manager.serve(transport, "10.0.0.1"))


async def close(task: asyncio.Task[None], transport: PipeTransport) -> None:
    transport.inbox.put_nowait(None)
    async with asyncio.timeout(WAIT_S):
        await task


async def test_hello_gets_welcome_then_recs(memory_store: Store) -> None:
    manager = make_manager(memory_store)
    t = PipeTransport()
    task = await connect(manager, t)
    t.put(type="hello")
    welcome, recs = await t.frames(2)
    assert welcome["type"] == "welcome" and welcome["resumed"] is False
    assert recs["type"] == "recs" and recs["for_event"] is None
    assert recs["session_id"] == welcome["session_id"] in manager.registry.sessions
    await close(task, t)
    assert manager.registry.sessions == {}  # released with its last connection


async def test_event_gets_ack_then_recs(memory_store: Store) -> None:
    manager = make_manager(memory_store)
    t = PipeTransport()
    task = await connect(manager, t)
    t.put(type="hello")
    t.put(type="event", id="e1", action="view", item_id="a")
    frames = await t.frames(4)
    assert [f["type"] for f in frames] == ["welcome", "recs", "ack", "recs"]
    assert frames[2] == {"type": "ack", "id": "e1"}
    assert frames[3]["for_event"] == "e1"
    await close(task, t)


async def test_duplicate_event_is_acked_and_not_applied_again(memory_store: Store) -> None:
    manager = make_manager(memory_store)
    t = PipeTransport()
    task = await connect(manager, t)
    t.put(type="hello")
    t.put(type="event", id="e1", action="view", item_id="a")
    t.put(type="event", id="e1", action="view", item_id="a")
    frames = await t.frames(6)
    assert frames[4] == {"type": "ack", "id": "e1", "duplicate": True}
    (live,) = manager.registry.sessions.values()
    assert live.items == ["a"] and live.position == 1
    await close(task, t)


async def test_store_failure_gets_recs_and_error_but_no_ack(tmp_path: Path) -> None:
    redis = RedisServer(free_port(), tmp_path)
    redis.start()
    try:
        store = open_store(f"redis://127.0.0.1:{redis.port}/0?socket_timeout=0.5", StoreLimits())
        await store.open()
        manager = make_manager(store)
        t = PipeTransport()
        task = await connect(manager, t)
        t.put(type="hello")
        await t.frames(2)
        redis.kill()
        t.put(type="event", id="e1", action="view", item_id="a")
        frames = (await t.frames(4))[2:]
        assert frames[0]["type"] == "error" and frames[0]["code"] == "store_unavailable"
        assert frames[0]["ref"] == "e1"
        assert frames[1]["type"] == "recs" and frames[1]["for_event"] == "e1"
        assert not any(f["type"] == "ack" for f in t.sent)
        (live,) = manager.registry.sessions.values()
        assert live.items == ["a"]  # applied in memory all the same
        await close(task, t)
        await store.close()
    finally:
        redis.stop()


async def test_rate_limit_follows_the_injected_clock(memory_store: Store) -> None:
    clock = Clock()
    manager = make_manager(memory_store, clock, events_per_s=1.0, events_burst=2)
    t = PipeTransport()
    task = await connect(manager, t)
    t.put(type="hello")  # takes the first token
    t.put(type="event", id="e1", action="view", item_id="a")  # the second
    t.put(type="event", id="e2", action="view", item_id="b")  # none left
    frames = await t.frames(5)
    assert frames[4]["type"] == "error" and frames[4]["code"] == "rate_limited"
    assert frames[4]["ref"] == "e2"
    await t.drained()
    clock.now += 1.0  # one second at 1/s: one token back
    t.put(type="event", id="e2", action="view", item_id="b")
    frames = await t.frames(7)
    assert frames[5] == {"type": "ack", "id": "e2"}
    await close(task, t)


async def test_idle_connection_expires(memory_store: Store) -> None:
    manager = make_manager(memory_store, idle_timeout_s=0.05)
    t = PipeTransport()
    task = await connect(manager, t)
    t.put(type="hello")
    await t.frames(2)
    async with asyncio.timeout(WAIT_S):
        with pytest.raises(IdleTimeout):
            await task  # nothing more is sent: the idle timeout ends the connection


async def test_newer_recs_replace_an_unsent_one(memory_store: Store) -> None:
    manager = make_manager(memory_store)
    t = PipeTransport(gated=True)
    task = await connect(manager, t)
    t.put(type="hello")
    async with asyncio.timeout(WAIT_S):
        await t.blocked.wait()  # the welcome is held: the peer does not read
    t.put(type="event", id="e1", action="view", item_id="a")
    t.put(type="event", id="e2", action="view", item_id="b")
    await t.drained()
    t.gate.set()
    frames = await t.frames(4)
    assert [(f["type"], f.get("id"), f.get("for_event")) for f in frames] == [
        ("welcome", None, None),
        ("ack", "e1", None),
        ("ack", "e2", None),
        ("recs", None, "e2"),
    ]
    await close(task, t)
    assert len(t.sent) == 4  # the older recs frames were never sent


async def test_http_post_events_goes_through_the_same_pipeline(memory_store: Store) -> None:
    manager = make_manager(memory_store)
    app = Starlette(routes=[Route("/v1/events", post_events, methods=["POST"])])
    app.state.manager = manager
    t = PipeTransport()
    task = await connect(manager, t)
    t.put(type="hello")
    welcome, _ = await t.frames(2)
    sid = welcome["session_id"]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://liverec"
    ) as http:
        body = {
            "session_id": sid,
            "events": [
                {"id": "h1", "action": "view", "item_id": "a"},
                {"id": "h2", "action": "view_item_list", "item_id": "b"},
                {"id": "h3", "action": "view", "item_id": "c"},
            ],
        }
        first = await http.post("/v1/events", json=body)
        again = await http.post("/v1/events", json=body)
    assert first.status_code == 200, first.text
    out = first.json()
    assert out["acked"] == ["h1", "h2", "h3"] and out["ignored"] == ["h2"]
    assert out["duplicates"] == [] and out["not_recorded"] == []
    assert out["recs"]["type"] == "recs" and out["recs"]["for_event"] == "h3"
    assert again.json()["duplicates"] == ["h1", "h3"]
    # the live session of the socket saw the HTTP events, once each
    assert manager.registry.sessions[sid].items == ["a", "c"]
    t.put(type="event", id="h1", action="view", item_id="a")
    frames = await t.frames(4)
    assert frames[2] == {"type": "ack", "id": "h1", "duplicate": True}
    await close(task, t)
