"""GRU4Rec module, evaluation scorer and checkpoints."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from liverec.errors import ModelError
from liverec.model.checkpoint import (
    META,
    WEIGHTS,
    load_checkpoint,
    save_checkpoint,
)
from liverec.model.config import TrainConfig
from liverec.model.data import ItemIndex
from liverec.model.gru4rec import GRU4Rec, GRU4RecConfig
from liverec.model.scorer import GRUScorer, load_scorer


def make_model(
    n_items: int = 30, layers: tuple[int, ...] = (16,), constrained: bool = True, **kw: float
) -> GRU4Rec:
    torch.manual_seed(0)
    cfg = GRU4RecConfig(
        n_items=n_items, layers=layers, constrained_embedding=constrained, embedding=6, **kw
    )
    model = GRU4Rec(cfg)
    with torch.no_grad():  # non-zero biases so that tests see them
        model.item_bias.normal_()
    return model.eval()


# ------------------------------------------------------------------ module


def test_init_uniform_glorot_bounds_and_zero_biases() -> None:
    torch.manual_seed(0)
    m = GRU4Rec(GRU4RecConfig(n_items=500, layers=(64,)))
    bound = math.sqrt(6 / (500 + 64))
    w = m.item_weight
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    assert not m.item_bias.any()
    cell = m.cells[0]
    assert isinstance(cell, torch.nn.GRUCell)
    gate_bound = math.sqrt(6 / (64 + 64))
    for blk in range(3):
        for mat in (cell.weight_ih, cell.weight_hh):
            part = mat[blk * 64 : (blk + 1) * 64]
            assert part.abs().max() <= gate_bound and part.abs().max() > 0.9 * gate_bound
    assert cell.bias_ih is not None and cell.bias_hh is not None
    assert not cell.bias_ih.any() and not cell.bias_hh.any()


def test_constrained_embedding_shares_the_item_matrix() -> None:
    m = make_model(constrained=True)
    assert m.input_table is m.item_weight and m.embed_weight is None
    names = {n for n, _ in m.named_parameters()}
    assert "embed_weight" not in names
    u = make_model(constrained=False)
    assert u.embed_weight is not None and u.input_table is u.embed_weight
    assert tuple(u.input_table.shape) == (30, 6)


def test_dropout_rates_are_drop_probabilities_and_separate() -> None:
    m = make_model(layers=(400,), dropout_p_embed=0.0, dropout_p_hidden=0.75).train()
    x = m.item_weight[:8].detach()
    h0 = torch.randn(1, 8, 400)
    out, h1 = m.step(x, h0)
    with torch.no_grad():
        full = m.cells[0](x, h0[0])  # no embedding dropout here
    kept = out != 0
    assert 0.15 < kept.float().mean().item() < 0.35  # 0.75 is the DROP probability
    torch.testing.assert_close(out[kept], full[kept] / 0.25)  # inverted dropout
    # the dropped-out output is also the state carried to the next event
    torch.testing.assert_close(h1[0], out)
    # embedding dropout applies to the input, at its own rate
    e = make_model(layers=(400,), dropout_p_embed=0.5, dropout_p_hidden=0.0).train()
    out2, h2 = e.step(e.item_weight[:8].detach(), h0)
    torch.testing.assert_close(out2, h2[0])
    with torch.no_grad():
        ref = e.cells[0](e.item_weight[:8], h0[0])
    assert not torch.allclose(h2[0], ref)
    # eval: no dropout at all
    m.eval()
    out3, h3 = m.step(x, h0)
    torch.testing.assert_close(out3, h3[0])
    torch.testing.assert_close(out3, full)


def test_forward_scores_all_items_and_stacks_layers() -> None:
    m = make_model(layers=(16, 12))
    items = torch.tensor([3, 7])
    h = m.init_hidden(2)
    assert tuple(h.shape) == (2, 2, 16)
    scores, h1 = m(items, h)
    assert tuple(scores.shape) == (2, 30) and tuple(h1.shape) == (2, 2, 16)
    assert not h1[1, :, 12:].any()  # smaller top layer padded
    out, _ = m.step(m.input_table[items], h)
    torch.testing.assert_close(scores, out @ m.item_weight.t() + m.item_bias)


# ------------------------------------------------------------------ scorer


def run_alone(model: GRU4Rec, items: list[int]) -> list[np.ndarray]:
    """Scores after each item of one session, from a zero state, one at a time."""
    h = model.init_hidden(1)
    out = []
    with torch.no_grad():
        for i in items:
            s, h = model(torch.tensor([i]), h)
            out.append(s[0].numpy())
    return out


@pytest.mark.parametrize("layers", [(16,), (16, 16)])
def test_scorer_slots_are_independent_and_reset_only_when_new(layers: tuple[int, ...]) -> None:
    m = make_model(layers=layers)
    sc = GRUScorer(m)
    assert sc.n_items == 30 and sc.name == "gru4rec"
    a, b, c = [1, 2, 3, 4], [5, 6, 7], [8, 9]
    ref_a, ref_b, ref_c = run_alone(m, a), run_alone(m, b), run_alone(m, c)
    sc.reset(3)
    # slot 0 runs a; slot 2 runs b then c; slot 1 stays idle
    got = sc.step(np.array([0, 2]), np.array([a[0], b[0]]), np.array([True, True]))
    np.testing.assert_allclose(got, np.stack([ref_a[0], ref_b[0]]), rtol=1e-5, atol=1e-6)
    got = sc.step(np.array([2]), np.array([b[1]]), np.array([False]))
    np.testing.assert_allclose(got[0], ref_b[1], rtol=1e-5, atol=1e-6)
    assert not sc.hidden[:, 1].any()  # an idle slot is untouched
    h0_before = sc.hidden[:, 0].clone()
    got = sc.step(np.array([2]), np.array([b[2]]), np.array([False]))
    assert torch.equal(sc.hidden[:, 0], h0_before)  # slot 0 untouched by slot 2's step
    for k in range(1, 4):
        # slot 2 switches to session c on its first step there: state zeroed first
        rows, its, new = [0], [a[k]], [False]
        if k <= len(c):
            rows, its, new = [0, 2], [a[k], c[k - 1]], [False, k == 1]
        got = sc.step(np.array(rows), np.array(its), np.array(new))
        np.testing.assert_allclose(got[0], ref_a[k], rtol=1e-5, atol=1e-6)
        if len(rows) == 2:
            np.testing.assert_allclose(got[1], ref_c[k - 1], rtol=1e-5, atol=1e-6)
    sc.reset(3)
    assert not sc.hidden.any()


def test_scorer_output_and_validation() -> None:
    sc = GRUScorer(make_model())
    sc.reset(2)
    out = sc.step(np.array([1]), np.array([4]), np.array([True]))
    assert out.dtype == np.float32 and out.shape == (1, 30)
    with pytest.raises(ValueError):
        sc.step(np.array([0]), np.array([30]), np.array([True]))
    with pytest.raises(ValueError):
        sc.step(np.array([2]), np.array([1]), np.array([True]))
    with pytest.raises(ValueError):
        sc.step(np.array([0, 1]), np.array([1]), np.array([True]))


# ------------------------------------------------------------------ checkpoints


def saved(tmp_path: Path, constrained: bool = True) -> tuple[Path, GRU4Rec, ItemIndex]:
    m = make_model(constrained=constrained)
    index = ItemIndex([f"item{k}" for k in range(30)])
    cfg = TrainConfig(model=m.config)
    d = save_checkpoint(
        tmp_path / "ckpt", m, cfg, index, {"data_fingerprint": "abc", "parent": "gru4rec-x"}
    )
    return d, m, index


@pytest.mark.parametrize("constrained", [True, False])
def test_checkpoint_round_trip(tmp_path: Path, constrained: bool) -> None:
    d, m, index = saved(tmp_path, constrained)
    assert sorted(p.name for p in d.iterdir()) == sorted([WEIGHTS, META])
    model, cfg, idx, meta = load_checkpoint(d)
    assert cfg.model == m.config and idx.ids == index.ids and not model.training
    for k, v in m.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    assert re.fullmatch(r"gru4rec-\d{8}-\d{6}-[0-9a-f]{8}", meta["version"])
    assert meta["format_version"] == 1 and meta["parent"] == "gru4rec-x"
    assert meta["data_fingerprint"] == "abc" and meta["liverec_version"]
    assert meta["config"]["model"]["layers"] == [16]
    scorer, idx2 = load_scorer(d)
    assert scorer.name == meta["version"] and idx2.ids == index.ids
    scorer.reset(1)
    np.testing.assert_allclose(
        scorer.step(np.array([0]), np.array([3]), np.array([True]))[0],
        run_alone(m, [3])[0],
        rtol=1e-6,
    )
    # the weights file is safetensors (8-byte header length + JSON), not a pickle
    raw = (d / WEIGHTS).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8 : 8 + n])["item_weight"]["shape"] == [30, 16]


def test_checkpoint_version_changes_with_weights(tmp_path: Path) -> None:
    d, m, index = saved(tmp_path)
    v1 = json.loads((d / META).read_text())["version"]
    with torch.no_grad():
        m.item_bias.add_(1.0)
    save_checkpoint(tmp_path / "b", m, TrainConfig(model=m.config), index)
    v2 = json.loads((tmp_path / "b" / META).read_text())["version"]
    assert v1[-8:] != v2[-8:]


def test_load_errors_are_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="missing"):
        load_checkpoint(tmp_path / "nothing")
    d, m, _ = saved(tmp_path)
    meta = json.loads((d / META).read_text())

    def write(**changes: object) -> None:
        (d / META).write_text(json.dumps({**meta, **changes}))

    write(format_version=99)
    with pytest.raises(ModelError, match="format"):
        load_checkpoint(d)
    write(config={**meta["config"], "model": {**meta["config"]["model"], "layers": [8]}})
    with pytest.raises(ModelError, match="expected"):  # wrong shapes
        load_checkpoint(d)
    write(items=meta["items"][:-1])
    with pytest.raises(ModelError, match="item ids"):
        load_checkpoint(d)
    write(config={**meta["config"], "nonsense": 1})
    with pytest.raises(ModelError, match="bad metadata"):
        load_checkpoint(d)
    (d / META).write_text("{not json")
    with pytest.raises(ModelError, match="unreadable"):
        load_checkpoint(d)
    write()
    (d / WEIGHTS).write_bytes(b"\x00" * 20)
    with pytest.raises(ModelError, match="weights"):
        load_checkpoint(d)
    (d / WEIGHTS).unlink()
    with pytest.raises(ModelError, match="missing"):
        load_checkpoint(d)
    with pytest.raises(ModelError):
        save_checkpoint(tmp_path / "c", m, TrainConfig(model=m.config), ItemIndex(["x"]))
