"""The published API documents: valid OpenAPI 3.1 and AsyncAPI, generated from the one
field table, served as generated, committed as generated; the decoder and the JSON
Schemas agree frame by frame; docs/protocol.md's example frames fit the schemas."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from liverec import frames, protocol, schema
from liverec.config import Settings
from liverec.errors import ProtocolError
from liverec.server import apidocs

from .servers import LiverecServer

ROOT = Path(__file__).resolve().parents[1]
SMALL = Settings(max_k=7, default_k=3, max_id_chars=40, rating_min=0.0, rating_max=10.0)


def validator(document: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    """A validator for components/schemas/<name>, its references resolved in `document`."""
    root = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return jsonschema.Draft202012Validator(root)


def test_openapi_is_valid_and_shows_the_settings_limits() -> None:
    document = apidocs.openapi(SMALL)
    validate(document)  # raises on any structural error
    params = document["paths"]["/v1/recommendations"]["get"]["parameters"]
    k = next(p for p in params if p["name"] == "k")["schema"]
    assert (k["maximum"], k["default"]) == (7, 3)
    assert validator(document, "events_body").is_valid({"events": [], "k": 3}) is False
    assert validator(document, "events_body").is_valid(
        {"events": [{"type": "event", "id": "e", "action": "view", "item_id": "a"}], "k": 7}
    )
    assert not validator(document, "events_body").is_valid({"events": [{"id": "e"}], "k": 8})
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if path not in ("/healthz", "/readyz"):  # the rate-exempt ones
                assert "429" in operation["responses"] or method in ("put", "delete"), path


def test_asyncapi_is_structurally_valid() -> None:
    document = apidocs.asyncapi(SMALL)
    assert document["asyncapi"] == "2.6.0"
    channel = document["channels"]["/v1/ws"]
    sent = [m["$ref"].rsplit("/", 1)[1] for m in channel["publish"]["message"]["oneOf"]]
    got = [m["$ref"].rsplit("/", 1)[1] for m in channel["subscribe"]["message"]["oneOf"]]
    assert sent == ["hello", "event", "ping", "feedback"]
    assert got == ["welcome", "ack", "recs", "error", "pong"]
    for name in sent + got:
        message = document["components"]["messages"][name]
        assert message["payload"]["$ref"] == f"#/components/schemas/{name}"
    for name, one in document["components"]["schemas"].items():
        jsonschema.Draft7Validator.check_schema(one)  # AsyncAPI 2 schemas are draft-07
        validator(document, name)  # and every reference resolves when used
    rating = document["components"]["schemas"]["event"]["allOf"][-1]["then"]
    assert rating["properties"]["rating"]["maximum"] == 10.0


@pytest.mark.parametrize("name", ["openapi", "asyncapi"])
def test_committed_documents_are_the_generated_ones(name: str) -> None:
    """Regenerate with `PYTHONPATH=src python -m liverec.server.apidocs docs`."""
    document = getattr(apidocs, name)(Settings())
    assert (ROOT / "docs" / f"{name}.json").read_text() == apidocs.dump(document)


@pytest.fixture(scope="module")
def small_server() -> Iterator[LiverecServer]:
    srv = LiverecServer("memory://", max_k=7, default_k=3, max_id_chars=40).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.parametrize("name", ["openapi", "asyncapi"])
def test_the_server_serves_its_own_documents(small_server: LiverecServer, name: str) -> None:
    status, served = small_server.get_json(f"/{name}.json")
    settings = Settings(max_k=7, default_k=3, max_id_chars=40)
    assert status == 200 and served == getattr(apidocs, name)(settings)


# --- the decoder and the schemas agree ---------------------------------------------------

LIMITS = protocol.Limits(max_id_chars=12, max_k=20, rating_min=1.0, rating_max=5.0)
SCHEMAS = {"components": {"schemas": schema.json_schemas(LIMITS)}}
text = st.text(alphabet=st.sampled_from('ab-_ <"é\x00'), max_size=16)
value = (
    st.none()
    | st.booleans()
    | st.integers(-5, 30)
    | st.floats(-10, 10, allow_nan=False)
    | st.sampled_from([946684799.5, 946684800, 4102444800, 4102444801, 1e300])
    | text
    | st.lists(st.integers(), max_size=2)
)
ids = st.sampled_from(["a", "ab-1", "x" * 12, "x" * 13, "a b", ""]) | value
numbers = st.sampled_from([0, 1, 3.5, 5, 5.5, 20, 21, 1.7e9]) | value


def _frame(
    frame_type: str, /, **fields: st.SearchStrategy[Any]
) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"type": st.just(frame_type)}, optional={**fields, "extra": value})


client_frames = st.one_of(
    _frame("hello", session_id=ids, user_token=ids, k=numbers, placement=ids),
    _frame(
        "event",
        id=ids,
        item_id=ids,
        ts=numbers,
        rating=numbers,
        action=st.sampled_from(["view", "rate", "view_item", "view_cart", "nope", 1]),
    ),
    _frame("ping"),
    _frame(
        "feedback",
        kind=st.sampled_from(["impression", "click", "view", None]),
        recs_id=ids,
        item_id=ids,
    ),
)


def _schema_quirk(frame: dict[str, Any]) -> bool:
    """JSON Schema's integer type admits 2.0 (the decoder wants an int)."""
    return isinstance(frame.get("k"), float) and frame["k"].is_integer()


@settings(max_examples=600)
@given(client_frames)
def test_decoder_accepts_exactly_what_the_schema_allows(frame: dict[str, Any]) -> None:
    if _schema_quirk(frame):
        return
    allowed = validator(SCHEMAS, frame["type"]).is_valid(frame)
    try:
        protocol.decode(json.dumps(frame), LIMITS)
    except ProtocolError as exc:
        assert not allowed, (frame, exc.code, exc.message)
    else:
        assert allowed, frame


events_bodies = st.fixed_dictionaries(
    {"events": st.lists(client_frames, max_size=3) | value},
    optional={"session_id": ids, "k": numbers},
)


@settings(max_examples=300)
@given(events_bodies)
def test_event_api_accepts_exactly_what_the_schema_allows(body: dict[str, Any]) -> None:
    if _schema_quirk(body):
        return
    allowed = validator(SCHEMAS, "events_body").is_valid(body)
    try:
        protocol.parse_events_body(body, LIMITS)
    except ProtocolError as exc:
        assert not allowed, (body, exc.code, exc.message)
    else:
        assert allowed, body


def test_every_server_frame_fits_its_schema() -> None:
    card = {"title": "T", "currency": "EUR", "price": 9.5, "in_stock": True}
    built = [
        frames.Welcome("s1", False, "online"),
        frames.Ack("e1"),
        frames.Ack("e1", duplicate=True),
        frames.Ack("e1", ignored=True),
        frames.Error("bad_id", "no", ref="e\ud800"),
        frames.Error("bad_json", "no"),
        frames.Recs("s1", None, (), "online"),
        frames.Recs("s1", "e1", ({"item_id": "a", "score": 0.5, **card},), "gru4rec-1", "a1.1"),
        frames.PONG,
    ]
    for frame in built:
        wire = json.loads(protocol.encode(frame.wire(), "json"))
        errors = [e.message for e in validator(SCHEMAS, frame.type).iter_errors(wire)]
        assert not errors, (wire, errors)
    assert not validator(SCHEMAS, "ack").is_valid({"type": "ack", "id": "e", "duplicate": False})


# --- docs/protocol.md's examples ---------------------------------------------------------


def test_protocol_doc_examples_fit_the_schemas() -> None:
    document = apidocs.asyncapi(Settings())
    doc = (ROOT / "docs" / "protocol.md").read_text()
    seen: dict[str, set[str]] = {"→": set(), "←": set()}
    lines = re.findall(r"^([→←]) (\{.*\})$", doc, re.MULTILINE)
    for (arrow, raw), (_, after) in zip(lines, [*lines[1:], ("", "{}")], strict=True):
        if "..." in raw:
            continue  # an elided frame
        frame = json.loads(raw)
        names = schema.CLIENT_FRAMES if arrow == "→" else schema.SERVER_FRAMES
        assert frame["type"] in names, raw
        errors = list(validator(document, frame["type"]).iter_errors(frame))
        refused = arrow == "→" and after.startswith('{"type":"error"')
        assert bool(errors) == refused, (raw, [e.message for e in errors])
        seen[arrow].add(frame["type"])
    assert seen["→"] >= {"hello", "event", "ping"} and seen["←"] >= {"welcome", "recs", "ack"}
    shown = re.findall(r'^← (\{"type":"recs".*\})$', doc, re.M)
    recs = [json.loads(r) for r in shown if "..." not in r]
    assert recs and all("recs_id" in r for r in recs)
