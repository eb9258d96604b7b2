"""Serving GRU4Rec: one GRU step per event, micro-batched, with hot reload.

Owns: the hidden state of each live session (in memory, LRU-bounded), the
micro-batcher that scores the events of many sessions in one forward pass on a
dedicated thread, fast top-k (int8 scoring of every item, then exact float32
re-scoring of the best candidates), the business rules on the model's lists, the
fallback to the online recommender (empty sessions, items the model does not
know), and picking up a new checkpoint without dropping a socket.

Cost per event: one GRU step plus one scoring pass. A session whose state is not
here (new process, new model version, evicted) is rebuilt from the stored item
sequence by replaying its last `model_replay_max` items.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import warnings
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import Settings
from ..errors import ModelError
from ..model.checkpoint import META, load_checkpoint
from ..model.data import ItemIndex
from ..model.gru4rec import GRU4Rec
from ..types import Event, Rec
from .base import (
    RecContext,
    RecList,
    Recommender,
    apply_rules,
    blocked_items,
    demote_low_rated,
)

log = logging.getLogger("liverec.gru")

CURRENT = "CURRENT"  # in a models/ registry: names the promoted version's directory


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint directory, or the one a registry's CURRENT file names."""
    if (path / META).is_file():
        return path
    pointer = path / CURRENT
    if pointer.is_file():
        name = pointer.read_text().strip()
        target = (path / name).resolve()
        if path.resolve() not in target.parents or not (target / META).is_file():
            raise ModelError(f"{pointer} names {name!r}, which is not a checkpoint in {path}")
        return target
    raise ModelError(f"no checkpoint at {path} (no {META}, no {CURRENT})")


def _quantize(weight: Tensor, bias: Tensor) -> Any | None:
    """Prepacked per-row int8 weights for fbgemm's dynamic linear, or None."""
    engines = torch.backends.quantized.supported_engines
    engine = "x86" if "x86" in engines else "fbgemm" if "fbgemm" in engines else None
    if engine is None:
        return None
    torch.backends.quantized.engine = engine
    scale = (weight.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()  # (n,)
    zero = torch.zeros(weight.shape[0], dtype=torch.int64)
    with warnings.catch_warnings():
        # The eager quantized ops are marked deprecated in favour of torchao; they are
        # still the fastest int8 GEMM that ships with torch on the CPU.
        warnings.simplefilter("ignore")
        q = torch.quantize_per_channel(weight, scale, zero, 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(q, bias)


def _low_rank(weight: Tensor, bias: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """A rank-r factorisation of the scoring function out -> weight @ out + bias.

    SVD of [weight | bias] (n, H+1) = U S Vh; returns proj (H+1, r) = Vh[:r].T and
    items (n, r) = U[:, :r] * S[:r], so that [out, 1] @ proj @ items.T approximates
    every item's score at r/H of the cost.
    """
    wb = torch.cat([weight, bias.unsqueeze(1)], dim=1).double()  # (n, H+1)
    u, sv, vh = torch.linalg.svd(wb, full_matrices=False)
    return vh[:rank].t().float().contiguous(), (u[:, :rank] * sv[:rank]).float().contiguous()


@dataclass
class ServedModel:
    """A loaded checkpoint ready to score: fp32 weights plus what makes the shortlist
    cheap (int8 prepacked item rows, optionally a low-rank factorisation)."""

    version: str
    model: GRU4Rec
    index: ItemIndex
    path: Path
    packed: Any | None  # int8 rows: full-rank shortlist (None: exact fp32 or low rank)
    stamp: float
    proj: Tensor | None = None  # (H+1, r) low-rank shortlist: query projection
    packed_low: Any | None = None  # (n, r) item factors, int8 prepacked

    @classmethod
    def load(cls, path: Path, quantize: bool, rank: int = 0) -> ServedModel:
        """Load a checkpoint (or a registry's current one) for serving."""
        directory = resolve_checkpoint(path)
        model, _, index, meta = load_checkpoint(directory)
        version = str(meta.get("version") or directory.name)
        stamp = (directory / META).stat().st_mtime
        return cls.prepare(model, index, quantize, rank, version, directory, stamp)

    @classmethod
    def prepare(
        cls,
        model: GRU4Rec,
        index: ItemIndex,
        quantize: bool,
        rank: int = 0,
        version: str = "",
        path: Path = Path("."),
        stamp: float = 0.0,
    ) -> ServedModel:
        """rank > 0 (and below the hidden size): shortlist with a rank-r factorisation
        of the item matrix scored in int8; else int8 (quantize) or exact fp32."""
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        weight, bias = model.item_weight.data, model.item_bias.data
        packed = proj = packed_low = None
        if 0 < rank < weight.shape[1]:
            proj, items = _low_rank(weight, bias, rank)
            packed_low = _quantize(items, torch.zeros(items.shape[0]))
            if packed_low is None:  # no int8 engine: the factors in fp32
                packed_low = items
        elif quantize:
            packed = _quantize(weight, bias)
        return cls(version, model, index, path, packed, stamp, proj, packed_low)

    def item_scores(self, out: Tensor) -> Tensor:
        """Approximate (low-rank or int8) or exact scores of every item: (B, n_items)."""
        if self.proj is not None:
            h = self.proj.shape[0] - 1
            q = torch.addmm(self.proj[h], out, self.proj[:h])  # (B, r)
            if isinstance(self.packed_low, Tensor):
                return q @ self.packed_low.t()
            low: Tensor = torch.ops.quantized.linear_dynamic(q, self.packed_low)
            return low
        if self.packed is not None:
            scores: Tensor = torch.ops.quantized.linear_dynamic(out, self.packed)
            return scores
        return self.model.score_all(out)

    def shortlist(self, out: Tensor, blocked: list[list[int]], width: int) -> Tensor:
        """The `width` best candidates of each row by the cheap scores, blocked items
        excluded: (B, C) item indices, C = min(width, n_items)."""
        scores = self.item_scores(out)  # (B, n_items)
        for r, rows in enumerate(blocked):
            if rows:
                scores[r, rows] = float("-inf")
        return torch.topk(scores, min(width, scores.shape[1]), dim=1).indices

    def exact(self, out: Tensor, cand: Tensor) -> Tensor:
        """Exact scores of candidate items cand (B, C) for outputs out (B, H): (B, C)."""
        w = self.model.item_weight.index_select(0, cand.reshape(-1)).view(*cand.shape, -1)
        b = self.model.item_bias.index_select(0, cand.reshape(-1)).view(cand.shape)
        return torch.baddbmm(b.unsqueeze(2), w, out.unsqueeze(2)).squeeze(2)  # (B, C)


@dataclass
class _State:
    version: str
    position: int  # session position this state has consumed up to
    hidden: Tensor  # (L, H)


@dataclass
class _Job:
    session_id: str
    feed: list[int]  # item indices to consume, oldest first
    start: Tensor | None  # hidden state (L, H) to start from; None = zero (new session)
    blocked: list[int]  # item indices never to recommend
    want: int  # candidates to return
    position: int
    future: asyncio.Future[list[tuple[int, float]]] = field(repr=False)
    served: ServedModel | None = field(default=None, repr=False)  # the model it was made for
    hidden: Tensor | None = None  # filled by the worker


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
        replay_max: int = 50,
        poll_s: float | None = 2.0,
    ) -> None:
        self.path = Path(path)
        self.fallback = fallback
        self.threads = threads
        self.max_batch = max_batch
        self.max_sessions = max_sessions
        self.rescore = rescore
        self.quantize = quantize
        self.rank = rank
        self.replay_max = replay_max
        self.poll_s = poll_s
        # An empty models/ registry (no CURRENT yet: the learner has not promoted a
        # first model) is served by the fallback until a checkpoint appears; a path
        # that does not exist at all is a configuration error.
        self.served: ServedModel | None = None
        try:
            self.served = ServedModel.load(self.path, quantize, rank)
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
        job = _Job(
            ctx.session_id,
            feed,
            start,
            blocked,
            ctx.k,
            ctx.position,
            asyncio.get_running_loop().create_future(),
            served,
        )
        if self._wakeup is None:  # not started (tests, tools): run inline
            await asyncio.get_running_loop().run_in_executor(
                self._executor, self._compute, served, [job]
            )
        else:
            self._queue.append(job)
            self._wakeup.set()
        ranked = await job.future
        if job.hidden is not None and self.served is served:
            self._remember(ctx.session_id, _State(served.version, ctx.position, job.hidden))
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
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                # A job is scored by the model it was queued for (its item indices are
                # that model's), even if a reload swapped the served model meanwhile.
                served = self._queue[0].served
                assert served is not None
                jobs = [j for j in self._queue[: self.max_batch] if j.served is served]
                taken = {id(j) for j in jobs}
                self._queue = [j for j in self._queue if id(j) not in taken]
                try:
                    await loop.run_in_executor(self._executor, self._compute, served, jobs)
                except Exception as exc:
                    log.exception("scoring batch failed")
                    for job in jobs:
                        if not job.future.done():
                            job.future.set_exception(exc)

    def _compute(self, served: ServedModel, jobs: list[_Job]) -> None:
        """Worker thread: advance every job's state, score, pick candidates."""
        try:
            results = self._score(served, jobs)
        except Exception as exc:
            for job in jobs:
                self._settle(job, None, exc)
            return
        for job, ranked in zip(jobs, results, strict=True):
            self._settle(job, ranked, None)

    @staticmethod
    def _settle(job: _Job, ranked: list[tuple[int, float]] | None, exc: Exception | None) -> None:
        loop = job.future.get_loop()

        def done() -> None:
            if job.future.done():
                return
            if exc is not None:
                job.future.set_exception(exc)
            else:
                assert ranked is not None
                job.future.set_result(ranked)

        loop.call_soon_threadsafe(done)

    def _score(self, served: ServedModel, jobs: list[_Job]) -> list[list[tuple[int, float]]]:
        model = served.model
        table = model.input_table
        with torch.inference_mode():
            starts = []
            for job in jobs:
                h = job.start if job.start is not None else model.init_hidden(1)[:, 0]  # (L, H)
                # Replays (new or rebuilt sessions) step through all but the last item
                # alone; the last item of every job goes through one batched step.
                if len(job.feed) > 1:
                    hb = h.unsqueeze(1)  # (L, 1, H)
                    for item in job.feed[:-1]:
                        _, hb = model.step(table[item : item + 1], hb)
                    h = hb[:, 0]
                starts.append(h)
            hidden = torch.stack(starts, dim=1)  # (L, B, H)
            stepping = [i for i, job in enumerate(jobs) if job.feed]
            if stepping:
                rows = torch.tensor(stepping)
                items = torch.tensor([jobs[i].feed[-1] for i in stepping])
                _, new = model.step(table.index_select(0, items), hidden.index_select(1, rows))
                hidden.index_copy_(1, rows, new)
            out = hidden[-1, :, : model.config.hidden_size]  # (B, H): top layer = output
            width = max(job.want for job in jobs) + self.rescore
            cand = served.shortlist(out, [job.blocked for job in jobs], width)  # (B, C)
            exact = served.exact(out, cand)  # (B, C)
            for r, job in enumerate(jobs):
                if job.blocked:
                    exact[r][torch.isin(cand[r], torch.tensor(job.blocked))] = float("-inf")
            order = torch.argsort(exact, dim=1, descending=True)
            cand = torch.gather(cand, 1, order)
            exact = torch.gather(exact, 1, order)
            for r, job in enumerate(jobs):
                job.hidden = hidden[:, r].clone()
        self.batches += 1
        self.batched_events += len(jobs)
        results = []
        for r, job in enumerate(jobs):
            keep = job.want + len(job.blocked)
            pairs = zip(cand[r, :keep].tolist(), exact[r, :keep].tolist(), strict=True)
            results.append([(i, s) for i, s in pairs if s != float("-inf")])
        return results

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
            served = await asyncio.to_thread(
                ServedModel.load, self.path, self.quantize, self.rank
            )
        except (ModelError, OSError, ValueError, json.JSONDecodeError) as exc:
            log.error(
                "new checkpoint at %s not loaded, still serving %s: %s",
                self.path,
                self.version,
                exc,
            )
            return False
        if served.version != self.version:
            log.info("serving model %s (was %s)", served.version, self.version)
        self.served = served  # states of the old version rebuild lazily
        return True

    def stats(self) -> dict[str, float]:
        mean = self.batched_events / self.batches if self.batches else 0.0
        return {"sessions": len(self.states), "batches": self.batches, "mean_batch": mean}


__all__ = ["GRURecommender", "Rec", "ServedModel", "resolve_checkpoint"]
