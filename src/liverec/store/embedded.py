"""The embedded store: one SQLite file (or an in-memory database), no server needed.

Owns: the SQLite schema and its migration from older files, group commit (on the
event loop, or on a writer thread for synchronous=FULL), WAL checkpoints, expiry and
purging, event-log trimming, and the bounds on a profile's purchases and ratings.
Table layout and durability are described in docs/storage.md.

Writes are grouped: each call appends its operation, and the pending operations run
in ONE transaction (up to `max_batch`), then each caller's future resolves. A
caller's event is durable once its future resolves, i.e. after the COMMIT that
contains it. Where that transaction runs depends on whether a commit waits for the
disk (`loop_writes`):

* **On the event loop** (``memory://``, and files with synchronous NORMAL or OFF):
  a commit is a write() into the WAL, no fsync, so the loop runs it itself. The
  first call of a loop iteration schedules one flush (``call_soon``); every write
  made during that iteration joins it. Reads run at once on the same connection.
  A thread with its own connection checkpoints the WAL into the main file and starts
  it over (`checkpoint_interval_s`, `checkpoint_wal_bytes`; see `_Checkpointer`): no
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

Expiry uses the store's own clock at write time ("touched"), not event timestamps,
so it behaves like Redis key expiry. Expired rows are ignored on read, reset on
write, and deleted by a purge step that runs on open and every `purge_interval_s`
(on the loop: transactions of at most `LOOP_PURGE_BUDGET_S` of work, spaced by
`LOOP_PURGE_PAUSE_S` while a backlog lasts).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import sqlite3
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl

from ..errors import ConfigError, LiverecError, StoreError, StoreUnavailable
from ..types import Event, Profile, SessionRecord
from .base import LoggedEvent, Store, StoreLimits

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[sqlite3.Connection, float], Any]  # (connection, store clock now) -> result

SCHEMA_VERSION: Final = 2  # 2: purchases and ratings ordered and bounded per profile
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS events (
    pos INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL, session_id TEXT NOT NULL, action TEXT NOT NULL, item_id TEXT NOT NULL,
    ts REAL NOT NULL, user_id TEXT, rating REAL);
CREATE TABLE IF NOT EXISTS dedup (
    session_id TEXT NOT NULL, event_id TEXT NOT NULL, touched REAL NOT NULL,
    PRIMARY KEY (session_id, event_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedup_touched ON dedup (touched);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY, user_id TEXT, created REAL NOT NULL, last_seen REAL NOT NULL,
    seq INTEGER NOT NULL, touched REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_touched ON sessions (touched);
CREATE TABLE IF NOT EXISTS session_items (
    session_id TEXT NOT NULL, seq INTEGER NOT NULL, item_id TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS profiles (
    user_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, touched REAL NOT NULL,
    n_purchases INTEGER NOT NULL DEFAULT 0, n_ratings INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS profiles_touched ON profiles (touched);
CREATE TABLE IF NOT EXISTS profile_counters (
    user_id TEXT NOT NULL, action TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (user_id, action)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS profile_recent (
    user_id TEXT NOT NULL, seq INTEGER NOT NULL, item_id TEXT NOT NULL,
    PRIMARY KEY (user_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS profile_purchases (
    user_id TEXT NOT NULL, item_id TEXT NOT NULL, seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, item_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS profile_purchases_seq ON profile_purchases (user_id, seq);
CREATE TABLE IF NOT EXISTS profile_ratings (
    user_id TEXT NOT NULL, item_id TEXT NOT NULL, rating REAL NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (user_id, item_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS profile_ratings_seq ON profile_ratings (user_id, seq);
CREATE TABLE IF NOT EXISTS catalog (item_id TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log_groups (grp TEXT PRIMARY KEY, acked INTEGER NOT NULL) WITHOUT ROWID;
"""
# Columns added since schema version 1: a file made before gets them by ALTER TABLE
# when opened (rows already there take the default: seq 0 sorts before every newer row).
ADDED_COLUMNS: Final = (
    ("profiles", "n_purchases", "INTEGER NOT NULL DEFAULT 0"),
    ("profiles", "n_ratings", "INTEGER NOT NULL DEFAULT 0"),
    ("profile_purchases", "seq", "INTEGER NOT NULL DEFAULT 0"),
    ("profile_ratings", "seq", "INTEGER NOT NULL DEFAULT 0"),
)
PROFILE_TABLES: Final = (
    "profile_counters",
    "profile_recent",
    "profile_purchases",
    "profile_ratings",
)
SYNCHRONOUS_MODES: Final = ("OFF", "NORMAL", "FULL", "EXTRA")
SYNCING_MODES: Final = ("FULL", "EXTRA")  # a commit waits for fsync: write on a thread
PURGE_CHUNK: Final = 2000  # expired sessions/profiles/dedup rows per purge (thread, open)
# Purging on the event loop: each round deletes up to LOOP_PURGE_CHUNK expired sessions,
# profiles (with their rows: up to 200 items, 2 x 1000 purchases/ratings by default)
# and remembered ids; a transaction adds rounds until LOOP_PURGE_BUDGET_S has passed,
# and the next one comes LOOP_PURGE_PAUSE_S later while expired rows remain.
LOOP_PURGE_CHUNK: Final = 16
LOOP_PURGE_BUDGET_S: Final = 0.002
LOOP_PURGE_PAUSE_S: Final = 0.05
# The checkpoint thread (loop writes on a file; see _Checkpointer) checkpoints and
# starts the WAL over every CHECKPOINT_INTERVAL_S when something was written, or sooner
# once the WAL holds more than CHECKPOINT_WAL_BYTES (checked every CHECKPOINT_POLL_S).
# A transaction of one event appends about 45 KB (11 pages) to the WAL: 1,000 a second
# reach 64 MiB in about 1.5 s. Each time, the loop's writes are held for a RESTART
# checkpoint of the last few milliseconds of WAL and one small commit (3 fdatasyncs:
# 3-13 ms here, more on a busy disk), waiting at most HOLD_BUSY_S for a transaction or
# reader of another connection.
CHECKPOINT_INTERVAL_S: Final = 1.0
CHECKPOINT_WAL_BYTES: Final = 64 << 20
CHECKPOINT_POLL_S: Final = 0.1
HOLD_BUSY_S: Final = 0.02
BUSY_RETRY_S: Final = 0.001  # a flush finding the write lock taken tries again after this


@dataclass(slots=True)
class _Op:
    work: Work
    write: bool
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


_CLOSE: Final = object()  # queue sentinel: finish what is queued, checkpoint, close


class _Checkpointer:
    """A thread with its own connection that checkpoints the WAL of `path` into the
    main file and starts the WAL over, so that no fsync runs on the event loop.

    Every `interval_s` when something was written, or sooner once the WAL holds more
    than `wal_bytes`: a PASSIVE checkpoint of the bulk while the loop writes on (it
    syncs the WAL: what a power loss can take is bounded by it), then, with the loop's
    writes held (`holding`), a RESTART checkpoint of what came in meanwhile and one
    small commit of our own, which starts the WAL over. Why: PASSIVE alone never
    catches up with a loop that commits every few milliseconds (the WAL grows without
    bound), and when it does catch up, the next commit starts the WAL over and SQLite
    syncs the new WAL header in it: that commit must be ours, never the loop's. So a
    read transaction on `pin` is open during the PASSIVE checkpoint: while a reader
    holds a snapshot, no commit can start the WAL over. The file keeps its size and is
    written over (TRUNCATE, which shrinks it, held the writes 3-4 times longer here);
    TRUNCATE when stopped.
    """

    def __init__(
        self, path: str, synchronous: str, busy_timeout_s: float, interval_s: float, wal_bytes: int
    ) -> None:
        self.path = path
        self.interval_s = interval_s
        self.wal_bytes = wal_bytes
        self.busy_timeout_ms = int(busy_timeout_s * 1000)
        self.holding = False  # read on the loop: begin no write transaction while True
        self.restarts = 0
        self.conn = sqlite3.connect(
            path, timeout=HOLD_BUSY_S, isolation_level=None, check_same_thread=False
        )
        self.conn.execute(f"PRAGMA synchronous={synchronous}")
        self.pin = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        version = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
        page = int(self.conn.execute("PRAGMA page_size").fetchone()[0])
        self.max_frames = wal_bytes // (24 + page)  # a WAL frame: 24-byte header + a page
        self._shm = os.open(path + "-shm", os.O_RDONLY)  # the loop's connection made it
        # What runs while the loop's writes are held, as one script: the thread takes the
        # GIL back once per statement, which can take a switch interval when the loop is
        # busy. Rewriting user_version is the small commit that restarts the WAL here.
        self._restart = f"PRAGMA wal_checkpoint(RESTART); PRAGMA user_version={version};"
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="liverec-sqlite-checkpoint", daemon=True
        )
        self._thread.start()

    def _frames(self) -> tuple[int, int]:
        """(frames in the WAL, frames checkpointed): mxFrame and nBackfill of the
        WAL-index header in the -shm file (sqlite.org/walformat.html, in the machine's
        byte order). Read without a lock: good enough to decide when to checkpoint."""
        try:
            head = os.pread(self._shm, 100, 0)
        except OSError:
            return 0, 0
        if len(head) < 100:
            return 0, 0
        return struct.unpack_from("=I", head, 16)[0], struct.unpack_from("=I", head, 96)[0]

    def _run(self) -> None:
        last, retry_at = time.monotonic(), 0.0
        while not self._stop.wait(CHECKPOINT_POLL_S):
            now = time.monotonic()
            frames, _ = self._frames()
            due = now - last >= self.interval_s
            big = frames > self.max_frames and now >= retry_at
            if frames <= 1 or not (due or big):  # 1: only our own commit since the last
                continue
            if not self._cycle():  # another connection kept the hold waiting: do not
                retry_at = now + self.interval_s  # try again soon (each try holds writes)
            last = time.monotonic()

    def _cycle(self) -> bool:
        """Checkpoint and start the WAL over. False when it failed or held the writes
        for HOLD_BUSY_S or more (SQLite probably waited for another connection)."""
        self.restarts += 1
        try:
            self.pin.execute("BEGIN")
            self.pin.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a snapshot
            self.checkpoint("PASSIVE")
            start = time.monotonic()
            self.holding = True
            try:
                self.pin.execute("COMMIT")
                self.conn.executescript(self._restart)
            finally:
                self.holding = False
        except sqlite3.Error as exc:
            if self.pin.in_transaction:
                self.pin.execute("ROLLBACK")
            if not _busy(exc):
                log.exception("starting the WAL of %s over failed", self.path)
            return False
        return time.monotonic() - start < HOLD_BUSY_S

    def checkpoint(self, mode: str) -> bool:
        """Run a checkpoint; True when it completed (SQLite did not report busy)."""
        try:
            row = self.conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        except sqlite3.Error:
            log.exception("WAL checkpoint (%s) of %s failed", mode, self.path)
            return False
        return int(row[0]) == 0

    def stop(self) -> None:
        """Stop the thread, checkpoint everything, truncate the WAL, close (blocking)."""
        self._stop.set()
        self._thread.join()
        try:
            self.conn.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
            self.checkpoint("TRUNCATE")
        finally:
            os.close(self._shm)
            self.pin.close()
            self.conn.close()


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(limits)
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ConfigError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}")
        if purge_interval_s <= 0 or max_batch < 1:
            raise ConfigError("purge_interval_s must be > 0 and max_batch >= 1")
        if checkpoint_interval_s <= 0 or checkpoint_wal_bytes < 0:
            raise ConfigError("checkpoint_interval_s must be > 0 and checkpoint_wal_bytes >= 0")
        self.path = path
        self.url = url or (f"embedded://{path}" if path is not None else "memory://")
        self.synchronous = synchronous.upper()
        self.purge_interval_s = purge_interval_s
        self.max_batch = max_batch
        self.busy_timeout_s = busy_timeout_s
        self.checkpoint_interval_s = checkpoint_interval_s
        self.checkpoint_wal_bytes = checkpoint_wal_bytes
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
        self._checkpointer: _Checkpointer | None = None
        self._logged_since_trim = 0
        self._delivered: dict[str, int] = {}  # follow(): group -> last position delivered

    @classmethod
    def from_url(cls, url: str, limits: StoreLimits) -> EmbeddedStore:
        """``embedded://PATH[?synchronous=FULL&purge_interval_s=300]`` or ``memory://``."""
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

        def work(c: sqlite3.Connection, clock: float) -> tuple[SessionRecord, bool]:
            row = self._live_session(c, session_id, clock, reset=True)
            if row is None:
                c.execute(
                    "INSERT INTO sessions VALUES (?, ?, ?, ?, 0, ?)",
                    (session_id, user_id, now, now, clock),
                )
                return SessionRecord(session_id, user_id, [], now, now), False
            owner, created, last_seen = row[0], row[1], row[2]
            if owner == user_id:  # only the owner's visit keeps the session alive
                last_seen = max(last_seen, now)
                c.execute(
                    "UPDATE sessions SET last_seen = ?, touched = ? WHERE session_id = ?",
                    (last_seen, clock, session_id),
                )
            return SessionRecord(
                session_id, owner, self._items(c, session_id), created, last_seen
            ), True

        result: tuple[SessionRecord, bool] = await self._submit(work, True)
        return result

    async def get_session(self, session_id: str) -> SessionRecord | None:
        def work(c: sqlite3.Connection, clock: float) -> SessionRecord | None:
            row = self._live_session(c, session_id, clock, reset=False)
            if row is None:
                return None
            return SessionRecord(session_id, row[0], self._items(c, session_id), row[1], row[2])

        result: SessionRecord | None = await self._submit(work, False)
        return result

    async def record_event(self, event: Event) -> bool:
        result: bool = await self._submit(lambda c, now: self._record(c, event, now), True)
        return result

    async def record_events(self, events: Sequence[Event]) -> list[bool]:
        def work(c: sqlite3.Connection, now: float) -> list[bool]:
            return [self._record(c, e, now) for e in events]

        result: list[bool] = await self._submit(work, True)
        return result

    async def get_profile(self, user_id: str) -> Profile:
        def work(c: sqlite3.Connection, clock: float) -> Profile:
            profile = Profile(user_id)
            row = c.execute("SELECT touched FROM profiles WHERE user_id = ?", (user_id,)).fetchone()
            if row is None or self._expired(row[0], self.limits.profile_ttl_s, clock):
                return profile
            q = (user_id,)
            profile.counters = dict(
                c.execute("SELECT action, n FROM profile_counters WHERE user_id = ?", q)
            )
            profile.recent = [
                r[0]
                for r in c.execute(
                    "SELECT item_id FROM profile_recent WHERE user_id = ? ORDER BY seq", q
                )
            ]
            profile.purchases = {
                r[0]
                for r in c.execute("SELECT item_id FROM profile_purchases WHERE user_id = ?", q)
            }
            profile.ratings = dict(  # oldest first
                c.execute(
                    "SELECT item_id, rating FROM profile_ratings WHERE user_id = ?"
                    " ORDER BY seq, item_id",
                    q,
                )
            )
            return profile

        result: Profile = await self._submit(work, False)
        return result

    async def read_events(self, after: str | None = None, limit: int = 1000) -> list[LoggedEvent]:
        try:
            start = 0 if after is None else int(after)
        except ValueError:
            raise StoreError(f"not an event log position: {after!r}") from None

        def work(c: sqlite3.Connection, now: float) -> list[LoggedEvent]:
            rows = c.execute(
                "SELECT pos, id, session_id, action, item_id, ts, user_id, rating FROM events"
                " WHERE pos > ? ORDER BY pos LIMIT ?",
                (start, max(limit, 0)),
            )
            return [LoggedEvent(f"{r[0]:020d}", Event(*r[1:])) for r in rows]

        result: list[LoggedEvent] = await self._submit(work, False)
        return result

    async def read_tail(self, limit: int) -> list[LoggedEvent]:
        def work(c: sqlite3.Connection, now: float) -> list[LoggedEvent]:
            rows = c.execute(
                "SELECT pos, id, session_id, action, item_id, ts, user_id, rating FROM events"
                " ORDER BY pos DESC LIMIT ?",
                (max(limit, 0),),
            ).fetchall()
            return [LoggedEvent(f"{r[0]:020d}", Event(*r[1:])) for r in reversed(rows)]

        result: list[LoggedEvent] = await self._submit(work, False)
        return result

    async def count_events(self) -> int:
        # Exact and O(log n): positions are contiguous because rows are only appended
        # (AUTOINCREMENT; a rolled-back insert rolls back the sequence too) and only
        # ever removed from the head by trimming.
        def work(c: sqlite3.Connection, now: float) -> int:
            row = c.execute("SELECT max(pos) - min(pos) + 1 FROM events").fetchone()
            return int(row[0] or 0)

        result: int = await self._submit(work, False)
        return result

    async def upsert_items(self, items: Mapping[str, Mapping[str, Any]]) -> int:
        rows = [(item_id, _dumps(data)) for item_id, data in items.items()]

        def work(c: sqlite3.Connection, now: float) -> int:
            c.executemany(
                "INSERT INTO catalog VALUES (?, ?) ON CONFLICT (item_id)"
                " DO UPDATE SET data = excluded.data",
                rows,
            )
            return self._bump_catalog(c)

        result: int = await self._submit(work, True)
        return result

    async def remove_items(self, item_ids: Sequence[str]) -> int:
        params = [(i,) for i in item_ids]

        def work(c: sqlite3.Connection, now: float) -> int:
            c.executemany("DELETE FROM catalog WHERE item_id = ?", params)
            return self._bump_catalog(c)

        result: int = await self._submit(work, True)
        return result

    async def get_items(self, item_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        wanted = list(dict.fromkeys(item_ids))

        def work(c: sqlite3.Connection, now: float) -> dict[str, dict[str, Any]]:
            out: dict[str, dict[str, Any]] = {}
            for start in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for item_id, data in c.execute(
                    f"SELECT item_id, data FROM catalog WHERE item_id IN ({marks})", chunk
                ):
                    out[item_id] = json.loads(data)
            return out

        result: dict[str, dict[str, Any]] = await self._submit(work, False)
        return result

    async def all_items(self) -> tuple[int, dict[str, dict[str, Any]]]:
        def work(c: sqlite3.Connection, now: float) -> tuple[int, dict[str, dict[str, Any]]]:
            items = {i: json.loads(d) for i, d in c.execute("SELECT item_id, data FROM catalog")}
            return self._catalog_version(c), items

        result: tuple[int, dict[str, dict[str, Any]]] = await self._submit(work, False)
        return result

    async def catalog_version(self) -> int:
        result: int = await self._submit(lambda c, now: self._catalog_version(c), False)
        return result

    # --- SQL, run inside a transaction (on the loop or the writer thread) -----

    @staticmethod
    def _catalog_version(c: sqlite3.Connection) -> int:
        row = c.execute("SELECT value FROM meta WHERE key = 'catalog_version'").fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _bump_catalog(c: sqlite3.Connection) -> int:
        row = c.execute(
            "INSERT INTO meta VALUES ('catalog_version', 1) ON CONFLICT (key)"
            " DO UPDATE SET value = value + 1 RETURNING value"
        ).fetchone()
        return int(row[0])

    @staticmethod
    def _expired(touched: float, ttl: float | None, now: float) -> bool:
        return ttl is not None and touched <= now - ttl

    def _live_session(
        self, c: sqlite3.Connection, session_id: str, now: float, *, reset: bool
    ) -> tuple[Any, ...] | None:
        """(user_id, created, last_seen, seq) of an unexpired session; `reset` deletes
        an expired one so that it can be created afresh."""
        row = c.execute(
            "SELECT user_id, created, last_seen, seq, touched FROM sessions WHERE session_id = ?",
            (session_id,),
        ).fetchone()
        if row is not None and self._expired(row[4], self.limits.session_ttl_s, now):
            if reset:
                c.execute("DELETE FROM session_items WHERE session_id = ?", (session_id,))
                c.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,))
            return None
        return None if row is None else tuple(row[:4])

    @staticmethod
    def _items(c: sqlite3.Connection, session_id: str) -> list[str]:
        rows = c.execute(
            "SELECT item_id FROM session_items WHERE session_id = ? ORDER BY seq", (session_id,)
        )
        return [r[0] for r in rows]

    def _record(self, c: sqlite3.Connection, e: Event, now: float) -> bool:
        lim = self.limits
        new = c.execute(
            "INSERT INTO dedup VALUES (?, ?, ?) ON CONFLICT (session_id, event_id)"
            " DO UPDATE SET touched = excluded.touched WHERE dedup.touched <= ?",
            (e.session_id, e.id, now, now - lim.dedup_ttl_s),
        ).rowcount
        if not new:
            return False
        user_id = e.user_id or None
        c.execute(
            "INSERT INTO events (id, session_id, action, item_id, ts, user_id, rating)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (e.id, e.session_id, e.action, e.item_id, e.ts, user_id, e.rating),
        )
        self._logged_since_trim += 1
        row = self._live_session(c, e.session_id, now, reset=True)
        if row is None:
            seq = 1
            c.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, 1, ?)",
                (e.session_id, user_id, e.ts, e.ts, now),
            )
        else:
            seq = row[3] + 1
            c.execute(
                "UPDATE sessions SET seq = ?, last_seen = max(last_seen, ?), touched = ?"
                " WHERE session_id = ?",
                (seq, e.ts, now, e.session_id),
            )
        c.execute("INSERT INTO session_items VALUES (?, ?, ?)", (e.session_id, seq, e.item_id))
        if seq > lim.session_max_items:
            c.execute(
                "DELETE FROM session_items WHERE session_id = ? AND seq <= ?",
                (e.session_id, seq - lim.session_max_items),
            )
        if user_id is not None:
            self._apply_profile(c, e, user_id, now)
        return True

    def _apply_profile(self, c: sqlite3.Connection, e: Event, user_id: str, now: float) -> None:
        # `seq` numbers the profile's events: it orders recent items, and purchases and
        # ratings by their latest event (a repeat refreshes an item's place).
        lim = self.limits
        row = c.execute(
            "SELECT seq, touched, n_purchases, n_ratings FROM profiles WHERE user_id = ?",
            (user_id,),
        ).fetchone()
        if row is not None and self._expired(row[1], lim.profile_ttl_s, now):
            self._delete_profiles(c, [user_id])
            row = None
        seq, n_purchases, n_ratings = (1, 0, 0) if row is None else (row[0] + 1, row[2], row[3])
        c.execute(
            "INSERT INTO profile_counters VALUES (?, ?, 1)"
            " ON CONFLICT (user_id, action) DO UPDATE SET n = n + 1",
            (user_id, e.action),
        )
        c.execute("INSERT INTO profile_recent VALUES (?, ?, ?)", (user_id, seq, e.item_id))
        if seq > lim.recent_max_items:
            c.execute(
                "DELETE FROM profile_recent WHERE user_id = ? AND seq <= ?",
                (user_id, seq - lim.recent_max_items),
            )
        key = (user_id, e.item_id)
        if e.action == "purchase":
            if c.execute(
                "INSERT OR IGNORE INTO profile_purchases (user_id, item_id, seq) VALUES (?, ?, ?)",
                (*key, seq),
            ).rowcount:
                n_purchases = self._drop_oldest(c, "profile_purchases", user_id, n_purchases + 1)
            else:  # bought before: now the newest
                c.execute(
                    "UPDATE profile_purchases SET seq = ? WHERE user_id = ? AND item_id = ?",
                    (seq, *key),
                )
        elif e.action == "rate" and e.rating is not None:
            if c.execute(
                "INSERT OR IGNORE INTO profile_ratings (user_id, item_id, rating, seq)"
                " VALUES (?, ?, ?, ?)",
                (*key, e.rating, seq),
            ).rowcount:
                n_ratings = self._drop_oldest(c, "profile_ratings", user_id, n_ratings + 1)
            else:  # rated before: the latest rating, now the newest
                c.execute(
                    "UPDATE profile_ratings SET rating = ?, seq = ?"
                    " WHERE user_id = ? AND item_id = ?",
                    (e.rating, seq, *key),
                )
        c.execute(
            "INSERT INTO profiles (user_id, seq, touched, n_purchases, n_ratings)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET seq = excluded.seq,"
            " touched = excluded.touched, n_purchases = excluded.n_purchases,"
            " n_ratings = excluded.n_ratings",
            (user_id, seq, now, n_purchases, n_ratings),
        )

    def _drop_oldest(self, c: sqlite3.Connection, table: str, user_id: str, count: int) -> int:
        """Keep the newest `profile_max_items` of the user's `count` rows in `table`
        (purchases or ratings); returns how many are left. Rows of a version-1 file
        all have seq 0: the oldest, among themselves in item id order."""
        extra = count - self.limits.profile_max_items
        if extra <= 0:
            return count
        gone = c.execute(
            f"DELETE FROM {table} WHERE user_id = ? AND item_id IN (SELECT item_id FROM {table}"
            " WHERE user_id = ? ORDER BY seq, item_id LIMIT ?)",
            (user_id, user_id, extra),
        ).rowcount
        return count - gone

    @staticmethod
    def _delete_profiles(c: sqlite3.Connection, user_ids: Sequence[str]) -> None:
        params = [(u,) for u in user_ids]
        for table in (*PROFILE_TABLES, "profiles"):
            c.executemany(f"DELETE FROM {table} WHERE user_id = ?", params)

    def _trim_log(self, c: sqlite3.Connection) -> None:
        cap = self.limits.event_log_max
        if cap is None or self._logged_since_trim < max(1, min(1000, cap // 10)):
            return
        c.execute("DELETE FROM events WHERE pos <= (SELECT max(pos) FROM events) - ?", (cap,))
        self._logged_since_trim = 0

    def _purge_step(
        self, c: sqlite3.Connection, now: float, chunk: int = PURGE_CHUNK, budget_s: float = 0.0
    ) -> bool:
        """Delete expired rows in one transaction: rounds of up to `chunk` keys of each
        kind until none are left or `budget_s` has passed (one round at least). True
        when more may remain."""
        deadline = time.perf_counter() + budget_s
        c.execute("BEGIN IMMEDIATE")
        try:
            more = self._purge_round(c, now, chunk)
            while more and time.perf_counter() < deadline:
                more = self._purge_round(c, now, chunk)
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        return more

    def _purge_round(self, c: sqlite3.Connection, now: float, chunk: int) -> bool:
        lim, more = self.limits, False
        if lim.session_ttl_s is not None:
            rows = c.execute(
                "SELECT session_id FROM sessions WHERE touched <= ? LIMIT ?",
                (now - lim.session_ttl_s, chunk),
            ).fetchall()
            c.executemany("DELETE FROM session_items WHERE session_id = ?", rows)
            c.executemany("DELETE FROM sessions WHERE session_id = ?", rows)
            more |= len(rows) == chunk
        if lim.profile_ttl_s is not None:
            rows = c.execute(
                "SELECT user_id FROM profiles WHERE touched <= ? LIMIT ?",
                (now - lim.profile_ttl_s, chunk),
            ).fetchall()
            self._delete_profiles(c, [r[0] for r in rows])
            more |= len(rows) == chunk
        gone = c.execute(
            "DELETE FROM dedup WHERE (session_id, event_id) IN (SELECT session_id, event_id"
            " FROM dedup WHERE touched <= ? LIMIT ?)",
            (now - lim.dedup_ttl_s, chunk),
        ).rowcount
        return more or gone == chunk

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
                    error = _store_error(exc)
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
            outcomes: list[tuple[Any, BaseException | None]] = []
            for op in ops:
                try:
                    outcomes.append((self._transaction(c, [op.work], op.write, now)[0], None))
                except Exception as exc:
                    outcomes.append((None, _store_error(exc)))
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
                self._trim_log(c)
            c.execute("COMMIT")  # the durability point of every event in `works`
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        return results

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
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}; this liverec knows "
                    f"{SCHEMA_VERSION} (upgrade liverec)"
                )
            c.execute("BEGIN IMMEDIATE")
            _migrate(c)
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    c.execute(statement)
            c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            c.execute("COMMIT")
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
            error = _open_error(self.url, exc)
            if error is exc:
                raise
            raise error from exc
        checkpointer = None
        if self.path is not None:
            try:
                checkpointer = await asyncio.to_thread(
                    _Checkpointer,
                    self.path,
                    self.synchronous,
                    self.busy_timeout_s,
                    self.checkpoint_interval_s,
                    self.checkpoint_wal_bytes,
                )
            except Exception as exc:
                self._closed = True
                await asyncio.to_thread(c.close)
                raise _open_error(self.url, exc) from exc  # not ours: OSError, sqlite3
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
                failure = _store_error(exc)
                if not _busy(exc):
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
                more = _busy(exc)  # another connection is writing: try again soon
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
            loop.call_soon_threadsafe(_settle, ready, None, _open_error(self.url, exc))
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


def _migrate(c: sqlite3.Connection) -> None:
    """Add the columns a file made by an older liverec lacks (in the caller's
    transaction; SCHEMA then creates what is missing, the new indexes included)."""
    added = set()
    for table, column, definition in ADDED_COLUMNS:
        have = {row[1] for row in c.execute(f"PRAGMA table_info({table})")}
        if have and column not in have:  # no columns: no table yet, SCHEMA creates it
            c.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            added.add(table)
    if "profiles" in added:
        c.execute(
            "UPDATE profiles SET"
            " n_purchases = (SELECT count(*) FROM profile_purchases p"
            " WHERE p.user_id = profiles.user_id),"
            " n_ratings = (SELECT count(*) FROM profile_ratings r"
            " WHERE r.user_id = profiles.user_id)"
        )


def _open_error(url: str, exc: BaseException) -> BaseException:
    """The error `open()` raises when the file cannot be opened or set up."""
    if isinstance(exc, OSError | sqlite3.OperationalError):
        return StoreUnavailable(f"cannot open {url}: {exc}")
    return _store_error(exc)


def _busy(exc: BaseException) -> bool:
    """True when another connection holds the lock SQLite needed (SQLITE_BUSY)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY


def _shut(c: sqlite3.Connection, checkpointer: _Checkpointer | None) -> None:
    """Close the loop's connection, then checkpoint (TRUNCATE) and stop; off the loop."""
    try:
        c.close()
    finally:
        if checkpointer is not None:
            checkpointer.stop()


def _dumps(data: Mapping[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True, allow_nan=False)


def _store_error(exc: BaseException) -> BaseException:
    """The liverec error a caller sees for an exception raised on the writer thread."""
    if isinstance(exc, LiverecError):
        return exc
    err: StoreError
    if isinstance(exc, sqlite3.OperationalError):  # locked, disk full, I/O error, read-only
        err = StoreUnavailable(f"SQLite: {exc}")
    elif isinstance(exc, sqlite3.Error):
        err = StoreError(f"SQLite: {exc}")
    else:
        log.error("internal error in the embedded store", exc_info=exc)
        err = StoreError(f"internal error: {exc!r}")
    err.__cause__ = exc
    return err


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
