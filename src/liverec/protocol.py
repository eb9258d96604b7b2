"""Wire protocol v1: decode and validate client frames, encode server frames.

Owns: decoding every client frame on /v1/ws (and the body of POST /v1/events) by
walking the field tables of `schema.py` (the one definition, which also makes the
JSON Schemas of the published documents), both encodings (JSON text frames,
MessagePack binary frames), and the size limit. Sans-I/O: bytes or str in, typed
messages out, no asyncio.
Errors are raised as `ProtocolError` with a stable `code`; the server edge decides
what to do with them (an error frame, or a close code for abuse).

Why ~430 lines in one module: decoding and encoding share the id, text and number
checks, the size limit and both encodings; split, each half would import the other's
private helpers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import msgpack

from . import schema
from .errors import FrameTooLarge, ProtocolError
from .schema import FEEDBACK_KINDS as FEEDBACK_KINDS
from .schema import GA4_ALIASES as GA4_ALIASES
from .schema import ID_RE, Field, Spec
from .schema import PROTOCOL_VERSION as PROTOCOL_VERSION
from .schema import Limits as Limits
from .types import ACTIONS, Rec

Encoding = Literal["json", "msgpack"]


@dataclass(frozen=True, slots=True)
class Hello:
    session_id: str | None
    user_token: str | None
    k: int
    placement: str | None


@dataclass(frozen=True, slots=True)
class EventMsg:
    id: str
    action: str  # one of ACTIONS, or "" for an ignored GA4 name (see `ignored`)
    item_id: str
    ts: float | None
    rating: float | None

    @property
    def ignored(self) -> bool:
        """A GA4 name liverec does not use: acked, neither recorded nor answered."""
        return not self.action


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Feedback:
    """The shopper saw (impression) or clicked (click) an item of a recs frame."""

    kind: str
    recs_id: str
    item_id: str | None  # required for "click"


ClientMessage = Hello | EventMsg | Ping | Feedback


def encoding_of(data: str | bytes) -> Encoding:
    """Text frames carry JSON, binary frames MessagePack; replies use the same."""
    return "json" if isinstance(data, str) else "msgpack"


def decode(data: str | bytes, limits: Limits) -> tuple[ClientMessage, Encoding]:
    """Parse one WebSocket frame: str is JSON, bytes is MessagePack.

    Raises FrameTooLarge (abuse) or ProtocolError (bad frame, connection stays).
    """
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > limits.max_frame_bytes:
        raise FrameTooLarge(size, limits.max_frame_bytes)
    obj: Any
    if isinstance(data, str):
        encoding: Encoding = "json"
        obj = loads_json(data, "frame")
    else:
        encoding = "msgpack"
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises many types (ValueError, ExtraData, ...)
            raise ProtocolError("bad_msgpack", f"frame is not valid MessagePack: {exc}") from None
    return parse_message(obj, limits), encoding


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def loads_json(data: str | bytes, what: str = "body") -> Any:
    """JSON text (a frame or an HTTP body) to objects; ProtocolError when it is not
    JSON, nests too deeply, or holds a string that is not text (a lone surrogate
    such as "\\ud800", which no store, log or reply could encode)."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ProtocolError("bad_json", f"{what} is not valid JSON: {reason}") from None
    text = data if isinstance(data, str) else data.decode("utf-8", "replace")
    if _SURROGATE_ESCAPE.search(text) and not _is_text(obj):
        raise ProtocolError("bad_text", f"{what} holds a string with a lone surrogate")
    return obj


def _is_text(obj: Any) -> bool:
    """Every string in `obj` is encodable as UTF-8 (pairs of escapes are fine)."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def parse_message(obj: Any, limits: Limits) -> ClientMessage:
    """Validate a decoded frame object into a typed message."""
    if not isinstance(obj, dict):
        raise ProtocolError("bad_frame", "a frame must be an object")
    kind = obj.get("type")
    if kind == "event":
        return parse_event(obj, limits)
    if kind == "hello":
        session_id, token, k, placement = read_fields(_HELLO, obj, limits)
        return Hello(session_id, token or None, k, placement)
    if kind == "ping":
        return Ping()
    if kind == "feedback":
        return Feedback(*read_fields(_FEEDBACK, obj, limits))
    if kind is None:
        raise ProtocolError("missing_field", "frame has no 'type'")
    if not isinstance(kind, str):
        raise ProtocolError("bad_type", "'type' must be a string")
    raise ProtocolError("unknown_type", f"unknown frame type {kind[:32]!r}")


def parse_event(obj: dict[Any, Any], limits: Limits) -> EventMsg:
    """Validate an event object (a WebSocket frame or one item of POST /v1/events)."""
    try:
        event_id, action, item_id, ts, rating = read_fields(_EVENT, obj, limits)
    except ProtocolError as exc:
        raw_id = obj.get("id")
        exc.ref = exc.ref or (raw_id[: limits.max_id_chars] if isinstance(raw_id, str) else None)
        raise
    if not action:  # an ignored GA4 name: nothing of it is used but its id
        return EventMsg(event_id, "", "-", None, None)
    return EventMsg(event_id, action, item_id, ts, rating)


def parse_events_body(
    obj: dict[Any, Any], limits: Limits
) -> tuple[str | None, int, list[EventMsg]]:
    """POST /v1/events' body: (session_id or None, k, events). A body without
    'events' that is itself an event (has 'action') is a list of one."""
    if obj.get("events") is None and obj.get("type", "event") == "event" and "action" in obj:
        obj = {"session_id": obj.get("session_id"), "k": obj.get("k"), "events": [obj]}
    session_id, k, raw = read_fields(_EVENTS_BODY, obj, limits)
    events = []
    for item in raw:
        if not isinstance(item, dict):
            raise ProtocolError("bad_frame", "every event must be an object")
        events.append(parse_event(item, limits))
    return session_id, k, events


def check_id(value: Any, name: str, limits: Limits) -> str:
    """Validate one id (session, event or item) and return it."""
    if not isinstance(value, str):
        raise ProtocolError("bad_field", f"{name!r} must be a string")
    if not value:
        raise ProtocolError("bad_field", f"{name!r} must not be empty")
    if len(value) > limits.max_id_chars:
        raise ProtocolError(
            "id_too_long", f"{name!r} is longer than {limits.max_id_chars} characters"
        )
    if not ID_RE.fullmatch(value):
        raise ProtocolError("bad_id", f"{name!r} has characters outside [A-Za-z0-9._:@/+=#~-...]")
    return value


# --- the field tables, walked ------------------------------------------------------------
# Each spec of schema.py becomes a plan: per field (name, required, when, check), the
# check a function of (value, limits) chosen once by the field's kind. The table is the
# only statement of the rules; this walks it.

Check = Callable[[Any, str, Limits], Any]  # (value, field name, limits) -> decoded value
# (name, required, when-field or None, its values, default, check)
Step = tuple[str, bool, str | None, frozenset[str], schema.Bound, Check]


def read_fields(
    plan: tuple[Spec, tuple[Step, ...]], obj: dict[Any, Any], limits: Limits
) -> list[Any]:
    """The values of a spec's fields (besides `type`) in `obj`, checked, in table order;
    None (or the default) for an absent optional field, or a conditional one whose
    condition does not hold."""
    spec, steps = plan
    values: list[Any] = []
    append = values.append
    for name, required, when, when_values, default, check in steps:
        if when is not None and obj.get(when) not in when_values:
            append(None)
            continue
        value = obj.get(name)
        if value is not None:
            append(check(value, name, limits))
        elif required:
            if when is None:
                raise ProtocolError("missing_field", f"missing {name!r}")
            raise ProtocolError("missing_field", f"a {obj.get(when)!r} {spec.name} needs {name!r}")
        else:
            append(default if default is None else schema.bound(default, limits))
    return values


def _plan(spec: Spec) -> tuple[Spec, tuple[Step, ...]]:
    steps: list[Step] = []
    for f in spec.fields:
        if f.name == "type":
            continue
        when, values = None, frozenset[str]()
        if f.when is not None:  # a set: one hashed lookup per frame on the hot path
            other = spec.field(f.when[0])  # checked earlier, so its value is hashable
            assert other.kind in ("enum", "action") and other.required, f.name
            when, values = f.when[0], frozenset(f.when[1])
        steps.append((f.name, f.required, when, values, f.default, _check(f)))
    return spec, tuple(steps)


def _check(f: Field) -> Check:
    """The check of one present (not null) field, chosen by its kind."""
    low, high = f.low, f.high
    if f.kind == "id":
        return check_id
    if f.kind == "action":
        return _action
    if f.kind == "name":

        def check_name(value: Any, name: str, limits: Limits) -> Any:
            most = schema.bound(high, limits) or 0
            if not isinstance(value, str) or not 0 < len(value) <= most:
                raise ProtocolError("bad_field", f"{name!r} must be a string of 1..{most:g}")
            if not ID_RE.fullmatch(value):
                raise ProtocolError("bad_field", f"{name!r} has characters outside the id set")
            return value

        return check_name
    if f.kind == "text":

        def check_text(value: Any, name: str, limits: Limits) -> Any:
            most = schema.bound(high, limits)
            if not isinstance(value, str) or (most is not None and len(value) > most):
                raise ProtocolError("bad_field", f"{name!r} must be a string of <= {most:g} chars")
            return value

        return check_text
    if f.kind == "int":

        def check_int(value: Any, name: str, limits: Limits) -> Any:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ProtocolError("bad_field", f"{name!r} must be an integer")
            return _in_range(value, name, low, high, limits, None)

        return check_int
    if f.kind == "number":
        message = f.range_message

        def check_number(value: Any, name: str, limits: Limits) -> Any:
            return _in_range(_number(value, name), name, low, high, limits, message)

        if isinstance(low, int | float) and isinstance(high, int | float):  # fixed bounds
            shown = message or f"{f.name!r} must be in {low:g}..{high:g}"

            def check_fixed(value: Any, name: str, limits: Limits) -> Any:
                number = _number(value, name)
                if not low <= number <= high:
                    raise ProtocolError("bad_field", shown)
                return number

            return check_fixed

        return check_number
    if f.kind == "enum":
        allowed = f.values
        shown = " or ".join(repr(v) for v in allowed)

        def check_enum(value: Any, name: str, limits: Limits) -> Any:
            if value not in allowed:
                raise ProtocolError("bad_field", f"{name!r} must be {shown}")
            return value

        return check_enum
    if f.kind == "array":

        def check_array(value: Any, name: str, limits: Limits) -> Any:
            least, most = schema.bound(low, limits) or 0, schema.bound(high, limits)
            if not isinstance(value, list) or len(value) < least:
                raise ProtocolError("missing_field", f"{name!r} must be a list of >= {least:g}")
            if most is not None and len(value) > most:
                raise ProtocolError(f"too_many_{name}", f"at most {most:g} {name} per request")
            return value

        return check_array
    raise ValueError(f"{f.name!r}: the decoder does not read {f.kind!r} fields")


def _in_range(
    value: float,
    name: str,
    low: schema.Bound,
    high: schema.Bound,
    limits: Limits,
    message: str | None,
) -> Any:
    least, most = schema.bound(low, limits), schema.bound(high, limits)
    if (least is not None and value < least) or (most is not None and value > most):
        shown = f"{least:g}..{most:g}" if least is not None and most is not None else "range"
        raise ProtocolError("bad_field", message or f"{name!r} must be in {shown}")
    return value


def _action(raw: Any, name: str = "action", limits: Limits | None = None) -> str:
    """Our action for `raw` (one of ACTIONS or a GA4 alias); "" for an ignored alias."""
    if raw in ACTIONS:
        return str(raw)
    if isinstance(raw, str) and raw in GA4_ALIASES:
        return GA4_ALIASES[raw] or ""
    shown = raw[:32] if isinstance(raw, str) else type(raw).__name__
    raise ProtocolError(
        "bad_action",
        f"unknown action {shown!r}; expected one of {', '.join(ACTIONS)} or a GA4 e-commerce name",
    )


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError("bad_field", f"{name!r} must be a number")
    try:
        number = float(value)
    except OverflowError:  # a JSON integer with hundreds of digits
        raise ProtocolError("bad_field", f"{name!r} is out of range") from None
    if not math.isfinite(number):
        raise ProtocolError("bad_field", f"{name!r} must be finite")
    return number


_HELLO = _plan(schema.HELLO)
_EVENT = _plan(schema.EVENT)
_FEEDBACK = _plan(schema.FEEDBACK)
_EVENTS_BODY = _plan(schema.EVENTS_BODY)


# --- server frames --------------------------------------------------------------


def welcome(session_id: str, resumed: bool, model: str) -> dict[str, Any]:
    return {
        "type": "welcome",
        "session_id": session_id,
        "resumed": resumed,
        "model": model,
        "protocol": PROTOCOL_VERSION,
    }


def ack(event_id: str, duplicate: bool = False, ignored: bool = False) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "ack", "id": event_id}
    if duplicate:
        frame["duplicate"] = True
    if ignored:
        frame["ignored"] = True
    return frame


def recs(
    session_id: str,
    for_event: str | None,
    items: list[Rec],
    model: str,
    extra: dict[str, Any] | None = None,
    recs_id: str | None = None,
) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "recs",
        "session_id": session_id,
        "for_event": for_event,
        "items": [{"item_id": r.item_id, "score": round(r.score, 6)} for r in items],
        "model": model,
    }
    if recs_id is not None:
        frame["recs_id"] = recs_id
    if extra:
        frame.update(extra)
    return frame


def error(code: str, message: str, ref: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if ref is not None:  # echoed from the client: made encodable whatever it holds
        frame["ref"] = ref.encode("utf-8", "backslashreplace").decode("utf-8")
    return frame


def pong() -> dict[str, Any]:
    return {"type": "pong"}


def encode(frame: dict[str, Any], encoding: Encoding) -> str | bytes:
    """Serialise a server frame in the client's encoding."""
    if encoding == "json":
        return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)
    packed: bytes = msgpack.packb(frame, use_bin_type=True)
    return packed
