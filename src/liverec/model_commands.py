"""The offline model subcommands of `liverec`: `train`, `evaluate` and `split`.

Owns: their flags, what they print and what they write. Other tools script
against these, so the contract is fixed:

    liverec train --data FILE --out DIR [--format FMT] [--preset NAME] [--set KEY=VALUE ...]
                  [--family gru4rec|vsknn|hybrid|auto] [--valid-days 1] [--valid-fraction 0.08]
    liverec evaluate [--model DIR] --train FILE --test FILE [--baselines pop,iknn,vsknn,markov]
                     [--json] [--serving-rules] [--format FMT] [--k 5,10,20]
    liverec split --data FILE --out DIR [--days 1 | --fraction F] [--format FMT]

`evaluate --json` prints one JSON object: model name -> {recall@K, mrr@K, coverage@K
(fractions), cases, sessions, seconds, ...}; the model directory is reported
under its family's name ("gru4rec", "vsknn", "hybrid"). All scorers are evaluated
on the same cases: items are indexed by the model's ItemIndex when a model is
given (baselines are fitted with it), else by the training file's. `split` writes
DIR/train.tsv, DIR/test.tsv (`SessionId ItemId Time`) and DIR/split.json.

Commands raise `LiverecError`s; `liverec.cli.main` prints them and exits with 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import LiverecError
from .model.baselines import BASELINES, make_baseline
from .model.data import ItemIndex, Sessions, fingerprint
from .model.formats import FORMATS, detect_format, load_sessions, write_sessions
from .model.split import last_fraction, time_split
from .recommend import FAMILY_CHOICES
from .recommend.family import VALID_FRACTION

if TYPE_CHECKING:
    from .model.evaluate import StepScorer

# torch is imported by the command handlers only (evaluate, checkpoint, train): the
# `liverec` command builds this parser for every subcommand, `serve` included.


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `train`, `evaluate` and `split` to the `liverec` command."""
    t = subparsers.add_parser(
        "train",
        help="train a GRU4Rec session model",
        description="Train GRU4Rec (session-parallel mini-batches, sampled negatives) on a "
        "session file and write a checkpoint directory (model.safetensors + meta.json). "
        "Defaults are the tuned Diginetica parameters; --preset rsc15 gives the "
        "YooChoose ones; --set overrides single parameters.",
    )
    t.add_argument("--data", required=True, help="training session file")
    t.add_argument("--out", required=True, help="checkpoint directory to write")
    t.add_argument("--format", default="auto", choices=FORMATS, help="layout of --data")
    _add_columns(t)
    t.add_argument("--preset", default="diginetica", help="parameter preset [diginetica]")
    t.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter, e.g. --set n_epochs=3 --set model.layers=100",
    )
    t.add_argument("--epochs", type=int, default=None, help="shorthand for --set n_epochs=N")
    t.add_argument("--parent", default=None, help="version of the model this one refines")
    t.add_argument("--test", default=None, help="evaluate on this file after each epoch")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument(
        "--family",
        default="gru4rec",
        choices=FAMILY_CHOICES,
        help="model family: gru4rec, vsknn, hybrid (weight chosen on validation) or auto "
        "(the best of the three on validation) [default: gru4rec]",
    )
    t.add_argument(
        "--valid-days",
        default=1.0,
        type=float,
        help="hybrid/auto: the validation split, the last DAYS days of --data [default: 1]",
    )
    t.add_argument(
        "--valid-fraction",
        default=VALID_FRACTION,
        type=float,
        help="hybrid/auto on data without timestamps: the validation split, the last "
        f"FRACTION of the sessions in file order [default: {VALID_FRACTION:g}]",
    )
    t.set_defaults(func=cmd_train)

    e = subparsers.add_parser(
        "evaluate",
        help="offline next-item evaluation of a model and baselines",
        description="Recall@K, MRR@K and coverage on a test file, GRU4Rec protocol: every "
        "event after the first of a session is a target ranked against all items, ties "
        "count against it, test items unknown to the model are dropped.",
    )
    e.add_argument("--model", default=None, help="GRU4Rec checkpoint directory (optional)")
    e.add_argument("--train", default=None, help="training file (fits the baselines)")
    e.add_argument("--test", required=True, help="test file")
    e.add_argument(
        "--baselines",
        default=",".join(BASELINES),
        type=_baselines,
        help=f"comma-separated baselines to run, or 'none' [default: {','.join(BASELINES)}]",
    )
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument(
        "--serving-rules", action="store_true", help="never rank the current item (as served)"
    )
    e.add_argument("--format", default="auto", choices=FORMATS, help="layout of both files")
    _add_columns(e)
    e.add_argument("--k", default=(5, 10, 20), type=_ks, help="cut-offs [default: 5,10,20]")
    e.add_argument("--batch-size", default=512, type=int, help="sessions evaluated in parallel")
    e.add_argument("--progress", action="store_true", help="report progress on stderr")
    e.set_defaults(func=cmd_evaluate)

    s = subparsers.add_parser(
        "split",
        help="temporal train/test split of a session file",
        description="Sessions starting in the last DAYS days form the test set; test items "
        "unseen in training are dropped, then sessions shorter than 2 (both sides).",
    )
    s.add_argument("--data", required=True, help="session file")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--days", default=1.0, type=float, help="test window, days [default: 1]")
    s.add_argument(
        "--fraction",
        default=None,
        type=float,
        help="instead of --days: the last fraction of the sessions in file order (untimed data)",
    )
    s.add_argument("--format", default="auto", choices=FORMATS, help="layout of --data")
    _add_columns(s)
    s.add_argument("--min-length", default=2, type=int, help="shortest training session kept")
    s.add_argument(
        "--by",
        default="start",
        choices=("start", "end"),
        help="a session's time for --days: its first or last event [default: start]",
    )
    s.set_defaults(func=cmd_split)


def _add_columns(p: argparse.ArgumentParser) -> None:
    """Which fields or columns hold the session, the item and the time (jsonl, csv, tsv)."""
    p.add_argument("--session-col", default=None, metavar="NAME", help="session id field/column")
    p.add_argument("--item-col", default=None, metavar="NAME", help="item id field/column")
    p.add_argument("--time-col", default=None, metavar="NAME", help="timestamp field/column")


def _load(path: str | Path, args: argparse.Namespace) -> Sessions:
    """A session file in the layout and with the columns the flags name."""
    return load_sessions(
        path,
        fmt=args.format,
        session_col=args.session_col,
        item_col=args.item_col,
        time_col=args.time_col,
    )


def cmd_train(args: argparse.Namespace) -> int:
    from .model.config import configure
    from .model.train import train

    fixed = {} if args.epochs is None else {"n_epochs": args.epochs}
    try:
        config = configure(args.preset, args.overrides, **fixed)
    except ValueError as exc:
        raise LiverecError(f"--preset/--set: {exc}") from None
    sessions = _load(args.data, args)
    _log(f"training on {sessions.n_events} events in {sessions.n_sessions} sessions")
    if args.family != "gru4rec":
        from .recommend.family import train_family

        train_family(
            args.family, sessions, config, Path(args.out), args.valid_days, args.valid_fraction
        )
        _log(f"wrote {args.out}")
        return 0
    item_index = ItemIndex.from_sessions(sessions)
    eval_fn = None
    if args.test:
        from .model.evaluate import evaluate
        from .model.scorer import GRUScorer

        test = _load(args.test, args)

        def eval_fn(model: Any) -> dict[str, float]:
            res = evaluate(GRUScorer(model), item_index, test, ks=(20,))
            return {"recall@20": float(res["recall@20"]), "mrr@20": float(res["mrr@20"])}

    result = train(
        sessions,
        config,
        Path(args.out),
        item_index=item_index,
        parent=args.parent,
        progress=not args.quiet,
        eval_fn=eval_fn,
    )
    _log(f"wrote {args.out} ({result.seconds:.1f} s)")
    return 0


def _ks(raw: str) -> tuple[int, ...]:
    try:
        ks = tuple(sorted({int(x) for x in raw.split(",") if x.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {raw!r}") from None
    if not ks or ks[0] < 1:
        raise argparse.ArgumentTypeError(f"cut-offs must be positive integers: {raw!r}")
    return ks


def _baselines(raw: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in raw.split(",") if x.strip() and x.strip() != "none")
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)}"
        )
    return names


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .model.evaluate import evaluate, format_table

    scorers: list[tuple[str, StepScorer]] = []
    fit_seconds: dict[str, float] = {}
    item_index: ItemIndex | None = None
    if args.model is not None:
        from .recommend.family import family_scorer  # torch model code only when asked for

        family, model, item_index = family_scorer(Path(args.model))
        scorers.append((family, model))
    if args.train is None and (args.baselines or item_index is None):
        raise LiverecError("--train is needed to fit baselines (or pass --baselines none)")
    if not args.baselines and item_index is None:
        raise LiverecError("nothing to evaluate: give --model or some --baselines")
    test = _load(args.test, args)
    if args.baselines:
        train = _load(args.train, args)
        if item_index is None:
            item_index = ItemIndex.from_sessions(train)
        for name in args.baselines:
            started = time.perf_counter()
            scorers.append((name, make_baseline(name, train, item_index)))
            fit_seconds[name] = round(time.perf_counter() - started, 3)
    assert item_index is not None
    results: dict[str, dict[str, Any]] = {}
    for name, scorer in scorers:
        if args.progress:
            _log(f"evaluating {name} ...")
        res: dict[str, Any] = dict(
            evaluate(
                scorer,
                item_index,
                test,
                ks=args.k,
                batch_size=args.batch_size,
                serving_rules=args.serving_rules,
                progress=args.progress,
            )
        )
        if name in fit_seconds:
            res["fit_seconds"] = fit_seconds[name]
        if name not in fit_seconds:
            res["name"] = scorer.name
        results[name] = res
    if args.json:
        print(json.dumps(results))
    else:
        print(format_table(results))
    return 0


def _stats(s: Sessions) -> dict[str, int]:
    return {
        "sessions": s.n_sessions,
        "events": s.n_events,
        "items": len(set(s.items.tolist())),
    }


def cmd_split(args: argparse.Namespace) -> int:
    data_path = Path(args.data)
    fmt = detect_format(data_path) if args.format == "auto" and data_path.is_file() else args.format
    sessions = _load(data_path, args)
    params: dict[str, Any]
    if args.fraction is not None:
        train, test = last_fraction(sessions, args.fraction, min_length=args.min_length)
        params = {"method": "last_fraction", "fraction": args.fraction}
    else:
        if not sessions.timed:
            raise LiverecError(
                f"{data_path} has no timestamps: split it by file order with --fraction"
            )
        train, test = time_split(sessions, args.days, min_length=args.min_length, by=args.by)
        params = {"method": "time", "days": args.days, "by": args.by}
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LiverecError(f"cannot create {out}: {exc.strerror or exc}") from exc
    write_sessions(train, out / "train.tsv")
    write_sessions(test, out / "test.tsv")
    meta = {
        "data": str(data_path),
        "format": fmt,
        "fingerprint": fingerprint(data_path),
        **params,
        "min_length": args.min_length,
        "input": _stats(sessions),
        "train": {**_stats(train), "fingerprint": fingerprint(out / "train.tsv")},
        "test": {
            **_stats(test),
            "cases": test.n_events - test.n_sessions,
            "fingerprint": fingerprint(out / "test.tsv"),
        },
    }
    (out / "split.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(meta, indent=2))
    return 0
