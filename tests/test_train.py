"""GRU4Rec training: session-parallel batches, sampler, losses, optimizer, loop."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from liverec.model.batching import session_parallel_batches
from liverec.model.checkpoint import load_checkpoint
from liverec.model.config import PRESETS, TrainConfig, get_preset
from liverec.model.data import ItemIndex, Sessions, encode
from liverec.model.gru4rec import GRU4Rec, GRU4RecConfig
from liverec.model.scorer import GRUScorer
from liverec.model.train import (
    PopularitySampler,
    SparseRowOptimizer,
    Trainer,
    bpr_max_loss,
    cross_entropy_loss,
    hugepage_zeros,
    train,
)

# ------------------------------------------------------------------ batching


def random_csr(rng: np.random.Generator, n_sessions: int) -> tuple[np.ndarray, np.ndarray]:
    lengths = rng.integers(0, 7, size=n_sessions)  # includes empty and length-1 sessions
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = np.arange(offsets[-1], dtype=np.int64)  # event i holds item i: pairs identify events
    return offsets, items


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("batch_size", [1, 3, 8, 50])
def test_batches_yield_every_pair_once_never_across_sessions(seed: int, batch_size: int) -> None:
    rng = np.random.default_rng(seed)
    offsets, items = random_csr(rng, int(rng.integers(1, 40)))
    order = rng.permutation(len(offsets) - 1) if seed % 2 else None
    session_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    expected = {
        (i, i + 1) for s in range(len(offsets) - 1) for i in range(offsets[s], offsets[s + 1] - 1)
    }
    seen: list[tuple[int, int]] = []
    last_target: dict[int, int] = {}  # slot -> target of its previous row
    for b in session_parallel_batches(offsets, items, batch_size, order):
        assert len(b.slots) == len(b.inputs) == len(b.targets) == len(b.new) > 0
        assert len(b.slots) <= batch_size and np.all(np.diff(b.slots) > 0)
        assert b.full == (len(b.slots) == batch_size)
        for slot, x, y, new in zip(b.slots, b.inputs, b.targets, b.new, strict=True):
            assert session_of[x] == session_of[y]  # never a pair across sessions
            if new:  # the slot starts a session: x is its first event
                assert x == offsets[session_of[x]]
            else:  # the slot continues: x is what it predicted one step earlier
                assert last_target[int(slot)] == x
            last_target[int(slot)] = int(y)
            seen.append((int(x), int(y)))
    assert len(seen) == len(set(seen))
    assert set(seen) == expected


def test_batches_fill_slots_in_order_and_flag_new_once() -> None:
    # sessions: [0 1 2] [3 4] [5] [6 7 8 9]; batch 2
    offsets = np.array([0, 3, 5, 6, 10])
    items = np.arange(10, dtype=np.int64)
    got = [
        (b.slots.tolist(), b.inputs.tolist(), b.targets.tolist(), b.new.tolist())
        for b in session_parallel_batches(offsets, items, 2)
    ]
    assert got == [
        ([0, 1], [0, 3], [1, 4], [True, True]),
        ([0, 1], [1, 6], [2, 7], [False, True]),  # slot 1: session [3 4] done, [5] skipped
        ([1], [7], [8], [False]),  # slot 0 idle: no session left
        ([1], [8], [9], [False]),
    ]


def test_batches_empty_and_bad_size() -> None:
    assert list(session_parallel_batches(np.array([0, 1, 2]), np.arange(2), 4)) == []
    with pytest.raises(ValueError):
        list(session_parallel_batches(np.array([0, 2]), np.arange(2), 0))


# ------------------------------------------------------------------ sampler


def test_sampler_draws_by_popularity_power_alpha() -> None:
    counts = np.array([1.0, 16.0, 81.0, 0.0, 256.0])
    alpha = 0.5
    sampler = PopularitySampler(counts, alpha, 1000, np.random.default_rng(0), chunk=7)
    draws = torch.cat([sampler() for _ in range(200)]).numpy()  # spans several chunks
    freq = np.bincount(draws, minlength=5) / len(draws)
    expected = counts**alpha / (counts**alpha).sum()  # [1, 4, 9, 0, 16] / 30
    assert freq[3] == 0.0  # never drawn: no support
    np.testing.assert_allclose(freq, expected, atol=0.005)
    # not the raw popularity (alpha = 1) nor uniform
    assert abs(freq[4] - 256 / 354) > 0.1 and abs(freq[0] - 0.25) > 0.1


def test_sampler_alpha_zero_is_uniform_and_deterministic() -> None:
    counts = np.array([1.0, 100.0, 10_000.0])
    a = PopularitySampler(counts, 0.0, 3000, np.random.default_rng(1), chunk=4)
    b = PopularitySampler(counts, 0.0, 3000, np.random.default_rng(1), chunk=4)
    da, db = torch.cat([a() for _ in range(10)]), torch.cat([b() for _ in range(10)])
    assert torch.equal(da, db)
    np.testing.assert_allclose(np.bincount(da.numpy()) / len(da), [1 / 3] * 3, atol=0.01)


# ------------------------------------------------------------------ losses


def test_cross_entropy_hand_computed() -> None:
    scores = torch.tensor([[2.0, 0.0, 1.0], [0.5, -1.0, 0.0]])
    row0 = -math.log(math.exp(2.0) / (math.exp(2.0) + 1.0 + math.exp(1.0)))
    row1 = -math.log(math.exp(-1.0) / (math.exp(0.5) + math.exp(-1.0) + 1.0))
    assert cross_entropy_loss(scores).item() == pytest.approx(row0 + row1, rel=1e-6)


def bpr_max_reference(scores: list[list[float]], bpreg: float) -> float:
    total = 0.0
    for i, row in enumerate(scores):
        negs = [(j, r) for j, r in enumerate(row) if j != i]  # the target is not a negative
        z = sum(math.exp(r) for _, r in negs)
        s = {j: math.exp(r) / z for j, r in negs}
        sig = sum(s[j] / (1 + math.exp(-(row[i] - r))) for j, r in negs)
        reg = sum(s[j] * r * r for j, r in negs)
        total += -math.log(sig) + bpreg * reg  # summed over the batch, not averaged
    return total


def test_bpr_max_hand_computed() -> None:
    raw = [[1.5, 0.2, -0.3, 0.9], [0.1, -0.4, 2.0, 0.0]]
    for bpreg in (0.0, 0.9):
        got = bpr_max_loss(torch.tensor(raw), bpreg).item()
        assert got == pytest.approx(bpr_max_reference(raw, bpreg), rel=1e-5)


def test_bpr_max_target_outside_softmax_and_regulariser_weighted() -> None:
    scores = torch.tensor([[3.0, 1.0, -1.0]])
    # moving only the target score must not change the weights: d reg / d r_target = 0
    s = scores.clone().requires_grad_()
    reg_only = bpr_max_loss(s, 1.0) - bpr_max_loss(s, 0.0)
    (g,) = torch.autograd.grad(reg_only, s)
    assert g[0, 0].item() == 0.0
    w = torch.softmax(torch.tensor([1.0, -1.0]), 0)
    assert reg_only.item() == pytest.approx((w * torch.tensor([1.0, 1.0])).sum().item())


# ------------------------------------------------------------------ optimizer


@pytest.mark.parametrize("nesterov", [True, False])
def test_adagrad_momentum_dense_and_rows_match_hand_computation(nesterov: bool) -> None:
    cfg = TrainConfig(learning_rate=0.1, momentum=0.5, eps=1e-6, nesterov=nesterov)
    p = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    opt = SparseRowOptimizer({"w": p}, cfg)
    g1 = torch.tensor([[0.5, -1.0], [2.0, 0.0], [1.0, 1.0]])
    g2 = torch.tensor([[1.0, 1.0], [0.0, 3.0], [-1.0, 0.5]])
    opt.step_dense("w", g1)
    opt.step_dense("w", g2)
    ref = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=torch.float64)
    acc = torch.zeros(3, 2, dtype=torch.float64)
    vel = torch.zeros(3, 2, dtype=torch.float64)
    for g in (g1.double(), g2.double()):
        acc += g * g
        u = 0.1 * g / torch.sqrt(acc + 1e-6)
        vel = 0.5 * vel + u
        ref -= 0.5 * vel + u if nesterov else vel
    torch.testing.assert_close(p.double(), ref, rtol=1e-6, atol=1e-6)

    # row-sparse: only the given rows change, exactly like the dense rule on them
    q = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    opt2 = SparseRowOptimizer({"w": q}, cfg)
    rows = torch.tensor([0, 2])
    opt2.step_rows("w", rows, g1[rows])
    opt2.step_rows("w", rows, g2[rows])
    torch.testing.assert_close(q[rows].double(), ref[rows], rtol=1e-6, atol=1e-6)
    assert q[1].tolist() == [3.0, 4.0]
    acc2, vel2 = opt2.slots("w")
    assert vel2 is not None
    assert acc2[1].tolist() == [0.0, 0.0] and vel2[1].tolist() == [0.0, 0.0]
    assert acc2[0].tolist() != [0.0, 0.0] and vel2[2].tolist() != [0.0, 0.0]


def test_adam_rows_match_dense() -> None:
    cfg = TrainConfig(optimizer="adam", learning_rate=0.01)
    a, b = torch.ones(4, 3), torch.ones(4, 3)
    oa, ob = SparseRowOptimizer({"w": a}, cfg), SparseRowOptimizer({"w": b}, cfg)
    for k in range(3):
        g = torch.full((4, 3), float(k + 1))
        oa.step_dense("w", g)
        ob.step_rows("w", torch.arange(4), g)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, torch.ones(4, 3))


def test_hugepage_zeros() -> None:
    for shape in [(3, 4), (2048, 1024)]:  # small: plain tensor; large: huge-page mapping
        t = hugepage_zeros(shape)
        assert t.shape == shape and t.dtype == torch.float32 and not t.any()
        t[-1, -1] = 2.0
        assert t.sum().item() == 2.0


# ------------------------------------------------------------------ trainer


def tiny_config(**kw: object) -> TrainConfig:
    base = TrainConfig(
        model=GRU4RecConfig(layers=(8,), dropout_p_embed=0.0, dropout_p_hidden=0.0),
        n_sample=5,
        batch_size=4,
        n_epochs=1,
        threads=1,
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("loss", ["bpr-max", "cross-entropy"])
@pytest.mark.parametrize("constrained", [True, False])
def test_sparse_gradients_equal_dense_autograd(loss: str, constrained: bool) -> None:
    torch.manual_seed(0)
    cfg = tiny_config(loss=loss, logq=0.5 if loss == "cross-entropy" else 0.0)
    mcfg = dataclasses.replace(cfg.model, n_items=12, constrained_embedding=constrained)
    cfg = dataclasses.replace(cfg, model=mcfg)
    model = GRU4Rec(mcfg)
    counts = np.arange(1.0, 13.0)
    trainer = Trainer(model, cfg, counts, seed=0)
    x = torch.tensor([1, 1, 5, 7])  # a repeated input row: its gradients must add up
    t = torch.tensor([2, 5, 5, 9])  # repeated targets; 5 is also an input
    neg = torch.tensor([2, 3, 3, 11, 1])
    h = torch.randn(1, 4, 8)
    loss_sparse, _, grads = trainer.gradients(x, t, h, neg)

    ref = GRU4Rec(mcfg)
    ref.load_state_dict(model.state_dict())
    y = torch.cat([t, neg])
    out, _ = ref.step(ref.input_table[x], h)
    scores = out @ ref.item_weight[y].t() + ref.item_bias[y]
    if loss == "cross-entropy":
        # expected share among the candidates: 4 in-batch targets ~ support,
        # 5 samples ~ support^0.3
        q = 4 * counts / counts.sum() + 5 * counts**0.3 / (counts**0.3).sum()
        scores = scores - 0.5 * torch.log(torch.tensor(q, dtype=torch.float32)[y])
        loss_dense = cross_entropy_loss(scores)
    else:
        loss_dense = bpr_max_loss(torch.nn.functional.elu(scores, alpha=1.0), 0.9)
    (loss_dense / cfg.batch_size).backward()  # batch_mean (the default): the mean's gradient
    assert loss_sparse.item() == pytest.approx(loss_dense.item(), rel=1e-5)
    dense_grads = dict(ref.named_parameters())
    for name, (rows, g) in grads.items():
        full = dense_grads[name].grad
        assert full is not None
        if rows is None:
            torch.testing.assert_close(g, full)
        else:
            torch.testing.assert_close(g, full[rows])
            untouched = torch.ones(len(full), dtype=torch.bool)
            untouched[rows] = False
            assert not full[untouched].any()  # no gradient outside the gathered rows


def test_batch_mean_steps_on_the_loss_divided_by_the_batch_size() -> None:
    """batch_mean: the reported loss is still the batch's sum, every gradient is the
    summed loss's divided by batch_size (which Adagrad sees only through eps)."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny_config(), batch_size=4, batch_mean=False)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, n_items=12))
    model = GRU4Rec(cfg.model)
    x, t = torch.tensor([1, 1, 5, 7]), torch.tensor([2, 5, 5, 9])
    neg, h = torch.tensor([2, 3, 11]), torch.randn(1, 4, 8)
    counts = np.arange(1.0, 13.0)
    loss_sum, _, g_sum = Trainer(model, cfg, counts, seed=0).gradients(x, t, h, neg)
    mean_cfg = dataclasses.replace(cfg, batch_mean=True)
    loss_mean, _, g_mean = Trainer(model, mean_cfg, counts, seed=0).gradients(x, t, h, neg)
    assert loss_mean.item() == pytest.approx(loss_sum.item())
    for name, (rows, g) in g_sum.items():
        rows_m, gm = g_mean[name]
        assert (rows is None) == (rows_m is None)
        torch.testing.assert_close(gm, g / 4)


def test_gradients_use_shared_sampled_negatives() -> None:
    torch.manual_seed(0)
    cfg = tiny_config(n_sample=64)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, n_items=1000))
    counts = np.zeros(1000)
    counts[500:] = 1.0  # only items 500.. can be sampled
    trainer = Trainer(GRU4Rec(cfg.model), cfg, counts, seed=0)
    x, t = torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6, 7, 8])
    _, _, grads = trainer.gradients(x, t, torch.zeros(1, 4, 8))
    rows, g = grads["item_bias"]
    assert rows is not None
    sampled = rows[rows >= 500]
    assert set(rows.tolist()) - set(sampled.tolist()) == {5, 6, 7, 8}
    assert len(sampled) > 40  # ~64 draws from 500 items, few repeats
    assert g.abs().min() > 0  # every candidate, sampled ones included, gets a gradient


class RecordingTrainer(Trainer):
    """Records the hidden state each mini-batch starts from."""

    calls: list[tuple[torch.Tensor, torch.Tensor]]

    def step(
        self, x_items: torch.Tensor, targets: torch.Tensor, hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        loss, new = super().step(x_items, targets, hidden)
        self.calls.append((hidden.clone(), new.clone()))
        return loss, new


def test_epoch_resets_only_new_sessions_slots_once() -> None:
    sessions = [["a", "b", "c", "d"], ["e", "f"], ["g", "h", "i"], ["j", "k"], ["l", "m", "n"]]
    index = ItemIndex(sorted({i for s in sessions for i in s}))
    offsets, items, _ = encode(Sessions.from_lists(sessions), index)
    cfg = dataclasses.replace(
        tiny_config(batch_size=2), model=GRU4RecConfig(n_items=14, layers=(8,))
    )
    trainer = RecordingTrainer(GRU4Rec(cfg.model), cfg, np.ones(14), seed=0)
    trainer.calls = []
    trainer.epoch(offsets, items)
    batches = list(session_parallel_batches(offsets, items, 2))
    assert len(trainer.calls) == len(batches)
    state: dict[int, torch.Tensor] = {}
    for b, (h_in, h_out) in zip(batches, trainer.calls, strict=True):
        for r, (slot, new) in enumerate(zip(b.slots.tolist(), b.new.tolist(), strict=True)):
            if new:
                assert not h_in[:, r].any()  # zero before the session's first input
            else:  # continuing: exactly the state this slot left, not reset again
                torch.testing.assert_close(h_in[:, r], state[slot])
            state[slot] = h_out[:, r]
        assert h_out.abs().sum() > 0


def sequential_sessions(n_sessions: int, n_items: int, seed: int) -> Sessions:
    """Sessions walking i -> i+1 (mod n_items): perfectly predictable."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_sessions):
        start, length = int(rng.integers(n_items)), int(rng.integers(2, 7))
        out.append([f"i{(start + k) % n_items}" for k in range(length)])
    return Sessions.from_lists(out)


def top1_accuracy(scorer: GRUScorer, index: ItemIndex, sessions: Sessions) -> float:
    hits = total = 0
    for s in range(sessions.n_sessions):
        codes = index.encode(sessions.session(s))
        scorer.reset(1)
        for k in range(len(codes) - 1):
            sc = scorer.step(np.array([0]), codes[k : k + 1], np.array([k == 0]))
            hits += int(sc[0].argmax() == codes[k + 1])
            total += 1
    return hits / total


@pytest.mark.parametrize("name", ["diginetica", "rsc15"])
def test_train_learns_and_saves(tmp_path: object, name: str) -> None:
    from pathlib import Path

    out = Path(str(tmp_path)) / "m"
    train_s = sequential_sessions(300, 20, seed=1)
    test_s = sequential_sessions(40, 20, seed=2)
    preset = get_preset(name)
    cfg = dataclasses.replace(
        preset,
        model=dataclasses.replace(preset.model, layers=(32,)),
        n_sample=16,
        batch_size=16,
        n_epochs=4,
        threads=1,
    )
    evals: list[float] = []

    def eval_fn(model: GRU4Rec) -> dict[str, float]:
        assert not model.training
        evals.append(top1_accuracy(GRUScorer(model), index, test_s))
        return {"top1": evals[-1]}

    index = ItemIndex.from_sessions(train_s)
    res = train(train_s, cfg, out_dir=out, item_index=index, progress=False, eval_fn=eval_fn)
    assert len(res.epochs) == 4 and evals[-1] > 0.9
    assert res.epochs[-1].loss < res.epochs[0].loss
    assert all(e.pairs == train_s.n_events - train_s.n_sessions for e in res.epochs)
    assert res.config.model.n_items == 20
    assert all(p.requires_grad for p in res.model.parameters())
    model, config, idx, meta = load_checkpoint(out)
    assert config == res.config and idx.ids == index.ids
    assert meta["evaluation"] == {"top1": evals[-1]}
    assert len(meta["training"]["epochs"]) == 4 and meta["data_fingerprint"]
    for k, v in res.model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    json.dumps(meta)


def test_train_is_deterministic() -> None:
    s = sequential_sessions(60, 15, seed=3)
    cfg = tiny_config(
        model=GRU4RecConfig(layers=(8,), dropout_p_embed=0.3, dropout_p_hidden=0.3),
        shuffle=True,
        n_epochs=2,
    )
    a = train(s, cfg, progress=False)
    b = train(s, cfg, progress=False)
    c = train(s, dataclasses.replace(cfg, seed=7), progress=False)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
    assert not torch.equal(a.model.item_weight, c.model.item_weight)


def test_train_adam_and_unknown_items_dropped() -> None:
    s = sequential_sessions(100, 10, seed=4)
    index = ItemIndex([f"i{k}" for k in range(8)])  # i8, i9 unknown: their events dropped
    res = train(
        s,
        tiny_config(optimizer="adam", learning_rate=0.01, n_epochs=3),
        item_index=index,
        progress=False,
    )
    assert res.config.model.n_items == 8
    assert res.epochs[-1].loss < res.epochs[0].loss
    offsets, _, _ = encode(s, index)
    assert res.epochs[0].pairs == int((np.diff(offsets) - 1).sum())


def test_train_rejects_data_without_pairs() -> None:
    with pytest.raises(ValueError, match="nothing to train"):
        train(Sessions.from_lists([["a"], ["b"]]), tiny_config(), progress=False)


# ------------------------------------------------------------------ config


def test_defaults_are_the_official_diginetica_parameters() -> None:
    c = TrainConfig()
    assert PRESETS["diginetica"] == c
    assert c.model.layers == (512,) and c.model.constrained_embedding
    assert (c.model.dropout_p_embed, c.model.dropout_p_hidden) == (0.5, 0.3)
    assert (c.loss, c.elu_param, c.bpreg, c.logq) == ("bpr-max", 1.0, 0.9, 0.0)
    assert (c.n_sample, c.sample_alpha, c.batch_size, c.n_epochs) == (2048, 0.3, 128, 10)
    assert (c.optimizer, c.learning_rate, c.momentum) == ("adagrad", 0.05, 0.15)
    assert (c.nesterov, c.batch_mean, c.eps) == (False, True, 1e-6)


def test_rsc15_preset() -> None:
    c = get_preset("rsc15")
    assert c.model.layers == (100,) and c.model.constrained_embedding
    assert (c.model.dropout_p_embed, c.model.dropout_p_hidden) == (0.0, 0.4)
    assert (c.loss, c.logq, c.n_sample, c.sample_alpha) == ("cross-entropy", 1.0, 2048, 0.5)
    assert (c.batch_size, c.learning_rate, c.momentum, c.n_epochs) == (32, 0.2, 0.0, 10)
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("nope")


def test_config_dict_round_trip_and_validation() -> None:
    c = get_preset("rsc15")
    d = json.loads(json.dumps(c.to_dict()))
    assert TrainConfig.from_dict(d) == c
    with pytest.raises(ValueError, match="unknown config keys"):
        TrainConfig.from_dict({**d, "lr": 1})
    with pytest.raises(ValueError):
        dataclasses.replace(c, loss="top1").validate()
    with pytest.raises(ValueError):
        GRU4RecConfig(n_items=5, dropout_p_hidden=1.0).validate()
