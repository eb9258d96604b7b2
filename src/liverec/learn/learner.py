"""The continuous learner: follow the event log, train candidates, promote the better.

Owns: `LearnConfig` (from Settings), `Learner` (the loop), the candidate-vs-live
comparison and the promotion rule, and `run` (what `liverec learn` runs).

The loop. The learner reads the event log through a consumer group
(`Store.follow`) into a window of the latest `window_events` events; an event is
acknowledged when it leaves the window, so after a restart the group hands the
window back (the consumer group's pending entries are the persisted window). A
round starts when `min_events` new events have arrived, or `interval_s` after the
last round when any have. A round, on a worker thread:

1. keeps each contributor's bounded share of the window (weighting.py: a session
   or user adds at most a few steps per item, over at most `contributor_items`
   items), groups it into sessions ordered by start time and holds out the latest
   `holdout_fraction` of them; the rest is the training part;
2. trains a candidate on the training part: fine-tuned from the served model with
   the vocabulary grown by the items it has never seen (`finetune`), or a fresh
   model (`retrain`, and always when nothing is served yet);
3. evaluates candidate, served model and popularity on the held-out sessions with
   the protocol of `liverec evaluate --serving-rules` (liverec.model.evaluate), all
   three on the same cases, indexed by the union of the candidate's and the served
   model's vocabularies (held-out items neither knows are dropped, as the protocol
   drops test items unseen in training). A model scores NaN for an item it does not
   know, so such a target is a miss for it; a step whose input it does not know is
   a miss for every target (serving would answer from the online fallback) and
   leaves its state as it was (as serving skips unknown items when replaying);
4. promotes the candidate when its Recall@20 and MRR@20 are each at least the served
   model's minus `margin` (the first model: when its Recall@20 beats popularity),
   else rejects it; both figures and the reason go to the registry.

With `learn_family` other than gru4rec, step 2 also builds the other families'
candidates (families.py: a session index of the training part, the hybrid of the
two), step 3 scores each on the held-out sessions and the best is the round's
candidate for step 4; the comparison goes into its meta.json (`selection`) and the
registry. The served model may be of any family: a GRU4Rec or hybrid one is
fine-tuned from, a vsknn one is not (the GRU4Rec candidate is trained afresh).

Promotion writes models/CURRENT, which every `liverec serve --model models/` polls, and
announces it on the store's pub/sub (liverec.notify) so that they load it at once.

Why ~510 lines in one module: the loop, the round and the promotion rule share the
window, the consumer group and the registry; training a candidate and bounding each
contributor's share already live in finetune.py and weighting.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

from ..config import Settings
from ..errors import ConfigError
from ..model import META
from ..model.baselines import Popularity
from ..model.checkpoint import load_checkpoint, save_checkpoint
from ..model.config import TrainConfig, configure
from ..model.data import ItemIndex, Sessions, build_sessions, encode, fingerprint
from ..model.evaluate import StepScorer, evaluate
from ..model.formats import load_sessions
from ..model.gru4rec import GRU4Rec
from ..model.scorer import GRUScorer
from ..notify import announce_model
from ..recommend import model_family
from ..recommend.hybrid import SESSIONS, HybridScorer
from ..store import limits_from, open_store
from ..store.base import LoggedEvent, Store
from . import families
from .finetune import Candidate, Stopped, finetune, retrain
from .registry import Registry, VersionRecord, learner_lock
from .weighting import bounded_events

log = logging.getLogger("liverec.learn")

K: Final = 20  # the cut-off of the metrics that decide
MODES: Final = ("finetune", "retrain")


@dataclass(frozen=True, slots=True)
class LearnConfig:
    """What the learner does; `from_settings` maps the `learn_*` settings."""

    models_dir: Path
    mode: str = "finetune"  # "finetune" | "retrain"
    family: str = "gru4rec"  # the family set a round chooses from (families.FAMILY_SETS)
    interval_s: float | None = 600.0
    min_events: int | None = 10_000
    window_events: int = 200_000
    holdout_fraction: float = 0.1
    min_holdout_cases: int = 200
    margin: float = 0.005
    train: TrainConfig = field(default_factory=TrainConfig)  # n_epochs included
    poll_s: float = 1.0
    keep_versions: int = 20
    group: str = "liverec-learn"
    consumer: str = "learner"
    read_batch: int = 5000
    item_repeats: int = 3  # bounded influence (weighting.py): steps per contributor and item
    contributor_items: int = 50  # ...and distinct items per contributor

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in MODES:
            problems.append(f"learn_mode must be one of {', '.join(MODES)}")
        if self.family not in families.FAMILY_SETS:
            problems.append(f"learn_family must be one of {', '.join(families.FAMILY_SETS)}")
        if self.interval_s is None and self.min_events is None:
            problems.append("set learn_interval_s or learn_min_events (or both)")
        if self.interval_s is not None and self.interval_s <= 0:
            problems.append("learn_interval_s must be > 0")
        if self.min_events is not None and self.min_events < 1:
            problems.append("learn_min_events must be >= 1")
        if self.window_events < 2:
            problems.append("learn_window_events must be >= 2")
        if not 0.0 < self.holdout_fraction < 1.0:
            problems.append("learn_holdout_fraction must be in (0, 1)")
        if self.item_repeats < 1 or self.contributor_items < 1:
            problems.append("influence_item_cap and influence_session_items must be >= 1")
        if self.min_holdout_cases < 1 or self.margin < 0 or self.poll_s <= 0:
            problems.append("need learn_min_holdout_cases >= 1, learn_margin >= 0, poll > 0")
        if problems:
            raise ConfigError("; ".join(problems))

    @classmethod
    def from_settings(cls, settings: Settings) -> LearnConfig:
        if settings.model_path is None:
            raise ConfigError("learning needs model_path: the models/ registry to write to")
        if (Path(settings.model_path) / META).is_file():
            raise ConfigError(
                f"model_path {settings.model_path} is a checkpoint; learning needs a "
                "models/ registry directory (one subdirectory per version, CURRENT)"
            )
        try:
            train = configure(
                settings.learn_preset,
                settings.learn_set,
                n_epochs=settings.learn_epochs,
                threads=settings.learn_threads,
            )
        except ValueError as exc:
            raise ConfigError(f"learn_preset/learn_set: {exc}") from None
        return cls(
            models_dir=Path(settings.model_path),
            mode=settings.learn_mode,
            family=settings.learn_family,
            interval_s=settings.learn_interval_s,
            min_events=settings.learn_min_events,
            window_events=settings.learn_window_events,
            holdout_fraction=settings.learn_holdout_fraction,
            min_holdout_cases=settings.learn_min_holdout_cases,
            margin=settings.learn_margin,
            train=train,
            poll_s=settings.learn_poll_s,
            keep_versions=settings.learn_keep_versions,
            group=settings.learn_group,
            item_repeats=max(1, int(settings.influence_item_cap)),
            contributor_items=settings.influence_session_items,
        )


@dataclass(slots=True)
class RoundResult:
    """What one round did."""

    decision: str  # "promoted" | "rejected" | "skipped"
    reason: str
    version: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(slots=True)
class _Plan:
    """A round's data: the window split, the served model, the evaluation vocabulary."""

    train: Sessions
    holdout: Sessions
    union: ItemIndex  # served model's items, then the training part's new ones
    cases: int  # held-out targets whose items are in `union`
    live: str | None
    live_model: GRU4Rec | None  # the served GRU4Rec weights (gru4rec and hybrid families)
    live_index: ItemIndex | None
    window: dict[str, Any]
    live_family: str | None = None


class _Mapped:
    """A GRU4Rec or hybrid scorer over a larger vocabulary (module docstring, step 3)."""

    def __init__(self, scorer: GRUScorer | HybridScorer, own: ItemIndex, union: ItemIndex) -> None:
        self.name = scorer.name
        self.scorer = scorer
        self.n_items = len(union)
        self.map = own.encode(union.ids)  # (U,) own index, -1 where unknown
        self.cols = np.flatnonzero(self.map >= 0)  # union columns this model scores
        self.identity = len(own) == len(union) and bool((self.map == np.arange(len(union))).all())

    def reset(self, n_slots: int) -> None:
        self.scorer.reset(n_slots)

    def step(self, slots: np.ndarray, items: np.ndarray, new: np.ndarray) -> np.ndarray:
        if self.identity:
            return self.scorer.step(slots, items, new)
        own = self.map[items]
        known = own >= 0
        clear = new & ~known  # a session starting with an unknown item: zero state only
        if clear.any():
            self.scorer.clear(slots[clear])
        out = np.full((len(items), self.n_items), np.nan, dtype=np.float32)
        if known.any():
            scores = self.scorer.step(slots[known], own[known], new[known])  # (n, own)
            out[np.ix_(np.flatnonzero(known), self.cols)] = scores[:, self.map[self.cols]]
        return out


def decide(
    candidate: Mapping[str, float],
    live: Mapping[str, float] | None,
    popularity: Mapping[str, float],
    margin: float,
) -> tuple[bool, str]:
    """(promote?, why) from Recall@K and MRR@K on the same held-out cases."""
    r, m = f"recall@{K}", f"mrr@{K}"
    figures = f"Recall@{K} {candidate[r]:.4f}, MRR@{K} {candidate[m]:.4f}"
    if live is None:
        ok = candidate[r] > popularity[r]
        return ok, (
            f"first model: {figures}; popularity Recall@{K} {popularity[r]:.4f}"
            + ("" if ok else " (not beaten)")
        )
    worse = [name for name in (r, m) if candidate[name] < live[name] - margin]
    versus = f"{figures} vs live {live[r]:.4f}, {live[m]:.4f} (margin {margin:g})"
    if worse:
        return False, f"worse than live on {' and '.join(worse)}: {versus}"
    return True, f"not worse than live: {versus}"


class Learner:
    """The follow/train/evaluate/promote loop over one store and one models/ registry."""

    def __init__(
        self, store: Store, config: LearnConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.config = config
        self.registry = Registry(config.models_dir)
        self.clock = clock
        self.window: deque[LoggedEvent] = deque()
        self.new_events = 0  # arrived since the last round
        self.last_round = clock()
        self.rounds = 0
        self.last: RoundResult | None = None
        self._resume_at: str | None = None  # the last event of the latest recorded window
        self._stop = threading.Event()
        self._lock: contextlib.ExitStack | None = None
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------

    def open(self) -> None:
        """Take the registry's learner lock and clear what a stopped learner left."""
        if self._lock is not None:
            return
        stack = contextlib.ExitStack()
        stack.enter_context(learner_lock(self.config.models_dir))
        self._lock = stack
        self.registry.clean_staging()
        latest = self.registry.latest()
        self._resume_at = latest.window.get("last") if latest else None

    async def start(self) -> None:
        """Open, then run the loop in a background task until `close`."""
        self.open()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="liverec-learner")

    async def close(self) -> None:
        """Stop the loop (a round in progress stops after its current epoch)."""
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    async def _run(self) -> None:
        while True:
            try:
                got = await self.poll()
                if self.due():
                    await self.round()
                elif not got:
                    await asyncio.sleep(self.config.poll_s)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("learner step failed; retrying in %s s", self.config.poll_s)
                await asyncio.sleep(self.config.poll_s)

    # --- following the log --------------------------------------------------------

    async def poll(self) -> int:
        """Read what the log has for us (one batch) into the window; returns how many."""
        cfg = self.config
        events = await self.store.follow(cfg.group, cfg.consumer, cfg.read_batch)
        if not events:
            return 0
        self.window.extend(events)
        self.new_events += len(events)
        if self._resume_at is not None:
            # after a restart the group hands back the old window: only what follows
            # the latest trained window is new
            for n, e in enumerate(events):
                if e.position == self._resume_at:
                    self.new_events = len(events) - n - 1
                    self._resume_at = None
                    break
        evicted = [
            self.window.popleft().position for _ in range(len(self.window) - cfg.window_events)
        ]
        if evicted:
            await self.store.ack(cfg.group, evicted)
        return len(events)

    async def catch_up(self) -> None:
        """Read until the log has nothing more for us."""
        while await self.poll():
            pass

    def due(self) -> bool:
        cfg = self.config
        if self.new_events == 0:
            return False
        if cfg.min_events is not None and self.new_events >= cfg.min_events:
            return True
        return cfg.interval_s is not None and self.clock() - self.last_round >= cfg.interval_s

    # --- a round ------------------------------------------------------------------

    async def round(self) -> RoundResult:
        """Train, evaluate and promote or reject one candidate on the current window."""
        events = list(self.window)
        self.new_events = 0
        self.last_round = self.clock()
        try:
            result = await asyncio.to_thread(self._round, events)
        except Stopped:
            result = RoundResult("skipped", "stopped")
        except Exception as exc:
            log.exception("learning round failed")
            result = RoundResult("skipped", f"failed: {exc!r}")
        self.rounds += 1
        self.last = result
        if result.decision == "promoted" and result.version and self.store.shared_log:
            await announce_model(self.store, result.version)  # every server checks at once
        log.info(
            "learning round %d: %s %s (%s) in %.1f s",
            self.rounds,
            result.decision,
            result.version or "",
            result.reason,
            result.seconds,
        )
        return result

    def _round(self, events: Sequence[LoggedEvent]) -> RoundResult:
        started = time.perf_counter()
        plan = self.plan(events)
        if plan.cases < self.config.min_holdout_cases:
            return RoundResult(
                "skipped",
                f"{plan.cases} held-out cases, fewer than {self.config.min_holdout_cases}",
                seconds=time.perf_counter() - started,
            )
        mode = self.config.mode if plan.live is not None else "initial"
        candidate = self.train(plan, mode) if families.needs_gru(self.config.family) else None
        metrics, choice = self.compare(plan, candidate)
        if self._stop.is_set():  # closing: leave the registry as it is
            raise Stopped("stopping")
        promote, reason = decide(
            metrics["candidate"], metrics["live"], metrics["popularity"], self.config.margin
        )
        seconds = time.perf_counter() - started
        record = self._save(plan, candidate, choice, mode, metrics, seconds)
        if promote:
            self.registry.promote(record.version, reason)
        else:
            self.registry.reject(record.version, reason)
        self.registry.prune(self.config.keep_versions)
        return RoundResult(
            "promoted" if promote else "rejected", reason, record.version, metrics, seconds
        )

    def plan(self, events: Sequence[LoggedEvent]) -> _Plan:
        """Sessions of the window (each contributor's share bounded), split by start
        time; the served model; the cases."""
        cfg = self.config
        kept = bounded_events(events, cfg.item_repeats, cfg.contributor_items)
        sessions = build_sessions(
            [e.event.session_id for e in kept],
            [e.event.item_id for e in kept],
            np.array([e.event.ts for e in kept], dtype=np.float64),
        )
        n_hold = max(1, round(sessions.n_sessions * self.config.holdout_fraction))
        is_hold = np.arange(sessions.n_sessions) >= sessions.n_sessions - n_hold
        train, holdout = sessions.select(~is_hold), sessions.select(is_hold)
        live = self.registry.current()
        live_model, live_index, live_family = None, None, None
        if live is not None:
            live_family = model_family(self.registry.path(live))
            if live_family == "vsknn":
                live_index = ItemIndex.from_sessions(
                    load_sessions(self.registry.path(live) / SESSIONS)
                )
            else:
                live_model, _, live_index, _ = load_checkpoint(self.registry.path(live))
        union = ItemIndex(live_index.ids if live_index is not None else [])
        for item in ItemIndex.from_sessions(train).ids:
            union.add(item)
        offsets, _, _ = encode(holdout, union, min_length=2)
        window = {
            "first": events[0].position if events else None,
            "last": events[-1].position if events else None,
            "events": len(events),
            "kept_events": len(kept),
            "sessions": sessions.n_sessions,
            "train_sessions": train.n_sessions,
            "holdout_sessions": holdout.n_sessions,
            "first_ts": float(sessions.times.min()) if kept else None,
            "last_ts": float(sessions.times.max()) if kept else None,
        }
        cases = int(np.maximum(np.diff(offsets) - 1, 0).sum())
        return _Plan(
            train, holdout, union, cases, live, live_model, live_index, window, live_family
        )

    def train(self, plan: _Plan, mode: str) -> Candidate:
        """A candidate trained on the plan's training part."""
        config, stop = self.config.train, self._stop.is_set
        if config.threads:
            torch.set_num_threads(config.threads)  # this worker thread's setting
        if mode == "finetune" and plan.live_model is not None and plan.live_index is not None:
            return finetune(plan.live_model, plan.live_index, plan.train, config, stop)
        return retrain(plan.train, config, stop)

    def compare(
        self, plan: _Plan, candidate: Candidate | None
    ) -> tuple[dict[str, Any], families.Choice]:
        """The family candidates, served model and popularity on the same held-out
        cases; the chosen family's figures are the candidate's."""
        union, ks = plan.union, (K,)

        def run(scorer: StepScorer) -> dict[str, float]:
            res = evaluate(scorer, union, plan.holdout, ks=ks, serving_rules=True)
            return {f"recall@{K}": float(res[f"recall@{K}"]), f"mrr@{K}": float(res[f"mrr@{K}"])}

        def mapped(scorer: GRUScorer | HybridScorer, own: ItemIndex) -> StepScorer:
            return _Mapped(scorer, own, union)

        choice = families.choose(self.config.family, candidate, plan.train, union, run, mapped)
        cand = choice.figures[choice.family]
        live = None
        if plan.live is not None:
            directory = self.registry.path(plan.live)
            live = run(families.served_scorer(directory, union, mapped)[1])
        pop = run(Popularity().fit(plan.train, union))
        new_targets = 0
        if plan.live_index is not None:
            offsets, codes, _ = encode(plan.holdout, union, min_length=2)
            targets = np.ones(len(codes), dtype=bool)
            targets[offsets[:-1]] = False  # the first event of a session is no target
            new_targets = int((codes[targets] >= len(plan.live_index)).sum())
        trained = {"loss": candidate.loss, "pairs": candidate.pairs} if candidate else None
        metrics = {
            "k": K,
            "cases": plan.cases,
            "new_item_cases": new_targets,
            "margin": self.config.margin,
            "family": choice.family,
            "candidate": cand,
            "live": live,
            "live_family": plan.live_family,
            "popularity": pop,
            "train": trained,
        }
        if self.config.family != "gru4rec":
            metrics["families"] = choice.figures
        return metrics, choice

    def _save(
        self,
        plan: _Plan,
        candidate: Candidate | None,
        choice: families.Choice,
        mode: str,
        metrics: dict[str, Any],
        seconds: float,
    ) -> VersionRecord:
        known = plan.live_index or ItemIndex([])  # new items: those the served model lacks
        staged = self.registry.staging()
        meta: dict[str, Any] = {
            "parent": plan.live,
            "data_fingerprint": fingerprint(plan.train),
            "evaluation": metrics["candidate"],
            "learn": {"mode": mode, "window": plan.window},
        }
        if self.config.family != "gru4rec":
            meta["selection"] = choice.record(self.config.family)
        if choice.family == "gru4rec" and candidate is not None:  # as before families
            save_checkpoint(staged, candidate.model, candidate.config, candidate.item_index, meta)
        else:
            families.write(choice, staged, candidate, plan.train, meta)
        items = candidate.item_index if candidate else ItemIndex.from_sessions(plan.train)
        return self.registry.add(
            staged,
            parent=plan.live,
            mode=mode,
            window=plan.window,
            metrics=metrics,
            items=len(items),
            new_items=sum(1 for i in items.ids if i not in known),
            seconds=round(seconds, 3),
        )


async def run(settings: Settings, once: bool = False) -> RoundResult | None:
    """`liverec learn`: follow the store's log and learn until SIGINT/SIGTERM; with
    `once`, read the whole log, run one round and return its result."""
    config = LearnConfig.from_settings(settings)
    store = open_store(settings.store_url, limits_from(settings))
    await store.open()
    learner = Learner(store, config)
    try:
        if once:
            learner.open()
            await learner.catch_up()
            return await learner.round()
        await learner.start()
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, done.set)
        log.info("learning from %s into %s", store.url, config.models_dir)
        await done.wait()
        return learner.last
    finally:
        await learner.close()
        await store.close()


__all__ = ["LearnConfig", "Learner", "RoundResult", "decide", "run"]
