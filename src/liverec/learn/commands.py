"""The `liverec learn` and `liverec models` subcommands.

Owns: their flags and what they print.

    liverec learn [--store URL] [--models DIR] [--once] [--learn-mode finetune|retrain]
                  [--learn-min-events N] [--learn-interval-s S] [... every learn_* setting]
    liverec models list [--models DIR] [--json]
    liverec models show VERSION [--models DIR]
    liverec models rollback [VERSION] [--reason TEXT] [--models DIR] [--store URL]

`learn` runs until SIGINT/SIGTERM (with `--once`: reads the whole log, runs one
round, prints its result as JSON and exits). `models list --json` prints the
registry records, oldest first, each with `current` true for the served one.
Commands raise `LiverecError`s; `liverec.cli.main` prints them and exits with 2.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
from dataclasses import fields

from ..config import Settings
from ..flags import add_setting_flags, given_settings
from ..logs import setup_logging
from .registry import Registry


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `learn` and `models` to the `liverec` command."""
    lp = subparsers.add_parser(
        "learn",
        help="follow the event log, train candidates, promote the better (continuous learning)",
        description="Follow the store's event log (a consumer group), train a candidate "
        "after learn_min_events new events or every learn_interval_s, compare it with the "
        "served model on the latest held-out sessions and promote it into the models/ "
        "registry when it is not worse by more than learn_margin. See docs/learning.md.",
    )
    lp.add_argument("--store", dest="store_url", default=argparse.SUPPRESS, help="store URL")
    lp.add_argument(
        "--models",
        dest="model_path",
        default=argparse.SUPPRESS,
        help="the models/ registry to write",
    )
    lp.add_argument("--once", action="store_true", help="one round on the whole log, then exit")
    names = [f.name for f in fields(Settings) if f.name.startswith("learn_")]
    add_setting_flags(lp, [n for n in names if n != "learn_in_serve"], groups=False)
    lp.set_defaults(func=cmd_learn)

    mp = subparsers.add_parser("models", help="list the models/ registry, show, roll back")
    msub = mp.add_subparsers(dest="models_command", required=True)
    ls = msub.add_parser("list", help="every version, oldest first; * marks the served one")
    ls.add_argument("--json", action="store_true", help="print the records as JSON")
    sh = msub.add_parser("show", help="one version's record as JSON")
    sh.add_argument("version")
    rb = msub.add_parser(
        "rollback",
        help="serve an earlier version again (default: the one served before the current)",
        description="Point models/CURRENT at VERSION, or at the latest version served before "
        "the current one that was not rolled back. Serving processes switch within "
        "model_poll_s, or at once when --store names their shared store (Redis, Redis "
        "Cluster): the rollback is announced there. The version rolled back from is marked "
        "rolled-back.",
    )
    rb.add_argument("version", nargs="?", default=None)
    rb.add_argument("--reason", default="", help="recorded in the registry")
    rb.add_argument(
        "--store", default=None, help="announce the change on this shared store's pub/sub"
    )
    for p in (ls, sh, rb):
        p.add_argument(
            "--models", default=None, help="the models/ registry [LIVEREC_MODEL_PATH or models]"
        )
    ls.set_defaults(func=cmd_models_list)
    sh.set_defaults(func=cmd_models_show)
    rb.set_defaults(func=cmd_models_rollback)


def cmd_learn(args: argparse.Namespace) -> int:
    from .learner import run

    settings = Settings.from_sources(None, given_settings(args))
    setup_logging(settings.log_level, settings.log_format)
    result = asyncio.run(run(settings, once=args.once))
    if args.once and result is not None:
        print(json.dumps(dataclasses.asdict(result)))
    return 0


def _registry(args: argparse.Namespace) -> Registry:
    return Registry(args.models or Settings.from_env().model_path or "models")


def cmd_models_list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    current = registry.current()
    records = registry.records()
    if args.json:
        print(json.dumps([{**r.to_dict(), "current": r.version == current} for r in records]))
        return 0
    rows = [["", "version", "status", "mode", "events", "cases", "R@20 cand/live", "reason"]]
    for r in records:
        m = r.metrics
        cand, live = m.get("candidate") or {}, m.get("live") or {}
        rows.append(
            [
                "*" if r.version == current else "",
                r.version,
                r.status,
                r.mode,
                str(r.window.get("events", "")),
                str(m.get("cases", "")),
                f"{_num(cand.get('recall@20'))}/{_num(live.get('recall@20'))}",
                r.reason,
            ]
        )
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]))
    if not records:
        print(f"(no versions in {registry.root})")
    return 0


def _num(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-"


def cmd_models_show(args: argparse.Namespace) -> int:
    registry = _registry(args)
    record = registry.get(args.version)
    print(json.dumps({**record.to_dict(), "current": record.version == registry.current()}))
    return 0


def cmd_models_rollback(args: argparse.Namespace) -> int:
    registry = _registry(args)
    before = registry.current()
    record = registry.rollback(args.version, reason=args.reason or "rollback by operator")
    print(f"serving {record.version} (was {before})")
    if args.store:
        asyncio.run(_announce(args.store, record.version))
    return 0


async def _announce(url: str, version: str) -> None:
    """Tell the servers sharing the store at `url` (they poll otherwise)."""
    from ..notify import announce_model
    from ..store import StoreLimits, open_store

    store = open_store(url, StoreLimits())
    await store.open()
    try:
        if store.shared_log:
            await announce_model(store, version)
    finally:
        await store.close()
