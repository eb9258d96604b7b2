"""The benchmark matrix: event -> recs under many traffic shapes and store states,
each cell beside the echo floor measured in the same run.

Owns: the list of cells (one axis varied at a time from a default cell, plus the
combinations issue 14 names), building each cell's store state from nothing in a
fresh temporary directory (and, for Redis, a private redis-server started here on a
free port, never the machine's own), running `liverec serve` on it and the echo floor
(bench/echo_server.py) under the same load, and reporting. The load generator, the
latency, CPU and RSS measurement are bench/load.py's (`drive`); the traffic shapes
are bench/traffic.py's.

The default cell: structured traffic (load.py's) over 5,000 items, a fresh embedded
store, no catalog, the online model, 1,000 sockets at 1,000 events/s. Store states
are written before the server starts, directly through the store API in this
process (not through the socket): the event log with `Store.record_events` in
batches, the catalog with `liverec.catalog.import_items` (the bulk import path of
`liverec catalog import`). A "restarted" cell is a server started on such a log: it
replays the newest `warm_events` of it, as after a restart.

Per cell: p50/p99/max event -> recs, server CPU ms per event, RSS per socket, lost
events; the echo floor's p99, CPU per event and RSS per socket from the same run
(measured once per distinct load and traffic, before the first cell that needs it,
or beside every cell with --echo-each); and the ratios issue 14's "Done when" names.
A table on stdout, one JSON line per cell with --out. A cell whose server does not
start is reported as failed, with the last line it wrote, and the run goes on.
With --profile, py-spy samples each liverec server over its window. Nothing is
asserted.

    python bench/matrix.py --list
    python bench/matrix.py --out results.jsonl                   # every cell
    python bench/matrix.py --quick --out quick.jsonl             # a short smoke subset
    python bench/matrix.py --cells default,redis,catalog-none --duration 20
    python bench/matrix.py --gru models/diginetica --cells gru   # a trained GRU4Rec
    python bench/matrix.py --cells catalog-none --profile profiles
    python bench/matrix.py --cells 5k-sockets --client node     # the lean Node client
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import redis

from load import (
    Procs,
    drive,
    environment,
    free_port,
    loadavg,
    raise_fd_limit,
    server_cmd,
    wait_healthy,
)
from load import table as load_table
from traffic import Catalog

ITEMS = 5000  # the traffic's item ids: item-0 .. item-4999 (load.py's default catalog)
GRU_ITEMS = 2000  # the GRU cell's traffic: the first items of the model's vocabulary
LOG_SESSION = 20  # events per session in a bulk-written log
FLOOR_P99_MS = 10.0  # at 5,000 sockets the load generators must keep the floor under this
BURST = (10.0, 2.0, 10.0)  # 10x the base rate for 2 s of every 10 s (the mean is kept)
LOADS = {  # name: (sockets, events/s, load generator processes, idle only)
    "1k": (1000, 1000.0, 1, False),
    "5k": (5000, 2000.0, 4, False),  # 4 Python clients (--clients), or 1 Node
    "idle10k": (10000, 1.0, 2, True),
}


@dataclass(frozen=True)
class Cell:
    """One cell of the matrix: the traffic, the store state and the load."""

    name: str
    traffic: str = "structured"  # a shape of bench/traffic.py
    burst: bool = False
    log_events: int = 0  # events written to the log before the server starts
    catalog: str = "none"  # none | all | half | disjoint (of the traffic's items)
    catalog_size: int = ITEMS
    out_of_stock: float = 0.0  # share of catalog items out of stock
    store: str = "embedded"  # embedded | redis
    model: str = "online"  # online | gru
    load: str = "1k"  # a key of LOADS


BIG_LOG = 1_000_000
CELLS = [
    Cell("default"),
    Cell("uniform", traffic="uniform"),
    Cell("unseen", traffic="unseen"),
    Cell("hot", traffic="hot"),
    Cell("bursty", burst=True),
    Cell("restarted-1M", log_events=BIG_LOG),
    Cell("catalog-all", catalog="all"),
    Cell("catalog-half", catalog="half"),
    Cell("catalog-none", catalog="disjoint"),
    Cell("out-of-stock-90", catalog="all", out_of_stock=0.9),
    Cell("catalog-100k", catalog="all", catalog_size=100_000),
    Cell("catalog-1M", catalog="all", catalog_size=1_000_000),
    Cell("redis", store="redis"),
    Cell("gru", model="gru"),
    Cell("5k-sockets", load="5k"),
    Cell("idle-10k", load="idle10k"),
    # the combination issue 14 found saturating a core
    Cell("catalog-none+restarted-1M", catalog="disjoint", log_events=BIG_LOG),
    Cell("redis+restarted-1M", store="redis", log_events=BIG_LOG),
]
QUICK = ["default", "unseen", "bursty", "catalog-none", "redis", "catalog-none+restarted-1M"]


# --- store state --------------------------------------------------------------------


class RedisServer:
    """A private redis-server on a free port, its files in `workdir`."""

    def __init__(self, procs: Procs, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed: the redis cells need it")
        self.port = free_port()
        self.proc = procs.start(
            [
                binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(workdir),
                "--daemonize", "no", "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        for _ in range(200):  # up to ~10 s
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    client.close()
                    return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def catalog_ids(cell: Cell, traffic_ids: list[str]) -> list[str]:
    """The catalog's item ids: all, half or none of the traffic's, then filler ids."""
    covered = {"all": len(traffic_ids), "half": len(traffic_ids) // 2}.get(cell.catalog, 0)
    ids = traffic_ids[:covered]
    return ids + [f"sku-{j}" for j in range(cell.catalog_size - len(ids))]


async def build_state(cell: Cell, store_url: str, traffic_ids: list[str], seed: int) -> str:
    """Write the cell's catalog and event log into the (empty) store; returns a note."""
    from liverec.catalog import CatalogItem, import_items
    from liverec.store import open_store
    from liverec.store.base import StoreLimits
    from liverec.types import Event

    store = open_store(store_url, StoreLimits())
    await store.open()
    notes = []
    try:
        if cell.catalog != "none":
            t0 = time.perf_counter()
            rnd = random.Random(seed)
            items = [
                CatalogItem(
                    item_id=item_id,
                    title=f"Item {item_id}",
                    price=round(rnd.uniform(5, 200), 2),
                    category=f"cat-{rnd.randrange(50)}",
                    in_stock=rnd.random() >= cell.out_of_stock,
                )
                for item_id in catalog_ids(cell, traffic_ids)
            ]
            await import_items(store, items)
            notes.append(f"catalog {len(items)} items in {time.perf_counter() - t0:.0f} s")
        if cell.log_events:
            t0 = time.perf_counter()
            catalog = Catalog(len(traffic_ids), 1.0, seed)
            catalog.ids = traffic_ids
            rnd, now, current, batch = random.Random(seed), time.time(), None, []
            span = 3600.0  # the log covers the last hour
            for k in range(cell.log_events):
                if k % LOG_SESSION == 0:
                    current = None
                current = catalog.step(current, rnd)
                ts = now - span * (cell.log_events - k) / cell.log_events
                sid = f"log-{k // LOG_SESSION}"
                batch.append(Event(f"e{k}", sid, "view", catalog.ids[current], ts))
                if len(batch) == 1000:
                    await store.record_events(batch)
                    batch = []
            if batch:
                await store.record_events(batch)
            notes.append(f"log {cell.log_events} events in {time.perf_counter() - t0:.0f} s")
    finally:
        await store.close()
    return ", ".join(notes) or "fresh"


# --- running a cell -----------------------------------------------------------------


def client_cfgs(
    cell: Cell, port: int, args: argparse.Namespace, ids: list[str]
) -> list[dict[str, Any]]:
    sockets, rate, clients, idle_only = LOADS[cell.load]
    if cell.load == "5k":
        clients = args.clients or (1 if args.client == "node" else clients)
    base = {
        "url": f"ws://127.0.0.1:{port}/v1/ws",
        "rate": rate / clients,
        "warmup": args.warmup,
        "duration": args.duration,
        "drain": args.drain,
        "items": len(ids),
        "item_ids": ids,
        "zipf": 1.0,
        "warm_events": 200,
        "traffic": cell.traffic,
        "burst": list(BURST) if cell.burst else None,
        "idle_only": idle_only,
        "client": args.client,
    }
    share = [sockets // clients + (j < sockets % clients) for j in range(clients)]
    return [{**base, "sockets": n, "seed": args.seed * 100 + j} for j, n in enumerate(share)]


def run_server(
    procs: Procs, target: str, cell: Cell, args: argparse.Namespace, store_url: str, ids: list[str]
) -> dict[str, Any]:
    port = free_port()
    extra = list(args.liverec_arg)
    if target == "liverec" and cell.model == "gru":
        extra.append(f"--model-path={args.gru}")
    errors = tempfile.TemporaryFile()  # the server's stderr: its reason when it fails
    server = procs.start(server_cmd(target, port, store_url, extra), args.src, stderr=errors)
    profiler: list[subprocess.Popen[bytes]] = []
    profile = Path(args.profile) / f"{cell.name}.txt" if args.profile else None

    def start_profiler() -> None:  # py-spy on the server for the measured window
        if profile is not None and target == "liverec":
            cmd = [str(pyspy()), "record", "--nonblocking", "-r", "100",
                   "-d", str(int(args.duration)), "-f", "raw", "-o", str(profile),
                   "-p", str(server.pid)]  # fmt: skip
            profiler.append(procs.start(cmd, stdout=subprocess.DEVNULL))

    try:
        t0 = time.perf_counter()
        try:
            wait_healthy(server, port, timeout=args.start_timeout)
        except RuntimeError as exc:
            errors.seek(0)
            said = errors.read().decode(errors="replace").strip().splitlines()
            raise RuntimeError(f"{exc}: {said[-1] if said else 'nothing on stderr'}") from None
        start_s = time.perf_counter() - t0
        cfgs = client_cfgs(cell, port, args, ids)
        res = drive(procs, server.pid, port, cfgs, target == "liverec", args.settle, start_profiler)
        for proc in profiler:  # it stops by itself after the window
            proc.wait(60)
    finally:
        procs.stop_all()
        errors.close()
    res["start_s"] = start_s
    if profiler and profile is not None and profile.is_file():
        res["profile"] = {"file": profile.name, "top": top_frames(profile)}
    return res


def pyspy() -> str | None:
    """py-spy beside this Python (a virtual environment's bin/) or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() else shutil.which("py-spy")


def top_frames(path: Path, n: int = 8) -> list[tuple[str, float]]:
    """Where a cell's server time goes, from py-spy's raw (collapsed stacks) output:
    each sample is charged to the innermost liverec function on its stack (with what
    it calls in libraries), or to its innermost frame when no liverec code is on it."""
    total, charged = 0, dict[str, int]()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        ours = [f for f in frames if "(liverec/" in f]
        name, _, where = (ours or frames)[-1].partition(" (")
        frame = f"{name} ({where.rpartition(':')[0]})"  # one entry per function, not line
        charged[frame] = charged.get(frame, 0) + int(count)
        total += int(count)
    ranked = sorted(charged.items(), key=lambda kv: -kv[1])[:n]
    return [(frame, count / total) for frame, count in ranked]


def traffic_ids(cell: Cell, args: argparse.Namespace) -> list[str]:
    if cell.model == "gru":
        items = json.loads((Path(args.gru) / "meta.json").read_text())["items"]
        return [str(i) for i in items[:GRU_ITEMS]]
    return [f"item-{i}" for i in range(ITEMS)]


def run_cell(
    procs: Procs, cell: Cell, args: argparse.Namespace, echoes: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    ids = traffic_ids(cell, args)
    key = f"{cell.load}/{cell.traffic}/{cell.burst}/{cell.model}"
    if args.echo_each or key not in echoes:
        print(f"  echo floor for {key} ...", flush=True)
        echoes[key] = run_server(procs, "echo", cell, args, "memory://", ids)
    echo = echoes[key]
    tmp = Path(tempfile.mkdtemp(prefix="liverec-matrix-"))
    own = Procs()  # the cell's redis-server: outlives run_server's stop_all
    try:
        redis = RedisServer(own, tmp) if cell.store == "redis" else None
        url = redis.url if redis else f"embedded://{tmp}/bench.db"
        t0 = time.perf_counter()
        note = asyncio.run(build_state(cell, url, ids, args.seed))
        print(f"  state: {note} ({time.perf_counter() - t0:.0f} s); liverec ...", flush=True)
        res = run_server(procs, "liverec", cell, args, url, ids)
    finally:
        own.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return row(cell, res, echo, note)


def row(cell: Cell, res: dict[str, Any], echo: dict[str, Any], note: str) -> dict[str, Any]:
    """One JSON line: the cell, liverec's figures, the floor's, ratios and verdicts."""

    def ratio(a: float, b: float) -> float:
        if math.isinf(a):  # lost events: infinitely late
            return math.inf
        return a / b if b and math.isfinite(a) and math.isfinite(b) else math.nan

    out: dict[str, Any] = {"cell": cell.name, **asdict(cell), "state": note}
    out["liverec"] = res
    out["echo"] = echo
    idle = LOADS[cell.load][3]
    out["kib_per_socket"] = res["kib_per_idle_socket"]
    out["echo_kib_per_socket"] = echo["kib_per_idle_socket"]
    if idle:
        out["done"] = res["kib_per_idle_socket"] <= echo["kib_per_idle_socket"]
        return out
    for k in ("p50_ms", "p99_ms", "max_ms", "server_cpu_ms_per_event", "lost", "events_per_s"):
        out[k] = res[k]
    # the share of the window the server's event loop waited for a CPU (a busy machine)
    out["runq_wait"] = res["server_runq_wait_share"]
    out["echo_p99_ms"] = echo["p99_ms"]
    out["echo_cpu_ms_per_event"] = echo["server_cpu_ms_per_event"]
    out["p99_vs_echo"] = ratio(res["p99_ms"], echo["p99_ms"])
    out["cpu_vs_echo"] = ratio(res["server_cpu_ms_per_event"], echo["server_cpu_ms_per_event"])
    limit = 25.0 if cell.load == "5k" else 10.0
    done = res["p99_ms"] <= limit and out["p99_vs_echo"] <= 3 and res["lost"] == 0
    if cell.load == "1k":
        done = done and out["cpu_vs_echo"] <= 2
    out["done"] = done
    if cell.load == "5k":  # the figure means something only when the floor keeps up
        out["floor_ok"] = echo["p99_ms"] <= FLOOR_P99_MS
    return out


COLUMNS = [  # (key, header, format)
    ("p50_ms", "p50 ms", "{:.2f}"),
    ("p99_ms", "p99 ms", "{:.2f}"),
    ("max_ms", "max ms", "{:.1f}"),
    ("echo_p99_ms", "echo p99", "{:.2f}"),
    ("p99_vs_echo", "p99/echo", "{:.1f}x"),
    ("server_cpu_ms_per_event", "CPU ms/ev", "{:.3f}"),
    ("echo_cpu_ms_per_event", "echo CPU", "{:.3f}"),
    ("cpu_vs_echo", "CPU/echo", "{:.1f}x"),
    ("kib_per_socket", "KiB/sock", "{:.1f}"),
    ("echo_kib_per_socket", "echo KiB", "{:.1f}"),
    ("lost", "lost", "{:.0f}"),
    ("runq_wait", "runq wait", "{:.0%}"),
    ("done", "done", "{}"),
]


def table(rows: list[dict[str, Any]]) -> str:
    return load_table([(r["cell"], r) for r in rows], COLUMNS, "cell")


def main() -> None:
    parser = argparse.ArgumentParser(description="event -> recs benchmark matrix vs the floor")
    parser.add_argument("--cells", default="*", help="comma list of cell names or globs")
    parser.add_argument("--quick", action="store_true", help=f"cells {','.join(QUICK)}, "
                        "a 100k-event log, 3 s warm-up, 10 s measured")  # fmt: skip
    parser.add_argument("--list", action="store_true", help="print the chosen cells, exit")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per cell")
    parser.add_argument("--drain", type=float, default=5.0, help="max wait for late recs, s")
    parser.add_argument("--settle", type=float, default=1.0, help="wait before reading RSS, s")
    parser.add_argument("--log-events", type=int, default=BIG_LOG, help="events in the big log")
    parser.add_argument(
        "--client",
        choices=("python", "node"),
        default="python",
        help="load generator: load.py's Python client or bench/loadclient.js (Node; "
        "`npm ci --prefix bench` once)",
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=None,
        help="load generator processes at 5k sockets (default: 4 Python, 1 Node)",
    )
    parser.add_argument("--gru", default=None, help="a trained GRU4Rec checkpoint directory")
    parser.add_argument("--echo-each", action="store_true", help="echo floor beside every cell")
    parser.add_argument("--start-timeout", type=float, default=300.0, help="server start, s")
    parser.add_argument(
        "--profile",
        default=None,
        help="py-spy each liverec server over its window: DIR/<cell>.txt (raw stacks), "
        "the top functions in the JSON line",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=None, help="append one JSON line per cell here")
    parser.add_argument("--src", default=None, help="run liverec from this source dir")
    parser.add_argument("--liverec-arg", action="append", default=[], help="extra serve flag")
    args = parser.parse_args()
    if args.quick:
        args.cells = ",".join(QUICK)
        args.warmup, args.duration, args.log_events = 3.0, 10.0, 100_000
    size = (
        f"{args.log_events // 1000}k"
        if args.log_events % 1_000_000
        else f"{args.log_events // 1_000_000}M"
    )
    cells = [
        replace(c, name=c.name.replace("1M", size), log_events=args.log_events)
        if c.log_events
        else c
        for c in CELLS
        if any(fnmatch(c.name, pat.strip()) for pat in args.cells.split(","))
    ]
    if not cells:
        parser.error(f"no cell matches --cells {args.cells!r} (see --list)")
    if args.list:
        for c in cells:
            print(f"{c.name:28} {json.dumps(asdict(c))}")
        return
    if args.profile:
        if pyspy() is None:
            parser.error("--profile needs py-spy (pip install -e '.[bench]')")
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    if raise_fd_limit() < 10_100:
        parser.error("the open-file limit is too low for 10,000 sockets")
    env = {**environment(), "loadavg_start": loadavg()}
    print(f"env: {json.dumps(env)}", flush=True)
    procs = Procs()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rows: list[dict[str, Any]] = []
    skipped = 0
    echoes: dict[str, dict[str, Any]] = {}
    try:
        for cell in cells:
            if cell.model == "gru" and not args.gru:
                print(f"skipped {cell.name}: no --gru PATH given (a trained GRU4Rec checkpoint, "
                      "e.g. `liverec train` on Diginetica)", flush=True)  # fmt: skip
                skipped += 1
                continue
            print(
                f"cell {cell.name} ({time.strftime('%H:%M:%S')}, loadavg {loadavg()})", flush=True
            )
            try:
                out = run_cell(procs, cell, args, echoes)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:  # e.g. no start
                out = {"cell": cell.name, **asdict(cell), "error": str(exc), "done": False}
                print(f"    failed: {exc}", flush=True)
            out["env"] = {**env, "loadavg_end": loadavg()}
            rows.append(out)
            print(table([out]).splitlines()[1], flush=True)
            if out.get("floor_ok") is False:
                print(f"    the floor's p99 is over {FLOOR_P99_MS:g} ms: the load generators did "
                      "not keep up (more --clients, or a quieter machine)", flush=True)  # fmt: skip
            for frame, share in out.get("liverec", {}).get("profile", {}).get("top", [])[:5]:
                print(f"    profile: {share:4.0%} in {frame}", flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(out) + "\n")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        procs.stop_all()
    print(f"\n{args.duration:g} s measured per cell; loadavg end {loadavg()}")
    print(table(rows))
    sys.exit(0 if rows or skipped == len(cells) else 1)


if __name__ == "__main__":
    main()
