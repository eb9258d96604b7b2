"""GRU4Rec serving: per-session state, micro-batching, rules, fallback, hot reload."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from liverec.errors import ModelError
from liverec.model.checkpoint import load_checkpoint
from liverec.model.data import ItemIndex
from liverec.model.gru4rec import GRU4Rec, GRU4RecConfig
from liverec.recommend.base import RecContext
from liverec.recommend.gru import GRURecommender
from liverec.recommend.gru.scoring import ScoreInput, score_batch
from liverec.recommend.gru.served import CURRENT, SHORTLIST_ROWS, ServedModel, low_rank
from liverec.recommend.online import OnlineRecommender

from .servers import LiverecServer
from .tiny_model import train_tiny
from .wsclient import Client


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gru") / "m1"
    train_tiny(out)
    return out


def exact_top(model_dir: Path, items: list[str], k: int, blocked: set[str]) -> list[str]:
    model, _, index, _ = load_checkpoint(model_dir)
    with torch.inference_mode():
        h = model.init_hidden(1)
        for it in items:
            scores, h = model(torch.tensor([index.index[it]]), h)
    order = torch.argsort(scores[0], descending=True).tolist()
    return [index.ids[i] for i in order if index.ids[i] not in blocked][:k]


# The scoring these tests compare with exact float32 scoring: float32 GRU layers, on a
# thread of this process unless a test asks for the worker (the served defaults are
# int8 GRU layers in a worker process).
EXACT: dict[str, Any] = {"quantize_gru": False, "process": False}


def ctx(sid: str, items: list[str], k: int = 5, exclude: set[str] | None = None) -> RecContext:
    return RecContext(
        sid, list(items), k, current_item=items[-1] if items else None, exclude=exclude or set()
    )


@pytest.mark.parametrize(
    ("quantize", "rank"), [(True, 0), (False, 0), (True, 8)], ids=["int8", "fp32", "rank8"]
)
async def test_lists_equal_exact_scoring_and_step_equals_replay(
    checkpoint: Path, quantize: bool, rank: int
) -> None:
    # (48 items: k + model_rescore covers them all, so every shortlist is exact here)
    rec = GRURecommender(
        checkpoint, OnlineRecommender(), quantize=quantize, rank=rank, poll_s=None, **EXACT
    )
    seq = ["f1-0", "f1-1", "f1-2", "f2-5"]
    try:
        for n in range(1, len(seq) + 1):  # one event at a time: one GRU step each
            got = await rec.recommend(ctx("s", seq[:n]))
            want = exact_top(checkpoint, seq[:n], 5, {seq[n - 1]})
            assert [r.item_id for r in got.items] == want
            assert got.model == rec.version and got.model.startswith("gru4rec-")
        # a fresh recommender (another process) rebuilds the same state from the sequence
        other = GRURecommender(
            checkpoint, OnlineRecommender(), quantize=quantize, rank=rank, poll_s=None, **EXACT
        )
        again = await other.recommend(ctx("s", seq))
        assert again.items == got.items
        await other.close()
    finally:
        await rec.close()


def test_low_rank_shortlist_holds_the_exact_top_k() -> None:
    """Item matrix of rank 6 plus noise: a rank-12 shortlist of 60 (of 3,000 items)
    holds each row's exact top 10, blocked items never appear, and the factorisation
    at full rank reproduces every score."""
    g = torch.Generator().manual_seed(3)
    n, h = 3000, 32
    model = GRU4Rec(GRU4RecConfig(n_items=n, layers=(h,))).eval()
    with torch.no_grad():
        model.item_weight.copy_(
            torch.randn(n, 6, generator=g) @ torch.randn(6, h, generator=g)
            + 0.01 * torch.randn(n, h, generator=g)
        )
        model.item_bias.copy_(0.1 * torch.randn(n, generator=g))
    index = ItemIndex(str(i) for i in range(n))
    served = ServedModel.prepare(model, index, quantize=True, rank=12)
    assert served.proj is not None and served.proj.shape == (h + 1, 12)
    rows = SHORTLIST_ROWS + 5  # a batch shortlisted in two passes, the last one short
    out = torch.randn(rows, h, generator=g)
    exact_all = model.score_all(out)
    blocked = [[int(exact_all[r].argmax())] for r in range(rows)]  # each row's best item
    # the int8 scores stay close to the exact ones on every CPU (fbgemm saturated its
    # int16 pairs with 8-bit activations on AVX2 hosts: errors of 4x the scores' sd)
    for prepared in (served, ServedModel.prepare(model, index, quantize=True, rank=0)):
        error = (prepared.item_scores(out) - exact_all).abs().max()
        assert error < 0.1 * exact_all.std()
    cand = served.shortlist(out, blocked, 60)
    assert cand.shape == (rows, 60)
    for r in range(rows):
        row = exact_all[r].clone()
        row[blocked[r]] = float("-inf")
        want = set(torch.topk(row, 10).indices.tolist())
        assert want <= set(cand[r].tolist())
        assert blocked[r][0] not in cand[r].tolist()
    proj, items = low_rank(model.item_weight.data, model.item_bias.data, h + 1)
    approx = torch.addmm(proj[h], out, proj[:h]) @ items.t()
    assert torch.allclose(approx, exact_all, atol=1e-4)


async def test_rules_and_fallbacks(checkpoint: Path) -> None:
    online = OnlineRecommender()
    rec = GRURecommender(checkpoint, online, poll_s=None, **EXACT)
    try:
        got = await rec.recommend(ctx("a", ["f3-1"], k=8, exclude={"f3-2", "f3-3"}))
        ids = [r.item_id for r in got.items]
        assert len(ids) == len(set(ids)) == 8
        assert not {"f3-1", "f3-2", "f3-3"} & set(ids)
        # empty session and unknown current item: the online recommender answers
        assert (await rec.recommend(ctx("b", []))).model == "online"
        assert (await rec.recommend(ctx("c", ["f3-1", "brand-new"]))).model == "online"
        # k larger than the catalog: every allowed item once
        many = await rec.recommend(ctx("d", ["f0-0"], k=100))
        assert len({r.item_id for r in many.items}) == len(many.items) >= 47
    finally:
        await rec.close()


@pytest.mark.parametrize("pipeline", [1, 2])
async def test_concurrent_sessions_are_micro_batched(checkpoint: Path, pipeline: int) -> None:
    rec = GRURecommender(checkpoint, OnlineRecommender(), poll_s=None, pipeline=pipeline, **EXACT)
    await rec.start()
    try:
        seqs = [[f"f{i % 6}-{j % 8}" for j in range(i % 4 + 1)] for i in range(60)]
        results = await asyncio.gather(
            *(rec.recommend(ctx(f"s{i}", s)) for i, s in enumerate(seqs))
        )
        # the first `pipeline` calls go out alone, at once; the rest wait for an
        # answer and then go together
        assert rec.stats()["batches"] == pipeline + 1
        for seq, got in zip(seqs[:10], results[:10], strict=False):
            assert [r.item_id for r in got.items] == exact_top(checkpoint, seq, 5, {seq[-1]})
    finally:
        await rec.close()


def registry_at_v1(checkpoint: Path, tmp_path: Path) -> Path:
    """A models/ registry holding the checkpoint as v1, promoted."""
    registry = tmp_path / "models"
    shutil.copytree(checkpoint, registry / "v1")
    (registry / CURRENT).write_text("v1\n")
    return registry


def promote_new_model(registry: Path, name: str) -> None:
    """Train a different model into the registry and promote it."""
    train_tiny(registry / name, seed=9, data_seed=5)
    (registry / CURRENT).write_text(f"{name}\n")


async def test_hot_reload_from_registry_and_broken_checkpoint(
    checkpoint: Path, tmp_path: Path
) -> None:
    registry = registry_at_v1(checkpoint, tmp_path)
    rec = GRURecommender(registry, OnlineRecommender(), poll_s=0.05, **EXACT)
    await rec.start()
    try:
        first = rec.version
        await rec.recommend(ctx("s", ["f1-0", "f1-1"]))
        promote_new_model(registry, "v2")
        for _ in range(100):
            if rec.version != first:
                break
            await asyncio.sleep(0.05)
        assert rec.version != first
        got = await rec.recommend(ctx("s", ["f1-0", "f1-1", "f1-2"]))
        assert got.model == rec.version
        # a broken checkpoint is not loaded; the served model stays
        (registry / "v3").mkdir()
        (registry / "v3" / "meta.json").write_text(json.dumps({"format_version": 99}))
        (registry / "v3" / "model.safetensors").write_bytes(b"junk")
        (registry / CURRENT).write_text("v3\n")
        assert await rec.reload() is False
        assert (await rec.recommend(ctx("s", ["f1-3"]))).model == rec.version
    finally:
        await rec.close()


async def test_hot_reload_with_workers_retires_the_old_one(
    checkpoint: Path, tmp_path: Path
) -> None:
    registry = registry_at_v1(checkpoint, tmp_path)
    rec = GRURecommender(
        registry, OnlineRecommender(), poll_s=None, process=True, quantize_gru=False
    )
    await rec.start()
    try:
        first = rec.version
        old = rec._workers[first]
        await rec.recommend(ctx("s", ["f1-0", "f1-1"]))
        promote_new_model(registry, "v2")
        assert await rec.reload() is True
        assert rec.version != first and rec._workers[rec.version].alive
        got = await rec.recommend(ctx("s", ["f1-0", "f1-1", "f1-2"]))
        assert got.model == rec.version
        # the old version's worker is closed once no batch waits for it, and the task
        # that closed it is not kept
        assert list(rec._workers) == [rec.version]
        for _ in range(100):
            if not rec._closing:
                break
            await asyncio.sleep(0.05)
        assert not rec._closing
        assert not old.alive and not old._proc.is_alive()
    finally:
        await rec.close()


async def test_server_serves_the_model_over_the_socket(checkpoint: Path) -> None:
    server = LiverecServer("memory://", model_path=str(checkpoint)).start()
    try:
        async with await Client.open(server.ws_url) as c:
            welcome, recs = await c.hello(k=4)
            assert welcome["model"].startswith("gru4rec-")
            assert recs["model"] == "online"  # empty session: cold start from the fallback
            _, recs = await c.event("f2-3")
            assert recs["model"] == welcome["model"]
            ids = [r["item_id"] for r in recs["items"]]
            assert ids == exact_top(checkpoint, ["f2-3"], 4, {"f2-3"})
            assert np.all(np.diff([r["score"] for r in recs["items"]]) <= 1e-6)
            # the model's serving figures are in /metrics: one event, one batch so far
            metrics = server.get_text("/metrics")
            assert "# TYPE liverec_model_batches_total counter" in metrics
            assert re.search(r"^liverec_model_batches_total 1(\.0)?$", metrics, re.MULTILINE)
            assert re.search(r"^liverec_model_batched_events_total 1(\.0)?$", metrics, re.M)
            assert "liverec_model_sessions 1.0\n" in metrics
        for _ in range(50):  # a closed socket's state is dropped
            if "liverec_model_sessions 0.0\n" in server.get_text("/metrics"):
                break
            await asyncio.sleep(0.1)
        assert "liverec_model_sessions 0.0\n" in server.get_text("/metrics")
    finally:
        server.stop()


@pytest.mark.parametrize("threads", [1, 3])
async def test_model_threads_is_what_torch_serves_with(checkpoint: Path, threads: int) -> None:
    """`model_threads` reaches torch in the serving process: /metrics reads it back with
    torch.get_num_threads on the thread that scores batches (not the setting echoed)."""
    server = LiverecServer("memory://", model_path=str(checkpoint), model_threads=threads)
    server.start()
    try:
        metrics = server.get_text("/metrics")
        assert "# TYPE liverec_model_threads gauge" in metrics
        found = re.search(r"^liverec_model_threads (\S+)$", metrics, re.MULTILINE)
        assert found is not None and float(found.group(1)) == threads
    finally:
        server.stop()


async def test_empty_registry_serves_the_fallback_until_a_model_appears(
    checkpoint: Path, tmp_path: Path
) -> None:
    registry = tmp_path / "empty-models"
    registry.mkdir()
    rec = GRURecommender(registry, OnlineRecommender(), poll_s=0.05, **EXACT)
    await rec.start()
    try:
        assert rec.version == "online"
        assert (await rec.recommend(ctx("s", ["f1-0"]))).model == "online"
        shutil.copytree(checkpoint, registry / "v1")
        (registry / CURRENT).write_text("v1\n")
        for _ in range(100):
            if rec.version != "online":
                break
            await asyncio.sleep(0.05)
        assert rec.version.startswith("gru4rec-")
        assert (await rec.recommend(ctx("s", ["f1-0", "f1-1"]))).model == rec.version
    finally:
        await rec.close()
    with pytest.raises(ModelError):  # a path that does not exist is a configuration error
        GRURecommender(tmp_path / "typo", OnlineRecommender(), poll_s=None)


async def wait_for_new_worker(rec: GRURecommender, old_pid: int) -> None:
    """Wait (up to a minute: a worker imports torch and loads the model) until the
    served version has a running worker other than the process old_pid."""
    for _ in range(600):
        worker = rec._workers.get(rec.version)
        if worker is not None and worker.alive and worker.pid != old_pid:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("no new scoring worker started")


async def test_worker_process_scores_like_the_thread_and_survives_its_death(
    checkpoint: Path,
) -> None:
    seqs = [[f"f{i % 6}-{j % 8}" for j in range(i % 4 + 1)] for i in range(24)]
    local = GRURecommender(checkpoint, OnlineRecommender(), poll_s=None, **EXACT)
    await local.start()
    remote = GRURecommender(
        checkpoint, OnlineRecommender(), poll_s=None, process=True, quantize_gru=False
    )
    await remote.start()
    try:
        assert list(remote._workers) == [remote.version]
        assert remote._workers[remote.version].alive
        want = await asyncio.gather(*(local.recommend(ctx(f"s{i}", s)) for i, s in enumerate(seqs)))
        got = await asyncio.gather(*(remote.recommend(ctx(f"s{i}", s)) for i, s in enumerate(seqs)))
        for w, g in zip(want, got, strict=True):
            assert [r.item_id for r in g.items] == [r.item_id for r in w.items]
            assert [r.score for r in g.items] == pytest.approx([r.score for r in w.items], abs=1e-5)
        # the hidden states came back from the worker: the next step continues them
        nxt = await remote.recommend(ctx("s5", [*seqs[5], "f0-1"]))
        assert [r.item_id for r in nxt.items] == exact_top(
            checkpoint, [*seqs[5], "f0-1"], 5, {"f0-1"}
        )
        # a dead worker is noticed on the next call, that batch is scored on the thread,
        # and a new worker starts in the background
        proc = remote._workers[remote.version]._proc
        proc.kill()
        proc.join(5)
        again = await remote.recommend(ctx("s7", [*seqs[7], "f2-2"]))
        assert [r.item_id for r in again.items] == exact_top(
            checkpoint, [*seqs[7], "f2-2"], 5, {"f2-2"}
        )
        await wait_for_new_worker(remote, proc.pid)
        nxt = await remote.recommend(ctx("s8", [*seqs[8], "f2-3"]))
        assert [r.item_id for r in nxt.items] == exact_top(
            checkpoint, [*seqs[8], "f2-3"], 5, {"f2-3"}
        )
        assert remote.stats()["worker_starts"] == 2
    finally:
        await local.close()
        await remote.close()


async def test_a_hybrids_extra_scores_and_moments_come_back_from_the_worker_unchanged(
    checkpoint: Path,
) -> None:
    """The exact scores of asked items and the moments travel as raw bytes (int32
    items out, float32 scores back): the worker's answer is the thread's to the bit."""
    options: dict[str, Any] = {"poll_s": None, "quantize_gru": False, "moments": True}
    local = GRURecommender(checkpoint, OnlineRecommender(), process=False, **options)
    remote = GRURecommender(checkpoint, OnlineRecommender(), process=True, **options)
    await local.start()
    await remote.start()
    try:
        n = len(local.served.index) if local.served is not None else 0
        asked = np.array([n - 1, 0, 7, 3, n // 2], dtype=np.int64)
        for i, seq in enumerate([["f1-0", "f1-1"], ["f4-3"], ["f0-7", "f2-2", "f2-3"]]):
            c = ctx(f"s{i}", seq)
            want = await local.score(c, 5, asked)
            got = await remote.score(c, 5, asked)
            assert want is not None and got is not None
            assert want[0] == got[0]
            w, g = want[1], got[1]
            assert w is not None and g is not None
            assert g.scores.dtype == np.float32 and g.scores.tobytes() == w.scores.tobytes()
            assert (g.mean, g.sd) == (w.mean, w.sd)
    finally:
        await local.close()
        await remote.close()


def test_int8_gru_layers_stay_close_to_float32(checkpoint: Path) -> None:
    exact = ServedModel.load(checkpoint, quantize=False)
    small = ServedModel.load(checkpoint, quantize=True, quantize_gru=True)
    assert type(small.model.cells[0]).__module__.startswith("torch.ao.nn.quantized")
    for seq in (["f1-0", "f1-1", "f1-2"], ["f4-3", "f4-4"], ["f0-7"]):
        feed = [exact.index.index[i] for i in seq]
        (want, h_want, _), *_ = score_batch(exact, [ScoreInput(feed, None, [feed[-1]], 5)], 64)
        (got, h_got, _), *_ = score_batch(small, [ScoreInput(feed, None, [feed[-1]], 5)], 64)
        assert (h_got - h_want).abs().max() < 0.05
        assert {i for i, _ in got[:5]} == {i for i, _ in want[:5]}


async def test_a_hung_worker_is_replaced_and_its_batch_scored_here(checkpoint: Path) -> None:
    import os
    import signal

    rec = GRURecommender(
        checkpoint,
        OnlineRecommender(),
        poll_s=None,
        process=True,
        quantize_gru=False,
        score_timeout_s=0.5,
    )
    await rec.start()
    try:
        await rec.recommend(ctx("a", ["f1-0"]))
        hung = rec._workers[rec.version]._proc
        os.kill(hung.pid, signal.SIGSTOP)  # alive but never answers
        got = await rec.recommend(ctx("a", ["f1-0", "f1-1"]))
        assert [r.item_id for r in got.items] == exact_top(
            checkpoint, ["f1-0", "f1-1"], 5, {"f1-1"}
        )
        hung.join(5)
        assert not hung.is_alive()  # killed, not left behind
        await wait_for_new_worker(rec, hung.pid)
        await rec.recommend(ctx("b", ["f2-0"]))
    finally:
        await rec.close()


def test_top_candidates_is_the_topk_set() -> None:
    from liverec.recommend.gru.served import top_candidates

    gen = torch.Generator().manual_seed(0)
    wide = torch.randn(6, 20_000, generator=gen) * 2 + torch.randn(20_000, generator=gen)
    wide[1, :19_990] = float("-inf")  # blocked nearly all: the threshold path falls back
    wide[2, ::16] = -100.0  # a sample that sets the threshold far too low: still exact
    wide[3, ::16] = 100.0  # one that sets it too high: fewer pass, the row falls back
    narrow = torch.randn(3, 300, generator=gen)
    for scores, width in ((wide, 150), (wide, 1), (narrow, 20), (narrow, 500)):
        got = top_candidates(scores, width)
        want = torch.topk(scores, min(width, scores.shape[1]), dim=1)
        assert got.shape == want.indices.shape
        for r in range(len(scores)):  # the same values (ties may pick other indices)
            assert sorted(scores[r, got[r]].tolist()) == sorted(want.values[r].tolist())
