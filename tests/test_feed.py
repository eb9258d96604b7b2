"""The live feed: rolling statistics, bounded per-page queues, and the /v1/feed socket."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from liverec.config import Settings
from liverec.recommend.base import RecList
from liverec.server.feed import (
    MAX_CTR_ROWS,
    FeedHub,
    Subscriber,
    bucket_of,
    bucket_value,
    percentile,
)
from liverec.sessions import FeedEntry
from liverec.types import Event, Rec

from .servers import LiverecServer
from .wsclient import Client


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Titles:
    def is_available(self, item_id: str) -> bool:
        return True

    def describe(self, item_ids: list[str]) -> list[dict[str, Any]] | None:
        return [{"title": i.title()} for i in item_ids]


def event_entry(sid: str, item: str, latency_s: float, at: float = 0.0) -> FeedEntry:
    event = Event(f"e-{item}", sid, "view", item, at)
    recs = RecList([Rec("case", 1.0), Rec("cable", 0.5)], "online")
    return FeedEntry("event", sid, at, event, recs, latency_s, "home")


def test_percentile_within_bucket_resolution() -> None:
    latencies = [0.001 * (n + 1) for n in range(100)]  # 1..100 ms
    hist = Counter(bucket_of(x) for x in latencies)
    p50, p99 = percentile([hist], 0.5), percentile([hist], 0.99)
    assert p50 is not None and p99 is not None
    assert 0.050 / 1.1 < p50 < 0.050 * 1.1
    assert 0.099 / 1.1 < p99 < 0.099 * 1.1
    assert percentile([Counter()], 0.5) is None
    for x in (3e-6, 0.02, 7.0):  # a bucket's value lies within 9 % of what fell into it
        assert x / 1.1 < bucket_value(bucket_of(x)) < x * 1.1


def test_events_per_second_ticks_and_window() -> None:
    clock = Clock(1000.2)
    hub = FeedHub(Settings(feed_window_s=10), Titles(), clock=clock)
    for n in range(5):
        hub.on_entry(event_entry("s1", f"i{n}", 0.002))
    clock.t = 1001.5
    hub.on_entry(event_entry("s1", "j", 0.004))
    tick = hub.tick(1000)
    assert tick["events"] == 5 and tick["p50_ms"] == pytest.approx(2.0, rel=0.1)
    assert hub.tick(1001)["events"] == 1
    assert hub.tick(1001)["minute"]["events_per_s"] == round(6 / 60, 2)
    snap = hub.snapshot()
    assert snap["series"]["t0"] == 1001 - 10 and len(snap["series"]["events"]) == 10
    assert snap["series"]["events"][-1] == 5  # the last complete second
    clock.t = 1020.0  # older seconds leave the window when a new one starts
    hub.on_entry(event_entry("s1", "k", 0.001))
    assert set(hub.seconds) == {1020}


def test_live_sessions_follow_connections() -> None:
    hub = FeedHub(Settings(), clock=Clock())
    hub.on_entry(FeedEntry("open", "s1", 0.0, placement="home"))
    hub.on_entry(FeedEntry("open", "s1", 0.0, placement="product"))  # a second tab
    hub.on_entry(event_entry("s1", "phone", 0.001))
    hub.on_entry(FeedEntry("open", "s2", 0.0))
    assert [s["sid"] for s in hub.snapshot()["sessions"]] == ["s2", "s1"]
    hub.on_entry(FeedEntry("close", "s1", 0.0))
    assert "s1" in hub.live and hub.live["s1"].events == 1
    assert hub.live["s1"].last_item == "phone" and hub.live["s1"].placement == "home"
    hub.on_entry(FeedEntry("close", "s1", 0.0))
    hub.on_entry(FeedEntry("close", "never-opened", 0.0))
    assert list(hub.live) == ["s2"]


def test_other_processes_figures_merge_into_ticks_counts_and_click_through() -> None:
    """What feed_relay.py carries between processes: B's beat, heard by A's hub."""
    clock = Clock(1000.2)
    a = FeedHub(Settings(feed_window_s=10, feed_watch_s=3), Titles(), clock=clock)
    b = FeedHub(Settings(feed_window_s=10), Titles(), clock=clock)
    a.on_entry(FeedEntry("open", "sa", 0.0))
    a.on_entry(event_entry("sa", "i1", 0.002))
    for sid in ("sb1", "sb2"):
        b.on_entry(FeedEntry("open", sid, 0.0))
        b.on_entry(event_entry(sid, "j1", 0.004))
        b.on_entry(event_entry(sid, "j2", 0.004))
    b.on_entry(feedback("impression", "online", "home"))
    b.on_entry(feedback("click", "online", "home", "j1"))
    a.on_entry(feedback("impression", "online", "home"))
    clock.t = 1001.6
    a.heard_beat("b", json.loads(json.dumps(b.beat())))  # as it travels
    tick = a.tick(1000)
    assert (tick["events"], tick["sessions"], tick["processes"]) == (5, 3, 2)
    assert tick["p99_ms"] == pytest.approx(4.0, rel=0.1)
    assert tick["minute"]["events_per_s"] == round(5 / 60, 2)
    (row,) = tick["ctr"]
    assert (row["impressions"], row["clicks"], row["window"]["impressions"]) == (2, 1, 2)
    snap = a.snapshot()
    assert (snap["live_sessions"], snap["processes"]) == (3, 2)
    assert snap["series"]["events"][-1] == 5
    assert [s["sid"] for s in snap["sessions"]] == ["sa"]  # the list is A's own
    clock.t = 1005.0  # B said nothing for longer than feed_watch_s: gone from the counts
    assert a.tick(1000)["sessions"] == 1 and a.tick(1000)["processes"] == 1
    assert a.tick(1000)["events"] == 5  # its past seconds stay in the charts
    with pytest.raises((ValueError, TypeError, KeyError)):
        a.heard_beat("c", {"sessions": "x"})


def test_entries_of_other_processes_go_to_the_pages_and_ours_out_only_when_watched() -> None:
    hub = FeedHub(Settings(feed_queue=10), Titles(), clock=Clock())
    page = hub.subscribe()
    assert page is not None
    hub.heard_entries([{"kind": "event", "sid": "far", "item": "x"}], dropped=4)
    assert [e["sid"] for e in page.entries] == ["far"] and page.dropped == 4
    hub.unsubscribe(page)
    shared: list[dict[str, Any]] = []
    hub.on_entry(event_entry("s1", "nobody-watches", 0.001))
    hub.relay_out = shared.append  # a page on another process watches
    hub.on_entry(event_entry("s1", "watched", 0.001))
    assert [e["item"] for e in shared] == ["watched"] and shared[0]["title"] == "Watched"


def test_a_slow_page_loses_the_oldest_entries_and_is_told() -> None:
    hub = FeedHub(Settings(feed_queue=3, feed_max_subscribers=1), Titles(), clock=Clock())
    sub = hub.subscribe()
    assert sub is not None and hub.subscribe() is None  # at most one page here
    for n in range(5):
        hub.on_entry(event_entry("s", f"i{n}", 0.001))
    assert [e["item"] for e in sub.entries] == ["i2", "i3", "i4"]
    assert sub.dropped == 2 and sub.wake.is_set()
    shown = sub.entries[-1]
    assert shown["title"] == "I4" and shown["recs"] == [
        {"id": "case", "title": "Case"},
        {"id": "cable", "title": "Cable"},
    ]
    assert shown["latency_ms"] == 1.0 and shown["model"] == "online" and shown["acked"] is True
    hub.unsubscribe(sub)
    hub.on_entry(event_entry("s", "after", 0.001))
    assert len(sub.entries) == 3 and isinstance(sub, Subscriber)


def feedback(kind: str, model: str, placement: str, item: str | None = None) -> FeedEntry:
    return FeedEntry(kind, "s", 0.0, placement=placement, model=model, item_id=item)


def test_click_through_by_model_and_placement_over_the_window_and_in_total() -> None:
    clock = Clock(1000.5)
    hub = FeedHub(Settings(feed_window_s=60), Titles(), clock=clock)
    sub = hub.subscribe()
    assert sub is not None
    for _ in range(4):
        hub.on_entry(feedback("impression", "online", "product"))
    hub.on_entry(feedback("click", "online", "product", "case"))
    for _ in range(2):
        hub.on_entry(feedback("impression", "gru4rec-b", "product"))
    hub.on_entry(feedback("click", "gru4rec-b", "product", "case"))
    hub.on_entry(feedback("click", "gru4rec-b", "product", "cable"))  # two items, one list
    hub.on_entry(feedback("click", "online", "home", "phone"))  # a click with no impression
    assert not sub.entries  # counted, not queued: the click itself comes as an event
    rows = {(r["model"], r["placement"]): r for r in hub.tick(1000)["ctr"]}
    assert list(rows) == [("gru4rec-b", "product"), ("online", "home"), ("online", "product")]
    online = rows["online", "product"]
    assert (online["impressions"], online["clicks"], online["ctr"]) == (4, 1, 0.25)
    assert online["window"] == {"impressions": 4, "clicks": 1, "ctr": 0.25}
    gru = rows["gru4rec-b", "product"]
    assert (gru["impressions"], gru["clicks"], gru["ctr"]) == (2, 2, 1.0)
    assert rows["online", "home"]["ctr"] is None  # no impressions: no rate
    assert hub.snapshot()["ctr"] == hub.tick(1000)["ctr"]

    clock.t = 1070.5  # a minute later: the window holds only what came since
    hub.on_entry(feedback("impression", "online", "product"))
    hub.on_entry(feedback("impression", "online", "product"))
    rows = {(r["model"], r["placement"]): r for r in hub.tick(1070)["ctr"]}
    online = rows["online", "product"]
    assert (online["impressions"], online["clicks"], online["ctr"]) == (6, 1, round(1 / 6, 4))
    assert online["window"] == {"impressions": 2, "clicks": 0, "ctr": 0.0}


def test_click_through_rows_are_bounded() -> None:
    hub = FeedHub(Settings(), clock=Clock())
    for n in range(MAX_CTR_ROWS + 5):
        hub.on_entry(feedback("impression", "online", f"place-{n}"))
    hub.on_entry(feedback("impression", "online", "place-5"))  # recently updated: kept
    hub.on_entry(feedback("impression", "online", "place-new"))
    places = {r["placement"] for r in hub.snapshot()["ctr"]}
    assert len(places) == MAX_CTR_ROWS
    assert {"place-5", "place-new"} <= places and "place-6" not in places


# --- the socket -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[LiverecServer]:
    srv = LiverecServer("memory://", feed_max_subscribers=2, hello_timeout_s=2).start()
    yield srv
    srv.stop()


async def feed(url: str, hello: dict[str, Any] | None = None) -> ClientConnection:
    ws = await connect(url.replace("/v1/ws", "/v1/feed"), open_timeout=10)
    await ws.send(json.dumps(hello or {"type": "hello"}))
    return ws


async def next_of(ws: ClientConnection, kind: str, timeout: float = 10.0) -> dict[str, Any]:
    """The next frame of this kind (others are skipped), within `timeout` in all."""
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == kind:
                return frame  # type: ignore[no-any-return]


async def test_feed_streams_events_with_recs_and_ticks(server: LiverecServer) -> None:
    ws = await feed(server.ws_url)
    try:
        snapshot = await next_of(ws, "snapshot")
        assert snapshot["window_s"] == 300 and len(snapshot["series"]["events"]) == 300
        async with await Client.open(server.ws_url) as shopper:
            welcome, _ = await shopper.hello(placement="product")
            sid = welcome["session_id"]
            await shopper.event("feed-a")
            _, recs = await shopper.event("feed-b")
            seen: list[dict[str, Any]] = []
            while not any(e.get("item") == "feed-b" for e in seen):
                seen += (await next_of(ws, "batch"))["entries"]
            kinds = [(e["kind"], e.get("item")) for e in seen if e["sid"] == sid]
            assert kinds == [("open", None), ("event", "feed-a"), ("event", "feed-b")]
            last = seen[-1]
            assert last["action"] == "view" and last["placement"] == "product"
            assert [r["id"] for r in last["recs"]] == [r["item_id"] for r in recs["items"]][:6]
            assert last["latency_ms"] > 0 and last["model"] == recs["model"]
        ticks: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while not ticks or not any(e["kind"] == "close" for e in seen):
                frame = json.loads(await ws.recv())
                if frame["type"] == "tick":
                    ticks.append(frame)
                else:
                    seen += frame["entries"]
        assert {"events", "p50_ms", "p99_ms", "sessions", "minute", "model", "ctr"} <= set(ticks[0])
        assert [e["sid"] for e in seen if e["kind"] == "close"] == [sid]
    finally:
        await ws.close()


async def test_feed_counts_each_impression_once_per_recs_frame(server: LiverecServer) -> None:
    async with await Client.open(server.ws_url) as other:  # so that ctr-a has a neighbour
        await other.hello()
        for item in ("ctr-a", "ctr-b", "ctr-c"):
            await other.event(item)
    async with await Client.open(server.ws_url) as shopper:
        await shopper.hello(placement="feed-ctr")
        _, first = await shopper.event("ctr-a")
        _, second = await shopper.event("ctr-b")
        item = first["items"][0]["item_id"]
        for _ in range(2):  # the same list reported twice: one impression, one click
            await shopper.send(
                {"type": "feedback", "kind": "impression", "recs_id": first["recs_id"]}
            )
            await shopper.send(
                {"type": "feedback", "kind": "click", "recs_id": first["recs_id"], "item_id": item}
            )
        await shopper.send({"type": "feedback", "kind": "impression", "recs_id": second["recs_id"]})
        await shopper.send({"type": "ping"})
        assert await shopper.recv() == {"type": "pong"}  # every frame before it was handled
        ws = await feed(server.ws_url)
        try:
            rows = (await next_of(ws, "snapshot"))["ctr"]
        finally:
            await ws.close()
    row = next(r for r in rows if r["placement"] == "feed-ctr")
    assert row["model"] == first["model"] == second["model"]
    assert (row["impressions"], row["clicks"], row["ctr"]) == (2, 1, 0.5)
    assert row["window"] == {"impressions": 2, "clicks": 1, "ctr": 0.5}


async def test_feed_needs_hello_and_limits_pages(server: LiverecServer) -> None:
    ws = await feed(server.ws_url, {"type": "event"})
    with pytest.raises(ConnectionClosed) as info:
        await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    pages = [await feed(server.ws_url) for _ in range(2)]
    for page in pages:
        await next_of(page, "snapshot")
    extra = await feed(server.ws_url)
    with pytest.raises(ConnectionClosed) as info:
        await extra.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1013
    for page in pages:
        await page.close()


OP_TOKEN = "op-token-0123456789abcdef0123456789"  # admin tokens are at least 32 bytes


async def test_feed_requires_the_admin_token_when_set() -> None:
    srv = LiverecServer("memory://", admin_token=OP_TOKEN).start()
    try:
        for hello in ({"type": "hello"}, {"type": "hello", "token": "nope"}):
            ws = await feed(srv.ws_url, hello)
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (
                1008,
                "operator token required",
            )
        ws = await feed(srv.ws_url, {"type": "hello", "token": OP_TOKEN})
        first = json.loads(await ws.recv())  # admitted: the snapshot is the first frame
        assert first["type"] == "snapshot" and first["live_sessions"] == 0
        await ws.close()
    finally:
        srv.stop()
