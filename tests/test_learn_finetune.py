"""Warm-starting a candidate: the vocabulary grows, known items keep their index and
rows, new rows are initialised like a fresh model's; fine-tuning learns new items."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

from liverec.learn.finetune import Stopped, finetune, grow, retrain
from liverec.model.data import ItemIndex, Sessions
from liverec.model.evaluate import evaluate
from liverec.model.gru4rec import GRU4Rec, GRU4RecConfig
from liverec.model.scorer import GRUScorer

from .test_learn import tiny_train


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Training threads are the caller's choice (the learner sets learn_threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def chains(families: list[str], n: int) -> Sessions:
    """Every session walks 4 steps along one family's chain of 6 items."""
    return Sessions.from_lists(
        [[f"{families[s % len(families)]}-{(s + j) % 6}" for j in range(4)] for s in range(n)]
    )


@pytest.mark.parametrize("constrained", [True, False])
def test_grow_keeps_known_rows_and_initialises_new_ones(constrained: bool) -> None:
    torch.manual_seed(0)
    config = GRU4RecConfig(n_items=5, layers=(8,), constrained_embedding=constrained)
    parent = GRU4Rec(config)
    index = ItemIndex(["a", "b", "c", "d", "e"])
    rng_before = torch.random.get_rng_state()
    child, grown = grow(parent, index, ["x", "b", "y"], seed=3)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # global RNG untouched
    assert grown.ids == ["a", "b", "c", "d", "e", "x", "y"]  # known ones keep their index
    assert index.ids == ["a", "b", "c", "d", "e"]  # the parent's index is not changed
    assert child.config.n_items == 7 and child.config.layers == (8,)
    assert torch.equal(child.item_weight[:5], parent.item_weight)
    assert torch.equal(child.item_bias[:5], parent.item_bias)
    if not constrained:
        assert child.embed_weight is not None and parent.embed_weight is not None
        assert torch.equal(child.embed_weight[:5], parent.embed_weight)
    theirs = parent.cells.state_dict()
    for name, mine in child.cells.state_dict().items():
        assert torch.equal(mine, theirs[name])
    new = child.item_weight[5:]  # (2, H): uniform in +-sqrt(6 / (n_items + H)), as reset
    bound = math.sqrt(6 / (7 + 8))
    assert new.abs().max() <= bound and new.abs().max() > 0 and new.std() > 0.05
    assert torch.equal(child.item_bias[5:], torch.zeros(2))
    again, _ = grow(parent, index, ["x", "y"], seed=3)
    assert torch.equal(again.item_weight, child.item_weight)  # deterministic per seed


def test_finetune_learns_the_new_items_and_retrain_forgets_the_old() -> None:
    old = retrain(chains(["f0", "f1", "f2"], 300), tiny_train())
    assert len(old.item_index) == 18 and old.new_items == 18
    window = chains(["f0", "n0"], 300)
    cand = finetune(old.model, old.item_index, window, tiny_train())
    assert cand.new_items == 6 and len(cand.item_index) == 24
    assert cand.item_index.ids[:18] == old.item_index.ids
    assert cand.config.model.n_items == 24 and cand.pairs == 300 * 3
    test = chains(["n0"], 12)
    res = evaluate(GRUScorer(cand.model), cand.item_index, test, ks=(1,))
    assert res["recall@1"] == 1.0  # the chain of the new family is learned
    fresh = retrain(window, tiny_train())
    assert "f1-0" not in fresh.item_index and len(fresh.item_index) == 12


def test_training_stops_between_epochs_when_asked() -> None:
    with pytest.raises(Stopped):
        retrain(chains(["f0"], 50), tiny_train(), stop=lambda: True)
    with pytest.raises(ValueError, match="nothing to train on"):
        retrain(Sessions.from_lists([["a"], ["b"]]), tiny_train())
