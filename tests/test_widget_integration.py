"""The widget wired into a store as docs/widget.md says, in headless Chromium, on store
pages from another origin: GA4 dataLayer pushes and GA4-shaped track() calls become
events; a logged-in shopper's hello carries the token; a server that is down breaks
nothing and loses no event (the stub snippet keeps calls when the script could not
load; the outbox keeps them when the socket cannot open); the viewed item never shows
in its own row, the previous page's list included; a refused origin is named in the
debug output and the widget stops retrying.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liverec.identity import mint_token

from .servers import LiverecServer, free_port
from .widgetsite import (
    ITEMS,
    ROOT,
    WAIT_MS,
    ShopSite,
    Tab,
    catalog,
    put_catalog,
    widget_tag,
)

pytestmark = pytest.mark.browser

SECRET = secrets.token_urlsafe(48)
DOCS = (ROOT / "docs" / "widget.md").read_text()


def stub_snippet() -> str:
    """The stub exactly as docs/widget.md prints it (the block after its marker)."""
    found = re.search(r"<!-- stub -->\s*```html\n(.*?)```", DOCS, re.S)
    assert found, "docs/widget.md lost its stub snippet"
    return found.group(1)


def start(shop: ShopSite, port: int | None = None, **settings: Any) -> LiverecServer:
    settings.setdefault("allowed_origins", shop.origin)
    srv = LiverecServer("memory://", port=port, jwt_secret=SECRET, **settings).start()
    put_catalog(srv, shop.origin)
    return srv


def start_with_catalog(shop: ShopSite, port: int, store: Path) -> LiverecServer:
    """A server on `port` whose catalog is in its store before it takes a socket: a
    widget that reconnects at once gets titled lists (with `start`, its first recs
    could come before the catalog's PUT, and nothing titled is drawn until the next
    event). The store file keeps what earlier servers on it recorded."""
    items = store.with_suffix(".items.jsonl")
    items.write_text("".join(json.dumps(it) + "\n" for it in catalog(shop.origin)))
    url = f"embedded://{store}"
    cmd = [sys.executable, "-m", "liverec.cli", "catalog", "import", str(items), "--store", url]
    subprocess.run([*cmd, "--quiet"], check=True, capture_output=True, timeout=120)
    return LiverecServer(url, port=port, jwt_secret=SECRET, allowed_origins=shop.origin).start()


@pytest.fixture(scope="module")
def server(shop: ShopSite) -> Iterator[LiverecServer]:
    srv = start(shop)
    yield srv
    srv.stop()


def counts(srv: LiverecServer) -> dict[str, int]:
    found = re.findall(
        r'^liverec_events_total\{action="(\w+)"\} (\S+)$', srv.get_text("/metrics"), re.M
    )
    return {action: int(float(n)) for action, n in found}


def session_items(srv: LiverecServer, sid: str, token: str | None = None) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    headers = {"authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(f"{srv.base}/v1/sessions/{sid}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


GA4_HEAD = """<script>
window.dataLayer = window.dataLayer || [];
function gtag() { dataLayer.push(arguments); }
gtag("js", new Date());
gtag("config", "G-TEST");
dataLayer.push({ ecommerce: null });
dataLayer.push({ event: "view_item", ecommerce: { currency: "EUR", value: 40.5,
  items: [{ item_id: "sku-4", item_name: "Tent model 4", price: 40.5 }] } });
</script>"""


def test_ga4_datalayer_and_ga4_shaped_track_calls_become_events(
    chromium: Any, shop: ShopSite, server: LiverecServer
) -> None:
    """The store's tracking code is untouched: the widget follows its dataLayer."""
    url = shop.page(
        "bootstrap",
        "sku-4",
        widget_tag(f"{server.base}/widget/liverec.js", datalayer="", debug=""),
        head=GA4_HEAD,
        mark_item=False,  # a GA4 store: the view comes from its view_item push
    )
    tab = Tab(chromium)
    page = tab.page
    before = counts(server)
    page.goto(url)
    recs = tab.synced()
    assert recs and "sku-4" not in recs
    page.evaluate("""() => {
      gtag("event", "add_to_cart", { currency: "EUR", items: [{ item_id: "sku-4", quantity: 1 }] });
      dataLayer.push({ event: "gtm.click" });
      dataLayer.push({ ecommerce: null });
      dataLayer.push({ event: "begin_checkout", ecommerce: { items: [{ item_id: "sku-4" }] } });
      dataLayer.push({ event: "purchase", ecommerce: { transaction_id: "T-1", value: 99,
        items: [{ item_id: "sku-4" }, { item_id: "sku-9" }] } });
    }""")
    page.wait_for_function(
        "() => liverec.pending === 0 && liverec.state === 'open'", timeout=WAIT_MS
    )
    # track() takes GA4 shapes and names; names without a liverec action do not throw.
    sent = page.evaluate("""() => [
      liverec.track("select_item", { items: [{ item_id: "sku-11", item_list_id: "r1" }] }),
      liverec.track("remove_from_cart", [{ item_id: "sku-9" }]),
      liverec.track("begin_checkout", { items: [{ item_id: "sku-4" }] }),
      liverec.track("view_item_list", { items: [] }),
      liverec.track("add_to_cart", { item_id: "sku-13" }),
    ]""")
    assert sent == [1, 1, 0, 0, 1]
    tab.synced()
    # A tag manager loaded later installs its own push over the widget's: still followed.
    last = page.evaluate("liverec.lastEventId")
    page.evaluate("""() => {
      dataLayer.push = function () { return Array.prototype.push.apply(dataLayer, arguments); };
      dataLayer.push({ event: "add_to_cart", ecommerce: { items: [{ item_id: "sku-14" }] } });
    }""")
    page.wait_for_function("(last) => liverec.lastEventId !== last", arg=last, timeout=WAIT_MS)
    tab.synced()
    sid = page.evaluate("liverec.sessionId")
    status, body = session_items(server, sid)
    assert status == 200
    assert body["items"] == [
        "sku-4",
        "sku-4",
        "sku-4",
        "sku-9",
        "sku-11",
        "sku-9",
        "sku-13",
        "sku-14",
    ]
    after = counts(server)
    grew = {a: after.get(a, 0) - before.get(a, 0) for a in after}
    assert {a: n for a, n in grew.items() if n} == {
        "view": 1,
        "add_to_cart": 3,
        "purchase": 2,
        "click": 1,
        "remove_from_cart": 1,
    }
    debug = "\n".join(tab.console)
    assert 'no liverec action for "begin_checkout"' in debug
    assert 'no liverec action for "view_item_list"' in debug
    tab.close()


def test_logged_in_shoppers_hello_carries_their_token(
    chromium: Any, shop: ShopSite, server: LiverecServer
) -> None:
    token = mint_token("user-42", SECRET)
    url = shop.page(
        "bulma", "sku-5", widget_tag(f"{server.base}/widget/liverec.js", user_token=token)
    )
    tab = Tab(chromium)
    page = tab.page
    page.goto(url)
    tab.synced()
    hello = json.loads(tab.sent[0])
    assert hello["type"] == "hello" and hello["user_token"] == token
    sid = page.evaluate("liverec.sessionId")
    # The server holds the session as user-42's: only that user's token reads it.
    assert session_items(server, sid, token) == (200, {"session_id": sid, "items": ["sku-5"]})
    assert session_items(server, sid)[0] == 403
    assert session_items(server, sid, mint_token("user-7", SECRET))[0] == 403
    tab.close()


def test_set_user_token_after_login_says_hello_again(
    chromium: Any, shop: ShopSite, server: LiverecServer
) -> None:
    url = shop.page("bootstrap", "sku-6", widget_tag(f"{server.base}/widget/liverec.js"))
    tab = Tab(chromium)
    page = tab.page
    page.goto(url)
    tab.synced()
    anonymous = page.evaluate("liverec.sessionId")
    assert "user_token" not in json.loads(tab.sent[0])
    token = mint_token("user-77", SECRET)
    page.evaluate("(t) => liverec.setUserToken(t)", token)  # the store's login succeeded
    page.wait_for_function("() => liverec.state === 'open'", timeout=WAIT_MS)
    page.evaluate("liverec.track('add_to_cart', 'sku-6')")
    tab.synced()
    hellos = [json.loads(f) for f in tab.sent if '"hello"' in f]
    assert len(hellos) == 2 and len(tab.sockets) == 2
    assert hellos[1]["user_token"] == token and hellos[1]["session_id"] == anonymous
    assert session_items(server, anonymous, token) == (
        200,
        {"session_id": anonymous, "items": ["sku-6", "sku-6"]},
    )
    # Logout: a new anonymous session (the old one may belong to the user now).
    page.evaluate("liverec.setUserToken(null)")
    page.wait_for_function(
        f"() => liverec.state === 'open' && liverec.sessionId !== {anonymous!r}", timeout=WAIT_MS
    )
    last = json.loads([f for f in tab.sent if '"hello"' in f][-1])
    assert "user_token" not in last and "session_id" not in last
    tab.close()


def test_first_visit_with_the_server_down_breaks_nothing_and_loses_nothing(
    chromium: Any, shop: ShopSite
) -> None:
    """The script itself cannot load: the stub keeps the page's calls, in the tab's
    sessionStorage, until a page where it loads."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    for sku in ("sku-7", "sku-8"):
        shop.page("bulma", sku, widget_tag(f"{base}/widget/liverec.js"), head=stub_snippet())
    tab = Tab(chromium)
    page = tab.page
    page.goto(f"{shop.origin}/product/sku-7")
    page.click("#add")  # onclick="liverec.track('add_to_cart', 'sku-7')": no ReferenceError
    page.click("#add")
    assert page.evaluate("Array.isArray(liverec) && typeof liverec.track") == "function"
    tab.cls()  # the reserved space stays as it was; nothing moved
    assert tab.errors == []
    srv = start(shop, port=port)
    try:
        page.goto(f"{shop.origin}/product/sku-8")
        tab.synced()
        status, body = session_items(srv, page.evaluate("liverec.sessionId"))
        assert status == 200 and body["items"] == ["sku-7", "sku-7", "sku-8"]
        assert counts(srv)["add_to_cart"] == 2
    finally:
        tab.close()
        srv.stop()


def test_first_visit_with_the_socket_down_keeps_space_and_events(
    chromium: Any, shop: ShopSite, tmp_path: Path
) -> None:
    """The store serves the widget itself and the liverec server is down: the row
    blanks after a while without moving anything, and the events wait for the server."""
    port = free_port()
    tag = widget_tag("/liverec.js", server=f"http://127.0.0.1:{port}", max_backoff_ms="500")
    url = shop.page("bulma", "sku-14", tag)
    tab = Tab(chromium)
    page = tab.page
    srv = None
    try:
        page.goto(url)
        page.click("#add")
        assert page.evaluate("liverec.pending") == 2  # the view and the add
        # nothing came: the row goes blank (after 6 s) and keeps its space
        page.wait_for_selector("#recs .liverec.is-idle", state="attached", timeout=WAIT_MS)
        assert page.eval_on_selector("#recs .liverec", "s => getComputedStyle(s).visibility") == (
            "hidden"
        )
        tab.cls()
        assert page.evaluate("liverec.state") != "refused"  # down is not refused: it retries
        srv = start_with_catalog(shop, port, tmp_path / "shop.db")
        recs = tab.synced()
        assert len(recs) == 8 and "sku-14" not in recs
        status, body = session_items(srv, page.evaluate("liverec.sessionId"))
        assert status == 200 and body["items"] == ["sku-14", "sku-14"]
        tab.cls()
    finally:
        tab.close()
        if srv is not None:
            srv.stop()


def test_server_down_later_keeps_events_and_the_viewed_item_out_of_the_cached_row(
    chromium: Any, shop: ShopSite, tmp_path: Path
) -> None:
    """The store serves the widget itself; the liverec server goes away between pages."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    tag = widget_tag("/liverec.js", server=base, max_backoff_ms="500")
    for sku in ITEMS:
        shop.page("bootstrap", sku, tag)
    srv = start_with_catalog(shop, port, tmp_path / "shop.db")
    tab = Tab(chromium)
    page = tab.page
    try:
        page.goto(f"{shop.origin}/product/sku-1")
        shown = tab.synced()
        viewed = shown[0]
        srv.stop()
        page.goto(f"{shop.origin}/product/{viewed}")  # the previous page's list, cached
        page.wait_for_selector("#recs[data-liverec-for]", state="attached", timeout=WAIT_MS)
        cached = tab.recs()
        assert viewed not in cached and set(cached) == set(shown) - {viewed}
        page.click("#add")
        assert page.evaluate("liverec.pending") == 2  # the view and the add, kept
        # The widget has tried the server that is down: a socket was made (it retries
        # every max_backoff_ms at most while down, so waiting for one cannot miss it),
        # and that attempt is over. Its first attempt may come after this page loaded,
        # so the state alone ("closed" before any attempt) would not tell.
        while not tab.sockets:
            page.wait_for_event("websocket", timeout=WAIT_MS)
        page.wait_for_function("() => liverec.state !== 'connecting'", timeout=WAIT_MS)
        assert page.evaluate("liverec.pending") == 2  # still kept
        tab.cls()
        srv = start_with_catalog(shop, port, tmp_path / "shop.db")  # back, on the same store
        tab.synced()  # the widget reconnected on its own and resumed its session
        status, body = session_items(srv, page.evaluate("liverec.sessionId"))
        assert status == 200 and body["items"] == ["sku-1", viewed, viewed]
        assert page.evaluate("liverec.state") == "open"
    finally:
        tab.close()
        srv.stop()


def test_refused_origin_is_named_and_retries_stop(chromium: Any, shop: ShopSite) -> None:
    srv = start(shop, allowed_origins="http://shop.example")  # not this shop's origin
    tag = widget_tag(f"{srv.base}/widget/liverec.js", debug="", max_backoff_ms="400")
    url = shop.page("bulma", "sku-12", tag)
    tab = Tab(chromium)
    page = tab.page
    try:
        page.goto(url)
        page.wait_for_function("() => liverec.state === 'refused'", timeout=WAIT_MS)
        assert len(tab.sockets) == 4  # REFUSALS_MAX attempts, then no more
        said = "\n".join(tab.console)
        assert "refused by server (origin not allowed?)" in said and shop.origin in said
        assert "stopped retrying" in said
        assert page.evaluate("liverec.pending") == 1  # the view is kept, not thrown away
        page.evaluate("liverec.reconnect()")  # e.g. after the operator fixed the setting
        page.wait_for_function("() => liverec.state === 'refused'", timeout=WAIT_MS)
        assert len(tab.sockets) == 8
    finally:
        tab.close()
        srv.stop()


def test_an_error_page_from_a_proxy_is_an_outage_not_a_refusal(
    chromium: Any, shop: ShopSite
) -> None:
    """A proxy in front of a stopped server answers the upgrade and every URL with an
    error page (here: the shop's own server, 404 under /proxy/): the widget keeps
    retrying past the refusal limit, so it is there again when the backend is."""
    tag = widget_tag("/liverec.js", server=f"{shop.origin}/proxy/", max_backoff_ms="300")
    url = shop.page("bootstrap", "sku-15", tag)
    tab = Tab(chromium)
    page = tab.page
    try:
        page.goto(url)
        while len(tab.sockets) < 6:  # more than the 4 refusals after which it would stop
            page.wait_for_event("websocket", timeout=WAIT_MS)
        assert page.evaluate("liverec.state") != "refused"
        assert not any("refused by server" in line for line in tab.console)
    finally:
        tab.close()
