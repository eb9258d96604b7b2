"""Serving the hybrid family: GRU4Rec scores fused with V-SkNN scores per event.

Owns: the fusion (`fuse`: z-scored GRU4Rec scores over every item plus `weight` x
the V-SkNN scores divided by their maximum, per event; the fusion of
bench/bench_hybrid.py), `HybridRecommender` (the served family: the checkpoint's GRU
stepped once per event from a per-session hidden state, the session index of
vsknn.py for the same session, the rules of base.py on the fused list) and
`HybridScorer` (the same scores for `liverec.model.evaluate`, so the offline
figures are what is served).

A hybrid model directory is a GRU4Rec checkpoint whose meta.json says
`"family": "hybrid"` and carries `"hybrid": {"weight": W, "vsknn": {...index
parameters...}}`; its V-SkNN index is built at start from the directory's
`sessions.tsv` (the training sessions). The weight was chosen on a validation split
carved by time from the training data (`liverec train --family hybrid|auto`).

Cost per event, bounded by settings and the checkpoint: one GRU step and one score
pass over the n_items of the checkpoint (O(H x n_items), exact float32, no
shortlist: the z-score needs every score), the V-SkNN scoring of vsknn.py (bounded
by its window, per_item, sample and neighbours), and a partial sort of n_items. A
session whose state is not held (new, evicted beyond `model_max_sessions`, restart)
is rebuilt by replaying its last `model_replay_max` items. A new directory at the
served path replaces this one while serving (reloading.py).
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Settings
from ..errors import ModelError
from ..model import META
from ..model.checkpoint import load_checkpoint
from ..model.data import ItemIndex
from ..model.formats import load_sessions
from ..model.gru4rec import GRU4Rec
from ..model.scorer import GRUScorer
from ..types import Event
from .base import (
    RecContext,
    RecList,
    Recommender,
    apply_rules,
    blocked_items,
    demote_low_rated,
)
from .vsknn import SPARE, SessionIndex

log = logging.getLogger("liverec.hybrid")

SESSIONS = "sessions.tsv"  # in a vsknn or hybrid model directory: the indexed sessions


def fuse(gru: np.ndarray, knn: dict[str, float], index: ItemIndex, weight: float) -> np.ndarray:
    """One row (n_items,) float32: z(gru) + weight x knn / max(knn) (knn items outside
    `index` are ignored; an empty knn adds nothing)."""
    g = gru.astype(np.float64)
    z = (g - g.mean()) / max(float(g.std()), 1e-9)
    if knn and weight:
        top = max(knn.values())
        if top > 0:
            get = index.index.get
            cols = [get(i) for i in knn]
            keep = [(c, v) for c, v in zip(cols, knn.values(), strict=True) if c is not None]
            if keep:
                c = np.fromiter((c for c, _ in keep), dtype=np.int64, count=len(keep))
                v = np.fromiter((v for _, v in keep), dtype=np.float64, count=len(keep))
                z[c] += weight * v / top
    out: np.ndarray = z.astype(np.float32)
    return out


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
    """`StepScorer` for `liverec.model.evaluate`: the fused scores the server ranks by."""

    def __init__(self, model: GRU4Rec, item_index: ItemIndex, knn: SessionIndex, weight: float):
        self.gru = GRUScorer(model)
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
            out[r] = fuse(g[r], self.knn.scores(seq), self.item_index, self.weight)
        return out


class HybridRecommender(Recommender):
    """The hybrid of a model directory over an online fallback (empty sessions, current
    items the checkpoint does not know). Call only from the event loop thread."""

    def __init__(
        self,
        path: Path,
        fallback: Recommender,
        *,
        live: bool = True,
        max_sessions: int = 50_000,
        replay_max: int = 50,
        threads: int = 1,
    ) -> None:
        self.path = path
        self.fallback = fallback
        self.live = live
        self.max_sessions, self.replay_max = max_sessions, replay_max
        meta = read_meta(path)
        try:
            spec = meta["hybrid"]
            self.weight = float(spec["weight"])
            params = dict(spec["vsknn"])
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"{path / META}: no hybrid weight and vsknn parameters ({e})") from e
        self.model, _, self.items, meta = load_checkpoint(path)
        self._version = str(meta.get("version") or path.name)
        self.index = load_index(path, params)
        torch.set_num_threads(threads)
        self.states: OrderedDict[str, tuple[int, torch.Tensor]] = OrderedDict()
        log.info(
            "hybrid %s: weight %g, %d indexed sessions", self._version, self.weight, len(self.index)
        )

    @classmethod
    def from_settings(cls, settings: Settings, path: Path, fallback: Recommender) -> Recommender:
        return cls(
            path,
            fallback,
            live=settings.vsknn_live,
            max_sessions=settings.model_max_sessions,
            replay_max=settings.model_replay_max,
            threads=settings.model_threads,
        )

    @property
    def version(self) -> str:
        return self._version

    def observe(self, event: Event) -> None:
        self.fallback.observe(event)
        if self.live:
            self.index.add(event.session_id, event.item_id)

    def forget(self, session_id: str) -> None:
        self.states.pop(session_id, None)
        self.fallback.forget(session_id)

    async def start(self) -> None:
        await self.fallback.start()

    async def close(self) -> None:
        await self.fallback.close()

    def _gru_scores(self, ctx: RecContext) -> np.ndarray | None:
        """The GRU's scores after the session's items (None: nothing it knows)."""
        index = self.items.index
        held = self.states.get(ctx.session_id)
        unseen = ctx.position - held[0] if held is not None else -1
        if held is not None and 1 <= unseen <= len(ctx.items):
            tail, hidden = ctx.items[len(ctx.items) - unseen :], held[1]
        else:
            tail, hidden = ctx.items[-self.replay_max :], self.model.init_hidden(1)
        feed = [index[i] for i in tail if i in index]
        if not feed:
            return None
        with torch.inference_mode():
            for code in feed:
                scores, hidden = self.model(torch.tensor([code]), hidden)  # (1, n), (L, 1, H)
        self.states[ctx.session_id] = (ctx.position, hidden)
        self.states.move_to_end(ctx.session_id)
        while len(self.states) > self.max_sessions:
            self.states.popitem(last=False)
        row: np.ndarray = scores[0].numpy()
        return row

    async def recommend(self, ctx: RecContext) -> RecList:
        current = ctx.current_item
        if not ctx.items or (current is not None and current not in self.items.index):
            return await self.fallback.recommend(ctx)
        g = self._gru_scores(ctx)
        if g is None:
            return await self.fallback.recommend(ctx)
        window = ctx.items[-self.index.window :]
        fused = fuse(g, self.index.scores(window, exclude=ctx.session_id), self.items, self.weight)
        limit = min(len(fused), ctx.k + len(blocked_items(ctx)) + len(ctx.ratings) + SPARE)
        items = apply_rules(self._ranked(fused, limit), ctx)
        if len(items) < ctx.k and limit < len(fused):  # the rules dropped many: rank all
            items = apply_rules(self._ranked(fused, len(fused)), ctx)
        items = demote_low_rated(items, ctx.ratings)
        if len(items) < ctx.k:  # tiny catalogs: fill from the online model
            more = await self.fallback.recommend(ctx)
            have = {r.item_id for r in items}
            items += [r for r in more.items if r.item_id not in have][: ctx.k - len(items)]
        return RecList(items, self._version)

    def _ranked(self, fused: np.ndarray, limit: int) -> list[tuple[str, float]]:
        """The best `limit` items, best first (ties by item index)."""
        if limit < len(fused):
            top = np.argpartition(-fused, limit - 1)[:limit]
        else:
            top = np.arange(len(fused))
        top = top[np.lexsort((top, -fused[top]))]
        ids = self.items.ids
        return [(ids[j], float(fused[j])) for j in top.tolist()]
