"""GET / on a real server: a page linking what the server offers, on a non-demo
server too (it used to redirect to a 404)."""

from __future__ import annotations

import re
import urllib.request

from .servers import LiverecServer


def links(server: LiverecServer) -> tuple[int, set[str]]:
    with urllib.request.urlopen(server.base + "/", timeout=5) as r:
        page = r.read().decode()
        status = r.status
    return status, set(re.findall(r'href="([^"]+)"', page))


def test_landing_page_without_demo_links_what_is_there() -> None:
    server = LiverecServer("memory://").start()
    try:
        status, found = links(server)
        assert status == 200
        assert {"/feed", "/metrics", "/readyz", "/healthz", "/widget/liverec.js"} <= found
        assert "/demo" not in found  # not served without demo on
        for href in found:  # every link works (the feed page is open from loopback)
            with urllib.request.urlopen(server.base + href, timeout=5) as r:
                assert r.status == 200, href
    finally:
        server.stop()


def test_landing_page_with_demo_links_the_store() -> None:
    server = LiverecServer("memory://", demo="on", demo_warmup_sessions=0).start()
    try:
        status, found = links(server)
        assert status == 200 and "/demo" in found
        with urllib.request.urlopen(server.base + "/demo", timeout=5) as r:
            assert r.status == 200
    finally:
        server.stop()
