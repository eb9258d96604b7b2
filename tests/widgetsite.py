"""Store sites for the widget's browser tests: pages liverec did not style, on their own
origin, with a 15-item catalog.

`ShopSite` is a plain HTTP server on another port (another origin) serving pages built
from the Bootstrap 5 and Bulma CSS packages (vendored under tests/pages/vendor/, MIT)
plus tests/pages/hostile.css, product pictures of mixed aspect ratios, and a copy of
the widget for pages that must work while the liverec server is down.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from string import Template
from typing import Any

import pytest

from .servers import LiverecServer

ROOT = Path(__file__).resolve().parents[1]
PAGES = Path(__file__).resolve().parent / "pages"
WIDGET = ROOT / "web" / "widget" / "liverec.js"
ARTIFACTS = ROOT / "test-artifacts" / "widget"
CHROMIUM = os.environ.get("LIVEREC_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 60_000  # a failure bound only (outcomes are page states): a busy machine
THEMES = ("bootstrap", "bulma")
CATEGORIES = ("tents", "packs", "stoves")
ITEMS = [f"sku-{n}" for n in range(1, 16)]
RESERVED_PX = 310  # the row's height at the default card width (docs/widget.md)

SYNCED = "() => window.liverec && liverec.state === 'open' && liverec.pending === 0 \
&& liverec.renderedFor !== undefined && liverec.renderedFor === liverec.lastEventId"

# Cumulative layout shift as Chrome's metric counts it (shifts without recent input).
CLS_OBSERVER = """
window.__cls = 0; window.__shifts = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    if (e.hadRecentInput) continue;
    window.__cls += e.value;
    window.__shifts.push(e.sources.map((s) => s.node && [
      s.node.getRootNode() instanceof ShadowRoot ? "widget" : "page",
      s.node.id || s.node.className || s.node.nodeName, s.node.src || "",
      JSON.stringify([s.previousRect, s.currentRect])]));
  }
}).observe({type: "layout-shift", buffered: true});
"""
# Two frames and a task: layout shifts of what was drawn so far have been reported.
SETTLED_CLS = """() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(
  () => setTimeout(() => done({cls: window.__cls, shifts: window.__shifts}), 0))))"""


def catalog(shop_origin: str) -> list[dict[str, Any]]:
    """15 items, no `url`: product links come from the page's data-item-url template."""
    return [
        {
            "item_id": sku,
            "title": f"{CATEGORIES[n % 3].title()[:-1]} model {n + 1}"
            + (" with a rather long name that needs two lines" if n % 4 == 0 else ""),
            "price": 19.5 + 7 * n,
            "currency": "EUR",
            "category": CATEGORIES[n % 3],
            "image": f"{shop_origin}/img/{sku}.svg",
        }
        for n, sku in enumerate(ITEMS)
    ]


def put_catalog(srv: LiverecServer, shop_origin: str) -> None:
    import json
    import urllib.request

    req = urllib.request.Request(
        srv.base + "/v1/catalog/items",
        data=json.dumps({"items": catalog(shop_origin)}).encode(),
        method="PUT",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200


def picture(sku: str) -> bytes:
    """A product picture; aspect ratios differ on purpose (wide, tall, square)."""
    n = int(sku.rsplit("-", 1)[1])
    w, h = [(640, 360), (300, 520), (400, 400)][n % 3]
    hue = n * 24 % 360
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}"><rect width="{w}" height="{h}" fill="hsl({hue},45%,78%)"/>'
        f'<circle cx="{w / 2}" cy="{h / 2}" r="{min(w, h) / 3}" fill="hsl({hue},45%,40%)"/>'
        f'<text x="{w / 2}" y="{h / 2 + 12}" font-size="36" text-anchor="middle" '
        f'fill="#fff" font-family="sans-serif">{n}</text></svg>'
    ).encode()


class ShopSite:
    """A store on its own origin: pages registered by path, CSS, pictures, widget copy."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                body, kind = site.resolve(path)
                if body is None:
                    self.send_response(404)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.send_header("cache-control", "no-store")
                if kind.startswith("text/javascript"):
                    self.send_header("access-control-allow-origin", "*")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def resolve(self, path: str) -> tuple[bytes | None, str]:
        if path in self.pages:
            return self.pages[path].encode(), "text/html; charset=utf-8"
        if re.fullmatch(r"/vendor/(bootstrap|bulma)\.min\.css|/hostile\.css", path):
            return (PAGES / path.lstrip("/")).read_bytes(), "text/css"
        found = re.fullmatch(r"/img/(sku-\d+)\.svg", path)
        if found:
            return picture(found.group(1)), "image/svg+xml"
        if path == "/liverec.js":  # a store serving the widget itself
            return WIDGET.read_bytes(), "text/javascript; charset=utf-8"
        return None, ""

    def page(
        self,
        theme: str,
        item: str,
        script: str,
        *,
        head: str = "",
        mark_item: bool = True,
    ) -> str:
        """Register /product/<item> of `theme` carrying `script`; returns its URL."""
        html = Template((PAGES / f"{theme}.html").read_text()).substitute(
            title=f"Product {item}",
            item=item,
            head=head,
            body=script,
            main_attrs=f'data-liverec-item="{item}"' if mark_item else "",
        )
        self.pages[f"/product/{item}"] = html
        return f"{self.origin}/product/{item}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def widget_tag(src: str, **attrs: str) -> str:
    """<script type=module> of the widget with data-* attributes (k, target, ...)."""
    data = {
        "target": "#recs",
        "k": "8",
        "placement": "product",
        "item-url": "/product/{item_id}",
        "title": "You may also like",
        **attrs,
    }
    rendered = " ".join(f'data-{k.replace("_", "-")}="{v}"' for k, v in data.items())
    return f'<script type="module" src="{src}" {rendered}></script>'


def launch_browser(artifacts: Path = ARTIFACTS) -> Iterator[Any]:
    """Debian's Chromium under Playwright (skipped only with LIVEREC_SKIP_BROWSER=1)."""
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        if os.environ.get("LIVEREC_SKIP_BROWSER") == "1":
            pytest.skip("LIVEREC_SKIP_BROWSER=1 and no chromium")
        pytest.fail(f"{CHROMIUM} not found: apt-get install chromium (or run .ci/dev setup)")
    from playwright.sync_api import sync_playwright

    artifacts.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


class Tab:
    """A page in a fresh context: uncaught errors, console lines, sent socket frames,
    and cumulative layout shift recorded from the first byte."""

    def __init__(self, browser: Any, width: int = 1280, height: int = 900) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.context.add_init_script(CLS_OBSERVER)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.console: list[str] = []
        self.sockets: list[str] = []
        self.sent: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", lambda msg: self.console.append(msg.text))
        self.page.on("websocket", self._socket)

    def _socket(self, ws: Any) -> None:
        self.sockets.append(ws.url)
        ws.on("framesent", lambda payload: self.sent.append(str(payload)))

    def synced(self) -> list[str]:
        try:
            self.page.wait_for_function(SYNCED, timeout=WAIT_MS)
        except Exception as exc:  # say where the widget stood, not only "timeout"
            raise AssertionError(f"widget not synced: {self.where()}") from exc
        return self.recs()

    def where(self) -> str:
        """The widget's state, the sockets made and the last console lines and errors."""
        try:
            state = self.page.evaluate(
                "() => window.liverec && {state: liverec.state, pending: liverec.pending, "
                "lastEventId: liverec.lastEventId, renderedFor: liverec.renderedFor}"
            )
        except Exception as exc:  # the page itself is gone
            state = f"unreadable ({exc})"
        return (
            f"{state}; sockets {self.sockets[-5:]}; sent {self.sent[-6:]}; "
            f"console {self.console[-12:]}; errors {self.errors[-5:]}"
        )

    def recs(self) -> list[str]:
        ids: list[str] = self.page.eval_on_selector_all(
            "#recs .liverec-card:not([hidden]) a[data-liverec-item]",
            "els => els.map(e => e.dataset.liverecItem)",
        )
        return ids

    def cls(self) -> float:
        result = self.page.evaluate(SETTLED_CLS)
        assert result["cls"] == 0, result["shifts"]
        return float(result["cls"])

    def close(self) -> None:
        self.context.close()
        assert self.errors == []
