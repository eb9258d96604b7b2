"""Serving GRU4Rec: one GRU step per event, micro-batched, with hot reload.

Owns: the hidden state of each live session (in memory, LRU-bounded), the
micro-batcher that hands the events of many sessions to one scoring call (in a
scoring worker process, or on a dedicated thread; scoring.py), the business rules
on the model's lists, the fallback to the online recommender (empty sessions, items
the model does not know), and picking up a new checkpoint without dropping a socket.
What a loaded checkpoint is and how it shortlists and re-scores: served.py.

Cost per event: one GRU step plus one scoring pass. A session whose state is not
here (new process, new model version, evicted) is rebuilt from the stored item
sequence by replaying its last `model_replay_max` items.

Why ~425 lines in one module: the session states, the micro-batcher and hot reload
share the served version and its scoring worker; the checkpoint and the scoring pass
are served.py's and scoring.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ...config import Settings
from ...errors import ModelError
from ...model import META
from ...types import Event
from ..base import (
    RecContext,
    RecList,
    Recommender,
    apply_rules,
    blocked_items,
    demote_low_rated,
)
from .scoring import Ranked, ScoreInput, ScoringWorker, score_batch
from .served import DEFAULTS, Extra, ServedModel, ServeOptions, resolve_checkpoint

log = logging.getLogger("liverec.gru")


@dataclass
class _State:
    version: str
    position: int  # session position this state has consumed up to
    hidden: Tensor | bytes  # (L, H), or its float32 bytes as the scoring worker made them


@dataclass
class _Job:
    inp: ScoreInput  # what to score
    # ranked, new hidden state, extra (a hybrid's)
    future: asyncio.Future[tuple[Ranked, Tensor | bytes, Extra | None]] = field(repr=False)
    served: ServedModel = field(repr=False)  # the model it was made for


class GRURecommender(Recommender):
    """GRU4Rec over an online fallback. Call only from the event loop thread."""

    def __init__(
        self,
        path: Path,
        fallback: Recommender,
        moments: bool = False,
        *,
        threads: int = DEFAULTS.model_threads,
        max_batch: int = DEFAULTS.model_max_batch,
        pipeline: int = DEFAULTS.model_pipeline,
        max_sessions: int = DEFAULTS.model_max_sessions,
        rescore: int = DEFAULTS.model_rescore,
        quantize: bool = DEFAULTS.model_quantize,
        rank: int = DEFAULTS.model_rank,
        quantize_gru: bool = DEFAULTS.model_quantize_gru,
        process: bool = DEFAULTS.model_process,
        replay_max: int = DEFAULTS.model_replay_max,
        poll_s: float | None = DEFAULTS.model_poll_s,
        score_timeout_s: float = DEFAULTS.model_score_timeout_s,
    ) -> None:
        """Keyword defaults: the settings' (`model_*`); `from_settings` passes them all.
        moments (not a setting, what the family needs): prepare the score moments too
        (a hybrid's; `score` with extra)."""
        self.path = Path(path)
        self.fallback = fallback
        self.threads = threads
        self.max_batch = max_batch
        self.pipeline = pipeline
        self.max_sessions = max_sessions
        self.rescore = rescore
        self.options = ServeOptions(quantize, rank, quantize_gru, moments)
        # process=True: score in a worker process per served version (scoring.py), not
        # on a thread here; a dead worker is replaced in the background meanwhile
        self._process = process
        self._workers: dict[str, ScoringWorker] = {}
        self._replacing: dict[str, asyncio.Task[None]] = {}
        self.replay_max = replay_max
        self.poll_s = poll_s
        self.score_timeout_s = score_timeout_s
        # An empty models/ registry (no CURRENT yet: the learner has not promoted a
        # first model) is served by the fallback until a checkpoint appears; a path
        # that does not exist at all is a configuration error.
        self.served: ServedModel | None = None
        try:
            self.served = ServedModel.load_with(self.path, self.options)
        except ModelError:
            if not self.path.is_dir() or (self.path / META).exists():
                raise
            log.warning(
                "no checkpoint in %s yet; serving the online model until one appears", self.path
            )
        self.states: OrderedDict[str, _State] = OrderedDict()
        self._queue: list[_Job] = []
        self._out: list[list[_Job]] = []  # batches sent and not answered yet
        self._started = False
        self._tasks: list[asyncio.Task[None]] = []  # the model watcher
        self._closing: set[asyncio.Task[None]] = set()  # retired workers being closed
        self._here: set[asyncio.Task[None]] = set()  # batches scored on the thread
        self._checking = asyncio.Lock()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="liverec-gru")
        self._executor.submit(torch.set_num_threads, threads).result()
        # read back, not echoed: what torch really runs with (exported in /metrics)
        self.torch_threads = self._executor.submit(torch.get_num_threads).result()
        self.batches = 0
        self.batched_events = 0
        self.worker_starts = 0

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        fallback: Recommender,
        path: Path | None = None,
        moments: bool = False,
    ) -> GRURecommender:
        """`path`: this directory instead of settings.model_path."""
        if path is None:
            assert settings.model_path is not None
            path = Path(settings.model_path)
        return cls(
            path,
            fallback,
            threads=settings.model_threads,
            max_batch=settings.model_max_batch,
            pipeline=settings.model_pipeline,
            max_sessions=settings.model_max_sessions,
            rescore=settings.model_rescore,
            quantize=settings.model_quantize,
            rank=settings.model_rank,
            quantize_gru=settings.model_quantize_gru,
            process=settings.model_process,
            replay_max=settings.model_replay_max,
            poll_s=settings.model_poll_s,
            score_timeout_s=settings.model_score_timeout_s,
            moments=moments,
        )

    @property
    def version(self) -> str:
        return self.served.version if self.served is not None else self.fallback.version

    def observe(self, event: Event) -> None:
        self.fallback.observe(event)  # the online model keeps learning new items

    def forget(self, session_id: str) -> None:
        self.states.pop(session_id, None)
        self.fallback.forget(session_id)

    async def start(self) -> None:
        await self.fallback.start()
        loop = asyncio.get_running_loop()
        if self._process and self.served is not None:
            try:
                await self._start_worker(self.served)
            except ModelError as exc:  # serve anyway, on the thread
                log.error("no scoring worker (%s); scoring on a thread of this process", exc)
                self._process = False
        self._started = True
        if self.poll_s:
            self._tasks.append(loop.create_task(self._watch(), name="liverec-model-watch"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for batch in list(self._here):
            batch.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for task in list(self._closing):
            await task
        for task in self._replacing.values():
            task.cancel()
        for task in list(self._replacing.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for worker in self._workers.values():
            await worker.close()
        self._workers.clear()
        self._executor.shutdown(wait=True)
        await self.fallback.close()

    # --- recommending -------------------------------------------------------------------

    async def recommend(self, ctx: RecContext) -> RecList:
        served = self.served
        got = await self.score(ctx, ctx.k)
        if served is None or got is None:
            return await self.fallback.recommend(ctx)
        ranked, _ = got
        ids = served.index.ids
        items = demote_low_rated(apply_rules(((ids[i], s) for i, s in ranked), ctx), ctx.ratings)
        if len(items) < ctx.k:  # tiny catalogs: fill from the online model
            more = await self.fallback.recommend(ctx)
            have = {r.item_id for r in items}
            items += [r for r in more.items if r.item_id not in have][: ctx.k - len(items)]
        return RecList(items, served.version)

    async def score(
        self, ctx: RecContext, want: int, extra: np.ndarray | None = None
    ) -> tuple[Ranked, Extra | None] | None:
        """The session advanced to ctx.position and scored: the `want` best items by
        exact score (blocked ones excluded), best first, and with `extra` (item
        indices; a model prepared with the moments) their exact scores and the
        moments of every item's score. None: nothing the model knows (no items, or
        a current item it does not know): the caller falls back."""
        served = self.served
        if served is None:
            return None
        index = served.index.index
        if not ctx.items or (ctx.current_item is not None and ctx.current_item not in index):
            return None
        state = self.states.get(ctx.session_id)
        unseen = ctx.position - state.position if state is not None else -1
        if state is not None and state.version == served.version and 0 <= unseen <= len(ctx.items):
            tail = ctx.items[len(ctx.items) - unseen :] if unseen else []
            start: Tensor | bytes | None = state.hidden
        else:  # rebuild from the stored sequence
            tail, start = ctx.items[-self.replay_max :], None
        feed = [index[i] for i in tail if i in index]
        if start is None and not feed:
            return None
        blocked = [index[i] for i in blocked_items(ctx) if i in index]
        inp = ScoreInput(feed, start, blocked, want, extra)
        if not self._started:  # not started (tests, tools): run inline
            hidden: Tensor | bytes
            ((ranked, hidden, got),) = await asyncio.get_running_loop().run_in_executor(
                self._executor, score_batch, served, [inp], self.rescore
            )
        else:
            job = _Job(inp, asyncio.get_running_loop().create_future(), served)
            self._queue.append(job)
            self._dispatch()
            ranked, hidden, got = await job.future
        if self.served is served:
            self._remember(ctx.session_id, _State(served.version, ctx.position, hidden))
        return ranked, got

    def _remember(self, session_id: str, state: _State) -> None:
        self.states[session_id] = state
        self.states.move_to_end(session_id)
        while len(self.states) > self.max_sessions:
            self.states.popitem(last=False)

    def _dispatch(self) -> None:
        """Send what is queued, as batches, while fewer than `pipeline` are out.

        Batches grow with load: jobs queue while `pipeline` batches are out, and go
        together when an answer comes back. A job is scored by the model it was
        queued for (its item indices are that model's), even if a reload swapped the
        served model meanwhile. The worker's answers arrive in its socket's data
        callback, which settles the jobs and dispatches again: an event costs the
        event loop no task switch between its recommend() call and its answer."""
        while self._queue and len(self._out) < self.pipeline:
            served = self._queue[0].served
            jobs: list[_Job] = []
            rest: list[_Job] = []
            for job in self._queue:
                same = job.served is served and len(jobs) < self.max_batch
                (jobs if same else rest).append(job)
            self._queue = rest
            self._out.append(jobs)
            worker = self._workers.get(served.version)
            if worker is not None and worker.alive:
                answer = functools.partial(self._answered, worker, served, jobs)
                worker.submit([j.inp for j in jobs], self.rescore, answer)
            else:
                if worker is not None and served is self.served:
                    self._replace_worker(served)
                self._score_here(served, jobs)

    def _answered(
        self,
        worker: ScoringWorker,
        served: ServedModel,
        jobs: list[_Job],
        results: list[tuple[Ranked, bytes, Extra | None]] | None,
        exc: ModelError | None,
    ) -> None:
        """The worker's answer to one batch (called from its socket's data callback)."""
        if exc is None:
            assert results is not None
            self._settle(jobs, results, None)
            return
        log.error("scoring worker failed, this batch scored here: %s", exc)
        if not worker.alive and served is self.served:
            self._replace_worker(served)
        self._score_here(served, jobs)

    def _score_here(self, served: ServedModel, jobs: list[_Job]) -> None:
        """Score a batch on this process's scoring thread (no worker, or it failed)."""
        loop = asyncio.get_running_loop()

        async def run() -> None:
            try:
                results = await loop.run_in_executor(
                    self._executor, score_batch, served, [j.inp for j in jobs], self.rescore
                )
            except Exception as exc:
                log.exception("scoring batch failed")
                self._settle(jobs, None, exc)
            else:
                self._settle(jobs, results, None)

        task = loop.create_task(run())
        self._here.add(task)
        task.add_done_callback(self._here.discard)

    def _settle(
        self,
        jobs: list[_Job],
        results: Sequence[tuple[Ranked, Tensor | bytes, Extra | None]] | None,
        exc: Exception | None,
    ) -> None:
        """A batch is done: hand out its results (or error) and send what waits."""
        with contextlib.suppress(ValueError):
            self._out.remove(jobs)
        if results is not None:
            self.batches += 1
            self.batched_events += len(jobs)
            for job, result in zip(jobs, results, strict=True):
                if not job.future.done():  # a caller may have gone (socket closed)
                    job.future.set_result(result)
        else:
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc or ModelError("scoring failed"))
        self._retire_workers()
        self._dispatch()

    async def _start_worker(self, served: ServedModel) -> None:
        worker = ScoringWorker(served, self.threads, self.score_timeout_s)
        self.worker_starts += 1
        await worker.start()
        old = self._workers.get(served.version)
        self._workers[served.version] = worker
        if old is not None:
            await old.close()

    def _replace_worker(self, served: ServedModel) -> None:
        if served.version in self._replacing:
            return

        async def replace() -> None:
            log.warning("starting a new scoring worker for %s", served.version)
            try:
                await self._start_worker(served)
            except ModelError as exc:
                log.error("scoring worker for %s did not start: %s", served.version, exc)
            finally:
                self._replacing.pop(served.version, None)

        self._replacing[served.version] = asyncio.create_task(replace())

    def _retire_workers(self) -> None:
        """Close the workers of versions no longer served once no job waits for them."""
        current = self.served.version if self.served is not None else None
        if all(v == current for v in self._workers):  # the common case: nothing to retire
            return
        waiting = {j.served.version for j in self._queue}
        waiting |= {j.served.version for jobs in self._out for j in jobs}
        for version in [v for v in self._workers if v != current and v not in waiting]:
            task = asyncio.create_task(self._workers.pop(version).close())
            self._closing.add(task)  # held until done, then dropped
            task.add_done_callback(self._closing.discard)

    # --- hot reload -------------------------------------------------------------------------

    def _changed(self) -> bool:
        try:
            directory = resolve_checkpoint(self.path)
            stamp = (directory / META).stat().st_mtime
        except (ModelError, OSError):
            return False
        if self.served is None:
            return True
        return directory != self.served.path or stamp != self.served.stamp

    async def _watch(self) -> None:
        assert self.poll_s is not None
        while True:
            await asyncio.sleep(self.poll_s)
            await self.check_model()

    async def check_model(self) -> bool:
        """Reload when the checkpoint at path changed (the poll, or a promotion notice:
        one check at a time, so both at once load it once)."""
        async with self._checking:
            return self._changed() and await self.reload()

    async def reload(self) -> bool:
        """Load the checkpoint at path now; keep serving the old one if it is broken."""
        try:
            served = await asyncio.to_thread(ServedModel.load_with, self.path, self.options)
        except (ModelError, OSError, ValueError, json.JSONDecodeError) as exc:
            log.error(
                "new checkpoint at %s not loaded, still serving %s: %s",
                self.path,
                self.version,
                exc,
            )
            return False
        if self._process and self._started:
            try:
                await self._start_worker(served)
            except ModelError as exc:
                log.error(
                    "scoring worker did not load %s, still serving %s: %s",
                    served.version,
                    self.version,
                    exc,
                )
                return False
        if served.version != self.version:
            log.info("serving model %s (was %s)", served.version, self.version)
        # old states rebuild lazily; the old version's worker is closed once no job
        # waits for it (_retire_workers, after each batch)
        self.served = served
        return True

    def figures(self) -> dict[str, float]:
        return {
            "liverec_model_sessions": float(len(self.states)),
            "liverec_model_batches_total": float(self.batches),
            "liverec_model_batched_events_total": float(self.batched_events),
            "liverec_model_worker_starts_total": float(self.worker_starts),
            "liverec_model_threads": float(self.torch_threads),
        }

    def stats(self) -> dict[str, float]:
        """`figures` under short names, with the mean batch (for tools and tests)."""
        f = {
            k.removeprefix("liverec_model_").removesuffix("_total"): v
            for k, v in self.figures().items()
        }
        f["mean_batch"] = f["batched_events"] / f["batches"] if f["batches"] else 0.0
        return f
