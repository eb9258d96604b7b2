"""Benchmark of the profile store: record_event throughput and latency per backend.

Owns: a synthetic event stream (2,000 sessions, 500 users, a quarter anonymous, the
protocol's action mix), N concurrent tasks recording it, and one table with events
per second and per-call latency (p50, p99, max, milliseconds) for the embedded store
(memory://, and a SQLite file with synchronous NORMAL and FULL) and Redis (a private
redis-server started here on a free port with appendonly yes / appendfsync everysec,
never the machine's own; one script call per event, and pipelined record_events
batches). Nothing here is asserted; read the numbers.

A second table (`--busy-ms`) is the latency of one record_event at a time while
another coroutine keeps the event loop busy, burning `B` ms of CPU between awaits,
as a server's loop is under load: the store's work has to find its way between those
slices. Its first row, `await sleep(0)`, is the floor: what any awaited call costs
under that load.

    nice -n 10 .venv/bin/python bench/bench_store.py                 # 20k events, 200 tasks
    nice -n 10 .venv/bin/python bench/bench_store.py --events 5000 --tasks 50 --backends redis
    nice -n 10 .venv/bin/python bench/bench_store.py --backends none --busy-ms 0,1,5
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from liverec.store import Store, StoreLimits, open_store
from liverec.types import Event

ACTIONS = ("view",) * 6 + ("click",) * 2 + ("add_to_cart", "remove_from_cart", "purchase", "rate")


def make_events(n: int, seed: int = 0) -> list[Event]:
    rng = random.Random(seed)
    users = [f"u{i}" for i in range(500)]
    owner = {f"s{i}": (None if i % 4 == 0 else rng.choice(users)) for i in range(2000)}
    sessions = list(owner)
    events = []
    for i in range(n):
        sid = rng.choice(sessions)
        action = rng.choice(ACTIONS)
        rating = float(rng.randint(1, 5)) if action == "rate" else None
        item = f"item{int(rng.paretovariate(1.2)) % 50_000}"
        events.append(Event(f"e{i}", sid, action, item, 1.7e9 + i / 1000, owner[sid], rating))
    return events


async def run(
    store: Store, events: list[Event], tasks: int, batch: int
) -> tuple[float, list[float]]:
    """Wall seconds and per-call latencies (seconds) for `tasks` workers sharing `events`."""
    chunks = [events[i : i + batch] for i in range(0, len(events), batch)]
    queue = iter(chunks)
    latencies: list[float] = []

    async def worker() -> None:
        for chunk in queue:
            start = time.perf_counter()
            if batch == 1:
                await store.record_event(chunk[0])
            else:
                await store.record_events(chunk)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return time.perf_counter() - start, latencies


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A private redis-server on a free port, stopped on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--dir",
        str(workdir),
        "--loglevel",
        "warning",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


async def measure(name: str, url: str, events: list[Event], tasks: int, batch: int) -> None:
    store = open_store(url, StoreLimits())
    await store.open()
    try:
        wall, lat = await run(store, events, tasks, batch)
        assert await store.count_events() == len(events), "not every event was recorded"
    finally:
        await store.close()
    ms = sorted(x * 1000 for x in lat)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    print(
        f"| {name:<26} | {tasks:>6} | {batch:>6} | {len(events):>6} | {len(events) / wall:>6,.0f} "
        f"| {statistics.median(ms):>6.2f} | {p99:>6.2f} | {ms[-1]:>6.2f} |",
        flush=True,
    )


async def busy_loop(busy_s: float, stop: asyncio.Event) -> None:
    """Burn `busy_s` of CPU, yield to the loop, again, until `stop` is set."""
    while not stop.is_set():
        end = time.perf_counter() + busy_s
        while time.perf_counter() < end:
            pass
        await asyncio.sleep(0)


async def measure_busy(name: str, url: str | None, events: list[Event], busy_ms: float) -> None:
    """Latency of record_event, one call at a time, while the loop is kept busy.
    `url=None` measures `await asyncio.sleep(0)` instead: the floor under that load."""
    store = None if url is None else open_store(url, StoreLimits())
    if store is not None:
        await store.open()
    stop = asyncio.Event()
    burner = asyncio.create_task(busy_loop(busy_ms / 1000, stop))
    lat: list[float] = []
    try:
        await asyncio.sleep(0.05)
        for event in events:
            start = time.perf_counter()
            if store is None:
                await asyncio.sleep(0)
            else:
                await store.record_event(event)
            lat.append(time.perf_counter() - start)
    finally:
        stop.set()
        await burner
        if store is not None:
            await store.close()
    ms = sorted(x * 1000 for x in lat)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    print(
        f"| {name:<26} | {busy_ms:>6g} | {len(ms):>6} | {statistics.median(ms):>6.2f} "
        f"| {p99:>6.2f} | {ms[-1]:>6.2f} |",
        flush=True,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--tasks", type=int, default=200, help="concurrent recording tasks")
    parser.add_argument("--batch", type=int, default=50, help="events per record_events call")
    parser.add_argument("--backends", default="embedded,redis", help="or 'none'")
    parser.add_argument(
        "--busy-ms", default="0,1,5", help="CPU burnt between awaits by a busy coroutine; '' = off"
    )
    parser.add_argument("--busy-events", type=int, default=400, help="record_event calls per row")
    args = parser.parse_args()
    backends = args.backends.split(",")
    events = make_events(args.events)
    alone = events[: max(1, args.events // 10)]  # one task: the latency floor, fewer events
    with tempfile.TemporaryDirectory(prefix="liverec-bench-") as tmp:
        if {"embedded", "redis"} & set(backends):
            print(f"per-call latency in ms; {args.tasks} tasks share the events of a run\n")
            head = ("tasks", "batch", "events", "ev/s", "p50", "p99", "max")
            print("| backend" + " " * 19 + " | " + " | ".join(f"{h:>6}" for h in head) + " |")
            print("|---|---|---|---|---|---|---|---|")
        if "embedded" in backends:
            for tasks, evs in ((1, alone), (args.tasks, events)):
                await measure("memory://", "memory://", evs, tasks, 1)
            for sync in ("NORMAL", "FULL"):
                for tasks, evs in ((1, alone), (args.tasks, events)):
                    url = f"embedded://{tmp}/{sync}-{tasks}.db?synchronous={sync}"
                    await measure(f"embedded sync={sync}", url, evs, tasks, 1)
            url = f"embedded://{tmp}/batch.db"
            await measure("embedded record_events", url, events, args.tasks, args.batch)
        if "redis" in backends:
            with redis_server(Path(tmp)) as base:
                await measure("redis record_event", f"{base}?prefix=a:", alone, 1, 1)
                await measure("redis record_event", f"{base}?prefix=b:", events, args.tasks, 1)
                await measure(
                    "redis record_events", f"{base}?prefix=c:", events, args.tasks, args.batch
                )
        if args.busy_ms:
            print("\nlatency of one record_event at a time, in ms, while the loop is kept busy\n")
            head = ("busy", "events", "p50", "p99", "max")
            print("| store" + " " * 21 + " | " + " | ".join(f"{h:>6}" for h in head) + " |")
            print("|---|---|---|---|---|---|")
            few = events[: args.busy_events]
            for busy in (float(b) for b in args.busy_ms.split(",")):
                await measure_busy("await sleep(0)", None, few, busy)
                await measure_busy("memory://", "memory://", few, busy)
                for sync in ("NORMAL", "FULL"):
                    url = f"embedded://{tmp}/busy-{sync}-{busy:g}.db?synchronous={sync}"
                    await measure_busy(f"embedded sync={sync}", url, few, busy)


if __name__ == "__main__":
    asyncio.run(main())
