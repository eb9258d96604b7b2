"""HTTP routes: health, readiness, metrics, and the event API for socket-less clients.

Owns: `GET /healthz`, `GET /readyz`, `GET /metrics`, `POST /v1/events`,
`GET /v1/recommendations`, and mapping errors to HTTP statuses (the edge).
Validation is the wire protocol's (`protocol.parse_events_body`, `protocol.check_id`),
whose rules are schema.py's tables (also published at /openapi.json).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from .. import frames, protocol
from ..errors import Forbidden, ProtocolError, StoreUnavailable
from ..identity import verify_token
from ..sessions import SessionManager


def _manager(request: Request) -> SessionManager:
    manager: SessionManager = request.app.state.manager
    return manager


def error_response(status: int, code: str, message: str, ref: str | None = None) -> JSONResponse:
    return JSONResponse({"error": protocol.error(code, message, ref)}, status_code=status)


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is known to exceed `limit` bytes
    (never reads more than that into memory)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _status_for(exc: Exception) -> JSONResponse:
    if isinstance(exc, ProtocolError):
        status = 413 if exc.code == "frame_too_large" else 400
        return error_response(status, exc.code, exc.message, exc.ref)
    if isinstance(exc, Forbidden):
        return error_response(403, exc.code, exc.message)
    if isinstance(exc, StoreUnavailable):
        return error_response(503, "store_unavailable", "the profile store is unreachable")
    raise exc


def _user_id(request: Request, manager: SessionManager) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Forbidden("bad_token", "Authorization must be 'Bearer <token>'")
    return verify_token(token.strip(), manager.settings.jwt_secret)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    manager = _manager(request)
    store_ok = await manager.store.ping()
    model_ok = manager.recommender.is_ready()
    ready = store_ok and model_ok and manager.accepting
    body = {
        "ready": ready,
        "store": store_ok,
        "model": manager.recommender.version if model_ok else None,
        "accepting": manager.accepting,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


async def metrics(request: Request) -> Response:
    text = _manager(request).metrics.render()
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


async def post_events(request: Request) -> Response:
    """Body: {"session_id"?: str, "events": [event, ...]} (or one event with session_id)."""
    manager = _manager(request)
    limits = manager.limits
    limit = limits.max_frame_bytes * 4
    body = await read_body(request, limit)
    if body is None:
        return error_response(413, "body_too_large", f"request body over {limit} bytes")
    try:
        user_id = _user_id(request, manager)
        obj = protocol.loads_json(body)
        if not isinstance(obj, dict):
            raise ProtocolError("bad_frame", "body must be a JSON object")
        asked, k, events = protocol.parse_events_body(obj, limits)
        address = request.client.host if request.client is not None else ""
        if not manager.address_allows(address, len(events)):
            manager.metrics.errors.inc("rate_limited")
            return error_response(
                429, "rate_limited", "too many events from this address; send them later"
            )
        live = await manager.registry.open(asked, user_id, write=True)
        if live is None:
            return error_response(404, "unknown_session", "no such session (or it expired)")
        reply = await manager.handle_events(live, events, user_id, k, recs_if_ignored=True)
    except (ProtocolError, Forbidden, StoreUnavailable) as exc:
        return _status_for(exc)
    assert reply.recs is not None
    failed = [o.id for o in reply.outcomes if isinstance(o.receipt, frames.Error)]
    body_out: dict[str, Any] = {
        "session_id": live.session_id,
        "acked": [o.id for o in reply.outcomes if isinstance(o.receipt, frames.Ack)],
        "duplicates": [o.id for o in reply.outcomes if o.duplicate],
        "ignored": [o.id for o in reply.outcomes if o.event is None],
        "not_recorded": failed,
        "recs": reply.recs.wire(),
    }
    return JSONResponse(body_out, status_code=503 if failed else 200)


async def get_recommendations(request: Request) -> Response:
    manager = _manager(request)
    limits = manager.limits
    try:
        user_id = _user_id(request, manager)
        k = _k(request.query_params.get("k"), limits)
        raw_sid = request.query_params.get("session_id")
        session_id = None if raw_sid is None else protocol.check_id(raw_sid, "session_id", limits)
        live = await manager.registry.open(session_id, user_id, write=False)  # None: cold start
        if live is None:
            return error_response(404, "unknown_session", "no such session")
        frame = await manager.recs_for(live, k)
    except (ProtocolError, Forbidden, StoreUnavailable) as exc:
        return _status_for(exc)
    return JSONResponse(frame.wire())


async def get_session(request: Request) -> Response:
    """The stored state of one session: its owner check, then its item sequence."""
    manager = _manager(request)
    try:
        user_id = _user_id(request, manager)
        session_id = protocol.check_id(
            request.path_params["session_id"], "session_id", manager.limits
        )
        live = await manager.registry.open(session_id, user_id, write=False)
    except (ProtocolError, Forbidden, StoreUnavailable) as exc:
        return _status_for(exc)
    if live is None:
        return error_response(404, "unknown_session", "no such session")
    return JSONResponse({"session_id": session_id, "items": list(live.items)})


def _k(raw: Any, limits: protocol.Limits) -> int:
    if raw is None:
        return limits.default_k
    try:
        k = int(raw)
    except (TypeError, ValueError):
        raise ProtocolError("bad_field", "'k' must be an integer") from None
    if isinstance(raw, bool) or not 1 <= k <= limits.max_k:
        raise ProtocolError("bad_field", f"'k' must be in 1..{limits.max_k}")
    return k
