"""The Redis backend beyond the contract: key layout, outages, lost script cache."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from redis.asyncio import Redis

from liverec.errors import StoreError, StoreUnavailable
from liverec.store import Store, StoreLimits, open_store
from liverec.types import Event

from .conftest import RedisServer
from .servers import free_port

GUARD_S = 15  # a hang guard only: every call here must fail within its socket timeout


def ev(eid: str, session: str = "s1", item: str = "i", user: str | None = "u1") -> Event:
    return Event(eid, session, "purchase", item, 1.0, user)


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[tuple[Redis, str]]:
    """A plain client on the test's database and the test's key prefix."""
    parts = urlsplit(redis_url)
    client = Redis.from_url(parts._replace(query="").geturl(), decode_responses=True)
    yield client, parse_qs(parts.query)["prefix"][0]
    await client.aclose()


@pytest.fixture
async def own_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A redis-server of this test alone, so that the test may stop it."""
    server = RedisServer(free_port(), tmp_path)
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGCONT)  # in case the test left it frozen
    server.stop()


async def opened(url: str, limits: StoreLimits | None = None) -> Store:
    store = open_store(url, limits or StoreLimits())
    await store.open()
    return store


async def test_key_layout_and_expiry(redis_url: str, raw: tuple[Redis, str]) -> None:
    client, p = raw
    limits = StoreLimits(session_ttl_s=100.0, profile_ttl_s=None, dedup_ttl_s=50.0)
    store = await opened(redis_url, limits)
    try:
        await store.record_event(ev("e1", session="s:1", user="u1"))
        await store.record_event(Event("e2", "s:1", "rate", "i", 2.0, "u1", 4.0))
    finally:
        await store.close()
    keys = {k async for k in client.scan_iter(match=f"{p}*")}
    assert keys == {
        f"{p}log",
        f"{p}dedup:3:s:1:e1",
        f"{p}dedup:3:s:1:e2",
        f"{p}session:s:1",
        f"{p}items:s:1",
        f"{p}counters:u1",
        f"{p}recent:u1",
        f"{p}purchases:u1",
        f"{p}ratings:u1",
        f"{p}ratings_order:u1",
    }
    assert await client.type(f"{p}log") == "stream"
    assert await client.zrange(f"{p}purchases:u1", 0, -1, withscores=True) == [("i", 1.0)]
    assert await client.hgetall(f"{p}ratings:u1") == {"i": "4.0"}
    assert await client.zrange(f"{p}ratings_order:u1", 0, -1, withscores=True) == [("i", 1.0)]
    assert await client.hgetall(f"{p}session:s:1") == {
        "user": "u1",
        "created": "1.0",
        "last_seen": "2.0",
    }
    assert 0 < await client.pttl(f"{p}session:s:1") <= 100_000
    assert 0 < await client.pttl(f"{p}dedup:3:s:1:e1") <= 50_000
    for kind in ("counters", "recent", "purchases", "ratings", "ratings_order"):
        assert await client.pttl(f"{p}{kind}:u1") == -1  # profile_ttl_s=None: never expires
    entry = (await client.xrange(f"{p}log"))[1][1]
    assert entry == {
        "id": "e2",
        "session_id": "s:1",
        "action": "rate",
        "item_id": "i",
        "ts": "2.0",
        "user_id": "u1",
        "rating": "4.0",
        "origin": store.origin,
    }


async def test_profile_keys_from_before_the_bound_are_converted(
    redis_url: str, raw: tuple[Redis, str]
) -> None:
    """Purchases were a plain set and ratings a hash without an order: they are read
    as they are, and converted on the user's next purchase or rating."""
    client, p = raw
    purchases, ratings, order = f"{p}purchases:u1", f"{p}ratings:u1", f"{p}ratings_order:u1"
    await client.sadd(purchases, "a", "b", "c", "d")
    await client.hset(ratings, mapping={"x": "1.0", "y": "2.0"})
    # bigger than one Lua unpack() can take
    await client.sadd(f"{p}purchases:u2", *(f"i{n:05d}" for n in range(20_000)))
    await client.hset(f"{p}ratings:u2", mapping={f"r{n:05d}": "3.0" for n in range(10_000)})
    store = await opened(redis_url, StoreLimits(profile_max_items=3))
    try:
        profile = await store.get_profile("u1")
        assert (profile.purchases, profile.ratings) == ({"a", "b", "c", "d"}, {"x": 1.0, "y": 2.0})
        assert await store.record_event(Event("e1", "s1", "view", "v", 1.0, "u1"))
        assert await client.type(purchases) == "set"  # only a purchase converts it

        assert await store.record_event(ev("e2", item="e"))
        assert await client.type(purchases) == "zset"
        # old items rank oldest (score 0, in member order): a and b are dropped
        assert await client.zrange(purchases, 0, -1, withscores=True) == [
            ("c", 0.0),
            ("d", 0.0),
            ("e", 1.0),
        ]
        await store.record_event(Event("e3", "s1", "rate", "z", 2.0, "u1", 5.0))
        assert (await store.get_profile("u1")).ratings == {"x": 1.0, "y": 2.0, "z": 5.0}
        await store.record_event(Event("e4", "s1", "rate", "w", 3.0, "u1", 4.0))
        profile = await store.get_profile("u1")
        assert profile.purchases == {"c", "d", "e"}
        assert profile.ratings == {"y": 2.0, "z": 5.0, "w": 4.0}
        assert await client.zrange(order, 0, -1) == ["y", "z", "w"]
        assert profile.counters == {"view": 1, "purchase": 1, "rate": 2}
        assert await client.pttl(order) > 0  # expires with the profile

        await store.record_event(ev("e5", item="new", user="u2"))
        await store.record_event(Event("e6", "s1", "rate", "new", 3.0, "u2", 1.0))
        profile = await store.get_profile("u2")
        assert profile.purchases == {"i19998", "i19999", "new"}
        assert profile.ratings == {"r09998": 3.0, "r09999": 3.0, "new": 1.0}
        assert await client.zcard(f"{p}ratings_order:u2") == 3
    finally:
        await store.close()


async def test_lost_script_cache_is_reloaded(redis_url: str, raw: tuple[Redis, str]) -> None:
    client, _ = raw
    store = await opened(redis_url)
    try:
        await client.script_flush()
        assert await store.record_event(ev("e1"))
        await client.script_flush()
        assert await store.record_events([ev("e2"), ev("e1"), ev("e3")]) == [True, False, True]
        await client.script_flush()
        record, existed = await store.open_session("s1", "u1", 5.0)
        assert existed and record.items == ["i", "i", "i"]
    finally:
        await store.close()


async def test_stopped_server_raises_store_unavailable(own_server: RedisServer) -> None:
    store = await opened(own_server.url + "?socket_timeout=0.5&socket_connect_timeout=0.5")
    try:
        assert await store.record_event(ev("e1"))
        own_server.stop()
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(store.record_event(ev("e2")), GUARD_S)
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(store.record_events([ev("e2")]), GUARD_S)
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(store.get_session("s1"), GUARD_S)
        assert await asyncio.wait_for(store.ping(), GUARD_S) is False

        own_server.start()  # same port and data dir: the AOF brings e1 back
        assert await store.ping() is True
        assert await store.record_event(ev("e2")) is True
        assert await store.record_event(ev("e1")) is False
        assert await store.count_events() == 2
    finally:
        await store.close()


async def test_frozen_server_times_out(own_server: RedisServer) -> None:
    store = await opened(own_server.url + "?socket_timeout=0.3&socket_connect_timeout=0.3")
    assert own_server.proc is not None
    try:
        await store.open_session("s1", "u1", 1.0)
        os.kill(own_server.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(StoreUnavailable):
                await asyncio.wait_for(store.record_event(ev("e1")), GUARD_S)
        finally:
            os.kill(own_server.proc.pid, signal.SIGCONT)
        # The timed-out call may still have run once the server woke up; either way
        # recording it again leaves it in the log exactly once.
        await store.record_event(ev("e1"))
        logged = [x.event.id for x in await store.read_events()]
        assert logged == ["e1"]
    finally:
        await store.close()


async def test_open_fails_fast_without_a_server() -> None:
    store = open_store(
        f"redis://127.0.0.1:{free_port()}/0?socket_connect_timeout=0.5", StoreLimits()
    )
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(store.open(), GUARD_S)
    await store.close()


async def test_a_failing_call_does_not_fail_calls_sent_with_it(
    redis_url: str, raw: tuple[Redis, str]
) -> None:
    client, p = raw
    await client.set(f"{p}counters:bad", "not a hash")  # the script's HINCRBY fails: WRONGTYPE
    store = await opened(redis_url)
    try:
        good = [store.record_event(ev(f"e{n}", session=f"s{n}")) for n in range(50)]
        results = await asyncio.gather(
            store.record_event(ev("x", user="bad")), *good, return_exceptions=True
        )
        assert isinstance(results[0], StoreError) and not isinstance(results[0], StoreUnavailable)
        assert "WRONGTYPE" in str(results[0])
        assert results[1:] == [True] * 50
        with pytest.raises(StoreError, match="WRONGTYPE"):
            await store.record_events([ev("y", user="bad")])
    finally:
        await store.close()
