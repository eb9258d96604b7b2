"""The live feed for operators: the /v1/feed socket behind the /feed page.

Owns: `FeedHub`, a session-manager listener that keeps rolling statistics (events
per second and latency percentiles per second over the last `window_s` seconds, the
sessions connected now, impressions and clicks on recommendations per model version
and placement over the window and in total) and fans every handled event out to the
connected operator pages; and the endpoint serving those pages. Each page has a
bounded queue: a page that falls behind loses the oldest entries (it is told how
many) and never slows the event path, which only appends to the queues.

Frames, all JSON. Page to server: `{"type": "hello", "token"?: str}` first (the
`admin_token` setting; without one only loopback clients are let in). Server to page:
`snapshot` once (history, live sessions, click-through), then `batch` frames of
entries (at most about ten a second) and one `tick` a second with the last second's
figures and the click-through rows. Impressions and clicks are only counted here, not
queued to the pages as entries: the click itself arrives as an event.

With a shared store the hub also shows the other processes (feed_relay.py carries
what goes between them): their entries go to this hub's pages as they arrive
(`heard_entries`), and their figures of the last seconds (`beat`, `heard_beat`) are
merged into the ticks, the charts and the click-through rows. The list of sessions
in the snapshot is this process's; the session counts are every process's.

Why ~460 lines in one module: the rolling statistics and the fan-out to pages are
fed by the same listener call and read by the same snapshot; the endpoint (about 70
lines) only speaks for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import math
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..config import Settings
from ..sessions import CatalogView, FeedEntry
from .close_codes import CLOSE_POLICY, CLOSE_TRY_LATER
from .gate import FORWARDING_HEADERS, PEER_TRUSTED
from .origins import OriginPolicy

log = logging.getLogger("liverec.feed")

BUCKETS_PER_OCTAVE: Final = 8  # latency histogram resolution: 2^(1/8) = 9 % per bucket
MIN_LATENCY_S: Final = 1e-6
MAX_SESSIONS_TRACKED: Final = 10_000
SNAPSHOT_SESSIONS: Final = 100
RECS_SHOWN: Final = 6
BATCH_MAX: Final = 200  # entries per batch frame
BATCH_INTERVAL_S: Final = 0.1
MAX_CTR_ROWS: Final = 50  # (model, placement) pairs kept; the least recently updated go
TICK_DELAY_S: Final = 0.5  # a second is reported this long after it ends: the other
# processes' figures of it (sent just after it ended) are in by then
BEAT_SECONDS: Final = 3  # complete seconds each beat repeats (a lost beat is made good)
MAX_PEERS: Final = 256  # other processes' figures kept


def bucket_of(latency_s: float) -> int:
    return max(
        0, int(math.log2(max(latency_s, MIN_LATENCY_S) / MIN_LATENCY_S) * BUCKETS_PER_OCTAVE)
    )


def bucket_value(bucket: int) -> float:
    """The geometric middle of a bucket, seconds."""
    return MIN_LATENCY_S * 2 ** ((bucket + 0.5) / BUCKETS_PER_OCTAVE)


def percentile(histograms: Iterable[Counter[int]], q: float) -> float | None:
    """The q-quantile (0..1) of merged latency histograms, seconds; None when empty."""
    merged: Counter[int] = Counter()
    for h in histograms:
        merged.update(h)
    total = sum(merged.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for bucket in sorted(merged):
        seen += merged[bucket]
        if seen >= rank:
            return bucket_value(bucket)
    return bucket_value(max(merged))  # pragma: no cover - rank <= total


@dataclass(slots=True)
class _Second:
    events: int = 0
    latency: Counter[int] = field(default_factory=Counter)
    impressions: Counter[tuple[str, str]] = field(default_factory=Counter)
    clicks: Counter[tuple[str, str]] = field(default_factory=Counter)


@dataclass(slots=True)
class Reported:
    """Impressions and clicks on one model version's lists at one placement."""

    impressions: int = 0
    clicks: int = 0


def ctr(clicks: int, impressions: int) -> float | None:
    """Click-through rate: clicks per impression (a list can get several clicks, one per
    item, so it may exceed 1); None without impressions."""
    return round(clicks / impressions, 4) if impressions else None


@dataclass(slots=True)
class LiveInfo:
    """What the feed knows about one connected session."""

    opened: float
    last: float
    connections: int = 0
    events: int = 0
    last_item: str | None = None
    placement: str | None = None


@dataclass(slots=True)
class Peer:
    """Another process's figures, as its latest beats told them."""

    heard: float  # clock of the latest beat
    sessions: int = 0
    model: str = ""
    seconds: dict[int, _Second] = field(default_factory=dict)
    reported: dict[tuple[str, str], Reported] = field(default_factory=dict)


@dataclass(slots=True, eq=False)  # kept in a set: hashed by identity
class Subscriber:
    """One operator page: a bounded queue of entries and the latest tick."""

    capacity: int
    entries: deque[dict[str, Any]] = field(default_factory=deque)
    dropped: int = 0
    tick: dict[str, Any] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, entry: dict[str, Any]) -> None:
        if len(self.entries) >= self.capacity:
            self.entries.popleft()  # the oldest goes: a live feed wants the newest
            self.dropped += 1
        self.entries.append(entry)
        self.wake.set()


class FeedHub:
    """Listens to the session manager; serves statistics and entries to operator pages."""

    def __init__(
        self,
        settings: Settings,
        catalog: CatalogView | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.clock = clock
        self.window_s = settings.feed_window_s
        self.seconds: dict[int, _Second] = {}
        self.live: OrderedDict[str, LiveInfo] = OrderedDict()
        self.reported: OrderedDict[tuple[str, str], Reported] = OrderedDict()
        self.subscribers: set[Subscriber] = set()
        self.model = ""
        # other processes: their figures, and where this one's entries go while a page
        # on another process watches (set by feed_relay.FeedRelay, else None)
        self.peers: dict[str, Peer] = {}
        self.fresh_s = settings.feed_watch_s or 0.0  # a peer's beat counts this long
        self.relay_out: Callable[[dict[str, Any]], None] | None = None
        self._ticker: asyncio.Task[None] | None = None

    # --- the listener (on the event loop, after each handled frame; must be cheap) -----

    def on_entry(self, entry: FeedEntry) -> None:
        now = self.clock()
        if entry.kind in ("impression", "click"):
            self._feedback(entry, now)
            return
        if entry.kind == "event":
            second = self._second(int(now))
            second.events += 1
            if entry.latency_s is not None:
                second.latency[bucket_of(entry.latency_s)] += 1
        self._track(entry, now)
        if entry.recs is not None:
            self.model = entry.recs.model
        if self.subscribers or self.relay_out is not None:  # else nobody watches: no cost
            shown = self.describe(entry)
            for sub in self.subscribers:
                sub.put(shown)
            if self.relay_out is not None:
                self.relay_out(shown)

    def _second(self, t: int) -> _Second:
        second = self.seconds.get(t)
        if second is None:
            second = self.seconds[t] = _Second()
            for old in [s for s in self.seconds if s <= t - self.window_s]:
                del self.seconds[old]
        return second

    def _feedback(self, entry: FeedEntry, now: float) -> None:
        key = (entry.model or "", entry.placement or "")
        second = self._second(int(now))
        totals = self.reported.get(key)
        if totals is None:
            totals = self.reported[key] = Reported()
            if len(self.reported) > MAX_CTR_ROWS:  # placements are chosen by clients
                self.reported.popitem(last=False)
        self.reported.move_to_end(key)
        if entry.kind == "impression":
            second.impressions[key] += 1
            totals.impressions += 1
        else:
            second.clicks[key] += 1
            totals.clicks += 1

    def _track(self, entry: FeedEntry, now: float) -> None:
        info = self.live.get(entry.session_id)
        if entry.kind == "close":
            if info is not None:
                info.connections -= 1
                if info.connections <= 0:
                    del self.live[entry.session_id]
            return
        if info is None:
            info = self.live[entry.session_id] = LiveInfo(opened=now, last=now)
            if len(self.live) > MAX_SESSIONS_TRACKED:
                self.live.popitem(last=False)
        self.live.move_to_end(entry.session_id)
        info.last = now
        info.placement = entry.placement or info.placement
        if entry.kind == "open":
            info.connections += 1
        elif entry.event is not None:
            info.events += 1
            info.last_item = entry.event.item_id

    def describe(self, entry: FeedEntry) -> dict[str, Any]:
        """An entry as the page shows it: ids with titles, latency in ms."""
        out: dict[str, Any] = {"kind": entry.kind, "t": entry.at, "sid": entry.session_id}
        if entry.placement:
            out["placement"] = entry.placement
        if entry.event is not None:
            out["action"] = entry.event.action
            out["item"] = entry.event.item_id
            out["title"] = self._titles([entry.event.item_id])[0]
            out["acked"] = entry.acked
            out["dup"] = entry.duplicate
        if entry.recs is not None:
            ids = [r.item_id for r in entry.recs.items[:RECS_SHOWN]]
            out["recs"] = [
                {"id": i, "title": t} for i, t in zip(ids, self._titles(ids), strict=True)
            ]
            out["model"] = entry.recs.model
        if entry.latency_s is not None:
            out["latency_ms"] = round(entry.latency_s * 1000, 3)
        return out

    def _titles(self, ids: list[str]) -> list[str | None]:
        cards = self.catalog.describe(ids) if self.catalog is not None else None
        if cards is None:
            return [None] * len(ids)
        return [c.get("title") for c in cards]

    # --- statistics --------------------------------------------------------------------

    def _at(self, t: int) -> list[_Second]:
        """Second `t` of this process and of every other one heard from."""
        found = [self.seconds[t]] if t in self.seconds else []
        for peer in self.peers.values():
            if t in peer.seconds:
                found.append(peer.seconds[t])
        return found

    def _fresh(self) -> list[Peer]:
        """The other processes that are still there (a beat within `feed_watch_s`)."""
        since = self.clock() - self.fresh_s
        return [p for p in self.peers.values() if p.heard >= since]

    def sessions_now(self) -> tuple[int, int]:
        """(live sessions, processes) over this process and the others heard from."""
        fresh = self._fresh()
        return len(self.live) + sum(p.sessions for p in fresh), 1 + len(fresh)

    def tick(self, t: int) -> dict[str, Any]:
        """The figures of second `t` and of the last minute before it, every process's."""
        second = self._at(t)
        minute = [s for at in range(t - 59, t + 1) for s in self._at(at)]
        sessions, processes = self.sessions_now()
        return {
            "type": "tick",
            "t": t,
            "events": sum(s.events for s in second),
            "p50_ms": _ms(percentile((s.latency for s in second), 0.5)),
            "p99_ms": _ms(percentile((s.latency for s in second), 0.99)),
            "sessions": sessions,
            "processes": processes,
            "minute": {
                "events_per_s": round(sum(s.events for s in minute) / 60, 2),
                "p50_ms": _ms(percentile((s.latency for s in minute), 0.5)),
                "p99_ms": _ms(percentile((s.latency for s in minute), 0.99)),
            },
            "model": self.model,
            "ctr": self.click_through(t),
        }

    def click_through(self, t: int) -> list[dict[str, Any]]:
        """Per model version and placement: impressions, clicks and their rate since the
        process started, and over the `window_s` seconds up to `t` (and the second after
        it, still running)."""
        impressions: Counter[tuple[str, str]] = Counter()
        clicks: Counter[tuple[str, str]] = Counter()
        for seconds in [self.seconds, *(p.seconds for p in self.peers.values())]:
            for s, second in seconds.items():
                if s > t - self.window_s:
                    impressions.update(second.impressions)
                    clicks.update(second.clicks)
        reported: dict[tuple[str, str], Reported] = {}
        for rows_of in [self.reported, *(p.reported for p in self._fresh())]:
            for key, counted in rows_of.items():
                into = reported.setdefault(key, Reported())
                into.impressions += counted.impressions
                into.clicks += counted.clicks
        rows = []
        for (model, placement), totals in sorted(reported.items())[: 2 * MAX_CTR_ROWS]:
            key = (model, placement)
            rows.append(
                {
                    "model": model,
                    "placement": placement,
                    "impressions": totals.impressions,
                    "clicks": totals.clicks,
                    "ctr": ctr(totals.clicks, totals.impressions),
                    "window": {
                        "impressions": impressions[key],
                        "clicks": clicks[key],
                        "ctr": ctr(clicks[key], impressions[key]),
                    },
                }
            )
        return rows

    def snapshot(self) -> dict[str, Any]:
        now = int(self.clock())
        start = now - self.window_s
        # each second once (not `tick`, whose click-through rows scan the whole window)
        series = [self._at(t) for t in range(start, now)]
        live, processes = self.sessions_now()
        sessions = [
            {
                "sid": sid,
                "opened": info.opened,
                "last": info.last,
                "events": info.events,
                "item": info.last_item,
                "placement": info.placement,
                "connections": info.connections,
            }
            for sid, info in list(reversed(self.live.items()))[:SNAPSHOT_SESSIONS]
        ]
        return {
            "type": "snapshot",
            "now": now,
            "window_s": self.window_s,
            "series": {
                "t0": start,
                "events": [sum(s.events for s in at) for at in series],
                "p50_ms": [_ms(percentile((s.latency for s in at), 0.5)) for at in series],
                "p99_ms": [_ms(percentile((s.latency for s in at), 0.99)) for at in series],
            },
            "sessions": sessions,
            "live_sessions": live,
            "processes": processes,
            "model": self.model,
            "ctr": self.click_through(now),
        }

    # --- the other processes (feed_relay.py carries these) ------------------------------

    def beat(self) -> dict[str, Any]:
        """This process's figures for the pages on other processes: live sessions, the
        model, the last `BEAT_SECONDS` complete seconds, click-through totals."""
        now = int(self.clock())
        seconds = []
        for t in range(now - BEAT_SECONDS, now):
            second = self.seconds.get(t)
            if second is not None:
                seconds.append(
                    [
                        t,
                        second.events,
                        sorted(second.latency.items()),
                        [[m, p, n] for (m, p), n in second.impressions.items()],
                        [[m, p, n] for (m, p), n in second.clicks.items()],
                    ]
                )
        return {
            "sessions": len(self.live),
            "model": self.model,
            "seconds": seconds,
            "reported": [[m, p, r.impressions, r.clicks] for (m, p), r in self.reported.items()],
        }

    def heard_beat(self, origin: str, beat: dict[str, Any]) -> None:
        """Another process's `beat` (ValueError, TypeError, KeyError when malformed:
        then nothing of it is kept)."""
        now = self.clock()
        sessions, model = int(beat["sessions"]), str(beat["model"])
        seconds: dict[int, _Second] = {}
        for t, events, latency, impressions, clicks in beat["seconds"][:BEAT_SECONDS]:
            second = seconds[int(t)] = _Second(int(events))
            second.latency.update({int(b): int(n) for b, n in latency})
            second.impressions.update({(str(m), str(p)): int(n) for m, p, n in impressions})
            second.clicks.update({(str(m), str(p)): int(n) for m, p, n in clicks})
        reported = {
            (str(m), str(p)): Reported(int(i), int(c))
            for m, p, i, c in beat["reported"][:MAX_CTR_ROWS]
        }
        peer = self.peers.get(origin)
        if peer is None:
            for gone in [o for o, p in self.peers.items() if p.heard < now - self.window_s]:
                del self.peers[gone]
            if len(self.peers) >= MAX_PEERS:
                return
            peer = self.peers[origin] = Peer(heard=now)
        peer.heard, peer.sessions, peer.model, peer.reported = now, sessions, model, reported
        peer.seconds.update(seconds)
        for old in [t for t in peer.seconds if t <= int(now) - self.window_s]:
            del peer.seconds[old]

    def heard_entries(self, entries: list[dict[str, Any]], dropped: int) -> None:
        """Entries another process showed (already described there) go to the pages."""
        for sub in self.subscribers:
            sub.dropped += dropped
            for shown in entries:
                sub.put(shown)

    # --- subscribers ---------------------------------------------------------------------

    def subscribe(self) -> Subscriber | None:
        if len(self.subscribers) >= self.settings.feed_max_subscribers:
            return None
        sub = Subscriber(self.settings.feed_queue)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    async def start(self) -> None:
        self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="liverec-feed")

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None

    async def _tick(self) -> None:
        while True:
            now = self.clock()
            await asyncio.sleep(math.ceil(now - TICK_DELAY_S) + TICK_DELAY_S - now + 0.001)
            if not self.subscribers:
                continue
            try:
                frame = self.tick(int(self.clock()) - 1)  # the second just completed
            except Exception:  # never let the ticker die
                log.exception("feed tick failed")
                continue
            for sub in self.subscribers:
                sub.tick = frame
                sub.wake.set()


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


# --- operator access and the endpoint --------------------------------------------------------


def is_operator(conn: HTTPConnection, settings: Settings, token: str | None) -> bool:
    """The admin token when one is configured; otherwise only loopback clients.

    Without a token, a request forwarded by a proxy that is not in `trusted_proxies`
    (any of X-Forwarded-For, Forwarded, X-Real-IP) is refused even from loopback:
    there the proxy, not the client, is the peer. From a trusted proxy the client it
    names (gate.py) must be on loopback.
    """
    if settings.admin_token:
        return token is not None and hmac.compare_digest(
            token.encode(), settings.admin_token.encode()
        )
    forwarded = any(name in conn.headers for name in FORWARDING_HEADERS)
    if forwarded and not conn.scope.get(PEER_TRUSTED, False):
        return False
    host = conn.client.host if conn.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def feed_endpoint(ws: WebSocket) -> None:
    hub: FeedHub = ws.app.state.feed
    settings = hub.settings
    origins: OriginPolicy = ws.app.state.origins
    if not origins.allows(ws.headers, ws.scope["scheme"], ws.url.path):
        await ws.close(CLOSE_POLICY, "origin not allowed")
        return
    await ws.accept()
    try:
        raw = await asyncio.wait_for(ws.receive_text(), settings.hello_timeout_s)
        hello = json.loads(raw)
        token = hello.get("token") if isinstance(hello, dict) else None
        if not isinstance(hello, dict) or hello.get("type") != "hello":
            await ws.close(CLOSE_POLICY, "send a hello frame first")
            return
    except (TimeoutError, ValueError, KeyError, WebSocketDisconnect, RuntimeError):
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await ws.close(CLOSE_POLICY, "send a hello frame first")
        return
    if not is_operator(ws, settings, token if isinstance(token, str) else None):
        await ws.close(CLOSE_POLICY, "operator token required")
        return
    sub = hub.subscribe()
    if sub is None:
        await ws.close(CLOSE_TRY_LATER, "too many operator pages")
        return
    try:
        await ws.send_text(json.dumps(hub.snapshot()))
        writer = asyncio.ensure_future(_write(ws, sub))
        reader = asyncio.ensure_future(_read(ws))
        _, pending = await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in (writer, reader):
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await task
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        hub.unsubscribe(sub)


async def _read(ws: WebSocket) -> None:
    """Wait for the page to leave (pages send nothing after hello but pings)."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return


async def _write(ws: WebSocket, sub: Subscriber) -> None:
    while True:
        await sub.wake.wait()
        sub.wake.clear()
        while sub.entries:
            count = min(len(sub.entries), BATCH_MAX)
            entries = [sub.entries.popleft() for _ in range(count)]
            frame = {"type": "batch", "entries": entries, "dropped": sub.dropped}
            sub.dropped = 0
            await ws.send_text(json.dumps(frame))
        if sub.tick is not None:
            tick, sub.tick = sub.tick, None
            await ws.send_text(json.dumps(tick))
        await asyncio.sleep(BATCH_INTERVAL_S)  # coalesce: at most ~10 frames a second
