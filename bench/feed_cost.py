"""What the live feed across processes costs per event: a process's CPU and the Redis
commands per event with no operator page open anywhere, and with one page open on
another process (server/feed_relay.py then sends this process's entries and figures
over pub/sub).

Owns: one run on a private redis-server (never the machine's own) with two `liverec
serve` processes A and B on one fresh key prefix. Shoppers (`--clients` coroutines
in this process, one view at a time, each waiting for its recommendations) send
`--events` events to B per phase, in the order: a warm-up, then no page and a page
on A twice, then no page again (the baseline three times, around the page phases,
in the same run). Per phase: B's CPU
time (user + system, /proc/PID/stat) per event, A's, the Redis commands per event
(`total_commands_processed`) and the entries the page on A received. Nothing here is
asserted.

    nice -n 10 .venv/bin/python bench/feed_cost.py                     # 3000 events a phase
    nice -n 10 .venv/bin/python bench/feed_cost.py --events 1000 --clients 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import RedisServer, free_port
from tests.servers import LiverecServer

from bench_cluster import commands

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


async def shopper(url: str, n: int, count: int) -> None:
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "hello", "k": 8}))
        while json.loads(await ws.recv())["type"] != "recs":
            pass
        for i in range(count):
            event_id = uuid.uuid4().hex
            item = f"sku-{(n * 7 + i * 13) % 500}"
            await ws.send(
                json.dumps({"type": "event", "id": event_id, "action": "view", "item_id": item})
            )
            while True:
                frame = json.loads(await ws.recv())
                if frame["type"] == "recs" and frame.get("for_event") == event_id:
                    break
                if frame["type"] == "error":  # no recs follow: say so, never wait forever
                    raise RuntimeError(f"shopper {n}: {frame}")


class Page:
    """An operator page on a server: reads every frame, counts the entries."""

    def __init__(self) -> None:
        self.entries = 0
        self.both = asyncio.Event()  # a tick counted both processes
        self.task: asyncio.Task[None] | None = None
        self.ws: Any = None

    async def open(self, server: LiverecServer) -> None:
        self.ws = await websockets.connect(server.ws_url.replace("/v1/ws", "/v1/feed"))
        await self.ws.send(json.dumps({"type": "hello"}))
        self.task = asyncio.ensure_future(self._read())
        await asyncio.wait_for(self.both.wait(), 30)  # the other one heard the page, answered

    async def _read(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            if frame["type"] == "batch":
                self.entries += len(frame["entries"])
            elif frame["type"] == "tick" and frame["processes"] == 2:
                self.both.set()

    async def close(self) -> None:
        await self.ws.close()
        if self.task is not None:
            with contextlib.suppress(Exception):
                await self.task


async def phase(
    name: str, a: LiverecServer, b: LiverecServer, port: int, args: argparse.Namespace
) -> dict[str, Any]:
    assert a.proc is not None and b.proc is not None
    per = args.events // args.clients
    cpu_a, cpu_b, cmds = cpu_s(a.proc.pid), cpu_s(b.proc.pid), await commands([port])
    t0 = time.monotonic()
    await asyncio.gather(*(shopper(b.ws_url, n, per) for n in range(args.clients)))
    wall = time.monotonic() - t0
    events = per * args.clients
    return {
        "phase": name,
        "events_s": events / wall,
        "b_cpu_us": 1e6 * (cpu_s(b.proc.pid) - cpu_b) / events,
        "a_cpu_us": 1e6 * (cpu_s(a.proc.pid) - cpu_a) / events,
        "cmds": (await commands([port]) - cmds) / events,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    limits = {
        "warm_events": 0,
        "events_per_s": 1e9,  # shoppers here send as fast as they are answered
        "events_burst": 1_000_000_000,
        "max_connections_per_address": 100_000,
        "address_events_per_s": 1e9,
        "address_events_burst": 1_000_000_000,
    }
    rows = []
    with tempfile.TemporaryDirectory(prefix="liverec-bench-") as tmp:
        redis = RedisServer(free_port(), Path(tmp) / "single")
        redis.workdir.mkdir()
        redis.start()
        try:
            url = f"{redis.url}?prefix=f{time.monotonic_ns()}:"
            a = LiverecServer(url, **limits).start(timeout=90)
            b = LiverecServer(url, **limits).start(timeout=90)
            try:
                rows.append(await phase("warm-up (not compared)", a, b, redis.port, args))
                for n in (1, 2):
                    rows.append(await phase(f"no page ({n})", a, b, redis.port, args))
                    page = Page()
                    await page.open(a)
                    received = page.entries
                    rows.append(await phase(f"page on A ({n})", a, b, redis.port, args))
                    await asyncio.sleep(1.0)  # the last batches
                    shown = page.entries - received
                    await page.close()
                    await asyncio.sleep(4.0)  # B stops sending feed_watch_s (3 s) later
                rows.append(await phase("no page (3)", a, b, redis.port, args))
            finally:
                a.stop()
                b.stop()
        finally:
            redis.stop()
    print("\n| phase | events/s | B CPU µs/event | A CPU µs/event | Redis commands/event |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['phase']} | {r['events_s']:.0f} | {r['b_cpu_us']:.0f} | {r['a_cpu_us']:.0f} "
            f"| {r['cmds']:.2f} |"
        )
    print(f"\nentries the page on A received in the last page phase: {shown}")


if __name__ == "__main__":
    asyncio.run(main())
