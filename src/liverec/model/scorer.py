"""The step-wise scorer of a GRU4Rec model, as the evaluation harness drives it.

Owns: `GRUScorer` (one hidden-state row per session slot, stepped a batch of events
at a time, slots reset when a session starts) and `load_scorer`, which builds one
from a checkpoint directory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_checkpoint
from .data import ItemIndex
from .gru4rec import GRU4Rec


class GRUScorer:
    """StepScorer over a GRU4Rec model: one hidden state row per slot, (L, slots, H)."""

    def __init__(self, model: GRU4Rec, name: str = "gru4rec") -> None:
        self.model = model.eval()
        self.name = name
        self.n_items = model.config.n_items
        self.hidden = model.init_hidden(0)

    def reset(self, n_slots: int) -> None:
        """Forget every session; slots 0..n_slots-1 start from a zero state."""
        self.hidden = self.model.init_hidden(n_slots)

    def clear(self, slots: np.ndarray) -> None:
        """Zero the hidden state of `slots` (a session starts there afresh)."""
        self.hidden[:, torch.as_tensor(np.asarray(slots, dtype=np.int64))] = 0.0

    def step(self, slots: np.ndarray, items: np.ndarray, new: np.ndarray) -> np.ndarray:
        """Consume items[r] in slot slots[r] (zeroing the slot first where new[r]);
        returns (n, n_items) float32 scores of the next item."""
        s = torch.as_tensor(np.asarray(slots, dtype=np.int64))
        x = torch.as_tensor(np.asarray(items, dtype=np.int64))
        fresh = torch.as_tensor(np.asarray(new, dtype=bool))
        if not (len(s) == len(x) == len(fresh)):
            raise ValueError("slots, items and new must have the same length")
        if len(x) and (int(x.min()) < 0 or int(x.max()) >= self.n_items):
            raise ValueError("item index out of range (unknown items must be filtered)")
        if len(s) and (int(s.min()) < 0 or int(s.max()) >= self.hidden.shape[1]):
            raise ValueError("slot out of range; call reset(n_slots) first")
        with torch.inference_mode():
            h = self.hidden.index_select(1, s)  # (L, n, H)
            h[:, fresh] = 0.0
            scores, h = self.model(x, h)  # (n, n_items), (L, n, H)
            self.hidden.index_copy_(1, s, h)
        out: np.ndarray = scores.numpy()
        return out


def load_scorer(model_dir: Path | str) -> tuple[GRUScorer, ItemIndex]:
    """The evaluation scorer of a saved model and its item index."""
    model, _, item_index, meta = load_checkpoint(model_dir)
    return GRUScorer(model, name=str(meta.get("version", "gru4rec"))), item_index
