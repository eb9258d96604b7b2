"""A checkpoint made ready to score: weights, shortlist structures, exact re-scoring.

Owns: finding the checkpoint a path or a models/ registry names, loading it for
inference, the cheap shortlist of every item (int8 rows, or a low-rank factorisation
of the item matrix scored in int8) and the exact float32 re-scoring of candidates.
Used by the recommender (gru.py), its scoring worker (scoring.py) and bench/.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...config import Settings
from ...errors import ModelError
from ...model import META
from ...model.checkpoint import load_checkpoint
from ...model.data import ItemIndex
from ...model.gru4rec import GRU4Rec
from ...model.moments import ScoreMoments

DEFAULTS = Settings()  # the serving defaults have one source: the settings'
CURRENT = "CURRENT"  # in a models/ registry: names the promoted version's directory
SAMPLE_STRIDE = 16  # top_candidates: every 16th score sets a row's threshold
# shortlist rows per pass: the (rows, n_items) scores of one pass are written by the
# item scan and read back by the top-k; 8 rows of 43k items (1.4 MB) stay in cache,
# 32 rows of 1M items (128 MB) do not (bench_model.py cost: batch 32 cost more per
# event than batch 8 before this)
SHORTLIST_ROWS = 8
# int8 shortlist: quantize the activations to 7 bits, as torch's own dynamic Linear
# does on x86. fbgemm multiplies u8 activations by s8 weights in int16 pairs; on CPUs
# without VNNI (AVX2) a full 8-bit range saturates those pairs, and scores came out
# up to 60 off (scale ~14) on a test model: the shortlist lost items of the exact
# top 10. 7 bits cannot saturate and cost ~0.4 of score error there.
REDUCE_RANGE = True


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint directory, or the one a registry's CURRENT file names."""
    if (path / META).is_file():
        return path
    pointer = path / CURRENT
    if pointer.is_file():
        name = pointer.read_text().strip()
        target = (path / name).resolve()
        if path.resolve() not in target.parents or not (target / META).is_file():
            raise ModelError(f"{pointer} names {name!r}, which is not a checkpoint in {path}")
        return target
    raise ModelError(f"no checkpoint at {path} (no {META}, no {CURRENT})")


def quantize_rows(weight: Tensor, bias: Tensor) -> Any | None:
    """Prepacked per-row int8 weights for fbgemm's dynamic linear, or None."""
    engines = torch.backends.quantized.supported_engines
    engine = "x86" if "x86" in engines else "fbgemm" if "fbgemm" in engines else None
    if engine is None:
        return None
    torch.backends.quantized.engine = engine
    scale = (weight.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()  # (n,)
    zero = torch.zeros(weight.shape[0], dtype=torch.int64)
    with warnings.catch_warnings():
        # The eager quantized ops are marked deprecated in favour of torchao; they are
        # still the fastest int8 GEMM that ships with torch on the CPU.
        warnings.simplefilter("ignore")
        q = torch.quantize_per_channel(weight, scale, zero, 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(q, bias)


def low_rank(weight: Tensor, bias: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """A rank-r factorisation of the scoring function out -> weight @ out + bias.

    SVD of [weight | bias] (n, H+1) = U S Vh; returns proj (H+1, r) = Vh[:r].T and
    items (n, r) = U[:, :r] * S[:r], so that [out, 1] @ proj @ items.T approximates
    every item's score at r/H of the cost.
    """
    wb = torch.cat([weight, bias.unsqueeze(1)], dim=1).double()  # (n, H+1)
    u, sv, vh = torch.linalg.svd(wb, full_matrices=False)
    return vh[:rank].t().float().contiguous(), (u[:, :rank] * sv[:rank]).float().contiguous()


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """How a checkpoint is prepared for serving (settings model_quantize, model_rank,
    model_quantize_gru); travels with the ServedModel and to the scoring worker."""

    quantize: bool = DEFAULTS.model_quantize  # int8 rows for the full-rank shortlist
    rank: int = DEFAULTS.model_rank  # > 0 and below the hidden size: low-rank shortlist
    quantize_gru: bool = DEFAULTS.model_quantize_gru  # int8 GRU layers (inference only)
    moments: bool = False  # the moments of every item's score too (a hybrid's z-score)


@dataclass(slots=True)
class Extra:
    """What a hybrid asks of a scoring pass beside the list (ScoreInput.extra)."""

    scores: np.ndarray  # exact scores of the asked items, in the asked order (float32)
    mean: float  # mean and standard deviation of every item's score (ScoreMoments)
    sd: float


@dataclass
class ServedModel:
    """A loaded checkpoint ready to score: fp32 weights plus what makes the shortlist
    cheap (int8 prepacked item rows, optionally a low-rank factorisation)."""

    version: str
    model: GRU4Rec
    index: ItemIndex
    path: Path
    packed: Any | None  # int8 rows: full-rank shortlist (None: exact fp32 or low rank)
    stamp: float
    proj: Tensor | None = None  # (H+1, r) low-rank shortlist: query projection
    packed_low: Any | None = None  # (n, r) item factors, int8 prepacked
    options: ServeOptions = ServeOptions()
    moments: ScoreMoments | None = None  # with options.moments

    @classmethod
    def load(
        cls,
        path: Path,
        quantize: bool,
        rank: int = DEFAULTS.model_rank,
        quantize_gru: bool = DEFAULTS.model_quantize_gru,
    ) -> ServedModel:
        """Load a checkpoint (or a registry's current one) for serving."""
        return cls.load_with(path, ServeOptions(quantize, rank, quantize_gru))

    @classmethod
    def load_with(cls, path: Path, options: ServeOptions) -> ServedModel:
        directory = resolve_checkpoint(path)
        model, _, index, meta = load_checkpoint(directory)
        version = str(meta.get("version") or directory.name)
        stamp = (directory / META).stat().st_mtime
        o = options
        served = cls.prepare(
            model, index, o.quantize, o.rank, version, directory, stamp, o.quantize_gru
        )
        if o.moments:
            served.with_moments()
        return served

    @classmethod
    def prepare(
        cls,
        model: GRU4Rec,
        index: ItemIndex,
        quantize: bool,
        rank: int = 0,
        version: str = "",
        path: Path = Path("."),
        stamp: float = 0.0,
        quantize_gru: bool = False,
    ) -> ServedModel:
        """rank > 0 (and below the hidden size): shortlist with a rank-r factorisation
        of the item matrix scored in int8; else int8 (quantize) or exact fp32.
        quantize_gru: the GRU layers with int8 weights too (an inference-only model)."""
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        weight, bias = model.item_weight.data, model.item_bias.data
        packed = proj = packed_low = None
        if 0 < rank < weight.shape[1]:
            proj, items = low_rank(weight, bias, rank)
            packed_low = quantize_rows(items, torch.zeros(items.shape[0]))
            if packed_low is None:  # no int8 engine: the factors in fp32
                packed_low = items
        elif quantize:
            packed = quantize_rows(weight, bias)
        if quantize_gru:
            # int8 GRU weights (dynamic quantization): the step reads a quarter of the
            # bytes; the scores it feeds are still re-scored against fp32 item rows
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.cells = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
                    model.cells, {torch.nn.GRUCell}, dtype=torch.qint8
                )
        options = ServeOptions(quantize, rank, quantize_gru)
        return cls(version, model, index, path, packed, stamp, proj, packed_low, options)

    def with_moments(self) -> None:
        """Compute the moments of the item scores (O(n_items x H^2), once)."""
        weight, bias = self.model.item_weight.data, self.model.item_bias.data
        self.moments = ScoreMoments(weight, bias)
        self.options = ServeOptions(
            self.options.quantize, self.options.rank, self.options.quantize_gru, True
        )

    def extras(self, out: Tensor, asked: list[tuple[int, np.ndarray]]) -> list[Extra]:
        """For each (row r of out (B, H), item indices): their exact scores and the
        moments of every item's score for that row."""
        if self.moments is None:
            raise ModelError("this checkpoint was not prepared with the score moments")
        rows = torch.tensor([r for r, _ in asked], dtype=torch.int64)
        mean, sd = self.moments.of(out.index_select(0, rows))
        weight, bias = self.model.item_weight, self.model.item_bias
        got = []
        for k, (r, items) in enumerate(asked):
            idx = torch.tensor(items, dtype=torch.int64)
            scores = torch.mv(weight.index_select(0, idx), out[r]).add_(bias[idx])  # (len,)
            got.append(Extra(scores.numpy(), float(mean[k]), float(sd[k])))
        return got

    def item_scores(self, out: Tensor) -> Tensor:
        """Approximate (low-rank or int8) or exact scores of every item: (B, n_items)."""
        if self.proj is not None:
            h = self.proj.shape[0] - 1
            q = torch.addmm(self.proj[h], out, self.proj[:h])  # (B, r)
            if isinstance(self.packed_low, Tensor):
                return q @ self.packed_low.t()
            low: Tensor = torch.ops.quantized.linear_dynamic(q, self.packed_low, REDUCE_RANGE)
            return low
        if self.packed is not None:
            scores: Tensor = torch.ops.quantized.linear_dynamic(out, self.packed, REDUCE_RANGE)
            return scores
        return self.model.score_all(out)

    def shortlist(self, out: Tensor, blocked: list[list[int]], width: int) -> Tensor:
        """The `width` best candidates of each row by the cheap scores, blocked items
        excluded: (B, C) item indices, C = min(width, n_items)."""
        return self.shortlist_marked(out, blocked, width)[0]

    def shortlist_marked(
        self, out: Tensor, blocked: list[list[int]], width: int
    ) -> tuple[Tensor, Tensor]:
        """`shortlist`, plus a (B, C) mask of the candidates that are blocked (only
        there when a row has fewer than C unblocked items)."""
        if len(out) > SHORTLIST_ROWS:  # in chunks: each chunk's scores stay in cache
            parts = [
                self.shortlist_marked(
                    out[i : i + SHORTLIST_ROWS], blocked[i : i + SHORTLIST_ROWS], width
                )
                for i in range(0, len(out), SHORTLIST_ROWS)
            ]
            return torch.cat([c for c, _ in parts]), torch.cat([m for _, m in parts])
        scores = self.item_scores(out)  # (B, n_items)
        if any(blocked):  # one indexed write for the whole batch, not one per row
            r = torch.tensor([r for r, rows in enumerate(blocked) for _ in rows])
            c = torch.tensor([i for rows in blocked for i in rows])
            scores.index_put_((r, c), torch.tensor(float("-inf")))
        cand = top_candidates(scores, width)  # (B, C)
        return cand, torch.gather(scores, 1, cand) == float("-inf")

    def exact(self, out: Tensor, cand: Tensor) -> Tensor:
        """Exact scores of candidate items cand (B, C) for outputs out (B, H): (B, C).

        One matrix-vector product per row: gathering every row's candidates into one
        (B, C, H) tensor for a batched product measured 3-4x slower here at B = 8
        (a fresh multi-MB buffer per call, then a batched matrix-vector product)."""
        weight = self.model.item_weight
        rows = [torch.mv(weight.index_select(0, cand[r]), out[r]) for r in range(len(cand))]
        return torch.stack(rows).add_(self.model.item_bias[cand])  # (B, C)


def top_candidates(scores: Tensor, width: int) -> Tensor:
    """The indices of each row's `width` best scores, (B, C) with C = min(width, n):
    the same set as torch.topk's (ties aside), in no particular order.

    torch.topk over 43k scores costs ~0.1 ms per row here (it sorts (value, index)
    pairs: ~700 KB per row, out of L2). Instead, per row: a threshold t = the j-th best
    of every SAMPLE_STRIDE-th score (j = 3 * width / stride + 1, so that about three
    times `width` scores pass), the scores >= t, and a partition of those. Exact: when
    at least `width` scores are >= t, the width-th best is >= t; a row where fewer pass
    (unlikely: the sample would have to hold 3x its expected share of the top) takes
    a partition of the whole row. 2-3x faster than topk at 1-10 rows (bench_model.py).
    """
    b, n = scores.shape
    width = min(width, n)
    j = 3 * width // SAMPLE_STRIDE + 1
    if n < 4 * SAMPLE_STRIDE * j:  # narrow rows: one partition is as cheap
        return torch.topk(scores, width, dim=1).indices
    a = scores.numpy()
    sample = a[:, ::SAMPLE_STRIDE]
    threshold = -np.partition(-sample, j - 1, axis=1)[:, j - 1]  # (B,) j-th best
    out = np.empty((b, width), dtype=np.int64)
    for r in range(b):
        row = a[r]
        idx = np.flatnonzero(row >= threshold[r])
        if len(idx) < width:
            out[r] = np.argpartition(row, n - width)[n - width :]
        else:
            sub = row[idx]
            out[r] = idx[np.argpartition(sub, len(sub) - width)[len(sub) - width :]]
    return torch.from_numpy(out)
