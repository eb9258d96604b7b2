"""One contract suite for every store backend: memory://, embedded:// (file), Redis and
Redis Cluster.

Each test runs against each backend through `open_store(url)`; Redis is the private
redis-server of tests/conftest.py, Redis Cluster its private 3-master cluster.
Backend-specific behaviour (crash safety, outages, URL options) is in
tests/test_store_embedded.py, test_store_redis.py, test_store_cluster.py and
test_store_urls.py.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from liverec.errors import StoreUnavailable
from liverec.store import Store, StoreLimits, open_store
from liverec.types import ACTIONS, Event

OpenStore = Callable[..., Awaitable[Store]]


def _url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "embedded":
        return f"embedded://{tmp_path}/x.db"
    if kind == "cluster":
        cluster_url: str = request.getfixturevalue("redis_cluster_url")
        return cluster_url
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture(params=["memory", "embedded", "redis", "cluster"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _url(request.param, tmp_path, request)


@pytest.fixture(params=["embedded", "redis", "cluster"])
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _url(request.param, tmp_path, request)


@pytest.fixture
async def open_(store_url: str) -> AsyncIterator[OpenStore]:
    """Open stores on this test's URL; all are closed at teardown."""
    stores: list[Store] = []

    async def make(limits: StoreLimits | None = None, url: str | None = None) -> Store:
        store = open_store(url or store_url, limits or StoreLimits())
        await store.open()
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


@pytest.fixture
async def store(open_: OpenStore) -> Store:
    return await open_()


def ev(
    eid: str,
    session: str = "s1",
    item: str = "i1",
    action: str = "view",
    user: str | None = "u1",
    ts: float = 1000.0,
    rating: float | None = None,
) -> Event:
    return Event(eid, session, action, item, ts, user, rating)


async def all_events(store: Store, page: int = 1000) -> list[Event]:
    out, after = [], None
    while batch := await store.read_events(after=after, limit=page):
        out.extend(e.event for e in batch)
        after = batch[-1].position
    return out


# --- sessions ---------------------------------------------------------------------


async def test_open_session_creates_then_resumes(store: Store) -> None:
    record, existed = await store.open_session("s1", "u1", 10.0)
    assert existed is False
    assert (record.session_id, record.user_id, record.items) == ("s1", "u1", [])
    assert (record.created, record.last_seen) == (10.0, 10.0)

    await store.record_event(ev("e1", item="a", ts=11.0))
    record, existed = await store.open_session("s1", "u1", 20.0)
    assert existed is True
    assert (record.user_id, record.items, record.created, record.last_seen) == (
        "u1",
        ["a"],
        10.0,
        20.0,
    )
    assert await store.get_session("s1") == record


async def test_owner_never_changes(store: Store) -> None:
    await store.open_session("s1", "u1", 10.0)
    record, existed = await store.open_session("s1", "intruder", 11.0)
    assert existed is True and record.user_id == "u1"
    # an anonymous session is claimed by the first user who opens it, and then kept
    await store.open_session("anon", None, 10.0)
    record, existed = await store.open_session("anon", None, 10.5)
    assert existed is True and record.user_id is None
    record, existed = await store.open_session("anon", "u2", 11.0)
    assert existed is True and record.user_id == "u2"
    record, existed = await store.open_session("anon", "u3", 12.0)
    assert record.user_id == "u2"
    record, existed = await store.open_session("anon", None, 13.0)
    assert record.user_id == "u2"
    assert (await store.get_session("anon")) == record
    # an event from another user does not take the session over either
    await store.record_event(ev("e1", session="s1", user="intruder"))
    session = await store.get_session("s1")
    assert session is not None and session.user_id == "u1"


async def test_concurrent_open_session_has_one_owner(store: Store) -> None:
    results = await asyncio.gather(*(store.open_session("s", f"u{i}", 5.0) for i in range(30)))
    creators = [record.user_id for record, existed in results if not existed]
    assert len(creators) == 1
    assert {record.user_id for record, _ in results} == set(creators)


async def test_concurrent_claims_have_one_winner(store: Store) -> None:
    await store.open_session("a", None, 5.0)
    results = await asyncio.gather(*(store.open_session("a", f"u{i}", 6.0) for i in range(30)))
    assert len({record.user_id for record, _ in results}) == 1


async def test_unknown_session_is_none(store: Store) -> None:
    assert await store.get_session("nope") is None


async def test_record_event_creates_missing_session(store: Store) -> None:
    assert await store.record_event(ev("e1", session="fresh", item="x", user="u9", ts=7.0))
    session = await store.get_session("fresh")
    assert session is not None
    assert (session.user_id, session.items, session.created, session.last_seen) == (
        "u9",
        ["x"],
        7.0,
        7.0,
    )


async def test_session_items_keep_order_and_bound(open_: OpenStore) -> None:
    store = await open_(StoreLimits(session_max_items=5))
    await store.open_session("s1", "u1", 1.0)
    items = [f"i{n}" for n in range(12)]
    for n, item in enumerate(items):  # every action goes into the sequence
        assert await store.record_event(ev(f"e{n}", item=item, action=ACTIONS[n % 5], ts=n))
    session = await store.get_session("s1")
    assert session is not None
    assert session.items == items[-5:]
    assert session.last_seen == 11.0


async def test_a_session_begun_by_its_first_event_keeps_the_bound_exactly(
    open_: OpenStore,
) -> None:
    # No open_session: the first event creates the session (the HTTP API's path).
    store = await open_(StoreLimits(session_max_items=3))
    items = [f"i{n}" for n in range(5)]
    for n, item in enumerate(items):
        assert await store.record_event(ev(f"e{n}", session="fresh", item=item, ts=n))
        session = await store.get_session("fresh")
        assert session is not None and session.items == items[max(0, n - 2) : n + 1]


# --- events and duplicates -----------------------------------------------------------


async def test_duplicate_event_is_applied_once(store: Store) -> None:
    assert await store.record_event(ev("e1", item="a", action="purchase")) is True
    assert await store.record_event(ev("e1", item="a", action="purchase")) is False
    # same id with other content: still a duplicate, nothing changes
    assert await store.record_event(ev("e1", item="b", action="rate", rating=2.0)) is False
    assert await store.count_events() == 1
    session = await store.get_session("s1")
    assert session is not None and session.items == ["a"]
    profile = await store.get_profile("u1")
    assert profile.counters == {"purchase": 1}
    assert (profile.purchases, profile.ratings, profile.recent) == ({"a"}, {}, ["a"])


async def test_same_id_in_different_sessions_is_distinct(store: Store) -> None:
    assert await store.record_event(ev("e1", session="s1"))
    assert await store.record_event(ev("e1", session="s2"))
    # ids containing the separator must not collide either
    assert await store.record_event(ev("c", session="a:b"))
    assert await store.record_event(ev("b:c", session="a"))
    assert await store.count_events() == 4


async def test_record_events_batch(store: Store) -> None:
    events = [ev("e1", item="a"), ev("e2", item="b"), ev("e1", item="a"), ev("e3", item="c")]
    assert await store.record_events(events) == [True, True, False, True]
    assert await store.record_events([ev("e3", item="c")]) == [False]
    assert await store.record_events([]) == []
    assert [e.id for e in await all_events(store)] == ["e1", "e2", "e3"]


# --- profiles ----------------------------------------------------------------------


async def test_profile_purchases_ratings_recent_counters(open_: OpenStore) -> None:
    store = await open_(StoreLimits(recent_max_items=4))
    script = [
        ("view", "a", None),
        ("add_to_cart", "a", None),
        ("purchase", "a", None),
        ("rate", "a", 4.0),
        ("purchase", "b", None),
        ("remove_from_cart", "a", None),
        ("rate", "a", 2.5),
        ("click", "c", None),
        ("purchase", "b", None),
    ]
    for n, (action, item, rating) in enumerate(script):
        await store.record_event(ev(f"e{n}", item=item, action=action, rating=rating, ts=n))
    profile = await store.get_profile("u1")
    assert profile.user_id == "u1"
    assert profile.purchases == {"a", "b"}  # remove_from_cart does not undo a purchase
    assert profile.ratings == {"a": 2.5}  # the latest rating
    assert profile.recent == ["a", "a", "c", "b"]  # every action, oldest first, bounded
    assert profile.counters == {
        "view": 1,
        "add_to_cart": 1,
        "purchase": 3,
        "rate": 2,
        "remove_from_cart": 1,
        "click": 1,
    }


async def test_purchases_and_ratings_keep_the_newest(open_: OpenStore) -> None:
    store = await open_(StoreLimits(profile_max_items=3, recent_max_items=50))
    script = [
        ("purchase", "a", None),
        ("purchase", "b", None),
        ("purchase", "c", None),
        ("purchase", "d", None),  # drops a
        ("rate", "a", 1.0),
        ("rate", "b", 2.0),
        ("rate", "c", 3.0),
        ("rate", "d", 4.0),  # drops a
        ("purchase", "b", None),  # a repeat makes b the newest: c is now the oldest
        ("rate", "b", 2.5),  # the same for the rating, which is updated too
        ("view", "z", None),  # other actions leave purchases and ratings alone
        ("purchase", "e", None),  # drops c
        ("rate", "e", 5.0),  # drops c
    ]
    for n, (action, item, rating) in enumerate(script):
        await store.record_event(ev(f"e{n}", item=item, action=action, rating=rating, ts=n))
    # anonymous events and another user's change nothing of u1's profile
    await store.record_event(ev("anon1", item="x", action="purchase", user=None))
    await store.record_event(ev("anon2", item="x", action="rate", rating=1.0, user=None))
    await store.record_event(ev("other", item="y", action="purchase", user="u2"))
    profile = await store.get_profile("u1")
    assert profile.purchases == {"b", "d", "e"}
    assert profile.ratings == {"b": 2.5, "d": 4.0, "e": 5.0}
    # the bound touches neither the counters nor recent
    assert profile.counters == {"purchase": 6, "rate": 6, "view": 1}
    assert profile.recent == [item for _, item, _ in script]
    assert (await store.get_profile("u2")).purchases == {"y"}

    more = [ev(f"p{n}", item=f"p{n}", action="purchase", ts=100 + n) for n in range(10)]
    await store.record_events(more)
    assert (await store.get_profile("u1")).purchases == {"p7", "p8", "p9"}


async def test_profile_bound_of_one(open_: OpenStore) -> None:
    store = await open_(StoreLimits(profile_max_items=1))
    await store.record_event(ev("e1", item="a", action="purchase"))
    await store.record_event(ev("e2", item="b", action="purchase"))
    await store.record_event(ev("e3", item="b", action="purchase"))
    await store.record_event(ev("e4", item="a", action="rate", rating=1.0))
    await store.record_event(ev("e5", item="a", action="rate", rating=2.0))
    profile = await store.get_profile("u1")
    assert (profile.purchases, profile.ratings) == ({"b"}, {"a": 2.0})


async def test_anonymous_events_change_no_profile(store: Store) -> None:
    await store.open_session("s1", "u1", 1.0)
    await store.record_event(ev("e1", item="a", action="purchase", user=None))
    await store.record_event(ev("e2", item="b", action="rate", rating=5.0, user=None))
    profile = await store.get_profile("u1")
    assert (profile.purchases, profile.ratings, profile.recent, profile.counters) == (
        set(),
        {},
        [],
        {},
    )
    empty = await store.get_profile("")
    assert (empty.purchases, empty.recent, empty.counters) == (set(), [], {})
    session = await store.get_session("s1")
    assert session is not None and session.items == ["a", "b"]  # the session still learns


async def test_unknown_profile_is_empty(store: Store) -> None:
    profile = await store.get_profile("nobody")
    assert profile.user_id == "nobody"
    assert (profile.purchases, profile.ratings, profile.recent, profile.counters) == (
        set(),
        {},
        [],
        {},
    )


# --- the event log -----------------------------------------------------------------


async def test_read_events_order_cursor_and_limit(store: Store) -> None:
    recorded = [
        ev(
            f"e{n}",
            session=f"s{n % 3}",
            item=f"i{n}",
            action=ACTIONS[n % 6],
            ts=1.7e9 + n / 7,
            user=None if n % 4 == 0 else f"u{n % 2}",
            rating=n / 3 if n % 6 == 5 else None,
        )
        for n in range(25)
    ]
    for e in recorded:
        await store.record_event(e)
    page1 = await store.read_events(limit=10)
    page2 = await store.read_events(after=page1[-1].position, limit=10)
    page3 = await store.read_events(after=page2[-1].position, limit=10)
    assert [len(p) for p in (page1, page2, page3)] == [10, 10, 5]
    assert [x.event for x in page1 + page2 + page3] == recorded  # exact round trip
    assert await store.read_events(after=page3[-1].position) == []
    assert await store.read_events(limit=0) == []
    assert await store.read_events(after=page1[2].position, limit=1) == [page1[3]]
    assert len({x.position for x in page1 + page2 + page3}) == 25


async def test_read_tail(store: Store) -> None:
    assert await store.read_tail(5) == []
    for n in range(12):
        await store.record_event(ev(f"e{n}", item=f"i{n}"))
    everything = await store.read_events(limit=100)
    assert await store.read_tail(5) == everything[-5:]  # the newest, oldest first
    assert await store.read_tail(100) == everything
    assert await store.read_tail(0) == []


async def test_count_events(store: Store) -> None:
    assert await store.count_events() == 0
    for n in range(7):
        await store.record_event(ev(f"e{n}"))
    await store.record_event(ev("e0"))
    assert await store.count_events() == 7


async def test_concurrent_record_events_are_logged_exactly_once(store: Store) -> None:
    events = [ev(f"e{n}", session=f"s{n % 20}", item=f"i{n}", user=f"u{n % 7}") for n in range(300)]
    calls = [store.record_event(e) for e in events] + [store.record_event(e) for e in events]
    results = await asyncio.gather(*calls)
    # each event is new exactly once, whichever of its two calls won
    per_event = [results[n] + results[n + 300] for n in range(300)]
    assert per_event == [1] * 300
    logged = await all_events(store, page=64)
    assert sorted(e.id for e in logged) == sorted(e.id for e in events)
    assert await store.count_events() == 300
    # each session's sequence follows the log order (one writer / one atomic script)
    by_session: dict[str, list[str]] = defaultdict(list)
    for e in logged:
        by_session[e.session_id].append(e.item_id)
    for session_id, items in by_session.items():
        session = await store.get_session(session_id)
        assert session is not None and session.items == items
    profile = await store.get_profile("u3")
    assert profile.counters == {"view": len([e for e in events if e.user_id == "u3"])}


async def test_event_log_is_trimmed_approximately(open_: OpenStore) -> None:
    store = await open_(StoreLimits(event_log_max=50))
    await store.record_events([ev(f"e{n}", item=f"i{n}") for n in range(300)])
    count = await store.count_events()
    assert 50 <= count < 300
    logged = await all_events(store)
    assert len(logged) == count
    assert [e.id for e in logged] == [f"e{n}" for n in range(300 - count, 300)]  # newest kept


# --- expiry, persistence, lifecycle ----------------------------------------------------


async def test_expired_session_profile_and_dedup(open_: OpenStore) -> None:
    ttl = 0.3
    store = await open_(StoreLimits(session_ttl_s=ttl, profile_ttl_s=ttl, dedup_ttl_s=ttl))
    await store.open_session("s1", "u1", 1.0)
    assert await store.record_event(ev("e1", item="a", action="purchase"))
    await asyncio.sleep(2 * ttl)
    assert await store.get_session("s1") is None
    assert (await store.get_profile("u1")).purchases == set()
    # an expired session starts afresh, with a new owner
    record, existed = await store.open_session("s1", "u2", 2.0)
    assert existed is False and record.user_id == "u2" and record.items == []
    # the id is forgotten: recording it again is new
    assert await store.record_event(ev("e1", item="b", user="u2"))
    session = await store.get_session("s1")
    assert session is not None and session.items == ["b"]
    assert (await store.get_profile("u2")).recent == ["b"]


async def test_everything_survives_reopening(durable_url: str) -> None:
    store = open_store(durable_url, StoreLimits())
    await store.open()
    await store.open_session("s1", "u1", 1.0)
    await asyncio.gather(*(store.record_event(ev(f"e{n}", item=f"i{n}", ts=n)) for n in range(50)))
    await store.record_event(ev("r", item="i0", action="rate", rating=3.5))
    before = (await store.get_session("s1"), await all_events(store))
    await store.close()

    reopened = open_store(durable_url, StoreLimits())
    await reopened.open()
    try:
        assert (await reopened.get_session("s1"), await all_events(reopened)) == before
        assert await reopened.count_events() == 51
        assert (await reopened.get_profile("u1")).ratings == {"i0": 3.5}
        assert await reopened.record_event(ev("e7")) is False  # dedup survived too
    finally:
        await reopened.close()


async def test_ping_close_and_use_after_close(store: Store) -> None:
    assert await store.ping() is True
    await store.close()
    await store.close()  # idempotent
    assert await store.ping() is False
    with pytest.raises(StoreUnavailable):
        await store.record_event(ev("e1"))


async def test_close_finishes_calls_already_made(durable_url: str) -> None:
    store = open_store(durable_url, StoreLimits())
    await store.open()
    tasks = [asyncio.create_task(store.record_event(ev(f"e{n}"))) for n in range(100)]
    await asyncio.sleep(0)  # every task has made its call
    await store.close()
    assert await asyncio.gather(*tasks) == [True] * 100

    reopened = open_store(durable_url, StoreLimits())
    await reopened.open()
    try:
        assert await reopened.count_events() == 100
    finally:
        await reopened.close()


# --- the catalog -------------------------------------------------------------------


async def test_catalog_upsert_get_all_remove(store: Store) -> None:
    assert await store.catalog_version() == 0
    assert await store.all_items() == (0, {})
    phone = {"title": "Phone", "price": 499.0, "in_stock": True, "tags": ["a", "b"]}
    case = {"title": "Case", "price": 19.5, "in_stock": False}
    v1 = await store.upsert_items({"phone": phone, "case": case})
    assert v1 == 1 == await store.catalog_version()
    assert await store.get_items(["case", "nope", "phone", "case"]) == {
        "case": case,
        "phone": phone,
    }
    # an upsert replaces the whole item
    v2 = await store.upsert_items({"case": {"title": "Case v2"}})
    assert v2 == 2
    assert await store.all_items() == (2, {"phone": phone, "case": {"title": "Case v2"}})
    v3 = await store.remove_items(["phone", "never-there"])
    assert v3 == 3
    assert await store.all_items() == (3, {"case": {"title": "Case v2"}})
    assert await store.get_items([]) == {}


async def test_catalog_version_grows_with_every_write(store: Store) -> None:
    versions = await asyncio.gather(
        *(store.upsert_items({f"i{n}": {"n": n}}) for n in range(20)),
        store.remove_items(["i3"]),
    )
    assert sorted(versions) == list(range(1, 22))  # each write saw its own version
    version, items = await store.all_items()
    assert version == 21 and len(items) in (19, 20)  # the remove may run before i3's upsert


async def test_catalog_many_items_round_trip(store: Store) -> None:
    items = {f"sku-{n:04d}": {"title": f"Item {n} — ü", "price": n / 4} for n in range(1200)}
    await store.upsert_items(items)
    assert (await store.all_items())[1] == items
    some = [f"sku-{n:04d}" for n in range(0, 1200, 7)]
    assert await store.get_items(some) == {i: items[i] for i in some}


async def test_catalog_survives_reopening(durable_url: str) -> None:
    store = open_store(durable_url, StoreLimits())
    await store.open()
    await store.upsert_items({"a": {"title": "A"}, "b": {"title": "B"}})
    await store.remove_items(["b"])
    await store.close()
    reopened = open_store(durable_url, StoreLimits())
    await reopened.open()
    try:
        assert await reopened.all_items() == (2, {"a": {"title": "A"}})
    finally:
        await reopened.close()


# --- following the log: consumer groups --------------------------------------------


async def test_follow_delivers_each_event_once_in_log_order(store: Store) -> None:
    await store.record_events([ev(f"e{n}", item=f"i{n}", ts=float(n)) for n in range(5)])
    first = await store.follow("g", "c", count=3)
    rest = await store.follow("g", "c", count=3)
    assert [e.event.id for e in first + rest] == [f"e{n}" for n in range(5)]
    assert first + rest == await store.read_events()  # same positions and events
    assert await store.follow("g", "c") == []
    await store.record_event(ev("e5"))
    assert [e.event.id for e in await store.follow("g", "c")] == ["e5"]
    assert await store.follow("g", "c", count=0) == []
    # another group starts at the beginning of the log, independently
    assert len(await store.follow("other", "c", count=100)) == 6


async def test_follow_redelivers_what_was_not_acked(durable_url: str) -> None:
    store = open_store(durable_url, StoreLimits())
    await store.open()
    await store.record_events([ev(f"e{n}", ts=float(n)) for n in range(5)])
    got = await store.follow("learn", "worker")
    await store.ack("learn", [e.position for e in got[:3]])
    await store.ack("learn", [])
    await store.close()
    # a restarted consumer gets the unacknowledged events again, then new ones
    reopened = open_store(durable_url, StoreLimits())
    await reopened.open()
    try:
        again = await reopened.follow("learn", "worker", count=1)
        again += await reopened.follow("learn", "worker")
        assert [e.event.id for e in again] == ["e3", "e4"]
        assert again == got[3:]
        await reopened.record_event(ev("e5", ts=5.0))
        new = await reopened.follow("learn", "worker")
        assert [e.event.id for e in new] == ["e5"]
        await reopened.ack("learn", [e.position for e in again + new])
    finally:
        await reopened.close()
    # everything acknowledged: nothing is delivered again
    third = open_store(durable_url, StoreLimits())
    await third.open()
    try:
        assert await third.follow("learn", "worker") == []
    finally:
        await third.close()


async def test_read_tail_longer_than_one_page(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warm-up reads many events: the Redis backends page their reads (TAIL_PAGE),
    and the pages join into the same newest-first-then-reversed list."""
    import liverec.store.redis_scripts as redis_scripts

    monkeypatch.setattr(redis_scripts, "TAIL_PAGE", 3)
    for n in range(11):
        await store.record_event(ev(f"e{n}", session=f"s{n % 4}", item=f"i{n}"))
    everything = await store.read_events(limit=100)
    assert await store.read_tail(7) == everything[-7:]
    assert await store.read_tail(9) == everything[-9:]  # a page boundary
    assert await store.read_tail(100) == everything
