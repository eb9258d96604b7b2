"""A session that continues on another process gets the list the first one would have
given: two `liverec serve` on one private redis-server, with the online model (once
both have followed the same log) and with the tiny GRU4Rec of tests/tiny_model.py
(the second process rebuilds the session's hidden state from the stored items)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest

from .servers import LiverecServer
from .test_scale_follow import _post
from .tiny_model import train_tiny
from .wsclient import Client

DEADLINE_S = 20.0
# shoppers walking the tiny model's chains f<family>-0 -> f<family>-1 -> ...
WALKS = [[f"f{s % 6}-{(s // 6 + j) % 8}" for j in range(3 + s % 3)] for s in range(36)]


async def followed(server: LiverecServer, count: int) -> None:
    """Wait until `server` has applied `count` events of the other process from the log."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        found = re.search(
            r"^liverec_followed_events_total (\S+)$", server.get_text("/metrics"), re.M
        )
        assert found is not None
        if float(found.group(1)) >= count or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert float(found.group(1)) == count, server.log()


def listed(server: LiverecServer, sid: str) -> dict[str, Any]:
    status, frame = server.get_json(f"/v1/recommendations?session_id={sid}&k=10")
    assert status == 200, frame
    return frame  # type: ignore[no-any-return]


def ids(frame: dict[str, Any]) -> list[str]:
    return [r["item_id"] for r in frame["items"]]


def scores(frame: dict[str, Any]) -> list[float]:
    return [r["score"] for r in frame["items"]]


@pytest.mark.parametrize("model", ["online", "gru"])
async def test_a_session_continued_on_another_process_gets_the_same_list(
    model: str, redis_url: str, tmp_path: Path
) -> None:
    # popular_refresh_s=0: the popular fill is re-sorted for every list; with the default
    # a process may still show the order of up to a second ago (documented)
    settings: dict[str, Any] = {"warm_events": 0, "popular_refresh_s": 0}
    if model == "gru":
        settings["model_path"] = str(train_tiny(tmp_path / "tiny"))
    a = LiverecServer(redis_url, **settings).start(timeout=90)
    b = LiverecServer(redis_url, **settings).start(timeout=90)
    try:
        for walk in WALKS:  # what both models learn from: A's events, followed by B
            _post(a, None, *walk)
        async with await Client.open(a.ws_url) as shopper:  # one event at a time: A steps
            welcome, _ = await shopper.hello(k=10)  # its model's state forward per event
            sid = welcome["session_id"]
            for item in ("f1-0", "f1-1", "f1-2"):
                await shopper.event(item)
        await followed(b, sum(len(w) for w in WALKS) + 3)
        on_a, on_b = listed(a, sid), listed(b, sid)
        assert len(ids(on_a)) == 10
        assert (on_a["model"] == "online") == (model == "online"), on_a
        assert (ids(on_b), on_b["model"]) == (ids(on_a), on_a["model"])

        async with await Client.open(b.ws_url) as shopper:  # the session moves to B
            welcome, _ = await shopper.hello(session_id=sid, k=10)
            assert welcome["resumed"] is True
            _, next_on_b = await shopper.event("f1-3")
        await followed(a, 1)  # A has B's event too: what would A have answered?
        would_on_a = listed(a, sid)
        assert (ids(next_on_b), next_on_b["model"]) == (ids(would_on_a), would_on_a["model"])
        if model == "gru":  # B rebuilt the session's hidden state from the stored items;
            async with await Client.open(a.ws_url) as twin:  # A steps a twin event by event
                await twin.hello(k=10)
                for item in ("f1-0", "f1-1", "f1-2"):
                    await twin.event(item)
                _, stepped_on_a = await twin.event("f1-3")
            assert ids(stepped_on_a) == ids(next_on_b)
            assert scores(stepped_on_a) == pytest.approx(scores(next_on_b), rel=1e-4)
    finally:
        a.stop()
        b.stop()
