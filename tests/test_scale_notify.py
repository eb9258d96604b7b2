"""Catalog changes reach every process through pub/sub, not at the next poll."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import pytest

from .servers import LiverecServer

DEADLINE_S = 20.0  # far below catalog_poll_s below: only a notice can make it


async def _change_on_a_is_seen_on_b(url: str) -> None:
    a = LiverecServer(url, catalog_poll_s=3600).start()
    b = LiverecServer(url, catalog_poll_s=3600).start()
    try:
        item = {"item_id": f"sku-{time.monotonic_ns()}", "title": "Lens cap", "price": 9.5}
        status, reply = _put(a, {"items": [item]})
        assert status == 200, reply
        deadline = time.monotonic() + DEADLINE_S
        while True:
            status, got = b.get_json(f"/v1/catalog/items/{item['item_id']}")
            if status == 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert status == 200 and got["title"] == "Lens cap", (got, b.log())
    finally:
        a.stop()
        b.stop()


def _put(server: LiverecServer, body: object) -> tuple[int, object]:
    req = urllib.request.Request(
        server.base + "/v1/catalog/items",
        data=json.dumps(body).encode(),
        method="PUT",
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@pytest.mark.parametrize("backend", ["redis", "cluster"])
async def test_catalog_write_on_one_process_reaches_another_at_once(
    backend: str, redis_url: str, redis_cluster_url: str
) -> None:
    await _change_on_a_is_seen_on_b(redis_url if backend == "redis" else redis_cluster_url)
