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
loop itself writes each request to the worker's socket and hands each answer to its
caller from the socket's data callback (an asyncio Protocol). The worker receives
plain lists and hidden-state bytes and returns the same (a hybrid's extra items and
their scores as raw bytes too); the server keeps the session states, so a worker
that dies is replaced without losing any session.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import multiprocessing as mp
import os
import pickle
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...errors import ModelError
from .served import Extra, ServedModel, ServeOptions

log = logging.getLogger("liverec.gru")

Ranked = list[tuple[int, float]]  # (item index, exact score), best first
# A worker that does not answer in time (the model_score_timeout_s setting) is killed
# and replaced; the batch it held is scored on the server's thread instead (a batch
# takes milliseconds; a start, which loads the checkpoint and takes the SVD of a large
# item matrix, can take a minute).
LOAD_TIMEOUT_S = 300.0


@dataclass(slots=True)
class ScoreInput:
    feed: list[int]  # item indices to consume, oldest first
    # hidden state (L, H) to start from, as a tensor or as the float32 bytes a worker
    # returned (the server only hands them back); None = zero (a new session)
    start: Tensor | bytes | None
    blocked: list[int]  # item indices never to recommend
    want: int  # items to return (beyond the blocked ones)
    # a hybrid's: items whose exact scores are wanted, with the moments of every
    # item's score (served.Extra); the model must be prepared with the moments
    extra: np.ndarray | None = None  # int64 or int32; travels as int32 bytes (_extra_out)


Scored = tuple[Ranked, Tensor, Extra | None]  # ranked, new hidden state (L, H), extra


def score_batch(served: ServedModel, inputs: list[ScoreInput], rescore: int) -> list[Scored]:
    """Advance every session by its feed, score, return (ranked candidates, new hidden
    state (L, H), the Extra asked or None) per input."""
    ranked, hidden, extras = score_rows(served, inputs, rescore)
    return [(r, hidden[i].clone(), extras[i]) for i, r in enumerate(ranked)]


def score_rows(
    served: ServedModel, inputs: list[ScoreInput], rescore: int
) -> tuple[list[Ranked], Tensor, list[Extra | None]]:
    """`score_batch` with the new hidden states as one contiguous (B, L, H) tensor.

    One batched GRU step for the last item of every input; replays (new or rebuilt
    sessions) step through the earlier items one by one. Per batch, not per row: the
    blocked items are marked in the shortlist's own scores, and the lists come out of
    one conversion to Python."""
    model = served.model
    table = model.input_table
    with torch.inference_mode():
        shape = (len(model.config.layers), max(model.config.layers))  # (L, H)
        starts = _starts(inputs, shape)  # (B, L, H)
        for r, inp in enumerate(inputs):
            if len(inp.feed) > 1:
                hb = starts[r].unsqueeze(1)  # (L, 1, H)
                for item in inp.feed[:-1]:
                    _, hb = model.step(table[item : item + 1], hb)
                starts[r] = hb[:, 0]
        hidden = starts.transpose(0, 1)  # (L, B, H) view
        stepping = [i for i, inp in enumerate(inputs) if inp.feed]
        if len(stepping) == len(inputs):
            items = torch.tensor([inp.feed[-1] for inp in inputs])
            _, hidden = model.step(table.index_select(0, items), hidden)
        elif stepping:
            rows = torch.tensor(stepping)
            items = torch.tensor([inputs[i].feed[-1] for i in stepping])
            _, new = model.step(table.index_select(0, items), hidden.index_select(1, rows))
            hidden = hidden.clone()
            hidden.index_copy_(1, rows, new)
        out = hidden[-1, :, : model.config.hidden_size]  # (B, H): top layer = output
        width = max(inp.want for inp in inputs) + rescore
        blocked = [inp.blocked for inp in inputs]
        cand, marked = served.shortlist_marked(out, blocked, width)  # (B, C) each
        exact = served.exact(out, cand).masked_fill_(marked, float("-inf"))  # (B, C)
        exact, order = torch.sort(exact, dim=1, descending=True)
        cand = torch.gather(cand, 1, order)
        keep = min(cand.shape[1], max(inp.want + len(inp.blocked) for inp in inputs))
        ids, scores = cand[:, :keep].tolist(), exact[:, :keep].tolist()
        ranked = []
        for r, inp in enumerate(inputs):
            n = inp.want + len(inp.blocked)
            pairs = zip(ids[r][:n], scores[r][:n], strict=True)
            ranked.append([(i, s) for i, s in pairs if s != -math.inf])
        extras: list[Extra | None] = [None] * len(inputs)
        asked = [(r, inp.extra) for r, inp in enumerate(inputs) if inp.extra is not None]
        if asked:
            for (r, _), extra in zip(asked, served.extras(out, asked), strict=True):
                extras[r] = extra
        return ranked, hidden.transpose(0, 1).contiguous(), extras


def _starts(inputs: list[ScoreInput], shape: tuple[int, int]) -> Tensor:
    """The inputs' start states as one new (B, L, H) tensor (zeros for None)."""
    raw = [(r, inp.start) for r, inp in enumerate(inputs) if isinstance(inp.start, bytes)]
    if raw:
        flat = np.frombuffer(bytearray(b"".join(b for _, b in raw)), np.float32)
        block = torch.from_numpy(flat).view(len(raw), *shape)
        if len(raw) == len(inputs):  # the common case: every session continues
            return block
    out = torch.zeros((len(inputs), *shape))
    if raw:
        out.index_copy_(0, torch.tensor([r for r, _ in raw]), block)
    for r, inp in enumerate(inputs):
        if isinstance(inp.start, Tensor):
            out[r] = inp.start
    return out


# --- the worker process -------------------------------------------------------------
# One worker serves one prepared checkpoint (a new model gets a new worker, so a hot
# reload never stalls the scoring of the current one). Frames on a private socket
# pair, in multiprocessing's Connection format (4-byte big-endian length, then a
# pickle; only this process and its own child can write them):
#   worker, once started:  ("ready", version) | ("error", text)
#   ("score", rescore, [(feed, start bytes | None, blocked, want, extra), ...])
#        -> ("ok", [(ranked, hidden bytes, extra answer), ...]) | ("error", text)
# Answers come in the order of the requests. A hybrid's extra items travel as int32
# bytes and their answer as (float32 score bytes, mean, sd), None when not asked:
# raw bytes cost a quarter of an array's pickling, both ways (Extra on either side).


def _items_out(extra: np.ndarray | None) -> bytes | None:
    return None if extra is None else extra.astype(np.int32, copy=False).tobytes()


def _items_in(raw: bytes | None) -> np.ndarray | None:
    return None if raw is None else np.frombuffer(raw, dtype=np.int32)


ExtraWire = tuple[bytes, float, float] | None


def _extra_out(extra: Extra | None) -> ExtraWire:
    return None if extra is None else (extra.scores.tobytes(), extra.mean, extra.sd)


def _extra_in(wire: ExtraWire) -> Extra | None:
    if wire is None:
        return None
    scores, mean, sd = wire
    return Extra(np.frombuffer(scores, dtype=np.float32), mean, sd)


def _to_bytes(t: Tensor) -> bytes:
    return t.contiguous().numpy().tobytes()


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
    while True:
        try:
            msg = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        try:
            if msg[0] != "score":
                raise ValueError(f"unknown message {msg[0]!r}")
            _, rescore, raw = msg
            inputs = [ScoreInput(f, s, b, w, _items_in(x)) for f, s, b, w, x in raw]
            ranked, hidden, extras = score_rows(served, inputs, rescore)  # (B, L, H)
            rows = hidden.numpy()
            done = [(r, rows[i].tobytes(), _extra_out(extras[i])) for i, r in enumerate(ranked)]
            reply: tuple[str, Any] = ("ok", done)
        except Exception as exc:
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            conn.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
        except (EOFError, OSError):
            return


Answer = Callable[[list[tuple[Ranked, bytes, Extra | None]] | None, ModelError | None], None]


class ScoringWorker:
    """A scoring worker process for one prepared checkpoint, driven from the event loop.

    `submit` writes a request to the worker's socket and returns at once; the answer is
    handed to the request's callback straight from the socket's data callback (no
    reader task, no future chain: each of those would cost the answer another turn of
    a busy event loop). Answers come in request order. A failure (death, an answer
    overdue by its timeout, an error answer) is handed to the callbacks as a
    ModelError; a dead or hung worker is killed, `alive` turns False and the owner
    starts a new one."""

    def __init__(self, served: ServedModel, threads: int = 1, timeout_s: float = 10.0) -> None:
        """`timeout_s`: how long an answer may take before the worker is killed."""
        self.version = served.version
        self.timeout_s = timeout_s
        self._path = str(served.path)
        self._options = served.options
        self.threads = threads
        self._proc: Any = None
        self._transport: asyncio.Transport | None = None
        self._pending: collections.deque[tuple[float, Answer]] = collections.deque()
        self._ready: asyncio.Future[None] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._dead: ModelError | None = None

    @property
    def alive(self) -> bool:
        return self._dead is None and self._transport is not None and self._ready is None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else int(self._proc.pid)

    async def start(self) -> None:
        """Spawn the worker and wait until it has loaded the model (LOAD_TIMEOUT_S)."""
        loop = asyncio.get_running_loop()
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
        self._ready = loop.create_future()
        transport, _ = await loop.connect_accepted_socket(lambda: _Frames(self), sock)
        self._transport = transport  # type: ignore[assignment]
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), LOAD_TIMEOUT_S)
        except TimeoutError:
            self._fail(ModelError(f"scoring worker not ready in {LOAD_TIMEOUT_S:g} s"))
        except ModelError:
            pass
        self._ready = None
        if self._dead is not None:
            await self.close()
            raise self._dead

    def submit(self, inputs: list[ScoreInput], rescore: int, answer: Answer) -> None:
        """Send one batch; `answer` gets ([(ranked, hidden bytes, extra)], None) or (None,
        error), always later, from the event loop. The hidden states travel as float32
        bytes and come back as bytes: the server only stores them and sends them back."""
        if not self.alive:
            raise ModelError(f"scoring worker is not running ({self._dead!r})")
        assert self._transport is not None
        raw = [
            (
                i.feed,
                _to_bytes(i.start) if isinstance(i.start, Tensor) else i.start,
                i.blocked,
                i.want,
                _items_out(i.extra),
            )
            for i in inputs
        ]
        payload = pickle.dumps(("score", rescore, raw), protocol=pickle.HIGHEST_PROTOCOL)
        self._transport.write(struct.pack("!i", len(payload)) + payload)
        loop = asyncio.get_running_loop()
        self._pending.append((loop.time() + self.timeout_s, answer))
        if self._watchdog is None:
            self._watchdog = loop.call_later(self.timeout_s, self._check_overdue)

    def _check_overdue(self) -> None:
        self._watchdog = None
        if not self._pending or self._dead is not None:
            return
        loop = asyncio.get_running_loop()
        deadline = self._pending[0][0]
        if loop.time() >= deadline:
            self._fail(ModelError(f"scoring worker gave no answer in {self.timeout_s:g} s"))
        else:
            self._watchdog = loop.call_at(deadline, self._check_overdue)

    def _frame(self, data: bytes) -> None:
        """One frame from the worker (called by the protocol)."""
        kind, value = pickle.loads(data)
        if self._ready is not None:  # the first frame says whether the model loaded
            if not self._ready.done():
                if kind == "ready":
                    self._ready.set_result(None)
                else:
                    self._fail(ModelError(f"scoring worker did not load the model: {value}"))
            return
        if not self._pending:
            return
        _, answer = self._pending.popleft()
        if kind == "ok":
            answer([(r, h, _extra_in(x)) for r, h, x in value], None)
        else:  # the batch failed in the worker (the worker itself still runs)
            answer(None, ModelError(f"scoring worker: {value}"))

    def _fail(self, exc: ModelError, quiet: bool = False) -> None:
        """Mark dead, kill the process, hand the error to every request still out."""
        if self._dead is None:
            self._dead = exc
            if self._proc is not None and self._proc.is_alive():
                if not quiet:
                    log.error("%s; killing it", exc)
                self._proc.kill()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(exc)
            self._ready.exception()  # retrieved: start() reads self._dead
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self._pending:
            _, answer = self._pending.popleft()
            answer(None, exc)

    async def close(self) -> None:
        self._fail(ModelError("scoring worker closed"), quiet=True)
        if self._transport is not None:
            self._transport.close()
        if self._proc is not None:
            await asyncio.to_thread(self._proc.join, 5)


class _Frames(asyncio.Protocol):
    """Splits the worker's byte stream into frames (Connection format) for its client."""

    def __init__(self, client: ScoringWorker) -> None:
        self.client = client
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        while len(buf) >= 4:
            (n,) = struct.unpack_from("!i", buf)
            start = 4
            if n == -1:  # Connection's header for frames over 2 GiB
                if len(buf) < 12:
                    return
                (n,) = struct.unpack_from("!Q", buf, 4)
                start = 12
            if len(buf) < start + n:
                return
            frame = bytes(buf[start : start + n])
            del buf[: start + n]
            self.client._frame(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._fail(ModelError(f"scoring worker died: {exc!r}"))
