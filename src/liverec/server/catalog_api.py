"""The catalog API: `PUT/GET/DELETE /v1/catalog/items`.

Owns: those routes, their size limits (the `catalog_*` settings), and reading the
operator's credentials for writes: the `admin_token` setting as a bearer token, or,
when none is set, a client on the loopback interface (the check itself is
feed.is_operator).
"""

from __future__ import annotations

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .. import protocol
from ..catalog import Catalog, CatalogItem, parse_item
from ..errors import ProtocolError, StoreUnavailable
from ..sessions import SessionManager
from .feed import is_operator
from .http import error_response, read_body


def routes() -> list[BaseRoute]:
    """The catalog API's routes."""
    return [
        Route("/v1/catalog/items", put_items, methods=["PUT"]),
        Route("/v1/catalog/items", list_items, methods=["GET"]),
        Route("/v1/catalog/items/{item_id:path}", get_item, methods=["GET"]),
        Route("/v1/catalog/items/{item_id:path}", delete_item, methods=["DELETE"]),
    ]


# --- operator access (the check itself is feed.is_operator) --------------------------------


def bearer(conn: HTTPConnection) -> str | None:
    scheme, _, token = conn.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


# --- the catalog API ---------------------------------------------------------------------


def _state(request: Request) -> tuple[SessionManager, Catalog]:
    return request.app.state.manager, request.app.state.catalog


async def put_items(request: Request) -> Response:
    """Body: {"items": [item, ...]} or a bare list; upserts all or none."""
    manager, catalog = _state(request)
    if not is_operator(request, manager.settings, bearer(request)):
        return error_response(403, "forbidden", "catalog writes need the admin token")
    settings = manager.settings
    body = await read_body(request, settings.catalog_max_put_bytes)
    if body is None:
        message = f"request body over {settings.catalog_max_put_bytes} bytes"
        return error_response(413, "body_too_large", message)
    try:
        obj = protocol.loads_json(body)
        raw = obj.get("items") if isinstance(obj, dict) else obj
        if not isinstance(raw, list) or not raw:
            raise ProtocolError("missing_field", "body needs a non-empty 'items' list")
        if len(raw) > settings.catalog_max_items_per_put:
            message = f"at most {settings.catalog_max_items_per_put} per request"
            raise ProtocolError("too_many_items", message)
        items: dict[str, CatalogItem] = {}
        for entry in raw:
            if not isinstance(entry, dict):
                raise ProtocolError("bad_frame", "every item must be an object")
            item = parse_item(entry, manager.limits)
            items[item.item_id] = item
        version = await catalog.upsert(list(items.values()))
    except ProtocolError as exc:
        return error_response(400, exc.code, exc.message, exc.ref)
    except StoreUnavailable:
        return error_response(503, "store_unavailable", "the store is unreachable")
    return JSONResponse({"upserted": len(items), "version": version})


async def get_item(request: Request) -> Response:
    _, catalog = _state(request)
    item = catalog.get(request.path_params["item_id"])
    if item is None:
        return error_response(404, "unknown_item", "no such item in the catalog")
    return JSONResponse(item.to_dict())


async def list_items(request: Request) -> Response:
    """?category=&after=&limit= : items in id order, a page at a time."""
    manager, catalog = _state(request)
    category = request.query_params.get("category")
    after = request.query_params.get("after", "")
    most = manager.settings.catalog_list_limit
    try:
        limit = min(most, max(1, int(request.query_params.get("limit", "100"))))
    except ValueError:
        return error_response(400, "bad_field", "'limit' must be an integer")
    chosen = sorted(
        (i for i in catalog.items() if i.item_id > after and category in (None, i.category)),
        key=lambda i: i.item_id,
    )[:limit]
    return JSONResponse(
        {"version": catalog.version, "items": [i.to_dict() for i in chosen]},
    )


async def delete_item(request: Request) -> Response:
    manager, catalog = _state(request)
    if not is_operator(request, manager.settings, bearer(request)):
        return error_response(403, "forbidden", "catalog writes need the admin token")
    item_id = request.path_params["item_id"]
    if catalog.get(item_id) is None:
        return error_response(404, "unknown_item", "no such item in the catalog")
    try:
        version = await catalog.remove([item_id])
    except StoreUnavailable:
        return error_response(503, "store_unavailable", "the store is unreachable")
    return JSONResponse({"removed": item_id, "version": version})
