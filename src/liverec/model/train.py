"""GRU4Rec training: sampler, losses, optimizer, the loop.

Owns: the popularity sampler of shared negatives, the cross-entropy and BPR-max
losses, Adagrad with momentum (row-sparse for the item matrix) and Adam, and `train`,
which runs session-parallel epochs. The hyperparameters (`TrainConfig`) and presets
are in `config.py`.

Follows Hidasi & Karatzoglou, "Recurrent Neural Networks with Top-k Gains for
Session-based Recommendations" (CIKM 2018): the negatives of an example are the other
targets of its mini-batch plus `n_sample` items drawn once per mini-batch with
probability proportional to support^sample_alpha. Scores are computed only for those
rows of the item matrix, and only those rows are updated.

Why ~480 lines in one module: the sampler, the losses and the optimizers exist only
for this loop and are tuned together (the reference GRU4Rec keeps them together
too); the module, its config and the batch iterator are separate files.
"""

from __future__ import annotations

import dataclasses
import math
import mmap
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..progress import progress as progress_bar
from .batching import session_parallel_batches
from .checkpoint import save_checkpoint
from .config import TrainConfig
from .data import ItemIndex, Sessions, encode, fingerprint
from .gru4rec import GRU4Rec

# ---------------------------------------------------------------- sampler


class PopularitySampler:
    """Draws `n_sample` items per call with probability ~ counts^alpha.

    Draws `chunk` calls' worth at once (inverse CDF on uniform numbers), so a call
    costs a slice. Deterministic given the generator.
    """

    def __init__(
        self,
        counts: np.ndarray,
        alpha: float,
        n_sample: int,
        rng: np.random.Generator,
        chunk: int = 4096,
    ) -> None:
        w = np.asarray(counts, dtype=np.float64) ** alpha
        total = w.sum()
        if not total > 0:
            raise ValueError("no item can be sampled (all weights are zero)")
        self.cdf = np.cumsum(w) / total  # (n_items,)
        self.n_sample = n_sample
        self.rng = rng
        self.chunk = max(1, chunk)
        self._cache = torch.empty(0, n_sample, dtype=torch.int64)
        self._next = 0

    def _refill(self) -> None:
        u = self.rng.random(self.chunk * self.n_sample)
        idx = np.searchsorted(self.cdf, u, side="right")
        np.minimum(idx, len(self.cdf) - 1, out=idx)
        self._cache = torch.from_numpy(idx.astype(np.int64)).view(self.chunk, self.n_sample)
        self._next = 0

    def __call__(self) -> Tensor:
        """(n_sample,) int64 item indices."""
        if self._next >= len(self._cache):
            self._refill()
        out = self._cache[self._next]
        self._next += 1
        return out


def log_expected_negatives(counts: np.ndarray, config: TrainConfig) -> np.ndarray:
    """log of how often each item is expected among a mini-batch's candidates:
    batch_size * support share (the in-batch targets) + n_sample * support^alpha share
    (the shared samples). Subtracted, times `logq`, from the cross-entropy scores (the
    logQ correction of sampled softmax). (n_items,) float64.

    On the YooChoose 100k sample (rsc15 preset) this gave Recall@20 0.681 where
    subtracting the log support share alone gave 0.663 and no correction 0.663.
    """
    c = np.asarray(counts, dtype=np.float64)
    q = config.batch_size * c / max(c.sum(), 1.0)
    if config.n_sample > 0:
        w = c**config.sample_alpha
        q = q + config.n_sample * w / max(w.sum(), 1e-300)
    out: np.ndarray = np.log(np.maximum(q, 1e-12))
    return out


# ---------------------------------------------------------------- losses
# scores: (B, K) with K >= B; column r holds the score of row r's target; every other
# column is a negative for row r (the other targets of the batch, then the samples).


def cross_entropy_loss(scores: Tensor) -> Tensor:
    """Sum over the batch of -log softmax(scores)[r, r] (one softmax, on raw scores)."""
    return -torch.log_softmax(scores, dim=1).diagonal().sum()


def bpr_max_loss(scores: Tensor, bpreg: float) -> Tensor:
    """BPR-max (Hidasi & Karatzoglou 2018), summed over the batch.

    With s_j the softmax of the NEGATIVE scores only (the target's column excluded):
    L_r = -log(sum_j s_j * sigmoid(r_i - r_j)) + bpreg * sum_j s_j * r_j^2.
    """
    b = scores.shape[0]
    pos = scores.diagonal().unsqueeze(1)  # (B, 1)
    own = torch.eye(b, scores.shape[1], dtype=torch.bool, device=scores.device)  # (B, K)
    s = torch.softmax(scores.masked_fill(own, -math.inf), dim=1)  # (B, K), s[r, r] = 0
    ranking = (s * torch.sigmoid(pos - scores)).sum(1)  # (B,)
    reg = (s * scores.square()).sum(1)  # (B,)
    return (-torch.log(ranking + 1e-24) + bpreg * reg).sum()


# ---------------------------------------------------------------- optimizer


def hugepage_zeros(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
    """Zeros in memory advised for transparent huge pages (Linux), plain zeros elsewhere.

    The item matrix and its optimizer state are read and written at a few thousand
    random rows per mini-batch; with 4 KiB pages each row costs a TLB miss (two-level
    page walks under virtualisation), measured here at 2-3x the time of the copy.
    """
    n = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    huge = 2 << 20
    if n < 2 * huge or not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.zeros(shape, dtype=dtype)
    mm = mmap.mmap(-1, n + huge)  # anonymous: zero-filled; freed with the last view
    mm.madvise(mmap.MADV_HUGEPAGE)
    buf = np.frombuffer(mm, dtype=np.uint8)
    off = -buf.ctypes.data % huge
    return torch.from_numpy(buf[off : off + n]).view(dtype).view(shape)


class SparseRowOptimizer:
    """Adagrad with (Nesterov) momentum, or Adam, over dense tensors and row-sparse
    matrices.

    Adagrad: acc += g^2; u = lr * g / sqrt(acc + eps); v = momentum * v + u;
    p -= momentum * v + u (Nesterov) or p -= v (classical).
    `step_rows` applies the same rule to the given unique rows only (the state of
    other rows is untouched), as the reference does for the item matrix.
    Adam: the usual bias-corrected rule; rows keep their own step count.
    """

    def __init__(self, params: dict[str, Tensor], config: TrainConfig) -> None:
        self.kind = config.optimizer
        self.lr = config.learning_rate
        self.momentum = config.momentum
        self.nesterov = config.nesterov
        self.eps = config.eps
        self.betas = (0.9, 0.999)
        self.params = params
        # state of row r of a parameter: state[r, 0] = acc (Adam m), state[r, 1] =
        # velocity (Adam v); interleaved so that a row-sparse step gathers and writes
        # back one contiguous block per row
        k = 2 if self.kind == "adam" or self.momentum > 0 else 1
        self.state = {
            n: hugepage_zeros((p.shape[0], k, *p.shape[1:]), p.dtype) for n, p in params.items()
        }
        self.steps = {n: torch.zeros(p.shape[0], dtype=torch.float64) for n, p in params.items()}

    def slots(self, name: str) -> tuple[Tensor, Tensor | None]:
        """Views of a parameter's (acc | Adam m) and (velocity | Adam v) state."""
        st = self.state[name]
        return st[:, 0], (st[:, 1] if st.shape[1] > 1 else None)

    @torch.no_grad()
    def step_dense(self, name: str, grad: Tensor) -> None:
        p = self.params[name]
        a, b = self.slots(name)
        if self.kind == "adam":
            assert b is not None
            self.steps[name] += 1
            p.sub_(self._adam(grad, a, b, self.steps[name]))
        else:
            p.sub_(self._adagrad(grad, a, b))

    @torch.no_grad()
    def step_rows(self, name: str, rows: Tensor, grad: Tensor) -> None:
        """rows: (U,) unique row indices; grad: (U, ...) their summed gradient."""
        st = self.state[name]
        g = st.index_select(0, rows)  # (U, k, ...) gathered state, written back below
        a, b = g[:, 0], (g[:, 1] if g.shape[1] > 1 else None)
        if self.kind == "adam":
            assert b is not None
            t = self.steps[name].index_select(0, rows) + 1
            self.steps[name].index_copy_(0, rows, t)
            step = self._adam(grad, a, b, t)
        else:
            step = self._adagrad(grad, a, b)
        st.index_copy_(0, rows, g)
        self.params[name].index_add_(0, rows, step, alpha=-1.0)

    def _adagrad(self, g: Tensor, acc: Tensor, vel: Tensor | None) -> Tensor:
        """Updates acc (and vel) in place; returns the step to subtract."""
        acc.addcmul_(g, g)
        step = (acc + self.eps).sqrt_().reciprocal_().mul_(g).mul_(self.lr)  # u
        if vel is None:
            return step
        vel.mul_(self.momentum).add_(step)
        if self.nesterov:
            return step.add_(vel, alpha=self.momentum)
        return vel

    def _adam(self, g: Tensor, m: Tensor, v: Tensor, t: Tensor) -> Tensor:
        """Updates m, v in place; returns the step to subtract. t: (rows,) step counts."""
        b1, b2 = self.betas
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        shape = (-1,) + (1,) * (g.dim() - 1)
        c1 = (1 - b1**t).to(g.dtype).view(shape)
        c2 = (1 - b2**t).to(g.dtype).view(shape)
        return self.lr * (m / c1) / ((v / c2).sqrt() + self.eps)


# ---------------------------------------------------------------- training loop


@dataclass(slots=True)
class EpochStats:
    epoch: int  # 1-based
    loss: float  # mean loss per training pair
    pairs: int  # (input, target) pairs consumed
    seconds: float
    events_per_s: float
    evaluation: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class TrainResult:
    model: GRU4Rec
    config: TrainConfig  # with model.n_items filled in
    item_index: ItemIndex
    epochs: list[EpochStats]
    seconds: float
    fingerprint: str
    checkpoint: Path | None = None


class Trainer:
    """One training run's state: model, optimizer, sampler, per-slot hidden state."""

    def __init__(self, model: GRU4Rec, config: TrainConfig, counts: np.ndarray, seed: int) -> None:
        self.model = model
        self.config = config
        self.constrained = model.config.constrained_embedding
        params: dict[str, Tensor] = dict(model.named_parameters())
        self.dense = [n for n in params if n.startswith("cells.")]
        self.dense_params = [params[n] for n in self.dense]
        self.sparse = [n for n in params if n not in self.dense]
        for n in self.sparse:
            # their gradients come from gathered leaves: no dense (n_items, H) gradient
            p = params[n].requires_grad_(False)
            p.data = hugepage_zeros(tuple(p.shape), p.dtype).copy_(p.data)
        self.opt = SparseRowOptimizer(params, config)
        rng = np.random.default_rng(seed)
        self.sampler = (
            PopularitySampler(
                counts, config.sample_alpha, config.n_sample, rng, config.sample_chunk
            )
            if config.n_sample > 0
            else None
        )
        self.rng = rng
        self.log_q = torch.from_numpy(log_expected_negatives(counts, config)).float()  # (n_items,)

    def gradients(
        self, x_items: Tensor, targets: Tensor, hidden: Tensor, negatives: Tensor | None = None
    ) -> tuple[Tensor, Tensor, dict[str, tuple[Tensor | None, Tensor]]]:
        """Loss and gradients of one mini-batch, without updating anything.

        x_items, targets: (B,) int64; hidden: (L, B, H); negatives: (S,) shared extra
        negatives (default: drawn from the sampler). Returns (summed loss, new hidden,
        {param name: (rows, grad)}) where rows is None for dense parameters, else the
        unique rows of a row-sparse matrix and grad their summed gradient.
        """
        model, cfg = self.model, self.config
        b = len(targets)
        if negatives is None and self.sampler is not None:
            negatives = self.sampler()
        y = targets if negatives is None else torch.cat([targets, negatives])  # (K,)
        with torch.no_grad():
            y_rows, y_inv = torch.unique(y, return_inverse=True)
            if self.constrained:
                w_rows, w_inv = torch.unique(torch.cat([x_items, y]), return_inverse=True)
            else:
                w_rows, w_inv = y_rows, y_inv
                e_rows, e_inv = torch.unique(x_items, return_inverse=True)
                e_leaf = model.input_table.index_select(0, e_rows).requires_grad_()  # (Ue, E)
            w_leaf = model.item_weight.index_select(0, w_rows).requires_grad_()  # (U, H)
            b_leaf = model.item_bias.index_select(0, y_rows).requires_grad_()  # (Uy,)
        if self.constrained:
            x = w_leaf.index_select(0, w_inv[:b])  # (B, H)
            w = w_leaf.index_select(0, w_inv[b:])  # (K, H)
        else:
            x = e_leaf.index_select(0, e_inv)  # (B, E)
            w = w_leaf.index_select(0, w_inv)  # (K, H)
        bias = b_leaf.index_select(0, y_inv)  # (K,)
        out, new_hidden = model.step(x, hidden)  # (B, H), (L, B, H)
        scores = model.scores(out, w, bias)  # (B, K) raw scores; column r: row r's target
        if cfg.loss == "cross-entropy":
            if cfg.logq > 0:
                scores = scores - cfg.logq * self.log_q.index_select(0, y)
            loss = cross_entropy_loss(scores)
        else:
            if cfg.elu_param > 0:
                scores = F.elu(scores, alpha=cfg.elu_param)
            loss = bpr_max_loss(scores, cfg.bpreg)
        leaves = [*self.dense_params, w_leaf, b_leaf] + ([] if self.constrained else [e_leaf])
        objective = loss / cfg.batch_size if cfg.batch_mean else loss
        grads = torch.autograd.grad(objective, leaves)
        out_grads: dict[str, tuple[Tensor | None, Tensor]] = {
            n: (None, g) for n, g in zip(self.dense, grads, strict=False)
        }
        k = len(self.dense)
        out_grads["item_weight"] = (w_rows, grads[k])
        out_grads["item_bias"] = (y_rows, grads[k + 1])
        if not self.constrained:
            out_grads["embed_weight"] = (e_rows, grads[k + 2])
        return loss.detach(), new_hidden.detach(), out_grads

    def apply(self, grads: dict[str, tuple[Tensor | None, Tensor]]) -> None:
        for name, (rows, g) in grads.items():
            if rows is None:
                self.opt.step_dense(name, g)
            else:
                self.opt.step_rows(name, rows, g)

    def step(self, x_items: Tensor, targets: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """One mini-batch of training: returns (summed loss, new hidden (L, B, H))."""
        loss, new_hidden, grads = self.gradients(x_items, targets, hidden)
        self.apply(grads)
        return loss, new_hidden

    def finish(self) -> None:
        for n in self.sparse:
            self.opt.params[n].requires_grad_(True)

    def epoch(
        self,
        offsets: np.ndarray,
        items: np.ndarray,
        bar: Any | None = None,
        max_batches: int | None = None,
    ) -> tuple[float, int]:
        """One pass over every pair (or the first max_batches); returns (summed loss, pairs)."""
        cfg, model = self.config, self.model
        order = None
        if cfg.shuffle:
            order = self.rng.permutation(len(offsets) - 1)
        hidden = model.init_hidden(cfg.batch_size)  # (L, B, H) per slot
        total = torch.zeros((), dtype=torch.float64)
        pairs = 0
        pending = 0
        model.train()
        batches = session_parallel_batches(offsets, items, cfg.batch_size, order)
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            x = torch.from_numpy(batch.inputs)
            t = torch.from_numpy(batch.targets)
            if batch.full:
                h = hidden
            else:
                slots = torch.from_numpy(batch.slots)
                h = hidden.index_select(1, slots)
            if batch.new.any():
                h[:, torch.from_numpy(batch.new)] = 0.0  # once, only the new sessions' slots
            loss, h = self.step(x, t, h)
            if batch.full:
                hidden = h
            else:
                hidden.index_copy_(1, slots, h)
            total += loss
            n = len(batch.targets)
            pairs += n
            pending += n
            if bar is not None and pending >= 20 * cfg.batch_size:
                bar.update(pending)
                bar.set_postfix(loss=f"{float(total) / pairs:.4f}", refresh=False)
                pending = 0
        if bar is not None:
            bar.update(pending)
            bar.set_postfix(loss=f"{float(total) / max(1, pairs):.4f}")
        return float(total), pairs


def train(
    sessions: Sessions,
    config: TrainConfig | None = None,
    out_dir: Path | None = None,
    item_index: ItemIndex | None = None,
    parent: str | None = None,
    progress: bool = True,
    eval_fn: Callable[[GRU4Rec], dict[str, float]] | None = None,
) -> TrainResult:
    """Train GRU4Rec on `sessions`; save a checkpoint to `out_dir` when given.

    item_index: the vocabulary (default: the items of `sessions`, in order of first
    appearance); events of items outside it are dropped. eval_fn is called with the
    model (in eval mode) after each epoch; its figures go to the epoch stats and the
    last one to the checkpoint's metadata. Deterministic for a given seed and threads.
    """
    config = config or TrainConfig()
    if item_index is None:
        item_index = ItemIndex.from_sessions(sessions)
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, n_items=len(item_index))
    )
    config.validate()
    config.model.validate()
    torch.set_num_threads(config.threads or os.cpu_count() or 1)
    torch.manual_seed(config.seed)
    offsets, items, _ = encode(sessions, item_index, min_length=2)
    counts = np.bincount(items, minlength=len(item_index)).astype(np.float64)
    n_pairs = int(np.maximum(np.diff(offsets) - 1, 0).sum())
    if n_pairs == 0:
        raise ValueError("no session has two events: nothing to train on")
    model = GRU4Rec(config.model)
    trainer = Trainer(model, config, counts, config.seed)
    data_id = fingerprint(sessions)
    stats: list[EpochStats] = []
    started = time.perf_counter()
    try:
        for epoch in range(1, config.n_epochs + 1):
            # a bar on a terminal, a line every few seconds in a log or a pipe
            bar = progress_bar(
                n_pairs, f"epoch {epoch}/{config.n_epochs}", unit="ev", enabled=progress
            )
            t0 = time.perf_counter()
            with bar:
                loss, pairs = trainer.epoch(offsets, items, bar)
            secs = time.perf_counter() - t0
            ev = EpochStats(epoch, loss / max(1, pairs), pairs, secs, pairs / max(secs, 1e-9))
            if eval_fn is not None:
                model.eval()
                ev.evaluation = dict(eval_fn(model))
            stats.append(ev)
            if progress:
                extra = " ".join(f"{k}={v:.4f}" for k, v in ev.evaluation.items())
                print(
                    f"epoch {epoch}: loss {ev.loss:.4f}, {secs:.1f} s, "
                    f"{ev.events_per_s:.0f} ev/s {extra}".rstrip(),
                    file=sys.stderr,
                )
    finally:
        trainer.finish()
    model.eval()
    result = TrainResult(model, config, item_index, stats, time.perf_counter() - started, data_id)
    if out_dir is not None:
        meta: dict[str, Any] = {
            "data_fingerprint": data_id,
            "parent": parent,
            "training": {
                "seconds": round(result.seconds, 3),
                "epochs": [dataclasses.asdict(e) for e in stats],
            },
        }
        if stats and stats[-1].evaluation:
            meta["evaluation"] = stats[-1].evaluation
        result.checkpoint = save_checkpoint(out_dir, model, config, item_index, meta)
    return result
