"""The sans-I/O protocol codec: plain function calls, no sockets.

Property-based: whatever bytes or values arrive, decode() either returns a typed
message or raises ProtocolError — never anything else.
"""

from __future__ import annotations

import json

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liverec import protocol
from liverec.errors import FrameTooLarge, ProtocolError
from liverec.types import ACTIONS, Rec

LIMITS = protocol.Limits(max_frame_bytes=2048, max_id_chars=64, default_k=10, max_k=100)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)
fieldish = st.fixed_dictionaries(
    {"type": st.sampled_from(["hello", "event", "ping", "x", 3, None])},
    optional={
        "id": json_values | st.text(max_size=80),
        "action": st.sampled_from([*ACTIONS, "nope", 1]),
        "item_id": json_values | st.text(max_size=80),
        "ts": json_values | st.floats(1e9, 3e9),
        "rating": json_values,
        "k": json_values | st.integers(-5, 200),
        "session_id": json_values | st.text(max_size=80),
        "user_token": json_values,
        "placement": json_values,
    },
)


def _decodes_or_protocol_error(data: str | bytes) -> None:
    try:
        msg, encoding = protocol.decode(data, LIMITS)
    except ProtocolError as exc:
        assert exc.code and exc.message
        return
    assert isinstance(msg, protocol.Hello | protocol.EventMsg | protocol.Ping)
    assert encoding == protocol.encoding_of(data)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_arbitrary_bytes(data: bytes) -> None:
    _decodes_or_protocol_error(data)


@settings(max_examples=400)
@given(st.text(max_size=3000))
def test_arbitrary_text(data: str) -> None:
    _decodes_or_protocol_error(data)


@settings(max_examples=400)
@given(json_values | fieldish)
def test_arbitrary_values_in_both_encodings(value: object) -> None:
    _decodes_or_protocol_error(json.dumps(value))
    _decodes_or_protocol_error(msgpack.packb(value, use_bin_type=True))


@settings(max_examples=50)
@given(st.integers(min_value=10**309, max_value=10**400), st.sampled_from(["ts", "rating"]))
def test_huge_json_numbers(huge: int, key: str) -> None:
    # JSON integers beyond float range: an error frame, not an OverflowError
    event = {"type": "event", "id": "e", "action": "rate", "item_id": "i", "rating": 1, key: huge}
    with pytest.raises(ProtocolError) as info:
        protocol.decode(json.dumps(event), LIMITS)
    assert info.value.code == "bad_field"


@settings(max_examples=300)
@given(fieldish)
def test_accepted_events_respect_every_rule(value: dict[str, object]) -> None:
    try:
        msg, _ = protocol.decode(json.dumps(value), LIMITS)
    except ProtocolError:
        return
    if isinstance(msg, protocol.EventMsg):
        assert msg.action in ACTIONS
        for ident in (msg.id, msg.item_id):
            assert 0 < len(ident) <= LIMITS.max_id_chars and ident.isascii()
            assert not any(c in ident for c in " \"'<>&%?\\`")
        assert msg.action != "rate" or msg.rating is not None
    if isinstance(msg, protocol.Hello):
        assert 1 <= msg.k <= LIMITS.max_k


def test_frame_size_limit_is_checked_before_parsing() -> None:
    with pytest.raises(FrameTooLarge):
        protocol.decode("x" * 2049, LIMITS)
    with pytest.raises(FrameTooLarge):
        protocol.decode(b"\x00" * 2049, LIMITS)
    # multi-byte characters count as bytes
    with pytest.raises(FrameTooLarge):
        protocol.decode("é" * 1025, LIMITS)


def test_event_fields() -> None:
    msg, enc = protocol.decode(
        '{"type":"event","id":"e1","action":"rate","item_id":"sku:1/2","ts":1700000000,'
        '"rating":4.5,"extra":"ignored"}',
        LIMITS,
    )
    assert enc == "json"
    assert msg == protocol.EventMsg("e1", "rate", "sku:1/2", 1700000000.0, 4.5)
    msg, enc = protocol.decode(
        msgpack.packb({"type": "event", "id": "e2", "action": "view", "item_id": "a", "rating": 3}),
        LIMITS,
    )
    assert enc == "msgpack" and msg == protocol.EventMsg("e2", "view", "a", None, None)


def test_hello_defaults_and_bounds() -> None:
    msg, _ = protocol.decode('{"type":"hello"}', LIMITS)
    assert msg == protocol.Hello(None, None, 10, None)
    for bad in (
        '{"type":"hello","k":true}',
        '{"type":"hello","k":1.5}',
        '{"type":"hello","placement":""}',
        '{"type":"hello","session_id":""}',
    ):
        with pytest.raises(ProtocolError):
            protocol.decode(bad, LIMITS)


@pytest.mark.parametrize(
    "raw,code",
    [
        ("{", "bad_json"),
        ("null", "bad_frame"),
        ('{"type":"ping"}', None),
        ('{"type":"event","id":"a","action":"view","item_id":"x","ts":NaN}', "bad_field"),
        ('{"type":"event","id":"a","action":"view","item_id":"x","ts":100}', "bad_field"),
        ('{"type":"event","id":"a","action":"rate","item_id":"x","rating":1e9}', "bad_field"),
        ('{"type":"event","id":"' + "a" * 65 + '","action":"view","item_id":"x"}', "id_too_long"),
        ('{"type":"event","id":"a<b","action":"view","item_id":"x"}', "bad_id"),
    ],
)
def test_error_codes(raw: str, code: str | None) -> None:
    if code is None:
        assert isinstance(protocol.decode(raw, LIMITS)[0], protocol.Ping)
        return
    with pytest.raises(ProtocolError) as info:
        protocol.decode(raw, LIMITS)
    assert info.value.code == code


def test_server_frames_round_trip_in_both_encodings() -> None:
    frame = protocol.recs("s1", "e1", [Rec("a", 0.5), Rec("b", 0.25)], "online")
    assert json.loads(protocol.encode(frame, "json")) == frame
    assert msgpack.unpackb(protocol.encode(frame, "msgpack")) == frame
    assert protocol.error("bad_json", "m", "r") == {
        "type": "error",
        "code": "bad_json",
        "message": "m",
        "ref": "r",
    }
    assert protocol.ack("e", duplicate=True) == {"type": "ack", "id": "e", "duplicate": True}
