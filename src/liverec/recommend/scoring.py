"""Scoring a micro-batch of sessions, in this process or in a scoring worker process.

Owns: `score_batch` (advance each session's hidden state by its new items, shortlist,
re-score exactly, rank) and `ScoringWorker`, a child process that runs it for one
prepared checkpoint with its own interpreter, driven straight from the event loop.

Why a process: with the model on a thread of the server process, every torch call
releases the GIL and must take it back from a busy event loop, each time waiting up
to the interpreter's switch interval (5 ms). Measured at 1,000 events/s (trained
Diginetica model, docs/benchmarks.md), the scoring thread was ~70 % busy and the
event loop ~65 %, yet recs waited 50-110 ms at the median. Why no thread on the
server's side of the pipe either: a thread that sends, waits and unpickles must take
the GIL back from the loop after each blocking call, with the same waits; so the
loop itself writes each request to the worker's socket and reads the answers as they
come (asyncio streams). The worker receives plain lists and hidden-state bytes and
returns the same; the server keeps the session states, so a worker that dies is
replaced without losing any session.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import multiprocessing as mp
import os
import pickle
import socket
import struct
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
# scored on the server's thread instead (a batch takes milliseconds; a start, which
# loads the checkpoint and takes the SVD of a large item matrix, can take a minute).
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
# One worker serves one prepared checkpoint (a new model gets a new worker, so a hot
# reload never stalls the scoring of the current one). Frames on a private socket
# pair, in multiprocessing's Connection format (4-byte big-endian length, then a
# pickle; only this process and its own child can write them):
#   worker, once started:  ("ready", version) | ("error", text)
#   ("score", rescore, [(feed, start bytes | None, blocked, want), ...])
#        -> ("ok", [(ranked, hidden bytes), ...]) | ("error", text)
# Answers come in the order of the requests.


def _to_bytes(t: Tensor) -> bytes:
    return t.contiguous().numpy().tobytes()


def _from_bytes(data: bytes, shape: torch.Size) -> Tensor:
    return torch.from_numpy(np.frombuffer(data, np.float32).copy()).view(shape)


def _worker_main(
    conn: Connection, threads: int, path: str, options: ServeOptions
) -> None:  # pragma: no cover (child)
    torch.set_num_threads(threads)
    try:
        served = ServedModel.load_with(Path(path), options)
    except Exception as exc:
        conn.send_bytes(pickle.dumps(("error", f"{type(exc).__name__}: {exc}")))
        return
    conn.send_bytes(pickle.dumps(("ready", served.version)))
    shape = served.model.init_hidden(1)[:, 0].shape  # (L, H)
    while True:
        try:
            msg = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        try:
            if msg[0] != "score":
                raise ValueError(f"unknown message {msg[0]!r}")
            _, rescore, raw = msg
            inputs = [
                ScoreInput(feed, None if h is None else _from_bytes(h, shape), blocked, want)
                for feed, h, blocked, want in raw
            ]
            out = score_batch(served, inputs, rescore)
            reply: tuple[str, Any] = ("ok", [(r, _to_bytes(h)) for r, h in out])
        except Exception as exc:
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            conn.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
        except (EOFError, OSError):
            return


class ScoringWorker:
    """A scoring worker process for one prepared checkpoint, driven from the event loop:
    requests are written to its socket, answers read by a reader task and handed to
    their callers in order. Any failure (death, a timeout, an error answer) raises
    ModelError to the caller; a dead or hung worker is killed and `alive` turns False,
    and the owner starts a new one."""

    def __init__(self, served: ServedModel, threads: int = 1) -> None:
        self.version = served.version
        self._path = str(served.path)
        self._options = served.options
        self._shape = served.model.init_hidden(1)[:, 0].shape  # (L, H)
        self.threads = threads
        self._proc: Any = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._dead: BaseException | None = None

    @property
    def alive(self) -> bool:
        return self._dead is None and self._writer is not None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else int(self._proc.pid)

    async def start(self) -> None:
        """Spawn the worker and wait until it has loaded the model (LOAD_TIMEOUT_S)."""
        ctx = mp.get_context("spawn")  # never fork a process that runs torch threads
        parent, child = ctx.Pipe(duplex=True)  # a Unix socket pair
        proc = ctx.Process(
            target=_worker_main,
            args=(child, self.threads, self._path, self._options),
            name="liverec-scorer",
            daemon=True,
        )
        try:
            await asyncio.to_thread(proc.start)
        finally:
            child.close()
        self._proc = proc
        sock = socket.socket(fileno=os.dup(parent.fileno()))
        parent.close()
        reader, self._writer = await asyncio.open_unix_connection(sock=sock)
        ready = asyncio.get_running_loop().create_future()
        self._pending.append(ready)
        self._reader_task = asyncio.create_task(self._read(reader), name="liverec-scorer-read")
        try:
            await self._wait(ready, LOAD_TIMEOUT_S)
        except ModelError:
            await self.close()
            raise

    async def score(self, inputs: list[ScoreInput], rescore: int) -> list[tuple[Ranked, Tensor]]:
        """Score one batch in the worker (the hidden states travel as bytes)."""
        if not self.alive:
            raise ModelError(f"scoring worker is not running ({self._dead!r})")
        assert self._writer is not None
        raw = [
            (i.feed, None if i.start is None else _to_bytes(i.start), i.blocked, i.want)
            for i in inputs
        ]
        payload = pickle.dumps(("score", rescore, raw), protocol=pickle.HIGHEST_PROTOCOL)
        answer = asyncio.get_running_loop().create_future()
        self._pending.append(answer)
        self._writer.write(struct.pack("!i", len(payload)) + payload)
        out = await self._wait(answer, SCORE_TIMEOUT_S)
        return [(ranked, _from_bytes(h, self._shape)) for ranked, h in out]

    async def _wait(self, answer: asyncio.Future[Any], timeout: float) -> Any:
        try:
            kind, value = await asyncio.wait_for(asyncio.shield(answer), timeout)
        except TimeoutError:
            self._fail(ModelError(f"scoring worker gave no answer in {timeout:g} s"))
            raise ModelError(f"scoring worker gave no answer in {timeout:g} s") from None
        if kind == "error":
            raise ModelError(f"scoring worker: {value}")
        return value

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                (n,) = struct.unpack("!i", await reader.readexactly(4))
                if n == -1:  # Connection's header for frames over 2 GiB
                    (n,) = struct.unpack("!Q", await reader.readexactly(8))
                answer = pickle.loads(await reader.readexactly(n))
                if self._pending:
                    fut = self._pending.popleft()
                    if not fut.done():
                        fut.set_result(answer)
        except (asyncio.IncompleteReadError, OSError) as exc:
            self._fail(ModelError(f"scoring worker died: {exc!r}"))

    def _fail(self, exc: ModelError, quiet: bool = False) -> None:
        """Mark dead, kill the process, fail every caller still waiting."""
        if self._dead is None:
            self._dead = exc
            if self._proc is not None and self._proc.is_alive():
                if not quiet:
                    log.error("%s; killing it", exc)
                self._proc.kill()
        while self._pending:
            fut = self._pending.popleft()
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: a caller that timed out never awaits it

    async def close(self) -> None:
        self._fail(ModelError("scoring worker closed"), quiet=True)
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        if self._writer is not None:
            self._writer.close()
        if self._proc is not None:
            await asyncio.to_thread(self._proc.join, 5)
