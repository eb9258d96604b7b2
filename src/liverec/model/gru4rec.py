"""The GRU4Rec session model: the nn.Module and its config, nothing else.

Owns: `GRU4RecConfig` (shape and regularisation of the network) and `GRU4Rec`
(item matrix, GRU layers, dropout, scoring). One call of `step` consumes one event
per session; the caller owns the hidden state and resets it at session starts.
Training parameters live in config.py, training (losses, sampling, sparse updates) in
train.py, checkpoints in checkpoint.py and the evaluation scorer in scorer.py.

Follows Hidasi et al. (ICLR 2016) and Hidasi & Karatzoglou (CIKM 2018):
- "constrained embedding": the input embedding of an item is its row of the output
  item matrix, so the embedding size equals the last layer's size;
- dropout on the embedding and on each layer's output, with separate rates (drop
  probabilities, inverted scaling); in training the dropped-out output is also the
  state carried to the next event. This reproduces the reference's figures on the
  YooChoose 100k sample; keeping the state un-dropped cost ~1.3 points of Recall@20;
- weights uniform in ±sqrt(6 / (fan_in + fan_out)) per gate block, biases zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True, slots=True)
class GRU4RecConfig:
    """Network hyperparameters. Defaults: the official tuned Diginetica setting."""

    n_items: int = 0  # set from the data's item index at training time
    layers: tuple[int, ...] = (512,)  # GRU hidden sizes, bottom to top
    constrained_embedding: bool = True  # input embedding = output item matrix rows
    embedding: int = 0  # input embedding size when not constrained (0: layers[0])
    dropout_p_embed: float = 0.5  # drop probability on the input embedding
    dropout_p_hidden: float = 0.3  # drop probability on each GRU layer's output

    def validate(self) -> None:
        if self.n_items <= 0:
            raise ValueError(f"n_items must be positive, got {self.n_items}")
        if not self.layers or any(h <= 0 for h in self.layers):
            raise ValueError(f"layers must be positive sizes, got {self.layers}")
        if self.embedding < 0:
            raise ValueError(f"embedding must be >= 0, got {self.embedding}")
        for name in ("dropout_p_embed", "dropout_p_hidden"):
            p = getattr(self, name)
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} is a drop probability in [0, 1), got {p}")

    @property
    def input_size(self) -> int:
        if self.constrained_embedding:
            return self.layers[-1]
        return self.embedding or self.layers[0]

    @property
    def hidden_size(self) -> int:
        return self.layers[-1]


def _uniform_(t: Tensor, fan_in: int, fan_out: int) -> None:
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        t.uniform_(-bound, bound)


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout with drop probability p. Same as F.dropout, but the mask comes
    from uniform_() rather than bernoulli_(), which is ~2.5x slower on CPU."""
    if not training or p == 0.0:
        return x
    mask = torch.empty_like(x).uniform_().ge_(p).mul_(1.0 / (1.0 - p))  # 0 or 1/(1-p)
    return x * mask


class GRU4Rec(nn.Module):
    """Item matrix + stacked GRU cells. Hidden state: (L, B, H) tensors, zero at start."""

    def __init__(self, config: GRU4RecConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        n, h_out = config.n_items, config.hidden_size
        # output item matrix and bias; also the input embedding when constrained
        self.item_weight = nn.Parameter(torch.empty(n, h_out))  # (n_items, H)
        self.item_bias = nn.Parameter(torch.zeros(n))  # (n_items,)
        self.embed_weight: nn.Parameter | None = None
        if not config.constrained_embedding:
            self.embed_weight = nn.Parameter(torch.empty(n, config.input_size))  # (n_items, E)
        sizes = [config.input_size, *config.layers]
        self.cells = nn.ModuleList(
            nn.GRUCell(sizes[i], sizes[i + 1]) for i in range(len(config.layers))
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        n = self.config.n_items
        _uniform_(self.item_weight, n, self.config.hidden_size)
        nn.init.zeros_(self.item_bias)
        if self.embed_weight is not None:
            _uniform_(self.embed_weight, n, self.config.input_size)
        for cell in self.cells:
            assert isinstance(cell, nn.GRUCell)
            h = cell.hidden_size
            for g in range(3):  # gate blocks r, z, n, each (H, in) / (H, H)
                _uniform_(cell.weight_ih[g * h : (g + 1) * h], cell.input_size, h)
                _uniform_(cell.weight_hh[g * h : (g + 1) * h], h, h)
            assert cell.bias_ih is not None and cell.bias_hh is not None
            nn.init.zeros_(cell.bias_ih)
            nn.init.zeros_(cell.bias_hh)

    @property
    def input_table(self) -> Tensor:
        """The matrix whose rows are the items' input embeddings: (n_items, E)."""
        return self.item_weight if self.embed_weight is None else self.embed_weight

    def init_hidden(self, batch: int) -> Tensor:
        """Zero hidden state for `batch` sessions: (L, B, H). Needs equal layer sizes
        to stack; with unequal sizes it is padded to the largest."""
        width = max(self.config.layers)
        p = self.item_weight
        return torch.zeros(len(self.config.layers), batch, width, dtype=p.dtype, device=p.device)

    def step(self, x: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """One event per session.

        x: (B, E) input embeddings (rows of `input_table`, not yet dropped out);
        hidden: (L, B, H) state before this event.
        Returns out (B, H_last), the top layer's output, and the new (L, B, H) state.
        In training, each layer's output is dropped out and the dropped-out vector is
        also the state carried to the next event, as in the reference.
        """
        p_embed, p_hidden = self.config.dropout_p_embed, self.config.dropout_p_hidden
        x = dropout(x, p_embed, self.training)  # (B, E)
        new = []
        for i, cell in enumerate(self.cells):
            size = self.config.layers[i]
            x = dropout(cell(x, hidden[i, :, :size]), p_hidden, self.training)  # (B, H_i)
            new.append(x)
        width = hidden.shape[2]
        if any(h.shape[1] != width for h in new):
            new = [F.pad(h, (0, width - h.shape[1])) for h in new]
        return x, torch.stack(new)  # (B, H_last), (L, B, H)

    def scores(self, out: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """Raw scores of `out` (B, H) against item rows weight (K, H), bias (K,): (B, K)."""
        return torch.addmm(bias, out, weight.t())  # (B, K)

    def score_all(self, out: Tensor) -> Tensor:
        """Raw scores against every item: (B, n_items)."""
        return self.scores(out, self.item_weight, self.item_bias)

    def forward(self, items: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """items (B,) int64 -> scores for the next item (B, n_items), new hidden (L, B, H)."""
        x = self.input_table.index_select(0, items)  # (B, E)
        out, hidden = self.step(x, hidden)
        return self.score_all(out), hidden
