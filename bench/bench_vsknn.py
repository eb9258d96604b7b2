"""Benchmark of served session-kNN: per-event cost at 100k and 1M indexed sessions.

Owns: building a `SessionIndex` (the vsknn_* defaults) from N synthetic sessions (the
stream of bench_online.py: Zipf item popularity, half of the steps to one of an
item's few related items), then timing what the server does per event, index the
event and make a list of k = 20 (`observe` + `recommend`), over held-out sessions
interleaved 64 at a time. The online recommender, fed the same N sessions and the
same events, is the baseline of the same run. Figures: wall and thread-CPU median
and p99 per event (microseconds), build time and the process's resident memory
growth. Nothing here is asserted; read the numbers.

    nice -n 10 .venv/bin/python bench/bench_vsknn.py                         # 100k and 1M
    nice -n 10 .venv/bin/python bench/bench_vsknn.py --sessions 100000 --events 5000
    nice -n 10 .venv/bin/python bench/bench_vsknn.py --quality TRAIN TEST [--set sample=500]

`--quality` prints Recall@20 / MRR@20 (serving rules) of the served V-SkNN with the
vsknn_* defaults (or `--set NAME=N`) beside the offline V-SkNN baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from dataclasses import dataclass, field

from bench_online import Stream, events, make_stream, pct  # same directory
from liverec.config import Settings
from liverec.recommend.base import RecContext, Recommender
from liverec.recommend.online import OnlineRecommender
from liverec.recommend.vsknn import SessionIndex, VSKNNRecommender, index_params


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@dataclass(slots=True)
class Times:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    models: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        (wm, w99), (cm, c99) = pct(self.wall), pct(self.cpu)
        return {
            "wall_median_us": round(wm, 1),
            "wall_p99_us": round(w99, 1),
            "cpu_median_us": round(cm, 1),
            "cpu_p99_us": round(c99, 1),
            "events": len(self.wall),
        }


async def serve(rec: Recommender, held_out: Stream, k: int) -> Times:
    """observe + recommend for every held-out event, as the session manager does."""
    times = Times()
    seqs: dict[str, list[str]] = {}
    for event in events(held_out):
        seq = seqs.setdefault(event.session_id, [])
        seq.append(event.item_id)
        ctx = RecContext(event.session_id, seq[-50:], k, current_item=event.item_id)
        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        rec.observe(event)
        recs = await rec.recommend(ctx)
        c1, w1 = time.thread_time_ns(), time.perf_counter_ns()
        times.wall.append((w1 - w0) / 1000)
        times.cpu.append((c1 - c0) / 1000)
        times.models[recs.model] = times.models.get(recs.model, 0) + 1
    return times


def run(n_sessions: int, n_items: int, n_held: int, k: int, seed: int) -> dict[str, object]:
    stream = make_stream(n_items, n_sessions * 5 + n_held, seed)
    # the held-out sessions: the last ones, about n_held events
    cut, total = len(stream.sessions), 0
    while total < n_held and cut > 0:
        cut -= 1
        total += len(stream.sessions[cut])
    indexed = stream.sessions[:cut]
    held = Stream(stream.sessions[cut:], stream.actions[cut:])
    names = [[f"item{i}" for i in seq] for seq in indexed]
    settings = Settings(recommender="vsknn")
    out: dict[str, object] = {"sessions": len(indexed), "items": n_items, "k": k}

    gc.collect()
    before, t0 = rss_bytes(), time.perf_counter()
    index = SessionIndex(**index_params(settings))
    index.add_sessions(names)
    out["vsknn_build_s"] = round(time.perf_counter() - t0, 1)
    out["vsknn_rss_mb"] = round((rss_bytes() - before) / 2**20)
    vsknn = VSKNNRecommender(index, OnlineRecommender.from_settings(settings))
    out["vsknn"] = asyncio.run(serve(vsknn, held, k)).summary()
    del vsknn, index
    gc.collect()

    before, t0 = rss_bytes(), time.perf_counter()
    online = OnlineRecommender.from_settings(settings)
    for event in events(Stream(indexed, stream.actions[:cut])):
        online.observe(event)
    out["online_build_s"] = round(time.perf_counter() - t0, 1)
    out["online_rss_mb"] = round((rss_bytes() - before) / 2**20)
    out["online"] = asyncio.run(serve(online, held, k)).summary()
    return out


def quality(train_path: str, test_path: str, fmt: str, params: dict[str, int]) -> None:
    """Recall@20 / MRR@20 under the serving rules: the served V-SkNN (its offline
    scorer ranks in the served order) and the offline V-SkNN baseline."""
    from liverec.model.baselines import make_baseline
    from liverec.model.data import ItemIndex
    from liverec.model.evaluate import evaluate
    from liverec.model.formats import load_sessions
    from liverec.recommend.vsknn import VSKNNScorer

    train = load_sessions(train_path, fmt=fmt)
    test = load_sessions(test_path, fmt=fmt)
    index = ItemIndex.from_sessions(train)
    scorers = {
        "served vsknn": lambda: VSKNNScorer.fit(train, index, **params),
        "baseline vsknn": lambda: make_baseline("vsknn", train, index),
    }
    for name, fit in scorers.items():
        t0 = time.perf_counter()
        res = evaluate(fit(), index, test, ks=(20,), serving_rules=True)
        row = {k: round(float(res[k]), 4) for k in ("recall@20", "mrr@20")}
        row |= {"cases": int(res["cases"]), "seconds": round(time.perf_counter() - t0, 1)}
        print(json.dumps({"scorer": name, **row, **(params if "served" in name else {})}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", default="100000,1000000", help="indexed sessions (comma list)")
    p.add_argument("--items", type=int, default=100_000, help="catalog size")
    p.add_argument("--events", type=int, default=20_000, help="held-out events timed")
    p.add_argument("--k", type=int, default=20, help="list length")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quality", nargs=2, metavar=("TRAIN", "TEST"), help="score on a split")
    p.add_argument("--format", default="auto", help="layout of the --quality files")
    p.add_argument("--set", action="append", default=[], metavar="NAME=N", help="vsknn_NAME")
    args = p.parse_args()
    params = index_params(Settings())
    for item in args.set:
        name, _, value = item.partition("=")
        params[name] = int(value)
    if args.quality:
        quality(*args.quality, args.format, params)
        return
    for n in (int(x) for x in args.sessions.split(",")):
        result = run(n, args.items, args.events, args.k, args.seed)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
