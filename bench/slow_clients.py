"""Do shoppers stay fast, and is nothing acked lost, while slow clients attack?

Starts the server in its own process (memory:// store, open-file limit --nofile),
connects N shoppers from 127.0.0.1 and measures their event-to-recs latency twice:
unloaded, then while an attacker holds slow sockets from --addresses loopback
addresses (127.0.0.2, ...): request heads trickled one header line a second, bodies
that never finish, sockets that send nothing, each reopened as soon as the server
closes it. During both phases it also probes /healthz and opens a fresh shopper
socket every 0.5 s. At the end it checks that every acked event is in its session.

`--server stock` runs the same app on uvicorn's plain h11 protocol with its default
accept backlog (what `liverec serve` ran before server/edge.py), for comparison.

Each repeat starts a fresh server and runs both phases (unloaded first), so every
ratio compares figures of the same minute; the report gives each repeat and the
median ratio. The server samples its own event loop's lag (a 5 ms timer, how late it
fires, and how much CPU its thread used meanwhile); the report gives, per phase, the
times it was over 10 ms late and the times it was busy over 10 ms (its own work
holding the loop, apart from waiting for a CPU on a busy host), and the longest. `--pin` puts the
server and the shoppers' client on CPU 0 and the attacker alone on CPU 1 (both
phases alike), so that the attacker's own CPU does not slow the server or the
measurement: on a production host the attacker runs elsewhere.

    python bench/slow_clients.py --slow 1100 --addresses 4 --seconds 15 --repeats 3 --pin
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
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
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

RUNNER = """
import asyncio, logging, os, resource, sys, time
nofile = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
import uvicorn
from liverec.cli import uvicorn_config
from liverec.config import Settings
from liverec.server import edge
from liverec.server.app import create_app
settings = Settings.from_env(port=int(sys.argv[1]))
logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
server = uvicorn.Server(uvicorn_config(create_app(settings), settings, sys.argv[2] == "stock"))
lag = open(sys.argv[4], "w", buffering=1)

async def sample_lag():  # how late a 5 ms timer fires, and the loop's CPU meanwhile
    while True:
        t0, c0 = time.monotonic(), time.thread_time()
        await asyncio.sleep(0.005)
        late = (time.monotonic() - t0 - 0.005) * 1000
        if late > 2:
            busy = (time.thread_time() - c0) * 1000
            lag.write(f"{time.time():.3f} {late:.1f} {busy:.1f}\\n")

async def main():
    asyncio.ensure_future(sample_lag())
    await (edge.serve(server, settings) if sys.argv[2] == "edge" else server.serve())
asyncio.run(main())
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Shopper:
    def __init__(self, index: int) -> None:
        self.index = index
        self.session_id = ""
        self.acked: list[str] = []
        self.ids = itertools.count()

    async def run(self, url: str, until: float, think_s: float, lat: list[float]) -> None:
        async with connect(url, open_timeout=30) as ws:
            await ws.send(json.dumps({"type": "hello"}))
            welcome = json.loads(await ws.recv())
            self.session_id = welcome["session_id"]
            await ws.recv()  # first recs
            while time.monotonic() < until:
                n = next(self.ids)
                item = f"s{self.index}-i{n}"
                event = {"type": "event", "id": f"{item}-e", "action": "view", "item_id": item}
                t0 = time.perf_counter()
                await ws.send(json.dumps(event))
                got_recs = False
                while not got_recs:
                    frame = json.loads(await ws.recv())
                    if frame["type"] == "ack":
                        self.acked.append(item)
                    got_recs = frame["type"] == "recs"
                lat.append((time.perf_counter() - t0) * 1000)
                await asyncio.sleep(think_s)


async def slow_socket(
    port: int, source: str, kind: int, until: float, stats: dict[str, int]
) -> None:
    """One attacker socket, reopened whenever the server closes or refuses it."""
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), 10
            )
        except (OSError, TimeoutError):
            stats["connect_failed"] += 1
            await asyncio.sleep(1)
            continue
        stats["opened"] += 1
        try:
            if kind == 0:  # trickled head
                writer.write(b"GET /healthz HTTP/1.1\r\n")
            elif kind == 1:  # body that never finishes
                writer.write(
                    b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{"
                )
            while time.monotonic() < until:  # kind 2 sends nothing at all
                if kind == 0:
                    writer.write(b"X-Slow: 1\r\n")
                await writer.drain()
                try:
                    data = await asyncio.wait_for(reader.read(4096), 1.0)
                except TimeoutError:
                    continue
                if data.startswith(b"HTTP/1.1 503"):
                    stats["refused_503"] += 1
                    await asyncio.sleep(1)  # a slowloris keeps its socket count, no more
                elif data.startswith(b"HTTP/1.1 408"):
                    stats["cut_408"] += 1
                else:
                    stats["closed"] += 1
                break
        except OSError:
            stats["closed"] += 1
        finally:
            writer.close()
        await asyncio.sleep(0.2)


def attack_process(
    port: int,
    sockets: int,
    addresses: int,
    seconds: float,
    out: mp.Queue[dict[str, int]],
    cpus: set[int] | None,
) -> None:
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    stats = dict.fromkeys(("opened", "refused_503", "cut_408", "closed", "connect_failed"), 0)
    until = time.monotonic() + seconds

    async def run() -> None:
        await asyncio.gather(
            *(
                slow_socket(port, f"127.0.0.{2 + i % addresses}", i % 3, until, stats)
                for i in range(sockets)
            )
        )

    asyncio.run(run())
    stats["cpu_ms"] = int(time.process_time() * 1000)
    out.put(stats)


async def probes(port: int, until: float, out: dict[str, int]) -> None:
    """/healthz and a fresh shopper handshake every 0.5 s."""
    loop = asyncio.get_running_loop()

    def health() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    while time.monotonic() < until:
        ok = await loop.run_in_executor(None, health)
        out["health_ok" if ok else "health_failed"] += 1
        try:
            async with connect(f"ws://127.0.0.1:{port}/v1/ws", open_timeout=5) as ws:
                await ws.send(json.dumps({"type": "hello"}))
                await asyncio.wait_for(ws.recv(), 5)
                out["fresh_ok"] += 1
        except Exception:
            out["fresh_failed"] += 1
        await asyncio.sleep(0.5)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def phase(
    port: int, shoppers: list[Shopper], args: argparse.Namespace, attack: bool
) -> dict[str, Any]:
    until = time.monotonic() + args.seconds
    cpu0, wall0 = cpu_s(args.server_pid), time.monotonic()
    started = time.time()
    lat: list[float] = []
    probe: dict[str, int] = dict.fromkeys(
        ("health_ok", "health_failed", "fresh_ok", "fresh_failed"), 0
    )
    stats: dict[str, int] = {}
    tasks = [asyncio.ensure_future(probes(port, until, probe))]
    attacker = None
    if attack:  # in its own process: its CPU is not the shoppers' client loop
        reports: mp.Queue[dict[str, int]] = mp.get_context("spawn").Queue()
        attacker = mp.get_context("spawn").Process(
            target=attack_process,
            args=(port, args.slow, args.addresses, args.seconds, reports, args.attacker_cpus),
        )
        attacker.start()
        await asyncio.sleep(min(5.0, args.seconds / 3))  # let the attack build up
        started = time.time()  # stalls are counted while the shoppers are measured
    url = f"ws://127.0.0.1:{port}/v1/ws"
    results = await asyncio.gather(
        *(s.run(url, until, args.think_ms / 1000, lat) for s in shoppers), return_exceptions=True
    )
    failed = [r for r in results if isinstance(r, BaseException)]
    await asyncio.gather(*tasks, return_exceptions=True)
    if attacker is not None:
        stats = await asyncio.to_thread(reports.get, True, 60)
        attacker.join(10)
    server_cpu = (cpu_s(args.server_pid) - cpu0) / (time.monotonic() - wall0)
    samples = [(ms, cpu) for t, ms, cpu in read_lag(args.lag_path) if started <= t <= time.time()]
    return {
        "server_cpu_share": round(server_cpu, 2),  # of one core, over the phase
        "client_cpu_s": round(time.process_time(), 1),  # this process, so far
        "events": len(lat),
        "p50_ms": round(percentile(lat, 0.5), 2),
        "p99_ms": round(percentile(lat, 0.99), 2),
        "max_ms": round(max(lat, default=float("nan")), 2),
        "shoppers_failed": len(failed),
        # the server's loop: late over 10 ms, and of those, busy (its own work) 10 ms+
        "loop_late_over_10ms": sum(ms > 10 for ms, _ in samples),
        "loop_late_max_ms": max((ms for ms, _ in samples), default=0.0),
        "loop_busy_over_10ms": sum(cpu > 10 for _, cpu in samples),
        "loop_busy_max_ms": max((cpu for _, cpu in samples), default=0.0),
        **probe,
        **({"attack": stats} if attack else {}),
    }


def read_lag(path: Path) -> list[tuple[float, float, float]]:
    """The server's loop lag samples over 2 ms: (wall time, lag, loop CPU meanwhile),
    times in ms. A lag with as much CPU is the server's own work holding the loop;
    a lag without is the process waiting for a CPU (the host)."""
    with path.open() as f:
        return [(float(t), float(ms), float(cpu)) for t, ms, cpu in map(str.split, f)]


def lost_acks(port: int, shoppers: list[Shopper]) -> int:
    lost = 0
    for s in shoppers:
        if not s.session_id:
            continue
        url = f"http://127.0.0.1:{port}/v1/sessions/{s.session_id}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                items = set(json.loads(r.read())["items"])
        except OSError:
            return -1  # the server no longer answers: unknown

        lost += sum(1 for item in s.acked if item not in items)
    return lost


async def measure(port: int, args: argparse.Namespace) -> dict[str, Any]:
    unloaded_shoppers = [Shopper(i) for i in range(args.shoppers)]
    unloaded = await phase(port, unloaded_shoppers, args, attack=False)
    attacked_shoppers = [Shopper(1000 + i) for i in range(args.shoppers)]
    attacked = await phase(port, attacked_shoppers, args, attack=True)
    await asyncio.sleep(1)
    everyone = unloaded_shoppers + attacked_shoppers
    return {
        "unloaded": unloaded,
        "attacked": attacked,
        "p99_ratio": round(attacked["p99_ms"] / unloaded["p99_ms"], 2),
        "acked": sum(len(s.acked) for s in everyone),
        "acked_lost": await asyncio.to_thread(lost_acks, port, everyone),
    }


def run_once(args: argparse.Namespace) -> dict[str, Any]:
    """One fresh server, both phases."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEREC_")}
    env.update(LIVEREC_STORE_URL="memory://", LIVEREC_LOG_LEVEL="warning")
    env["LIVEREC_SESSION_MAX_ITEMS"] = "1000"
    log = Path(tempfile.mkstemp(prefix="slow-clients-", suffix=".log")[1])
    args.lag_path = Path(tempfile.mkstemp(prefix="slow-clients-", suffix=".lag")[1])
    runner = [str(port), args.server, str(args.nofile), str(args.lag_path)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", RUNNER, *runner], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    if args.pin:
        os.sched_setaffinity(proc.pid, {0})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"server did not start:\n{log.read_text()}") from None
                time.sleep(0.1)
        args.server_pid = proc.pid
        report = asyncio.run(measure(port, args))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    with log.open("rb") as lines:
        log_lines = sum(1 for _ in lines)
    return {**report, "log_bytes": log.stat().st_size, "log_lines": log_lines}


def main(args: argparse.Namespace) -> dict[str, Any]:
    args.attacker_cpus = {1} if args.pin else None
    if args.pin:
        os.sched_setaffinity(0, {0})  # this client (shoppers, probes) with the server
    runs = [run_once(args) for _ in range(args.repeats)]
    return {
        "server": args.server,
        "nofile": args.nofile,
        "pinned": "server and shoppers on CPU 0, attacker on CPU 1" if args.pin else "no",
        "p99_ratios": [r["p99_ratio"] for r in runs],
        "median_p99_ratio": statistics.median(r["p99_ratio"] for r in runs),
        "acked_lost": [r["acked_lost"] for r in runs],  # -1: the server did not answer
        "runs": runs,
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", choices=("edge", "stock"), default="edge")
    p.add_argument("--shoppers", type=int, default=20)
    p.add_argument("--seconds", type=float, default=15.0, help="per phase")
    p.add_argument("--think-ms", type=float, default=100.0)
    p.add_argument("--slow", type=int, default=600, help="attacker sockets")
    p.add_argument("--addresses", type=int, default=4, help="attacker source addresses")
    p.add_argument("--nofile", type=int, default=1024, help="server's open-file limit")
    p.add_argument("--repeats", type=int, default=3, help="fresh server, both phases, each")
    p.add_argument("--pin", action="store_true", help="server+shoppers CPU 0, attacker CPU 1")
    print(json.dumps(main(p.parse_args()), indent=2))
