"""Scenario: shoppers' behaviour shifts mid-run; how fast does the served model follow?

Runs `liverec serve` with the continuous learner inside (`learn_in_serve`) on an
embedded store in a temporary directory, and drives simulated shoppers through real
WebSockets on loopback. The catalog: 40 product families of 10 related items
(`f3-0` ... `f3-9`, families Zipf-popular); a shopper walks one family's chain
(mostly to the next item, sometimes further or anywhere in the family, now and then
to another family). At the shift, a new product line appears (4 families `new0-*`
... `new3-*`, each tied to one old "anchor" family): from then on half the sessions
alternate between an anchor family's items and the new line's
(`f0-4 -> new0-4 -> f0-5 -> new0-5 ...`).

Before the server starts, a history of phase-1 sessions is written to the store and
`liverec learn --once` trains and promotes the first model (a deployment starts from
a model trained on past traffic). Then the scenario runs phase 1 live for
`--before` seconds, shifts, and runs `--after` seconds more.

Reported (JSON on stdout; a summary on stderr):
- seconds from the shift until a new item first appears in the recommendations
  shown for an anchor item (an old item related to the new line);
- Recall@20 of the served lists on the post-shift traffic (the list shown after
  event t contains the item of event t+1), before and after the first promotion of
  a model that knows the new items, and on the pre-shift traffic;
- every learning round (from the registry), times relative to the shift;
- the machine's load average before and after (the machine may be shared).

Usage: python bench/scenario_shift.py [--before 30] [--after 120] [--shoppers 20]
       [--think-ms 100] [--history 4000] [--seed 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from liverec.learn.registry import Registry
from liverec.store import StoreLimits, open_store
from liverec.types import Event

OLD = [f"f{j}" for j in range(40)]
NEW = [f"new{j}" for j in range(4)]
ANCHOR = {f"new{j}": f"f{j}" for j in range(4)}  # new line -> the old family it goes with
ITEMS = 10
K = 20

# training parameters of a candidate: a small model for a 440-item catalog
TRAIN_SET = (
    "model.layers=64,model.dropout_p_embed=0,model.dropout_p_hidden=0.1,loss=cross-entropy,"
    "n_sample=32,batch_size=32,learning_rate=0.1,momentum=0"
)


def learn_env(args: argparse.Namespace, store_url: str, models: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEREC_")}
    env.update(
        LIVEREC_STORE_URL=store_url,
        LIVEREC_MODEL_PATH=str(models),
        LIVEREC_LEARN_SET=TRAIN_SET,
        LIVEREC_LEARN_EPOCHS="3",
        LIVEREC_LEARN_MODE=args.mode,
        LIVEREC_LEARN_MIN_EVENTS=str(args.min_events),
        LIVEREC_LEARN_INTERVAL_S=str(args.interval),
        LIVEREC_LEARN_WINDOW_EVENTS=str(args.window),
        LIVEREC_LEARN_HOLDOUT_FRACTION="0.1",
        LIVEREC_LEARN_MIN_HOLDOUT_CASES="200",
        LIVEREC_LEARN_MARGIN="0.005",
        LIVEREC_LEARN_THREADS="1",
        LIVEREC_LEARN_POLL_S="0.5",
        LIVEREC_LOG_LEVEL="info",
    )
    return env


def step(rng: random.Random, pos: int) -> int:
    """The next position along a family's chain: mostly the next item, sometimes any."""
    r = rng.random()
    return pos + 1 if r < 0.6 else pos + 2 if r < 0.75 else rng.randrange(ITEMS)


def old_session(rng: random.Random) -> list[str]:
    weights = [1.0 / (j + 1) ** 0.8 for j in range(len(OLD))]
    fam = rng.choices(OLD, weights)[0]
    pos, out = rng.randrange(ITEMS), []
    for _ in range(rng.randint(3, 8)):
        out.append(f"{fam}-{pos % ITEMS}")
        pos = step(rng, pos)
        if rng.random() < 0.1:  # wander to another family
            fam = rng.choices(OLD, weights)[0]
    return out


def new_line_session(rng: random.Random) -> list[str]:
    """Alternates the new line and its anchor family: f0-4 -> new0-4 -> f0-5 -> ..."""
    line = rng.choice(NEW)
    anchor, pos, out = ANCHOR[line], rng.randrange(ITEMS), []
    for n in range(rng.randint(3, 8)):
        out.append(f"{anchor if n % 2 == 0 else line}-{pos % ITEMS}")
        if n % 2:
            pos = step(rng, pos)
    return out


@dataclass
class Shown:
    """One event sent and the list shown after it."""

    t: float  # wall clock when the list arrived
    item: str
    next_item: str | None
    recs: list[str]
    model: str


@dataclass
class Run:
    shift_at: float = 0.0
    shown: list[Shown] = field(default_factory=list)
    errors: int = 0  # connections that failed on the client side
    dropped: list[str] = field(default_factory=list)  # sockets the server closed: code at time


async def shopper(n: int, url: str, args: argparse.Namespace, run: Run, stop_at: float) -> None:
    rng = random.Random(args.seed * 1000 + n)
    think = args.think_ms / 1000
    count = 0
    while time.time() < stop_at:
        shifted = time.time() >= run.shift_at
        items = new_line_session(rng) if shifted and rng.random() < 0.5 else old_session(rng)
        try:
            async with connect(url, open_timeout=10) as ws:
                await ws.send(json.dumps({"type": "hello", "k": K}))
                await ws.recv()  # welcome
                await ws.recv()  # recs for the empty session
                for pos, item in enumerate(items):
                    if time.time() >= stop_at:
                        break
                    count += 1
                    eid = f"s{n}-{count}"
                    frame = {"type": "event", "id": eid, "action": "view", "item_id": item}
                    await ws.send(json.dumps(frame))
                    while True:
                        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
                        if reply["type"] == "recs" and reply["for_event"] == eid:
                            break
                    run.shown.append(
                        Shown(
                            time.time(),
                            item,
                            items[pos + 1] if pos + 1 < len(items) else None,
                            [r["item_id"] for r in reply["items"]],
                            reply["model"],
                        )
                    )
                    await asyncio.sleep(rng.expovariate(1 / think) if think > 0 else 0)
        except ConnectionClosed as exc:  # the server closed the socket: a dropped shopper
            run.dropped.append(f"{exc.rcvd.code if exc.rcvd else None} at {time.time():.1f}")
        except (OSError, TimeoutError, KeyError, ValueError) as exc:
            run.errors += 1
            print(f"shopper {n}: {exc!r}", file=sys.stderr)
            await asyncio.sleep(0.5)


def recall(cases: list[Shown]) -> dict[str, Any]:
    judged = [s for s in cases if s.next_item is not None]
    hits = sum(1 for s in judged if s.next_item in s.recs[:K])
    return {f"recall@{K}": round(hits / len(judged), 4) if judged else None, "cases": len(judged)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited early")
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the server did not become ready")


async def write_history(store_url: str, sessions: int, seed: int) -> int:
    rng = random.Random(seed)
    t = time.time() - 86400.0  # yesterday's traffic
    events = []
    for s in range(sessions):
        for pos, item in enumerate(old_session(rng)):
            events.append(Event(f"h{pos}", f"hist-{s}", "view", item, t))
            t += 1.0
    store = open_store(store_url, StoreLimits())
    await store.open()
    try:
        await store.record_events(events)
    finally:
        await store.close()
    return len(events)


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


async def drive(url: str, args: argparse.Namespace) -> Run:
    """The shoppers, `args.before` seconds, then the shift, then `args.after` seconds."""
    run = Run()
    run.shift_at = time.time() + args.before
    stop_at = run.shift_at + args.after
    await asyncio.gather(*(shopper(n, url, args, run, stop_at) for n in range(args.shoppers)))
    return run


def scenario(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    store_url, models = f"embedded://{workdir}/liverec.db", workdir / "models"
    load_before = os.getloadavg()
    history = asyncio.run(write_history(store_url, args.history, args.seed))
    env = learn_env(args, store_url, models)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "liverec.cli", "learn", "--once"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    bootstrap_s = time.perf_counter() - started
    first = Registry(models).current()
    if first is None:
        raise RuntimeError("the first model was not promoted")

    port = free_port()
    env.update(
        LIVEREC_LEARN_IN_SERVE="true",
        LIVEREC_MODEL_POLL_S="0.5",
        LIVEREC_EVENTS_PER_S="1000",
        LIVEREC_EVENTS_BURST="1000",
        LIVEREC_ADDRESS_EVENTS_PER_S="100000",
        LIVEREC_ADDRESS_EVENTS_BURST="100000",
    )
    log_path = workdir / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "liverec.cli", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        run = asyncio.run(drive(f"ws://127.0.0.1:{port}/v1/ws", args))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    load_after = os.getloadavg()

    registry = Registry(models)
    records = {r.version: r for r in registry.records()}
    rounds = []
    for r in registry.records()[1:]:
        decided = r.history[-1]
        rounds.append(
            {
                "version": r.version,
                "status": r.status,
                "started_s_after_shift": round(ts(decided["at"]) - r.seconds - run.shift_at, 1),
                "decided_s_after_shift": round(ts(decided["at"]) - run.shift_at, 1),
                "train_and_judge_s": r.seconds,
                "window_events": r.window.get("events"),
                "new_items": r.new_items,
                "cases": r.metrics.get("cases"),
                "new_item_cases": r.metrics.get("new_item_cases"),
                "candidate": r.metrics.get("candidate"),
                "live": r.metrics.get("live"),
            }
        )
    knows_new = {
        v for v, r in records.items() if any(f"{line}-0" in _items(models / v) for line in NEW)
    }
    promotion = next(
        (c for c in registry.changes() if c["action"] == "promote" and c["version"] in knows_new),
        None,
    )
    promoted_at = ts(promotion["at"]) if promotion else None
    after_shift = [s for s in run.shown if s.t >= run.shift_at]
    related = [
        s
        for s in after_shift
        if s.item.split("-")[0] in ANCHOR.values() and any(i.startswith("new") for i in s.recs)
    ]
    new_by_model = [s for s in after_shift if s.item.startswith("new") and s.model != "online"]
    return {
        "command": " ".join(sys.argv),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
        "shoppers": args.shoppers,
        "history_events": history,
        "bootstrap_s": round(bootstrap_s, 1),
        "events_before_shift": sum(1 for s in run.shown if s.t < run.shift_at),
        "events_after_shift": len(after_shift),
        "client_errors": run.errors,
        "sockets_closed_by_server": len(run.dropped),
        "close_codes": sorted({d.split()[0] for d in run.dropped}),
        "rounds": rounds,
        "first_promotion_with_new_items_s": (
            round(promoted_at - run.shift_at, 1) if promoted_at else None
        ),
        "new_items_in_recs_for_related_items_s": (
            round(related[0].t - run.shift_at, 1) if related else None
        ),
        "new_items_recommended_by_a_model_for_new_items_s": (
            round(new_by_model[0].t - run.shift_at, 1) if new_by_model else None
        ),
        "recall_before_shift": recall([s for s in run.shown if s.t < run.shift_at]),
        "recall_after_shift_before_promotion": recall(
            [s for s in after_shift if promoted_at is None or s.t < promoted_at]
        ),
        "recall_after_promotion": recall(
            [s for s in after_shift if promoted_at is not None and s.t >= promoted_at]
        ),
    }


def _items(path: Path) -> set[str]:
    meta = json.loads((path / "meta.json").read_text()) if (path / "meta.json").is_file() else {}
    return set(meta.get("items", []))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=float, default=30.0, help="seconds of live traffic before")
    ap.add_argument("--after", type=float, default=120.0, help="seconds after the shift")
    ap.add_argument("--shoppers", type=int, default=20)
    ap.add_argument("--think-ms", type=float, default=100.0, help="mean pause between events")
    ap.add_argument("--history", type=int, default=4000, help="past sessions before the run")
    ap.add_argument("--mode", default="finetune", choices=("finetune", "retrain"))
    ap.add_argument("--min-events", type=int, default=2000, help="learn_min_events")
    ap.add_argument("--interval", type=float, default=15.0, help="learn_interval_s")
    ap.add_argument("--window", type=int, default=20000, help="learn_window_events")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="also write the report here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="liverec-shift-"))
    try:
        report = scenario(args, workdir)
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    text = json.dumps(report, indent=1)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)
    print(
        f"new items in recs for related items {report['new_items_in_recs_for_related_items_s']} s "
        f"after the shift; first promotion with them at "
        f"{report['first_promotion_with_new_items_s']} s; Recall@{K} after the shift "
        f"{report['recall_after_shift_before_promotion']} -> {report['recall_after_promotion']}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
