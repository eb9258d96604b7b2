"""Do well-behaved shoppers stay fast while one address floods the server?

Starts `liverec serve` in its own process, drives N shoppers (from 127.0.0.2) at a
modest rate from a second process, and measures their event-to-recs latency twice:
unloaded, then while a third process floods from 127.0.0.9 at FLOOD_X times the
per-address event limit (reconnecting whenever the server cuts a flooder off).
Prints p50/p99/max for both phases and the ratio. Loopback only; bounded in time.

    python bench/flood.py --shoppers 50 --rate 200 --seconds 15 --flood-x 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEREC_")}
    env.update(
        LIVEREC_STORE_URL=args.store,
        LIVEREC_LOG_LEVEL="warning",
        LIVEREC_EVENTS_PER_S=str(args.conn_limit),
        LIVEREC_EVENTS_BURST=str(int(args.conn_limit)),
        LIVEREC_ADDRESS_EVENTS_PER_S=str(args.address_limit),
        LIVEREC_ADDRESS_EVENTS_BURST=str(int(args.address_limit)),
    )
    for pair in args.set:
        key, _, value = pair.partition("=")
        env["LIVEREC_" + key.upper()] = value
    proc = subprocess.Popen(
        [sys.executable, "-m", "liverec.cli", "serve", "--port", str(port)], env=env
    )
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("server did not start")


async def shoppers(url: str, n: int, rate: float, seconds: float, out: Any) -> None:
    """n sockets sharing `rate` events/s (open loop); latencies (s) put on `out`."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    per_socket = rate / n

    async def one(i: int) -> None:
        async with connect(url, local_addr=("127.0.0.2", 0), max_size=2**20) as ws:
            await ws.send(json.dumps({"type": "hello", "k": 10}))
            await ws.recv()
            await ws.recv()
            seq = 0
            next_at = time.monotonic() + (i / n) / per_socket
            while time.monotonic() < deadline:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at += 1.0 / per_socket
                event_id = f"e{i}-{seq}"
                seq += 1
                sent = time.perf_counter()
                await ws.send(
                    json.dumps(
                        {
                            "type": "event",
                            "id": event_id,
                            "action": "view",
                            "item_id": f"i{(i * 7 + seq) % 500}",
                        }
                    )
                )
                while True:
                    frame = json.loads(await ws.recv())
                    if frame["type"] == "recs" and frame["for_event"] == event_id:
                        latencies.append(time.perf_counter() - sent)
                        break
                    if frame["type"] == "error" and frame.get("ref") == event_id:
                        break

    await asyncio.gather(*(one(i) for i in range(n)))
    out.put(latencies)


async def flooder(url: str, rate: float, seconds: float, out: Any) -> None:
    """Sends `rate` events/s from 127.0.0.9 over up to 8 sockets, reconnecting whenever
    the server cuts one off (it reads only to notice that)."""
    sent = connections = 0
    deadline = time.monotonic() + seconds
    sockets: list[Any] = []

    async def drain(ws: Any) -> None:
        try:
            async for _ in ws:
                pass
        except ConnectionClosed:
            pass

    while time.monotonic() < deadline:
        sockets = [ws for ws in sockets if ws.state.name == "OPEN"]
        while len(sockets) < 8:
            try:
                ws = await connect(url, local_addr=("127.0.0.9", 0))
                await ws.send(json.dumps({"type": "hello"}))
            except (OSError, InvalidStatus, ConnectionClosed):
                await asyncio.sleep(0.05)
                break
            asyncio.get_running_loop().create_task(drain(ws))
            sockets.append(ws)
            connections += 1
        t0 = time.monotonic()
        per_tick = max(1, int(rate / 100))
        for n in range(per_tick):
            if not sockets:
                break
            ws = sockets[n % len(sockets)]
            try:
                await ws.send(
                    json.dumps(
                        {"type": "event", "id": f"x{sent}", "action": "view", "item_id": "spam"}
                    )
                )
                sent += 1
            except ConnectionClosed:
                sockets.remove(ws)
        await asyncio.sleep(max(0.0, 0.01 - (time.monotonic() - t0)))
    for ws in sockets:
        ws.transport.abort()
    out.put({"sent": sent, "connections": connections, "seconds": seconds})


def _run(coro_fn: Any, *args: Any) -> None:
    asyncio.run(coro_fn(*args))


def summary(lat: list[float]) -> dict[str, float]:
    if not lat:
        return {"n": 0}
    q = statistics.quantiles(lat, n=100)
    return {"n": len(lat), "p50_ms": q[49] * 1e3, "p99_ms": q[98] * 1e3, "max_ms": max(lat) * 1e3}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--shoppers", type=int, default=50)
    p.add_argument("--rate", type=float, default=200.0, help="shoppers' events/s in total")
    p.add_argument("--seconds", type=float, default=15.0, help="each phase")
    p.add_argument("--flood-x", type=float, default=10.0, help="flood rate / address limit")
    p.add_argument("--address-limit", type=float, default=200.0, help="events/s per address")
    p.add_argument("--conn-limit", type=float, default=100.0, help="events/s per connection")
    p.add_argument("--store", default="memory://")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument(
        "--set", action="append", default=[], help="server setting KEY=VALUE (flood_penalty_s=0)"
    )
    args = p.parse_args()
    if args.rate / 1 > args.address_limit:
        sys.exit("the shoppers' own rate must stay under --address-limit")
    port = free_port()
    server = start_server(port, args)
    url = f"ws://127.0.0.1:{port}/v1/ws"
    ctx = mp.get_context("spawn")
    rows = []
    try:
        for _ in range(args.repeat):
            q: Any = ctx.Queue()
            a = ctx.Process(
                target=_run, args=(shoppers, url, args.shoppers, args.rate, args.seconds, q)
            )
            a.start()
            base = q.get()
            a.join()
            q2: Any = ctx.Queue()
            fq: Any = ctx.Queue()
            flood_rate = args.flood_x * args.address_limit
            f = ctx.Process(target=_run, args=(flooder, url, flood_rate, args.seconds + 1, fq))
            f.start()
            time.sleep(1.0)
            b = ctx.Process(
                target=_run, args=(shoppers, url, args.shoppers, args.rate, args.seconds, q2)
            )
            b.start()
            loaded = q2.get()
            b.join()
            flood = fq.get()
            f.join()
            rows.append((summary(base), summary(loaded), flood))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(15)
    print(f"cpus={os.cpu_count()} loadavg={open('/proc/loadavg').read().split()[:3]}")
    print(
        f"shoppers={args.shoppers} rate={args.rate}/s address_limit={args.address_limit}/s "
        f"flood={args.flood_x}x ({args.flood_x * args.address_limit:.0f}/s target)"
    )
    print(
        f"{'run':>3} {'unloaded p50':>12} {'p99':>8} {'flooded p50':>12} {'p99':>8} "
        f"{'p99 ratio':>9} {'flood sent/s':>12} {'flood conns':>11}"
    )
    for i, (base, loaded, flood) in enumerate(rows):
        ratio = loaded["p99_ms"] / base["p99_ms"]
        print(
            f"{i:>3} {base['p50_ms']:>12.2f} {base['p99_ms']:>8.2f} {loaded['p50_ms']:>12.2f} "
            f"{loaded['p99_ms']:>8.2f} {ratio:>9.2f} {flood['sent'] / flood['seconds']:>12.0f} "
            f"{flood['connections']:>11}"
        )
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump([{"unloaded": r[0], "flooded": r[1], "flood": r[2]} for r in rows], fh)
        print(f"raw figures: {fh.name}")


if __name__ == "__main__":
    main()
