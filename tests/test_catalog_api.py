"""The catalog over real servers: the HTTP API, its effect on recs frames, the CLI
import picked up by a running server, and the demo pages rendered from the catalog."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .servers import LiverecServer
from .wsclient import Client

ADMIN = "s3cret-admin-0123456789abcdef012345"


def request(
    server: LiverecServer, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any, dict[str, str]]:
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            raw = r.read()
            kind = r.headers.get("content-type", "")
            return r.status, json.loads(raw) if "json" in kind else raw.decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        raw = e.read()
        e.close()
        try:
            return e.code, json.loads(raw), dict(e.headers)
        except ValueError:
            return e.code, raw.decode(), dict(e.headers)


@pytest.fixture(scope="module")
def server() -> Iterator[LiverecServer]:
    srv = LiverecServer("memory://", events_per_s=500, events_burst=500).start()
    yield srv
    srv.stop()


def item(item_id: str, **extra: Any) -> dict[str, Any]:
    return {"item_id": item_id, "title": item_id.upper(), "price": 10.0, **extra}


def test_put_get_list_delete(server: LiverecServer) -> None:
    status, body, _ = request(
        server, "PUT", "/v1/catalog/items", {"items": [item("api-a"), item("api-b")]}
    )
    assert status == 200 and body["upserted"] == 2 and body["version"] >= 1
    status, body, _ = request(server, "GET", "/v1/catalog/items/api-a")
    assert status == 200 and body["title"] == "API-A" and body["in_stock"] is True
    status, body, _ = request(server, "GET", "/v1/catalog/items?after=api-a&limit=1")
    assert status == 200 and [i["item_id"] for i in body["items"]] == ["api-b"]
    status, body, _ = request(server, "DELETE", "/v1/catalog/items/api-b")
    assert status == 200 and body["removed"] == "api-b"
    assert request(server, "GET", "/v1/catalog/items/api-b")[0] == 404
    assert request(server, "DELETE", "/v1/catalog/items/api-b")[0] == 404


def test_put_rejects_bad_items_all_or_nothing(server: LiverecServer) -> None:
    bad = {"items": [item("bad-ok"), item("bad-x", image="javascript:alert(1)")]}
    status, body, _ = request(server, "PUT", "/v1/catalog/items", bad)
    assert status == 400
    assert body["error"]["code"] == "bad_field" and body["error"]["ref"] == "bad-x"
    assert request(server, "GET", "/v1/catalog/items/bad-ok")[0] == 404
    assert request(server, "PUT", "/v1/catalog/items", {"items": []})[0] == 400
    assert request(server, "PUT", "/v1/catalog/items", {"items": ["x"]})[0] == 400


def test_catalog_limits_are_the_settings() -> None:
    srv = LiverecServer(
        "memory://", catalog_max_items_per_put=2, catalog_max_put_bytes=600, catalog_list_limit=2
    ).start()
    try:
        three = {"items": [item("lim-a"), item("lim-b"), item("lim-c")]}
        status, body, _ = request(srv, "PUT", "/v1/catalog/items", three)
        assert status == 400 and body["error"]["code"] == "too_many_items", body
        assert "at most 2 per request" in body["error"]["message"]
        big = {"items": [item("lim-d", description="x" * 600)]}
        status, body, _ = request(srv, "PUT", "/v1/catalog/items", big)
        assert status == 413 and body["error"]["code"] == "body_too_large", body
        for pair in (["lim-a", "lim-b"], ["lim-c"]):
            status, _, _ = request(srv, "PUT", "/v1/catalog/items", [item(i) for i in pair])
            assert status == 200
        status, body, _ = request(srv, "GET", "/v1/catalog/items?limit=100")
        assert status == 200 and [i["item_id"] for i in body["items"]] == ["lim-a", "lim-b"]
    finally:
        srv.stop()


async def test_recs_carry_cards_and_skip_out_of_stock_and_removed(server: LiverecServer) -> None:
    request(
        server,
        "PUT",
        "/v1/catalog/items",
        [item("cam"), item("lens", in_stock=False), item("card", image="/img/card.svg")],
    )
    for _ in range(4):  # cam is followed by lens and card in many sessions
        async with await Client.open(server.ws_url) as c:
            await c.hello()
            for sku in ("cam", "lens", "card"):
                await c.event(sku)
    async with await Client.open(server.ws_url) as c:
        await c.hello(k=5)
        _, recs = await c.event("cam")
        got = {r["item_id"]: r for r in recs["items"]}
        assert "lens" not in got  # out of stock
        assert got["card"]["title"] == "CARD" and got["card"]["image"] == "/img/card.svg"
        assert got["card"]["price"] == 10.0 and got["card"]["in_stock"] is True
        assert set(got) <= {"cam", "lens", "card", "api-a"}  # only catalog items
        request(server, "PUT", "/v1/catalog/items", [item("lens")])  # back in stock
        _, recs = await c.event("cam")
        assert "lens" in [r["item_id"] for r in recs["items"]]
        request(server, "DELETE", "/v1/catalog/items/card")
        _, recs = await c.event("cam")
        assert "card" not in [r["item_id"] for r in recs["items"]]


def test_without_a_token_a_forwarded_request_is_not_local(server: LiverecServer) -> None:
    req = urllib.request.Request(
        server.base + "/v1/catalog/items",
        data=json.dumps({"items": [item("fwd-1")]}).encode(),
        method="PUT",
        headers={"content-type": "application/json", "x-forwarded-for": "203.0.113.9"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    info.value.close()
    assert info.value.code == 403


def test_admin_token_guards_writes_not_reads(tmp_path: Path) -> None:
    srv = LiverecServer("memory://", admin_token=ADMIN).start()
    try:
        body = {"items": [item("t-1")]}
        assert request(srv, "PUT", "/v1/catalog/items", body)[0] == 403
        assert request(srv, "PUT", "/v1/catalog/items", body, token="wrong")[0] == 403
        assert request(srv, "PUT", "/v1/catalog/items", body, token=ADMIN)[0] == 200
        assert request(srv, "GET", "/v1/catalog/items/t-1")[0] == 200
        assert request(srv, "DELETE", "/v1/catalog/items/t-1")[0] == 403
        assert request(srv, "DELETE", "/v1/catalog/items/t-1", token=ADMIN)[0] == 200
    finally:
        srv.stop()


def test_cli_import_reaches_a_running_server(tmp_path: Path) -> None:
    url = f"embedded://{tmp_path}/store.db"
    srv = LiverecServer(url, catalog_poll_s=0.2).start()
    try:
        feed = tmp_path / "items.csv"
        feed.write_text("item_id,title,price,in_stock\ncli-1,Imported,3.5,true\n")
        done = subprocess.run(
            [sys.executable, "-m", "liverec.cli", "catalog", "import", str(feed), "--store", url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "imported 1 items" in done.stderr
        deadline = time.monotonic() + 20
        status = 404
        while status != 200 and time.monotonic() < deadline:
            status, body, _ = request(srv, "GET", "/v1/catalog/items/cli-1")
            time.sleep(0.1)
        assert status == 200 and body["title"] == "Imported" and body["price"] == 3.5
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"item_id": "x"}\n')
        failed = subprocess.run(
            [sys.executable, "-m", "liverec.cli", "catalog", "import", str(bad), "--store", url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert failed.returncode == 2 and "bad.jsonl:1" in failed.stderr
    finally:
        srv.stop()


# --- the demo pages -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_server() -> Iterator[LiverecServer]:
    srv = LiverecServer("memory://", demo="on", demo_warmup_sessions=50).start()
    yield srv
    srv.stop()


def test_demo_pages_render_from_the_catalog(demo_server: LiverecServer) -> None:
    status, home, _ = request(demo_server, "GET", "/demo")
    assert status == 200 and 'data-liverec-item="aurora-15"' in home
    assert 'src="/widget/liverec.js"' in home and 'data-target="#recs"' in home
    status, page, _ = request(demo_server, "GET", "/demo/p/aurora-15-case-sage")
    assert status == 200
    assert '<main id="main" data-liverec-item="aurora-15-case-sage">' in page
    assert "Aurora 15 Silicone Case, Sage" in page and "data-add-to-cart" in page
    status, page, _ = request(demo_server, "GET", "/demo/c/cameras")
    assert status == 200 and page.count('class="card"') == 36
    assert request(demo_server, "GET", "/demo/p/no-such-thing")[0] == 404
    for path in ("/demo/cart", "/demo/checkout", "/feed"):
        assert request(demo_server, "GET", path)[0] == 200
    status, svg, headers = request(demo_server, "GET", "/demo/img/kite-m50.svg")
    assert status == 200 and headers["content-type"].startswith("image/svg+xml")
    assert svg.startswith("<svg")
    status, js, headers = request(demo_server, "GET", "/widget/liverec.js")
    assert status == 200 and headers["access-control-allow-origin"] == "*"
    assert "export" not in js.split("\n", 1)[0]


def test_demo_page_reflects_a_catalog_update(demo_server: LiverecServer) -> None:
    status, body, _ = request(demo_server, "GET", "/v1/catalog/items/pulse-8")
    assert status == 200 and body["in_stock"] is True
    request(demo_server, "PUT", "/v1/catalog/items", [{**body, "in_stock": False}])
    _, page, _ = request(demo_server, "GET", "/demo/p/pulse-8")
    assert "Sold out" in page and "data-add-to-cart" not in page
    request(demo_server, "PUT", "/v1/catalog/items", [body])


def test_no_demo_unless_asked(server: LiverecServer) -> None:
    assert request(server, "GET", "/demo")[0] == 404
    with urllib.request.urlopen(server.base + "/healthz", timeout=5) as r:
        assert r.status == 200
