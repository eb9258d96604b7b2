"""Training a candidate model on a window of recent sessions.

Owns: `grow` (a GRU4Rec whose vocabulary is its parent's plus new items: the rows of
known items and the GRU weights are copied from the parent, the rows of new items
are initialised as `GRU4Rec.reset_parameters` does), and the two ways the learner
makes a candidate: `finetune` (warm start from the served model, vocabulary grown
with the window's new items) and `retrain` (a fresh model on the window's items).
Both run `liverec.model.train.Trainer` epochs; the optimizer state starts empty.

Neither sets torch's thread count: the caller does (it is global to the process,
and inside `liverec serve` it is shared with the serving model).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import LiverecError
from ..model.config import TrainConfig
from ..model.data import ItemIndex, Sessions, encode
from ..model.gru4rec import GRU4Rec, GRU4RecConfig
from ..model.train import Trainer


class Stopped(LiverecError):
    """Training was asked to stop (between epochs)."""


@dataclass(slots=True)
class Candidate:
    """A trained candidate, not yet saved."""

    model: GRU4Rec
    config: TrainConfig  # with model.n_items set
    item_index: ItemIndex
    new_items: int  # items the parent did not know (all of them without a parent)
    pairs: int  # training (input, target) pairs per epoch
    loss: float  # mean loss per pair in the last epoch
    seconds: float


def _fresh(config: GRU4RecConfig, seed: int) -> GRU4Rec:
    """A newly initialised model, without disturbing torch's global generator."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GRU4Rec(config)


def grow(
    parent: GRU4Rec, parent_index: ItemIndex, new_items: Sequence[str], seed: int = 42
) -> tuple[GRU4Rec, ItemIndex]:
    """The parent's model with `new_items` appended to its vocabulary (items it knows
    already are skipped). Known items keep their index and rows."""
    index = ItemIndex(parent_index.ids)
    for item in new_items:
        index.add(item)
    n = parent.config.n_items
    model = _fresh(dataclasses.replace(parent.config, n_items=len(index)), seed)
    with torch.no_grad():
        model.item_weight[:n] = parent.item_weight  # (n, H)
        model.item_bias[:n] = parent.item_bias  # (n,)
        if parent.embed_weight is not None and model.embed_weight is not None:
            model.embed_weight[:n] = parent.embed_weight  # (n, E)
        model.cells.load_state_dict(parent.cells.state_dict())
    return model, index


def finetune(
    parent: GRU4Rec,
    parent_index: ItemIndex,
    sessions: Sessions,
    config: TrainConfig,
    stop: Callable[[], bool] | None = None,
) -> Candidate:
    """Grow the parent with the items of `sessions` it does not know, then train it
    `config.n_epochs` epochs on `sessions`. Hyperparameters come from `config`, the
    network's shape from the parent. `stop` is asked between epochs (Stopped)."""
    started = time.perf_counter()
    seen = ItemIndex.from_sessions(sessions).ids
    new = [i for i in seen if i not in parent_index]
    model, index = grow(parent, parent_index, new, config.seed)
    config = dataclasses.replace(config, model=model.config)
    loss, pairs = _train(model, index, sessions, config, stop)
    return Candidate(model, config, index, len(new), pairs, loss, time.perf_counter() - started)


def retrain(
    sessions: Sessions, config: TrainConfig, stop: Callable[[], bool] | None = None
) -> Candidate:
    """A fresh model over the items of `sessions`, trained `config.n_epochs` epochs."""
    started = time.perf_counter()
    index = ItemIndex.from_sessions(sessions)
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, n_items=len(index))
    )
    model = _fresh(config.model, config.seed)
    loss, pairs = _train(model, index, sessions, config, stop)
    return Candidate(model, config, index, len(index), pairs, loss, time.perf_counter() - started)


def _train(
    model: GRU4Rec,
    index: ItemIndex,
    sessions: Sessions,
    config: TrainConfig,
    stop: Callable[[], bool] | None,
) -> tuple[float, int]:
    """Session-parallel epochs; returns (mean loss per pair of the last epoch, pairs)."""
    config.validate()
    offsets, items, _ = encode(sessions, index, min_length=2)
    pairs = int(np.maximum(np.diff(offsets) - 1, 0).sum())
    if pairs == 0:
        raise ValueError("no session has two events: nothing to train on")
    counts = np.bincount(items, minlength=len(index)).astype(np.float64)  # (n_items,)
    trainer = Trainer(model, config, counts, config.seed)
    loss = 0.0
    try:
        for _ in range(config.n_epochs):
            if stop is not None and stop():
                raise Stopped("training stopped")
            total, n = trainer.epoch(offsets, items)
            loss = total / max(1, n)
    finally:
        trainer.finish()
    model.eval()
    return loss, pairs
