"""Cold start from the catalog: the content index (unit tests with plain calls), its
blend with the online and GRU4Rec models, and a real `liverec serve` with a catalog
and no events."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liverec.catalog import Catalog, CatalogItem, parse_item
from liverec.config import Settings
from liverec.errors import ProtocolError
from liverec.protocol import Limits
from liverec.recommend import attach_catalog, build_recommender
from liverec.recommend.base import RecContext
from liverec.recommend.blend import BlendedRecommender
from liverec.recommend.content import ContentIndex, item_tokens
from liverec.recommend.online import OnlineRecommender
from liverec.store import limits_from, open_store
from liverec.types import Event

from .servers import LiverecServer
from .test_catalog_api import request
from .wsclient import Client

# 4 categories x 6 items; each brand belongs to one category; one item per category
# out of stock (the last).
BRANDS = {"shoes": ("Fleet", "Fleet", "Fleet", "Oak", "Oak", "Fleet"),
          "jackets": ("North", "North", "North", "Gale", "Gale", "North"),
          "bags": ("Tote", "Tote", "Tote", "Ridge", "Ridge", "Tote"),
          "hats": ("Brim", "Brim", "Brim", "Crown", "Crown", "Brim")}  # fmt: skip
NOUNS = ("alpha", "bravo", "cosmo", "delta", "ember", "fjord")


def catalog_rows() -> list[dict[str, Any]]:
    rows = []
    for category, brands in BRANDS.items():
        for j, brand in enumerate(brands, 1):
            rows.append(
                {
                    "item_id": f"{category[:-1]}-{j}",
                    "title": f"{brand} {NOUNS[j - 1]} {category[:-1]}",
                    "category": category,
                    "brand": brand,
                    "price": 40.0 + j,
                    "in_stock": j != 6,
                }
            )
    return rows


def items(rows: list[dict[str, Any]]) -> list[CatalogItem]:
    return [parse_item(r, Limits()) for r in rows]


def category_of(item_id: str) -> str:
    return item_id.split("-")[0] + "s"


# --- the index, with plain calls ---------------------------------------------------------


def test_related_items_share_category_and_brand_first() -> None:
    index = ContentIndex()
    index.update(items(catalog_rows()))
    related = [i for i, _ in index.related("shoe-1", 10)]
    assert set(related[:2]) == {"shoe-2", "shoe-3"}  # same category and brand
    assert set(related[2:4]) == {"shoe-4", "shoe-5"}  # same category
    assert "shoe-1" not in related and "shoe-6" not in related  # itself, out of stock
    assert index.related("no-such-item", 5) == []
    # a session: the newest item's related items weigh most, the anchors never appear
    session = [i for i, _ in index.related_to(["shoe-1", "hat-1"], 8)]
    assert set(session[:2]) == {"hat-2", "hat-3"} and {"shoe-2", "shoe-3"} <= set(session)
    assert "shoe-1" not in session and "hat-1" not in session


def test_updates_and_removals_apply_item_by_item() -> None:
    index = ContentIndex(refresh_s=0.0)
    index.update(items(catalog_rows()))
    moved = {**catalog_rows()[6], "category": "shoes", "brand": "Fleet"}  # jacket-1
    index.update(items([moved]))
    assert "jacket-1" in [i for i, _ in index.related("shoe-1", 3)]
    index.update((), gone=["jacket-1", "shoe-2"])
    related = [i for i, _ in index.related("shoe-1", 10)]
    assert "jacket-1" not in related and "shoe-2" not in related
    assert len(index) == 22
    restocked = {**catalog_rows()[5], "in_stock": True}  # shoe-6
    index.update(items([restocked]))
    assert "shoe-6" in [i for i, _ in index.related("shoe-1", 3)]


def test_stock_changes_keep_cached_related_lists_and_still_filter_stock() -> None:
    index = ContentIndex(refresh_s=0.0)  # an entry is reused only while no tokens change
    index.update(items(catalog_rows()))
    assert "shoe-2" in [i for i, _ in index.related("shoe-1", 3)]
    cached = index._cache["shoe-1"][2]
    index.update(items([{**catalog_rows()[1], "in_stock": False}]))  # shoe-2: tokens as before
    assert "shoe-2" not in [i for i, _ in index.related("shoe-1", 3)]
    assert "shoe-2" not in index.home(24)
    assert index._cache["shoe-1"][2] is cached  # not recomputed
    index.update(items([{**catalog_rows()[1], "in_stock": True}]))
    in_stock = [i for i, _ in cached if index.in_stock(i)]  # the list holds every item
    assert "shoe-2" in in_stock and [i for i, _ in index.related("shoe-1", 9)] == in_stock[:9]
    assert index._cache["shoe-1"][2] is cached
    index.update(items([{**catalog_rows()[2], "title": "Something else entirely"}]))
    index.related("shoe-1", 3)
    assert index._cache["shoe-1"][2] is not cached  # a token changed: recomputed


def test_a_sessions_related_items_sum_its_anchors_lists_newest_first() -> None:
    index = ContentIndex(refresh_s=0.0, neighbours=12)
    index.update(items(catalog_rows()))
    recent = ["hat-2", "bag-1", "shoe-1", "bag-1", "jacket-2", "shoe-1"]
    anchors = ["shoe-1", "jacket-2", "bag-1"]  # the newest 3 distinct, newest first
    want: dict[str, float] = {}
    for j, anchor in enumerate(anchors, 1):
        for b, s in index.related(anchor, 100):  # its best 12, those in stock
            want[b] = want.get(b, 0.0) + s / j
    for a in anchors:
        want.pop(a, None)
    ranked = sorted(want, key=lambda b: -want[b])  # stable: ties as first met
    got = index.related_to(recent, 10)
    assert [b for b, _ in got] == ranked[:10] and len(got) == 10
    assert [s for _, s in got] == [want[b] for b in ranked[:10]]


def assert_arrays_match_postings(index: ContentIndex) -> None:
    for token, array in index._arrays.items():
        assert array.tolist() == [index._slot[i] for i in reversed(index._postings[token])]


def test_small_updates_patch_the_posting_arrays_and_bulk_ones_drop_them() -> None:
    index = ContentIndex(max_postings=4)
    rows = catalog_rows()
    index.update(items(rows))
    for row in rows:
        index.related(row["item_id"], 5)  # every array built
    built = set(index._arrays)
    index.update(items([{"item_id": "shoe-7", "title": "Fleet shoe", "category": "shoes",
                         "brand": "Fleet"}]), gone=["shoe-2"])  # fmt: skip
    assert {"c:shoes", "b:fleet"} <= set(index._arrays) and set(index._arrays) <= built
    assert_arrays_match_postings(index)  # the newest first, the oldest evicted
    index.update(items([{**rows[3], "brand": "Fleet"}]), gone=["shoe-1", "shoe-3"])
    assert_arrays_match_postings(index)
    assert index._arrays["b:fleet"][0] == index._slot["shoe-4"]
    bulk = [{**r, "title": r["title"] + " new"} for r in rows] * 3  # 72 updates
    index.update(items(bulk))
    assert not index._arrays  # dropped, to be rebuilt by the next lookup
    index.related("shoe-4", 5)
    assert index._arrays
    assert_arrays_match_postings(index)


def test_postings_per_token_are_bounded() -> None:
    index = ContentIndex(max_postings=5, scan=7)
    rows = [{"item_id": f"s{i}", "title": f"Shoe {i}", "category": "shoes"} for i in range(50)]
    index.update(items(rows))
    assert max(len(p) for p in index._postings.values()) <= 5
    related = index.related("s49", 50)
    assert 0 < len(related) <= 7  # at most `scan` candidates read
    index.update((), gone=[f"s{i}" for i in range(50)])
    assert len(index) == 0 and not index._postings and not index._df and not index._arrays


def brute_force_related(rows: list[dict[str, Any]], item: str) -> dict[str, float]:
    """Cosine of the weighted token vectors against every other item (no index)."""
    vectors = {i.item_id: item_tokens(i) for i in items(rows)}
    df: dict[str, int] = {}
    for tokens in vectors.values():
        for t in tokens:
            df[t] = df.get(t, 0) + 1

    def vec(i: str) -> dict[str, float]:
        return {t: w * math.log(1 + len(vectors) / df[t]) for t, w in vectors[i].items()}

    q = vec(item)
    out = {}
    for other in vectors:
        v = vec(other)
        dot = sum(x * v[t] for t, x in q.items() if t in v)
        if other != item and dot > 0:
            norms = sum(x * x for x in q.values()) * sum(x * x for x in v.values())
            out[other] = dot / math.sqrt(norms)
    return out


def test_related_scores_are_the_cosine_after_removals_and_reused_slots() -> None:
    rows = catalog_rows()
    index = ContentIndex(refresh_s=0.0)
    index.update(items(rows))
    for row in rows:  # every posting read once (kept as arrays from then on)
        index.related(row["item_id"], 100)
    gone = ["shoe-2", "jacket-3", "bag-4"]
    index.update((), gone=gone)  # frees their numbers ...
    fresh = [
        {"item_id": "shoe-7", "title": "Trail shoe", "category": "shoes", "brand": "Fleet"},
        {"item_id": "bag-7", "title": "Shoe bag", "category": "bags"},
    ]
    index.update(items(fresh))  # ... which these reuse
    live = [r for r in rows if r["item_id"] not in gone] + fresh
    anchors = ("shoe-1", "shoe-7", "bag-7", "jacket-1", "hat-2")
    for anchor in anchors:  # the same candidates as a scan of every item
        want = {i for i in brute_force_related(live, anchor) if index.in_stock(i)}
        assert {i for i, _ in index.related(anchor, 100)} == want
    index.update(items(live))  # every item re-numbered, norms with today's idf
    for anchor in anchors:  # and the same scores, best first
        want = brute_force_related(live, anchor)
        got = index.related(anchor, 100)
        assert all(math.isclose(s, want[i], rel_tol=1e-9) for i, s in got)
        assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)


def test_cached_related_lists_follow_changes_after_refresh() -> None:
    now = [0.0]
    index = ContentIndex(refresh_s=1.0, clock=lambda: now[0])
    index.update(items(catalog_rows()))
    assert "hat-1" not in [i for i, _ in index.related("shoe-1", 3)]
    index.update(items([{**catalog_rows()[18], "category": "shoes", "brand": "Fleet"}]))
    assert "hat-1" not in [i for i, _ in index.related("shoe-1", 3)]  # cached
    now[0] += 1.0
    assert "hat-1" in [i for i, _ in index.related("shoe-1", 3)]


def test_home_list_spreads_over_categories_newest_first() -> None:
    now = [0.0]
    index = ContentIndex(refresh_s=1.0, clock=lambda: now[0])
    index.update(items(catalog_rows()))
    home = index.home(8)
    assert len(home) == 8 and len({category_of(i) for i in home[:4]}) == 4
    assert set(home[:4]) == {"shoe-5", "jacket-5", "bag-5", "hat-5"}  # newest in stock
    index.update(items([{**catalog_rows()[0], "in_stock": False}]))  # shoe-1
    assert "shoe-1" not in index.home(20)  # stock is re-checked on a kept list
    index.update(items([{"item_id": "shoe-9", "title": "New shoe", "category": "shoes"}]))
    now[0] += 1.0
    assert "shoe-9" in index.home(4)


def test_brand_and_attributes_are_validated_and_round_trip() -> None:
    raw = {"item_id": "x", "title": "X", "brand": "Fleet", "attributes": {"color": ["red", 2]}}
    item = parse_item(raw, Limits())
    assert item.attributes == (("color", "red"), ("color", "2"))
    assert parse_item(item.to_dict(), Limits()) == item
    csv_cell = parse_item({"item_id": "y", "title": "Y", "attributes": '{"size": 42}'}, Limits())
    assert csv_cell.attributes == (("size", "42"),)
    for bad in ({"color": {"deep": 1}}, ["red"], {"": "x"}, {"c": "x" * 101}, "not json"):
        with pytest.raises(ProtocolError):
            parse_item({"item_id": "z", "title": "Z", "attributes": bad}, Limits())


# --- the blend, in process -----------------------------------------------------------------


def event(session: str, item: str, n: int) -> Event:
    return Event(f"e{n}", session, "view", item, ts=1000.0 + n)


def ctx(session: str, seq: list[str], k: int = 8) -> RecContext:
    return RecContext(session, seq, k, current_item=seq[-1] if seq else None)


async def test_content_gives_way_as_co_views_accumulate() -> None:
    online = OnlineRecommender(clock=lambda: 2000.0)
    index = ContentIndex(refresh_s=0.0)
    index.update(items(catalog_rows()))
    blended = BlendedRecommender(online, index, item_evidence=10.0)
    assert [blended.content_slots(8, e, 10.0) for e in (0, 1, 2, 10, 70)] == [8, 7, 6, 4, 1]
    first = (await blended.recommend(ctx("s", ["bag-1"]))).items
    assert category_of(first[0].item_id) == "bags"
    n = 0
    for s in range(12):  # 12 sessions: bag-1, then hat-1
        for item in ("bag-1", "hat-1"):
            n += 1
            blended.observe(event(f"cv{s}", item, n))
    assert blended.evidence("bag-1") == 12
    after = [r.item_id for r in (await blended.recommend(ctx("s", ["bag-1"]))).items]
    assert after[0] == "hat-1" and len(after) == 8
    assert category_of(after[1]) == "bags"  # 8 - floor(8 * 10 / 22) = 5 behavioural slots,
    # but the online model knows only hat-1 and bag-1: content fills the rest
    home = (await blended.recommend(ctx("new", []))).items
    assert len(home) == 8 and len({category_of(r.item_id) for r in home}) >= 3


async def test_no_content_lookup_when_content_gets_no_slot_and_the_list_is_full() -> None:
    online = OnlineRecommender(clock=lambda: 2000.0)
    index = ContentIndex(refresh_s=0.0)
    index.update(items(catalog_rows()))
    blended = BlendedRecommender(online, index, item_evidence=1.0)
    for s in range(6):  # bag-1 then hat-1 or jacket-1: 6 co-views of bag-1
        blended.observe(event(f"cv{s}", "bag-1", 2 * s))
        blended.observe(event(f"cv{s}", ("hat-1", "jacket-1")[s % 2], 2 * s + 1))
    assert blended.content_slots(2, blended.evidence("bag-1"), 1.0) == 0
    full = (await blended.recommend(ctx("s", ["bag-1"], k=2))).items
    own = (await online.recommend(ctx("s", ["bag-1"], k=2))).items
    assert [r.item_id for r in full] == [r.item_id for r in own]
    assert {r.item_id for r in full} == {"hat-1", "jacket-1"}
    assert "bag-1" not in index._cache  # the behavioural list was full: no lookup
    short = [r.item_id for r in (await blended.recommend(ctx("s", ["bag-1"], k=8))).items]
    assert set(short[:2]) == {"hat-1", "jacket-1"} and category_of(short[2]) == "bags"
    assert "bag-1" in index._cache


async def test_catalog_changes_reach_the_index(tmp_path: Path) -> None:
    settings = Settings(store_url="memory://", content_refresh_s=0.0)
    store = open_store(settings.store_url, limits_from(settings))
    await store.open()
    try:
        catalog = Catalog(store, poll_s=None)
        await catalog.upsert(items(catalog_rows()))
        await catalog.load()
        recommender = build_recommender(settings)
        assert isinstance(recommender, BlendedRecommender)
        attach_catalog(recommender, catalog)
        assert len(recommender.content) == 24
        await catalog.upsert(items([{"item_id": "hat-9", "title": "Brim cap", "category": "hats",
                                     "brand": "Brim"}]))  # fmt: skip
        assert "hat-9" in [i for i, _ in recommender.content.related("hat-1", 3)]
        await catalog.remove(["hat-9"])
        assert "hat-9" not in recommender.content
        await store.upsert_items({"hat-8": {"title": "Brim beanie", "category": "hats"}})
        assert await catalog.refresh()  # another process wrote: a reload, diffed
        assert "hat-8" in recommender.content and len(recommender.content) == 25
    finally:
        await store.close()


async def test_gru_checkpoint_keeps_its_items_and_content_covers_the_rest(
    tmp_path: Path,
) -> None:
    from .tiny_model import train_tiny  # torch: only this test

    train_tiny(tmp_path / "m")
    settings = Settings(model_path=str(tmp_path / "m"), model_process=False, model_poll_s=None)
    recommender = build_recommender(settings)
    assert isinstance(recommender, BlendedRecommender)
    # The catalog cuts across the model's families: f{fam}-{j} is in category c{j}.
    rows = [
        {"item_id": f"f{fam}-{j}", "title": f"Item {fam} {j}", "category": f"c{j}"}
        for fam in range(6)
        for j in range(8)
    ]
    rows += [{"item_id": f"new-{i}", "title": f"Fresh {i}", "category": "c5"} for i in range(3)]
    recommender.content.update(items(rows))
    try:
        for n, item in enumerate(("f2-3", "f2-4")):
            recommender.observe(event("g", item, n))
        trained = (await recommender.recommend(ctx("g", ["f2-3", "f2-4"], k=4))).items
        own = (await recommender.inner.recommend(ctx("g", ["f2-3", "f2-4"], k=4))).items
        assert [r.item_id for r in trained] == [r.item_id for r in own]  # the GRU's list
        assert len(trained) == 4 and recommender.evidence("f2-4") == float("inf")
        fresh = (await recommender.recommend(ctx("h", ["new-0"], k=4))).items
        assert {r.item_id for r in fresh[:2]} == {"new-1", "new-2"}  # category and title
        assert all(r.item_id.endswith("-5") or r.item_id.startswith("new-") for r in fresh)
    finally:
        await recommender.close()


# --- a real server with a catalog and no events ------------------------------------------------


@pytest.fixture
def server() -> Iterator[LiverecServer]:
    srv = LiverecServer("memory://", events_per_s=500, events_burst=500).start()
    status, body, _ = request(srv, "PUT", "/v1/catalog/items", {"items": catalog_rows()})
    assert status == 200, body
    yield srv
    srv.stop()


def in_stock_catalog_item(server: LiverecServer, item_id: str) -> bool:
    status, body, _ = request(server, "GET", f"/v1/catalog/items/{item_id}")
    return status == 200 and body["in_stock"] is True


async def test_day_one_hello_and_a_never_viewed_item(server: LiverecServer) -> None:
    async with await Client.open(server.ws_url) as c:
        _, recs = await c.hello(k=8)
        got = [r["item_id"] for r in recs["items"]]
        assert len(got) == 8 and len(set(got)) == 8
        assert all(r["in_stock"] is True and r["title"] for r in recs["items"])
        assert all(in_stock_catalog_item(server, i) for i in got)
        assert len({r["category"] for r in recs["items"]}) == 4
        _, recs = await c.event("shoe-1")
        got = [r["item_id"] for r in recs["items"]]
        assert set(got[:2]) == {"shoe-2", "shoe-3"} and set(got[2:4]) == {"shoe-4", "shoe-5"}
        assert "shoe-1" not in got and "shoe-6" not in got and len(got) == 8
        assert not {f"{c}-6" for c in ("shoe", "jacket", "bag", "hat")} & set(got)


async def test_catalog_changes_show_within_seconds(server: LiverecServer) -> None:
    new = {"item_id": "shoe-7", "title": "Fleet alpha shoe", "category": "shoes",
           "brand": "Fleet", "price": 41.0}  # fmt: skip
    assert request(server, "PUT", "/v1/catalog/items", {"items": [new]})[0] == 200
    gone = {**catalog_rows()[1], "in_stock": False}  # shoe-2
    assert request(server, "PUT", "/v1/catalog/items", {"items": [gone]})[0] == 200
    async with await Client.open(server.ws_url) as c:
        await c.hello(k=8)
        deadline = time.monotonic() + 10
        while True:
            _, recs = await c.event("shoe-1")
            got = [r["item_id"] for r in recs["items"]]
            if got[0] == "shoe-7" and "shoe-2" not in got:
                break
            assert time.monotonic() < deadline, got
    async with await Client.open(server.ws_url) as c:
        _, recs = await c.hello(k=4)
        assert "shoe-7" in [r["item_id"] for r in recs["items"]]  # the newest shoe


async def test_behavioural_neighbours_come_first_as_co_views_accumulate(
    server: LiverecServer,
) -> None:
    async with await Client.open(server.ws_url) as c:
        await c.hello(k=8)
        _, recs = await c.event("bag-1")
        assert category_of(recs["items"][0]["item_id"]) == "bags"
    for _ in range(12):  # shoppers who look at bag-1 go on to hat-1
        async with await Client.open(server.ws_url) as c:
            await c.hello()
            await c.event("bag-1")
            await c.event("hat-1")
    async with await Client.open(server.ws_url) as c:
        await c.hello(k=8)
        _, recs = await c.event("bag-1")
        got = [r["item_id"] for r in recs["items"]]
        assert got[0] == "hat-1" and "bag-1" not in got and len(got) == 8
        assert {"bag-2", "bag-3"} <= set(got)  # content still fills the row


def test_ab_arms_still_named_in_metrics_with_content_blended(tmp_path: Path) -> None:
    from .tiny_model import train_tiny  # torch: only this test

    train_tiny(tmp_path / "a", seed=1)
    train_tiny(tmp_path / "b", seed=2, data_seed=3)
    srv = LiverecServer(
        "memory://", model_path=str(tmp_path / "a"), ab_model_path=str(tmp_path / "b"),
        ab_share=0.5,
    ).start()  # fmt: skip
    try:
        metrics = srv.get_text("/metrics")
        arms = {
            line.split('arm="')[1].split('"')[0]
            for line in metrics.splitlines()
            if line.startswith("liverec_model_info{")
        }
        assert arms == {"a", "b"}
    finally:
        srv.stop()
