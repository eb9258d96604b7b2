"""What one served event costs: one GRU step plus top-k over the catalog.

Two measurements:

  cost     serving cost per event for catalogs of 10k, 100k and 1M items, scored
           alone (batch 1) and micro-batched: exact float32 scoring of every item,
           against a shortlist by int8 scores of every item (model_quantize) or by
           a rank-r factorisation of the item matrix in int8 (model_rank), each
           followed by exact re-scoring of the best k + rescore (what liverec
           serves). Random weights: cost does not depend on what the model learnt.
  quality  what each shortlist costs in Recall/MRR on a trained checkpoint and a
           test file, against exact scoring, under the serving rules.

    python bench/bench_model.py cost --hidden 512 --items 10000,100000,1000000
    python bench/bench_model.py quality --model DIR --test FILE [--format lines] \
        [--ranks 64,128 --rescore 64,256]

Runs on one thread by default (liverec serves with model_threads=1).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from functools import partial
from typing import Any

import numpy as np
import torch

from liverec.model.data import ItemIndex
from liverec.model.gru4rec import GRU4Rec, GRU4RecConfig
from liverec.recommend.gru.served import ServedModel

K = 20
RESCORE = 64


def _time(fn: Any, reps: int) -> list[float]:
    fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _modes(args: argparse.Namespace) -> list[tuple[str, bool, int, int, bool]]:
    """(name, quantize, rank, rescore, quantize_gru) of every scoring compared."""
    modes = [
        ("exact fp32", False, 0, 0, False),
        (f"int8+rescore{RESCORE}", True, 0, RESCORE, False),
    ]
    for rank in [int(x) for x in args.ranks.split(",") if x]:
        for rescore in [int(x) for x in args.rescore.split(",") if x]:
            modes.append((f"rank{rank}+rescore{rescore}", True, rank, rescore, False))
    if args.int8_gru:
        modes += [(f"{m[0]}+int8gru", m[1], m[2], m[3], True) for m in modes[1:]]
    return modes


def _one_batch(
    served: ServedModel, items: torch.Tensor, hidden: torch.Tensor, rescore: int
) -> None:
    """One step for every row of the batch, then the top-K of each row, as served."""
    model = served.model
    with torch.inference_mode():
        out, _ = model.step(model.input_table.index_select(0, items), hidden)
        if not rescore:
            torch.topk(model.score_all(out), K, dim=1)
            return
        cand = served.shortlist(out, [[] for _ in range(len(items))], K + rescore)
        torch.argsort(served.exact(out, cand), dim=1, descending=True)


def cost(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    print(f"threads={args.threads} hidden={args.hidden} k={K}")
    print(
        f"{'items':>9} {'batch':>5} {'mode':>22} {'ms/batch p50':>12} {'p99':>8} "
        f"{'us/event':>9} {'events/s':>9}"
    )
    for n in [int(x) for x in args.items.split(",")]:
        model = GRU4Rec(GRU4RecConfig(n_items=n, layers=(args.hidden,))).eval()
        index = ItemIndex(str(i) for i in range(n))
        for name, quantize, rank, rescore, qgru in _modes(args):
            if qgru:  # quantize_gru swaps the model's cells: a copy per mode
                served = ServedModel.prepare(
                    copy.deepcopy(model), index, quantize, rank, quantize_gru=True
                )
            else:
                served = ServedModel.prepare(model, index, quantize, rank)
            for batch in [int(x) for x in args.batches.split(",")]:
                if not rescore and n * batch > args.exact_limit:
                    continue
                items = torch.randint(0, n, (batch,))
                hidden = torch.randn(1, batch, args.hidden) * 0.1
                reps = max(5, min(200, int(2e8 / (n * args.hidden * max(batch, 4)))))
                times = _time(partial(_one_batch, served, items, hidden, rescore), reps)
                p50 = statistics.median(times)
                p99 = float(np.percentile(times, 99))
                print(
                    f"{n:>9} {batch:>5} {name:>22} {p50 * 1e3:>12.3f} {p99 * 1e3:>8.3f} "
                    f"{p50 / batch * 1e6:>9.1f} {batch / p50:>9.0f}"
                )


def quality(args: argparse.Namespace) -> None:
    from liverec.model.checkpoint import load_checkpoint
    from liverec.model.evaluate import evaluate
    from liverec.model.formats import load_sessions
    from liverec.model.scorer import GRUScorer

    torch.set_num_threads(args.threads)
    model, _, index, meta = load_checkpoint(args.model)
    test = load_sessions(args.test, fmt=args.format)

    class ServedScorer(GRUScorer):
        """The served scoring (liverec.recommend.gru.served.ServedModel): a shortlist by the
        cheap scores, then exact re-scoring of the best K + rescore; every other item
        gets -inf (it cannot be in a served top-K)."""

        def __init__(self, served: ServedModel, rescore: int) -> None:
            super().__init__(served.model)
            self.served, self.rescore = served, rescore

        def step(self, slots: np.ndarray, items: np.ndarray, new: np.ndarray) -> np.ndarray:
            s = torch.as_tensor(np.asarray(slots, dtype=np.int64))
            x = torch.as_tensor(np.asarray(items, dtype=np.int64))
            fresh = torch.as_tensor(np.asarray(new, dtype=bool))
            with torch.inference_mode():
                h = self.hidden.index_select(1, s)
                h[:, fresh] = 0.0
                out, h = self.model.step(self.model.input_table.index_select(0, x), h)
                self.hidden.index_copy_(1, s, h)
                # the serving rule first: the current item is never a candidate
                cand = self.served.shortlist(out, [[i] for i in x.tolist()], K + self.rescore)
                exact = self.served.exact(out, cand)
                scores = torch.full((len(x), self.n_items), float("-inf"))
                scores.scatter_(1, cand, exact)
            return scores.numpy()

    for name, quantize, rank, rescore, qgru in _modes(args):
        m = copy.deepcopy(model) if qgru else model
        served = ServedModel.prepare(m, index, quantize, rank, quantize_gru=qgru)
        scorer = GRUScorer(model) if not rescore else ServedScorer(served, rescore)
        t0 = time.perf_counter()
        res = evaluate(scorer, index, test, ks=(5, 10, 20), serving_rules=True)
        print(
            f"{name:>22}: recall@20 {res['recall@20']:.4f} mrr@20 {res['mrr@20']:.4f} "
            f"recall@5 {res['recall@5']:.4f} mrr@5 {res['mrr@5']:.4f} cases {res['cases']} "
            f"({time.perf_counter() - t0:.0f} s) [{meta.get('version')}]",
            flush=True,
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cost")
    c.add_argument("--hidden", type=int, default=512)
    c.add_argument("--items", default="10000,100000,1000000")
    c.add_argument("--batches", default="1,8,32,128")
    c.add_argument("--threads", type=int, default=1)
    c.add_argument(
        "--exact-limit",
        type=int,
        default=40_000_000,
        help="skip exact scoring above items x batch (too slow to be useful)",
    )
    q = sub.add_parser("quality")
    q.add_argument("--model", required=True)
    q.add_argument("--test", required=True)
    q.add_argument("--format", default="auto")
    q.add_argument("--threads", type=int, default=2)
    for sp in (c, q):
        sp.add_argument("--ranks", default="64,128", help="low-rank shortlists to compare")
        sp.add_argument("--rescore", default="64,256", help="re-scored beyond k (low rank)")
        sp.add_argument("--int8-gru", action="store_true", help="also each with int8 GRU weights")
    args = p.parse_args()
    cost(args) if args.cmd == "cost" else quality(args)


if __name__ == "__main__":
    main()
