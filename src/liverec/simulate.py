"""`liverec simulate`: synthetic shoppers driving a local server over real WebSockets.

Owns: running a bounded number of concurrent shoppers, for a bounded time, through
the same socket and protocol as the widget (hello, events, acks, recs), each walking
demo shopper sessions (`demo.shopper_session`: a product family, its accessories,
comparisons, carts, purchases) with think time between events; refusing any server
not on this machine; and the summary it prints (events, acks, client-side latency
from sending an event to receiving its recs).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from .demo import DemoCatalog, build_catalog, shopper_session
from .errors import ConfigError

MAX_SHOPPERS: Final = 500
MAX_DURATION_S: Final = 3600.0
RECV_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class SimConfig:
    url: str = "ws://127.0.0.1:8000/v1/ws"
    shoppers: int = 20
    duration_s: float = 30.0
    think_s: float = 0.5  # mean pause between one shopper's events (exponential)
    seed: int = 1
    k: int = 8

    def __post_init__(self) -> None:
        if not 1 <= self.shoppers <= MAX_SHOPPERS:
            raise ConfigError(f"shoppers must be in 1..{MAX_SHOPPERS}")
        if not 0 < self.duration_s <= MAX_DURATION_S:
            raise ConfigError(f"duration must be in (0, {MAX_DURATION_S:g}] seconds")
        if self.think_s < 0:
            raise ConfigError("think time must be >= 0")
        check_loopback(self.url)


def check_loopback(url: str) -> None:
    """Raise ConfigError unless `url` is a ws(s):// URL of this machine."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigError(f"not a WebSocket URL: {url!r} (ws://127.0.0.1:8000/v1/ws)")
    host = parts.hostname
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(f"simulate only drives a server on this machine, not {host!r}")


@dataclass(slots=True)
class SimReport:
    sessions: int = 0
    events: int = 0
    acked: int = 0
    recs: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    def error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        lat = sorted(self.latencies_s)

        def pct(q: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 3) if lat else None

        return {
            "sessions": self.sessions,
            "events": self.events,
            "acked": self.acked,
            "recs": self.recs,
            "errors": dict(sorted(self.errors.items())),
            "events_per_s": round(self.events / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "latency_ms": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99)},
            "elapsed_s": round(self.elapsed_s, 2),
        }


async def run(config: SimConfig) -> SimReport:
    """Run every shopper until the duration is over; returns what happened."""
    demo = build_catalog()
    report = SimReport()
    started = time.monotonic()
    deadline = started + config.duration_s
    await asyncio.gather(
        *(_shopper(n, config, demo, deadline, report) for n in range(config.shoppers))
    )
    report.elapsed_s = time.monotonic() - started
    return report


async def _pause(rng: random.Random, mean_s: float, deadline: float) -> bool:
    """Sleep a think time (capped at the deadline); False once the deadline passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        return False
    await asyncio.sleep(min(rng.expovariate(1 / mean_s) if mean_s > 0 else 0.0, left))
    return time.monotonic() < deadline


async def _shopper(
    n: int, config: SimConfig, demo: DemoCatalog, deadline: float, report: SimReport
) -> None:
    rng = random.Random(config.seed * 100_003 + n)
    failures = 0
    # Stagger the starts so that shoppers do not all connect at once.
    if not await _pause(rng, config.think_s, deadline):
        return
    while time.monotonic() < deadline:
        try:
            async with connect(config.url, open_timeout=5, close_timeout=2) as ws:
                await _visit(ws, rng, config, demo, deadline, report)
            failures = 0
        except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake, InvalidURI) as exc:
            report.error(type(exc).__name__)
            failures += 1
            delay = min(5.0, 0.2 * 2**failures) * rng.random()  # backoff with full jitter
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))


async def _visit(
    ws: ClientConnection,
    rng: random.Random,
    config: SimConfig,
    demo: DemoCatalog,
    deadline: float,
    report: SimReport,
) -> None:
    """One shopping session on one connection."""
    await ws.send(json.dumps({"type": "hello", "k": config.k, "placement": "home"}))
    welcome = await _recv(ws)
    if welcome.get("type") != "welcome":
        report.error(str(welcome.get("code", "no_welcome")))
        return
    await _recv(ws)  # the cold-start recs
    report.sessions += 1
    for step, (action, item_id) in enumerate(shopper_session(rng, demo)):
        if not await _pause(rng, config.think_s, deadline):
            return
        event_id = f"sim-{step}-{rng.getrandbits(48):x}"
        frame = {"type": "event", "id": event_id, "action": action, "item_id": item_id}
        sent = time.perf_counter()
        await ws.send(json.dumps(frame))
        report.events += 1
        while True:
            reply = await _recv(ws)
            kind = reply.get("type")
            if kind == "ack":
                report.acked += 1
            elif kind == "error":
                report.error(str(reply.get("code")))
            elif kind == "recs" and reply.get("for_event") == event_id:
                report.recs += 1
                report.latencies_s.append(time.perf_counter() - sent)
                break
            if kind == "error" and reply.get("code") == "rate_limited":
                break  # no recs follow a dropped event


async def _recv(ws: ClientConnection) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), RECV_TIMEOUT_S)
    frame = json.loads(raw)
    return frame if isinstance(frame, dict) else {}
