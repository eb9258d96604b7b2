"""The demo store's session model: `liverec demo-model`, the committed models/demo
checkpoint, and `liverec serve --demo on` serving it (online model as fallback)."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from liverec.demo import build_catalog
from liverec.demo_model import BUNDLED, NAME, SEED, SESSIONS, bundled_model, demo_sessions
from liverec.model import META, WEIGHTS

from .servers import LiverecServer
from .wsclient import Client

DEMO = build_catalog()
ROOT = Path(__file__).resolve().parents[1]


def _meta(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((path / META).read_text(encoding="utf-8"))
    return data


def test_the_committed_demo_model_is_small_and_made_by_the_documented_command() -> None:
    path = ROOT / "models" / "demo"
    assert bundled_model() == path
    assert (path / WEIGHTS).stat().st_size < 4 * 2**20  # committed: a few MB at most
    meta = _meta(path)
    assert meta["version"].startswith(NAME + "-")
    assert meta["training"]["seed"] == SEED and meta["training"]["sessions"] == SESSIONS
    assert sorted(meta["items"]) == sorted(DEMO.products)  # every demo product is known
    figures = meta["evaluation"]
    assert figures["model"]["recall@20"] > 2 * figures["pop"]["recall@20"]
    readme = (ROOT / "models" / "README.md").read_text(encoding="utf-8")
    assert "liverec demo-model --out models/demo" in readme


def test_demo_sessions_are_deterministic_and_follow_product_families() -> None:
    a, b = demo_sessions(5, 200), demo_sessions(5, 200)
    assert a.items.tolist() == b.items.tolist() and a.times.tolist() == b.times.tolist()
    assert a.items.tolist() != demo_sessions(6, 200).items.tolist()
    same_family = total = 0
    for s in range(a.n_sessions):
        items = a.session(s).tolist()
        for x, y in itertools.pairwise(items):
            total += 1
            same_family += DEMO.products[x].family == DEMO.products[y].family
    assert same_family / total > 0.6


def _demo_model(out: Path, *extra: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "liverec.cli", "demo-model", "--out", str(out), "--quiet"]
    cmd += ["--sessions", "400", "--epochs", "1", "--units", "16", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def test_demo_model_command_is_reproducible(tmp_path: Path) -> None:
    first = _demo_model(tmp_path / "a", "--data-out", str(tmp_path / "sessions.tsv"))
    second = _demo_model(tmp_path / "b")
    assert first["version"].startswith(NAME + "-") and first["items"] <= len(DEMO.products)
    weights = [(tmp_path / d / WEIGHTS).read_bytes() for d in ("a", "b")]
    assert weights[0] == weights[1]
    assert first["version"][-8:] == second["version"][-8:]  # the weights' hash
    assert (tmp_path / "sessions.tsv").read_text().startswith("SessionId\tItemId\tTime\n")
    assert _demo_model(tmp_path / "c", "--seed", "9")["version"][-8:] != first["version"][-8:]


def test_demo_model_command_refuses_bad_arguments(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "liverec.cli", "demo-model", "--out", str(tmp_path / "m")]
    done = subprocess.run([*cmd, "--sessions", "5"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--sessions >= 100" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def demo_server() -> Iterator[LiverecServer]:
    # No warm-up: the online model knows nothing, so family-shaped recs come from the GRU.
    srv = LiverecServer("memory://", demo="on", demo_warmup_sessions=0).start(timeout=60)
    yield srv
    srv.stop()


async def _feed_entry(srv: LiverecServer, item: str, send: Any) -> dict[str, Any]:
    """The feed entry of the event on `item` that `send()` causes."""
    async with connect(srv.ws_url.replace("/v1/ws", "/v1/feed"), open_timeout=10) as ws:
        await ws.send(json.dumps({"type": "hello"}))
        async with asyncio.timeout(20):
            while json.loads(await ws.recv())["type"] != "snapshot":
                pass
            await send()
            while True:
                frame = json.loads(await ws.recv())
                for entry in frame.get("entries", []):
                    if entry.get("item") == item and "model" in entry:
                        return dict(entry)


async def test_fresh_demo_serves_the_demo_model_and_recs_follow_trained_sessions(
    demo_server: LiverecServer,
) -> None:
    version = _meta(bundled_model())["version"]
    for phone in DEMO.mains("phones"):
        async with await Client.open(demo_server.ws_url) as shopper:  # a fresh session
            welcome, _ = await shopper.hello(k=8, placement="product")
            assert welcome["model"] == version
            _, recs = await shopper.event(phone)
        assert recs["model"] == version
        ids = [r["item_id"] for r in recs["items"]]
        assert len(ids) == 8
        # Shoppers move within a product family: the phone's accessories lead the list,
        # its cases among them.
        assert set(ids[:5]) <= DEMO.related(phone), (phone, ids)
        assert any(i.startswith(phone + "-case-") for i in ids[:3]), (phone, ids)


async def test_items_the_demo_model_does_not_know_fall_back_to_the_online_model(
    demo_server: LiverecServer,
) -> None:
    version = _meta(bundled_model())["version"]
    async with await Client.open(demo_server.ws_url) as shopper:
        await shopper.hello(k=8)
        _, recs = await shopper.event("not-in-the-demo-model")
        assert recs["model"] == "online"
        _, recs = await shopper.event("kite-m50")
        assert recs["model"] == version
        _, recs = await shopper.event("added-after-training")  # after a known item, too
        assert recs["model"] == "online"


async def test_the_feed_names_the_demo_model(demo_server: LiverecServer) -> None:
    version = _meta(bundled_model())["version"]
    async with await Client.open(demo_server.ws_url) as shopper:
        await shopper.hello(k=8)

        async def view() -> None:
            await shopper.event("barista-pro")

        entry = await _feed_entry(demo_server, "barista-pro", view)
    assert entry["model"] == version


async def test_demo_model_setting_serves_another_checkpoint_or_none(tmp_path: Path) -> None:
    other = _demo_model(tmp_path / "small")
    for setting, expected in ((str(tmp_path / "small"), other["version"]), ("none", "online")):
        srv = LiverecServer("memory://", demo="on", demo_warmup_sessions=0, demo_model=setting)
        srv.start(timeout=60)
        try:
            async with await Client.open(srv.ws_url) as shopper:
                welcome, _ = await shopper.hello()
                assert welcome["model"] == expected
        finally:
            srv.stop()
    assert BUNDLED == "bundled"
