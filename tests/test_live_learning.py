"""Returning users, feedback on recommendations, and the A/B split of sessions."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from liverec.identity import mint_token
from liverec.recommend.ab import ABRecommender
from liverec.recommend.base import RecContext
from liverec.recommend.online import OnlineRecommender

from .servers import LiverecServer
from .tiny_model import train_tiny
from .wsclient import Client

SECRET = "returning-user-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def server() -> Iterator[LiverecServer]:
    srv = LiverecServer("memory://", jwt_secret=SECRET).start()
    yield srv
    srv.stop()


async def _warm(server: LiverecServer) -> None:
    # Shoppers' sessions: phones with their cases and chargers, and books together.
    for i in range(6):
        async with await Client.open(server.ws_url) as c:
            await c.hello()
            for item in ("phone", "case", "charger") if i % 2 else ("book-a", "book-b"):
                await c.event(item)


async def test_returning_user_first_recs_use_the_profile(server: LiverecServer) -> None:
    await _warm(server)
    async with await Client.open(server.ws_url) as c:
        await c.hello(user_token=mint_token("dana", SECRET))
        await c.event("phone")
        await c.event("case", "purchase")
        await c.event("book-b", "rate", rating=1)
    async with await Client.open(server.ws_url) as c:
        _, anonymous = await c.hello(k=5)
    async with await Client.open(server.ws_url) as c:
        welcome, first = await c.hello(k=5, user_token=mint_token("dana", SECRET))
        assert welcome["resumed"] is False  # a new session...
    ids = [r["item_id"] for r in first["items"]]
    anon = [r["item_id"] for r in anonymous["items"]]
    assert "case" not in ids  # ...that never recommends what she bought
    assert ids != anon  # and starts from her history, not the cold-start list
    assert ids[0] == "charger"  # what goes with the phone and case she looked at
    assert ids[-1] == "book-b"  # rated 1 of 5: still shown, and last


async def test_item_rated_low_is_demoted_to_the_end(server: LiverecServer) -> None:
    await _warm(server)
    lists: dict[str, list[str]] = {}
    for user, action in (("hal", "rate"), ("ivan", "view")):  # hal rates the charger 1
        token = mint_token(user, SECRET)
        async with await Client.open(server.ws_url) as c:  # one event: no pair learnt
            await c.hello(user_token=token)
            await c.event("charger", action, **({"rating": 1} if action == "rate" else {}))
        async with await Client.open(server.ws_url) as c:
            await c.hello(k=5, user_token=token)
            _, recs = await c.event("phone")
        lists[user] = [r["item_id"] for r in recs["items"]]
    assert "charger" in lists["ivan"][:2], lists  # goes with the phone
    assert lists["hal"][-1] == "charger", lists  # rated low: last, below unrelated books


async def test_feedback_counts_impressions_and_clicks_by_model_and_placement(
    server: LiverecServer,
) -> None:
    await _warm(server)
    placement = "fb-count"  # used by no other test: the counters below are this test's alone
    async with await Client.open(server.ws_url) as c:
        await c.hello(placement=placement)
        _, recs = await c.event("phone")
        rid, item = recs["recs_id"], recs["items"][0]["item_id"]
        for _ in range(2):  # counted once per frame, however often it is reported
            await c.send({"type": "feedback", "kind": "impression", "recs_id": rid})
            await c.send({"type": "feedback", "kind": "click", "recs_id": rid, "item_id": item})
        bad = [
            ({"kind": "click", "recs_id": rid, "item_id": "not-shown"}, "bad_field"),
            ({"kind": "click", "recs_id": rid}, "missing_field"),
            ({"kind": "impression", "recs_id": "r999"}, "unknown_recs"),
            ({"kind": "like", "recs_id": rid}, "bad_field"),
        ]
        for frame, code in bad:  # answered in order: the feedback above was handled
            await c.send({"type": "feedback", **frame})
            got = await c.recv()
            assert got["type"] == "error" and got["code"] == code, (frame, got)
    metrics = server.get_text("/metrics")
    # counted by A/B arm; liverec_model_info names the arm's model
    assert f'liverec_model_info{{arm="a",version="{recs["model"]}"}} 1' in metrics
    labels = f'{{arm="a",placement="{placement}"}}'
    imp = re.search(rf"liverec_rec_impressions_total{re.escape(labels)} (\S+)", metrics)
    clk = re.search(rf"liverec_rec_clicks_total{re.escape(labels)} (\S+)", metrics)
    assert imp is not None and float(imp.group(1)) == 1, metrics
    assert clk is not None and float(clk.group(1)) == 1, metrics


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("ab")
    train_tiny(d / "a", seed=1)
    train_tiny(d / "b", seed=2, data_seed=3)
    return d / "a", d / "b"


async def test_ab_split_is_stable_per_session_and_near_the_share(
    two_models: tuple[Path, Path],
) -> None:
    from liverec.recommend.gru import GRURecommender

    online = OnlineRecommender()
    a = GRURecommender(two_models[0], online, poll_s=None, process=False)
    b = GRURecommender(two_models[1], online, poll_s=None, process=False)
    ab = ABRecommender(a, b, share=0.3)
    try:
        assert a.version != b.version
        arms = [ab.version_for(f"session-{i}") for i in range(2000)]
        share = arms.count(b.version) / len(arms)
        assert 0.25 < share < 0.35
        for i in range(50):  # stable: the same session always lands on the same arm
            sid = f"session-{i}"
            got = await ab.recommend(RecContext(sid, ["f1-0"], 3, current_item="f1-0"))
            assert got.model == arms[i] == ab.version_for(sid)
        # the arms' serving figures add up (each arm scored its own sessions)
        on_b = arms[:50].count(b.version)
        assert a.figures()["liverec_model_sessions"] == 50 - on_b
        assert ab.figures()["liverec_model_sessions"] == 50
    finally:
        await ab.close()


async def test_ab_split_over_the_socket(two_models: tuple[Path, Path], tmp_path: Path) -> None:
    registry = tmp_path / "m"
    shutil.copytree(two_models[0], registry)
    srv = LiverecServer(
        "memory://", model_path=str(registry), ab_model_path=str(two_models[1]), ab_share=0.5
    ).start()
    try:
        seen = set()
        for _ in range(40):  # server-issued ids: until both arms served (2 x 2^-40 to fail)
            async with await Client.open(srv.ws_url) as c:
                welcome, _ = await c.hello()
                _, recs = await c.event("f2-2")
                assert recs["model"] == welcome["model"]
                seen.add(welcome["model"])
            if len(seen) == 2:
                break
        assert len(seen) == 2  # both arms served
    finally:
        srv.stop()
