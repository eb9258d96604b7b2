"""Fault injection against a real server and a real redis-server.

Each scenario runs well-behaved shoppers alongside the fault and checks afterwards
that every acked event is in the event log exactly once and that the other shoppers
were served (every event they sent got its recs frame) throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from liverec.store import StoreLimits, open_store

from .conftest import RedisServer
from .servers import LiverecServer, free_port
from .wsclient import Client


@dataclass
class Shopper:
    """Behaves like the widget: resends events that were not acked."""

    name: str
    url: str
    local: str = "127.0.0.1"
    acked: set[str] = field(default_factory=set)
    unacked: list[str] = field(default_factory=list)
    recs_for: set[str] = field(default_factory=set)
    sent: int = 0
    session_id: str | None = None
    errors: list[str] = field(default_factory=list)
    started: float = 0.0

    async def run(self, stop: asyncio.Event, pace_s: float = 0.005) -> None:
        c = await Client.open(self.url, local_addr=(self.local, 0))
        welcome, _ = await c.hello()
        self.session_id = welcome["session_id"]
        try:
            while not stop.is_set():
                if self.unacked:
                    event_id = self.unacked.pop(0)
                else:
                    event_id = f"{self.name}-{self.sent}"
                    self.sent += 1
                await c.send(
                    {
                        "type": "event",
                        "id": event_id,
                        "action": "view",
                        "item_id": f"i{self.sent % 17}",
                    }
                )
                got_recs = False
                while not got_recs:
                    frame = await c.recv(timeout=15)
                    if frame["type"] == "ack":
                        self.acked.add(frame["id"])
                    elif frame["type"] == "error":
                        self.errors.append(frame["code"])
                        if frame.get("ref") == event_id and frame["code"] != "store_unavailable":
                            got_recs = True  # rejected outright (e.g. rate limited)
                        if frame["code"] in ("store_unavailable", "rate_limited"):
                            self.unacked.append(event_id)
                    elif frame["type"] == "recs" and frame["for_event"] == event_id:
                        self.recs_for.add(event_id)
                        got_recs = True
                await asyncio.sleep(pace_s)
            # drain: resend whatever is still unacked until the store takes it
            for _ in range(200):
                if not self.unacked:
                    break
                event_id = self.unacked.pop(0)
                await c.send({"type": "event", "id": event_id, "action": "view", "item_id": "d"})
                while True:
                    frame = await c.recv(timeout=15)
                    if frame["type"] == "ack":
                        self.acked.add(frame["id"])
                    elif frame["type"] == "error" and frame.get("ref") == event_id:
                        if frame["code"] == "rate_limited":  # rejected: no recs follow
                            self.unacked.append(event_id)
                            await asyncio.sleep(0.05)
                            break
                        self.unacked.append(event_id)  # store_unavailable: recs follow
                        await asyncio.sleep(0.05)
                    elif frame["type"] == "recs" and frame["for_event"] == event_id:
                        break
        finally:
            await c.close()

    def logged_ids(self, ids: list[str]) -> set[str]:
        return {i.split("/", 1)[1] for i in ids if i.startswith(f"{self.session_id}/")}


async def logged(url: str) -> list[str]:
    store = open_store(url, StoreLimits())
    await store.open()
    try:
        out: list[str] = []
        after = None
        while batch := await store.read_events(after=after, limit=2000):
            out += [f"{e.event.session_id}/{e.event.id}" for e in batch]
            after = batch[-1].position
        return out
    finally:
        await store.close()


ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def check(shoppers: list[Shopper], log: list[str], scenario: str, seconds: float) -> None:
    assert len(log) == len(set(log)), "an event is in the log twice"
    lost = 0
    for s in shoppers:
        ids = s.logged_ids(log)
        lost += len(s.acked - ids)
        assert s.acked <= ids, f"{s.name}: acked but not logged: {sorted(s.acked - ids)[:5]}"
        assert s.sent > 10, f"{s.name} was starved ({s.sent} events)"
    # figures for docs/reliability.md: the load during the fault and what was lost
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "faults.jsonl", "a") as fh:
        fh.write(
            json.dumps(
                {
                    "scenario": scenario,
                    "shoppers": len(shoppers),
                    "seconds": round(seconds, 1),
                    "events_sent": sum(s.sent for s in shoppers),
                    "events_per_s": round(sum(s.sent for s in shoppers) / seconds),
                    "acked": sum(len(s.acked) for s in shoppers),
                    "recs_received": sum(len(s.recs_for) for s in shoppers),
                    "logged": len(log),
                    "acked_lost": lost,
                    "logged_twice": len(log) - len(set(log)),
                }
            )
            + "\n"
        )


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Poll `condition` until it holds; fail naming `what` past the deadline."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def crowd(
    server: LiverecServer, n: int, local: str = "127.0.0.1", pace_s: float = 0.005
) -> AsyncIterator[tuple[list[Shopper], asyncio.Event]]:
    shoppers = [Shopper(f"ok{i}", server.ws_url, local) for i in range(n)]
    for s in shoppers:
        s.started = time.monotonic()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(s.run(stop, pace_s)) for s in shoppers]
    try:
        yield shoppers, stop
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)


def fast_server(url: str, **extra: Any) -> LiverecServer:
    return LiverecServer(
        url,
        events_per_s=1e4,
        events_burst=10000,
        address_events_per_s=1e5,
        address_events_burst=100000,
        **extra,
    )


@pytest.fixture
def own_redis(tmp_path: Path) -> Any:
    redis = RedisServer(free_port(), tmp_path)
    redis.start()
    yield redis
    redis.stop()


async def test_redis_killed_and_restarted_under_load(own_redis: RedisServer) -> None:
    url = f"redis://127.0.0.1:{own_redis.port}/0?socket_timeout=0.5"
    server = fast_server(url).start()
    try:
        async with crowd(server, 8) as (shoppers, _):
            await until(lambda: all(len(s.acked) >= 10 for s in shoppers), "load before")
            own_redis.kill()  # SIGKILL: what was not fsynced by appendfsync everysec is gone
            # Every shopper is told its events were not recorded, and still gets recs for
            # them: recommendations flow while Redis is down.
            await until(
                lambda: all(s.errors.count("store_unavailable") >= 3 for s in shoppers),
                "store_unavailable errors while Redis is down",
            )
            # (a shopper sends its next event only after the recs of the last one, so three
            # errors mean recs came back for events the store did not take)
            assert all(s.recs_for - s.acked for s in shoppers)
            own_redis.start()
            acked = {s.name: len(s.acked) for s in shoppers}
            await until(
                lambda: all(len(s.acked) > acked[s.name] + 5 for s in shoppers), "acks after"
            )
    finally:
        server.stop()
    check(shoppers, await logged(url), "redis SIGKILL + restart", _age(shoppers))


async def test_sigterm_under_load_with_many_clients(tmp_path: Path) -> None:
    url = f"embedded://{tmp_path}/s.db"
    server = fast_server(url).start()
    shoppers: list[Shopper] = []
    with contextlib.suppress(ConnectionClosed):
        async with crowd(server, 10) as (shoppers, _):
            await until(lambda: all(len(s.acked) >= 10 for s in shoppers), "load before")
            code = await asyncio.to_thread(server.stop)
    # shut down within stop()'s grace period (uvicorn re-raises the SIGTERM once done),
    # not SIGKILLed after it
    assert code in (0, -signal.SIGTERM), (code, server.log())
    check(shoppers, await logged(url), "server SIGTERM", _age(shoppers))


async def test_clients_vanishing_mid_frame(tmp_path: Path) -> None:
    url = f"embedded://{tmp_path}/v.db"
    server = fast_server(url).start()
    try:
        async with crowd(server, 4) as (shoppers, _):
            for i in range(30):
                c = await Client.open(server.ws_url)
                if i % 2:
                    await c.hello()
                transport = c.ws.transport
                # a masked text frame header announcing 256 bytes, then 10 of them, then gone
                transport.write(b"\x81\xfe\x01\x00" + os.urandom(4) + b"x" * 10)
                transport.abort()
            served = {s.name: len(s.recs_for) for s in shoppers}
            await until(  # the others are served after it as before
                lambda: all(len(s.recs_for) >= served[s.name] + 10 for s in shoppers),
                "the other shoppers served after the aborts",
            )
            status, body = server.get_json("/readyz")
            assert status == 200, body
        # every socket, the aborted ones too, is released once the server has seen it go
        await until(
            lambda: "liverec_connections_open 0" in server.get_text("/metrics"),
            "all connections released",
        )
    finally:
        server.stop()
    check(shoppers, await logged(url), "30 clients vanish mid-frame", _age(shoppers))


async def test_client_that_never_reads_is_cut_off_not_buffered(tmp_path: Path) -> None:
    url = f"embedded://{tmp_path}/n.db"
    server = fast_server(url, outbound_queue=8).start()
    try:
        async with crowd(server, 4, local="127.0.0.3") as (shoppers, _):
            # max_queue=1: the client library stops reading the socket at once
            slow = await Client.open(server.ws_url, max_queue=1, local_addr=("127.0.0.2", 0))
            await slow.send({"type": "hello", "k": 100})
            # It keeps sending; the server's queue for it fills and the server cuts it.
            # (The client cannot tell: it does not read, so it never sees the close.)
            cut = False
            for i in range(20000):
                with contextlib.suppress(ConnectionClosed):
                    await slow.send(
                        {"type": "event", "id": f"s{i}", "action": "view", "item_id": f"i{i % 300}"}
                    )
                if i % 500 == 0:
                    await asyncio.sleep(0.05)
                    if _cut_1013(server.get_text("/metrics")):
                        cut = True
                        break
            for _ in range(100):  # the server may still be working through what it got
                if cut or _cut_1013(server.get_text("/metrics")):
                    cut = True
                    break
                await asyncio.sleep(0.2)
            assert cut, "the server kept buffering for a client that does not read"
            rss_kb = _rss_kb(server)
            slow.ws.transport.abort()
        assert rss_kb < 400_000, rss_kb  # bounded, not the whole stream
    finally:
        server.stop()
    check(shoppers, await logged(url), "a client that never reads", _age(shoppers))


async def test_flood_from_one_address_others_still_served(tmp_path: Path) -> None:
    url = f"embedded://{tmp_path}/f.db"
    server = LiverecServer(
        url, events_per_s=50, events_burst=50, address_events_per_s=100, address_events_burst=100
    ).start()
    try:
        # 4 shoppers at ~20 events/s each: within their own and their address's limits
        async with crowd(server, 4, local="127.0.0.5", pace_s=0.05) as (shoppers, _):
            flooders = [
                await Client.open(server.ws_url, local_addr=("127.0.0.9", 0)) for _ in range(5)
            ]
            for f in flooders:
                await f.hello()
            cut = 0
            for i in range(3000):  # far past 10x the address limit
                f = flooders[i % len(flooders)]
                try:
                    await f.send(
                        {"type": "event", "id": f"x{i}", "action": "view", "item_id": "spam"}
                    )
                except ConnectionClosed:
                    cut += 1
                if i % 100 == 0:
                    await asyncio.sleep(0.01)
            # the flooders ignore what they are told; the server cuts them off (1013)
            await until(
                lambda: cut > 0 or _cut_1013(server.get_text("/metrics")),
                "the flooders cut off with 1013",
            )
            served = {s.name: len(s.recs_for) for s in shoppers}
            await until(
                lambda: all(len(s.recs_for) >= served[s.name] + 10 for s in shoppers),
                "the other shoppers served after the flood",
            )
            for f in flooders:
                f.ws.transport.abort()
        assert all(not {"rate_limited"} & set(s.errors) for s in shoppers)
    finally:
        server.stop()
    check(shoppers, await logged(url), "one-address flood", _age(shoppers))


def _cut_1013(metrics: str) -> bool:
    """/metrics counts at least one close with 1013 (the counter is exported from 0)."""
    found = re.search(r'^liverec_closes_total\{code="1013"\} (\S+)$', metrics, re.MULTILINE)
    return found is not None and float(found.group(1)) > 0


def _rss_kb(server: LiverecServer) -> int:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _age(shoppers: list[Shopper]) -> float:
    return time.monotonic() - min(s.started for s in shoppers)
