"""Benchmark of the Redis Cluster store against one Redis: record_event throughput,
latency and Redis commands per event.

Owns: one run that starts a private redis-server and a private 3-master Redis Cluster
(each with appendonly yes / appendfsync everysec, on free loopback ports, never the
machine's own; the servers of tests/conftest.py), records the event stream of
bench_store.py into each (one task, N tasks, pipelined record_events batches) and
prints one table: events per second, per-call latency (p50, p99, max, milliseconds)
and the commands the Redis servers processed per event (`total_commands_processed`,
summed over the masters, which counts the commands a Lua script runs as well as the
script call).  Nothing here is asserted.

    nice -n 10 .venv/bin/python bench/bench_cluster.py                # 20k events, 200 tasks
    nice -n 10 .venv/bin/python bench/bench_cluster.py --events 5000 --tasks 50
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import sys
import tempfile
from pathlib import Path

from redis.asyncio import Redis

from bench_store import make_events, measure

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import RedisClusterServers, RedisServer, free_cluster_ports, free_port


async def commands(ports: list[int]) -> int:
    """Commands processed so far by the servers on `ports`."""
    total = 0
    for port in ports:
        client = Redis(host="127.0.0.1", port=port)
        try:
            total += int((await client.info("stats"))["total_commands_processed"])
        finally:
            await client.aclose()
    return total


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--tasks", type=int, default=200, help="concurrent recording tasks")
    parser.add_argument("--batch", type=int, default=50, help="events per record_events call")
    args = parser.parse_args()
    events = make_events(args.events)
    alone = events[: max(1, args.events // 10)]
    with tempfile.TemporaryDirectory(prefix="liverec-bench-") as tmp:
        single = RedisServer(free_port(), Path(tmp) / "single")
        cluster = RedisClusterServers(free_cluster_ports(3), Path(tmp) / "cluster", True)
        for server in (single, cluster):
            server.workdir.mkdir()
            server.start()
        try:
            print(f"per-call latency in ms; {args.tasks} tasks share the events of a run\n")
            head = ("tasks", "batch", "events", "ev/s", "p50", "p99", "max", "cmd/ev")
            print("| store" + " " * 21 + " | " + " | ".join(f"{h:>6}" for h in head) + " |")
            print("|---|---|---|---|---|---|---|---|---|")
            runs = ((alone, 1, 1), (events, args.tasks, 1), (events, args.tasks, args.batch))
            for name, base, ports in (
                ("redis", single.url.removesuffix("/0"), [single.port]),
                ("redis+cluster", cluster.url, cluster.ports),
            ):
                for n, (evs, tasks, batch) in enumerate(runs):
                    sep = "/0?" if name == "redis" else "?"
                    url = f"{base}{sep}prefix=r{n}:"
                    call = "record_events" if batch > 1 else "record_event"
                    before = await commands(ports)
                    with contextlib.redirect_stdout(io.StringIO()) as out:
                        await measure(f"{name} {call}", url, evs, tasks, batch)
                    line = out.getvalue().rstrip()
                    per_event = (await commands(ports) - before) / len(evs)
                    print(f"{line} {per_event:>6.2f} |", flush=True)
        finally:
            single.stop()
            cluster.stop()


if __name__ == "__main__":
    asyncio.run(main())
