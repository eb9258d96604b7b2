"""The widget on store pages liverec did not style (Bootstrap 5 and Bulma, with hostile
rules on top), served from another origin, in headless Chromium.

Day one (a catalog, no shopper yet) shows a full row; nothing moves (cumulative layout
shift 0); the store's CSS does not reach the cards; pictures of any shape sit in the
same square; product links come from the URL template; the row can be scrolled when
cards overflow; keyboard and screen-reader use. Screenshots go to
test-artifacts/widget/, and to docs/screenshots/ with LIVEREC_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from .servers import LiverecServer
from .widgetsite import (
    ARTIFACTS,
    ITEMS,
    RESERVED_PX,
    ROOT,
    THEMES,
    WAIT_MS,
    ShopSite,
    Tab,
    put_catalog,
    widget_tag,
)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(shop: ShopSite) -> Iterator[LiverecServer]:
    srv = LiverecServer("memory://", allowed_origins=shop.origin).start()
    put_catalog(srv, shop.origin)
    yield srv
    srv.stop()


def save(tab: Tab, name: str) -> None:
    path = ARTIFACTS / f"{name}.png"
    tab.page.screenshot(path=str(path), full_page=True)
    if os.environ.get("LIVEREC_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(path, ROOT / "docs" / "screenshots" / f"{name}.png")


def script_src(server: LiverecServer, theme: str) -> str:
    """Bootstrap loads the stable URL, Bulma the content-hashed one from the manifest."""
    if theme == "bootstrap":
        return f"{server.base}/widget/liverec.js"
    status, manifest = server.get_json("/widget/manifest.json")
    assert status == 200
    return f"{server.base}/widget/{manifest['liverec.js']}"


STYLE = """(el) => { const s = getComputedStyle(el);
  return {size: s.fontSize, weight: s.fontWeight, color: s.color, transform: s.textTransform,
          spacing: s.letterSpacing, deco: s.textDecorationLine, style: s.fontStyle,
          words: s.wordSpacing}; }"""
BOXES = """els => els.map(e => { const r = e.getBoundingClientRect();
  return {x: r.x, y: r.y, w: r.width, h: r.height}; })"""


@pytest.mark.parametrize("theme", THEMES)
def test_day_one_row_is_full_still_and_untouched_by_the_theme(
    chromium: Any, shop: ShopSite, server: LiverecServer, theme: str
) -> None:
    part = "<style>#recs liverec-recs::part(price) { color: rgb(0, 110, 60); }</style>"
    url = shop.page(theme, "sku-3", widget_tag(script_src(server, theme)), head=part)
    tab = Tab(chromium)
    page = tab.page
    page.goto(url)
    recs = tab.synced()
    # Day one: a full row of catalog items, never the product being viewed.
    assert len(recs) == 8 and "sku-3" not in recs and set(recs) <= set(ITEMS), recs
    tab.cls()  # nothing moved: the page reserved the row's height, the row filled it
    host = page.eval_on_selector("#recs liverec-recs", "e => e.getBoundingClientRect().height")
    assert abs(host - RESERVED_PX) < 1, host  # the height docs/widget.md tells stores to reserve

    # The store's `div, a {font-size:18px !important}`, `h2 {font-size:44px ...}`,
    # `* {line-height: 2.2 !important}`... do not reach the cards.
    name = page.eval_on_selector("#recs .liverec-name", STYLE)
    assert (name["size"], name["weight"], name["transform"]) == ("14px", "400", "none")
    assert (name["style"], name["words"]) == ("normal", "0px")  # `main, section {...}`
    title = page.eval_on_selector("#recs .liverec-title", STYLE)
    assert (title["size"], title["transform"], title["spacing"]) == ("20px", "none", "normal")
    assert title["color"] != "rgb(128, 0, 128)"
    # ...while the store's deliberate ::part() rules do
    assert page.eval_on_selector("#recs .liverec-price", STYLE)["color"] == "rgb(0, 110, 60)"
    link = page.locator("#recs .liverec-link").first
    before = link.evaluate(STYLE)
    link.hover()
    hovered = link.evaluate(STYLE)
    assert hovered["color"] == before["color"] != "rgb(255, 0, 0)"  # `a:hover {color:red}`
    assert hovered["deco"] == "none"

    # Pictures (wide, tall and square ones) fill the same square; titles line up.
    frames = page.eval_on_selector_all("#recs .liverec-card:not([hidden]) .liverec-img", BOXES)
    images = page.eval_on_selector_all("#recs .liverec-card:not([hidden]) img", BOXES)
    names = page.eval_on_selector_all("#recs .liverec-card:not([hidden]) .liverec-name", BOXES)
    assert all(abs(f["w"] - f["h"]) < 0.5 and abs(f["w"] - frames[0]["w"]) < 0.5 for f in frames)
    assert all(
        abs(i["w"] - f["w"]) < 0.5 and abs(i["h"] - f["h"]) < 0.5
        for i, f in zip(images, frames, strict=True)
    )
    assert len({round(n["y"], 1) for n in names}) == 1, names
    assert page.eval_on_selector_all(
        "#recs .liverec-card:not([hidden]) img",
        "els => els.every(i => i.naturalWidth > 0 && \
getComputedStyle(i).objectFit === 'cover')",
    )

    # Links from the template (the catalog has no `url`), resolved on the store's origin.
    hrefs = page.eval_on_selector_all(
        "#recs .liverec-card:not([hidden]) a", "els => els.map(a => a.href)"
    )
    assert hrefs == [f"{shop.origin}/product/{sku}" for sku in recs]

    # Eight cards do not fit beside each other: the arrow says there are more.
    assert page.eval_on_selector("#recs .liverec-row", "r => r.scrollWidth > r.clientWidth")
    assert page.locator("#recs .liverec-next").is_visible()
    assert page.locator("#recs .liverec-prev").is_hidden()
    page.mouse.move(0, 0)
    save(tab, f"widget-{theme}-desktop")

    # Screen readers: a region named by its heading, a list of 8 items, named links.
    region = page.get_by_role("region", name="You may also like")
    assert region.count() == 1
    assert region.get_by_role("list").get_by_role("listitem").count() == 8
    first_title = page.inner_text("#recs .liverec-name")
    assert region.get_by_role("link").first.get_attribute("href") is not None
    assert region.get_by_role("link", name=first_title).count() == 1
    # Keyboard: Tab from the last button of the page reaches the first card, with a ring.
    page.focus("#buy")
    page.keyboard.press("Tab")
    focused = page.evaluate(
        "() => { const a = document.querySelector('liverec-recs').shadowRoot.activeElement;"
        " return a && {item: a.dataset.liverecItem, ring: getComputedStyle(a).outlineStyle}; }"
    )
    assert focused == {"item": recs[0], "ring": "solid"}
    page.keyboard.press("Tab")
    assert (
        page.evaluate(
            "() => document.querySelector('liverec-recs').shadowRoot"
            ".activeElement.dataset.liverecItem"
        )
        == recs[1]
    )
    tab.close()


@pytest.mark.parametrize("theme", THEMES)
def test_phone_width_scrolls_with_the_arrows(
    chromium: Any, shop: ShopSite, server: LiverecServer, theme: str
) -> None:
    url = shop.page(theme, "sku-10", widget_tag(script_src(server, theme)))
    tab = Tab(chromium, 390, 844)
    page = tab.page
    page.goto(url)
    recs = tab.synced()
    assert len(recs) == 8 and "sku-10" not in recs
    tab.cls()
    page.locator("#recs").scroll_into_view_if_needed()
    row = "#recs .liverec-row"
    assert page.eval_on_selector(row, "r => r.scrollLeft") == 0
    assert page.locator("#recs .liverec-prev").is_hidden()
    page.locator("#recs .liverec-next").click()
    page.wait_for_function(
        "() => document.querySelector('liverec-recs').shadowRoot"
        ".querySelector('.liverec-row').scrollLeft > 100",
        timeout=WAIT_MS,
    )
    page.locator("#recs .liverec-prev").wait_for(state="visible", timeout=WAIT_MS)
    page.locator("#recs .liverec-prev").click()
    page.wait_for_function(
        "() => document.querySelector('liverec-recs').shadowRoot"
        ".querySelector('.liverec-row').scrollLeft === 0",
        timeout=WAIT_MS,
    )
    page.locator("#recs .liverec-prev").wait_for(state="hidden", timeout=WAIT_MS)
    page.evaluate("window.scrollTo(0, 0)")
    save(tab, f"widget-{theme}-phone")
    tab.close()
