"""Benchmark of the served GRU4Rec recommender alone: latency of recommend() under load.

Owns: an open-loop driver (Poisson arrivals at --rate calls/s from one asyncio loop,
--sessions live sessions each taking its next item, Zipf item popularity) against a
started GRURecommender, one run per scorer configuration, side by side in the same
invocation, plus the same driver against the online (co-occurrence) recommender as the
baseline. Prints p50/p90/p99 of the call latency (ms), calls/s completed, mean batch
and the CPU time this process spent per call. No sockets, no store: what the model
adds to an event. Nothing is asserted; read the numbers.

    nice -n 10 .venv/bin/python bench/bench_served.py --model /path/to/checkpoint
    .venv/bin/python bench/bench_served.py --random 43097x512 --seconds 20 \\
        --config process --config 'thread;model_rank=0'

A config is a scorer ("process" | "thread") then ';'-separated GRURecommender options
(rank, rescore, quantize, quantize_gru, max_batch, pipeline, threads; default: the
server's settings). --random NxH scores a
randomly initialised model of that shape (the latency does not depend on the weights;
the shortlist quality does, see bench_model.py quality).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from liverec.config import Settings
from liverec.recommend.base import RecContext, Recommender
from liverec.recommend.gru import GRURecommender
from liverec.recommend.online import OnlineRecommender
from liverec.types import Event

DEFAULT_CONFIGS = ["process", "thread"]


def random_checkpoint(shape: str, out: Path) -> Path:
    """Save a randomly initialised GRU4Rec of shape 'ITEMSxHIDDEN' to out."""
    from liverec.model.checkpoint import save_checkpoint
    from liverec.model.config import TrainConfig
    from liverec.model.data import ItemIndex
    from liverec.model.gru4rec import GRU4Rec, GRU4RecConfig

    n, h = (int(x) for x in shape.lower().split("x"))
    cfg = TrainConfig(model=GRU4RecConfig(n_items=n, layers=(h,)))
    model = GRU4Rec(cfg.model)
    model.item_bias.data.normal_(0, 0.1)
    index = ItemIndex([str(i) for i in range(1, n + 1)])
    return save_checkpoint(out, model, cfg, index, {"data_fingerprint": "random"})


def parse_config(text: str) -> tuple[str, dict[str, Any]]:
    mode, *opts = [p.strip() for p in text.split(";") if p.strip()]
    if mode not in ("process", "thread"):
        raise SystemExit(f"config must start with process or thread: {text!r}")
    d = Settings()  # the server's defaults, overridden by the config's options
    kw: dict[str, Any] = {
        "rank": d.model_rank,
        "rescore": d.model_rescore,
        "quantize": d.model_quantize,
        "quantize_gru": d.model_quantize_gru,
        "pipeline": d.model_pipeline,
        "max_batch": d.model_max_batch,
    }
    for opt in opts:
        key, _, raw = opt.partition("=")
        key = key.removeprefix("model_")
        kw[key] = (
            raw.lower() in ("1", "true", "yes")
            if raw.lower() in ("0", "1", "true", "false", "yes", "no")
            else int(raw)
        )
    return mode, kw


async def drive(
    rec: Recommender, items: list[str], args: argparse.Namespace, seed: int
) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, len(items) + 1, dtype=np.float64) ** -1.0
    p = ranks / ranks.sum()
    n_calls = int(args.rate * args.seconds)
    draws = rng.choice(len(items), size=n_calls, p=p)
    gaps = rng.exponential(1.0 / args.rate, size=n_calls)
    sessions: list[list[str]] = [[] for _ in range(args.sessions)]
    who = rng.integers(0, args.sessions, size=n_calls)
    names = [f"s{s}" for s in range(args.sessions)]
    latencies: list[float] = []
    warm = int(args.rate * args.warmup)

    async def one(i: int, s: int, item: str) -> None:
        seq = sessions[s]
        seq.append(item)
        if len(seq) > 30:  # the session ends; a new one takes its place
            del seq[:-1]
        if len(seq) == 1:
            names[s] = f"s{s}-{i}"
        sid = names[s]
        rec.observe(Event(f"e{i}", sid, "view", item, time.time()))
        ctx = RecContext(sid, list(seq), 10, current_item=item)
        t0 = time.perf_counter()
        await rec.recommend(ctx)
        if i >= warm:
            latencies.append(time.perf_counter() - t0)

    tasks: set[asyncio.Task[None]] = set()
    idle = asyncio.Event()

    def finished(t: asyncio.Task[None]) -> None:
        tasks.discard(t)
        if not tasks:
            idle.set()

    cpu0 = time.process_time()
    start = time.perf_counter()
    due = start
    for i in range(n_calls):
        due += gaps[i]
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        t = asyncio.create_task(one(i, int(who[i]), items[draws[i]]))
        tasks.add(t)
        t.add_done_callback(finished)
    idle.clear()
    if tasks:
        await idle.wait()
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    lat = sorted(latencies)
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [0.0] * 99
    return {
        "p50_ms": q[49] * 1e3,
        "p90_ms": q[89] * 1e3,
        "p99_ms": q[98] * 1e3,
        "calls_per_s": n_calls / wall,
        "cpu_ms_per_call": cpu / n_calls * 1e3,
    }


async def run_one(
    label: str, args: argparse.Namespace, model: Path | None, items: list[str], seed: int
) -> dict[str, Any]:
    if model is None:
        rec: Recommender = OnlineRecommender()
        extra: dict[str, Any] = {}
    else:
        mode, kw = parse_config(label)
        rec = GRURecommender(
            model, OnlineRecommender(), process=mode == "process", poll_s=None, **kw
        )
    await rec.start()
    try:
        out = await drive(rec, items, args, seed)
        if isinstance(rec, GRURecommender):
            extra = {"mean_batch": rec.stats()["mean_batch"]}
    finally:
        await rec.close()
    return {"config": label, **out, **extra}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="checkpoint directory (or models/ registry)")
    src.add_argument("--random", help="random model of shape ITEMSxHIDDEN, e.g. 43097x512")
    p.add_argument("--config", action="append", help=f"scorer config (default {DEFAULT_CONFIGS})")
    p.add_argument("--rate", type=float, default=1000.0, help="calls per second [1000]")
    p.add_argument("--seconds", type=float, default=20.0, help="per run [20]")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds not measured [3]")
    p.add_argument("--sessions", type=int, default=1000, help="live sessions [1000]")
    p.add_argument("--repeat", type=int, default=1, help="rounds of every config [1]")
    p.add_argument("--no-baseline", action="store_true", help="skip the online recommender")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()
    if args.seconds <= args.warmup:
        p.error(
            f"--seconds ({args.seconds:g}) must exceed --warmup ({args.warmup:g}): "
            "the warm-up is part of each run and nothing would be measured"
        )
    configs = args.config or DEFAULT_CONFIGS
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else random_checkpoint(args.random, Path(tmp) / "m")
        from liverec.model.checkpoint import load_checkpoint
        from liverec.recommend.gru.served import resolve_checkpoint

        items = list(load_checkpoint(resolve_checkpoint(model))[2].ids)
        rows = []
        print(f"model {model} ({len(items)} items), {args.rate:g} calls/s, {args.seconds:g} s")
        print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
        header = (
            f"{'config':44} {'p50':>7} {'p90':>7} {'p99':>7} {'calls/s':>8} {'cpu/call':>8} batch"
        )
        print(header)
        for rnd in range(args.repeat):
            plan: list[str | None] = list(configs) + ([] if args.no_baseline else [None])
            random.Random(rnd).shuffle(plan)
            for label in plan:
                row = asyncio.run(
                    run_one(label or "online", args, model if label else None, items, rnd)
                )
                rows.append(row)
                print(
                    f"{row['config']:44} {row['p50_ms']:7.2f} {row['p90_ms']:7.2f} "
                    f"{row['p99_ms']:7.2f} {row['calls_per_s']:8.0f} "
                    f"{row['cpu_ms_per_call']:8.3f} {row.get('mean_batch', 0):.1f}",
                    flush=True,
                )
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
