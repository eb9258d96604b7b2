"""The published API documents: OpenAPI 3.1 for HTTP, AsyncAPI 2.6 for /v1/ws.

Owns: building both documents from schema.py's field tables under a server's
settings (so the limits shown are the ones enforced), the routes that serve them
(`/openapi.json`, `/asyncapi.json`), and the command that writes the committed copies
(`python -m liverec.server.apidocs docs/`, with default settings).

Why ~440 lines in one module: it is the document, path by path (each operation's
parameters, bodies and every status it answers), built in one place so that a route
and its description are read together.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .. import __version__, catalog, schema
from ..config import Settings

REF = "#/components/schemas/"


def _obj(name: str) -> dict[str, Any]:
    return {"$ref": REF + name}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _obj(name)}}}


def _error(description: str) -> dict[str, Any]:
    return _json("error_body", description)


_TEXT = {"text/plain": {"schema": {"type": "string"}}}
_GATE_400 = "a Host outside allowed_hosts (text/plain), or a body cut off"
_GATE_429 = {
    "description": "over get_requests_per_s for this address (text/plain; Retry-After)",
    "content": _TEXT,
}


def _not_found(what: str) -> dict[str, Any]:
    return {
        "description": f"{what}; or a path no route matches (text/plain)",
        "content": {"application/json": {"schema": _obj("error_body")}, **_TEXT},
    }


def _bad_request(what: str) -> dict[str, Any]:
    return {
        "description": f"{what}; or {_GATE_400}",
        "content": {"application/json": {"schema": _obj("error_body")}, **_TEXT},
    }


def _catalog_schemas(settings: Settings) -> dict[str, Any]:
    text = {"type": "string"}

    def opt(most: int) -> dict[str, Any]:
        return {"anyOf": [{"type": "string", "maxLength": most}, {"type": "null"}]}

    attr = {"type": "string", "maxLength": catalog.MAX_ATTRIBUTE_TEXT}
    item = {
        "title": "catalog_item",
        "description": "One catalog item (as stored and served)",
        "type": "object",
        "properties": {
            "item_id": text,
            "title": {"type": "string", "maxLength": catalog.MAX_TITLE},
            "price": {"anyOf": [{"type": "number", "minimum": 0}, {"type": "null"}]},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "image": opt(catalog.MAX_URL),
            "url": opt(catalog.MAX_URL),
            "category": opt(catalog.MAX_CATEGORY),
            "in_stock": {"type": "boolean"},
            "description": opt(catalog.MAX_DESCRIPTION),
            "brand": opt(catalog.MAX_BRAND),
            "attributes": {
                "type": "object",
                "maxProperties": catalog.MAX_ATTRIBUTES,
                "additionalProperties": {
                    "anyOf": [attr, {"type": "array", "items": attr}],
                },
            },
        },
        "required": ["item_id", "title"],
    }
    return {
        "catalog_item": item,
        "catalog_put": {
            "description": "Items to upsert, all or none ({'items': [...]} or a bare list)",
            "type": "object",
            "properties": {
                "items": {
                    "type": "array",
                    "items": _obj("catalog_item"),
                    "minItems": 1,
                    "maxItems": settings.catalog_max_items_per_put,
                }
            },
            "required": ["items"],
        },
        "catalog_put_reply": {
            "type": "object",
            "properties": {"upserted": {"type": "integer"}, "version": {"type": "integer"}},
            "required": ["upserted", "version"],
        },
        "catalog_page": {
            "type": "object",
            "properties": {
                "version": {"type": "integer"},
                "items": {"type": "array", "items": _obj("catalog_item")},
            },
            "required": ["version", "items"],
        },
        "catalog_delete_reply": {
            "type": "object",
            "properties": {"removed": text, "version": {"type": "integer"}},
            "required": ["removed", "version"],
        },
    }


def openapi(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the HTTP API under `settings`."""
    limits = schema.limits_of(settings)
    schemas = schema.json_schemas(limits, REF)
    schemas.update(_catalog_schemas(settings))
    an_id = schema.Field("session_id", "id", "an id the server issued (items: the catalog's)")
    session_id = schema.field_schema(an_id, limits, REF)
    k_param = schema.field_schema(schema.HELLO.field("k"), limits, REF)
    user: list[dict[str, list[str]]] = [{}, {"userToken": []}]
    forbidden = _error(
        "identity refused: bad_token, token_expired, auth_disabled, or the "
        "session belongs to another user (session_forbidden)"
    )
    unavailable = _error("the store cannot be read (store_unavailable)")
    body_limit = limits.max_frame_bytes * 4
    session_param = {"name": "session_id", "in": "path", "required": True, "schema": session_id}
    item_param = {"name": "item_id", "in": "path", "required": True, "schema": session_id}
    admin: list[dict[str, list[str]]] = [{"adminToken": []}]
    not_admin = _error("not the operator: no admin token (or, with none set, not on loopback)")
    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                "summary": "The process is up (never rate limited)",
                "operationId": "healthz",
                "responses": {"200": _json("health", "up"), "400": _bad_request("never")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Store reachable, model loaded, not shutting down (never rate limited)",
                "operationId": "readyz",
                "responses": {
                    "200": _json("ready", "ready"),
                    "400": _bad_request("never"),
                    "503": _json("ready", "not ready"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus text exposition",
                "operationId": "metrics",
                "responses": {
                    "200": {"description": "metrics", "content": _TEXT},
                    "400": _bad_request("never"),
                    "429": _GATE_429,
                },
            }
        },
        "/v1/events": {
            "post": {
                "summary": "Record events for a session and get recommendations",
                "description": (
                    "Without session_id the server issues a session (keep the reply's "
                    "session_id). Every event takes one token of the address's bucket "
                    "(address_events_per_s, address_events_burst)."
                ),
                "operationId": "postEvents",
                "security": user,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": _obj("events_body"),
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        "events_reply", "every event recorded (or a duplicate, or ignored)"
                    ),
                    "400": _bad_request("invalid input (the error frame's code says what)"),
                    "403": forbidden,
                    "404": _error("unknown or expired session (unknown_session)"),
                    "413": _error(f"a body over {body_limit} bytes (body_too_large)"),
                    "429": _error("over the address's event rate (rate_limited); nothing recorded"),
                    "503": {
                        "description": "the store refused some events (listed in not_recorded: "
                        "send them again), or cannot be read (error body, nothing recorded)",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "anyOf": [_obj("events_reply"), _obj("error_body")],
                                }
                            }
                        },
                    },
                },
            }
        },
        "/v1/recommendations": {
            "get": {
                "summary": "A recs frame for a session, or the cold-start list",
                "operationId": "getRecommendations",
                "security": user,
                "parameters": [
                    {"name": "session_id", "in": "query", "schema": session_id},
                    {"name": "k", "in": "query", "schema": k_param},
                ],
                "responses": {
                    "200": _json("recs", "the list"),
                    "400": _bad_request("a bad session_id or k"),
                    "403": forbidden,
                    "404": _error("unknown or expired session"),
                    "429": _GATE_429,
                    "503": unavailable,
                },
            }
        },
        "/v1/sessions/{session_id}": {
            "get": {
                "summary": "A session's stored item sequence",
                "operationId": "getSession",
                "security": user,
                "parameters": [session_param],
                "responses": {
                    "200": _json("session_reply", "the session"),
                    "400": _bad_request("a bad session_id"),
                    "403": forbidden,
                    "404": _error("unknown or expired session"),
                    "429": _GATE_429,
                    "503": unavailable,
                },
            }
        },
        "/v1/catalog/items": {
            "get": {
                "summary": "Catalog items in id order, a page at a time",
                "operationId": "listItems",
                "parameters": [
                    {"name": "category", "in": "query", "schema": {"type": "string"}},
                    {"name": "after", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "default": 100,
                            "description": f"clamped to 1..{settings.catalog_list_limit}",
                        },
                    },
                ],
                "responses": {
                    "200": _json("catalog_page", "a page"),
                    "400": _bad_request("limit is not an integer"),
                    "429": _GATE_429,
                },
            },
            "put": {
                "summary": "Upsert catalog items (all or none)",
                "operationId": "putItems",
                "security": admin,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "anyOf": [
                                    _obj("catalog_put"),
                                    {"type": "array", "items": _obj("catalog_item"), "minItems": 1},
                                ]
                            },
                        }
                    },
                },
                "responses": {
                    "200": _json("catalog_put_reply", "upserted"),
                    "400": _bad_request("an invalid item (ref names it)"),
                    "403": not_admin,
                    "413": _error(f"a body over {settings.catalog_max_put_bytes} bytes"),
                    "503": _error("the store is unreachable"),
                },
            },
        },
        "/v1/catalog/items/{item_id}": {
            "get": {
                "summary": "One catalog item",
                "operationId": "getItem",
                "parameters": [item_param],
                "responses": {
                    "200": _json("catalog_item", "the item"),
                    "400": _bad_request("never"),
                    "404": _not_found("no such item (unknown_item)"),
                    "429": _GATE_429,
                },
            },
            "delete": {
                "summary": "Remove one catalog item",
                "operationId": "deleteItem",
                "security": admin,
                "parameters": [item_param],
                "responses": {
                    "200": _json("catalog_delete_reply", "removed"),
                    "400": _bad_request("never"),
                    "403": not_admin,
                    "404": _not_found("no such item (unknown_item)"),
                    "503": _error("the store is unreachable"),
                },
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "liverec HTTP API",
            "version": __version__,
            "description": (
                "Real-time session recommendations. The WebSocket protocol (/v1/ws) is "
                "described by /asyncapi.json. Limits shown are this server's settings."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "userToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "a user token signed (HS256) with the jwt_secret setting; "
                    "without one, requests are anonymous",
                },
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the admin_token setting; when none is set, catalog "
                    "writes are allowed from the loopback interface only",
                },
            },
        },
    }


def asyncapi(settings: Settings) -> dict[str, Any]:
    """The AsyncAPI 2.6 document of /v1/ws under `settings`."""
    limits = schema.limits_of(settings)
    schemas = schema.json_schemas(limits, REF)

    def messages(specs: dict[str, schema.Spec]) -> list[dict[str, Any]]:
        return [{"$ref": f"#/components/messages/{name}"} for name in specs]

    frames = {**schema.CLIENT_FRAMES, **schema.SERVER_FRAMES}
    return {
        "asyncapi": "2.6.0",
        "info": {
            "title": "liverec WebSocket protocol",
            "version": f"{schema.PROTOCOL_VERSION}.0.0",
            "description": (
                "One WebSocket per shopper. Frames are JSON text frames or MessagePack "
                "binary frames of the same objects; the server answers in the encoding "
                "of the client's latest frame. A client frame over "
                f"{limits.max_frame_bytes} bytes closes the socket with 1009. Every "
                "frame takes a token of the connection's and the address's buckets."
            ),
        },
        "defaultContentType": "application/json",
        "channels": {
            "/v1/ws": {
                "publish": {
                    "summary": "Frames a client sends (hello first)",
                    "message": {"oneOf": messages(schema.CLIENT_FRAMES)},
                },
                "subscribe": {
                    "summary": "Frames the server sends",
                    "message": {"oneOf": messages(schema.SERVER_FRAMES)},
                },
            }
        },
        "components": {
            "messages": {
                name: {
                    "name": name,
                    "summary": spec.doc,
                    "contentType": "application/json",
                    "payload": {"$ref": REF + name},
                }
                for name, spec in frames.items()
            },
            "schemas": schemas,
        },
    }


def routes(settings: Settings) -> list[BaseRoute]:
    """/openapi.json and /asyncapi.json, built once."""
    documents = {"openapi": openapi(settings), "asyncapi": asyncapi(settings)}

    def serve(name: str) -> Any:
        async def endpoint(request: Request) -> Response:
            return JSONResponse(documents[name])

        return endpoint

    return [Route(f"/{name}.json", serve(name)) for name in documents]


def dump(document: dict[str, Any]) -> str:
    """The committed form of a document."""
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> None:
    """Write docs/openapi.json and docs/asyncapi.json (default settings) into argv[0]."""
    out = Path(argv[0] if argv else "docs")
    settings = Settings()
    (out / "openapi.json").write_text(dump(openapi(settings)))
    (out / "asyncapi.json").write_text(dump(asyncapi(settings)))


if __name__ == "__main__":
    main(sys.argv[1:])
