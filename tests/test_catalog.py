"""The catalog: validation, JSONL/CSV import, the cache's rules, and the demo catalog."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import random
from pathlib import Path

import pytest

from liverec.catalog import Catalog, CatalogItem, parse_item, read_items, write_jsonl
from liverec.demo import CATEGORIES, build_catalog, image_svg, load_shapes, shopper_session
from liverec.errors import ProtocolError
from liverec.protocol import Limits, check_id
from liverec.store import Store, StoreLimits, open_store

WEB = Path(__file__).resolve().parents[1] / "web"


def test_parse_item_full_and_aliases() -> None:
    item = parse_item(
        {
            "id": "sku-1",
            "title": "  Phone  ",
            "price": "499.5",
            "currency": "eur",
            "image_url": "https://cdn.example.com/p/1.jpg",
            "link": "/p/sku-1",
            "category": "phones",
            "available": "out of stock",
            "description": "Nice.",
            "unknown": "ignored",
        },
        Limits(),
    )
    assert item == CatalogItem(
        "sku-1", "Phone", 499.5, "EUR", "https://cdn.example.com/p/1.jpg", "/p/sku-1",
        "phones", False, "Nice.",
    )  # fmt: skip
    assert item.card() == {
        "title": "Phone",
        "currency": "EUR",
        "price": 499.5,
        "image": "https://cdn.example.com/p/1.jpg",
        "url": "/p/sku-1",
        "category": "phones",
        "in_stock": False,
    }
    minimal = parse_item({"item_id": "x", "title": "X"}, Limits())
    assert (minimal.price, minimal.currency, minimal.in_stock, minimal.image) == (
        None,
        "USD",
        True,
        None,
    )


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("item_id", "has space", "bad_id"),
        ("item_id", None, "bad_field"),
        ("title", "", "missing_field"),
        ("title", "x" * 201, "bad_field"),
        ("price", -1, "bad_field"),
        ("price", "NaN", "bad_field"),
        ("price", True, "bad_field"),
        ("currency", "dollars", "bad_field"),
        ("image", "javascript:alert(1)", "bad_field"),
        ("image", "data:image/png;base64,AAAA", "bad_field"),
        ("url", '/p/1" onmouseover="x', "bad_field"),
        ("in_stock", "maybe", "bad_field"),
    ],
)
def test_parse_item_rejects(field: str, value: object, code: str) -> None:
    raw: dict[str, object] = {"item_id": "sku-1", "title": "T", field: value}
    with pytest.raises(ProtocolError) as info:
        parse_item(raw, Limits())
    assert info.value.code == code


def test_read_jsonl_csv_and_gzip(tmp_path: Path) -> None:
    items = [
        CatalogItem("a", "Alpha, the first", 1.0, category="c1"),
        CatalogItem("b", "Beta", None, image="/img/b.svg", in_stock=False),
    ]
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text(write_jsonl(items) + "\n")
    assert read_items(jsonl) == items
    packed = tmp_path / "items.jsonl.gz"
    packed.write_bytes(gzip.compress(jsonl.read_bytes()))
    assert read_items(packed) == items
    csv_file = tmp_path / "items.csv"
    csv_file.write_text(
        "\ufeffid,title,price,image_url,category,in_stock\n"
        'a,"Alpha, the first",1,,c1,yes\n'
        "b,Beta,,/img/b.svg,,0\n"
        "a,Alpha again,2,,c1,true\n"  # a later line replaces an earlier one
    )
    got = read_items(csv_file)
    assert [i.item_id for i in got] == ["a", "b"]
    assert got[0].title == "Alpha again" and got[0].price == 2.0
    assert got[1] == items[1]


def test_read_items_names_the_bad_line(tmp_path: Path) -> None:
    bad = tmp_path / "items.jsonl"
    bad.write_text(
        '{"item_id": "a", "title": "A"}\n\n{"item_id": "b", "title": "B", "price": -3}\n'
    )
    with pytest.raises(ProtocolError, match=r"items.jsonl:3: 'price'") as info:
        read_items(bad)
    assert info.value.ref == "b"
    broken = tmp_path / "x.jsonl"
    broken.write_text("[1, 2]\n")
    with pytest.raises(ProtocolError, match="line 1"):
        read_items(broken)
    with pytest.raises(ProtocolError, match=r"expected a \.jsonl"):
        read_items(tmp_path / "items.xml")


async def _store(url: str) -> Store:
    store = open_store(url, StoreLimits())
    await store.open()
    return store


async def test_availability_rules_and_cards() -> None:
    store = await _store("memory://")
    try:
        catalog = Catalog(store, poll_s=None)
        await catalog.load()
        assert catalog.is_available("anything")  # no catalog: every item may be shown
        assert catalog.describe(["anything"]) is None
        await catalog.upsert(
            [CatalogItem("in", "In", 1.0), CatalogItem("out", "Out", 2.0, in_stock=False)]
        )
        assert catalog.is_available("in")
        assert not catalog.is_available("out")  # out of stock
        assert not catalog.is_available("unknown")  # not in a catalog that exists
        cards = catalog.describe(["out", "unknown", "in"])
        assert cards is not None
        assert [c.get("title") for c in cards] == ["Out", None, "In"]
        await catalog.remove(["in"])
        assert not catalog.is_available("in")  # removed
        assert catalog.get("in") is None and len(catalog) == 1
    finally:
        await store.close()


async def test_other_process_changes_arrive_by_polling(tmp_path: Path) -> None:
    url = f"embedded://{tmp_path}/cat.db"
    writer_store, reader_store = await _store(url), await _store(url)
    writer, reader = Catalog(writer_store, poll_s=None), Catalog(reader_store, poll_s=0.05)
    try:
        await writer.load()
        await reader.load()
        await reader.start()
        await writer.upsert([CatalogItem("a", "A", 1.0)])
        assert reader.get("a") is None  # not yet: another process
        for _ in range(500):  # polled every 0.05 s; up to 10 s on a busy machine
            if reader.get("a") is not None:
                break
            await asyncio.sleep(0.02)
        assert reader.get("a") == CatalogItem("a", "A", 1.0)
        assert reader.version == writer.version == 1
        assert await reader.refresh() is False  # nothing changed since
        await writer.upsert([CatalogItem("a", "A", 1.0, in_stock=False)])
        assert await reader.refresh() is True
        assert not reader.is_available("a")
    finally:
        await reader.close()
        await writer_store.close()
        await reader_store.close()


async def test_own_write_applies_at_once_and_reload_catches_a_race(tmp_path: Path) -> None:
    url = f"embedded://{tmp_path}/cat.db"
    store_a, store_b = await _store(url), await _store(url)
    a, b = Catalog(store_a, poll_s=None), Catalog(store_b, poll_s=None)
    try:
        await a.load()
        await b.load()
        await b.upsert([CatalogItem("from-b", "B", 1.0)])  # version 1, unseen by a
        await a.upsert([CatalogItem("from-a", "A", 1.0)])  # version 2
        assert a.get("from-a") is not None  # its own write, at once
        assert a.get("from-b") is None and a.version == 0  # the gap forces a reload
        assert await a.refresh() is True
        assert {i.item_id for i in a.items()} == {"from-a", "from-b"} and a.version == 2
    finally:
        await store_a.close()
        await store_b.close()


# --- the demo catalog -------------------------------------------------------------------


def test_demo_catalog_is_deterministic_and_believable() -> None:
    demo, again = build_catalog(), build_catalog()
    assert demo.items == again.items
    assert len(demo.products) >= 200
    assert {i.category for i in demo.items} == {slug for slug, _, _ in CATEGORIES}
    limits = Limits()
    for item in demo.items:
        check_id(item.item_id, "item_id", limits)
        assert parse_item(item.to_dict(), limits) == item  # valid as a catalog item
        assert item.price is not None and item.price > 0
        assert item.image == f"/demo/img/{item.item_id}.svg"
    out_of_stock = [i for i in demo.items if not i.in_stock]
    assert 0 < len(out_of_stock) < len(demo.items) / 10
    phone = demo.related("aurora-15")
    assert "aurora-15-case-sage" in phone and "aurora-15-charger-30w" in phone
    assert "aurora-15" in demo.related("aurora-15-case-sage")
    assert not phone & demo.related("vega-14")  # families do not overlap


def test_every_demo_product_has_a_drawn_image() -> None:
    demo = build_catalog()
    shapes = load_shapes(WEB / "demo" / "shapes.svg")
    assert {p.shape for p in demo.products.values()} <= set(shapes)
    for product in demo.products.values():
        svg = image_svg(product, shapes)
        assert svg.startswith("<svg") and "{" not in svg  # every placeholder filled
        assert "http://" not in svg.replace("http://www.w3.org/2000/svg", "")


def test_shopper_sessions_stay_mostly_within_a_family() -> None:
    demo = build_catalog()
    rng = random.Random(3)
    same = total = 0
    for _ in range(300):
        steps = [item for action, item in shopper_session(rng, demo) if action == "view"]
        for a, b in itertools.pairwise(steps):
            total += 1
            same += b in demo.related(a)
    assert total > 500
    assert same / total > 0.6


def test_write_jsonl_round_trips_unicode(tmp_path: Path) -> None:
    item = CatalogItem("u", "Down Sleeping Bag −5 °C", 9.0)
    path = tmp_path / "u.jsonl"
    path.write_text(write_jsonl([item]), encoding="utf-8")
    assert json.loads(path.read_text(encoding="utf-8"))["title"] == item.title
    assert read_items(path) == [item]
