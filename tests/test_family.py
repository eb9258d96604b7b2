"""Model families per store: `liverec train --family`, a directory served by the family
its metadata names, and for each family served = offline under the serving rules."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from liverec.cli import main as liverec_main
from liverec.learn.registry import CURRENT, write_atomic
from liverec.model.data import ItemIndex, Sessions
from liverec.model.evaluate import evaluate
from liverec.model.formats import load_sessions
from liverec.model.moments import ScoreMoments
from liverec.model.scorer import GRUScorer
from liverec.recommend.family import (
    balanced,
    family_scorer,
    recall_first,
    search_weight,
    train_family,
    write_vsknn,
)
from liverec.recommend.hybrid import (
    HybridScorer,
    fuse,
    fused_order,
    fused_pairs,
    knn_bonus,
    order_keys,
)

from .replay_helpers import assert_matches, replay
from .servers import LiverecServer
from .tiny_model import REPLAY_CONFIG, train_tiny, walks
from .wsclient import Client

DAY = 86400.0


def fuse_candidates(
    ranked: list[tuple[int, float]], extra: Any, mean: float, sd: float, cols: Any, add: Any
) -> list[tuple[int, float]]:
    """`fused_order` as (item index, fused score) pairs, best first."""
    idx, fused = fused_order(ranked, extra, mean, sd, cols, add)
    return list(zip(idx.tolist(), fused.tolist(), strict=True))


CONFIG = REPLAY_CONFIG


def write_walks(path: Path, n: int, seed: int, start: float) -> None:
    """`tiny_model.walks(n, seed)` with times, one session every ~5 minutes from
    `start`: 1500 sessions span about five days."""
    sessions = walks(n, seed)
    rows = ["SessionId\tItemId\tTime"]
    for s in range(sessions.n_sessions):
        t = start + s * 300.0
        for e, item in enumerate(sessions.session(s).tolist()):
            rows.append(f"{seed}-{s}\t{item}\t{t + e * 10.0}")
    path.write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("family")
    write_walks(d / "train.tsv", 1500, 1, 1_700_000_000.0)
    write_walks(d / "test.tsv", 60, 2, 1_700_000_000.0 + 6 * DAY)
    return d / "train.tsv", d / "test.tsv"


@pytest.fixture(scope="module")
def models(data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    train = load_sessions(data[0])
    d = tmp_path_factory.mktemp("family-models")
    out = {}
    for family in ("vsknn", "hybrid"):
        train_family(family, train, CONFIG, d / family)
        out[family] = d / family
    return out


@pytest.mark.parametrize("family", ["vsknn", "hybrid"])
async def test_replay_over_websocket_matches_offline_evaluation(
    family: str, data: tuple[Path, Path], models: dict[str, Path]
) -> None:
    model_dir = models[family]
    meta = json.loads((model_dir / "meta.json").read_text())
    assert meta["family"] == family
    name, scorer, index = family_scorer(model_dir)
    assert name == family
    test = load_sessions(data[1])
    measured = evaluate(scorer, index, test, ks=(20,), serving_rules=True, batch_size=1)
    server = LiverecServer(
        "memory://",
        model_path=str(model_dir),
        vsknn_live="off",  # the index is the directory's: what was measured offline
        events_per_s=1e6,
        events_burst=10000,
    ).start()
    try:
        replayed = await replay(server.ws_url, test, index.index)
        metrics = await asyncio.to_thread(server.get_text, "/metrics")
    finally:
        server.stop()
    assert replayed.models == {meta["version"]}
    assert_matches(measured, replayed)
    if family == "hybrid":  # its GRU steps went through the micro-batched scoring path
        assert _series(metrics, "liverec_model_batched_events_total") >= measured["cases"]


def test_closed_form_moments_equal_those_of_every_score() -> None:
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(3000, 48, generator=gen) * 0.3 + 0.1  # a non-zero mean row
    bias = torch.randn(3000, generator=gen) * 0.5 - 0.2
    out = torch.randn(6, 48, generator=gen)
    mean, sd = ScoreMoments(weight, bias).of(out)
    every = out.double() @ weight.double().t() + bias.double()  # (6, 3000)
    assert np.allclose(mean, every.mean(1).numpy(), rtol=1e-9, atol=1e-12)
    assert np.allclose(sd, every.std(1, correction=0).numpy(), rtol=1e-9, atol=1e-12)
    g = (out @ weight.t() + bias).numpy()  # the float32 scores the server computes
    assert np.allclose(sd, g.astype(np.float64).std(1), rtol=1e-5)


def test_fusion_over_candidates_equals_the_fusion_over_every_item() -> None:
    rng = np.random.default_rng(5)
    n, want = 5000, 40
    index = ItemIndex([f"i{j}" for j in range(n)])
    for trial in range(20):
        g = rng.normal(size=n).astype(np.float32)
        picked = rng.choice(n, size=300, replace=False)
        if trial % 2:  # V-SkNN items among the GRU's best too
            picked[:10] = np.argsort(-g)[:10]
        knn = {f"i{j}": float(rng.random()) for j in picked}
        cols, add = knn_bonus(knn, index, 4.0)
        mean, sd = float(g.mean()), float(g.std())
        every = fuse(g, mean, sd, cols, add)
        best = np.lexsort((np.arange(n), -every))[:want].tolist()
        top = np.argsort(-g, kind="stable")[:want]
        ranked = [(int(j), float(g[j])) for j in top]
        fused = fuse_candidates(ranked, g[cols].tolist(), mean, sd, cols, add)
        assert [j for j, _ in fused[:want]] == best
        assert [v for _, v in fused[:want]] == every[best].tolist()


def test_fused_candidates_are_read_in_chunks_in_the_same_order() -> None:
    rng = np.random.default_rng(7)
    ids = [f"i{j}" for j in range(500)]
    ranked = [(int(j), float(v)) for j, v in zip(range(0, 60, 2), rng.normal(size=30), strict=True)]
    cols = rng.choice(500, size=200, replace=False)
    extra = rng.normal(size=200).astype(np.float32).tolist()
    add = rng.random(200)
    idx, fused = fused_order(ranked, extra, 0.1, 1.3, cols, add)
    whole = [(ids[j], v) for j, v in fuse_candidates(ranked, extra, 0.1, 1.3, cols, add)]
    assert len(whole) == len(set(idx.tolist())) == 200 + sum(j not in cols for j, _ in ranked)
    for first in (0, 1, 7, 37, 229, 1000):
        assert list(fused_pairs(idx, fused, ids, first)) == whole


def test_order_keys_sort_as_the_fused_score_then_the_item_index() -> None:
    rng = np.random.default_rng(11)
    special = [0.0, -0.0, 1.0, -1.0, 3.4e38, -3.4e38, 1e-45, -1e-45, np.inf, -np.inf]
    for trial in range(50):
        n = int(rng.integers(1, 400))
        fused = rng.normal(size=n).astype(np.float32)
        if trial % 2:  # many ties, and both zeros
            fused = rng.choice(np.array(special, dtype=np.float32), size=n)
        idx = rng.choice(2**31 - 1, size=n, replace=False).astype(np.int64)
        expected = np.lexsort((idx, -fused))
        assert np.argsort(order_keys(idx, fused)).tolist() == expected.tolist()


def test_fused_order_marks_nothing_for_good_and_needs_no_scratch() -> None:
    rng = np.random.default_rng(13)
    ranked = [(int(j), float(v)) for j, v in zip(range(0, 90, 3), rng.normal(size=30), strict=True)]
    cols = rng.choice(300, size=120, replace=False)
    extra = rng.normal(size=120).astype(np.float32)
    add = rng.random(120)
    mark = np.zeros(300, dtype=bool)
    with_mark = fused_order(ranked, extra, 0.2, 0.9, cols, add, mark)
    alone = fused_order(ranked, extra, 0.2, 0.9, cols, add)
    assert not mark.any()
    assert with_mark[0].tolist() == alone[0].tolist()
    assert with_mark[1].tobytes() == alone[1].tobytes()
    assert len(alone[0]) == len(set(alone[0].tolist()))  # an item in both counts once
    none = fused_order(ranked, [], 0.2, 0.9, np.empty(0, np.int64), np.empty(0))
    assert none[0].tolist() == [j for j, _ in sorted(ranked, key=lambda p: (-p[1], p[0]))]


def test_hybrid_weight_is_chosen_on_the_last_day_of_the_training_data(
    models: dict[str, Path], data: tuple[Path, Path]
) -> None:
    meta = json.loads((models["hybrid"] / "meta.json").read_text())
    selection = meta["selection"]
    train = load_sessions(data[0])
    last_day = train.start_times() >= float(train.times.max()) - DAY
    assert selection["valid_sessions"] == int(last_day.sum()) > 0
    figures = selection["validation"]
    tried = {k: v for k, v in figures.items() if k.startswith("hybrid w=")}
    best = max(tried.values(), key=balanced([figures["gru4rec"], figures["vsknn"]]))
    assert meta["hybrid"]["weight"] == selection["weight"]
    assert tried[f"hybrid w={selection['weight']:g}"] == best


def test_a_hybrid_of_weight_0_ranks_as_its_gru(
    models: dict[str, Path], data: tuple[Path, Path]
) -> None:
    _, hybrid, index = family_scorer(models["hybrid"])
    assert isinstance(hybrid, HybridScorer)
    test = load_sessions(data[1])
    zero = HybridScorer(hybrid.gru.model, index, hybrid.knn, 0.0)
    gru = GRUScorer(hybrid.gru.model)
    a = evaluate(zero, index, test, ks=(5, 20), serving_rules=True)
    b = evaluate(gru, index, test, ks=(5, 20), serving_rules=True)
    del a["seconds"], b["seconds"]
    assert a == b and a["cases"] > 0


def test_auto_writes_the_validation_winner_and_evaluate_scores_it(
    data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "auto"
    selection = train_family("auto", load_sessions(data[0]), CONFIG, out)
    figures = selection["validation"]
    assert {"gru4rec", "vsknn", "hybrid"} <= set(figures)
    rule = balanced([figures["gru4rec"], figures["vsknn"]])
    assert selection["winner"] == max(
        ("gru4rec", "vsknn", "hybrid"), key=lambda f: rule(figures[f])
    )
    # weight 0 is scored as GRU4Rec (the same ranking: see the test below)
    assert figures["hybrid w=0"] == figures["gru4rec"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["family"] == selection["winner"] and meta["selection"] == selection
    code = liverec_main(
        [
            "evaluate",
            "--model",
            str(out),
            "--test",
            str(data[1]),
            "--baselines",
            "none",
            "--serving-rules",
            "--json",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed) == [selection["winner"]]
    assert 0.2 < printed[selection["winner"]]["recall@20"] < 1.0


def test_an_unknown_family_in_the_metadata_stops_the_server_in_one_line(
    models: dict[str, Path], tmp_path: Path
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    meta = json.loads((models["vsknn"] / "meta.json").read_text())
    (bad / "meta.json").write_text(json.dumps({**meta, "family": "bogus"}))
    cmd = [sys.executable, "-m", "liverec.cli", "serve", "--model", str(bad)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "family 'bogus' is not one of gru4rec, vsknn, hybrid" in (
        done.stderr + done.stdout
    )
    assert "Traceback" not in done.stderr


def test_train_refuses_an_unknown_family() -> None:
    cmd = [
        sys.executable,
        "-m",
        "liverec.cli",
        "train",
        "--data",
        "x",
        "--out",
        "y",
        "--family",
        "knn",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "invalid choice: 'knn'" in done.stderr


DEMO_MODEL = Path(__file__).resolve().parents[1] / "models" / "demo"


async def test_an_ab_candidate_may_be_any_family(models: dict[str, Path]) -> None:
    server = LiverecServer(
        "memory://", model_path=str(DEMO_MODEL), ab_model_path=str(models["vsknn"]), ab_share=1.0
    ).start()
    try:
        async with await Client.open(server.ws_url) as c:
            await c.hello(k=5)
            _, recs = await c.event("i3-4")
        version = json.loads((models["vsknn"] / "meta.json").read_text())["version"]
        assert recs["model"] == version and len(recs["items"]) == 5
    finally:
        server.stop()


def _series(metrics: str, name: str) -> float:
    """The value of an unlabelled series in a /metrics text."""
    (line,) = [x for x in metrics.splitlines() if x.startswith(name + " ")]
    return float(line.split()[1])


async def _served_version(server: LiverecServer, version: str) -> str:
    """Read liverec_model_info until it names `version` (the server polls the models
    directory every 50 ms; 400 reads of /metrics); returns the last metrics text."""
    for _ in range(400):
        text = await asyncio.to_thread(server.get_text, "/metrics")
        if f'liverec_model_info{{arm="a",version="{version}"}} 1' in text:
            break
        await asyncio.sleep(0.05)
    return text


async def test_a_promoted_directory_of_another_family_is_served_without_restart(
    models: dict[str, Path], tmp_path: Path
) -> None:
    registry = tmp_path / "models"
    gru = train_tiny(registry / "g1")  # chains f<fam>-<j>
    gru_version = json.loads((gru / "meta.json").read_text())["version"]
    # the vsknn directory: after f0-0 comes zz-1; other sessions fill the lists
    sessions = [["f0-0", "zz-1"]] * 3 + [[f"a{j}", f"a{j + 1}"] for j in range(0, 40, 2)]
    knn = write_vsknn(registry / "k1", Sessions.from_lists(sessions))
    knn_version = json.loads((knn / "meta.json").read_text())["version"]
    shutil.copytree(models["hybrid"], registry / "h1")
    hybrid_version = json.loads((registry / "h1" / "meta.json").read_text())["version"]
    write_atomic(registry / CURRENT, "g1")
    server = LiverecServer(
        "memory://",
        model_path=str(registry),
        model_poll_s=0.05,
        address_events_per_s=1e6,
        address_events_burst=10000,
    ).start()
    try:
        async with await Client.open(server.ws_url) as a:
            welcome, _ = await a.hello(k=3)
            assert welcome["model"] == gru_version
            _, recs = await a.event("f0-0")
            assert recs["model"] == gru_version
            await a.event("live-x")  # a live session the new index must learn (re-fed)
        batches = _series(server.get_text("/metrics"), "liverec_model_batches_total")
        assert batches >= 1  # the GRU scored the first lists
        write_atomic(registry / CURRENT, "k1")  # what a promotion does
        metrics = await _served_version(server, knn_version)
        assert f'liverec_model_info{{arm="a",version="{knn_version}"}} 1' in metrics
        assert _series(metrics, "liverec_model_batches_total") == batches  # kept at the switch
        async with await Client.open(server.ws_url) as b:
            welcome, _ = await b.hello(k=3)
            assert welcome["model"] == knn_version
            _, recs = await b.event("f0-0")
            ids = [r["item_id"] for r in recs["items"]]
            assert recs["model"] == knn_version
            assert ids[0] == "zz-1" and "live-x" in ids, ids
        write_atomic(registry / CURRENT, "h1")
        metrics = await _served_version(server, hybrid_version)
        assert f'liverec_model_info{{arm="a",version="{hybrid_version}"}} 1' in metrics
        async with await Client.open(server.ws_url) as c:
            welcome, _ = await c.hello(k=3)
            _, recs = await c.event("i0-0")
            assert welcome["model"] == recs["model"] == hybrid_version
        write_atomic(registry / CURRENT, "g1")  # and back to a GRU4Rec checkpoint
        metrics = await _served_version(server, gru_version)
        assert f'liverec_model_info{{arm="a",version="{gru_version}"}} 1' in metrics
        async with await Client.open(server.ws_url) as d:
            welcome, _ = await d.hello(k=3)
            _, recs = await d.event("f0-0")
            assert welcome["model"] == recs["model"] == gru_version
    finally:
        server.stop()
    assert "Traceback" not in server.log()


def test_without_timestamps_validation_is_the_last_fraction_of_the_sessions_in_file_order(
    tmp_path: Path,
) -> None:
    from liverec.model.split import last_fraction

    from .tiny_model import walks

    lines = tmp_path / "train.txt"
    data = walks(600, seed=3)
    lines.write_text("".join(" ".join(data.session(s).tolist()) + "\n" for s in range(600)))
    train = load_sessions(lines)  # one session per line: no timestamps
    assert not train.timed
    selection = train_family("hybrid", train, CONFIG, tmp_path / "hybrid", valid_fraction=0.1)
    _, valid = last_fraction(train, 0.1)
    assert selection["valid_fraction"] == 0.1 and "valid_days" not in selection
    assert selection["valid_sessions"] == valid.n_sessions > 0
    cases = int(valid.n_events - valid.n_sessions)  # every event after a session's first
    assert selection["validation"]["hybrid"]["cases"] == cases
    name, _, _ = family_scorer(tmp_path / "hybrid")
    assert name == "hybrid"


async def test_a_broken_directory_keeps_the_served_model(
    models: dict[str, Path], tmp_path: Path
) -> None:
    from liverec.config import Settings
    from liverec.recommend import build_recommender
    from liverec.recommend.base import RecContext
    from liverec.recommend.reloading import ModelSwitch

    registry = tmp_path / "models"
    shutil.copytree(models["vsknn"], registry / "k1")
    broken = registry / "k2"
    broken.mkdir()
    meta = json.loads((models["vsknn"] / "meta.json").read_text())
    (broken / "meta.json").write_text(json.dumps({**meta, "version": "vsknn-broken"}))
    write_atomic(registry / CURRENT, "k1")
    settings = Settings(model_path=str(registry), model_poll_s=3600.0, content_model=False)
    rec = build_recommender(settings)
    assert isinstance(rec, ModelSwitch)
    await rec.start()
    try:
        write_atomic(registry / CURRENT, "k2")  # no sessions.tsv: it does not load
        assert await rec.reload() is False
        assert rec.version == meta["version"]
        got = await rec.recommend(RecContext("s", ["i0-0"], 5, current_item="i0-0"))
        assert got.model == meta["version"] and len(got.items) == 5
        (broken / "sessions.tsv").write_bytes((models["vsknn"] / "sessions.tsv").read_bytes())
        (broken / "meta.json").touch()
        assert await rec.reload() is True
        assert rec.version == "vsknn-broken"
    finally:
        await rec.close()


def _peaked(peak: float) -> tuple[list[float], Callable[[float], dict[str, float]]]:
    """A validation score rising up to the weight `peak`, falling after; the weights
    asked for are recorded."""
    asked: list[float] = []

    def score(w: float) -> dict[str, float]:
        asked.append(w)
        return {"recall@20": 0.5 - abs(math.log2(w + 1) - math.log2(peak + 1)) / 100, "mrr@20": 0.2}

    return asked, score


def test_the_weight_search_goes_past_the_grid_only_while_the_top_keeps_winning() -> None:
    grid = (0.0, 1.0, 4.0, 8.0)
    asked, score = _peaked(2.0)  # inside the grid: nothing beyond it is tried
    w, fig, tried = search_weight(score, grid, top=64.0)
    assert w == 1.0 and asked == [0.0, 1.0, 4.0, 8.0]
    assert set(tried) == {f"hybrid w={g:g}" for g in grid} and fig == score(w)
    asked, score = _peaked(32.0)  # beyond it: doubled while it improves, then stops
    w, fig, tried = search_weight(score, grid, top=64.0)
    assert w == 32.0 and asked == [0.0, 1.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    assert list(tried)[-3:] == ["hybrid w=16", "hybrid w=32", "hybrid w=64"]
    asked, score = _peaked(1000.0)  # still rising at the cap: the cap is the answer
    w, _, _ = search_weight(score, grid, top=64.0)
    assert w == 64.0 and asked[-1] == 64.0 and 128.0 not in asked
    asked, score = _peaked(0.0)  # 0 (GRU4Rec alone) wins: kept, the grid's first
    w, _, _ = search_weight(score, (0.0,), top=64.0)
    assert w == 0.0 and asked == [0.0]


def test_known_figures_at_weight_0_are_not_scored_again() -> None:
    asked, score = _peaked(4.0)
    gru = {"recall@20": 0.3, "mrr@20": 0.1}  # what GRU4Rec scored on the same data
    w, _, tried = search_weight(score, (0.0, 1.0, 4.0, 8.0), top=64.0, zero=gru)
    assert w == 4.0 and asked == [1.0, 4.0, 8.0] and tried["hybrid w=0"] is gru


def test_the_balanced_choice_wants_both_figures_above_the_better_single_family() -> None:
    # YooChoose seed 1's validation figures: Recall@20 alone takes W = 16, which pays
    # for recall with MRR@20; the balanced key keeps W = 8, whose smaller margin over
    # the better single family (GRU4Rec's recall, V-SkNN's MRR) is the larger one.
    gru, knn = {"recall@20": 0.3797, "mrr@20": 0.1727}, {"recall@20": 0.3794, "mrr@20": 0.1754}
    by_w = {
        0.0: gru,
        4.0: {"recall@20": 0.4008, "mrr@20": 0.1878},
        8.0: {"recall@20": 0.4057, "mrr@20": 0.1879},
        16.0: {"recall@20": 0.4092, "mrr@20": 0.1861},
        32.0: {"recall@20": 0.4052, "mrr@20": 0.1843},
    }
    key = balanced([gru, knn])
    assert key(by_w[8.0]) > key(by_w[16.0]) and recall_first(by_w[16.0]) > recall_first(by_w[8.0])
    r, m = 0.4057 / 0.3797, 0.1879 / 0.1754  # the best of each figure is the reference
    assert key(by_w[8.0]) == (min(r, m), r + m)
    grid = (0.0, 4.0, 8.0)
    assert search_weight(by_w.__getitem__, grid, top=32.0)[0] == 16.0  # recall first
    assert search_weight(by_w.__getitem__, grid, top=32.0, key=key)[0] == 8.0
    # a family below the better one on either figure never beats one at or above both
    assert key(gru) < key({"recall@20": 0.3797, "mrr@20": 0.1754}) <= (1.0, 2.0)
    assert max((gru, knn, by_w[8.0]), key=key) is by_w[8.0]
    # equal worse ratios: the sum decides
    assert key({"recall@20": 0.3797, "mrr@20": 0.19}) > key({"recall@20": 0.3797, "mrr@20": 0.18})
    # no usable reference: Recall@20 first
    assert balanced([]) is recall_first
    assert balanced([{"recall@20": 0.0, "mrr@20": 0.1}]) is recall_first
