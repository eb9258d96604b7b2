"""Screenshots of the demo store and the live feed for docs/screenshots/.

Owns: starting `liverec serve --demo on` (memory store), letting synthetic shoppers
(`liverec simulate`) fill the feed, browsing like a shopper so that the rows are
personal, and writing home, product and feed at desktop (1280 x 800) and phone
(390 x 844) widths with headless Debian chromium (never a browser download).

    .venv/bin/python bench/screenshots.py                 # writes docs/screenshots/*.png
    .venv/bin/python bench/screenshots.py --out /tmp/shots
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from browser_latency import ARGS, CHROMIUM, SYNCED, Server

ROOT = Path(__file__).resolve().parents[1]
VIEWPORTS = {"desktop": (1280, 800), "phone": (390, 844)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--warm", type=float, default=100.0, help="seconds of shoppers first")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import sync_playwright

    server = Server(feed_window_s="120")  # two minutes of charts, most of them filled
    shoppers = server.simulate(12, args.warm + 120)
    try:
        time.sleep(args.warm)  # the feed's charts fill up meanwhile
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for name, (width, height) in VIEWPORTS.items():
                phone = name == "phone"
                context = browser.new_context(
                    viewport={"width": width, "height": height},
                    device_scale_factor=1,
                    is_mobile=phone,
                    has_touch=phone,
                )
                page = context.new_page()
                # A shopper who looked at a phone and one of its cases, then went home.
                page.goto(server.base + "/demo/p/nimbus-x")
                page.wait_for_function(SYNCED, timeout=30_000)
                page.goto(server.base + "/demo/p/nimbus-x-case-sage")
                page.wait_for_function(SYNCED, timeout=30_000)
                page.goto(server.base + "/demo")
                page.wait_for_function(SYNCED, timeout=30_000)
                page.wait_for_timeout(600)
                page.screenshot(path=str(args.out / f"home-{name}.png"))
                page.goto(server.base + "/demo/p/kite-m50-ii")
                page.wait_for_function(SYNCED, timeout=30_000)
                page.wait_for_timeout(600)
                page.screenshot(path=str(args.out / f"product-{name}.png"), full_page=True)
                page.goto(server.base + "/feed")
                page.wait_for_selector(".event", timeout=30_000)
                page.wait_for_timeout(4000)  # a few ticks and batches
                page.screenshot(path=str(args.out / f"feed-{name}.png"), full_page=phone)
                context.close()
            browser.close()
    finally:
        shoppers.terminate()
        shoppers.wait()
        server.stop()
    for path in sorted(args.out.glob("*.png")):
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


if __name__ == "__main__":
    main()
