"""Load benchmark of the real-time loop: event -> recs over WebSocket, against the floor.

Owns: starting each server under test in its own process (`liverec serve` or the
echo floor in bench/echo_server.py) on 127.0.0.1, driving it from a separate load
generator process (one asyncio process, `websockets` client), and the figures:

* memory per idle socket: server RSS (VmRSS) after N sockets have said hello and got
  welcome + recs, minus RSS before they opened (after a short warm-up of the app), / N;
* event -> recs latency at the client (send -> recs frame with for_event == id), p50,
  p90, p99, max, and the achieved event rate, over a measured window after a warm-up,
  with an open-loop schedule: each socket sends a view about every N/rate seconds
  (uniform jitter +-50%) whether or not its last answer has come, so latency
  includes queueing. A recs frame also answers the earlier unanswered events of its
  socket (the server replaces stale recs by design: "superseded"); an event with no
  recs within `--drain` seconds counts as infinitely late ("lost");
* over the same window: server CPU per event (the process, and its event loop's
  thread alone), and the share of time the server's
  event-loop thread was runnable but waiting for a CPU (/proc schedstat: on a shared
  machine this says how much of the latency is the neighbours'); for liverec, the
  server's own event -> recs-queued and store-write quantiles from /metrics, and with
  a model the scoring worker's CPU per event and the mean micro-batch.

Events: views of a catalog of `--items` items; each socket browses like a shopper:
half of the steps go to one of the current item's 8 "related" items, the others to a
Zipf-distributed item, so the online recommender learns real co-occurrence.
Nothing is asserted; read the table. Every loop is bounded by a count or a deadline.
Each process gets its own session (so its own CPU share under Linux autogroup), and
every child is terminated on exit, Ctrl-C or error (and on the orchestrator's death).

    .venv/bin/python bench/load.py                       # liverec (memory://) and echo, once
    .venv/bin/python bench/load.py --repeat 3 --json /tmp/load.json
    .venv/bin/python bench/load.py --targets liverec --store embedded:// --sockets 200
    .venv/bin/python bench/load.py --src /tmp/other-checkout/src   # another liverec tree
    .venv/bin/python bench/load.py --liverec-arg=--cooc-max-neighbours=25
    .venv/bin/python bench/load.py --targets echo --sockets 5000 --rate 2000 --client node

`--client node` runs bench/loadclient.js (Node, `npm ci --prefix bench` once) on a
schedule written here from bench/traffic.py, in place of the Python client; the
figures and phases are the same. `--clients N` splits the sockets and the rate over N
load generator processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import os
import platform
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from traffic import Catalog, schedule, warm_items

BENCH_DIR = Path(__file__).resolve().parent
OPEN_CONCURRENCY = 32  # handshakes in flight while opening sockets
PHASE_TIMEOUT_S = 120.0  # longest the orchestrator waits for one client phase


# --- shared ------------------------------------------------------------------------


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


# --- load generator (runs in its own process: `load.py _client '<json>'`) ---------


class Recorder:
    """Send and receive times of every event; latencies of those in the window.

    A recs frame answers its own event and every earlier unanswered event of the same
    socket: the server replaces an unsent recs frame by a newer one (by design), and the
    newer list already reflects the earlier events. Those are counted as superseded.
    """

    def __init__(self, sockets: int) -> None:
        # per socket: (event number, send time, in window), oldest first
        self.pending: list[deque[tuple[int, float, bool]]] = [deque() for _ in range(sockets)]
        self.latencies: list[float] = []  # seconds, events sent in the window
        self.send_lag: list[float] = []  # send time - scheduled time, in the window
        self.sent_in_window = 0
        self.sent_total = 0
        self.superseded = 0
        self.acks = 0
        self.errors: dict[str, int] = {}
        self.closed = 0
        self.window = (math.inf, math.inf)  # (start, end) perf_counter times
        self.recs_in_window = 0  # recs frames received in the window, for any event
        self.window_open = 0  # events of the window still waiting for their recs
        self.all_sent = False
        self.drained = asyncio.Event()

    def sent(self, i: int, k: int, at: float, in_window: bool) -> None:
        self.pending[i].append((k, at, in_window))
        self.sent_total += 1
        if in_window:
            self.sent_in_window += 1
            self.window_open += 1

    def finish_sending(self) -> None:
        self.all_sent = True
        if self.window_open == 0:
            self.drained.set()

    def on_frame(self, i: int, raw: str | bytes, now: float) -> None:
        msg = json.loads(raw)
        kind = msg.get("type")
        if kind == "recs":
            for_event = msg.get("for_event")
            if not for_event:
                return
            self.recs_in_window += self.window[0] <= now < self.window[1]
            k = int(for_event.rpartition(".")[2])
            queue = self.pending[i]
            while queue and queue[0][0] <= k:
                kk, at, in_window = queue.popleft()
                if in_window:
                    self.latencies.append(now - at)
                    self.superseded += kk < k
                    self.window_open -= 1
            if self.window_open == 0 and self.all_sent:
                self.drained.set()
        elif kind == "ack":
            self.acks += 1
        elif kind == "error":
            code = str(msg.get("code"))
            self.errors[code] = self.errors.get(code, 0) + 1


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def write_json(path: str, obj: Any) -> None:
    Path(path).write_text(json.dumps(obj))


async def wait_go(timeout: float) -> float | None:
    """Wait for 'go' on stdin; 'go T' also gives a start time T (epoch seconds)."""
    line = await asyncio.wait_for(asyncio.to_thread(sys.stdin.readline), timeout)
    word, _, at = line.strip().partition(" ")
    if word != "go":
        raise SystemExit(f"load generator: expected 'go', got {line!r}")
    return float(at) if at else None


async def hello(ws: Any, timeout: float) -> None:
    """A new session (the server issues its id)."""
    await ws.send(json.dumps({"type": "hello"}))
    got: set[str] = set()
    while got != {"welcome", "recs"}:
        got.add(json.loads(await asyncio.wait_for(ws.recv(), timeout))["type"])


def traffic_catalog(cfg: dict[str, Any]) -> Catalog:
    catalog = Catalog(cfg["items"], cfg["zipf"], cfg["seed"], cfg.get("item_format", "item-{}"))
    if cfg.get("item_ids"):
        catalog.ids = list(cfg["item_ids"])
    return catalog


def write_schedule(cfg: dict[str, Any], path: Path) -> None:
    """The sends of a client cfg as a file for bench/loadclient.js: the warm-up items,
    then every event as [seconds from the start, socket, its number, item id], in
    time order (the same `traffic.schedule` the Python client follows)."""
    catalog = traffic_catalog(cfg)
    mean, end = cfg["sockets"] / cfg["rate"], cfg["warmup"] + cfg["duration"]
    events = []
    if not cfg.get("idle_only"):
        tag, burst = cfg.get("tag", ""), cfg.get("burst")
        shape = cfg.get("traffic", "structured")
        for i in range(cfg["sockets"]):
            sends = schedule(shape, catalog, cfg["seed"], i, tag, mean, end, burst)
            events.extend((offset, i, k, item) for k, (offset, item) in enumerate(sends))
    events.sort()
    warm = warm_items(catalog, cfg["seed"], cfg["warm_events"])
    path.write_text(json.dumps({"warm": warm, "events": events}))


def client_cmd(cfg: dict[str, Any], workdir: Path, j: int) -> list[str]:
    """The load generator process for one cfg: this file's Python client, or with
    cfg["client"] == "node" bench/loadclient.js on a schedule written here first."""
    if cfg.get("client", "python") == "python":
        return [sys.executable, str(Path(__file__).resolve()), "_client", json.dumps(cfg)]
    if cfg["client"] != "node":
        raise ValueError(f"unknown load client {cfg['client']!r} (python or node)")
    node = shutil.which("node")
    script = BENCH_DIR / "loadclient.js"
    if node is None or not (BENCH_DIR / "node_modules" / "ws").is_dir():
        raise RuntimeError("the node client needs node and `npm ci --prefix bench`")
    path = workdir / f"schedule-{j}.json"
    write_schedule(cfg, path)
    return [node, str(script), json.dumps({**cfg, "schedule_file": str(path)})]


async def client_main(cfg: dict[str, Any]) -> None:
    from websockets.asyncio.client import connect

    raise_fd_limit()
    url, n, rate = cfg["url"], cfg["sockets"], cfg["rate"]
    # matrix.py may pass: traffic (a shape of bench/traffic.py), burst, item_ids,
    # tag, idle_only, latency_file; load.py uses the defaults (structured traffic).
    shape = cfg.get("traffic", "structured")
    catalog = traffic_catalog(cfg)
    opts: dict[str, Any] = {
        "open_timeout": 30,
        "ping_interval": None,  # browsers do not ping; the server still does
        "compression": None,
        "max_size": 2**20,
    }

    # 1. warm up the app on one socket (imports, first allocations), closed loop
    async with connect(url, **opts) as ws:
        await hello(ws, 10)
        for k, item in enumerate(warm_items(catalog, cfg["seed"], cfg["warm_events"])):
            frame = {"type": "event", "id": f"w{k}", "action": "view"}
            await ws.send(json.dumps({**frame, "item_id": item}))
            for _ in range(2):
                await asyncio.wait_for(ws.recv(), 10)
    emit({"phase": "warm"})
    await wait_go(PHASE_TIMEOUT_S)

    # 2. N idle sockets: connect, hello, wait for welcome + recs
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def open_one(i: int) -> Any:
        async with gate:
            ws = await connect(url, **opts)
            await hello(ws, 30)
            return ws

    t0 = time.perf_counter()
    socks = await asyncio.gather(*(open_one(i) for i in range(n)))
    emit({"phase": "idle", "sockets": len(socks), "open_s": time.perf_counter() - t0})
    start_at = await wait_go(PHASE_TIMEOUT_S)
    if cfg.get("idle_only"):
        await asyncio.gather(*(ws.close() for ws in socks), return_exceptions=True)
        return

    # 3. open-loop load on the same sockets: warm-up, measured window, drain
    rec = Recorder(n)
    mean = n / rate
    lead = 0.5 if start_at is None else max(0.0, start_at - time.time())
    start = time.perf_counter() + lead
    w0, w1 = start + cfg["warmup"], start + cfg["warmup"] + cfg["duration"]
    rec.window = (w0, w1)

    async def reader(i: int, ws: Any) -> None:
        clock = time.perf_counter
        with contextlib.suppress(Exception):
            async for raw in ws:
                rec.on_frame(i, raw, clock())
        rec.closed += 1

    async def writer(i: int, ws: Any) -> None:
        sends = schedule(
            shape, catalog, cfg["seed"], i, cfg.get("tag", ""), mean, w1 - start, cfg.get("burst")
        )
        clock = time.perf_counter
        for k, (offset, item) in enumerate(sends):
            due = start + offset
            delay = due - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            eid = f"{i}.{k}"
            data = json.dumps({"type": "event", "id": eid, "action": "view", "item_id": item})
            in_window = w0 <= due < w1
            sent = clock()
            rec.sent(i, k, sent, in_window)
            if in_window:
                rec.send_lag.append(sent - due)
            try:
                await ws.send(data)
            except Exception:
                return

    readers = [asyncio.create_task(reader(i, ws)) for i, ws in enumerate(socks)]
    cpu0 = None

    async def marks() -> None:
        nonlocal cpu0
        await asyncio.sleep(max(0.0, w0 - time.perf_counter()))
        cpu0 = time.process_time()
        emit({"phase": "window_start"})

    mark = asyncio.create_task(marks())
    await asyncio.gather(*(writer(i, ws) for i, ws in enumerate(socks)))
    await mark
    client_cpu = time.process_time() - (cpu0 or 0.0)
    emit({"phase": "window_end"})
    rec.finish_sending()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(rec.drained.wait(), cfg["drain"])
    lost = rec.window_open  # no recs within the drain time: counted as infinitely late
    lat = sorted([x * 1000 for x in rec.latencies] + [math.inf] * lost)
    if cfg.get("latency_file"):  # for an orchestrator that merges several clients
        write_json(cfg["latency_file"], lat[: len(lat) - lost])
    lag = sorted(x * 1000 for x in rec.send_lag)
    emit(
        {
            "phase": "result",
            "events_sent_window": rec.sent_in_window,
            "events_sent_total": rec.sent_total,
            "events_per_s": rec.sent_in_window / cfg["duration"],
            "recs_per_s": rec.recs_in_window / cfg["duration"],  # server throughput
            "p50_ms": percentile(lat, 50),
            "p90_ms": percentile(lat, 90),
            "p99_ms": percentile(lat, 99),
            "max_ms": lat[-1] if lat else float("nan"),
            "lost": lost,
            "superseded": rec.superseded,
            "acks": rec.acks,
            "errors": rec.errors,
            "closed_early": rec.closed,
            "send_lag_p99_ms": percentile(lag, 99),
            "client_cpu_s": client_cpu,
        }
    )
    await wait_go(PHASE_TIMEOUT_S)
    for task in readers:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in socks), return_exceptions=True)


# --- orchestrator -------------------------------------------------------------------


def _die_with_parent() -> None:
    """Child processes get SIGTERM if the orchestrator dies (Linux prctl)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: [state, ppid, ...]."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_s(pid: int, fields: list[str] | None = None) -> float:
    fields = fields or stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def runq_wait_s(pid: int) -> float:
    """Seconds the process's main thread (the event loop) has waited for a CPU."""
    return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[1]) / 1e9


def loop_cpu_s(pid: int) -> float:
    """Seconds the process's main thread (the event loop) has run on a CPU."""
    return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[0]) / 1e9


def scrape(port: int) -> str:
    """liverec's /metrics text ("" when it cannot be read)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return str(r.read().decode())
    except OSError:
        return ""


def histograms(text: str) -> dict[str, list[tuple[float, int]]]:
    """Cumulative buckets [(le, count)] of liverec's latency histograms in /metrics."""
    wanted = ("liverec_event_to_recs_seconds_bucket", "liverec_store_write_seconds_bucket")
    out: dict[str, list[tuple[float, int]]] = {}
    for line in text.splitlines():
        name = line.partition("{")[0]
        if name in wanted:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out.setdefault(name, []).append((float(le), int(float(line.rsplit(" ", 1)[1]))))
    return out


def series(text: str, name: str) -> float:
    """The value of an unlabelled series in /metrics (nan when absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return math.nan


def children_cpu_s(pid: int) -> float:
    """CPU seconds of the process's children (liverec: the scoring worker, and
    multiprocessing's resource tracker, which sleeps). Found by their parent pid in
    /proc (the kernel's per-task `children` list is not always built in)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat_fields(int(entry.name))
            if int(fields[1]) == pid:  # ppid
                total += cpu_s(int(entry.name), fields)
    return total


def bucket_quantile(
    before: list[tuple[float, int]], after: list[tuple[float, int]], q: float
) -> float:
    """Upper bound (ms) of the bucket holding quantile q of the observations in between."""
    counts = [(le, n - dict(before).get(le, 0)) for le, n in after]
    total = counts[-1][1] if counts else 0
    for le, n in counts:
        if total and n >= q * total:
            return le * 1000
    return math.nan


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class Procs:
    """Every child process started here, terminated on exit whatever happens."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], src: str | None = None, **kw: Any) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEREC_")}
        if src is not None:  # run liverec from another source tree (e.g. `git archive`)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
        # Own session each (a real service has one); with Linux autogroup scheduling
        # that also gives server and load generator their own CPU share.
        proc = subprocess.Popen(
            cmd, env=env, preexec_fn=_die_with_parent, start_new_session=True, **kw
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()


def server_cmd(target: str, port: int, store_url: str, extra: list[str]) -> list[str]:
    if target == "echo":
        return [sys.executable, str(BENCH_DIR / "echo_server.py"), "--port", str(port)]
    return [
        sys.executable, "-m", "liverec.cli", "serve", "--port", str(port),
        "--store-url", store_url, "--log-level", "warning",
        "--events-per-s", "1e6", "--events-burst", "100000", "--max-connections", "20000",
        "--max-connections-per-address", "20000", "--address-events-per-s", "1e6",
        "--address-events-burst", "100000", *extra,
    ]  # fmt: skip


def wait_healthy(proc: subprocess.Popen[bytes], port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not become healthy")


def read_msg(proc: subprocess.Popen[bytes], phase: str, timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
            raise TimeoutError(f"load generator: no '{phase}' within {timeout:.0f} s")
        chunk = proc.stdout.read(1)
        if not chunk:
            raise RuntimeError(f"load generator exited (code {proc.wait(5)}) before '{phase}'")
        line += chunk
    msg: dict[str, Any] = json.loads(line)
    if msg.get("phase") != phase:
        raise RuntimeError(f"load generator: expected '{phase}', got {msg}")
    return msg


def go(proc: subprocess.Popen[bytes], start_at: float | None = None) -> None:
    """Release the load generator's next phase; `start_at` (epoch s) aligns several."""
    assert proc.stdin is not None
    proc.stdin.write(b"go\n" if start_at is None else f"go {start_at!r}\n".encode())
    proc.stdin.flush()


def settle_rss(pid: int, settle_s: float) -> int:
    time.sleep(settle_s)
    return rss_kib(pid)


def run_target(procs: Procs, target: str, args: argparse.Namespace, run: int) -> dict[str, Any]:
    port = free_port()
    store_url, tmp = args.store, None
    base, _, options = store_url.partition("?")
    if target == "liverec" and base.rstrip("/") == "embedded:":  # a fresh file per run
        tmp = tempfile.mkdtemp(prefix="liverec-load-")
        store_url = f"embedded://{tmp}/bench.db" + (f"?{options}" if options else "")
    server = procs.start(server_cmd(target, port, store_url, args.liverec_arg), args.src)
    print(f"run {run + 1} {target}: server pid {server.pid}, port {port}", flush=True)
    try:
        wait_healthy(server, port)
        cfg = {
            "url": f"ws://127.0.0.1:{port}/v1/ws",
            "sockets": args.sockets,
            "rate": args.rate,
            "warmup": args.warmup,
            "duration": args.duration,
            "drain": args.drain,
            "items": args.items,
            "item_format": args.item_format,
            "zipf": args.zipf,
            "seed": args.seed + run,
            "warm_events": 200,
            "client": args.client,
        }
        res = drive(procs, server.pid, port, split(cfg, args.clients), target == "liverec",
                    args.settle)  # fmt: skip
    finally:
        procs.stop_all()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    res.update(target=target, run=run, store=store_url if target == "liverec" else None)
    return res


def split(cfg: dict[str, Any], clients: int) -> list[dict[str, Any]]:
    """One cfg per load generator process: the sockets and the rate shared evenly."""
    n = cfg["sockets"]
    share = [n // clients + (j < n % clients) for j in range(clients)]
    return [
        {**cfg, "sockets": m, "rate": cfg["rate"] * m / n, "seed": cfg["seed"] + 1000 * j}
        for j, m in enumerate(share)
    ]


def drive(
    procs: Procs,
    server_pid: int,
    port: int,
    cfgs: list[dict[str, Any]],
    metrics: bool,
    settle: float,
    on_window: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run one load generator process per cfg against a started server (on `port`,
    process `server_pid`), phase by phase in step, and return the figures of the
    window: the client's own with one cfg; with several, their counts summed and
    latency quantiles over all of them (each writes its latencies to a file).
    `metrics`: also read liverec's /metrics before and after the window; `on_window`
    is called when the measured window starts (e.g. to start a profiler)."""
    multi = len(cfgs) > 1
    tmp = Path(tempfile.mkdtemp(prefix="liverec-lat-"))
    if multi:
        cfgs = [
            {**c, "latency_file": str(tmp / f"{j}.json"), "tag": f"{j}-"}
            for j, c in enumerate(cfgs)
        ]
    cfg = cfgs[0]
    duration = cfg["duration"]
    try:
        clients = [
            procs.start(
                client_cmd(c, tmp, j), stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
            )
            for j, c in enumerate(cfgs)
        ]
        for client in clients:
            read_msg(client, "warm", PHASE_TIMEOUT_S)
        rss0 = settle_rss(server_pid, settle)
        for client in clients:
            go(client)
        idles = [read_msg(client, "idle", PHASE_TIMEOUT_S) for client in clients]
        rss1 = settle_rss(server_pid, settle)
        sockets = sum(i["sockets"] for i in idles)
        figures: dict[str, Any] = {
            "sockets": sockets,
            "rss_base_kib": rss0,
            "rss_idle_kib": rss1,
            "kib_per_idle_socket": (rss1 - rss0) / sockets,
            "open_s": max(i["open_s"] for i in idles),
        }
        if cfg.get("idle_only"):
            for client in clients:
                go(client)
            for client in clients:
                client.wait(60)
            return figures
        start_at = time.time() + 0.5 + 0.1 * len(clients)
        for client in clients:
            go(client, start_at if multi else None)
        window = cfg["warmup"] + duration + cfg["drain"] + 30
        for client in clients:
            read_msg(client, "window_start", window)
        cpu0, wait0, load0 = cpu_s(server_pid), runq_wait_s(server_pid), loadavg()
        loop0 = loop_cpu_s(server_pid)
        kids0 = children_cpu_s(server_pid)
        text0 = scrape(port) if metrics else ""
        if on_window is not None:
            on_window()
        for client in clients:
            read_msg(client, "window_end", window)
        cpu1, wait1 = cpu_s(server_pid), runq_wait_s(server_pid)
        loop1 = loop_cpu_s(server_pid)
        kids1 = children_cpu_s(server_pid)
        text1 = scrape(port) if metrics else ""
        parts = [read_msg(client, "result", window) for client in clients]
        rss2 = rss_kib(server_pid)
        for client in clients:
            go(client)
        for client in clients:
            client.wait(30)
        res = (
            parts[0] if not multi else merge_results(parts, [Path(c["latency_file"]) for c in cfgs])
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    hist0, hist1 = histograms(text0), histograms(text1)
    answered = max(1, round(res["recs_per_s"] * duration))  # events the server handled

    def grown(name: str) -> float:  # a /metrics counter's growth over the window
        return series(text1, name) - series(text0, name)

    for key, name in (
        ("server", "liverec_event_to_recs_seconds_bucket"),
        ("store", "liverec_store_write_seconds_bucket"),
    ):
        for q in (50, 99):
            value = math.nan
            if name in hist1:
                value = bucket_quantile(hist0.get(name, []), hist1[name], q / 100)
            res[f"{key}_p{q}_le_ms"] = value
    res.update(
        figures,
        rss_loaded_kib=rss2,
        kib_per_loaded_socket=(rss2 - rss0) / sockets,
        server_cpu_ms_per_event=(cpu1 - cpu0) * 1000 / answered,
        server_cpu_share=(cpu1 - cpu0) / duration,
        # the event loop's thread alone (a store's or a model's threads excluded)
        loop_cpu_ms_per_event=(loop1 - loop0) * 1000 / answered,
        server_runq_wait_share=(wait1 - wait0) / duration,
        # the scoring worker (a child of the server), when the model runs in one
        worker_cpu_ms_per_event=(kids1 - kids0) * 1000 / answered,
        worker_cpu_share=(kids1 - kids0) / duration,
        mean_batch=grown("liverec_model_batched_events_total")
        / max(1.0, grown("liverec_model_batches_total")),
        client_cpu_share=res["client_cpu_s"] / duration,
        loadavg_window=load0,
    )
    return res


def merge_results(parts: list[dict[str, Any]], latency_files: list[Path]) -> dict[str, Any]:
    """One result from several load generators' results and latency files."""
    lost = sum(p["lost"] for p in parts)
    lat = sorted(x for f in latency_files for x in json.loads(f.read_text()))
    lat += [math.inf] * lost
    out: dict[str, Any] = {
        k: sum(p[k] for p in parts)
        for k in (
            "events_sent_window", "events_sent_total", "events_per_s", "recs_per_s", "lost",
            "superseded", "acks", "closed_early", "client_cpu_s",
        )
    }  # fmt: skip
    errors: dict[str, int] = {}
    for p in parts:
        for code, n in p["errors"].items():
            errors[code] = errors.get(code, 0) + n
    out.update(
        p50_ms=percentile(lat, 50),
        p90_ms=percentile(lat, 90),
        p99_ms=percentile(lat, 99),
        max_ms=lat[-1] if lat else float("nan"),
        errors=errors,
        send_lag_p99_ms=max(p["send_lag_p99_ms"] for p in parts),
        clients=len(parts),
    )
    return out


COLUMNS = [  # (key, header, format)
    ("events_per_s", "events/s", "{:.0f}"),
    ("recs_per_s", "recs/s", "{:.0f}"),
    ("p50_ms", "p50 ms", "{:.2f}"),
    ("p90_ms", "p90 ms", "{:.2f}"),
    ("p99_ms", "p99 ms", "{:.2f}"),
    ("max_ms", "max ms", "{:.1f}"),
    ("kib_per_idle_socket", "KiB/idle sock", "{:.1f}"),
    ("server_cpu_ms_per_event", "srv CPU ms/ev", "{:.3f}"),
    ("server_cpu_share", "srv CPU", "{:.0%}"),
    ("loop_cpu_ms_per_event", "loop CPU ms/ev", "{:.3f}"),
    ("server_runq_wait_share", "loop runq wait", "{:.0%}"),
    ("lost", "lost", "{:.0f}"),
]


def table(
    rows: list[tuple[str, dict[str, Any]]],
    columns: list[tuple[str, str, str]] = COLUMNS,
    first: str = "",
) -> str:
    """Right-aligned columns, one row per (name, figures); a missing figure is "-"."""
    head = [first, *(h for _, h, _ in columns)]
    body = [
        [name, *(fmt.format(r[k]) if k in r else "-" for k, _, fmt in columns)] for name, r in rows
    ]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = [
        "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in [head, *body]
    ]
    return "\n".join(lines)


def summarise(results: list[dict[str, Any]], targets: list[str]) -> dict[str, Any]:
    keys = [k for k, _, _ in COLUMNS]
    out: dict[str, Any] = {}
    for t in targets:
        mine = [r for r in results if r["target"] == t]
        out[t] = {k: statistics.median(r[k] for r in mine) for k in keys}
    if "liverec" in targets and "echo" in targets:
        ratios = []
        for run in sorted({r["run"] for r in results}):
            a = next(r for r in results if r["run"] == run and r["target"] == "liverec")
            b = next(r for r in results if r["run"] == run and r["target"] == "echo")
            ratios.append({k: a[k] / b[k] if b[k] else float("nan") for k in keys})
        out["ratio"] = {k: statistics.median(r[k] for r in ratios) for k in keys}
    return out


def environment() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        **{p: version(p) for p in ("uvicorn", "websockets", "starlette")},
        "platform": platform.platform(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="event -> recs load benchmark vs the floor")
    parser.add_argument("--targets", default="liverec,echo", help="comma list: liverec, echo")
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=1000.0, help="aggregate events/s")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds")
    parser.add_argument("--drain", type=float, default=5.0, help="max wait for late recs, s")
    parser.add_argument("--settle", type=float, default=1.0, help="wait before reading RSS, s")
    parser.add_argument(
        "--store",
        default="memory://",
        help="liverec store: memory://, embedded:// (a fresh file per run; options may "
        "follow: embedded://?synchronous=FULL)",
    )
    parser.add_argument("--items", type=int, default=5000, help="catalog size")
    parser.add_argument(
        "--item-format",
        default="item-{}",
        help="item id pattern for index 0..items-1, e.g. '{}' to use a model's numeric ids "
        "(with --liverec-arg=--model-path=DIR the events then hit the model's vocabulary)",
    )
    parser.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent of popularity")
    parser.add_argument("--repeat", type=int, default=1, help="runs; medians are reported")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--client",
        choices=("python", "node"),
        default="python",
        help="load generator: this file's asyncio client, or bench/loadclient.js "
        "(Node and `npm ci --prefix bench`; leaner: one process keeps up with 5,000 sockets)",
    )
    parser.add_argument("--clients", type=int, default=1, help="load generator processes")
    parser.add_argument("--json", default=None, help="write every figure to this file")
    parser.add_argument(
        "--src", default=None, help="run the servers from this source dir (PYTHONPATH)"
    )
    parser.add_argument(
        "--liverec-arg",
        action="append",
        default=[],
        help="extra `liverec serve` argument (repeat), e.g. --liverec-arg=--cooc-max-neighbours=50",
    )
    args = parser.parse_args()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not targets or set(targets) - {"liverec", "echo"}:
        parser.error("--targets takes liverec and/or echo")
    if not 1 <= args.clients <= args.sockets:
        parser.error("--clients from 1 to --sockets")
    if args.sockets < 1 or args.rate <= 0 or args.duration <= 0 or args.warmup < 0:
        parser.error("--sockets >= 1, --rate > 0, --duration > 0, --warmup >= 0")
    fds = raise_fd_limit()
    if fds < args.sockets + 100:
        parser.error(f"open-file limit {fds} is too low for {args.sockets} sockets")

    env = environment()
    env["loadavg_start"] = loadavg()
    print(f"env: {json.dumps(env)}", flush=True)
    procs = Procs()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: list[dict[str, Any]] = []
    try:
        for run in range(args.repeat):
            order = targets if run % 2 == 0 else targets[::-1]  # alternate who goes first
            for target in order:
                res = run_target(procs, target, args, run)
                results.append(res)
                print(f"run {run + 1} {target}: " + table([(target, res)]).splitlines()[1])
                if target == "liverec":
                    print(
                        "    server side (histogram bucket bounds): event -> recs queued "
                        f"p50 <= {res['server_p50_le_ms']:g} ms, p99 <= "
                        f"{res['server_p99_le_ms']:g} ms; store write p50 <= "
                        f"{res['store_p50_le_ms']:g} ms, p99 <= {res['store_p99_le_ms']:g} ms"
                    )
                    if not math.isnan(res["mean_batch"]):
                        print(
                            f"    scoring worker CPU {res['worker_cpu_share']:.0%} "
                            f"({res['worker_cpu_ms_per_event']:.3f} ms/event), "
                            f"mean batch {res['mean_batch']:.2f} events"
                        )
                print(
                    f"    loadavg {res['loadavg_window']}, errors {res['errors']}, "
                    f"send lag p99 {res['send_lag_p99_ms']:.2f} ms, "
                    f"client CPU {res['client_cpu_share']:.0%}, superseded {res['superseded']}, "
                    f"RSS growth after load {res['kib_per_loaded_socket']:.1f} KiB/socket",
                    flush=True,
                )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        procs.stop_all()
    env["loadavg_end"] = loadavg()
    if not results:
        sys.exit(1)
    summary = summarise(results, targets)
    rows = [(t, summary[t]) for t in targets]
    print(
        f"\n{args.sockets} sockets, {args.rate:g} events/s, {args.duration:g} s measured; "
        f"medians of {len({r['run'] for r in results})} run(s); loadavg end {env['loadavg_end']}"
    )
    print(table(rows))
    if "ratio" in summary:
        print(
            "ratio liverec / echo (median of per-run ratios): "
            + ", ".join(f"{h} {summary['ratio'][k]:.2f}x" for k, h, _ in COLUMNS if k != "lost")
        )
    if args.json:
        out = {"env": env, "args": vars(args), "runs": results, "summary": summary}
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_client":
        asyncio.run(client_main(json.loads(sys.argv[2])))
    else:
        main()
