"""The `liverec` command.

Owns: argument parsing and dispatch for every subcommand. `serve` maps each
Settings field to a flag (and its `LIVEREC_*` variable); the model commands
(train, evaluate, split) are registered by liverec.model_commands.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from . import __version__
from .config import Settings
from .errors import LiverecError
from .flags import Parser, add_setting_flags, given_settings
from .logs import setup_logging
from .progress import progress


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the recommendation server",
        description="Run the liverec server (WebSocket /v1/ws, HTTP API, web pages). Every "
        "flag is also read from its LIVEREC_* environment variable (flags win); `none` or "
        "`off` switches an optional limit off. Reference: docs/configuration.md.",
        usage="liverec serve [--check] [--SETTING VALUE ...]",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="check the settings (flags, environment), print them as JSON (secrets masked) "
        "and exit without serving",
    )
    add_setting_flags(p)
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from .server.guard import preflight

    settings = Settings.from_sources(None, given_settings(args))
    preflight(settings)
    if args.check:
        print(json.dumps(shown_settings(settings), indent=1))
        return 0
    setup_logging(settings.log_level, settings.log_format)

    if settings.workers > 1:
        from .server.workers import supervise

        return supervise(settings, functools.partial(_serve_one, settings))
    return _serve_one(settings)


def _serve_one(settings: Settings, sock: socket.socket | None = None) -> int:
    """One server process (on `sock` when a supervisor bound it)."""
    import uvicorn

    from .server import edge
    from .server.app import create_app
    from .server.gate import DirectSockets
    from .server.guard import StartupGuard
    from .server.ws import websocket_endpoint

    starlette = create_app(settings)
    guard = StartupGuard(starlette)
    app = DirectSockets(guard, starlette, settings, {"/v1/ws": websocket_endpoint})
    server = uvicorn.Server(uvicorn_config(app, settings))
    try:
        asyncio.run(edge.serve(server, settings, None if sock is None else [sock]))
    except SystemExit:  # uvicorn exits 3 when start-up failed: say why, in one line
        guard.raise_startup_error()
        raise
    return 0


def uvicorn_config(app: Any, settings: Settings, stock_http: bool = False) -> Any:
    """How `liverec serve` runs uvicorn. The edge protocol adds header/body/handshake
    deadlines and caps at accept (server/edge.py); forwarded headers are read by the
    app's gate for every route alike, so uvicorn's own X-Forwarded-For handling is off.
    `stock_http` (benchmarks only) runs uvicorn's plain h11 protocol instead."""
    import uvicorn

    from .server import edge
    from .server.wsproto import BatchingWSProtocol

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http="h11" if stock_http else edge.protocol_class(settings),
        backlog=2048 if stock_http else settings.accept_backlog,
        ws=BatchingWSProtocol,  # websockets-sansio, one write per event (wsproto.py)
        ws_max_size=settings.max_frame_bytes,
        ws_per_message_deflate=False,
        ws_ping_interval=settings.ping_interval_s,
        ws_ping_timeout=settings.ping_timeout_s,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) or 1,
        log_config=None,  # liverec.logs formats uvicorn's lines too
        log_level=None,
        lifespan="on",
        proxy_headers=False,
    )


SECRETS = ("jwt_secret", "admin_token")


def shown_settings(settings: Settings) -> dict[str, Any]:
    """The effective settings as JSON values, secrets masked."""
    from .store import mask_url

    shown = dataclasses.asdict(settings)
    for name in SECRETS:
        if shown[name] is not None:
            shown[name] = "***"
    shown["store_url"] = mask_url(settings.store_url)
    return shown


def _token(args: argparse.Namespace) -> int:
    from .identity import mint_token

    settings = Settings.from_env()
    secret = args.secret or settings.jwt_secret
    if not secret:
        raise LiverecError("no secret: set LIVEREC_JWT_SECRET or pass --secret")
    print(mint_token(args.user_id, secret, ttl_s=args.ttl))
    return 0


def _export_events(args: argparse.Namespace) -> int:
    from .store import limits_from, open_store
    from .store.export import export_events

    settings = Settings.from_env(store_url=args.store)
    store = open_store(settings.store_url, limits_from(settings))
    path = getattr(store, "path", None)  # an embedded file: read it, never create it
    if isinstance(path, str) and not Path(path).is_file():
        raise LiverecError(f"no store file at {path} (check --store or LIVEREC_STORE_URL)")
    with progress(None, "export-events", unit="ev", enabled=not args.quiet) as bar:
        count = asyncio.run(export_events(store, args.out, on_batch=bar.update))
    print(f"exported {count} events to {args.out}", file=sys.stderr)
    return 0


def _catalog_import(args: argparse.Namespace) -> int:
    from .catalog import import_items, read_items
    from .protocol import Limits
    from .store import limits_from, mask_url, open_store

    settings = Settings.from_env(store_url=args.store)
    items = read_items(args.file, Limits(max_id_chars=settings.max_id_chars))

    async def write(on_batch: Callable[[int], None]) -> int:
        store = open_store(settings.store_url, limits_from(settings))
        await store.open()
        try:
            return await import_items(store, items, on_batch)
        finally:
            await store.close()

    with progress(len(items), "catalog import", unit="items", enabled=not args.quiet) as bar:
        version = asyncio.run(write(bar.update))
    print(
        f"imported {len(items)} items into {mask_url(settings.store_url)} (catalog version "
        f"{version}); running servers pick them up within catalog_poll_s",
        file=sys.stderr,
    )
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from .simulate import SimConfig, run

    config = SimConfig(
        url=args.url,
        shoppers=args.shoppers,
        duration_s=args.duration,
        think_s=args.think_ms / 1000,
        seed=args.seed,
    )
    print(
        f"simulating {config.shoppers} shoppers for {config.duration_s:g} s on {config.url}",
        file=sys.stderr,
    )
    report = asyncio.run(run(config))
    print(json.dumps(report.to_dict(), indent=None if args.json else 2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="liverec", description="Real-time recommendations.")
    parser.add_argument("--version", action="version", version=f"liverec {version()}")
    sub = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", required=True),
    )
    _serve_parser(sub)
    t = sub.add_parser("token", help="print a signed user token (development)")
    t.add_argument("user_id")
    t.add_argument("--secret", default=None, help="HS256 secret (default LIVEREC_JWT_SECRET)")
    t.add_argument("--ttl", type=float, default=3600.0, help="lifetime, seconds")
    t.set_defaults(func=_token)
    e = sub.add_parser("export-events", help="write the event log as JSONL")
    e.add_argument("--store", default=None, help="store URL (default LIVEREC_STORE_URL)")
    e.add_argument("--out", required=True, help="output file (.jsonl or .jsonl.gz)")
    e.add_argument("--quiet", action="store_true", help="no progress")
    e.set_defaults(func=_export_events)
    c = sub.add_parser("catalog", help="manage the item catalog")
    csub = c.add_subparsers(dest="catalog_command", required=True)
    ci = csub.add_parser(
        "import",
        help="upsert items from a JSONL or CSV file (optionally .gz) into the store",
        description="Columns/fields: item_id (or id), title, price, currency, image "
        "(or image_url), url (or link), category, in_stock, description. All lines are "
        "validated before anything is written.",
    )
    ci.add_argument("file", help="items file: .jsonl, .ndjson or .csv (optionally .gz)")
    ci.add_argument("--store", default=None, help="store URL (default LIVEREC_STORE_URL)")
    ci.add_argument("--quiet", action="store_true", help="no progress")
    ci.set_defaults(func=_catalog_import)
    s = sub.add_parser(
        "simulate",
        help="drive synthetic shoppers through a local server's socket (demo catalog)",
    )
    s.add_argument("--url", default="ws://127.0.0.1:8000/v1/ws", help="server socket (loopback)")
    s.add_argument("--shoppers", type=int, default=20, help="concurrent shoppers (at most 500)")
    s.add_argument("--duration", type=float, default=30.0, help="seconds to run (at most 3600)")
    s.add_argument("--think-ms", type=float, default=500.0, help="mean pause between events")
    s.add_argument("--seed", type=int, default=1, help="random seed (shoppers are reproducible)")
    s.add_argument("--json", action="store_true", help="print the summary on one line")
    s.set_defaults(func=_simulate)
    from .model_commands import register as register_model_commands

    register_model_commands(sub)
    from .learn.commands import register as register_learn_commands

    register_learn_commands(sub)
    from .demo_model import register as register_demo_model

    register_demo_model(sub)
    return parser


def version() -> str:
    """The installed distribution's version (the source tree's when not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("liverec")
    except PackageNotFoundError:
        return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except LiverecError as exc:
        print(f"liverec: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file named on the command line: missing, unreadable, ...
        where = f": {exc.filename}" if exc.filename else ""
        print(f"liverec: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
