"""A hybrid of GRU4Rec and V-SkNN by score fusion, its weight chosen on validation data.

Owns: the fusion (z-scored GRU4Rec scores + w x max-normalised V-SkNN scores, per
case), the choice of w on a validation split carved from the training data by time
(never on the test set), and the figures of GRU4Rec, V-SkNN and the hybrid on the
test set, every scorer on the same cases. Steps:

1. Train GRU4Rec on TRAIN_TR (or load --model-tr) and fit V-SkNN (the offline
   baseline, its defaults) on it; score each weight of --weights on VALID; keep the
   best Recall@20 (MRR@20 breaks ties).
2. Train GRU4Rec on TRAIN_FULL (or load --model-full), fit V-SkNN on it, and score
   GRU4Rec, V-SkNN and the hybrid with the chosen weight on TEST.

Prints one JSON object per evaluation. Nothing here is asserted; read the numbers.

    nice -n 10 .venv/bin/python bench/bench_hybrid.py --train-tr TR --valid VA \\
        --train-full TRAIN --test TEST --preset rsc15 --out /tmp/hybrid
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from liverec.model.baselines import make_baseline
from liverec.model.config import get_preset
from liverec.model.data import Sessions
from liverec.model.evaluate import StepScorer, evaluate
from liverec.model.formats import load_sessions
from liverec.model.scorer import load_scorer
from liverec.model.train import train


class Hybrid:
    """z(GRU4Rec) + weight x V-SkNN / max(V-SkNN), per row."""

    def __init__(self, gru: StepScorer, knn: StepScorer, weight: float) -> None:
        self.gru, self.knn, self.weight = gru, knn, weight
        self.name = f"hybrid(w={weight:g})"
        self.n_items = gru.n_items

    def reset(self, n_slots: int) -> None:
        self.gru.reset(n_slots)
        self.knn.reset(n_slots)

    def step(self, slots: np.ndarray, items: np.ndarray, new: np.ndarray) -> np.ndarray:
        g = self.gru.step(slots, items, new).astype(np.float64)
        k = self.knn.step(slots, items, new).astype(np.float64)
        z = (g - g.mean(axis=1, keepdims=True)) / np.maximum(g.std(axis=1, keepdims=True), 1e-9)
        top = k.max(axis=1, keepdims=True)
        out: np.ndarray = (z + self.weight * k / np.where(top > 0, top, 1.0)).astype(np.float32)
        return out


def gru_model(data: Sessions, model: str | None, out: Path, preset: str, seed: int) -> Path:
    if model is not None:
        return Path(model)
    config = dataclasses.replace(get_preset(preset), seed=seed, threads=1)
    t0 = time.perf_counter()
    train(data, config, out, progress=False)
    print(json.dumps({"trained": str(out), "seconds": round(time.perf_counter() - t0, 1)}))
    return out


def score(scorer: StepScorer, index: Any, test: Sessions, rules: bool) -> dict[str, float]:
    res = evaluate(scorer, index, test, ks=(20,), serving_rules=rules)
    return {
        "recall@20": round(float(res["recall@20"]), 4),
        "mrr@20": round(float(res["mrr@20"]), 4),
        "cases": int(res["cases"]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-tr", required=True, help="training part before the validation")
    p.add_argument("--valid", required=True, help="validation sessions (after TRAIN_TR)")
    p.add_argument("--train-full", required=True, help="all training sessions")
    p.add_argument("--test", required=True, help="test sessions")
    p.add_argument("--format", default="auto")
    p.add_argument("--preset", default="rsc15")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--model-tr", default=None, help="GRU4Rec trained on TRAIN_TR already")
    p.add_argument("--model-full", default=None, help="GRU4Rec trained on TRAIN_FULL already")
    p.add_argument("--weights", default="0,0.25,0.5,1,2,4,8", help="fusion weights tried")
    p.add_argument("--serving-rules", action="store_true", help="never rank the current item")
    p.add_argument("--out", default="hybrid-models", help="where trained models go")
    args = p.parse_args()
    out = Path(args.out)
    load = lambda path: load_sessions(path, fmt=args.format)  # noqa: E731
    weights = [float(w) for w in args.weights.split(",")]

    tr = load(args.train_tr)
    gru_dir = gru_model(tr, args.model_tr, out / f"tr-{args.seed}", args.preset, args.seed)
    gru, index = load_scorer(gru_dir)
    knn = make_baseline("vsknn", tr, index)
    valid = load(args.valid)
    best: tuple[float, float, float] | None = None
    for w in weights:
        fig = score(Hybrid(gru, knn, w), index, valid, args.serving_rules)
        print(json.dumps({"split": "valid", "weight": w, **fig}), flush=True)
        key = (fig["recall@20"], fig["mrr@20"], w)
        best = key if best is None or key[:2] > best[:2] else best
    assert best is not None
    chosen = best[2]

    full = load(args.train_full)
    gru_dir = gru_model(full, args.model_full, out / f"full-{args.seed}", args.preset, args.seed)
    gru, index = load_scorer(gru_dir)
    knn = make_baseline("vsknn", full, index)
    test = load(args.test)
    rows: list[tuple[str, StepScorer]] = [
        ("gru4rec", gru),
        ("vsknn", knn),
        (f"hybrid w={chosen:g} (chosen on valid)", Hybrid(gru, knn, chosen)),
    ]
    for name, scorer in rows:
        fig = score(scorer, index, test, args.serving_rules)
        print(json.dumps({"split": "test", "model": name, "seed": args.seed, **fig}), flush=True)


if __name__ == "__main__":
    main()
