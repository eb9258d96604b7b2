"""Browser benchmark of the widget: its size, and click -> re-rendered recommendations.

Owns: starting `liverec serve --demo on` (memory store) in its own process, driving
headless Debian chromium (Playwright, executable_path, never a browser download)
through a scripted run of clicks on recommended products, and the figures:

* widget size: web/widget/liverec.js raw and gzipped (level 9), bytes;
* click -> rendered: measured in the page, from the click event's timestamp
  (`event.timeStamp`, same clock as `performance.now()`) to the moment the widget has
  swapped the new cards into the DOM (its `liverec:render` event, fired right after
  the swap, for the recs answering that click). The click's navigation is prevented,
  as in a single-page store, so one page takes every click; the time includes the
  socket round trip, the server's work and the widget waiting for the new images to
  decode. Playwright's own overhead is outside the measured span;
* the floor, on the same page and server: a click handler that sends a protocol
  `ping` on its own socket, timed to the `pong` — what the browser itself adds
  after a click (style, paint) before a frame goes out and its answer is handled.

Optional background load: `--shoppers N` runs `liverec simulate` against the same
server meanwhile. Nothing is asserted; read the table.

    .venv/bin/python bench/browser_latency.py                      # 200 clicks
    .venv/bin/python bench/browser_latency.py --clicks 500 --json /tmp/browser.json
    .venv/bin/python bench/browser_latency.py --shoppers 20
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WIDGET = ROOT / "web" / "widget" / "liverec.js"

sys.path.insert(0, str(ROOT))
# the same Chromium, flags and "the widget has drawn the last event" as the widget tests
from tests.widgetsite import ARGS, CHROMIUM, SYNCED  # noqa: E402

INSTRUMENT = """() => {
  window.__lat = [];
  let started = null;
  addEventListener('click', (e) => {
    // the row's cards are in the widget's shadow root: look along the composed path
    const path = e.composedPath();
    if (!path.some((el) => el instanceof Element && el.matches('a[data-liverec-item]'))
        || !path.some((el) => el instanceof Element && el.matches('#recs'))) return;
    e.preventDefault();
    started = e.timeStamp;
  }, true);
  document.querySelector('#recs').addEventListener('liverec:render', (e) => {
    if (started !== null && !e.detail.fromCache && e.detail.forEvent === liverec.lastEventId) {
      window.__lat.push(performance.now() - started);
      started = null;
    }
  });
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`liverec serve --demo on` on a free loopback port, in its own process."""

    def __init__(self, store: str = "memory://", **settings: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="liverec-bench-", suffix=".log")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEREC_")}
        env.update(LIVEREC_LOG_LEVEL="warning", LIVEREC_DEMO="on", LIVEREC_STORE_URL=store)
        env.update({f"LIVEREC_{k.upper()}": v for k, v in settings.items()})
        cmd = [sys.executable, "-m", "liverec.cli", "serve", "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("liverec serve did not start")

    def simulate(self, shoppers: int, seconds: float) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "liverec.cli", "simulate", "--json"]
        cmd += ["--url", f"ws://127.0.0.1:{self.port}/v1/ws", "--shoppers", str(shoppers)]
        cmd += ["--duration", str(seconds)]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def widget_size() -> dict[str, int]:
    raw = WIDGET.read_bytes()
    return {"raw_bytes": len(raw), "gzip_bytes": len(gzip.compress(raw, compresslevel=9))}


FLOOR = """async (url) => {
  const ws = new WebSocket(url);
  await new Promise((r) => { ws.onopen = r; });
  window.__floor = [];
  let started = null;
  ws.onmessage = (m) => {
    if (started !== null && JSON.parse(m.data).type === 'pong') {
      window.__floor.push(performance.now() - started);
      started = null;
    }
  };
  ws.send(JSON.stringify({type: 'hello'}));
  addEventListener('click', (e) => {
    if (!e.target.closest('h1')) return;
    e.preventDefault();
    started = e.timeStamp;
    ws.send('{"type":"ping"}');
  }, true);
}"""


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 0.5), 2),
        "p90_ms": round(percentile(values, 0.9), 2),
        "p99_ms": round(percentile(values, 0.99), 2),
        "max_ms": round(max(values), 2),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(base: str, clicks: int, seed: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    rng = random.Random(seed)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        page.goto(base + "/demo/p/aurora-15")
        page.wait_for_function(SYNCED, timeout=30_000)
        page.evaluate(INSTRUMENT)
        for n in range(clicks):
            ids = page.eval_on_selector_all(
                "#recs .liverec-card:not([hidden]) a[data-liverec-item]",
                "els => els.map(e => e.dataset.liverecItem)",
            )
            page.click(f"#recs a[data-liverec-item='{rng.choice(ids)}']")
            page.wait_for_function(f"() => window.__lat.length > {n}", timeout=30_000)
        latencies: list[float] = page.evaluate("window.__lat")
        page.evaluate(FLOOR, base.replace("http://", "ws://") + "/v1/ws")
        for n in range(max(20, clicks // 2)):
            page.click("h1")
            page.wait_for_function(f"() => window.__floor.length > {n}", timeout=30_000)
        floor: list[float] = page.evaluate("window.__floor")
        version = browser.version
        browser.close()
    return {"recs": summary(latencies), "floor": summary(floor), "chromium": version}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clicks", type=int, default=200)
    parser.add_argument("--shoppers", type=int, default=0, help="background simulated shoppers")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    server = Server()
    sim = None
    try:
        if args.shoppers:
            sim = server.simulate(args.shoppers, 3600)
            time.sleep(3)
        figures = measure(server.base, args.clicks, args.seed)
    finally:
        if sim is not None:
            sim.terminate()
            sim.wait()
        server.stop()
    result = {
        "widget": widget_size(),
        "click_to_render": figures,
        "background_shoppers": args.shoppers,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        },
    }
    w = result["widget"]
    print(f"widget web/widget/liverec.js: {w['raw_bytes']} B raw, {w['gzip_bytes']} B gzipped")
    print(f"chromium {figures['chromium']}, {args.shoppers} background shoppers")
    for name, label in (("recs", "click -> rendered recs"), ("floor", "click -> ping/pong floor")):
        c = figures[name]
        print(
            f"  {label:26} n={c['n']:4}  p50 {c['p50_ms']:6.2f} ms  p90 {c['p90_ms']:6.2f} ms"
            f"  p99 {c['p99_ms']:6.2f} ms  max {c['max_ms']:6.2f} ms"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
