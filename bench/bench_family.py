"""`liverec train --family auto` on one data set and seed, and every family on its test set.

Owns: the figures of docs/model-quality.md's family section. For a seed: run the
`auto` choice on TRAIN (validation carved by time from TRAIN, or its last
--valid-fraction of sessions in file order when it has no timestamps; never the test set),
then score on TEST, under the serving rules, the GRU4Rec and V-SkNN trained/fitted
on all of TRAIN and the served winner (`liverec evaluate --model DIR` does the same
for the winner alone). The GRU4Rec trained on all of TRAIN is also written on its own
as OUT/gru4rec-SEED (a plain GRU4Rec checkpoint directory). Prints one JSON object per
line. Nothing is asserted.

    nice -n 10 python bench/bench_family.py --train TRAIN --test TEST --preset rsc15 \\
        --seed 1 --out family-models

For serving cost only (`--cost DIR`), `--untrained OUT` writes OUT/hybrid and
OUT/vsknn from TRAIN without training: the hybrid's GRU4Rec has the preset's shape
and random initial weights (its lists are meaningless; its cost is a trained one's),
weight 8, the default index parameters:

    python bench/bench_family.py --untrained OUT --train TRAIN --test TEST --preset diginetica

`--cost DIR --stream load` times the events of bench/load.py's traffic instead (1,000
live sessions over the ids '0'..'4999', as `load.py --item-format '{}'` sends them),
after 20,000 untimed ones: full item queues, long sessions.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import time
from pathlib import Path

from liverec.model.checkpoint import load_checkpoint, save_checkpoint
from liverec.model.config import get_preset
from liverec.model.data import ItemIndex
from liverec.model.evaluate import StepScorer, evaluate
from liverec.model.formats import load_sessions
from liverec.model.scorer import GRUScorer
from liverec.model.train import train
from liverec.recommend.family import VALID_FRACTION, VSKNN_PARAMS, family_scorer, train_family
from liverec.recommend.vsknn import VSKNNScorer


def _children_cpu_s() -> float:
    """CPU seconds used so far by this process's live children (scoring workers)."""
    import multiprocessing
    import os

    total = 0.0
    for child in multiprocessing.active_children():
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def test_steps(test_path: str, events: int) -> list[tuple[str, list[str]]]:
    """(session, its items so far) per event: the test sessions one after another."""
    test = load_sessions(test_path)
    steps: list[tuple[str, list[str]]] = []
    for s in range(test.n_sessions):
        items = test.session(s).tolist()
        steps += [(f"s{s}", items[: pos + 1]) for pos in range(len(items))]
        if len(steps) >= events:
            break
    return steps


def load_steps(events: int, warm: int, seed: int) -> list[tuple[str, list[str]]]:
    """(session, its last 200 items) per event, in bench/load.py's traffic: 1,000 live
    sessions taking turns at random, each browsing its default catalog (5,000 ids
    '0'..'4999', Zipf 1.0, half of the steps to a related item); `warm` events first."""
    import random

    from traffic import Catalog  # bench/, this script's directory

    catalog, rnd = Catalog(5000, 1.0, seed, fmt="{}"), random.Random(seed)
    current: list[int | None] = [None] * 1000
    seqs: list[list[str]] = [[] for _ in range(1000)]
    steps = []
    for _ in range(warm + events):
        s = rnd.randrange(1000)
        current[s] = catalog.step(current[s], rnd)
        seqs[s] = [*seqs[s][-199:], catalog.ids[current[s]]]
        steps.append((f"s{s}", seqs[s]))
    return steps


async def cost(
    model_dir: Path, steps: list[tuple[str, list[str]]], events: int, start: bool
) -> None:
    """CPU µs per event of the served family (`observe` + `recommend` of a list of 20,
    as the session manager calls them) over `steps`, beside the online recommender in
    the same run; only the last `events` are timed. `start`: start it as the server
    does (a GRU4Rec or hybrid then scores in its worker process: the CPU here is the
    event loop's, the worker's is reported apart); else its scoring runs on a thread
    here, counted in."""
    from liverec.config import Settings
    from liverec.recommend import build_recommender
    from liverec.recommend.base import RecContext
    from liverec.types import Event

    settings = Settings(model_path=str(model_dir))
    served = build_recommender(settings)
    rows = {"online": build_recommender(Settings()), "served": served}
    timed = max(len(steps) - events, 0)
    for name, rec in rows.items():
        if start:
            await rec.start()
        times: list[float] = []
        worker0 = 0.0
        for n, (session, items) in enumerate(steps):
            if n == timed:
                worker0 = _children_cpu_s()
            t0 = time.process_time()
            rec.observe(Event(f"e{n}", session, "view", items[-1], 1000.0 + n))
            await rec.recommend(RecContext(session, items, 20, current_item=items[-1]))
            if n >= timed:
                times.append(time.process_time() - t0)
        n = len(times)
        worker_us = round((_children_cpu_s() - worker0) / n * 1e6)
        if start:
            await rec.close()
        times.sort()

        def q(f: float, times: list[float] = times) -> int:
            return round(times[int(f * (len(times) - 1))] * 1e6)

        print(
            json.dumps(
                {
                    "cost": name,
                    "version": rec.version,
                    "started": start,
                    "events": n,
                    "cpu_us_median": q(0.5),
                    "cpu_us_p99": q(0.99),
                    "worker_cpu_us_mean": worker_us,
                }
            ),
            flush=True,
        )


def untrained(out: Path, train_path: str, preset: str, seed: int) -> None:
    """OUT/vsknn and OUT/hybrid (a randomly initialised GRU4Rec of the preset's
    shape), for the cost of serving only."""
    import torch

    from liverec.model.formats import write_sessions
    from liverec.model.gru4rec import GRU4Rec
    from liverec.recommend.family import hybrid_meta, write_vsknn
    from liverec.recommend.hybrid import SESSIONS

    data = load_sessions(train_path)
    index = ItemIndex.from_sessions(data)
    config = get_preset(preset)
    config = dataclasses.replace(
        config, seed=seed, model=dataclasses.replace(config.model, n_items=len(index))
    )
    torch.manual_seed(seed)
    model = GRU4Rec(config.model)
    save_checkpoint(out / "hybrid", model, config, index, hybrid_meta(8.0, {"untrained": True}))
    write_sessions(data, out / "hybrid" / SESSIONS)
    write_vsknn(out / "vsknn", data)
    print(json.dumps({"untrained": str(out), "items": len(index), "preset": preset}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cost", default=None, help="a model directory: per-event CPU cost only")
    p.add_argument("--untrained", default=None, help="write OUT/hybrid, OUT/vsknn (see above)")
    p.add_argument("--events", type=int, default=5000)
    p.add_argument("--start", action="store_true", help="--cost: start it as the server does")
    p.add_argument(
        "--stream",
        choices=("test", "load"),
        default="test",
        help="--cost: the --test sessions, or bench/load.py's traffic after 20,000 warm events",
    )
    p.add_argument("--train", default=None)
    p.add_argument("--test", required=True)
    p.add_argument("--preset", default="rsc15")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default="family-models")
    p.add_argument("--valid-fraction", type=float, default=VALID_FRACTION)
    args = p.parse_args()
    if args.untrained is not None:
        untrained(Path(args.untrained), args.train, args.preset, args.seed)
        return
    if args.cost is not None:
        import asyncio

        if args.stream == "load":
            steps = load_steps(args.events, 20_000, args.seed)
        else:
            steps = test_steps(args.test, args.events)
        timed = args.events if args.stream == "load" else len(steps)  # test: every step
        asyncio.run(cost(Path(args.cost), steps, timed, args.start))
        return
    data, test = load_sessions(args.train), load_sessions(args.test)
    config = dataclasses.replace(get_preset(args.preset), seed=args.seed, threads=1)
    out = Path(args.out) / f"auto-{args.seed}"
    t0 = time.perf_counter()
    selection = train_family("auto", data, config, out, valid_fraction=args.valid_fraction)
    seconds = round(time.perf_counter() - t0, 1)
    print(json.dumps({"seed": args.seed, "selection": selection, "seconds": seconds}), flush=True)
    family, served, index = family_scorer(out)
    rows: list[tuple[str, StepScorer, ItemIndex]] = [(f"auto ({family})", served, index)]
    if family == "vsknn":
        gru = train(data, config, None, progress=False)
        model, gconfig, gindex = gru.model, gru.config, gru.item_index
    else:
        model, gconfig, gindex, _ = load_checkpoint(out)
    save_checkpoint(Path(args.out) / f"gru4rec-{args.seed}", model, gconfig, gindex)
    rows.append(("gru4rec", GRUScorer(model), gindex))
    rows.append(("vsknn", VSKNNScorer.fit(data, index, **VSKNN_PARAMS), index))
    for name, scorer, idx in rows:
        res = evaluate(scorer, idx, test, ks=(20,), serving_rules=True)
        fig = {k: round(float(res[k]), 4) for k in ("recall@20", "mrr@20")}
        print(
            json.dumps({"seed": args.seed, "model": name, **fig, "cases": res["cases"]}), flush=True
        )


if __name__ == "__main__":
    main()
