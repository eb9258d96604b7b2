"""Wire protocol v1: decode and validate client frames, encode server frames.

Owns: the schema of every frame on /v1/ws (and the bodies of the HTTP event API),
both encodings (JSON text frames, MessagePack binary frames), and the limits on
sizes and fields. Sans-I/O: bytes or str in, typed messages out, no asyncio.
Errors are raised as `ProtocolError` with a stable `code`; the server edge decides
what to do with them (an error frame, or a close code for abuse).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import msgpack

from .errors import FrameTooLarge, ProtocolError
from .types import ACTIONS, Rec

Encoding = Literal["json", "msgpack"]

PROTOCOL_VERSION = 1
# Ids are short opaque tokens. Printable ASCII without spaces, quotes, angle brackets
# or backslashes: safe to log, to use in Redis keys and to render in HTML.
_ID_RE = re.compile(r"[A-Za-z0-9._:@/+=#~$!*()\[\],;|^{}-]+")
_MAX_PLACEMENT = 64
_MAX_TOKEN = 4096
# Earliest and latest accepted client timestamps (epoch s): 2000-01-01 .. 2100-01-01.
_TS_MIN, _TS_MAX = 946684800.0, 4102444800.0


@dataclass(frozen=True, slots=True)
class Limits:
    max_frame_bytes: int = 16384
    max_id_chars: int = 128
    default_k: int = 10
    max_k: int = 100
    rating_min: float = 1.0
    rating_max: float = 5.0


@dataclass(frozen=True, slots=True)
class Hello:
    session_id: str | None
    user_token: str | None
    k: int
    placement: str | None


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


FEEDBACK_KINDS = ("impression", "click")


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
        return _parse_hello(obj, limits)
    if kind == "ping":
        return Ping()
    if kind == "feedback":
        return _parse_feedback(obj, limits)
    if kind is None:
        raise ProtocolError("missing_field", "frame has no 'type'")
    if not isinstance(kind, str):
        raise ProtocolError("bad_type", "'type' must be a string")
    raise ProtocolError("unknown_type", f"unknown frame type {kind[:32]!r}")


def _parse_hello(obj: dict[Any, Any], limits: Limits) -> Hello:
    session_id = _opt_id(obj, "session_id", limits)
    token = obj.get("user_token")
    if token is not None and (not isinstance(token, str) or len(token) > _MAX_TOKEN):
        raise ProtocolError("bad_field", f"'user_token' must be a string of <= {_MAX_TOKEN} chars")
    k = obj.get("k", limits.default_k)
    if isinstance(k, bool) or not isinstance(k, int):
        raise ProtocolError("bad_field", "'k' must be an integer")
    if not 1 <= k <= limits.max_k:
        raise ProtocolError("bad_field", f"'k' must be in 1..{limits.max_k}")
    placement = obj.get("placement")
    if placement is not None:
        if not isinstance(placement, str) or not 0 < len(placement) <= _MAX_PLACEMENT:
            raise ProtocolError("bad_field", f"'placement' must be a string of 1..{_MAX_PLACEMENT}")
        if not _ID_RE.fullmatch(placement):
            raise ProtocolError("bad_field", "'placement' has characters outside the id set")
    return Hello(session_id, token or None, k, placement)


def _parse_feedback(obj: dict[Any, Any], limits: Limits) -> Feedback:
    kind = obj.get("kind")
    if kind not in FEEDBACK_KINDS:
        raise ProtocolError("bad_field", "'kind' must be 'impression' or 'click'")
    recs_id = _req_id(obj, "recs_id", limits)
    item_id = _opt_id(obj, "item_id", limits)
    if kind == "click" and item_id is None:
        raise ProtocolError("missing_field", "a click needs 'item_id'")
    return Feedback(kind, recs_id, item_id)


def parse_event(obj: dict[Any, Any], limits: Limits) -> EventMsg:
    """Validate an event object (a WebSocket frame or one item of POST /v1/events)."""
    raw_id = obj.get("id")
    ref = raw_id[: limits.max_id_chars] if isinstance(raw_id, str) else None
    try:
        event_id = _req_id(obj, "id", limits)
        action = _action(obj.get("action"))
        if not action:  # an ignored GA4 name: nothing of it is used but its id
            return EventMsg(event_id, "", "-", None, None)
        item_id = _req_id(obj, "item_id", limits)
        ts = _opt_number(obj, "ts")
        if ts is not None and not _TS_MIN <= ts <= _TS_MAX:
            raise ProtocolError("bad_field", "'ts' must be epoch seconds between 2000 and 2100")
        rating = _opt_number(obj, "rating")
        if action == "rate":
            if rating is None:
                raise ProtocolError("missing_field", "a 'rate' event needs 'rating'")
            if not limits.rating_min <= rating <= limits.rating_max:
                raise ProtocolError(
                    "bad_field",
                    f"'rating' must be in {limits.rating_min:g}..{limits.rating_max:g}",
                )
        elif rating is not None:
            rating = None  # only meaningful for "rate"; ignored elsewhere
    except ProtocolError as exc:
        exc.ref = exc.ref or ref
        raise
    return EventMsg(event_id, action, item_id, ts, rating)


def _action(raw: Any) -> str:
    """Our action for `raw` (one of ACTIONS or a GA4 alias); "" for an ignored alias."""
    if raw is None:
        raise ProtocolError("missing_field", "event has no 'action'")
    if raw in ACTIONS:
        return str(raw)
    if isinstance(raw, str) and raw in GA4_ALIASES:
        return GA4_ALIASES[raw] or ""
    shown = raw[:32] if isinstance(raw, str) else type(raw).__name__
    raise ProtocolError(
        "bad_action",
        f"unknown action {shown!r}; expected one of {', '.join(ACTIONS)} or a GA4 e-commerce name",
    )


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
    if not _ID_RE.fullmatch(value):
        raise ProtocolError("bad_id", f"{name!r} has characters outside [A-Za-z0-9._:@/+=#~-...]")
    return value


def _req_id(obj: dict[Any, Any], name: str, limits: Limits) -> str:
    if name not in obj or obj[name] is None:
        raise ProtocolError("missing_field", f"missing {name!r}")
    return check_id(obj[name], name, limits)


def _opt_id(obj: dict[Any, Any], name: str, limits: Limits) -> str | None:
    value = obj.get(name)
    return None if value is None else check_id(value, name, limits)


def _opt_number(obj: dict[Any, Any], name: str) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError("bad_field", f"{name!r} must be a number")
    try:
        number = float(value)
    except OverflowError:  # a JSON integer with hundreds of digits
        raise ProtocolError("bad_field", f"{name!r} is out of range") from None
    if not math.isfinite(number):
        raise ProtocolError("bad_field", f"{name!r} must be finite")
    return number


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
