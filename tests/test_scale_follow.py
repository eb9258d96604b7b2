"""Every process learns from every event: two `liverec serve` processes on one store.

An item first seen on process A must show up in the related recommendations that
process B serves, because B follows the shared event log (Redis, Redis Cluster).
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from liverec.store import StoreLimits, open_store
from liverec.types import Event

from .servers import LiverecServer

DEADLINE_S = 20.0  # generous on a loaded machine; the path itself takes milliseconds


def _post(server: LiverecServer, session_id: str | None, *items: str) -> str:
    events = [{"id": uuid.uuid4().hex, "action": "view", "item_id": i} for i in items]
    body: dict[str, object] = {"events": events}
    if session_id is not None:
        body["session_id"] = session_id
    status, reply = server.post_json("/v1/events", body)
    assert status == 200, reply
    return str(reply["session_id"])


async def _poll_related(server: LiverecServer, session_id: str, wanted: str) -> list[str]:
    """B's recommendations for the session until `wanted` is among them (or the deadline)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        status, frame = server.get_json(f"/v1/recommendations?session_id={session_id}&k=5")
        assert status == 200, frame
        items = [r["item_id"] for r in frame["items"]]
        if wanted in items or time.monotonic() > deadline:
            return items
        await asyncio.sleep(0.05)


def _pair(url: str) -> tuple[LiverecServer, LiverecServer]:
    # warm_events=0: what B knows comes from following the log, not from a replay at start
    a = LiverecServer(url, warm_events=0).start()
    try:
        b = LiverecServer(url, warm_events=0).start()
    except BaseException:
        a.stop()
        raise
    return a, b


async def _new_item_on_a_is_related_on_b(url: str) -> None:
    a, b = _pair(url)
    try:
        tag = uuid.uuid4().hex[:8]
        new, partner = f"new-{tag}", f"partner-{tag}"
        # Only A ever sees `new` followed by `partner`: their co-occurrence is A's event.
        _post(a, None, new, partner)
        # A shopper on B looks at `new`; B's own event teaches it nothing about `partner`.
        sid = _post(b, None, new)
        items = await _poll_related(b, sid, partner)
        assert partner in items, (items, b.log())
    finally:
        a.stop()
        b.stop()


async def test_item_first_seen_on_one_process_is_recommended_by_another(
    redis_url: str,
) -> None:
    await _new_item_on_a_is_related_on_b(redis_url)


async def test_same_across_processes_on_a_cluster(redis_cluster_url: str) -> None:
    await _new_item_on_a_is_related_on_b(redis_cluster_url)


@pytest.mark.parametrize("backend", ["redis", "cluster"])
async def test_tail_starts_at_the_end_and_names_the_origin(
    backend: str, redis_url: str, redis_cluster_url: str
) -> None:
    url = redis_url if backend == "redis" else redis_cluster_url
    writer, reader = open_store(url, StoreLimits()), open_store(url, StoreLimits())
    await writer.open()
    await reader.open()
    try:
        assert writer.shared_log and writer.origin != reader.origin
        old = Event("e0", "s-old", "view", "before", 1.0)
        assert await writer.record_event(old)
        ends = await reader.log_ends()
        assert len(ends) == reader.log_partitions()
        new = [Event(f"e{n}", f"s{n}", "view", f"i{n}", 2.0) for n in range(12)]
        for e in new:
            assert await writer.record_event(e)
        seen: list[tuple[str, str | None]] = []
        for n, cursor in enumerate(ends):
            got = await reader.tail(n, cursor, 0.05, 100)
            seen += [(g.event.item_id, g.origin) for g in got]
            if got:  # from the last position returned: nothing more
                assert await reader.tail(n, got[-1].position, 0.05, 100) == []
        assert sorted(seen) == sorted((e.item_id, writer.origin) for e in new)
    finally:
        await writer.close()
        await reader.close()


async def test_embedded_store_is_not_followed() -> None:
    store = open_store("memory://", StoreLimits())
    await store.open()
    try:
        assert not store.shared_log
        with pytest.raises(NotImplementedError):
            await store.log_ends()
    finally:
        await store.close()


async def test_follower_applies_other_processes_events_and_skips_its_own(
    redis_url: str,
) -> None:
    from liverec.recommend.follower import LogFollower
    from liverec.recommend.online import OnlineRecommender

    here, there = open_store(redis_url, StoreLimits()), open_store(redis_url, StoreLimits())
    await here.open()
    await there.open()
    model = OnlineRecommender()
    follower = LogFollower(here, model, block_s=0.1)
    try:
        await follower.start()
        assert await here.record_event(Event("e1", "s-here", "view", "mine", time.time()))
        assert await there.record_event(Event("e2", "s-there", "view", "theirs", time.time()))
        deadline = time.monotonic() + DEADLINE_S
        while True:  # poll the follower's counters until both events were read
            if follower.applied + follower.skipped >= 2 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        assert (follower.applied, follower.skipped) == (1, 1)
        assert model.knows("theirs") and not model.knows("mine")
    finally:
        await follower.close()
        await here.close()
        await there.close()
