"""Impressions and clicks on recommendations, from the widget in a real browser to
/metrics and the operator's feed (headless Chromium, as in test_browser.py)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .servers import LiverecServer
from .test_browser import WAIT_MS, Page
from .test_browser import browser as browser  # the module-scoped Chromium fixture

pytestmark = pytest.mark.browser

# Resolves once the page has laid out and run its IntersectionObserver callbacks.
SETTLED = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => \
setTimeout(r, 0))))"


@pytest.fixture(scope="module")
def server() -> Iterator[LiverecServer]:
    srv = LiverecServer("memory://", demo="on").start()
    yield srv
    srv.stop()


def counter(server: LiverecServer, name: str, model: str, placement: str) -> int:
    """The count of the A/B arm that serves `model` (liverec_model_info names it)."""
    metrics = server.get_text("/metrics")
    arm = re.search(
        rf'^liverec_model_info\{{arm="(\w+)",version="{re.escape(model)}"\}} 1',
        metrics,
        re.MULTILINE,
    )
    assert arm is not None, metrics
    found = re.search(
        rf'^{name}\{{arm="{arm.group(1)}",placement="{placement}"\}} (\S+)$',
        metrics,
        re.MULTILINE,
    )
    return int(float(found.group(1))) if found else 0


def wait_counter(server: LiverecServer, name: str, model: str, placement: str, n: int) -> None:
    """Until the counter reaches n (the server handles the frame a moment after it is sent)."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while counter(server, name, model, placement) < n and time.monotonic() < deadline:
        time.sleep(0.05)


class Frames:
    """The JSON frames the page's widget socket sent and received."""

    def __init__(self, page: Any) -> None:
        self.sockets: list[Any] = []
        self.sent: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []
        page.on("websocket", self._on_socket)

    def _on_socket(self, ws: Any) -> None:
        if ws.url.endswith("/v1/ws"):
            self.sockets.append(ws)
            ws.on("framesent", lambda p: self.sent.append(json.loads(p)))
            ws.on("framereceived", lambda p: self.received.append(json.loads(p)))

    def expect_sent(self, **fields: Any) -> Any:
        """A context manager: the block makes the widget send a frame with these fields."""
        return self.sockets[-1].expect_event(
            "framesent",
            lambda p: fields.items() <= json.loads(p).items(),
            timeout=WAIT_MS,
        )

    def feedback(self) -> list[dict[str, Any]]:
        return [f for f in self.sent if f["type"] == "feedback"]


def test_impression_when_the_row_is_seen_and_click_before_navigation(
    browser: Any, server: LiverecServer
) -> None:
    operator = Page(browser)
    operator.page.goto(server.base + "/feed")
    operator.page.wait_for_selector("[data-status='live']", timeout=WAIT_MS)
    tab = Page(browser, 1280, 560)  # every product page's row starts below the fold
    page = tab.page
    frames = Frames(page)
    page.goto(server.base + "/demo/p/kite-m50")
    cards = tab.synced()
    recs = next(
        f
        for f in frames.received
        if f["type"] == "recs" and f["for_event"] == page.evaluate("liverec.renderedFor")
    )
    model, rid = recs["model"], recs["recs_id"]
    row = page.locator("#recs .liverec-row")
    box = row.bounding_box()
    assert box is not None and box["y"] + box["height"] / 2 > 560  # under half in view
    page.evaluate(SETTLED)
    assert frames.feedback() == []  # drawn but not seen: no impression yet
    assert counter(server, "liverec_rec_impressions_total", model, "product") == 0

    with frames.expect_sent(type="feedback", kind="impression"):
        row.scroll_into_view_if_needed()
    wait_counter(server, "liverec_rec_impressions_total", model, "product", 1)
    assert counter(server, "liverec_rec_impressions_total", model, "product") == 1
    for y in (0, 2000):  # away and back again: still one impression for this list
        page.evaluate(f"window.scrollTo(0, {y})")
        page.evaluate(SETTLED)
    assert frames.feedback() == [{"type": "feedback", "kind": "impression", "recs_id": rid}]

    item = cards[1]
    with frames.expect_sent(type="event", action="click", item_id=item):
        page.click(f"#recs a[data-liverec-item='{item}']")
    page.wait_for_url(f"**/demo/p/{item}")
    click = {"type": "feedback", "kind": "click", "recs_id": rid, "item_id": item}
    sent = [(f["type"], f.get("kind") or f.get("action")) for f in frames.sent]
    assert click in frames.feedback()
    assert sent.index(("feedback", "click")) < sent.index(("event", "click"))  # before it
    wait_counter(server, "liverec_rec_clicks_total", model, "product", 1)
    assert counter(server, "liverec_rec_clicks_total", model, "product") == 1
    # The click's own recs frame may redraw the row while it is still in view before
    # the navigation, and the next page may show its row: each such new list is a
    # legitimate impression of its own. This list counted once (checked above).
    seen = {f["recs_id"] for f in frames.feedback() if f["kind"] == "impression"}
    assert rid in seen
    impressions = counter(server, "liverec_rec_impressions_total", model, "product")
    assert len(seen) <= impressions <= len(seen) + 1

    # The operator's page shows the click-through row for this model and placement.
    cells = f"tr[data-model='{model}'][data-placement='product'] [data-col]"
    operator.page.wait_for_function(
        "sel => document.querySelector(sel)?.textContent === '1'",
        arg=cells.replace("[data-col]", "[data-col=clicks]"),
        timeout=WAIT_MS,
    )
    shown = operator.page.eval_on_selector_all(
        cells, "els => Object.fromEntries(els.map(e => [e.dataset.col, e.textContent]))"
    )
    ctr = f"{100 / impressions:.1f} %"
    assert shown == {"impressions": str(impressions), "clicks": "1", "ctr": ctr, "window": ctr}

    # A list this server no longer knows (e.g. after a restart) is refused quietly.
    tab.synced()
    with frames.sockets[-1].expect_event(
        "framereceived", lambda p: json.loads(p).get("code") == "unknown_recs", timeout=WAIT_MS
    ):
        page.evaluate("liverec.feedback('impression', 'r999')")
    tab.close()  # no uncaught script error on either page
    operator.close()
