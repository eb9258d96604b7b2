"""The widget, the demo store and the live feed in a real browser (headless Chromium).

Debian's chromium, driven by Playwright with `executable_path` pointed at it (never a
browser download). Screenshots of the pages go to test-artifacts/browser/.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from liverec.demo import build_catalog

from .servers import LiverecServer, free_port
from .widgetsite import launch_browser

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "browser"
DEMO = build_catalog()
WAIT_MS = 15_000  # generous: a shared CI machine; speed is measured in bench/, not here

# The widget has shown the recommendations that answer the latest event it sent.
SYNCED = "() => window.liverec && liverec.state === 'open' && liverec.pending === 0 \
&& liverec.renderedFor !== undefined && liverec.renderedFor === liverec.lastEventId"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_browser(ARTIFACTS)


@pytest.fixture(scope="module")
def server() -> Iterator[LiverecServer]:
    srv = LiverecServer("memory://", demo="on").start()
    yield srv
    srv.stop()


class ShopSite:
    """Another site on this machine (its own origin) serving one page, `html`."""

    def __init__(self) -> None:
        self.html = ""
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = site.html.encode()
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


class Page:
    """A page in a fresh browser context that records uncaught script errors."""

    def __init__(self, browser: Any, width: int = 1280, height: int = 800) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def recs(self, target: str = "#recs") -> list[str]:
        ids: list[str] = self.page.eval_on_selector_all(
            f"{target} .liverec-card:not([hidden]) a[data-liverec-item]",
            "els => els.map(e => e.dataset.liverecItem)",
        )
        return ids

    def synced(self, target: str = "#recs") -> list[str]:
        self.page.wait_for_function(SYNCED, timeout=WAIT_MS)
        return self.recs(target)

    def close(self) -> None:
        self.context.close()
        assert self.errors == []


def test_clicking_products_changes_recs_to_related_items(
    browser: Any, server: LiverecServer
) -> None:
    tab = Page(browser)
    page = tab.page
    page.goto(server.base + "/demo")
    home = tab.synced()
    assert len(home) == 8 and all(DEMO.products[i].item.in_stock for i in home)
    page.screenshot(path=str(ARTIFACTS / "home.png"))

    page.click("ul.grid a[data-liverec-item='aurora-15']")  # a phone, from the home grid
    page.wait_for_url("**/demo/p/aurora-15")
    phone = tab.synced()
    assert phone != home
    related = DEMO.related("aurora-15")
    assert set(phone) & related, phone  # its cases, chargers, cables
    assert "aurora-15" not in phone
    page.screenshot(path=str(ARTIFACTS / "product.png"), full_page=True)

    accessory = next(i for i in phone if i in related)  # follow a recommendation
    page.click(f"#recs a[data-liverec-item='{accessory}']")
    page.wait_for_url(f"**/demo/p/{accessory}")
    after = tab.synced()
    assert after != phone
    assert set(after) & DEMO.related(accessory), after

    # In place: an add to cart re-renders the same cards, without a new page.
    first = page.query_selector("#recs .liverec-card")
    event_before = page.evaluate("liverec.lastEventId")
    page.click("[data-add-to-cart]")
    page.wait_for_function(f"() => liverec.lastEventId !== {event_before!r}", timeout=WAIT_MS)
    tab.synced()
    assert first is not None and first.evaluate("el => el.isConnected")
    assert page.inner_text("[data-cart-count]") == "1"
    tab.close()


def test_widget_reconnects_resumes_and_loses_no_event(browser: Any, tmp_path: Path) -> None:
    url, port = f"embedded://{tmp_path}/store.db", free_port()
    srv = LiverecServer(url, port=port, demo="on").start()
    tab = Page(browser)
    page = tab.page
    try:
        page.goto(srv.base + "/demo/p/kite-m50")
        before = tab.synced()
        session_id = page.evaluate("liverec.sessionId")
        assert session_id and before

        srv.stop()  # SIGTERM: the server closes the socket (1012) and goes away
        page.wait_for_function("() => liverec.state !== 'open'", timeout=WAIT_MS)
        page.click("[data-add-to-cart]")  # the store still works...
        page.evaluate("liverec.track('view', 'kite-m50-lens-35')")
        assert page.inner_text("[data-cart-count]") == "1"
        assert page.evaluate("liverec.pending") == 2  # ...and the widget keeps the events
        assert page.inner_text("h1") == "Kite M50"
        assert tab.recs() == before  # the row stays as it was

        srv = LiverecServer(url, port=port, demo="on").start()  # same port, same store
        after = tab.synced()
        assert page.evaluate("liverec.sessionId") == session_id
        assert page.evaluate("liverec.resumed") is True
        status, body = srv.get_json(f"/v1/sessions/{session_id}")
        assert status == 200
        assert body["items"] == ["kite-m50", "kite-m50", "kite-m50-lens-35"]  # none lost
        assert set(after) & DEMO.related("kite-m50-lens-35")
    finally:
        tab.close()
        srv.stop()


def test_feed_shows_each_event_with_its_recs(browser: Any, server: LiverecServer) -> None:
    operator = Page(browser, 1280, 800)
    operator.page.goto(server.base + "/feed")
    operator.page.wait_for_selector("[data-status='live']", timeout=WAIT_MS)
    shopper = Page(browser)
    shopper.page.goto(server.base + "/demo/p/vega-14")
    recs = shopper.synced()
    row = operator.page.wait_for_selector(".event[data-item='vega-14']", timeout=WAIT_MS)
    assert row is not None
    text = row.inner_text()
    assert "Vega 14" in text and "view" in text and " ms" in text
    assert "demo-gru4rec" in text  # the feed names the demo's session model
    shown = row.eval_on_selector_all(".rec", "els => els.map(e => e.title)")
    assert shown == recs[: len(shown)] and shown  # the same list the widget drew
    sid = shopper.page.evaluate("liverec.sessionId")
    assert operator.page.inner_text(".sessions").count(sid[:8]) == 1
    operator.page.wait_for_function(
        "() => document.querySelector('[data-kpi=p99]').textContent.endsWith('ms')",
        timeout=WAIT_MS,
    )
    operator.page.screenshot(path=str(ARTIFACTS / "feed.png"))
    shopper.close()
    operator.close()


def test_one_script_tag_on_another_sites_page(browser: Any) -> None:
    """A store on its own origin: the module loads cross-origin, the socket is allowed by
    `allowed_origins`, and the row draws the catalog's cards inside the store's page."""
    shop = ShopSite()
    srv = LiverecServer("memory://", demo="on", allowed_origins=shop.origin).start()
    shop.html = f"""<!doctype html><html lang="en"><head><title>Shop</title></head><body>
      <main data-liverec-item="echo-studio"><h1>Echo Studio</h1></main>
      <div id="row" style="--liverec-accent: rgb(200, 0, 80)"></div>
      <script type="module" src="{srv.base}/widget/liverec.js" data-target="#row"
              data-k="4" data-placement="product" data-title="You may also like"></script>
    </body></html>"""
    tab = Page(browser)
    page = tab.page
    try:
        page.goto(f"{shop.origin}/p/echo-studio")
        recs = tab.synced("#row")
        assert len(recs) == 4 and set(recs) & DEMO.related("echo-studio")
        assert page.inner_text("#row h2") == "You may also like"
        first = page.query_selector("#row .liverec-card a")
        assert first is not None
        # the catalog's relative URLs resolve against the store's page
        assert first.evaluate("a => a.href") == f"{shop.origin}/demo/p/{recs[0]}"
        accent = page.eval_on_selector(
            "#row .liverec-link", "a => getComputedStyle(a).getPropertyValue('--_accent').trim()"
        )
        assert accent == "rgb(200, 0, 80)"  # themed by the store's custom property
        status, body = srv.get_json(f"/v1/sessions/{page.evaluate('liverec.sessionId')}")
        assert status == 200 and body["items"] == ["echo-studio"]
    finally:
        tab.close()
        srv.stop()
        shop.close()


def test_session_resumes_within_30_idle_minutes_and_not_after(
    browser: Any, server: LiverecServer
) -> None:
    tab = Page(browser)
    page = tab.page
    page.goto(server.base + "/demo/p/drift-buds")
    tab.synced()
    first = page.evaluate("liverec.sessionId")
    age = "(m) => { const s = JSON.parse(localStorage.getItem('liverec:session')); \
s.t = Date.now() - m * 60000; localStorage.setItem('liverec:session', JSON.stringify(s)); }"
    page.evaluate(age, 29)
    page.reload()
    tab.synced()
    assert page.evaluate("liverec.sessionId") == first
    assert page.evaluate("liverec.resumed") is True
    page.evaluate(age, 31)
    page.reload()
    tab.synced()
    assert page.evaluate("liverec.sessionId") != first  # a new visit, a new session
    assert page.evaluate("liverec.resumed") is False
    tab.close()


def _purchases(server: LiverecServer) -> int:
    metrics = server.get_text("/metrics")
    line = next(
        (
            x
            for x in metrics.splitlines()
            if x.startswith('liverec_events_total{action="purchase"}')
        ),
        None,
    )
    return int(float(line.split()[-1])) if line else 0


def test_cart_and_checkout_send_add_remove_and_purchase(
    browser: Any, server: LiverecServer
) -> None:
    tab = Page(browser, 390, 844)  # a phone
    page = tab.page
    bought_before = _purchases(server)
    for sku in ("glide-9", "glide-9-socks"):
        page.goto(f"{server.base}/demo/p/{sku}")
        tab.synced()
        page.click("[data-add-to-cart]")
    page.goto(server.base + "/demo/cart")
    assert page.locator(".line").count() == 2
    page.click(".line:nth-child(2) .remove")  # remove_from_cart
    assert page.locator(".line").count() == 1 and page.inner_text("[data-cart-count]") == "1"
    tab.synced()
    page.click("text=Checkout")
    page.wait_for_url("**/demo/checkout")
    page.click("button[type=submit]")
    page.wait_for_selector("[data-done]:not([hidden])", timeout=WAIT_MS)
    assert page.inner_text("[data-order]").startswith("KS-")
    assert page.locator("[data-cart-count]").is_hidden()
    page.wait_for_function("() => liverec.pending === 0", timeout=WAIT_MS)
    status, body = server.get_json(f"/v1/sessions/{page.evaluate('liverec.sessionId')}")
    assert status == 200
    # views, adds, the removal and the purchase, in order
    assert body["items"] == [
        "glide-9", "glide-9", "glide-9-socks", "glide-9-socks", "glide-9-socks", "glide-9",
    ]  # fmt: skip
    assert _purchases(server) == bought_before + 1
    tab.close()
