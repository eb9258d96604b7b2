"""Benchmark of the online recommender: observe() and recommend() cost, and memory.

Owns: a synthetic stream of sessions (Zipf item popularity, half of the steps going to
one of an item's few "related" items so co-occurrence has structure), the per-call
timings (median and p99, microseconds) and the memory figures (tracemalloc) printed
as one table per catalog size. Nothing here is asserted; read the numbers.

    nice -n 10 .venv/bin/python bench/bench_online.py              # 10k and 100k items
    nice -n 10 .venv/bin/python bench/bench_online.py --items 10000 --events-per-item 10

The "catalog filters" rows time the lists when a catalog covers only a small share of
the traffic's items (`--catalog-cover`, default 1%): the rules then reject most
candidates, the case where a list used to cost a scan of every known item:

    nice -n 10 .venv/bin/python bench/bench_online.py --items 5000 100000 1000000 \
        --events 1000000 --skip-memory
"""

from __future__ import annotations

import argparse
import gc
import itertools
import statistics
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from liverec.recommend.base import RecContext
from liverec.recommend.online import OnlineRecommender
from liverec.types import Event

T = TypeVar("T")
ACTIONS = ("view", "view", "view", "view", "click", "click", "add_to_cart", "purchase")


@dataclass(frozen=True, slots=True)
class Stream:
    sessions: list[list[int]]
    actions: list[list[int]]


def make_stream(n_items: int, n_events: int, seed: int, zipf_s: float = 1.0) -> Stream:
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, n_items + 1, dtype=np.float64)
    p = ranks**-zipf_s
    p /= p.sum()
    perm = rng.permutation(n_items)  # item id = perm[rank]
    related = rng.integers(0, n_items, size=(n_items, 8))
    draws = perm[rng.choice(n_items, size=n_events, p=p)]
    coin = rng.random(n_events)
    pick = rng.integers(0, 8, size=n_events)
    acts = rng.integers(0, len(ACTIONS), size=n_events)
    sessions: list[list[int]] = []
    actions: list[list[int]] = []
    i = 0
    while i < n_events:
        length = min(int(rng.geometric(0.2)), n_events - i)  # mean 5
        seq = [int(draws[i])]
        for j in range(i + 1, i + length):
            prev = seq[-1]
            seq.append(int(related[prev, pick[j]]) if coin[j] < 0.5 else int(draws[j]))
        sessions.append(seq)
        actions.append([int(a) for a in acts[i : i + length]])
        i += length
    return Stream(sessions, actions)


def events(stream: Stream, fresh_sessions: bool = False) -> Iterator[Event]:
    """The stream's events, sessions interleaved 64 at a time like concurrent users."""
    n = 0
    sessions = stream.sessions
    for start in range(0, len(sessions), 64):
        block = range(start, min(start + 64, len(sessions)))
        longest = max(len(sessions[s]) for s in block)
        for pos in range(longest):
            for s in block:
                seq = sessions[s]
                if pos < len(seq):
                    n += 1
                    sid = f"s{n}" if fresh_sessions else f"s{s}"
                    action = ACTIONS[stream.actions[s][pos]]
                    yield Event(f"e{n}", sid, action, f"item{seq[pos]}", time.time())


@dataclass(slots=True)
class Timings:
    """Per-call wall time and thread CPU time, microseconds. CPU time leaves out
    the time other processes held the core (the machine may be shared)."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def call(self, fn: Callable[[T], object], arg: T) -> None:
        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        fn(arg)
        c1, w1 = time.thread_time_ns(), time.perf_counter_ns()
        self.wall.append((w1 - w0) / 1000)
        self.cpu.append((c1 - c0) / 1000)

    def row(self, name: str) -> str:
        (wm, w99), (cm, c99) = pct(self.wall), pct(self.cpu)
        return (
            f"{name:26s} wall median {wm:8.1f} p99 {w99:8.1f} us | "
            f"cpu median {cm:8.1f} p99 {c99:8.1f} us  (n={len(self.wall)})"
        )


def pct(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return statistics.median(values), values[min(len(values) - 1, int(len(values) * 0.99))]


def build(rec: OnlineRecommender, stream: Stream, timed_every: int) -> Timings:
    """Feed the whole stream; time every `timed_every`-th observe()."""
    timings = Timings()
    for n, event in enumerate(events(stream)):
        if n % timed_every == 0:
            timings.call(rec.observe, event)
        else:
            rec.observe(event)
    return timings


def memory(stream: Stream) -> dict[str, float]:
    """Bytes per item (no edges), per neighbour entry, per tracked session."""
    gc.collect()
    tracemalloc.start()
    items_only = OnlineRecommender(max_sessions=1)
    base = tracemalloc.get_traced_memory()[0]
    for event in events(stream, fresh_sessions=True):
        items_only.observe(event)  # every event alone in its session: no edges
    per_item = (tracemalloc.get_traced_memory()[0] - base) / items_only.stats().items
    del items_only
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    rec = OnlineRecommender()
    for event in events(stream):
        rec.observe(event)
    total = tracemalloc.get_traced_memory()[0] - base
    stats = rec.stats()
    for s in range(len(stream.sessions)):
        rec.forget(f"s{s}")
    gc.collect()
    without_sessions = tracemalloc.get_traced_memory()[0] - base
    ledger, contributors = ledger_bytes(stream)  # kept after forget(): not an edge's
    tracemalloc.stop()
    per_session = (total - without_sessions) / max(1, stats.sessions)
    per_edge = (without_sessions - per_item * stats.items - ledger) / max(1, stats.edges)
    return {
        "total_mb": total / 2**20,
        "items": stats.items,
        "edges": stats.edges,
        "sessions": stats.sessions,
        "per_item": per_item,
        "per_edge": per_edge,
        "per_session": per_session,
        "per_contributor": ledger / max(1, contributors),
    }


def ledger_bytes(stream: Stream) -> tuple[float, int]:
    """Bytes the influence ledger holds for the stream, and its contributors (0, 0
    for a recommender without one)."""
    try:
        from liverec.recommend.influence import Ledger
    except ImportError:
        return 0.0, 0
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    ledger = Ledger()
    for event in events(stream):
        ledger.gain(event)
    return tracemalloc.get_traced_memory()[0] - base, len(ledger)


def contexts(stream: Stream, n: int, seed: int) -> list[RecContext]:
    rng = np.random.default_rng(seed)
    out = []
    for s in rng.integers(0, len(stream.sessions), size=n):
        seq = stream.sessions[int(s)]
        cut = int(rng.integers(1, len(seq) + 1))
        items = [f"item{i}" for i in seq[:cut]]
        out.append(RecContext(f"q{s}", items, k=10, current_item=items[-1]))
    return out


def time_recommend(rec: OnlineRecommender, ctxs: list[RecContext]) -> Timings:
    timings = Timings()
    for ctx in ctxs:
        timings.call(rec.recommend_sync, ctx)
    return timings


def catalog(cover: float) -> Callable[[str], bool]:
    """Availability of a catalog holding `cover` of the traffic's items (by id hash)."""
    cut = int(cover * 1000)

    def available(item_id: str) -> bool:
        return int(item_id[4:]) * 7919 % 1000 < cut

    return available


def run(
    n_items: int,
    n_events: int,
    seed: int,
    with_memory: bool,
    cover: float = 0.01,
    n_filtered: int = 2000,
) -> None:
    stream = make_stream(n_items, n_events, seed)
    rec = OnlineRecommender()
    t0 = time.perf_counter()
    observe_us = build(rec, stream, timed_every=7)
    build_s = time.perf_counter() - t0
    stats = rec.stats()
    ctxs = contexts(stream, 5000, seed + 1)
    time_recommend(rec, ctxs[:200])  # warm caches, first popularity sort
    rec_us = time_recommend(rec, ctxs)
    sources = [rec.degree(c.items[-1]) for c in ctxs]
    cold = [RecContext(f"c{i}", [], k=10) for i in range(2000)]
    cold_us = time_recommend(rec, cold)
    top = {item for item, _ in itertools.islice(rec.popular_iter(2000), 2000)}
    big_exclude = [RecContext(f"x{i}", [], k=10, exclude=top) for i in range(n_filtered // 40)]
    excl_us = time_recommend(rec, big_exclude)
    available = catalog(cover)
    filtered = [
        RecContext(c.session_id, c.items, c.k, c.current_item, available=available)
        for c in ctxs[: n_filtered // 2]
    ]
    filtered += [RecContext(f"f{i}", [], k=10, available=available) for i in range(n_filtered // 2)]
    time_recommend(rec, filtered[:20])  # first sorts
    filt_us = time_recommend(rec, filtered)
    got = [len(rec.recommend_sync(c)) for c in filtered[:200]]
    mem = memory(stream) if with_memory else None
    print(f"\n== {n_items} items, {n_events} events, {len(stream.sessions)} sessions ==")
    print(f"build: {build_s:.1f} s ({n_events / build_s:,.0f} events/s incl. Event creation)")
    print(f"state: {stats.items} items, {stats.edges} neighbour entries, {stats.sessions} sessions")
    deg = sorted(sources)
    print(f"degree of context's last item: median {deg[len(deg) // 2]}, max {deg[-1]}")
    for name, values in (
        ("observe", observe_us),
        ("recommend (session)", rec_us),
        ("recommend (empty)", cold_us),
        ("recommend (top 2000 excl)", excl_us),
        ("recommend (catalog filters)", filt_us),
    ):
        print(values.row(name))
    print(
        f"catalog filters: {cover:.1%} of the traffic's items available; "
        f"list length median {sorted(got)[len(got) // 2]} of 10"
    )
    if mem is not None:
        print(
            f"memory: {mem['total_mb']:.1f} MiB total; {mem['per_item']:.0f} B/item, "
            f"{mem['per_edge']:.0f} B/neighbour entry, {mem['per_session']:.0f} B/session "
            f"window, {mem['per_contributor']:.0f} B/contributor in the influence ledger"
        )


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def quality(path: str, k: int = 20) -> None:
    """Prequential next-item Recall@k / MRR@k of the online lists over a session file."""
    from liverec.model.formats import load_sessions

    data = load_sessions(path)
    clock = Clock()
    offsets, items, times = data.offsets, data.items.tolist(), data.times
    timed = data.timed
    clock.t = float(times.min()) if timed else 0.0
    rec = OnlineRecommender(clock=clock)
    start = data.n_events // 2
    hits, rr, cases, n = 0, 0.0, 0, 0
    for s in range(data.n_sessions):
        lo, hi = int(offsets[s]), int(offsets[s + 1])
        sid = str(data.session_ids[s])
        for pos in range(lo, hi):
            n += 1
            clock.t = float(times[pos]) if timed else float(n)
            item = items[pos]
            rec.observe(Event(f"e{n}", sid, "view", item, clock.t))
            if pos + 1 < hi and pos >= start:
                ctx = RecContext(sid, items[lo : pos + 1], k, current_item=item)
                got = [r.item_id for r in rec.recommend_sync(ctx)]
                target = items[pos + 1]
                cases += 1
                if target in got:
                    hits += 1
                    rr += 1.0 / (got.index(target) + 1)
        rec.forget(sid)
    print(
        f"quality {path}: {data.n_sessions} sessions, {data.n_events} events, {cases} cases: "
        f"Recall@{k} {hits / max(1, cases):.4f} MRR@{k} {rr / max(1, cases):.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--events-per-item", type=int, default=20)
    parser.add_argument("--events", type=int, default=None, help="total (default: per item)")
    parser.add_argument("--catalog-cover", type=float, default=0.01)
    parser.add_argument("--filtered", type=int, default=2000, help="catalog-filtered lists")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-memory", action="store_true", help="no tracemalloc pass")
    parser.add_argument("--quality", nargs="*", default=[], help="session files to replay")
    args = parser.parse_args()
    for path in args.quality:
        quality(path)
    if args.quality:
        return
    for n in args.items:
        events = args.events if args.events is not None else n * args.events_per_item
        run(n, events, args.seed, not args.skip_memory, args.catalog_cover, args.filtered)


if __name__ == "__main__":
    main()
