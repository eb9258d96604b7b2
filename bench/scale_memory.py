"""What one session, one signed-in user and one event cost in Redis, and what one open
socket costs a server process; the inputs of docs/scaling.md's capacity model.

Owns: one measurement on a private redis-server (never the machine's own) and one
`liverec serve` on a fresh key prefix: `--sessions` sessions of `--events` events each
(views, the last one a purchase) sent through the HTTP API by signed-in users (two
sessions each), then `MEMORY USAGE` (exact: SAMPLES 0) of every key under the prefix,
grouped by kind (the word after the prefix: session, items, log, dedup, the profile
kinds) and divided by sessions, users or events, beside the `used_memory` delta of
`INFO memory` over the same run; then the server's resident memory (VmRSS) before and
after `--sockets` WebSocket shoppers connect, say hello and send one event (held open
meanwhile). Nothing here is asserted. Run by bench/scale.py, or alone:

    nice -n 10 .venv/bin/python bench/scale_memory.py --sessions 400 --events 10 --sockets 200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import websockets
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import RedisServer, free_port
from tests.servers import LiverecServer

from liverec.identity import mint_token

SECRET = "bench-memory-secret-of-at-least-32-bytes"
PER = {  # what a kind of key grows with
    "session": "session",
    "items": "session",
    "dedup": "event",
    "log": "event",
}


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def used_memory(client: Redis) -> int:
    return int((await client.info("memory"))["used_memory"])


def send_sessions(server: LiverecServer, sessions: int, events: int) -> int:
    users = max(1, sessions // 2)
    sent = 0
    for s in range(sessions):
        token = mint_token(f"user-{s % users}", SECRET)
        frames = [
            {
                "id": uuid.uuid4().hex,
                "action": "purchase" if j == events - 1 else "view",
                "item_id": f"sku-{(s * 7 + j * 13) % 500}",
            }
            for j in range(events)
        ]
        status, reply = server.post_json(
            "/v1/events", {"events": frames}, {"authorization": f"Bearer {token}"}
        )
        if status != 200:
            raise RuntimeError(f"POST /v1/events: {status} {reply}")
        sent += len(frames)
    return sent


async def key_usage(client: Redis, prefix: str) -> dict[str, tuple[int, int]]:
    """kind -> (keys, bytes) for every key under `prefix`."""
    found: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    async for key in client.scan_iter(match=prefix + "*", count=1000):
        kind = key[len(prefix) :].split(":")[0]
        usage = await client.memory_usage(key, samples=0)
        found[kind][0] += 1
        found[kind][1] += int(usage or 0)
    return {k: (v[0], v[1]) for k, v in sorted(found.items())}


async def hold_sockets(url: str, count: int) -> list[Any]:
    opened = []
    for n in range(count):
        ws = await websockets.connect(url)
        await ws.send(json.dumps({"type": "hello", "k": 8}))
        while json.loads(await ws.recv())["type"] != "recs":
            pass
        await ws.send(
            json.dumps({"type": "event", "id": f"m{n}", "action": "view", "item_id": f"sku-{n}"})
        )
        while json.loads(await ws.recv())["type"] != "recs":
            pass
        opened.append(ws)
    return opened


async def measure(url: str, port: int, args: argparse.Namespace) -> dict[str, Any]:
    prefix = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)["prefix"][0]
    client = Redis(host="127.0.0.1", port=port, decode_responses=True)
    server = LiverecServer(
        url,
        jwt_secret=SECRET,
        warm_events=0,
        events_per_s=1e9,
        events_burst=1_000_000_000,
        max_connections_per_address=100_000,
        address_events_per_s=1e9,
        address_events_burst=1_000_000_000,
    ).start(timeout=90)
    try:
        before = await used_memory(client)
        sent = await asyncio.to_thread(send_sessions, server, args.sessions, args.events)
        grown = await used_memory(client) - before
        kinds = await key_usage(client, prefix)
        assert server.proc is not None
        await asyncio.sleep(1.0)  # let the server settle after the HTTP burst
        rss0 = rss_bytes(server.proc.pid)
        sockets = await hold_sockets(server.ws_url, args.sockets)
        rss1 = rss_bytes(server.proc.pid)
        for ws in sockets:
            with contextlib.suppress(Exception):
                await ws.close()
    finally:
        server.stop()
        await client.aclose()
    return {
        "sessions": args.sessions,
        "users": max(1, args.sessions // 2),
        "events": sent,
        "used_memory_delta": grown,
        "kinds": kinds,
        "sockets": args.sockets,
        "rss_delta": rss1 - rss0,
    }


def report(m: dict[str, Any]) -> None:
    counts = {"session": m["sessions"], "user": m["users"], "event": m["events"]}
    print(
        f"\n{m['sessions']} sessions of {m['events'] // m['sessions']} events, "
        f"{m['users']} signed-in users ({m['events']} events)\n"
    )
    print("| key kind | keys | bytes | bytes per |")
    print("|---|---|---|---|")
    per_unit: dict[str, int] = defaultdict(int)
    for kind, (keys, size) in m["kinds"].items():
        unit = PER.get(kind, "user")
        per_unit[unit] += size
        print(f"| {kind} | {keys} | {size} | {size / counts[unit]:.0f} per {unit} |")
    print()
    for unit in ("session", "user", "event"):
        print(f"Redis bytes per {unit}: {per_unit[unit] / counts[unit]:.0f}")
    total = sum(size for _, size in m["kinds"].values())
    print(
        f"all keys: {total} bytes = {total / m['events']:.0f} per event; INFO used_memory "
        f"grew {m['used_memory_delta']} bytes = {m['used_memory_delta'] / m['events']:.0f} "
        "per event"
    )
    print(
        f"server RSS grew {m['rss_delta']} bytes over {m['sockets']} open sockets = "
        f"{m['rss_delta'] / max(1, m['sockets']) / 1024:.1f} KiB per open socket and session"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", type=int, default=400)
    parser.add_argument("--events", type=int, default=10)
    parser.add_argument("--sockets", type=int, default=200)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="liverec-bench-") as tmp:
        redis = RedisServer(free_port(), Path(tmp) / "single")
        redis.workdir.mkdir()
        redis.start()
        try:
            url = f"{redis.url}?prefix=m{time.monotonic_ns()}:"
            report(await measure(url, redis.port, args))
        finally:
            redis.stop()


if __name__ == "__main__":
    asyncio.run(main())
