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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..config import Settings
from ..errors import ModelError
from ..model.checkpoint import META
from ..types import Event, Rec
from .base import (
    RecContext,
    RecList,
    Recommender,
    apply_rules,
    blocked_items,
    demote_low_rated,
)
from .scoring import Ranked, ScoreInput, ScoringWorker, score_batch
from .served import CURRENT, ServedModel, ServeOptions, _low_rank, _quantize, resolve_checkpoint

log = logging.getLogger("liverec.gru")


@dataclass
class _State:
    version: str
    position: int  # session position this state has consumed up to
    hidden: Tensor  # (L, H)


@dataclass
class _Job:
    inp: ScoreInput  # what to score
    future: asyncio.Future[tuple[Ranked, Tensor]] = field(repr=False)  # (ranked, new hidden)
    served: ServedModel = field(repr=False)  # the model it was made for


class GRURecommender(Recommender):
    """GRU4Rec over an online fallback. Call only from the event loop thread."""

    def __init__(
        self,
        path: Path,
        fallback: Recommender,
        *,
        threads: int = 1,
        max_batch: int = 256,
        max_sessions: int = 50_000,
        rescore: int = 64,
        quantize: bool = True,
        rank: int = 0,
        quantize_gru: bool = False,
        process: bool = False,
        replay_max: int = 50,
        poll_s: float | None = 2.0,
    ) -> None:
        self.path = Path(path)
        self.fallback = fallback
        self.threads = threads
        self.max_batch = max_batch
        self.max_sessions = max_sessions
        self.rescore = rescore
        self.options = ServeOptions(quantize, rank, quantize_gru)
        # process=True: score in a worker process per served version (scoring.py), not
        # on a thread here; a dead worker is replaced in the background meanwhile
        self._process = process
        self._workers: dict[str, ScoringWorker] = {}
        self._replacing: dict[str, asyncio.Task[None]] = {}
        self.replay_max = replay_max
        self.poll_s = poll_s
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
        self._wakeup: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="liverec-gru")
        self._executor.submit(torch.set_num_threads, threads).result()
        self.batches = 0
        self.batched_events = 0
        self.worker_starts = 0

    @classmethod
    def from_settings(cls, settings: Settings, fallback: Recommender) -> GRURecommender:
        assert settings.model_path is not None
        return cls(
            Path(settings.model_path),
            fallback,
            threads=settings.model_threads,
            max_batch=settings.model_max_batch,
            max_sessions=settings.model_max_sessions,
            rescore=settings.model_rescore,
            quantize=settings.model_quantize,
            rank=settings.model_rank,
            quantize_gru=settings.model_quantize_gru,
            process=settings.model_process,
            replay_max=settings.model_replay_max,
            poll_s=settings.model_poll_s,
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
        self._wakeup = asyncio.Event()
        self._tasks.append(loop.create_task(self._batcher(), name="liverec-gru-batcher"))
        if self.poll_s:
            self._tasks.append(loop.create_task(self._watch(), name="liverec-model-watch"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
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
        if served is None:
            return await self.fallback.recommend(ctx)
        index = served.index.index
        if not ctx.items or (ctx.current_item is not None and ctx.current_item not in index):
            return await self.fallback.recommend(ctx)
        state = self.states.get(ctx.session_id)
        unseen = ctx.position - state.position if state is not None else -1
        if state is not None and state.version == served.version and 0 <= unseen <= len(ctx.items):
            tail = ctx.items[len(ctx.items) - unseen :] if unseen else []
            start: Tensor | None = state.hidden
        else:  # rebuild from the stored sequence
            tail, start = ctx.items[-self.replay_max :], None
        feed = [index[i] for i in tail if i in index]
        if start is None and not feed:
            return await self.fallback.recommend(ctx)
        blocked = [index[i] for i in blocked_items(ctx) if i in index]
        inp = ScoreInput(feed, start, blocked, ctx.k)
        if self._wakeup is None:  # not started (tests, tools): run inline
            ((ranked, hidden),) = await asyncio.get_running_loop().run_in_executor(
                self._executor, score_batch, served, [inp], self.rescore
            )
        else:
            job = _Job(inp, asyncio.get_running_loop().create_future(), served)
            self._queue.append(job)
            self._wakeup.set()
            ranked, hidden = await job.future
        if self.served is served:
            self._remember(ctx.session_id, _State(served.version, ctx.position, hidden))
        ids = served.index.ids
        items = demote_low_rated(apply_rules(((ids[i], s) for i, s in ranked), ctx), ctx.ratings)
        if len(items) < ctx.k:  # tiny catalogs: fill from the online model
            more = await self.fallback.recommend(ctx)
            have = {r.item_id for r in items}
            items += [r for r in more.items if r.item_id not in have][: ctx.k - len(items)]
        return RecList(items, served.version)

    def _remember(self, session_id: str, state: _State) -> None:
        self.states[session_id] = state
        self.states.move_to_end(session_id)
        while len(self.states) > self.max_sessions:
            self.states.popitem(last=False)

    async def _batcher(self) -> None:
        """Take every job queued while the previous batch ran: batches grow with load."""
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                # A job is scored by the model it was queued for (its item indices are
                # that model's), even if a reload swapped the served model meanwhile.
                served = self._queue[0].served
                jobs = [j for j in self._queue[: self.max_batch] if j.served is served]
                taken = {id(j) for j in jobs}
                self._queue = [j for j in self._queue if id(j) not in taken]
                try:
                    results = await self._score(served, [j.inp for j in jobs])
                except Exception as exc:
                    log.exception("scoring batch failed")
                    for job in jobs:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
                self.batches += 1
                self.batched_events += len(jobs)
                for job, result in zip(jobs, results, strict=True):
                    if not job.future.done():  # a caller may have gone (socket closed)
                        job.future.set_result(result)
                self._retire_workers()

    async def _score(
        self, served: ServedModel, inputs: list[ScoreInput]
    ) -> list[tuple[Ranked, Tensor]]:
        """In the version's worker process when it runs; else (none, dead, or failing
        this batch) on this process's scoring thread, while a new worker starts."""
        worker = self._workers.get(served.version)
        if worker is not None:
            if worker.alive:
                try:
                    return await worker.score(inputs, self.rescore)
                except ModelError as exc:
                    log.error("scoring worker failed, this batch scored here: %s", exc)
            if not worker.alive and served is self.served:
                self._replace_worker(served)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, score_batch, served, inputs, self.rescore)

    async def _start_worker(self, served: ServedModel) -> None:
        worker = ScoringWorker(served, self.threads)
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
        waiting = {j.served.version for j in self._queue}
        for version in [v for v in self._workers if v != current and v not in waiting]:
            task = asyncio.create_task(self._workers.pop(version).close())
            self._tasks.append(task)

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
            if not self._changed():
                continue
            await self.reload()

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
        if self._process and self._wakeup is not None:
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
        # old states rebuild lazily; the old version's worker is closed by the batcher
        # once no job waits for it
        self.served = served
        return True

    def stats(self) -> dict[str, float]:
        mean = self.batched_events / self.batches if self.batches else 0.0
        return {
            "sessions": len(self.states),
            "batches": self.batches,
            "mean_batch": mean,
            "worker_starts": self.worker_starts,
        }


__all__ = [
    "CURRENT",
    "GRURecommender",
    "Rec",
    "ServedModel",
    "_low_rank",
    "_quantize",
    "resolve_checkpoint",
]
