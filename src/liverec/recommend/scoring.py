"""Scoring a micro-batch of sessions, in this process or in a scoring worker process.

Owns: `score_batch` (advance each session's hidden state by its new items, shortlist,
re-score exactly, rank) and `ScoringProcess`, a child process that runs it with its
own interpreter, so the model's many short torch calls never wait for the event
loop's GIL (nor the loop for theirs).

Why a process: with the model on a thread of the server process, every torch call
releases the GIL and must take it back from a busy event loop, each time waiting up
to the interpreter's switch interval (5 ms). Measured at 1,000 events/s (trained
Diginetica model, docs/benchmarks.md), the scoring thread was ~70 % busy and the
event loop ~65 %, yet recs waited 50-110 ms at the median. The worker receives plain
lists and hidden-state bytes over a pipe and returns the same; the server keeps the
session states, so a worker that dies is restarted without losing any session.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ModelError
from .served import ServedModel, ServeOptions

log = logging.getLogger("liverec.gru")

Ranked = list[tuple[int, float]]  # (item index, exact score), best first
# A worker that does not answer in time is killed and replaced; the batch it held is
# scored on the server's thread instead (a batch takes milliseconds; a load, with the
# SVD of a large item matrix, can take a minute).
SCORE_TIMEOUT_S = 10.0
LOAD_TIMEOUT_S = 300.0


@dataclass(slots=True)
class ScoreInput:
    feed: list[int]  # item indices to consume, oldest first
    start: Tensor | None  # hidden state (L, H) to start from; None = zero (new session)
    blocked: list[int]  # item indices never to recommend
    want: int  # items to return (beyond the blocked ones)


def score_batch(
    served: ServedModel, inputs: list[ScoreInput], rescore: int
) -> list[tuple[Ranked, Tensor]]:
    """Advance every session by its feed, score, return (ranked candidates, new hidden
    state (L, H)) per input. One batched GRU step for the last item of every input;
    replays (new or rebuilt sessions) step through the earlier items one by one."""
    model = served.model
    table = model.input_table
    with torch.inference_mode():
        starts = []
        for inp in inputs:
            h = inp.start if inp.start is not None else model.init_hidden(1)[:, 0]  # (L, H)
            if len(inp.feed) > 1:
                hb = h.unsqueeze(1)  # (L, 1, H)
                for item in inp.feed[:-1]:
                    _, hb = model.step(table[item : item + 1], hb)
                h = hb[:, 0]
            starts.append(h)
        hidden = torch.stack(starts, dim=1)  # (L, B, H)
        stepping = [i for i, inp in enumerate(inputs) if inp.feed]
        if stepping:
            rows = torch.tensor(stepping)
            items = torch.tensor([inputs[i].feed[-1] for i in stepping])
            _, new = model.step(table.index_select(0, items), hidden.index_select(1, rows))
            hidden.index_copy_(1, rows, new)
        out = hidden[-1, :, : model.config.hidden_size]  # (B, H): top layer = output
        width = max(inp.want for inp in inputs) + rescore
        cand = served.shortlist(out, [inp.blocked for inp in inputs], width)  # (B, C)
        exact = served.exact(out, cand)  # (B, C)
        for r, inp in enumerate(inputs):
            if inp.blocked:
                exact[r][torch.isin(cand[r], torch.tensor(inp.blocked))] = float("-inf")
        order = torch.argsort(exact, dim=1, descending=True)
        cand = torch.gather(cand, 1, order)
        exact = torch.gather(exact, 1, order)
        results = []
        for r, inp in enumerate(inputs):
            keep = inp.want + len(inp.blocked)
            pairs = zip(cand[r, :keep].tolist(), exact[r, :keep].tolist(), strict=True)
            ranked = [(i, s) for i, s in pairs if s != float("-inf")]
            results.append((ranked, hidden[:, r].clone()))
    return results


# --- the worker process -------------------------------------------------------------
# Messages (pickled by multiprocessing over a private pipe; nothing else can write it):
#   ("load", version, path, ServeOptions)    -> ("ok", None) | ("error", text)
#   ("drop", version)                         -> ("ok", None)
#   ("score", version, rescore, [(feed, start bytes | None, blocked, want), ...])
#        -> ("ok", [(ranked, hidden bytes), ...]) | ("error", text)


def _to_bytes(t: Tensor) -> bytes:
    return t.contiguous().numpy().tobytes()


def _from_bytes(data: bytes, shape: torch.Size) -> Tensor:
    return torch.from_numpy(np.frombuffer(data, np.float32).copy()).view(shape)


def _worker_main(conn: Connection, threads: int) -> None:  # pragma: no cover (child)
    torch.set_num_threads(threads)
    models: dict[str, ServedModel] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        try:
            kind = msg[0]
            if kind == "score":
                _, version, rescore, raw = msg
                served = models[version]
                shape = served.model.init_hidden(1)[:, 0].shape  # (L, H)
                inputs = [
                    ScoreInput(feed, None if h is None else _from_bytes(h, shape), blocked, want)
                    for feed, h, blocked, want in raw
                ]
                out = score_batch(served, inputs, rescore)
                reply: tuple[str, Any] = ("ok", [(r, _to_bytes(h)) for r, h in out])
            elif kind == "load":
                _, version, path, options = msg
                models[version] = ServedModel.load_with(Path(path), options)
                reply = ("ok", None)
            elif kind == "drop":
                models.pop(msg[1], None)
                reply = ("ok", None)
            else:
                reply = ("error", f"unknown message {kind!r}")
        except Exception as exc:
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return


class ScoringProcess:
    """A scoring worker process and the pipe to it. Calls block: make them from one
    thread at a time (the recommender's scoring thread). Restarts a dead worker on the
    next call, reloading the models it held."""

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self._ctx = mp.get_context("spawn")  # never fork a process that runs torch threads
        self._proc: Any = None
        self._conn: Connection | None = None
        self._loaded: dict[str, tuple[str, ServeOptions]] = {}  # version -> (path, options)
        self._lock = threading.Lock()
        self.restarts = 0

    def _call(self, msg: tuple[Any, ...], timeout: float) -> Any:
        if self._conn is None or self._proc is None or not self._proc.is_alive():
            self._spawn()
        return self._exchange(msg, timeout)

    def _exchange(self, msg: tuple[Any, ...], timeout: float) -> Any:
        """Send one message and wait for its answer; a dead or hung worker is reaped."""
        assert self._conn is not None
        try:
            self._conn.send(msg)
            if not self._conn.poll(timeout):
                self._reap()  # hung: kill it; the next call starts a new one
                raise ModelError(f"scoring worker gave no answer in {timeout:g} s")
            kind, value = self._conn.recv()
        except (EOFError, OSError) as exc:
            self._reap()
            raise ModelError(f"scoring worker died: {exc!r}") from exc
        if kind != "ok":
            raise ModelError(f"scoring worker: {value}")
        return value

    def _spawn(self) -> None:
        self._reap()
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_worker_main, args=(child, self.threads), name="liverec-scorer", daemon=True
        )
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        if self.restarts or self._loaded:
            log.warning("scoring worker (re)started; reloading %d model(s)", len(self._loaded))
        self.restarts += 1
        for version, (path, options) in self._loaded.items():
            self._exchange(("load", version, path, options), LOAD_TIMEOUT_S)

    def _reap(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
        self._proc = self._conn = None

    def load(self, served: ServedModel) -> None:
        """Load `served`'s checkpoint, prepared the same way, into the worker."""
        with self._lock:
            path = str(served.path)
            self._call(("load", served.version, path, served.options), LOAD_TIMEOUT_S)
            self._loaded[served.version] = (path, served.options)

    @property
    def loaded(self) -> list[str]:
        return list(self._loaded)

    def drop(self, version: str) -> None:
        with self._lock:
            if self._loaded.pop(version, None) is not None:
                self._call(("drop", version), SCORE_TIMEOUT_S)

    def score(
        self, served: ServedModel, inputs: list[ScoreInput], rescore: int
    ) -> list[tuple[Ranked, Tensor]]:
        raw = [
            (i.feed, None if i.start is None else _to_bytes(i.start), i.blocked, i.want)
            for i in inputs
        ]
        with self._lock:
            out = self._call(("score", served.version, rescore, raw), SCORE_TIMEOUT_S)
        shape = served.model.init_hidden(1)[:, 0].shape
        return [(ranked, _from_bytes(h, shape)) for ranked, h in out]

    def close(self) -> None:
        with self._lock:
            self._reap()
