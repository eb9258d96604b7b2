"""Benchmark of scaling out: events per second and latency with 1, 2 and 4 server
processes (`liverec serve --workers N`) on this machine, against one Redis and against
a 3-master Redis Cluster, and the Redis commands each event costs.

Owns: one run that starts a private redis-server and a private 3-master Redis Cluster
(the servers of tests/conftest.py, on free loopback ports, never the machine's own),
then for each store and each process count a fresh key prefix and a `liverec serve
--workers N`, drives it with `--clients` WebSocket shoppers (one coroutine each, in
this process: they share the machine's cores with the servers) that send one view at
a time and wait for its recommendations, for `--seconds`, and prints one table:
acknowledged events per second, event-to-recs latency (p50, p99, milliseconds, as the
client sees it) and the commands the Redis servers processed per event
(`total_commands_processed` delta, summed over the masters; it includes the
followers' blocking reads). Then, on the same Redis, what a session, a signed-in
user and an event cost in Redis and an open socket in a server process
(scale_memory.py; `--sessions 0` skips it). Nothing here is asserted.

    nice -n 10 .venv/bin/python bench/scale.py                       # 20 s per row
    nice -n 10 .venv/bin/python bench/scale.py --seconds 5 --clients 20   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import RedisClusterServers, RedisServer, free_cluster_ports, free_port
from tests.servers import LiverecServer

import scale_memory
from bench_cluster import commands  # Redis commands processed, summed over servers


async def shopper(url: str, n: int, until: float, latencies: list[float]) -> int:
    acked = 0
    async with websockets.connect(url, max_size=1 << 20) as ws:
        await ws.send(json.dumps({"type": "hello", "k": 8}))
        while json.loads(await ws.recv())["type"] != "recs":
            pass
        i = 0
        while time.monotonic() < until:
            i += 1
            event_id = uuid.uuid4().hex
            item = f"sku-{(n * 7 + i * 13) % 500}"
            t0 = time.perf_counter()
            await ws.send(
                json.dumps({"type": "event", "id": event_id, "action": "view", "item_id": item})
            )
            while True:
                frame = json.loads(await ws.recv())
                if frame["type"] == "ack":
                    acked += 1
                elif frame["type"] == "recs" and frame.get("for_event") == event_id:
                    latencies.append(time.perf_counter() - t0)
                    break
                elif frame["type"] == "error":  # no recs follow: say so, never wait forever
                    raise RuntimeError(f"shopper {n}: {frame}")
    return acked


async def run(
    url: str, ports: list[int], workers: int, args: argparse.Namespace
) -> dict[str, float]:
    server = LiverecServer(
        url,
        workers=workers,
        warm_events=0,
        events_per_s=1e9,  # shoppers here send as fast as they are answered
        events_burst=1_000_000_000,
        max_connections_per_address=100_000,
        address_events_per_s=1e9,
        address_events_burst=1_000_000_000,
    ).start(timeout=90)
    try:
        await asyncio.sleep(1.0)  # every worker up (the supervisor answers as soon as one is)
        before = await commands(ports)
        latencies: list[float] = []
        until = time.monotonic() + args.seconds
        t0 = time.monotonic()
        acked = sum(
            await asyncio.gather(
                *(shopper(server.ws_url, n, until, latencies) for n in range(args.clients))
            )
        )
        elapsed = time.monotonic() - t0
        used = await commands(ports) - before
    finally:
        server.stop()
    latencies.sort()
    q = lambda p: 1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))]  # noqa: E731
    return {
        "events_s": acked / elapsed,
        "p50_ms": q(0.5),
        "p99_ms": q(0.99),
        "cmds_per_event": used / max(1, acked),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--workers", default="1,2,4")
    scale_memory.add_arguments(parser)
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    rows = []
    memory: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="liverec-bench-") as tmp:
        single = RedisServer(free_port(), Path(tmp) / "single")
        cluster = RedisClusterServers(free_cluster_ports(3), Path(tmp) / "cluster", True)
        for server in (single, cluster):
            server.workdir.mkdir()
            server.start()
        try:
            for name, base, ports in (
                ("redis", single.url, [single.port]),
                ("cluster", cluster.url, cluster.ports),
            ):
                for workers in counts:
                    sep = "&" if "?" in base else "?"
                    url = f"{base}{sep}prefix=b{time.monotonic_ns()}:"
                    row = await run(url, ports, workers, args)
                    rows.append((name, workers, row))
                    print(name, workers, {k: round(v, 2) for k, v in row.items()}, flush=True)
            if args.sessions:
                url = f"{single.url}?prefix=m{time.monotonic_ns()}:"
                memory = await scale_memory.measure(url, single.port, args)
        finally:
            single.stop()
            cluster.stop()
    print("\n| store | processes | events/s | p50 ms | p99 ms | Redis commands/event |")
    print("|---|---|---|---|---|---|")
    for name, workers, r in rows:
        print(
            f"| {name} | {workers} | {r['events_s']:.0f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['cmds_per_event']:.1f} |"
        )
    if args.sessions:
        scale_memory.report(memory)


if __name__ == "__main__":
    asyncio.run(main())
