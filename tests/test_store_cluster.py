"""What the Redis Cluster backend adds to the contract suite: where its keys lie, the
retry that completes an event whose later step failed, the partitioned log read in
order, URL errors, and two `liverec serve` processes sharing one cluster.

The cluster is the private 3-master Redis Cluster of tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from liverec.errors import ConfigError, StoreError, StoreUnavailable
from liverec.store import Store, StoreLimits, open_store
from liverec.types import Event

from . import test_durability as durability
from .conftest import RedisClusterServers, free_cluster_ports


@pytest.fixture
async def raw(redis_cluster: RedisClusterServers) -> AsyncIterator[RedisCluster]:
    """A plain redis-py cluster client, to look at and spoil the keys the store wrote."""
    client = RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0], decode_responses=True)
    await client.initialize()
    yield client
    await client.aclose()


async def _opened(url: str, limits: StoreLimits | None = None) -> Store:
    store = open_store(url, limits or StoreLimits())
    await store.open()
    return store


def _prefix(url: str) -> str:
    return url.partition("prefix=")[2]


def ev(eid: str, session: str, item: str = "i", user: str | None = "u1") -> Event:
    return Event(eid, session, "view", item, 1000.0, user, None)


async def _keys(raw: RedisCluster, prefix: str) -> list[str]:
    return [key async for key in raw.scan_iter(match=f"{prefix}*")]


async def test_keys_of_one_session_and_of_one_user_share_a_slot(
    redis_cluster_url: str, raw: RedisCluster
) -> None:
    store = await _opened(redis_cluster_url)
    odd_session, odd_user = "a}b:{c", "x}:{y"  # braces and colons in ids
    try:
        await store.open_session("plain", "u1", 1.0)
        for n in range(4):
            await store.record_event(ev(f"e{n}", "plain", user="u1"))
            await store.record_event(ev(f"e{n}", odd_session, user=odd_user))
            await store.record_event(ev(f"r{n}", "plain", user=odd_user))
    finally:
        await store.close()
    prefix = _prefix(redis_cluster_url)
    keys = await _keys(raw, prefix)
    for ident in ("plain", odd_session):
        tag = f"{{s:{len(ident)}:{ident}"
        mine = [k for k in keys if k.startswith(prefix + tag)]
        assert {k.rpartition(":")[2] for k in mine} >= {"session", "items"}
        assert len({key_slot(k.encode()) for k in mine}) == 1, mine
    for ident in ("u1", odd_user):
        mine = [k for k in keys if k.startswith(f"{prefix}{{u:{len(ident)}:{ident}")]
        assert {"counters", "recent"} <= {k.rpartition(":")[2] for k in mine}
        assert len({key_slot(k.encode()) for k in mine}) == 1, mine
    # the odd session's keys and the plain one's lie apart (distinct tags)
    slots = {key_slot(f"{prefix}{{s:{len(i)}:{i}}}:session".encode()) for i in ("plain", "ab")}
    assert len(slots) == 2


async def test_log_partitions_lie_on_every_master(
    redis_cluster_url: str, raw: RedisCluster
) -> None:
    store = await _opened(redis_cluster_url)
    try:
        await store.record_events([ev(f"e{n}", f"s{n}") for n in range(200)])
        assert await store.count_events() == 200
    finally:
        await store.close()
    prefix = _prefix(redis_cluster_url)
    streams = [f"{prefix}{{log:{n}}}" for n in range(8)]
    lengths = [await raw.xlen(s) for s in streams]
    assert sum(lengths) == 200 and all(n > 0 for n in lengths)  # 200 sessions over 8
    nodes = {raw.get_node_from_key(s).name for s in streams}
    assert len(nodes) == 3  # the default 8 partitions reach all 3 masters


async def test_a_failed_later_step_is_completed_by_the_retry(
    redis_cluster_url: str, raw: RedisCluster
) -> None:
    prefix = _prefix(redis_cluster_url)
    counters = f"{prefix}{{u:2:u9}}:counters"
    await raw.set(counters, "not a hash")  # the user's step fails with WRONGTYPE
    store = await _opened(redis_cluster_url)
    try:
        event = ev("e1", "s1", item="a", user="u9")
        with pytest.raises(StoreError):
            await store.record_event(event)
        session = await store.get_session("s1")
        assert session is not None and session.items == ["a"]  # the first step ran
        await raw.delete(counters)
        # the retry is a duplicate by id, yet it completes what the failure left undone
        assert await store.record_event(event) is False
        assert (await store.get_profile("u9")).counters == {"view": 1}
        assert [e.event.id for e in await store.read_events()] == ["e1"]
        # and a further retry changes nothing
        assert await store.record_event(event) is False
        assert (await store.get_profile("u9")).counters == {"view": 1}
        session = await store.get_session("s1")
        assert session is not None and session.items == ["a"]
        assert await store.count_events() == 1
    finally:
        await store.close()


async def test_partitioned_log_reads_follow_and_redelivery_in_order(
    redis_cluster_url: str,
) -> None:
    recorded = [ev(f"e{n}", f"s{n % 13}", item=f"i{n}") for n in range(60)]
    store = await _opened(redis_cluster_url)
    try:
        for e in recorded:  # one after another: the merged log keeps this order
            await store.record_event(e)
        everything = await store.read_events()
        assert [x.event for x in everything] == recorded
        assert await store.read_tail(7) == everything[-7:]
        got = []
        while batch := await store.follow("g", "c", count=7):
            assert len(batch) <= 7
            got += batch
        assert got == everything  # each once, in log order, across all partitions
        await store.ack("g", [x.position for x in got[:20]])
        with pytest.raises(StoreError):
            await store.ack("g", ["not-a-position"])
    finally:
        await store.close()
    reopened = await _opened(redis_cluster_url)
    try:
        # a restarted consumer gets every unacknowledged event again, in log order
        again = []
        while batch := await reopened.follow("g", "c", count=100):
            again += batch
        assert again == everything[20:]
    finally:
        await reopened.close()


async def test_partitions_are_fixed_for_a_log(redis_cluster_url: str) -> None:
    store = await _opened(redis_cluster_url)
    await store.close()
    other = open_store(redis_cluster_url, StoreLimits(event_log_partitions=4))
    with pytest.raises(ConfigError, match="has 8 partitions"):
        await other.open()
    with pytest.raises(ConfigError, match="event_log_partitions"):
        open_store(redis_cluster_url, StoreLimits(event_log_partitions=0))


def test_url_errors() -> None:
    limits = StoreLimits()
    with pytest.raises(ConfigError, match="one database"):
        open_store("redis+cluster://127.0.0.1:7000/3", limits)
    with pytest.raises(ConfigError, match="not allowed"):
        open_store("redis+cluster://127.0.0.1:7000?prefix=a{b}:", limits)
    with pytest.raises(ConfigError, match="needs a host"):
        open_store("redis+cluster://", limits)
    with pytest.raises(ConfigError, match="unknown option"):
        open_store("redis+cluster://127.0.0.1:7000?db=1", limits)


async def test_unreachable_cluster_is_unavailable() -> None:
    (port,) = free_cluster_ports(1)
    store = open_store(
        f"redis+cluster://127.0.0.1:{port}?socket_connect_timeout=0.5", StoreLimits()
    )
    with pytest.raises(StoreUnavailable):
        await store.open()


async def test_two_servers_on_one_cluster_share_sessions(redis_cluster_url: str) -> None:
    # the two-process scenario of the single-node Redis backend, on the cluster
    await durability.test_resume_across_two_processes_sharing_redis(redis_cluster_url)
    store = await _opened(redis_cluster_url)
    try:
        logged = await store.read_events()
        # the duplicate p1 sent to B is acked, not logged again
        assert [e.event.item_id for e in logged] == ["p1", "p2", "p3", "p4", "p5"]
        assert len({e.event.session_id for e in logged}) == 1
    finally:
        await store.close()


async def test_master_killed_and_restarted_under_load_loses_no_acked_event(
    tmp_path: Path,
) -> None:
    """Clients record one event at a time and send it again until it is acked, as the
    widget does; a master is SIGKILLed mid-run and restarted on its append-only file.
    Every acked event is then logged once and applied once to its session and user."""
    cluster = RedisClusterServers(free_cluster_ports(3), tmp_path, appendonly=True)
    cluster.start()
    store = await _opened(f"{cluster.url}?socket_timeout=0.5&socket_connect_timeout=0.5")
    acked: dict[str, list[str]] = {f"s{c}": [] for c in range(12)}
    failures = 0
    stop = asyncio.Event()

    async def client(session: str) -> None:
        nonlocal failures
        n = 0
        while not stop.is_set():
            event = ev(f"e{n}", session, item=f"i{n}", user=f"u-{session}")
            while True:  # the same event again until it is acked
                try:
                    await store.record_event(event)
                    break
                except StoreUnavailable:
                    failures += 1
                    await asyncio.sleep(0.05)
            acked[session].append(event.item_id)
            n += 1

    def total() -> int:
        return sum(len(items) for items in acked.values())

    # Outcomes are these events; the timeout only bounds a failure, for a busy machine.
    async def until(condition: Callable[[], bool], what: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)

    tasks = [asyncio.create_task(client(s)) for s in acked]
    try:
        await until(lambda: total() >= 300, "events before the kill")
        cluster.kill(1)
        await until(lambda: failures > 0, "a refused event")
        await asyncio.to_thread(cluster.restart, 1)
        before = total()
        await until(lambda: total() >= before + 300, "events after the restart")
        stop.set()
        await asyncio.gather(*tasks)
        logged = await store.read_events(limit=100_000)
        for session, items in acked.items():
            mine = [e.event.item_id for e in logged if e.event.session_id == session]
            assert mine == items  # each acked event logged once, in the session's order
            record = await store.get_session(session)
            assert record is not None and record.items == items[-200:]
            profile = await store.get_profile(f"u-{session}")
            assert profile.counters == {"view": len(items)}
        assert failures > 0
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await store.close()
        cluster.stop()
