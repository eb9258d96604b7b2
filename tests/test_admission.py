"""Per-session state and admission, in process: the token bucket (rate, burst,
penalty) and what a live session keeps (its bounded tail, dedup ids, shown lists).
Clocks are plain numbers passed in: no sleeps."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest

from liverec.config import Settings
from liverec.errors import RateLimited
from liverec.frames import PONG
from liverec.live import (
    APPLIED_IDS_KEPT,
    SHOWN_KEPT,
    Connection,
    FeedEntry,
    LiveSession,
    TokenBucket,
)
from liverec.metrics import Metrics
from liverec.recommend.base import RecList
from liverec.recommend.online import OnlineRecommender
from liverec.sessions import SessionManager
from liverec.store import StoreLimits, open_store
from liverec.types import Event, Rec


def test_bucket_starts_full_and_refuses_past_its_burst() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=100.0)
    assert bucket.peek(100.0) == 3.0
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.peek(100.0) == 0.0


def test_bucket_refills_at_its_rate_up_to_the_burst() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    for _ in range(3):
        bucket.take(0.0)
    assert bucket.peek(0.25) == 0.5  # peeking takes nothing
    assert bucket.take(0.25) is False
    assert bucket.take(0.5) is True  # 1.0 token after half a second at 2/s
    assert bucket.take(0.5) is False
    assert bucket.peek(1000.0) == 3.0  # never more than the burst
    assert [bucket.take(1000.0) for _ in range(4)] == [True, True, True, False]


def test_bucket_below_zero_is_a_penalty_served_before_any_token() -> None:
    bucket = TokenBucket(rate=10.0, burst=5, now=0.0)
    bucket.tokens, bucket.last = -20.0, 0.0  # what SessionManager.penalize does
    assert bucket.peek(1.0) == -10.0
    assert bucket.take(2.0) is False  # back at zero: still no token
    assert bucket.take(2.1) is True


def event(n: int, item: str, action: str = "view", rating: float | None = None) -> Event:
    return Event(f"e{n}", "s", action, item, 0.0, rating=rating)


def test_live_session_keeps_a_bounded_tail_and_counts_every_item() -> None:
    live = LiveSession("s", None, [])
    assert live.position == 0
    for n in range(5):
        live.apply(event(n, f"i{n}"), max_items=3)
    assert live.items == ["i2", "i3", "i4"] and live.position == 5
    assert live.context() == (["i2", "i3", "i4"], 5)
    live.history = ["h1", "h2", "h3"]  # a returning user's earlier items come first
    assert live.context() == (["h1", "h2", "h3", "i2", "i3", "i4"], 8)
    assert LiveSession("t", None, ["a", "b"]).position == 2
    assert LiveSession("t", None, ["a", "b"], position=0).position == 0
    assert LiveSession("t", None, ["a", "b"], position=40).position == 40
    assert LiveSession("t", None, []).connections == 0
    one = LiveSession("s", None, [])
    for n in range(3):
        one.apply(event(n, f"i{n}"), max_items=1)
    assert one.items == ["i2"]
    # a sequence stored under a larger session_max_items is cut at the next event
    longer = LiveSession("s", None, [f"o{n}" for n in range(10)])
    longer.apply(event(10, "new"), max_items=3)
    assert longer.items == ["o8", "o9", "new"] and longer.position == 11


def test_live_session_records_purchases_and_ratings() -> None:
    live = LiveSession("s", "u", [])
    live.apply(event(1, "p", "purchase"), 10)
    live.apply(event(2, "r", "rate", rating=2.0), 10)
    for n, action in enumerate(("view", "click", "add_to_cart", "remove_from_cart")):
        live.apply(event(3 + n, action, action, rating=5.0), 10)  # a rating means nothing here
    assert live.purchases == {"p"} and live.ratings == {"r": 2.0}


def test_live_session_remembers_a_bounded_number_of_event_ids() -> None:
    live = LiveSession("s", None, [])
    for n in range(APPLIED_IDS_KEPT + 1):
        live.apply(event(n, "x"), 10)
    assert not live.seen("e0")  # the oldest id was forgotten
    assert live.seen("e1") and live.seen(f"e{APPLIED_IDS_KEPT}")
    assert len(live.applied) == APPLIED_IDS_KEPT


def test_shown_lists_are_bounded_and_their_ids_unique() -> None:
    live = LiveSession("s", None, [])
    recs = RecList([Rec("a", 1.0), Rec("b", 0.5)], "online")
    ids = [live.remember(recs, "home") for _ in range(SHOWN_KEPT + 1)]
    assert len(set(ids)) == len(ids)
    assert ids[0].endswith(".1") and ids[1].endswith(".2")
    assert ids[0] not in live.shown and ids[-1] in live.shown  # the oldest went
    assert len(live.shown) == SHOWN_KEPT
    assert SHOWN_KEPT == 16  # "the session's last 16 lists" (docs/protocol.md)
    shown = live.shown[ids[-1]]
    assert (shown.model, shown.placement, shown.items) == ("online", "home", ("a", "b"))
    assert shown.impression is False and shown.clicked == set()  # nothing reported yet
    assert live.remember(recs, None) and live.shown[next(reversed(live.shown))].placement == ""
    other = LiveSession("s", None, [])  # the same session elsewhere: another prefix
    assert other.remember(recs, None).split(".")[0] != ids[0].split(".")[0]


def test_a_new_connection_starts_with_the_settings_defaults() -> None:
    conn = Connection(FailingTransport(), Settings(default_k=7), Metrics(), "10.0.0.1")
    assert (conn.address, conn.encoding, conn.k, conn.placement) == ("10.0.0.1", "json", 7, None)
    assert (conn.session, conn.user_id, conn.bucket, conn.writer) == (None, None, None, None)
    assert (conn.limited, conn.closing, conn.failure) == (0, False, None)
    assert conn.outbox.capacity == Settings().outbound_queue and conn.outbox.frames == []


def test_feed_entry_defaults() -> None:
    entry = FeedEntry("open", "s", 1.0)
    assert (entry.acked, entry.duplicate) == (True, False)
    assert entry.event is entry.recs is entry.latency_s is entry.placement is None
    with pytest.raises(dataclasses.FrozenInstanceError):  # listeners share one entry
        entry.acked = False  # type: ignore[misc]


def test_per_session_state_has_no_instance_dicts() -> None:
    # One LiveSession per open session, up to 16 Shown each: no __dict__ per object.
    live = LiveSession("s", None, [])
    live.remember(RecList([Rec("a", 1.0)], "m"), None)
    for obj in (live, next(iter(live.shown.values())), FeedEntry("open", "s", 1.0)):
        assert not hasattr(obj, "__dict__"), type(obj).__name__


class FailingTransport:
    async def receive(self) -> str | bytes | None:
        return None

    async def send(self, data: str | bytes, more: bool = False) -> None:
        raise ConnectionResetError("peer gone")


async def test_a_failed_send_fails_later_pushes() -> None:
    conn = Connection(FailingTransport(), Settings(), Metrics(), "a")
    await conn.flush(5.0)  # nothing queued: returns at once
    conn.cancel_writer()  # and there is nothing to cancel
    assert conn.writer is None  # no writer task while nothing is queued
    conn.push(PONG)
    assert conn.writer is not None
    await conn.flush(5.0)
    assert conn.writer is None and isinstance(conn.failure, ConnectionResetError)
    with pytest.raises(ConnectionResetError):
        conn.push(PONG)


class SlowTransport:
    def __init__(self) -> None:
        self.sent: list[str | bytes] = []

    async def receive(self) -> str | bytes | None:
        return None

    async def send(self, data: str | bytes, more: bool = False) -> None:
        await asyncio.sleep(0)
        self.sent.append(data)


async def test_flush_waits_for_queued_frames_in_order() -> None:
    transport = SlowTransport()
    conn = Connection(transport, Settings(), Metrics(), "a")
    conn.encoding = "msgpack"
    for _ in range(3):
        conn.push(PONG)
    await conn.flush(5.0)
    assert transport.sent == [b"\x81\xa4type\xa4pong"] * 3 and conn.writer is None


def manager(**settings: Any) -> SessionManager:
    return SessionManager(
        Settings(**settings), open_store("memory://", StoreLimits()), OnlineRecommender()
    )


def test_address_buckets_are_lru_capped() -> None:
    m = manager(max_tracked_addresses=2)
    for address in ("a", "b", "a", "c"):  # "a" used again: "b" is the least recent
        assert m.address_allows(address)
    assert list(m.address_buckets) == ["a", "c"]


def test_address_bucket_is_shared_and_takes_as_many_tokens_as_events() -> None:
    m = manager(address_events_per_s=1e-9, address_events_burst=5)
    assert m.address_allows("a", 3)
    assert not m.address_allows("a", 3)  # 2 left: a batch of 3 is refused
    assert m.address_allows("b", 5)  # another address has its own bucket


def test_refusal_reasons_in_order() -> None:
    m = manager(max_connections=2, max_connections_per_address=1, address_events_burst=1)
    assert m.refusal("a") is None
    m.address_connections["a"] = 1
    assert m.refusal("a") == "too many connections from this address"
    assert m.refusal("b") is None
    assert m.address_allows("b") and m.refusal("b") == "this address is over its event rate"
    m.connections.update({object(), object()})  # type: ignore[arg-type]
    assert m.refusal("c") == "server at capacity"
    m.accepting = False
    assert m.refusal("c") == "server shutting down"


def test_penalty_empties_the_bucket_for_flood_penalty_s() -> None:
    m = manager(flood_penalty_s=10.0, address_events_per_s=5.0)
    assert m.penalty_left("a") == 0.0  # unknown address: no penalty
    m.penalize("a")
    assert 0.0 < m.penalty_left("a") <= 10.0
    assert m.address_buckets["a"].tokens == -50.0  # -(10 s x 5/s): served before any token
    assert not m.address_allows("a") and m.refusal("a") == "this address is over its event rate"
    off = manager(flood_penalty_s=0.0)
    off.penalize("a")
    assert off.penalty_left("a") == 0.0 and "a" not in off.address_buckets


# --- admission.py in detail: every limit at its boundary, with an injected clock -------


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def clocked(clock: Clock, **settings: Any) -> SessionManager:
    return SessionManager(
        Settings(**settings),
        open_store("memory://", StoreLimits()),
        OnlineRecommender(),
        clock=lambda: 1_700_000_000.0,
        monotonic=clock,
    )


def test_connection_caps_refuse_at_exactly_their_value() -> None:
    m = manager(max_connections=3, max_connections_per_address=2)
    m.connections.update({object(), object()})  # type: ignore[arg-type]
    assert m.refusal("a") is None  # 2 of 3 open: a third is admitted
    m.connections.add(object())  # type: ignore[arg-type]
    assert m.refusal("a") == "server at capacity"  # 3 of 3
    m.connections.add(object())  # type: ignore[arg-type]
    assert m.refusal("a") == "server at capacity"  # and above (a cap, not a point)
    m.connections.clear()
    m.address_connections["a"] = 1
    assert m.refusal("a") is None  # 1 of 2 from "a"
    m.address_connections["a"] = 2
    assert m.refusal("a") == "too many connections from this address"
    m.address_connections["a"] = 3
    assert m.refusal("a") == "too many connections from this address"
    assert m.refusal("b") is None  # counted per address


def test_connection_caps_hold_at_large_values() -> None:
    # Counts above 256 are distinct int objects: the caps compare values, not identity.
    cap = 300
    m = manager(max_connections=cap, max_connections_per_address=cap)
    m.connections.update(object() for _ in range(cap - 1))  # type: ignore[arg-type]
    assert m.refusal("a") is None
    m.connections.add(object())  # type: ignore[arg-type]
    assert m.refusal("a") == "server at capacity"
    m.connections.clear()
    m.address_connections["a"] = cap - 1
    assert m.refusal("a") is None
    m.address_connections["a"] += 1
    assert m.refusal("a") == "too many connections from this address"


def test_an_address_needs_one_whole_token_to_connect() -> None:
    clock = Clock()
    m = clocked(clock, address_events_per_s=2.0, address_events_burst=2)
    assert m.refusal("a") is None and "a" not in m.address_buckets  # asking takes nothing
    assert m.address_allows("a", 2)  # both its tokens, at t=0
    clock.now = 0.25  # half a token
    assert m.refusal("a") == "this address is over its event rate"
    clock.now = 0.5  # exactly one
    assert m.refusal("a") is None
    assert m.address_buckets["a"].peek(0.5) == 1.0  # the refusal check took nothing
    clock.now = 10.0  # full again: 2 tokens
    assert m.refusal("a") is None


def test_address_allows_takes_one_token_by_default() -> None:
    clock = Clock()
    m = clocked(clock, address_events_per_s=1.0, address_events_burst=2)
    assert m.address_allows("a") and m.address_allows("a")
    assert not m.address_allows("a")
    assert m.address_allows("a", 0)  # no events, nothing taken
    clock.now = 1.0  # one token back
    assert m.address_allows("a") and not m.address_allows("a")


def test_penalty_left_counts_down_in_seconds_from_the_penalty() -> None:
    clock = Clock(100.0)
    m = clocked(clock, flood_penalty_s=8.0, address_events_per_s=4.0)
    assert m.address_allows("a")  # the bucket is made at t=100
    clock.now = 150.0
    m.penalize("a")  # refills from now, not from the bucket's last use
    bucket = m.address_buckets["a"]
    assert (bucket.tokens, bucket.last) == (-32.0, 150.0)  # -(8 s x 4/s)
    assert m.penalty_left("a") == 8.0
    clock.now = 153.0
    assert m.penalty_left("a") == 5.0  # 20 tokens still owed, at 4/s
    clock.now = 153.5
    assert m.penalty_left("a") == 4.5
    clock.now = 158.0
    assert m.penalty_left("a") == 0.0  # served: the bucket is back at 0 ...
    assert m.refusal("a") == "this address is over its event rate"  # ... and still empty
    clock.now = 158.25
    assert m.refusal("a") is None  # its first token
    clock.now = 170.0
    assert m.penalty_left("a") == 0.0  # never negative
    assert m.penalty_left("b") == 0.0 and "b" not in m.address_buckets


def test_a_penalty_of_zero_is_off() -> None:
    clock = Clock(5.0)
    m = clocked(clock, flood_penalty_s=0.0, address_events_burst=3)
    assert m.address_allows("a")
    m.penalize("a")
    assert m.address_buckets["a"].tokens == 2.0  # untouched
    assert m.penalty_left("a") == 0.0


class ScriptedTransport:
    """Client frames handed out one per receive, each at its time on the clock, then
    None (the peer left); server frames out, decoded, in order."""

    def __init__(self, clock: Clock, script: list[tuple[float, Any]]) -> None:
        self.clock = clock
        self.script = [(at, json.dumps(f) if isinstance(f, dict) else f) for at, f in script]
        self.read = 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> str | bytes | None:
        if not self.script:
            return None
        self.clock.now, frame = self.script.pop(0)
        self.read += 1
        return frame  # type: ignore[no-any-return]

    async def send(self, data: str | bytes, more: bool = False) -> None:
        assert isinstance(data, str)
        self.sent.append(json.loads(data))


HELLO = {"type": "hello"}
PING = {"type": "ping"}


def rate_limited(ref: str | None = None, per_s: str = "50") -> dict[str, Any]:
    message = f"more than {per_s} frames/s; frame dropped, send it later"
    frame = {"type": "error", "code": "rate_limited", "message": message}
    return frame | ({"ref": ref} if ref is not None else {})


async def serve(m: SessionManager, transport: ScriptedTransport) -> None:
    await m.store.open()
    try:
        await m.serve(transport, "10.0.0.1")
    finally:
        await m.store.close()


async def test_a_flood_gets_three_errors_then_silence_then_1013_and_a_penalty() -> None:
    # events_burst=6 at a standing clock: hello and 5 pings take the 6 tokens; then
    # 6 frames are refused (3 told, 3 dropped silently) and the 7th refused closes.
    clock = Clock(10.0)
    m = clocked(clock, events_burst=6, flood_penalty_s=8.0, address_events_per_s=4.0)
    t = ScriptedTransport(clock, [(10.0, HELLO)] + [(10.0, PING)] * 5 + [(10.0, PING)] * 20)
    with pytest.raises(RateLimited):
        await serve(m, t)
    assert t.read == 1 + 5 + 7  # nothing read after the 7th refused frame
    assert [f["type"] for f in t.sent] == ["welcome", "recs"] + ["pong"] * 5 + ["error"] * 3
    assert t.sent[-3:] == [rate_limited()] * 3
    assert m.metrics.errors.get("rate_limited") == 6  # the silent drops are counted too
    assert m.penalty_left("10.0.0.1") == 8.0  # cut off: the address is penalised
    assert m.connections == set() and m.address_connections == {}


async def test_exactly_events_burst_refusals_keep_the_connection() -> None:
    clock = Clock()
    m = clocked(clock, events_burst=4)
    t = ScriptedTransport(clock, [(0.0, HELLO)] + [(0.0, PING)] * 3 + [(0.0, PING)] * 4)
    await serve(m, t)  # 4 refused in a row: still open; the peer leaves
    assert t.read == 8 and [f["type"] for f in t.sent][-4:] == ["pong", "error", "error", "error"]
    assert m.penalty_left("10.0.0.1") == 0.0  # not cut off: no penalty
    assert m.address_buckets["10.0.0.1"].tokens == 1000 - 4  # the 4 admitted frames


async def test_an_admitted_frame_ends_a_run_of_refusals() -> None:
    # 1 frame/s, burst 2: hello and a ping at t=0, then 2 refused (told); at t=1 one
    # token is back: admitted, the run is over, so the next run is told 3 times again
    # and is cut only after events_burst (2) further refusals.
    clock = Clock()
    m = clocked(clock, events_per_s=1.0, events_burst=2)
    script = [(0.0, HELLO), (0.0, PING), (0.0, PING), (0.0, PING), (1.0, PING)]
    script += [(1.0, PING)] * 3
    t = ScriptedTransport(clock, script)
    with pytest.raises(RateLimited):
        await serve(m, t)
    types = [f["type"] for f in t.sent]
    assert types == ["welcome", "recs", "pong", "error", "error", "pong", "error", "error"]
    assert t.read == 8
    assert t.sent[3] == rate_limited(per_s="1")


async def test_pings_before_hello_are_refused_the_same_way() -> None:
    clock = Clock()
    m = clocked(clock, events_burst=2, flood_penalty_s=1.0)
    t = ScriptedTransport(clock, [(0.0, PING)] * 2 + [(0.0, HELLO)] * 5)
    with pytest.raises(RateLimited):
        await serve(m, t)
    assert t.read == 5 and m.registry.sessions == {}  # the hellos were never read
    assert [f["type"] for f in t.sent] == ["pong", "pong", "error", "error"]
    assert m.penalty_left("10.0.0.1") == 1.0


async def test_a_refused_event_is_named_and_a_refused_malformed_frame_gets_no_parse_error() -> None:
    clock = Clock()
    m = clocked(clock, events_burst=3, events_per_s=2.5)
    event = {"type": "event", "id": "e7", "action": "view", "item_id": "a"}
    script = [(0.0, HELLO), (0.0, PING), (0.0, PING), (0.0, event), (0.0, "{"), (0.0, PING)]
    t = ScriptedTransport(clock, script)
    await serve(m, t)  # 3 refused: told, not cut
    told = [rate_limited("e7", "2.5"), rate_limited(None, "2.5"), rate_limited(None, "2.5")]
    assert t.sent[4:] == told
    assert m.metrics.errors.get("bad_json") == 0


async def test_the_address_bucket_refuses_when_the_connections_has_tokens() -> None:
    clock = Clock()
    m = clocked(clock, events_burst=10, address_events_burst=2)
    t = ScriptedTransport(clock, [(0.0, HELLO), (0.0, PING), (0.0, PING)])
    await serve(m, t)
    assert [f["type"] for f in t.sent] == ["welcome", "recs", "pong", "error"]


async def test_the_connections_bucket_is_asked_first() -> None:
    # A frame refused by the connection's own bucket takes nothing from the address's.
    clock = Clock()
    m = clocked(clock, events_burst=2, address_events_burst=10)
    t = ScriptedTransport(clock, [(0.0, HELLO), (0.0, PING), (0.0, PING), (0.0, PING)])
    await serve(m, t)
    assert [f["type"] for f in t.sent] == ["welcome", "recs", "pong", "error", "error"]
    assert m.address_buckets["10.0.0.1"].peek(0.0) == 8.0
