"""The wire protocol's one typed definition: every frame and HTTP body as a field table.

Owns: `Limits` (the configurable bounds), the field tables of the client frames
(`hello`, `event`, `ping`, `feedback`), of the server frames (`welcome`, `ack`,
`recs`, `error`, `pong`) and of the event API's bodies, and turning a table into a
JSON Schema (draft 2020-12, as OpenAPI 3.1 and AsyncAPI use it). The decoder
(`protocol.py`) validates client frames by walking these same tables, so what the
generated documents say is what is enforced. No I/O.

A bound is a number, or the name of a `Limits` attribute (read at decode time and
when a document is generated, so a server's documents show its own settings).

Why ~460 lines in one module: most of it is the tables themselves (one entry per field
of every frame and body, read top to bottom like docs/protocol.md); the walker that
turns them into JSON Schema is ~80 lines and must see every table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from .config import Settings
from .types import ACTIONS

PROTOCOL_VERSION = 1
# Ids are short opaque tokens. Printable ASCII without spaces, quotes, angle brackets
# or backslashes: safe to log, to use in Redis keys and to render in HTML.
ID_CHARS = r"[A-Za-z0-9._:@/+=#~$!*()\[\],;|^{}-]"
ID_RE = re.compile(ID_CHARS + "+")
MAX_PLACEMENT = 64
MAX_TOKEN = 4096
# Earliest and latest accepted client timestamps (epoch s): 2000-01-01 .. 2100-01-01.
TS_MIN, TS_MAX = 946684800.0, 4102444800.0
MAX_EVENTS_PER_REQUEST = 100


@dataclass(frozen=True, slots=True)
class Limits:
    max_frame_bytes: int = 16384
    max_id_chars: int = 128
    default_k: int = 10
    max_k: int = 100
    rating_min: float = 1.0
    rating_max: float = 5.0


def limits_of(settings: Settings) -> Limits:
    """The protocol's limits under a server's settings."""
    return Limits(
        settings.max_frame_bytes,
        settings.max_id_chars,
        settings.default_k,
        settings.max_k,
        settings.rating_min,
        settings.rating_max,
    )


# Google Analytics 4 e-commerce event names accepted in `action`: each is one of
# ours, or None for a name that says nothing about one item (acked, not recorded).
GA4_ALIASES: dict[str, str | None] = {
    "view_item": "view",
    "select_item": "click",
    "select_promotion": "click",
    "add_to_wishlist": "click",
    "add_to_cart": "add_to_cart",
    "remove_from_cart": "remove_from_cart",
    "purchase": "purchase",
    "view_item_list": None,
    "view_promotion": None,
    "view_cart": None,
    "begin_checkout": None,
    "add_shipping_info": None,
    "add_payment_info": None,
    "refund": None,
}
# `action` values that record an event (ours and the GA4 names mapped to one of ours).
RECORDED = tuple(dict.fromkeys([*ACTIONS, *(k for k, v in GA4_ALIASES.items() if v)]))
FEEDBACK_KINDS = ("impression", "click")

Kind = Literal[
    "id",  # an id: 1..max_id_chars of the id set (codes bad_field, id_too_long, bad_id)
    "name",  # the id set with a fixed length bound, every error bad_field
    "text",  # any string of at most `high` characters
    "int",  # an integer (not a bool) in low..high
    "number",  # a finite number (not a bool) in low..high
    "bool",
    "enum",  # one of `values` (bad_field)
    "action",  # one of ACTIONS or a GA4 name (bad_action); decodes to ours or ""
    "const",  # exactly values[0]
    "array",  # a list of `ref` objects, or of `item` fields; low..high entries
    "object",  # a `ref` object; with no ref, any object
]
Bound = float | str | None


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: Kind
    doc: str
    required: bool = False
    nullable: bool = False  # null is a value (server frames); in client frames null = absent
    low: Bound = None
    high: Bound = None
    values: tuple[Any, ...] = ()
    default: Bound = None
    ref: str | None = None
    item: Field | None = None
    # (field, values): the field is read (and, if `required`, required) only when that
    # field has one of the values; otherwise it is ignored, whatever it holds.
    when: tuple[str, tuple[str, ...]] | None = None
    range_message: str | None = None  # the bad_field message for a value out of low..high


@dataclass(frozen=True, slots=True)
class Spec:
    """One frame or body: its fields in the order the decoder checks them."""

    name: str
    doc: str
    fields: tuple[Field, ...]
    extra: bool = True  # unknown extra fields are ignored (JSON Schema: allowed)
    incoming: bool = False  # sent by clients: null stands for an absent optional field

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)


def bound(value: Bound, limits: Limits) -> float | None:
    """A bound's value under `limits`."""
    if value is None or isinstance(value, int | float):
        return value
    number: float = getattr(limits, value)
    return number


def _type(name: str) -> Field:
    return Field("type", "const", "frame type", required=True, values=(name,))


_ID = "id: 1..max_id_chars characters of printable ASCII without spaces, quotes, <, >, &, ?, %"

# --- client frames -------------------------------------------------------------------

HELLO = Spec(
    "hello",
    "First frame of a connection: opens or resumes a session.",
    (
        _type("hello"),
        Field("session_id", "id", "resume this session (one the server issued); " + _ID),
        Field("user_token", "text", "signed user token (HS256 JWT)", high=MAX_TOKEN),
        Field("k", "int", "recommendations per list", low=1, high="max_k", default="default_k"),
        Field("placement", "name", "where the widget sits (metrics label)", high=MAX_PLACEMENT),
    ),
    incoming=True,
)
EVENT = Spec(
    "event",
    "A shopper's action on an item; acked once durably recorded, then answered by recs.",
    (
        _type("event"),
        Field("id", "id", "client-made event id, unique within the session", required=True),
        Field(
            "action",
            "action",
            "one of ours or a GA4 e-commerce name",
            required=True,
            values=(*ACTIONS, *GA4_ALIASES),
        ),
        Field("item_id", "id", "the item acted on", when=("action", RECORDED), required=True),
        Field(
            "ts",
            "number",
            "client time, epoch seconds (server time when absent)",
            low=TS_MIN,
            high=TS_MAX,
            when=("action", RECORDED),
            range_message="'ts' must be epoch seconds between 2000 and 2100",
        ),
        Field(
            "rating",
            "number",
            "the rating of a 'rate' event",
            low="rating_min",
            high="rating_max",
            when=("action", ("rate",)),
            required=True,
        ),
    ),
    incoming=True,
)
# An event inside POST /v1/events' list: the same fields; its `type` is not read.
EVENT_ITEM = Spec("event_item", EVENT.doc, EVENT.fields[1:], incoming=True)
PING = Spec("ping", "Keep-alive; answered with pong.", (_type("ping"),), incoming=True)
FEEDBACK = Spec(
    "feedback",
    "The shopper saw (impression) or clicked (click) an item of a recs frame.",
    (
        _type("feedback"),
        Field("kind", "enum", "impression or click", required=True, values=FEEDBACK_KINDS),
        Field("recs_id", "id", "recs_id of the recs frame", required=True),
        Field("item_id", "id", "the clicked item", when=("kind", ("click",)), required=True),
    ),
    incoming=True,
)
CLIENT_FRAMES: dict[str, Spec] = {s.name: s for s in (HELLO, EVENT, PING, FEEDBACK)}

# --- server frames -------------------------------------------------------------------

REC_ITEM = Spec(
    "rec_item",
    "One recommended item; with a catalog, its card fields too.",
    (
        Field("item_id", "text", "the item", required=True),
        Field("score", "number", "the model's score (higher first)", required=True),
        Field("title", "text", "catalog title"),
        Field("price", "number", "catalog price, in currency units"),
        Field("currency", "text", "ISO 4217 code"),
        Field("image", "text", "image URL"),
        Field("url", "text", "product page URL"),
        Field("category", "text", "catalog category"),
        Field("in_stock", "bool", "catalog stock flag"),
    ),
)
WELCOME = Spec(
    "welcome",
    "The answer to hello: the session (issued or resumed).",
    (
        _type("welcome"),
        Field("session_id", "text", "the session id (keep it to resume)", required=True),
        Field("resumed", "bool", "the asked session was resumed", required=True),
        Field("model", "text", "the model version serving this session", required=True),
        Field("protocol", "const", "protocol version", required=True, values=(PROTOCOL_VERSION,)),
    ),
    extra=False,
)
ACK = Spec(
    "ack",
    "The event is durably recorded (or was already: duplicate; or is ignored).",
    (
        _type("ack"),
        Field("id", "text", "the event's id", required=True),
        Field("duplicate", "const", "the id was seen before", values=(True,)),
        Field("ignored", "const", "a GA4 name liverec does not use", values=(True,)),
    ),
    extra=False,
)
RECS = Spec(
    "recs",
    "A recommendation list, after hello and after every accepted event.",
    (
        _type("recs"),
        Field("session_id", "text", "the session ('-' for a cold-start list)", required=True),
        Field("for_event", "text", "the event it answers", required=True, nullable=True),
        Field("items", "array", "best first", required=True, ref="rec_item"),
        Field("model", "text", "the model version that made the list", required=True),
        Field("recs_id", "text", "names this list in feedback frames"),
    ),
    extra=False,
)
ERROR = Spec(
    "error",
    "A refused frame or request; a WebSocket connection stays open.",
    (
        _type("error"),
        Field("code", "text", "stable error code (docs/protocol.md)", required=True),
        Field("message", "text", "for people", required=True),
        Field("ref", "text", "the event id (or item id) it concerns"),
    ),
    extra=False,
)
PONG = Spec("pong", "The answer to ping.", (_type("pong"),), extra=False)
SERVER_FRAMES: dict[str, Spec] = {s.name: s for s in (WELCOME, ACK, RECS, ERROR, PONG)}

# --- HTTP bodies ---------------------------------------------------------------------

EVENTS_BODY = Spec(
    "events_body",
    "POST /v1/events: events for one session (one bare event object is accepted too).",
    (
        Field("session_id", "id", "a session the server issued; absent: a new one"),
        Field("k", "int", "recommendations in the reply", low=1, high="max_k", default="default_k"),
        Field(
            "events",
            "array",
            "in order",
            required=True,
            ref="event_item",
            low=1,
            high=MAX_EVENTS_PER_REQUEST,
        ),
    ),
    incoming=True,
)
_IDS = Field("", "text", "an event id")
EVENTS_REPLY = Spec(
    "events_reply",
    "What became of each event, and the recommendations after them.",
    (
        Field("session_id", "text", "the session (issued when none was sent)", required=True),
        Field("acked", "array", "ids recorded (or duplicates)", required=True, item=_IDS),
        Field("duplicates", "array", "ids seen before", required=True, item=_IDS),
        Field("ignored", "array", "ids of GA4 names not used", required=True, item=_IDS),
        Field(
            "not_recorded", "array", "ids the store refused: send again", required=True, item=_IDS
        ),
        Field("recs", "object", "the list after the events", required=True, ref="recs"),
    ),
    extra=False,
)
ERROR_BODY = Spec(
    "error_body",
    "Every JSON error reply of the HTTP API.",
    (Field("error", "object", "an error frame", required=True, ref="error"),),
    extra=False,
)
SESSION_REPLY = Spec(
    "session_reply",
    "A session's stored item sequence.",
    (
        Field("session_id", "text", "the session", required=True),
        Field(
            "items",
            "array",
            "item ids, oldest first",
            required=True,
            item=Field("", "text", "an item id"),
        ),
    ),
    extra=False,
)
HEALTH = Spec(
    "health",
    "The process is up.",
    (Field("status", "const", "", required=True, values=("ok",)),),
    extra=False,
)
READY = Spec(
    "ready",
    "Readiness: store reachable, model loaded, not shutting down.",
    (
        Field("ready", "bool", "all three", required=True),
        Field("store", "bool", "the store answers", required=True),
        Field(
            "model",
            "text",
            "the model version, null while none is ready",
            required=True,
            nullable=True,
        ),
        Field("accepting", "bool", "not shutting down", required=True),
    ),
    extra=False,
)
BODIES: dict[str, Spec] = {
    s.name: s
    for s in (
        EVENT_ITEM,
        REC_ITEM,
        EVENTS_BODY,
        EVENTS_REPLY,
        ERROR_BODY,
        SESSION_REPLY,
        HEALTH,
        READY,
    )
}
SPECS: dict[str, Spec] = {**CLIENT_FRAMES, **SERVER_FRAMES, **BODIES}

# --- JSON Schema -----------------------------------------------------------------------


def field_schema(f: Field, limits: Limits, ref_prefix: str) -> dict[str, Any]:
    """One field's JSON Schema (its full rules)."""
    low, high = bound(f.low, limits), bound(f.high, limits)
    out: dict[str, Any]
    if f.kind in ("id", "name"):
        most = limits.max_id_chars if f.kind == "id" else high
        out = {"type": "string", "minLength": 1, "maxLength": most, "pattern": f"^{ID_CHARS}+$"}
    elif f.kind == "text":
        out = {"type": "string"} if high is None else {"type": "string", "maxLength": int(high)}
    elif f.kind in ("int", "number"):
        out = {"type": "integer" if f.kind == "int" else "number"}
        if low is not None:
            out["minimum"] = low
        if high is not None:
            out["maximum"] = high
    elif f.kind == "bool":
        out = {"type": "boolean"}
    elif f.kind in ("enum", "action"):
        out = {"type": "string", "enum": list(f.values)}
    elif f.kind == "const":
        out = {"const": f.values[0]}
    elif f.kind == "array":
        if f.ref is not None:
            items = {"$ref": ref_prefix + f.ref}
        else:
            assert f.item is not None
            items = field_schema(f.item, limits, ref_prefix)
        out = {"type": "array", "items": items}
        if low is not None:
            out["minItems"] = int(low)
        if high is not None:
            out["maxItems"] = int(high)
    else:  # object
        out = {"$ref": ref_prefix + f.ref} if f.ref else {"type": "object"}
    default = bound(f.default, limits)
    if default is not None:
        out["default"] = default
    if f.nullable:
        out = {"anyOf": [out, {"type": "null"}]}
    if f.doc:
        out = (
            {"description": f.doc, **out}
            if "$ref" not in out
            else {"allOf": [out], "description": f.doc}
        )
    return out


def json_schema(
    spec: Spec, limits: Limits, ref_prefix: str = "#/components/schemas/"
) -> dict[str, Any]:
    """The JSON Schema of one frame or body under `limits`; references to other specs
    point at `ref_prefix` + their name."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    conditions: list[dict[str, Any]] = []
    for f in spec.fields:
        full = field_schema(f, limits, ref_prefix)
        if spec.incoming and not f.required and f.kind != "const":
            full = {"anyOf": [full, {"type": "null"}]}  # a client's null is an absent field
        if f.when is None:
            properties[f.name] = full
            if f.required:
                required.append(f.name)
            continue
        other, values = f.when
        shown = ", ".join(values)
        properties[f.name] = {"description": f"{f.doc}; ignored unless {other} is one of {shown}"}
        then: dict[str, Any] = {"properties": {f.name: full}}
        if f.required:
            then["required"] = [f.name]
        condition = {"properties": {other: {"enum": list(values)}}, "required": [other]}
        conditions.append({"if": condition, "then": then})
    out: dict[str, Any] = {
        "title": spec.name,
        "description": spec.doc,
        "type": "object",
        "properties": properties,
    }
    if required:
        out["required"] = required
    if not spec.extra:
        out["additionalProperties"] = False
    if conditions:
        out["allOf"] = conditions
    return out


def json_schemas(limits: Limits, ref_prefix: str = "#/components/schemas/") -> dict[str, Any]:
    """Every spec's JSON Schema, by name."""
    return {name: json_schema(spec, limits, ref_prefix) for name, spec in SPECS.items()}
