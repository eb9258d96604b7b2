"""The demo store's session model: its training data, its checkpoint, and serving it.

Owns: the training sessions drawn from the demo store's simulated shoppers
(`demo.shopper_session`, deterministic for a seed), the small GRU4Rec configuration
trained on them, `liverec demo-model` (which writes the checkpoint committed as
models/demo), and which checkpoint `liverec serve --demo on` serves: the
`demo_model` setting, by default the models/demo of this source tree. Items the
checkpoint does not know are answered by the online recommender, as for any
GRU4Rec checkpoint (recommend/gru/).

Reproducible: the same seed, sessions, epochs and units give the same weights
(training runs on one torch thread); the version string's hash is of the weights.
torch is imported only when a model is trained.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .config import Settings
from .demo import DemoCatalog, build_catalog, shopper_sessions
from .errors import ConfigError, LiverecError
from .model import META

if TYPE_CHECKING:
    from .model.config import TrainConfig
    from .model.data import Sessions

log = logging.getLogger("liverec.demo")

BUNDLED: Final = "bundled"  # the demo_model value naming models/demo of this tree
NAME: Final = "demo-gru4rec"  # starts the checkpoint's version string
SEED: Final = 1
SESSIONS: Final = 20_000
HOLDOUT_SESSIONS: Final = 2_000  # drawn with seed + 1, for the figures in meta.json
EPOCHS: Final = 5
UNITS: Final = 100
START: Final = 1_767_225_600.0  # 2026-01-01 UTC: the first training session's time
SESSION_SPACING_S: Final = 60.0
EVENT_SPACING_S: Final = 5.0


def bundled_model() -> Path:
    """models/demo of the source tree this package runs from (it may be missing)."""
    return Path(__file__).resolve().parents[2] / "models" / "demo"


def demo_sessions(seed: int, count: int, demo: DemoCatalog | None = None) -> Sessions:
    """`count` simulated shopper sessions as training data: every event's item in
    order (a view and an add-to-cart of one item are two events, as served), with
    made-up times (one session a minute from 2026-01-01, 5 s between events)."""
    from .model.data import Sessions

    demo = demo or build_catalog()
    source = shopper_sessions(seed, demo)
    items: list[list[str]] = []
    times: list[list[float]] = []
    for n in range(count):
        session = [item for _, item in next(source)]
        start = START + n * SESSION_SPACING_S
        items.append(session)
        times.append([start + k * EVENT_SPACING_S for k in range(len(session))])
    ids = [f"demo-{seed}-{n}" for n in range(count)]
    return Sessions.from_lists(items, session_ids=ids, times=times)


def train_config(epochs: int = EPOCHS, units: int = UNITS) -> TrainConfig:
    """The YooChoose preset (cross-entropy) made small: one layer of `units`, no
    extra sampled negatives (the catalog has ~270 items), one torch thread."""
    from .model.config import get_preset

    base = get_preset("rsc15")
    model = dataclasses.replace(base.model, layers=(units,))
    return dataclasses.replace(base, model=model, n_sample=0, n_epochs=epochs, threads=1)


def build_demo_model(
    out: Path,
    seed: int = SEED,
    sessions: int = SESSIONS,
    epochs: int = EPOCHS,
    units: int = UNITS,
    data_out: Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train the demo model and write its checkpoint to `out`; returns meta.json."""
    from .model.baselines import make_baseline
    from .model.checkpoint import save_checkpoint
    from .model.data import ItemIndex, fingerprint
    from .model.evaluate import evaluate
    from .model.formats import write_sessions
    from .model.scorer import GRUScorer
    from .model.train import train

    if sessions < 100 or epochs < 1 or units < 1:
        raise LiverecError("need --sessions >= 100, --epochs >= 1 and --units >= 1")
    demo = build_catalog()
    data = demo_sessions(seed, sessions, demo)
    if data_out is not None:
        write_sessions(data, data_out)
    config = train_config(epochs, units)
    index = ItemIndex.from_sessions(data)
    started = time.perf_counter()
    result = train(data, config, None, item_index=index, progress=progress)
    seconds = time.perf_counter() - started
    holdout = demo_sessions(seed + 1, HOLDOUT_SESSIONS, demo)
    figures: dict[str, dict[str, float]] = {}
    scorers = {"model": GRUScorer(result.model), "pop": make_baseline("pop", data, index)}
    for name, scorer in scorers.items():
        res = evaluate(scorer, index, holdout, ks=(20,), serving_rules=True)
        figures[name] = {k: round(float(res[k]), 4) for k in ("recall@20", "mrr@20")}
    meta = {
        "name": NAME,
        "data_fingerprint": fingerprint(data),
        "parent": None,
        "training": {
            "data": "demo store shoppers (liverec demo-model)",
            "seed": seed,
            "sessions": sessions,
            "events": data.n_events,
            "seconds": round(seconds, 3),
            "epochs": [dataclasses.asdict(e) for e in result.epochs],
        },
        "evaluation": {
            "holdout": {"seed": seed + 1, "sessions": HOLDOUT_SESSIONS, "serving_rules": True},
            **figures,
        },
    }
    save_checkpoint(out, result.model, result.config, index, meta)
    written: dict[str, Any] = json.loads((out / META).read_text(encoding="utf-8"))
    return written


def demo_serving_settings(settings: Settings) -> Settings:
    """The settings a server builds its recommender from: with `demo` on and no
    model_path, the demo_model checkpoint (none, or a missing bundled one: the
    online recommender alone)."""
    if not settings.demo or settings.model_path is not None or settings.demo_model is None:
        return settings
    if settings.demo_model != BUNDLED:
        return settings.replace(model_path=settings.demo_model)
    path = bundled_model()
    if not (path / META).is_file():
        log.warning(
            "no demo model at %s (make it with `liverec demo-model --out models/demo`); "
            "the demo serves the online recommender",
            path,
        )
        return settings
    return settings.replace(model_path=str(path))


def _cmd(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    meta = build_demo_model(
        out,
        seed=args.seed,
        sessions=args.sessions,
        epochs=args.epochs,
        units=args.units,
        data_out=Path(args.data_out) if args.data_out else None,
        progress=not args.quiet,
    )
    summary = {
        "version": meta["version"],
        "out": str(out),
        "items": len(meta["items"]),
        "events": meta["training"]["events"],
        "seconds": meta["training"]["seconds"],
        "evaluation": meta["evaluation"],
    }
    print(json.dumps(summary, indent=1))
    print(f"wrote {out}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `demo-model` to the `liverec` command."""
    p = subparsers.add_parser(
        "demo-model",
        help="train the demo store's GRU4Rec model on its simulated shoppers",
        description="Draw the demo store's simulated shopper sessions (deterministic for "
        "a seed), train a small GRU4Rec on them (one torch thread: reproducible) and "
        "write the checkpoint; `liverec serve --demo on` serves models/demo. Figures "
        "on held-out sessions (the next seed) go to meta.json.",
    )
    p.add_argument("--out", default="models/demo", help="checkpoint directory [models/demo]")
    p.add_argument("--seed", type=int, default=SEED, help=f"shopper seed [{SEED}]")
    p.add_argument("--sessions", type=int, default=SESSIONS, help=f"sessions [{SESSIONS}]")
    p.add_argument("--epochs", type=int, default=EPOCHS, help=f"training epochs [{EPOCHS}]")
    p.add_argument("--units", type=int, default=UNITS, help=f"GRU units [{UNITS}]")
    p.add_argument("--data-out", default=None, help="also write the sessions here (TSV)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd)
