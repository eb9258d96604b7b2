"""Training throughput of GRU4Rec: (input, target) pairs per second for N batches.

Usage: python bench/bench_train.py PATH [--preset diginetica] [--batches 300]
       [--warmup 20] [--threads 0] [--profile]
PATH: a "lines" file (one session per line, item ids separated by spaces) or a
session-rec TSV (SessionId<TAB>ItemId<TAB>Time with a header).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import torch

from liverec.model.config import get_preset
from liverec.model.data import ItemIndex, encode
from liverec.model.formats import load_sessions
from liverec.model.gru4rec import GRU4Rec
from liverec.model.train import Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", type=Path)
    ap.add_argument("--preset", default="diginetica")
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--profile", action="store_true", help="print a torch profiler table")
    args = ap.parse_args()

    sessions = load_sessions(args.path)
    index = ItemIndex.from_sessions(sessions)
    config = get_preset(args.preset)
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, n_items=len(index)), threads=args.threads
    )
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    torch.manual_seed(config.seed)
    offsets, items, _ = encode(sessions, index)
    counts = np.bincount(items, minlength=len(index)).astype(np.float64)
    trainer = Trainer(GRU4Rec(config.model), config, counts, config.seed)
    trainer.epoch(offsets, items, max_batches=args.warmup)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            trainer.epoch(offsets, items, max_batches=min(args.batches, 50))
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    t0 = time.perf_counter()
    _, pairs = trainer.epoch(offsets, items, max_batches=args.batches)
    secs = time.perf_counter() - t0
    print(
        f"{args.path.name}: preset={args.preset} items={len(index)} threads="
        f"{torch.get_num_threads()} batches={args.batches} pairs={pairs} "
        f"time={secs:.2f}s -> {pairs / secs:.0f} events/s "
        f"({1000 * secs / args.batches:.1f} ms/batch)"
    )


if __name__ == "__main__":
    main()
