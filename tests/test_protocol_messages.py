"""The protocol decoder's exact error messages and its less travelled paths, by plain
function calls: what a client reads in an error frame, GA4 action names, lone
surrogates, and the field tables the decoder refuses to walk. (Added for the
survivors of the mutation run of protocol.py after its rewrite over schema.py.)"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from liverec import protocol, schema
from liverec.errors import ProtocolError

LIMITS = protocol.Limits(max_frame_bytes=4096, max_id_chars=64, default_k=10, max_k=100)


def error_of(frame: Any, limits: protocol.Limits = LIMITS) -> ProtocolError:
    raw = frame if isinstance(frame, str | bytes) else json.dumps(frame)
    with pytest.raises(ProtocolError) as info:
        protocol.decode(raw, limits)
    return info.value


def body_error(body: dict[str, Any]) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        protocol.parse_events_body(body, LIMITS)
    return info.value


def ev(**fields: Any) -> dict[str, Any]:
    return {"type": "event", "id": "e1", "action": "view", "item_id": "a", **fields}


def test_ga4_names_map_to_ours_or_are_ignored() -> None:
    msg, _ = protocol.decode(json.dumps(ev(action="view_item")), LIMITS)
    assert msg == protocol.EventMsg("e1", "view", "a", None, None) and not msg.ignored  # type: ignore[union-attr]
    added = protocol.decode(json.dumps(ev(action="add_to_cart", ts=1.7e9)), LIMITS)[0]
    assert added == protocol.EventMsg("e1", "add_to_cart", "a", 1.7e9, None)
    # an ignored name needs no item and keeps nothing but its id
    frame = {"type": "event", "id": "g1", "action": "view_cart", "ts": 1, "rating": 9}
    ignored = protocol.decode(json.dumps(frame), LIMITS)[0]
    assert ignored == protocol.EventMsg("g1", "", "-", None, None)
    assert ignored.ignored  # type: ignore[union-attr]


def test_bad_actions_name_what_was_sent() -> None:
    expected = "view, click, add_to_cart, remove_from_cart, purchase, rate"
    err = error_of(ev(action=[1]))
    assert (err.code, err.ref) == ("bad_action", "e1")
    assert (
        err.message == f"unknown action 'list'; expected one of {expected} or a GA4 e-commerce name"
    )
    assert error_of(ev(action={"view": 1})).message.startswith("unknown action 'dict'")
    assert error_of(ev(action="View")).message.startswith("unknown action 'View';")


def test_missing_field_messages() -> None:
    assert error_of(ev(id=None)).message == "missing 'id'"
    assert error_of(ev(action=None)).message == "missing 'action'"
    assert error_of(ev(item_id=None)).message == "a 'view' event needs 'item_id'"
    err = error_of({"type": "feedback", "kind": "click", "recs_id": "r"})
    assert err.message == "a 'click' feedback needs 'item_id'"
    err = error_of(ev(action="rate"))
    assert (err.code, err.message, err.ref) == (
        "missing_field",
        "a 'rate' event needs 'rating'",
        "e1",
    )


def test_range_messages_show_the_bounds() -> None:
    assert error_of({"type": "hello", "k": 0}).message == "'k' must be in 1..100"
    assert error_of({"type": "hello", "k": True}).message == "'k' must be an integer"
    assert error_of(ev(action="rate", rating=6)).message == "'rating' must be in 1..5"
    scale = protocol.Limits(rating_min=0.5, rating_max=10.0)
    assert error_of(ev(action="rate", rating=11), scale).message == "'rating' must be in 0.5..10"
    assert error_of(ev(ts=1)).message == "'ts' must be epoch seconds between 2000 and 2100"
    assert error_of(ev(ts="x")).message == "'ts' must be a number"
    assert error_of('{"type":"event","id":"e","action":"view","item_id":"a","ts":NaN}').message == (
        "'ts' must be finite"
    )


def test_text_and_name_messages() -> None:
    err = error_of({"type": "hello", "placement": ""})
    assert (err.code, err.message) == ("bad_field", "'placement' must be a string of 1..64")
    err = error_of({"type": "hello", "placement": "a b"})
    assert err.message == "'placement' has characters outside the id set"
    err = error_of(
        {"type": "hello", "user_token": "t" * 4097}, protocol.Limits(max_frame_bytes=9000)
    )
    assert err.message == "'user_token' must be a string of <= 4096 chars"
    assert error_of({"type": "feedback", "kind": "view", "recs_id": "r"}).message == (
        "'kind' must be 'impression' or 'click'"
    )


def test_events_body_messages() -> None:
    # a body that is neither a list of events nor one bare event
    others = ({**ev(), "type": t} for t in ("", "a", "ack", "click", "hello", "ping"))
    for body in ({}, {"session_id": "s"}, {"session_id": "s", "type": "event"}, *others):
        err = body_error(body)
        assert (err.code, err.message) == ("missing_field", "missing 'events'"), body
    # with a list of events, an 'action' beside it is an unknown field, ignored
    body = {"events": [ev(id="e2")], "action": "view", "id": "e9", "item_id": "b"}
    assert [e.id for e in protocol.parse_events_body(body, LIMITS)[2]] == ["e2"]
    assert body_error({"events": []}).message == "'events' must be a list of >= 1"
    assert body_error({"events": [ev()] * 101}).message == "at most 100 events per request"
    assert body_error({"events": [ev(), 3]}).message == "every event must be an object"


def test_lone_surrogates_are_refused_pairs_accepted() -> None:
    for raw in (
        '{"type":"event","id":"\\ud800","action":"view","item_id":"a"}',
        '{"type":"ping","x":["ok",["\\udfff"]]}',
        '{"type":"ping","x":{"\\uDBFF":1}}',
    ):
        err = error_of(raw)
        assert (err.code, err.message) == ("bad_text", "frame holds a string with a lone surrogate")
    pair = '{"type":"event","id":"e","action":"view","item_id":"a","x":"\\ud83d\\ude00"}'
    assert protocol.decode(pair, LIMITS)[0] == protocol.EventMsg("e", "view", "a", None, None)
    with pytest.raises(ProtocolError) as info:
        protocol.loads_json(b'{"events":[{"id":"\\ud800"}]}')
    assert (info.value.code, info.value.message) == (
        "bad_text",
        "body holds a string with a lone surrogate",
    )
    assert protocol.loads_json(b'{"a":"\\ud83d\\ude00"}') == {"a": "\U0001f600"}


def test_bad_json_messages() -> None:
    err = error_of("[" * 100_000 + "]" * 100_000, protocol.Limits(10**6))
    assert (err.code, err.message) == ("bad_json", "frame is not valid JSON: nested too deeply")
    err = error_of("{")
    assert err.code == "bad_json" and err.message.startswith("frame is not valid JSON: Expecting")


def test_error_frame_ref_is_made_encodable() -> None:
    frame = protocol.error("bad_id", "m", ref="e\ud800")
    assert frame == {"type": "error", "code": "bad_id", "message": "m", "ref": "e\\ud800"}
    assert protocol.error("c", "m", ref="") == {
        "type": "error",
        "code": "c",
        "message": "m",
        "ref": "",
    }


def test_tables_the_decoder_cannot_walk_are_refused() -> None:
    for kind in ("bool", "const", "object"):
        spec = schema.Spec("s", "", (schema.Field("f", kind, ""),))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=f"does not read '{kind}' fields"):
            protocol._plan(spec)
    # a conditional field must hang on a required enum (or action) field
    free = schema.Field("x", "text", "")
    for other in (
        schema.Field("kind", "text", "", required=True),
        schema.Field("kind", "enum", ""),
    ):
        spec = schema.Spec("s", "", (other, schema.Field("x", "id", "", when=("kind", ("a",)))))
        with pytest.raises(AssertionError):
            protocol._plan(spec)
    assert protocol._plan(schema.Spec("s", "", (free,)))[1][0][:4] == (
        "x",
        False,
        None,
        frozenset(),
    )


def test_the_field_tables_are_immutable() -> None:
    # every decoder and every published document reads the same module-level tables
    # (slotted, as the messages are)
    for spec in schema.SPECS.values():
        assert not hasattr(spec, "__dict__") and not hasattr(spec.fields[0], "__dict__")
        with pytest.raises(dataclasses.FrozenInstanceError):
            spec.name = "x"  # type: ignore[misc]
        for field in spec.fields:
            with pytest.raises(dataclasses.FrozenInstanceError):
                field.required = not field.required  # type: ignore[misc]


def test_a_table_with_open_bounds_is_walked_as_written() -> None:
    # fields this version's frames do not have (an unbounded list, a one-sided range)
    # are still walked by what their table says
    spec = schema.Spec(
        "s",
        "",
        (
            schema.Field("xs", "array", "", high=2),
            schema.Field("n", "int", "", low=1),
            schema.Field("x", "number", "", low=0, high="max_k"),
            schema.Field("y", "number", "", low=0, high=10),
        ),
    )
    plan = protocol._plan(spec)
    assert protocol.read_fields(plan, {"xs": [], "n": 10**9}, LIMITS) == [[], 10**9, None, None]
    assert protocol.read_fields(plan, {"x": 100, "y": 10}, LIMITS)[2:] == [100.0, 10.0]
    for obj, message in (
        ({"xs": "no"}, "'xs' must be a list of >= 0"),
        ({"xs": [1, 2, 3]}, "at most 2 xs per request"),
        ({"n": 0}, "'n' must be in range"),
        ({"x": 100.5}, "'x' must be in 0..100"),
        ({"y": -1}, "'y' must be in 0..10"),
    ):
        with pytest.raises(ProtocolError) as info:
            protocol.read_fields(plan, obj, LIMITS)
        assert info.value.message == message, obj


def test_ack_frames_exactly() -> None:
    assert protocol.ack("e", ignored=True) == {"type": "ack", "id": "e", "ignored": True}
    assert protocol.ack("e", duplicate=True) == {"type": "ack", "id": "e", "duplicate": True}


def test_a_clients_null_is_an_absent_optional_field_in_the_schemas() -> None:
    # the JSON Schema side of "null = absent" for every kind a client field may have
    fields = (
        schema.Field("type", "const", "", required=True, values=("s",)),
        schema.Field("flag", "bool", ""),
        schema.Field("act", "action", "", values=("view",)),
        schema.Field("xs", "array", "", item=schema.Field("", "text", "")),
        schema.Field("n", "int", "", required=True),
    )
    for incoming in (True, False):
        spec = schema.Spec("s", "", fields, incoming=incoming)
        shown = schema.json_schema(spec, protocol.Limits())["properties"]
        null = {"type": "null"}
        assert shown["type"] == {"const": "s"} and shown["n"] == {"type": "integer"}
        for name in ("flag", "act", "xs"):
            assert (null in shown[name].get("anyOf", ())) is incoming, (name, incoming)


def test_client_specs_are_incoming_and_found_by_name() -> None:
    assert all(spec.incoming for spec in schema.CLIENT_FRAMES.values())
    assert not any(spec.incoming for spec in schema.SERVER_FRAMES.values())
    name = "".join(["ki", "nd"])  # equal to, not the same object as, the table's name
    assert schema.FEEDBACK.field(name).kind == "enum"
    for spec in schema.SPECS.values():
        assert [spec.field(f.name) for f in spec.fields] == list(spec.fields), spec.name
