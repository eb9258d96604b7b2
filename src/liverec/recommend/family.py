"""Choosing the model family per store: `liverec train --family gru4rec|vsknn|hybrid|auto`.

Owns: writing a vsknn model directory (meta.json with the index parameters plus the
training sessions in sessions.tsv: serving it is `--model DIR`), training a hybrid
(GRU4Rec + V-SkNN fusion weight chosen on validation data), the `auto` comparison of
the three on a validation split carved by time from the training data (never the
test set) with the winner written and the comparison kept in its metadata, and the
evaluation scorer of any family's directory.

Validation: the sessions starting in the last `valid_days` days of the training data
(`time_split`, the test split's rule) or, for data without timestamps (the lines
layout, whose sessions are stored in date order), its last `valid_fraction` of the
sessions in file order (`last_fraction`) are scored, under the serving rules (the item
just consumed is never a hit), by models trained or fitted on the sessions before
them. Candidates are compared by `balanced`: each one's Recall@20 and MRR@20 as
ratios to the best of the single families (GRU4Rec, V-SkNN) on the same validation
data, the worse of the two ratios first, their sum breaking ties; so the winner is
the one whose smaller margin over the better single family is largest. (Recall@20
first, the rule before, chose fusion weights that bought recall with MRR: on
YooChoose it took W = 16 where MRR@20 peaked at 8.) The hybrid's weight is the
best of `WEIGHTS`, or, when that is the largest, the largest of its doublings up to
`WEIGHT_MAX` that still improved (`search_weight`). The winner is then trained again
on all the training data, with the chosen weight, and written.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import LiverecError
from ..model import FORMAT_VERSION, META
from ..model.checkpoint import load_checkpoint, save_checkpoint
from ..model.config import TrainConfig
from ..model.data import ItemIndex, Sessions, fingerprint
from ..model.evaluate import StepScorer, evaluate
from ..model.formats import load_sessions, write_sessions
from ..model.moments import ScoreMoments
from ..model.scorer import GRUScorer, load_scorer
from ..model.split import last_fraction, time_split
from ..model.train import train
from . import FAMILY_CHOICES, model_family
from .gru.served import resolve_checkpoint
from .hybrid import SESSIONS, HybridScorer, load_index, read_meta
from .vsknn import VSKNNScorer

WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # fusion weights tried on validation
WEIGHT_MAX = 64.0  # a best weight at the grid's top is doubled up to this while it wins
RULE = (
    "the largest worse ratio of Recall@20 and MRR@20 to the best single family's"
    " (GRU4Rec, V-SkNN) on validation, serving rules; the sum of the two breaks ties"
)
VALID_FRACTION = 0.08  # untimed data: the validation tail (~ a week of Diginetica)
VSKNN_PARAMS = {  # SessionIndex parameters written into a vsknn or hybrid directory
    "neighbours": 50,
    "sample": 250,
    "per_item": 100,
    "window": 10,
    "session_items": 50,
    "max_sessions": 1_000_000,
}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _figures(scorer: StepScorer, index: ItemIndex, valid: Sessions) -> dict[str, float]:
    res = evaluate(scorer, index, valid, ks=(20,), serving_rules=True)
    return {
        "recall@20": round(float(res["recall@20"]), 4),
        "mrr@20": round(float(res["mrr@20"]), 4),
        "cases": int(res["cases"]),
    }


Key = Callable[[dict[str, float]], tuple[float, float]]


def recall_first(fig: dict[str, float]) -> tuple[float, float]:
    """Recall@20, MRR@20 breaking ties (what `balanced` falls back to)."""
    return (fig["recall@20"], fig["mrr@20"])


def balanced(reference: Sequence[dict[str, float]]) -> Key:
    """The selection key (module docstring): a candidate's figures as ratios to the
    best Recall@20 and the best MRR@20 among `reference` (the single families' figures
    on the same validation data), the worse ratio first and their sum breaking ties.
    Without a reference with both figures above 0: `recall_first`."""
    if not reference:
        return recall_first
    top_r = max(fig["recall@20"] for fig in reference)
    top_m = max(fig["mrr@20"] for fig in reference)
    if top_r <= 0 or top_m <= 0:
        return recall_first

    def key(fig: dict[str, float]) -> tuple[float, float]:
        r, m = fig["recall@20"] / top_r, fig["mrr@20"] / top_m
        return (min(r, m), r + m)

    return key


def search_weight(
    score: Callable[[float], dict[str, float]],
    grid: Sequence[float] = WEIGHTS,
    top: float = WEIGHT_MAX,
    *,
    key: Key = recall_first,
    zero: dict[str, float] | None = None,
) -> tuple[float, dict[str, float], dict[str, dict[str, float]]]:
    """The best fusion weight by `key` of `score(w)` over `grid` (the first of equals
    wins); when the best is the grid's largest weight, the weight is doubled while that
    improves the score and stays <= `top` (a grid that stops where the figures still
    rise would cap the choice). `zero`: the figures at weight 0 when already known
    (GRU4Rec's: without a V-SkNN bonus the z-score is monotone, so the ranking is the
    GRU's), used instead of scoring it again. Returns (weight, its figures, every
    weight tried's)."""
    tried: dict[str, dict[str, float]] = {}

    def figures(w: float) -> dict[str, float]:
        return zero if w == 0 and zero is not None else score(w)

    best_w, best = grid[0], figures(grid[0])
    tried[f"hybrid w={grid[0]:g}"] = best
    for w in grid[1:]:
        fig = figures(w)
        tried[f"hybrid w={w:g}"] = fig
        if key(fig) > key(best):
            best_w, best = w, fig
    w = 2 * best_w if best_w == grid[-1] and best_w > 0 else top + 1
    while w <= top:
        fig = score(w)
        tried[f"hybrid w={w:g}"] = fig
        if key(fig) <= key(best):
            break
        best_w, best = w, fig
        w *= 2
    return best_w, best, tried


def write_vsknn(out: Path, train: Sessions, extra: dict[str, Any] | None = None) -> Path:
    """A vsknn model directory: meta.json + sessions.tsv (the index's sessions)."""
    out.mkdir(parents=True, exist_ok=True)
    write_sessions(train, out / SESSIONS)
    digest = fingerprint(out / SESSIONS)
    now = datetime.now(UTC)
    meta = {
        "format_version": FORMAT_VERSION,
        "family": "vsknn",
        "kind": "vsknn",
        "version": f"vsknn-{now:%Y%m%d-%H%M%S}-{digest[:8]}",
        "created": now.isoformat(timespec="seconds"),
        "liverec_version": __version__,
        "vsknn": dict(VSKNN_PARAMS),
        "data_fingerprint": digest,
        **(extra or {}),
    }
    tmp = out / (META + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, out / META)
    return out


def hybrid_meta(weight: float, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "hybrid",
        "family": "hybrid",
        "hybrid": {"weight": weight, "vsknn": dict(VSKNN_PARAMS)},
        **extra,
    }


def validation_split(
    data: Sessions, valid_days: float = 1.0, valid_fraction: float = VALID_FRACTION
) -> tuple[Sessions, Sessions, dict[str, Any]]:
    """(training part, validation part, how it was carved) of `data`: by time when it
    has timestamps, else its last `valid_fraction` of the sessions in file order."""
    try:
        if data.timed:
            tr, valid = time_split(data, valid_days)
            how: dict[str, Any] = {"valid_days": valid_days}
            what = f"the last {valid_days:g} day(s)"
        else:
            tr, valid = last_fraction(data, valid_fraction)
            how = {"valid_fraction": valid_fraction}
            what = f"the last {valid_fraction:g} of the sessions in file order"
    except (ValueError, LiverecError) as exc:
        raise LiverecError(f"no validation split: {exc}") from None
    if tr.n_sessions == 0 or valid.n_sessions == 0:
        raise LiverecError(f"{what} leave(s) no training or validation data")
    _log(f"validation: {valid.n_sessions} sessions of {what}")
    return tr, valid, how


def train_family(
    family: str,
    data: Sessions,
    config: TrainConfig,
    out: Path,
    valid_days: float = 1.0,
    valid_fraction: float = VALID_FRACTION,
) -> dict[str, Any]:
    """Train/fit `family` on `data` into `out` (see the module docstring); returns
    the selection record written into the metadata (empty for gru4rec and vsknn)."""
    if family == "vsknn":
        write_vsknn(out, data)
        return {}
    if family == "gru4rec":
        train(data, config, out, progress=False)
        return {}
    if family not in ("hybrid", "auto"):
        raise LiverecError(f"unknown family {family!r}; choose from {', '.join(FAMILY_CHOICES)}")
    tr, valid, how = validation_split(data, valid_days, valid_fraction)
    index = ItemIndex.from_sessions(tr)
    result = train(tr, config, None, item_index=index, progress=False)
    knn = VSKNNScorer.fit(tr, index, **VSKNN_PARAMS)
    figures: dict[str, dict[str, float]] = {}  # the single families: the reference
    figures["gru4rec"] = _figures(GRUScorer(result.model), index, valid)
    figures["vsknn"] = _figures(knn, index, valid)
    key = balanced([figures["gru4rec"], figures["vsknn"]])
    moments = ScoreMoments(result.model.item_weight.data, result.model.item_bias.data)

    def score(w: float) -> dict[str, float]:
        fig = _figures(HybridScorer(result.model, index, knn.index, w, moments), index, valid)
        _log(f"valid hybrid w={w:g}: {fig}")
        return fig

    best_w, best, tried = search_weight(score, key=key, zero=figures["gru4rec"])
    figures.update(tried)
    figures["hybrid"] = best
    winner = "hybrid"
    if family == "auto":
        winner = max(("gru4rec", "vsknn", "hybrid"), key=lambda f: key(figures[f]))
    selection = {
        "requested": family,
        "winner": winner,
        "weight": best_w,
        **how,
        "valid_sessions": valid.n_sessions,
        "validation": figures,
        "rule": RULE,
    }
    _log(f"chosen: {winner} (hybrid weight {best_w:g})")
    if winner == "vsknn":
        write_vsknn(out, data, {"selection": selection})
    elif winner == "gru4rec":
        full = train(data, config, None, progress=False)
        save_checkpoint(out, full.model, full.config, full.item_index, {"selection": selection})
    else:
        full = train(data, config, None, progress=False)
        meta = hybrid_meta(best_w, {"selection": selection})
        save_checkpoint(out, full.model, full.config, full.item_index, meta)
        write_sessions(data, out / SESSIONS)
    return selection


def family_scorer(model_dir: Path) -> tuple[str, StepScorer, ItemIndex]:
    """(family, evaluation scorer, item index) of any family's model directory."""
    family = model_family(model_dir)
    directory = resolve_checkpoint(model_dir)
    if family == "gru4rec":
        scorer, index = load_scorer(directory)
        return family, scorer, index
    meta = read_meta(directory)
    if family == "vsknn":
        index = ItemIndex.from_sessions(load_sessions(directory / SESSIONS))
        knn = load_index(directory, dict(meta.get("vsknn") or {}))
        return family, VSKNNScorer(knn, index), index
    model, _, index, meta = load_checkpoint(directory)
    spec = meta["hybrid"]
    knn = load_index(directory, dict(spec["vsknn"]))
    return family, HybridScorer(model, index, knn, float(spec["weight"])), index
