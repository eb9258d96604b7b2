"""The protocol decoder's rules at their boundaries, by plain function calls: each
limit accepted at its value and refused one past it, each field's error code, and the
exact server frames. (tests/test_protocol.py adds property-based checks.)"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import msgpack
import pytest

from liverec import protocol
from liverec.errors import FrameTooLarge, ProtocolError
from liverec.types import Rec

LIMITS = protocol.Limits(max_frame_bytes=2048, max_id_chars=64, default_k=10, max_k=100)


def decode(frame: dict[str, Any], limits: protocol.Limits = LIMITS) -> protocol.ClientMessage:
    return protocol.decode(json.dumps(frame), limits)[0]


def error_of(frame: Any, limits: protocol.Limits = LIMITS) -> ProtocolError:
    raw = frame if isinstance(frame, str | bytes) else json.dumps(frame)
    with pytest.raises(ProtocolError) as info:
        protocol.decode(raw, limits)
    return info.value


def ev(**fields: Any) -> dict[str, Any]:
    return {"type": "event", "id": "e1", "action": "view", "item_id": "a", **fields}


def test_limits_defaults() -> None:
    assert protocol.Limits() == protocol.Limits(16384, 128, 10, 100)


def test_frame_size_limit_is_inclusive() -> None:
    pad = 2048 - len(json.dumps({"type": "ping", "p": ""}))
    assert isinstance(
        protocol.decode(json.dumps({"type": "ping", "p": "x" * pad}), LIMITS)[0], protocol.Ping
    )
    with pytest.raises(FrameTooLarge):
        protocol.decode(json.dumps({"type": "ping", "p": "x" * (pad + 1)}), LIMITS)
    packed = msgpack.packb({"type": "ping"})
    assert protocol.decode(packed, protocol.Limits(max_frame_bytes=len(packed)))[1] == "msgpack"
    with pytest.raises(FrameTooLarge):
        protocol.decode(packed, protocol.Limits(max_frame_bytes=len(packed) - 1))
    # lone surrogates are counted, not a crash
    with pytest.raises(FrameTooLarge):
        protocol.decode("\ud800" * 700, LIMITS)


def test_encoding_follows_the_frame_kind() -> None:
    assert protocol.encoding_of("{}") == "json" and protocol.encoding_of(b"") == "msgpack"


def test_frame_type_errors() -> None:
    assert error_of("[1]").code == "bad_frame"
    assert error_of({"x": 1}).code == "missing_field"
    assert error_of({"type": None}).code == "missing_field"
    assert error_of({"type": 3}).code == "bad_type"
    err = error_of({"type": "t" * 100})
    assert err.code == "unknown_type" and "t" * 32 in err.message and "t" * 33 not in err.message
    assert error_of(b"\xc1").code == "bad_msgpack"
    assert error_of(msgpack.packb({1: "x"})).code == "bad_msgpack"  # map keys must be strings
    assert error_of("[" * 100_000 + "]" * 100_000, protocol.Limits(10**6)).code in (
        "bad_json",
        "bad_frame",
    )


def test_ids_at_their_limits() -> None:
    assert decode(ev(id="i" * 64)) == protocol.EventMsg("i" * 64, "view", "a", None, None)
    err = error_of(ev(id="i" * 65))
    assert err.code == "id_too_long" and err.ref == "i" * 64  # the ref is cut to the limit
    assert error_of(ev(item_id="i" * 65)).code == "id_too_long"
    for bad in ("a b", 'a"b', "a<b", "a\\b", "é", "a\nb"):
        assert error_of(ev(item_id=bad)).code == "bad_id", bad
    odd = "AZaz09._:@/+=#~$!*()[],;|^{}-"
    assert decode(ev(item_id=odd)).item_id == odd  # type: ignore[union-attr]
    assert error_of(ev(item_id="")).code == "bad_field"
    assert error_of(ev(item_id=5)).code == "bad_field"
    assert protocol.check_id("x", "n", LIMITS) == "x"


def test_event_fields_and_codes() -> None:
    assert error_of(ev(id=None)).code == "missing_field"
    err = error_of({"type": "event", "id": "r1", "item_id": "a"})
    assert err.code == "missing_field" and err.ref == "r1"
    assert error_of(ev(action=None)).code == "missing_field"
    err = error_of(ev(action="x" * 50))
    assert err.code == "bad_action" and "x" * 32 in err.message and "x" * 33 not in err.message
    assert "view, click" in err.message
    assert error_of(ev(action=7)).code == "bad_action"
    assert error_of(ev(item_id=None)).code == "missing_field"
    for action in ("view", "click", "add_to_cart", "remove_from_cart", "purchase"):
        assert decode(ev(action=action)).action == action  # type: ignore[union-attr]


def test_timestamps_between_2000_and_2100() -> None:
    assert decode(ev(ts=946684800)).ts == 946684800.0  # type: ignore[union-attr]
    assert decode(ev(ts=4102444800)).ts == 4102444800.0  # type: ignore[union-attr]
    assert error_of(ev(ts=946684799.9)).code == "bad_field"
    assert error_of(ev(ts=4102444800.1)).code == "bad_field"
    assert error_of(ev(ts=True)).code == "bad_field"
    assert error_of(ev(ts="1")).code == "bad_field"
    assert (
        error_of('{"type":"event","id":"e","action":"view","item_id":"a","ts":Infinity}').code
        == "bad_field"
    )
    err = error_of('{"type":"event","id":"e","action":"view","item_id":"a","ts":' + "9" * 400 + "}")
    assert err.code == "bad_field" and "out of range" in err.message


def test_ratings() -> None:
    """Ratings on the declared scale (default 1..5, ends included); a Limits scale."""
    rate = {"action": "rate"}
    assert decode(ev(**rate, rating=1)).rating == 1.0  # type: ignore[union-attr]
    assert decode(ev(**rate, rating=5)).rating == 5.0  # type: ignore[union-attr]
    assert decode(ev(**rate, rating=3.5)).rating == 3.5  # type: ignore[union-attr]
    for off in (0.999, 5.001, 1e6, -1e6, 0):
        assert error_of(ev(**rate, rating=off)).code == "bad_field", off
    assert error_of(ev(**rate)).code == "missing_field"
    assert error_of(ev(**rate, rating=True)).code == "bad_field"  # a bool is not a number
    assert error_of(ev(**rate, rating=10**400)).code == "bad_field"  # overflows a float
    assert decode(ev(rating=2)).rating is None  # type: ignore[union-attr]
    ten = protocol.Limits(rating_min=0.0, rating_max=10.0)
    assert decode(ev(**rate, rating=10), ten).rating == 10.0  # type: ignore[union-attr]
    assert decode(ev(**rate, rating=0), ten).rating == 0.0  # type: ignore[union-attr]
    with pytest.raises(ProtocolError):
        decode(ev(**rate, rating=10.5), ten)


def test_hello_fields_at_their_limits() -> None:
    assert decode({"type": "hello", "k": 1}) == protocol.Hello(None, None, 1, None)
    assert decode({"type": "hello", "k": 100}).k == 100  # type: ignore[union-attr]
    for k in (0, 101, "5", 2.0, False):
        assert error_of({"type": "hello", "k": k}).code == "bad_field", k
    big = protocol.Limits(max_frame_bytes=16384, max_id_chars=64)
    hello = decode(
        {"type": "hello", "session_id": "s1", "user_token": "t" * 4096, "placement": "p" * 64},
        big,
    )
    assert hello == protocol.Hello("s1", "t" * 4096, 10, "p" * 64)
    assert decode({"type": "hello", "user_token": ""}) == protocol.Hello(None, None, 10, None)
    for placement in ("p", "home", "p" * 63):
        assert decode({"type": "hello", "placement": placement}).placement == placement  # type: ignore[union-attr]
    assert error_of({"type": "hello", "user_token": "t" * 4097}, big).code == "bad_field"
    assert error_of({"type": "hello", "user_token": 5}).code == "bad_field"
    assert error_of({"type": "hello", "placement": "p" * 65}).code == "bad_field"
    assert error_of({"type": "hello", "placement": 5}).code == "bad_field"
    assert error_of({"type": "hello", "placement": "a b"}).code == "bad_field"
    assert error_of({"type": "hello", "session_id": "s" * 65}).code == "id_too_long"


def test_feedback() -> None:
    imp = decode({"type": "feedback", "kind": "impression", "recs_id": "r.1"})
    assert imp == protocol.Feedback("impression", "r.1", None)
    click = decode({"type": "feedback", "kind": "click", "recs_id": "r.1", "item_id": "a"})
    assert click == protocol.Feedback("click", "r.1", "a")
    assert error_of({"type": "feedback", "kind": "click", "recs_id": "r"}).code == "missing_field"
    assert error_of({"type": "feedback", "kind": "view", "recs_id": "r"}).code == "bad_field"
    assert error_of({"type": "feedback", "kind": "impression"}).code == "missing_field"


def test_server_frames_exactly() -> None:
    assert protocol.welcome("s", True, "online") == {
        "type": "welcome",
        "session_id": "s",
        "resumed": True,
        "model": "online",
        "protocol": 1,
    }
    assert protocol.ack("e") == {"type": "ack", "id": "e"}
    assert protocol.error("c", "m") == {"type": "error", "code": "c", "message": "m"}
    assert protocol.pong() == {"type": "pong"}
    frame = protocol.recs("s", None, [Rec("a", 0.12345678)], "m", {"x": 1}, "r.1")
    assert frame == {
        "type": "recs",
        "session_id": "s",
        "for_event": None,
        "items": [{"item_id": "a", "score": 0.123457}],
        "model": "m",
        "recs_id": "r.1",
        "x": 1,
    }
    assert "recs_id" not in protocol.recs("s", None, [], "m")
    assert protocol.encode({"a": "é", "b": 1}, "json") == '{"a":"é","b":1}'
    assert protocol.encode({"a": b"\x00"}, "msgpack") == b"\x81\xa1a\xc4\x01\x00"


def test_documented_msgpack_hello_example() -> None:
    # docs/protocol.md: hello with k=3 is these 15 bytes
    example = bytes.fromhex("82 a4 74 79 70 65 a5 68 65 6c 6c 6f a1 6b 03")
    assert msgpack.packb({"type": "hello", "k": 3}) == example
    assert protocol.decode(example, LIMITS) == (protocol.Hello(None, None, 3, None), "msgpack")


def test_messages_are_immutable_and_slotted() -> None:
    # Nothing is mutated after decoding (one path for an event), and a message costs
    # no per-instance dict.
    messages = [
        LIMITS,
        protocol.Hello(None, None, 10, None),
        protocol.EventMsg("e", "view", "a", None, None),
        protocol.Ping(),
        protocol.Feedback("impression", "r", None),
    ]
    for msg in messages:
        assert not hasattr(msg, "__dict__"), type(msg).__name__
        for field in dataclasses.fields(msg):
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(msg, field.name, None)


def test_events_body_at_its_limits() -> None:
    """POST /v1/events' body, by plain calls: 1..100 events, objects only, k's range,
    one bare event accepted as a list of one."""
    one = ev()
    assert protocol.parse_events_body({"events": [one]}, LIMITS)[:2] == (None, 10)
    sid, k, events = protocol.parse_events_body(
        {"session_id": "s", "k": 100, "events": [one]}, LIMITS
    )
    assert (sid, k, [e.id for e in events]) == ("s", 100, ["e1"])
    assert len(protocol.parse_events_body({"events": [one] * 100}, LIMITS)[2]) == 100
    bare = protocol.parse_events_body({**one, "session_id": "s"}, LIMITS)
    assert (bare[0], [e.item_id for e in bare[2]]) == ("s", ["a"])

    def code(body: dict[str, Any]) -> str:
        with pytest.raises(ProtocolError) as info:
            protocol.parse_events_body(body, LIMITS)
        return info.value.code

    assert code({"events": [one] * 101}) == "too_many_events"
    assert code({"events": []}) == "missing_field"
    assert code({"events": {"0": one}}) == "missing_field"
    assert code({}) == "missing_field"
    assert code({"type": "hello", "action": "view"}) == "missing_field"  # not an event
    assert code({"events": [one, "x"]}) == "bad_frame"
    assert code({"events": [one], "k": 0}) == "bad_field"
    assert code({"events": [one], "k": "5"}) == "bad_field"
    assert code({"events": [one], "session_id": "a b"}) == "bad_id"
    assert code({"events": [ev(id="x" * 65)]}) == "id_too_long"


def test_placement_is_never_empty() -> None:
    assert error_of({"type": "hello", "placement": ""}).code == "bad_field"
