"""Serving the hybrid family: GRU4Rec scores fused with V-SkNN scores per event.

Owns: the fusion (z-scored GRU4Rec scores plus `weight` x the V-SkNN scores divided
by their maximum, per event; the fusion of bench/bench_hybrid.py) over every item
(`fuse`, offline) or over candidates only (`fused_order`, served: the same values
item by item), `HybridRecommender` (the served family) and `HybridScorer` (the same
scores for `liverec.model.evaluate`, so the offline figures are what is served).

The z-score's mean and standard deviation over every item come in closed form from
the GRU's output (model/moments.py), offline and served alike, so no pass needs
every item's score. Served, the GRU half is the checkpoint's `GRURecommender`: its
session states, micro-batches and scoring worker process step the GRU and return,
per event, the GRU's best items (int8 shortlist, exact re-scoring), the exact scores
of the items V-SkNN scored, and the moments. Any other item has no V-SkNN bonus and
a lower GRU score than each of the GRU's best, so the fused list is exact as long as
the shortlist holds the GRU's best.

A hybrid model directory is a GRU4Rec checkpoint whose meta.json says
`"family": "hybrid"` and carries `"hybrid": {"weight": W, "vsknn": {...index
parameters...}}`; its V-SkNN index is built at start from the directory's
`sessions.tsv` (the training sessions). The weight was chosen on a validation split
carved by time from the training data (`liverec train --family hybrid|auto`).

Cost per event on the event loop: the V-SkNN scoring of vsknn.py (bounded by its
window, per_item, sample and neighbours), the item columns of the V-SkNN's items
(looked up once per item, `SessionIndex.columns`), and the fusion of at most
k + SPARE + ratings + the V-SkNN's items as arrays (a fixed number of array calls:
one scratch of item columns for the items in both, one argsort of int64 keys), of
which the rules read only as many as they need; the V-SkNN's items go to the worker
as int32 bytes and their exact scores come back as float32 bytes. In the scoring
worker, the GRU's (gru/scoring.py) plus O(H^2) for the moments and O(H) per V-SkNN
item (a gather of its item row from memory: the largest part of the worker's cost
beyond GRU4Rec's, before the moments). A new directory at the served path replaces
this one while serving (reloading.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Settings
from ..errors import ModelError
from ..model import META
from ..model.data import ItemIndex
from ..model.formats import load_sessions
from ..model.gru4rec import GRU4Rec
from ..model.moments import ScoreMoments
from ..model.scorer import GRUScorer
from ..types import Event, Rec
from .base import RecContext, RecList, Recommender, apply_rules, demote_low_rated
from .gru.recommender import GRURecommender
from .gru.scoring import Ranked
from .gru.served import Extra
from .vsknn import SPARE, SessionIndex

log = logging.getLogger("liverec.hybrid")

SESSIONS = "sessions.tsv"  # in a vsknn or hybrid model directory: the indexed sessions


def knn_bonus(
    knn: dict[str, float], index: ItemIndex, weight: float
) -> tuple[np.ndarray, np.ndarray]:
    """(item indices, weight x knn / max(knn)) of the V-SkNN scores of the items in
    `index`: int64 and float64 arrays, empty when there is nothing to add."""
    top = max(knn.values()) if knn and weight else 0.0
    if top <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    get = index.index.get
    cols = np.fromiter(map(get, knn, repeat(-1)), dtype=np.int64, count=len(knn))
    vals = np.fromiter(knn.values(), dtype=np.float64, count=len(knn))
    known = cols >= 0
    if not known.all():
        cols, vals = cols[known], vals[known]
    add: np.ndarray = weight * vals / top
    return cols, add


def index_bonus(
    knn: SessionIndex,
    numbers: np.ndarray,
    values: np.ndarray,
    index: ItemIndex,
    weight: float,
) -> tuple[np.ndarray, np.ndarray]:
    """`knn_bonus` of `knn.neighbour_scores`' output (numbers, values), element by
    element, with the item columns looked up once per item (`SessionIndex.columns`)."""
    top = float(values.max()) if len(values) and weight else 0.0
    if top <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    cols = knn.columns(numbers, index.index)
    known = cols >= 0
    if not known.all():
        cols, values = cols[known], values[known]
    add: np.ndarray = weight * values / top
    return cols, add


def zscore(g: np.ndarray, mean: float, sd: float) -> np.ndarray:
    """(g - mean) / sd in float64; `mean` and `sd` are over every item (ScoreMoments)."""
    z: np.ndarray = (g.astype(np.float64) - mean) / max(sd, 1e-9)
    return z


def fuse(gru: np.ndarray, mean: float, sd: float, cols: np.ndarray, add: np.ndarray) -> np.ndarray:
    """One row (n_items,) float32: z(gru) plus the `knn_bonus` (cols, add)."""
    z = zscore(gru, mean, sd)
    z[cols] += add
    out: np.ndarray = z.astype(np.float32)
    return out


def fused_order(
    ranked: list[tuple[int, float]],
    extra: Sequence[float] | np.ndarray,
    mean: float,
    sd: float,
    cols: np.ndarray,
    add: np.ndarray,
    mark: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`fuse` on candidates only, best first, ties by item index: the GRU's best
    (item index, exact score) and the exact scores `extra` of the items `cols`, as two
    arrays (item indices int64, fused scores float32). The values are `fuse`'s,
    element by element; any other item is below every one of the GRU's best that it
    does not beat by GRU score (no bonus, lower z). O((C + R) log(C + R)) for
    C = len(cols), R = len(ranked), in a fixed number of array calls.

    `mark`: a scratch of n_items booleans, all False (left so), to tell the GRU's
    items that are in cols too (their cols entry counts); made here when not given."""
    pairs = np.array(ranked, dtype=np.float64).reshape(-1, 2)  # exact: int and float32
    idx = pairs[:, 0].astype(np.int64)
    g = pairs[:, 1].astype(np.float32)
    if len(cols):
        if mark is None:
            mark = np.zeros(int(max(cols.max(), idx.max(initial=0))) + 1, dtype=bool)
        mark[cols] = True
        alone = ~mark[idx]
        mark[cols] = False
        idx = np.concatenate([cols, idx[alone]])
        g = np.concatenate([np.asarray(extra, dtype=np.float32), g[alone]])
    z = zscore(g, mean, sd)
    if len(cols):
        z[: len(cols)] += add
    fused = z.astype(np.float32)
    order = np.argsort(order_keys(idx, fused))
    return idx[order], fused[order]


def order_keys(idx: np.ndarray, fused: np.ndarray) -> np.ndarray:
    """One int64 per candidate that sorts as (-fused, idx) does: the float32 bits made
    monotone (-0.0 counted as 0.0, as a float comparison does) and negated, above the
    item index (< 2^31). Distinct per item, so one plain argsort orders the candidates
    as `np.lexsort((idx, -fused))` does, at half its cost."""
    bits = (fused + np.float32(0.0)).view(np.int32)  # -0.0 + 0.0 = 0.0
    ordered = bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))  # monotone in the float
    keys: np.ndarray = (-ordered.astype(np.int64) << 32) | idx
    return keys


def fused_pairs(
    idx: np.ndarray, fused: np.ndarray, ids: list[str], first: int
) -> Iterator[tuple[str, float]]:
    """(item id, score) of `fused_order`'s arrays, in order, converted `first` at a
    time and then in growing chunks: the rules read only as far as they need."""
    start, size = 0, max(first, 1)
    while start < len(idx):
        end = start + size
        yield from zip(
            map(ids.__getitem__, idx[start:end].tolist()), fused[start:end].tolist(), strict=True
        )
        start, size = end, 4 * size


def read_meta(directory: Path) -> dict[str, Any]:
    """meta.json of a model directory (ModelError when unreadable)."""
    path = directory / META
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"unreadable {path}: {e}") from e
    if not isinstance(meta, dict):
        raise ModelError(f"{path} does not hold an object")
    return meta


def load_index(directory: Path, params: dict[str, Any]) -> SessionIndex:
    """The session index a vsknn or hybrid model directory describes."""
    try:
        index = SessionIndex(**{k: int(v) for k, v in params.items()})
    except (TypeError, ValueError) as e:
        raise ModelError(f"bad vsknn parameters in {directory / META}: {e}") from e
    path = directory / SESSIONS
    if not path.is_file():
        raise ModelError(f"model file missing: {path}")
    data = load_sessions(path)
    index.add_sessions(data.session(s).tolist() for s in range(data.n_sessions))
    return index


class HybridScorer:
    """`StepScorer` for `liverec.model.evaluate`: the fused scores the server ranks by,
    with the served z-score (closed-form moments of every item's score)."""

    def __init__(
        self,
        model: GRU4Rec,
        item_index: ItemIndex,
        knn: SessionIndex,
        weight: float,
        moments: ScoreMoments | None = None,
    ):
        """`moments`: the model's (computed here when not given; share one across the
        scorers of one model: it costs O(n_items x H^2))."""
        self.gru = GRUScorer(model)
        self.moments = moments or ScoreMoments(model.item_weight.data, model.item_bias.data)
        self.knn, self.weight, self.item_index = knn, weight, item_index
        self.name = f"hybrid(w={weight:g})"
        self.n_items = len(item_index)
        self.slots: list[list[str]] = []

    def reset(self, n_slots: int) -> None:
        self.gru.reset(n_slots)
        self.slots = [[] for _ in range(n_slots)]

    def clear(self, slots: np.ndarray) -> None:
        """Start `slots` afresh (a session whose first item the model does not know)."""
        self.gru.clear(slots)
        for slot in np.asarray(slots).tolist():
            self.slots[slot] = []

    def step(self, slots: np.ndarray, items: np.ndarray, new: np.ndarray) -> np.ndarray:
        g = self.gru.step(slots, items, new)
        size = self.gru.model.config.hidden_size
        s = torch.as_tensor(np.asarray(slots, dtype=np.int64))
        mean, sd = self.moments.of(self.gru.hidden[-1].index_select(0, s)[:, :size])
        ids = self.item_index.ids
        out = np.empty_like(g)
        for r, (slot, item, fresh) in enumerate(
            zip(slots.tolist(), items.tolist(), new.tolist(), strict=True)
        ):
            if fresh:
                self.slots[slot] = []
            seq = self.slots[slot]
            seq.append(ids[item])
            del seq[: -self.knn.window]
            knn = self.knn.neighbour_scores(seq)
            cols, add = index_bonus(self.knn, *knn, self.item_index, self.weight)
            out[r] = fuse(g[r], float(mean[r]), float(sd[r]), cols, add)
        return out


class HybridRecommender(Recommender):
    """The hybrid of a model directory over an online fallback (empty sessions, current
    items the checkpoint does not know). Call only from the event loop thread.

    The GRU half is a `GRURecommender` of the same directory prepared with the
    moments: its session states, micro-batches and scoring worker; per event it
    returns the GRU's best items, the exact scores of the V-SkNN's items and the
    moments, and the fusion ranks only those (`fused_order`)."""

    def __init__(self, path: Path, gru: GRURecommender, *, live: bool = True) -> None:
        """`gru`: a GRURecommender of `path` made with `moments=True` (it owns the
        online fallback)."""
        self.path = path
        self.gru = gru
        self.fallback = gru.fallback
        self.live = live
        meta = read_meta(path)
        try:
            spec = meta["hybrid"]
            self.weight = float(spec["weight"])
            params = dict(spec["vsknn"])
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"{path / META}: no hybrid weight and vsknn parameters ({e})") from e
        if gru.served is None:
            raise ModelError(f"no checkpoint at {path}")
        self.index = load_index(path, params)
        self._mark = np.zeros(0, dtype=bool)  # fused_order's scratch, one per item column
        log.info(
            "hybrid %s: weight %g, %d indexed sessions", self.version, self.weight, len(self.index)
        )

    @classmethod
    def from_settings(cls, settings: Settings, path: Path, fallback: Recommender) -> Recommender:
        gru = GRURecommender.from_settings(settings, fallback, path=path, moments=True)
        gru.poll_s = None  # the model switch watches the path
        return cls(path, gru, live=settings.vsknn_live)

    @property
    def version(self) -> str:
        return self.gru.version

    def observe(self, event: Event) -> None:
        self.gru.observe(event)  # feeds the fallback
        if self.live:
            self.index.add(event.session_id, event.item_id)

    def forget(self, session_id: str) -> None:
        self.gru.forget(session_id)

    async def start(self) -> None:
        await self.gru.start()

    async def close(self) -> None:
        await self.gru.close()

    def figures(self) -> dict[str, float]:
        return self.gru.figures()

    async def recommend(self, ctx: RecContext) -> RecList:
        served = self.gru.served
        current = ctx.current_item
        known = served is not None and (current is None or current in served.index.index)
        if served is None or not ctx.items or not known:
            return await self.fallback.recommend(ctx)
        window = ctx.items[-self.index.window :]
        knn = self.index.neighbour_scores(window, exclude=ctx.session_id)
        cols, add = index_bonus(self.index, *knn, served.index, self.weight)
        # the GRU's best `want` beat every other item outside cols (see fused_order)
        want = ctx.k + len(ctx.ratings) + SPARE
        got = await self.gru.score(ctx, want, cols)
        if got is None:
            return await self.fallback.recommend(ctx)
        ids = served.index.ids
        ranked, extra = got
        items = self._listed(ranked, extra, cols, add, ctx, ids)
        if len(items) < ctx.k and len(ranked) >= want:  # the rules dropped many: rank all
            got = await self.gru.score(ctx, len(ids), cols)
            if got is not None:
                items = self._listed(*got, cols, add, ctx, ids)
        items = demote_low_rated(items, ctx.ratings)
        if len(items) < ctx.k:  # tiny catalogs: fill from the online model
            more = await self.fallback.recommend(ctx)
            have = {r.item_id for r in items}
            items += [r for r in more.items if r.item_id not in have][: ctx.k - len(items)]
        return RecList(items, served.version)

    def _listed(
        self,
        ranked: Ranked,
        extra: Extra | None,
        cols: np.ndarray,
        add: np.ndarray,
        ctx: RecContext,
        ids: list[str],
    ) -> list[Rec]:
        assert extra is not None  # asked for: the scoring pass returns it
        if len(self._mark) != len(ids):
            self._mark = np.zeros(len(ids), dtype=bool)
        mark = self._mark
        idx, fused = fused_order(ranked, extra.scores, extra.mean, extra.sd, cols, add, mark)
        first = ctx.k + len(ctx.exclude) + len(ctx.ratings) + SPARE + 1
        return apply_rules(fused_pairs(idx, fused, ids, first), ctx)
