"""The embedded store: one SQLite file (or an in-memory database), no server needed.

Owns: `EmbeddedStore` -- URL options, opening and closing, the Store interface, group
commit (on the event loop, or on a writer thread for synchronous=FULL), when expired
rows are purged, and following the event log. What each transaction does in SQL is in
`sqlite_ops.py`, the schema and its migration in `sqlite_schema.py`, WAL checkpoints
in `sqlite_checkpoint.py`, the mapping of SQLite errors in `sqlite_errors.py`. Table
layout and durability are described in docs/storage.md.

Writes are grouped: each call appends its operation, and the pending operations run
in ONE transaction (up to `max_batch`), then each caller's future resolves. A
caller's event is durable once its future resolves, i.e. after the COMMIT that
contains it. Where that transaction runs depends on whether a commit waits for the
disk (`loop_writes`):

* **On the event loop** (``memory://``, and files with synchronous NORMAL or OFF):
  a commit is a write() into the WAL, no fsync. The first call of a loop iteration
  schedules one flush (``call_soon``); every write made during that iteration joins
  it, and the loop runs the group's statements and its COMMIT itself. Reads run at
  once on the same connection. (A COMMIT on a committer thread was built and
  measured at 1,000 events/s on 2 shared cores: it took no CPU off the loop's thread,
  added the thread's and doubled event latency, so it was removed; see
  docs/benchmarks.md.)
  A thread with its own connection checkpoints the WAL into the main file and starts
  it over (`checkpoint_interval_s`, `checkpoint_wal_bytes`; see `Checkpointer`): no
  fsync runs on the loop, whose connection has wal_autocheckpoint=0. In WAL mode with
  synchronous=NORMAL a committed transaction survives a crash of the process, not a
  power loss. When the write lock is taken (by another process such as ``liverec
  catalog``, or held for a WAL restart) a flush waits with ``call_later``, never in
  SQLite's busy handler on the loop.
  Why not a thread: a thread must take the GIL back after every SQLite call, and
  while the loop is busy each take waits up to the interpreter's switch interval.
* **On a writer thread** (synchronous FULL or EXTRA): each commit fsyncs, which must
  not stall the loop. The thread owns the connection, takes everything queued, runs
  it in one transaction (one fsync for the group), checkpoints and purges.

Expired rows (see `sqlite_ops.py`) are deleted by a purge step that runs on open and
every `purge_interval_s` (on the loop: transactions of at most `LOOP_PURGE_BUDGET_S`
of work, spaced by `LOOP_PURGE_PAUSE_S` while a backlog lasts).

Why one module of ~700 lines: the group commit, the places it runs (the loop or a
writer thread) and the open and close that choose between them share one queue and
one connection's life; the SQL, the schema, WAL checkpoints and the error mapping
already live beside it (sqlite_*.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl

from ..errors import ConfigError, LiverecError, StoreError, StoreUnavailable
from ..types import Event, Profile, SessionRecord
from .base import LoggedEvent, Store, StoreLimits
from .sqlite_checkpoint import (
    CHECKPOINT_INTERVAL_S,
    CHECKPOINT_WAL_BYTES,
    HOLD_BUSY_S,
    Checkpointer,
)
from .sqlite_errors import busy, open_error, store_error
from .sqlite_ops import PURGE_CHUNK, SqliteOps
from .sqlite_schema import ensure_schema

log = logging.getLogger(__name__)

Work = Callable[[sqlite3.Connection, float], Any]  # (connection, store clock now) -> result

SYNCHRONOUS_MODES: Final = ("OFF", "NORMAL", "FULL", "EXTRA")
SYNCING_MODES: Final = ("FULL", "EXTRA")  # a commit waits for fsync: write on a thread
# Purging on the event loop: each round deletes up to LOOP_PURGE_CHUNK expired sessions,
# profiles (with their rows: up to 200 items, 2 x 1000 purchases/ratings by default)
# and remembered ids; a transaction adds rounds until LOOP_PURGE_BUDGET_S has passed,
# and the next one comes LOOP_PURGE_PAUSE_S later while expired rows remain.
LOOP_PURGE_CHUNK: Final = 16
LOOP_PURGE_BUDGET_S: Final = 0.002
LOOP_PURGE_PAUSE_S: Final = 0.05
BUSY_RETRY_S: Final = 0.001  # a flush finding the write lock taken tries again after this


@dataclass(slots=True)
class _Op:
    work: Work
    write: bool
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


_CLOSE: Final = object()  # queue sentinel: finish what is queued, checkpoint, close


class EmbeddedStore(Store):
    """SQLite-backed store. `path=None` is an in-memory database (tests only)."""

    def __init__(
        self,
        path: str | None,
        limits: StoreLimits,
        *,
        url: str | None = None,
        synchronous: str = "NORMAL",
        purge_interval_s: float = 300.0,
        max_batch: int = 1000,
        busy_timeout_s: float = 5.0,
        checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S,
        checkpoint_wal_bytes: int = CHECKPOINT_WAL_BYTES,
        checkpoint_hold_busy_s: float = HOLD_BUSY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(limits)
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ConfigError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}")
        if purge_interval_s <= 0 or max_batch < 1:
            raise ConfigError("purge_interval_s must be > 0 and max_batch >= 1")
        if checkpoint_interval_s <= 0 or checkpoint_wal_bytes < 0 or checkpoint_hold_busy_s <= 0:
            raise ConfigError(
                "checkpoint_interval_s and checkpoint_hold_busy_s must be > 0,"
                " checkpoint_wal_bytes >= 0"
            )
        self.path = path
        self.url = url or (f"embedded://{path}" if path is not None else "memory://")
        self.synchronous = synchronous.upper()
        self.purge_interval_s = purge_interval_s
        self.max_batch = max_batch
        self.busy_timeout_s = busy_timeout_s
        self.checkpoint_interval_s = checkpoint_interval_s
        self.checkpoint_wal_bytes = checkpoint_wal_bytes
        self.checkpoint_hold_busy_s = checkpoint_hold_busy_s
        # True: transactions run on the event loop; False: on the writer thread.
        self.loop_writes = path is None or self.synchronous not in SYNCING_MODES
        self._clock = clock
        self._closed = False
        self._opened = False
        # the writer thread (synchronous FULL / EXTRA)
        self._queue: queue.SimpleQueue[_Op | object] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders "closed" against enqueueing
        self._thread: threading.Thread | None = None
        # writes on the loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: sqlite3.Connection | None = None  # used on the loop thread only
        self._pending: deque[_Op] = deque()
        self._flush_handle: asyncio.Handle | None = None
        self._purge_handle: asyncio.Handle | None = None
        self._busy_since: float | None = None  # monotonic: first BUSY of the waiting flush
        self._checkpointer: Checkpointer | None = None
        self._sql = SqliteOps(limits)
        self._delivered: dict[str, int] = {}  # follow(): group -> last position delivered

    @classmethod
    def from_url(cls, url: str, limits: StoreLimits) -> EmbeddedStore:
        """``embedded://PATH[?synchronous=FULL&purge_interval_s=300]`` or
        ``memory://``."""
        scheme, _, rest = url.partition("://")
        target, _, query = rest.partition("?")
        options: dict[str, Any] = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key == "synchronous":
                options[key] = value
            elif key == "purge_interval_s":
                try:
                    options[key] = float(value)
                except ValueError:
                    raise ConfigError(f"purge_interval_s: not a number: {value!r}") from None
            else:
                raise ConfigError(
                    f"unknown option {key!r} in store URL (known: synchronous, purge_interval_s)"
                )
        if scheme.lower() == "memory":
            if target:
                raise ConfigError("memory:// takes no path (use embedded://PATH for a file)")
            return cls(None, limits, url=url, **options)
        if not target:
            raise ConfigError("embedded:// needs a file path, e.g. embedded://./data/liverec.db")
        return cls(target, limits, url=url, **options)

    # --- lifecycle ------------------------------------------------------------

    async def open(self) -> None:
        if self._opened:
            raise StoreError("store already opened")
        self._opened = True
        loop = asyncio.get_running_loop()
        if self.loop_writes:
            await self._open_on_loop(loop)
            return
        ready: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(ready, loop), name="liverec-sqlite-writer", daemon=True
        )
        self._thread.start()
        await ready

    async def close(self) -> None:
        if self.loop_writes:
            await self._close_on_loop()
            return
        with self._lock:
            if self._closed or self._thread is None:
                self._closed = True
                return
            self._closed = True
            self._queue.put(_CLOSE)
        await asyncio.to_thread(self._thread.join)

    async def ping(self) -> bool:
        try:
            result = await self._submit(lambda c, now: c.execute("SELECT 1").fetchone(), False)
        except LiverecError:
            return False
        return bool(result == (1,))

    # --- the Store interface --------------------------------------------------

    async def open_session(
        self, session_id: str, user_id: str | None, now: float
    ) -> tuple[SessionRecord, bool]:
        user_id = user_id or None
        result: tuple[SessionRecord, bool] = await self._submit(
            lambda c, clock: self._sql.open_session(c, session_id, user_id, now, clock), True
        )
        return result

    async def get_session(self, session_id: str) -> SessionRecord | None:
        result: SessionRecord | None = await self._submit(
            lambda c, clock: self._sql.get_session(c, session_id, clock), False
        )
        return result

    async def record_event(self, event: Event) -> bool:
        result: bool = await self._submit(lambda c, now: self._sql.record(c, event, now), True)
        return result

    async def record_events(self, events: Sequence[Event]) -> list[bool]:
        def work(c: sqlite3.Connection, now: float) -> list[bool]:
            return [self._sql.record(c, e, now) for e in events]

        result: list[bool] = await self._submit(work, True)
        return result

    async def get_profile(self, user_id: str) -> Profile:
        result: Profile = await self._submit(
            lambda c, clock: self._sql.get_profile(c, user_id, clock), False
        )
        return result

    async def read_events(self, after: str | None = None, limit: int = 1000) -> list[LoggedEvent]:
        try:
            start = 0 if after is None else int(after)
        except ValueError:
            raise StoreError(f"not an event log position: {after!r}") from None
        result: list[LoggedEvent] = await self._submit(
            lambda c, now: self._sql.read_events(c, start, limit), False
        )
        return result

    async def read_tail(self, limit: int) -> list[LoggedEvent]:
        result: list[LoggedEvent] = await self._submit(
            lambda c, now: self._sql.read_tail(c, limit), False
        )
        return result

    async def count_events(self) -> int:
        result: int = await self._submit(lambda c, now: self._sql.count_events(c), False)
        return result

    async def upsert_items(self, items: Mapping[str, Mapping[str, Any]]) -> int:
        rows = [(item_id, _dumps(data)) for item_id, data in items.items()]
        result: int = await self._submit(lambda c, now: self._sql.upsert_items(c, rows), True)
        return result

    async def remove_items(self, item_ids: Sequence[str]) -> int:
        params = [(i,) for i in item_ids]
        result: int = await self._submit(lambda c, now: self._sql.remove_items(c, params), True)
        return result

    async def get_items(self, item_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        wanted = list(dict.fromkeys(item_ids))
        result: dict[str, dict[str, Any]] = await self._submit(
            lambda c, now: self._sql.get_items(c, wanted), False
        )
        return result

    async def all_items(self) -> tuple[int, dict[str, dict[str, Any]]]:
        result: tuple[int, dict[str, dict[str, Any]]] = await self._submit(
            lambda c, now: self._sql.all_items(c), False
        )
        return result

    async def catalog_version(self) -> int:
        result: int = await self._submit(lambda c, now: self._sql.catalog_version(c), False)
        return result

    # --- running operations: group commit, on the loop or on the writer thread ----------

    async def _submit(self, work: Work, write: bool) -> Any:
        loop = asyncio.get_running_loop()
        if self.loop_writes:
            c = self._conn
            if self._closed or c is None:
                raise StoreUnavailable(f"the store {self.url} is not open")
            if loop is not self._loop:
                raise StoreError(f"the store {self.url} is used by the event loop that opened it")
            if not write:  # short and indexed (or bounded by the caller's limit): run it now
                try:
                    return self._transaction(c, [work], False, self._clock())[0]
                except Exception as exc:
                    error = store_error(exc)
                    if error is exc:
                        raise
                    raise error from exc
            future: asyncio.Future[Any] = loop.create_future()
            self._pending.append(_Op(work, True, future, loop))
            if self._flush_handle is None:  # the first write of this loop iteration
                self._flush_handle = loop.call_soon(self._on_flush)
            return await future
        future = loop.create_future()
        with self._lock:
            if self._closed or self._thread is None:
                raise StoreUnavailable(f"the store {self.url} is not open")
            self._queue.put(_Op(work, write, future, loop))
        return await future

    def _run_ops(
        self, c: sqlite3.Connection, ops: list[_Op], *, begun: bool = False
    ) -> list[tuple[Any, BaseException | None]]:
        """Run `ops` in one transaction (group commit; `begun`: BEGIN IMMEDIATE is
        done); (result, error) per op. One failing operation must not fail the others:
        then the batch is rolled back as a whole and each op runs in its own transaction."""
        now = self._clock()
        works = [op.work for op in ops]
        write = begun or any(op.write for op in ops)
        try:
            if begun:
                results = self._commit(c, works, write, now)
            else:
                results = self._transaction(c, works, write, now)
            return [(r, None) for r in results]
        except Exception:
            return self._one_by_one(c, ops, now)

    def _one_by_one(
        self, c: sqlite3.Connection, ops: list[_Op], now: float
    ) -> list[tuple[Any, BaseException | None]]:
        """Each op in a transaction of its own (after its group failed as a whole)."""
        outcomes: list[tuple[Any, BaseException | None]] = []
        for op in ops:
            try:
                outcomes.append((self._transaction(c, [op.work], op.write, now)[0], None))
            except Exception as exc:
                outcomes.append((None, store_error(exc)))
        return outcomes

    def _transaction(
        self, c: sqlite3.Connection, works: list[Work], write: bool, now: float
    ) -> list[Any]:
        c.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        return self._commit(c, works, write, now)

    def _commit(
        self, c: sqlite3.Connection, works: list[Work], write: bool, now: float
    ) -> list[Any]:
        """Run `works` in the transaction begun on `c`, then COMMIT (or roll back)."""
        try:
            results = [work(c, now) for work in works]
            if write:
                self._sql.trim_log(c)
            c.execute("COMMIT")  # the durability point of every event in `works`
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        return results

    def _purge_step(
        self, c: sqlite3.Connection, now: float, chunk: int = PURGE_CHUNK, budget_s: float = 0.0
    ) -> bool:
        """One purge transaction on `c` (see `SqliteOps.purge_step`)."""
        return self._sql.purge_step(c, now, chunk, budget_s)

    def _connect(self) -> sqlite3.Connection:
        if self.path is None:
            target = ":memory:"
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            target = self.path
        c = sqlite3.connect(
            target,
            timeout=self.busy_timeout_s,
            isolation_level=None,
            check_same_thread=not self.loop_writes,  # loop writes: opened and closed off-loop
        )
        try:
            if self.path is not None:
                mode = c.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(f"cannot use WAL mode on {self.path} (got {mode})")
            c.execute(f"PRAGMA synchronous={self.synchronous}")
            ensure_schema(c, self.path)
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            c.close()
            raise
        return c

    # --- transactions on the event loop ------------------------------------------------

    async def _open_on_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            c, more = await asyncio.to_thread(self._connect_for_loop)
        except Exception as exc:
            self._closed = True
            error = open_error(self.url, exc)
            if error is exc:
                raise
            raise error from exc
        checkpointer = None
        if self.path is not None:
            try:
                checkpointer = await asyncio.to_thread(
                    Checkpointer,
                    self.path,
                    self.synchronous,
                    self.busy_timeout_s,
                    self.checkpoint_interval_s,
                    self.checkpoint_wal_bytes,
                    self.checkpoint_hold_busy_s,
                )
            except Exception as exc:
                self._closed = True
                await asyncio.to_thread(c.close)
                raise open_error(self.url, exc) from exc  # not ours: OSError, sqlite3
        if self._closed:  # close() was called meanwhile
            await asyncio.to_thread(_shut, c, checkpointer)
            raise StoreUnavailable(f"the store {self.url} was closed while opening")
        self._loop, self._conn, self._checkpointer = loop, c, checkpointer
        delay = LOOP_PURGE_PAUSE_S if more else self.purge_interval_s
        self._purge_handle = loop.call_later(delay, self._on_purge)

    def _connect_for_loop(self) -> tuple[sqlite3.Connection, bool]:
        """The loop's connection (opened off the loop), after one purge step; True when
        more expired rows may remain."""
        c = self._connect()
        try:
            more = self._purge_step(c, self._clock())
        except sqlite3.Error:
            log.exception("purging expired rows of %s failed", self.url)
            more = False
        # The loop never sleeps in SQLite's busy handler, nor checkpoints (fsync).
        c.execute("PRAGMA busy_timeout=0")
        c.execute("PRAGMA wal_autocheckpoint=0")
        return c, more

    async def _close_on_loop(self) -> None:
        if self._closed or self._conn is None:
            self._closed = True
            return
        self._closed = True  # no new calls; the calls already made are finished
        for handle in (self._flush_handle, self._purge_handle):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._purge_handle = None
        while self._pending:
            delay = self._flush()
            if delay is not None:
                await asyncio.sleep(delay)
        c, self._conn = self._conn, None
        checkpointer, self._checkpointer = self._checkpointer, None
        await asyncio.to_thread(_shut, c, checkpointer)

    def _on_flush(self) -> None:
        self._flush_handle = None
        delay = self._flush()
        if self._loop is None:
            return
        if delay is not None:
            self._flush_handle = self._loop.call_later(delay, self._on_flush)
        elif self._pending:  # more than max_batch: the rest in the next iteration
            self._flush_handle = self._loop.call_soon(self._on_flush)

    def _flush(self) -> float | None:
        """Run up to `max_batch` pending writes in one transaction on the loop, then
        settle their futures. Returns a delay when another process holds the write
        lock: the writes stay pending until then (up to `busy_timeout_s` in all)."""
        c = self._conn
        if c is None or not self._pending:
            return None
        failure: BaseException | None = None
        if self._checkpointer is not None and self._checkpointer.holding:
            # the checkpoint thread is starting the WAL over: its commit comes first
            failure = StoreUnavailable(f"the WAL checkpoint of {self.url} held writes")
        else:
            try:
                c.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                failure = store_error(exc)
                if not busy(exc):
                    self._busy_since = None
                    self._fail_pending(failure)
                    return None
        if failure is not None:
            now = time.monotonic()
            self._busy_since = self._busy_since or now
            if now - self._busy_since < self.busy_timeout_s:
                return BUSY_RETRY_S
            self._busy_since = None
            self._fail_pending(failure)
            return None
        self._busy_since = None
        ops = [self._pending.popleft() for _ in range(min(len(self._pending), self.max_batch))]
        try:
            outcomes = self._run_ops(c, ops, begun=True)
        except BaseException:  # KeyboardInterrupt and the like: nobody waits for ever
            for op in ops:
                _settle(op.future, None, StoreUnavailable(f"the store {self.url} failed"))
            raise
        for op, (result, error) in zip(ops, outcomes, strict=True):
            _settle(op.future, result, error)
        return None

    def _fail_pending(self, failure: BaseException) -> None:
        while self._pending:
            _settle(self._pending.popleft().future, None, failure)

    def _on_purge(self) -> None:
        self._purge_handle = None
        c, loop = self._conn, self._loop
        if c is None or loop is None or self._closed:
            return
        if self._checkpointer is not None and self._checkpointer.holding:
            more = True  # writes are held: try again soon
        else:
            try:
                more = self._purge_step(c, self._clock(), LOOP_PURGE_CHUNK, LOOP_PURGE_BUDGET_S)
            except sqlite3.Error as exc:
                more = busy(exc)  # another connection is writing: try again soon
                if not more:
                    log.exception("purging expired rows of %s failed", self.url)
        delay = LOOP_PURGE_PAUSE_S if more else self.purge_interval_s
        self._purge_handle = loop.call_later(delay, self._on_purge)

    # --- the writer thread (synchronous FULL / EXTRA) ------------------------------------

    def _run(self, ready: asyncio.Future[None], loop: asyncio.AbstractEventLoop) -> None:
        try:
            c = self._connect()
        except Exception as exc:
            with self._lock:
                self._closed = True
            loop.call_soon_threadsafe(_settle, ready, None, open_error(self.url, exc))
            return
        loop.call_soon_threadsafe(_settle, ready, None, None)
        try:
            self._serve(c)
        except BaseException:
            log.exception("the SQLite writer thread of %s failed", self.url)
        finally:
            with self._lock:
                self._closed = True
            self._fail_queued(StoreUnavailable(f"the store {self.url} is closed"))
            try:
                if self.path is not None:
                    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                log.exception("WAL checkpoint of %s failed at close", self.url)
            finally:
                c.close()

    def _serve(self, c: sqlite3.Connection) -> None:
        """Run queued operations until the close sentinel; purge expired rows meanwhile."""
        next_purge = time.monotonic()  # purge once right after opening
        while True:
            if time.monotonic() >= next_purge:
                try:
                    more = self._purge_step(c, self._clock())
                except sqlite3.Error:
                    log.exception("purging expired rows of %s failed", self.url)
                    more = False
                next_purge = time.monotonic() + (0.0 if more else self.purge_interval_s)
            try:
                first = self._queue.get(timeout=max(0.0, next_purge - time.monotonic()))
            except queue.Empty:
                continue
            ops: list[_Op] = []
            closing = first is _CLOSE
            if isinstance(first, _Op):
                ops.append(first)
            while not closing and len(ops) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Op):
                    ops.append(item)
                else:
                    closing = True
            if ops:
                self._execute(c, ops)
            if closing:
                return

    def _execute(self, c: sqlite3.Connection, ops: list[_Op]) -> None:
        """Run `ops` in one transaction (group commit), then resolve their futures."""
        outcomes = self._run_ops(c, ops)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, Any]]] = {}
        for op, (result, error) in zip(ops, outcomes, strict=True):
            by_loop.setdefault(op.loop, []).append((op.future, result, error))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_all, settled)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                pass

    def _fail_queued(self, exc: StoreError) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Op):
                try:
                    item.loop.call_soon_threadsafe(_settle, item.future, None, exc)
                except RuntimeError:
                    pass

    # --- following the log ----------------------------------------------------

    async def follow(self, group: str, consumer: str, count: int = 1000) -> list[LoggedEvent]:
        """Delivery is tracked in this object (one consumer per group); the highest
        acknowledged position is stored in `log_groups`, so a new store object on the
        same file starts again after it."""

        taken: list[int] = []  # the start, fixed at the first run: a failed batch reruns ops

        def work(c: sqlite3.Connection, now: float) -> list[LoggedEvent]:
            c.execute("INSERT OR IGNORE INTO log_groups VALUES (?, 0)", (group,))
            if not taken:
                start = self._delivered.get(group)
                if start is None:
                    row = c.execute("SELECT acked FROM log_groups WHERE grp = ?", (group,))
                    start = int(row.fetchone()[0])
                taken.append(start)
            start = taken[0]
            rows = c.execute(
                "SELECT pos, id, session_id, action, item_id, ts, user_id, rating FROM events"
                " WHERE pos > ? ORDER BY pos LIMIT ?",
                (start, max(count, 0)),
            ).fetchall()
            self._delivered[group] = int(rows[-1][0]) if rows else start
            return [LoggedEvent(f"{r[0]:020d}", Event(*r[1:])) for r in rows]

        result: list[LoggedEvent] = await self._submit(work, True)
        return result

    async def ack(self, group: str, positions: Sequence[str]) -> None:
        if not positions:
            return
        try:
            top = max(int(p) for p in positions)
        except ValueError:
            raise StoreError(f"not event log positions: {list(positions)[:3]!r}") from None

        def work(c: sqlite3.Connection, now: float) -> None:
            c.execute(
                "INSERT INTO log_groups VALUES (?, ?) ON CONFLICT (grp)"
                " DO UPDATE SET acked = max(acked, excluded.acked)",
                (group, top),
            )

        await self._submit(work, True)


def _shut(c: sqlite3.Connection, checkpointer: Checkpointer | None) -> None:
    """Close the loop's connection, then checkpoint (TRUNCATE) and stop; off the loop."""
    try:
        c.close()
    finally:
        if checkpointer is not None:
            checkpointer.stop()


def _dumps(data: Mapping[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True, allow_nan=False)


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # the caller was cancelled
        return
    if exc is None:
        future.set_result(result)
    else:
        future.set_exception(exc)


def _settle_all(settled: list[tuple[asyncio.Future[Any], Any, Any]]) -> None:
    for future, result, exc in settled:
        _settle(future, result, exc)
