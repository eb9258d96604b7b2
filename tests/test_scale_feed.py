"""/feed on one process shows every process: two `liverec serve` on one private store,
the operator page on A, the shopper on B (server/feed_relay.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from .servers import LiverecServer
from .test_feed import feed, next_of
from .wsclient import Client


async def _feed_on_a_shows_b(url: str) -> None:
    a = LiverecServer(url, warm_events=0).start()
    b = LiverecServer(url, warm_events=0).start()
    try:
        async with await Client.open(b.ws_url) as shopper:
            welcome, _ = await shopper.hello(placement="cart")
            sid = welcome["session_id"]
            page = await feed(a.ws_url)
            try:
                snapshot = await next_of(page, "snapshot")
                assert snapshot["live_sessions"] == 0  # A's own; B's come with its first beat
                async with asyncio.timeout(15):  # B heard that a page watches, and answered
                    while True:
                        tick = await next_of(page, "tick")
                        if tick["processes"] == 2:
                            break
                assert tick["sessions"] == 1
                _, recs = await shopper.event("relay-1")
                entries: list[dict[str, Any]] = []
                async with asyncio.timeout(15):
                    while not any(e.get("item") == "relay-1" for e in entries):
                        entries += (await next_of(page, "batch"))["entries"]
                shown = next(e for e in entries if e.get("item") == "relay-1")
                assert shown["sid"] == sid and shown["kind"] == "event"
                assert shown["placement"] == "cart" and shown["latency_ms"] > 0
                assert [r["id"] for r in shown["recs"]] == [r["item_id"] for r in recs["items"]][:6]
                async with asyncio.timeout(15):  # B's event in A's per-second figures
                    while (await next_of(page, "tick"))["minute"]["events_per_s"] == 0:
                        pass
                await shopper.close()
                async with asyncio.timeout(15):
                    while True:
                        frame = json.loads(await page.recv())
                        if frame["type"] == "batch" and any(
                            e["kind"] == "close" and e["sid"] == sid for e in frame["entries"]
                        ):
                            break
            finally:
                await page.close()
    finally:
        a.stop()
        b.stop()
    for server in (a, b):
        assert "Traceback" not in server.log(), server.log()


@pytest.mark.parametrize("backend", ["redis", "cluster"])
async def test_a_feed_page_on_one_process_sees_the_events_of_another(
    backend: str, redis_url: str, redis_cluster_url: str
) -> None:
    await _feed_on_a_shows_b(redis_url if backend == "redis" else redis_cluster_url)
