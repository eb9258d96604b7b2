"""The embedded (SQLite) backend beyond the contract: crash safety, purging, isolation,
writes on the event loop (NORMAL, memory://) or on the writer thread (FULL), checkpoints."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from liverec.errors import StoreError, StoreUnavailable
from liverec.store import StoreLimits, open_store
from liverec.store.embedded import LOOP_PURGE_CHUNK, EmbeddedStore
from liverec.types import Event

SYNC = pytest.mark.parametrize("sync", ["NORMAL", "FULL"])  # loop writes, writer thread

# Records events from 20 concurrent tasks forever, printing each id once its
# record_event has returned (= the server would ack it now).
CHILD = r"""
import asyncio, sys
from liverec.store import StoreLimits, open_store
from liverec.types import Event

async def main(url):
    store = open_store(url, StoreLimits())
    await store.open()
    async def worker(w):
        n = 0
        while True:
            eid = f"w{w}-{n}"
            await store.record_event(Event(eid, f"s{w}", "view", f"i{n}", float(n), f"u{w}"))
            sys.stdout.write(eid + "\n")
            sys.stdout.flush()
            n += 1
    await asyncio.gather(*(worker(w) for w in range(20)))

asyncio.run(main(sys.argv[1]))
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def ev(eid: str, session: str = "s1", item: str = "i", user: str | None = "u1") -> Event:
    return Event(eid, session, "purchase", item, 1.0, user)


@pytest.mark.parametrize("sync", ["NORMAL", "FULL"])
async def test_acked_events_survive_sigkill(tmp_path: Path, sync: str) -> None:
    url = f"embedded://{tmp_path}/crash.db?synchronous={sync}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, url, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    acked: list[str] = []
    try:
        while len(acked) < 600:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
            assert line, f"the child exited early with {await proc.wait()}"
            acked.append(line.decode().strip())
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    # Kill once only: a second kill() after the child died polls (reaps) it before
    # asyncio's child watcher does, which then reports returncode 255.
    proc.kill()  # SIGKILL, mid-run: no close, no checkpoint
    rest = await proc.stdout.read()
    acked += [x for x in rest.decode().split("\n")[:-1] if x]  # complete lines only
    assert await proc.wait() == -9

    store = open_store(url, StoreLimits())
    await store.open()
    try:
        logged = []
        after = None
        while batch := await store.read_events(after=after):
            logged += [x.event for x in batch]
            after = batch[-1].position
        ids = [e.id for e in logged]
        assert len(ids) == len(set(ids)) == await store.count_events()
        assert set(acked) <= set(ids)
        # sessions agree with the log: nothing half-applied
        for w in range(20):
            session = await store.get_session(f"s{w}")
            assert session is not None
            assert session.items == [e.item_id for e in logged if e.session_id == f"s{w}"]
    finally:
        await store.close()


async def test_expired_rows_are_reset_and_purged(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    clock = Clock()
    limits = StoreLimits(session_ttl_s=60.0, profile_ttl_s=120.0, dedup_ttl_s=30.0)
    store = EmbeddedStore(str(path), limits, clock=clock)
    await store.open()
    await store.record_event(ev("e1", item="old"))
    clock.now += 61  # session and dedup expired, profile not yet
    assert await store.get_session("s1") is None
    assert (await store.get_profile("u1")).purchases == {"old"}
    assert await store.record_event(ev("e1", item="new", user="u2"))
    session = await store.get_session("s1")
    assert session is not None and (session.user_id, session.items) == ("u2", ["new"])
    clock.now += 121
    assert (await store.get_profile("u1")).purchases == set()
    await store.close()

    reopened = EmbeddedStore(str(path), limits, clock=clock)  # purges on open
    await reopened.open()
    await reopened.close()
    with sqlite3.connect(path) as db:
        counts = {
            t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("sessions", "session_items", "dedup", "profiles", "profile_purchases")
        }
        assert counts == dict.fromkeys(counts, 0)
        assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 2  # the log stays
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_no_expiry_when_ttl_is_none(tmp_path: Path) -> None:
    clock = Clock()
    limits = StoreLimits(session_ttl_s=None, profile_ttl_s=None)
    store = EmbeddedStore(str(tmp_path / "n.db"), limits, clock=clock)
    await store.open()
    try:
        await store.record_event(ev("e1"))
        clock.now += 10 * 365 * 86400.0
        assert await store.get_session("s1") is not None
        assert (await store.get_profile("u1")).purchases == {"i"}
    finally:
        await store.close()


@SYNC
async def test_a_failing_event_does_not_fail_its_batch(tmp_path: Path, sync: str) -> None:
    store = open_store(f"embedded://{tmp_path}/b.db?synchronous={sync}", StoreLimits())
    await store.open()
    try:
        broken = Event("bad", "s1", "view", None, 1.0)  # type: ignore[arg-type]
        good = [store.record_event(ev(f"e{n}", item=f"i{n}")) for n in range(50)]
        results = await asyncio.gather(store.record_event(broken), *good, return_exceptions=True)
        assert isinstance(results[0], StoreError)
        assert results[1:] == [True] * 50
        assert await store.count_events() == 50
        assert await store.record_event(ev("after")) is True
    finally:
        await store.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    store = open_store(f"embedded://{path}", StoreLimits())
    with pytest.raises(StoreError, match="schema version 99"):
        await store.open()
    await store.close()


async def test_parent_directories_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c.db"
    store = open_store(f"embedded://{path}?synchronous=FULL", StoreLimits())
    await store.open()
    try:
        assert await store.record_event(ev("e1"))
    finally:
        await store.close()
    assert wal_bytes(path) == 0  # close checkpointed the WAL


# The schema of version 1 (liverec before profile_max_items), as it created files.
SCHEMA_V1 = """
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
    user_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, touched REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS profiles_touched ON profiles (touched);
CREATE TABLE IF NOT EXISTS profile_counters (
    user_id TEXT NOT NULL, action TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (user_id, action)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS profile_recent (
    user_id TEXT NOT NULL, seq INTEGER NOT NULL, item_id TEXT NOT NULL,
    PRIMARY KEY (user_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS profile_purchases (
    user_id TEXT NOT NULL, item_id TEXT NOT NULL, PRIMARY KEY (user_id, item_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS profile_ratings (
    user_id TEXT NOT NULL, item_id TEXT NOT NULL, rating REAL NOT NULL,
    PRIMARY KEY (user_id, item_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS catalog (item_id TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log_groups (grp TEXT PRIMARY KEY, acked INTEGER NOT NULL) WITHOUT ROWID;
"""


def make_v1_file(path: Path, touched: float) -> None:
    """A version-1 file as liverec wrote it: u1 has more purchases than the bound."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.executescript(f"BEGIN; {SCHEMA_V1} PRAGMA user_version=1; COMMIT;")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(
            "INSERT INTO events (id, session_id, action, item_id, ts, user_id, rating)"
            " VALUES ('old', 's0', 'purchase', 'p5', 1.0, 'u1', NULL)"
        )
        db.execute("INSERT INTO dedup VALUES ('s0', 'old', ?)", (touched,))
        db.execute("INSERT INTO profiles VALUES ('u1', 9, ?), ('u2', 1, ?)", (touched, touched))
        db.execute("INSERT INTO profile_counters VALUES ('u1', 'purchase', 5), ('u1', 'rate', 2)")
        db.executemany(
            "INSERT INTO profile_recent VALUES ('u1', ?, ?)",
            [(8, "r2"), (9, "p5")],
        )
        db.executemany(
            "INSERT INTO profile_purchases VALUES (?, ?)",
            [("u1", f"p{n}") for n in range(1, 6)] + [("u2", "q")],
        )
        db.execute("INSERT INTO profile_ratings VALUES ('u1', 'r1', 1.0), ('u1', 'r2', 2.0)")
    finally:
        db.close()


async def test_a_version_1_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    clock = Clock()
    make_v1_file(path, clock.now)
    limits = StoreLimits(profile_max_items=3)
    store = EmbeddedStore(str(path), limits, clock=clock)
    await store.open()
    try:
        # read as written; the bound applies from the next write on
        profile = await store.get_profile("u1")
        assert profile.purchases == {f"p{n}" for n in range(1, 6)}
        assert (profile.ratings, profile.recent) == ({"r1": 1.0, "r2": 2.0}, ["r2", "p5"])
        assert await store.record_event(ev("old", session="s0")) is False  # dedup kept
        # old rows are the oldest (seq 0), among themselves in item id order
        await store.record_event(ev("e1", item="new"))
        assert (await store.get_profile("u1")).purchases == {"p4", "p5", "new"}
        await store.record_event(ev("e2", item="p4"))  # a repeat refreshes an old row
        await store.record_event(ev("e3", item="new2"))
        await store.record_event(Event("e4", "s1", "rate", "r3", 2.0, "u1", 3.0))
        await store.record_event(Event("e5", "s1", "rate", "r4", 2.0, "u1", 4.0))
        await store.record_event(ev("e6", item="q2", user="u2"))
        profile = await store.get_profile("u1")
        assert profile.purchases == {"p4", "new", "new2"}
        assert profile.ratings == {"r2": 2.0, "r3": 3.0, "r4": 4.0}
        assert profile.recent == ["r2", "p5", "new", "p4", "new2", "r3", "r4"]
        assert profile.counters == {"purchase": 8, "rate": 4}
        assert (await store.get_profile("u2")).purchases == {"q", "q2"}
        assert [x.event.id for x in await store.read_events()] == [
            "old",
            *(f"e{n}" for n in range(1, 7)),
        ]
    finally:
        await store.close()

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        for table in ("profile_purchases", "profile_ratings"):
            assert "seq" in {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"profile_purchases_seq", "profile_ratings_seq"} <= indexes
        counts = db.execute("SELECT user_id, n_purchases, n_ratings FROM profiles ORDER BY 1")
        assert counts.fetchall() == [("u1", 3, 3), ("u2", 2, 0)]

    reopened = EmbeddedStore(str(path), limits, clock=clock)  # migrating again is a no-op
    await reopened.open()
    try:
        assert (await reopened.get_profile("u1")).purchases == {"p4", "new", "new2"}
        await reopened.record_event(ev("e7", item="new3"))
        assert (await reopened.get_profile("u1")).purchases == {"p4", "new2", "new3"}
    finally:
        await reopened.close()


@SYNC
@pytest.mark.parametrize("cap", [5, 55, 100])  # 55: a tenth that is not whole
async def test_the_log_is_trimmed_each_time_a_tenth_of_event_log_max_is_logged(
    tmp_path: Path, sync: str, cap: int
) -> None:
    # docs/storage.md: trimmed in the write transaction each time about a tenth of the
    # cap (at least 1) new entries were logged, so it holds up to that many extra.
    # One write transaction per event: the count climbs a tenth over the cap, then the
    # trim takes it back to the cap, every tenth.
    store = open_store(
        f"embedded://{tmp_path}/t.db?synchronous={sync}", StoreLimits(event_log_max=cap)
    )
    await store.open()
    tenth = max(1, cap // 10)
    try:
        counts = []
        for n in range(3 * cap):
            await store.record_event(ev(f"e{n}", session=f"s{n % 7}", item=f"i{n}"))
            counts.append(await store.count_events())
        settled = counts[cap:]
        assert max(settled) == cap + tenth - 1 and min(settled) == cap
        trims = [n for n in range(1, len(settled)) if settled[n] < settled[n - 1]]
        assert {b - a for a, b in itertools.pairwise(trims)} == ({tenth} if tenth > 1 else set())
    finally:
        await store.close()


async def test_writes_beyond_max_batch_go_in_the_next_transactions() -> None:
    # More writes pending in one loop iteration than max_batch: the first max_batch
    # are committed together, the rest in the following iterations, none left behind.
    store = EmbeddedStore(None, StoreLimits(), max_batch=4)
    await store.open()
    try:
        calls = [store.record_event(ev(f"e{n}", item=f"i{n}")) for n in range(10)]
        done = await asyncio.wait_for(asyncio.gather(*calls), 60)  # a failure bound only
        assert done == [True] * 10 and await store.count_events() == 10
    finally:
        await store.close()


async def test_a_limit_of_zero_or_below_reads_nothing() -> None:
    # SQLite reads a negative LIMIT as "no limit": a caller's 0 or -1 must not read
    # the whole log.
    store = open_store("memory://", StoreLimits())
    await store.open()
    try:
        await store.record_events([ev(f"e{n}", item=f"i{n}") for n in range(3)])
        for limit in (0, -1, -5):
            assert await store.read_events(limit=limit) == []
            assert await store.read_tail(limit) == []
        assert len(await store.read_events(limit=2)) == len(await store.read_tail(2)) == 2
    finally:
        await store.close()


def wal_bytes(db: Path) -> int:
    wal = db.with_name(db.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def db_bytes(db: Path) -> int:
    return db.stat().st_size if db.exists() else 0


async def eventually(check: Callable[[], bool], what: str, limit_s: float = 20.0) -> None:
    """Wait for a background thread's effect (a liveness bound, not a performance one)."""
    for _ in range(int(limit_s / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {limit_s} s: {what}")


def test_where_writes_run() -> None:
    def loop_writes(url: str) -> bool:
        store = open_store(url, StoreLimits())
        assert isinstance(store, EmbeddedStore)
        return store.loop_writes

    assert loop_writes("memory://") and loop_writes("memory://?synchronous=FULL")  # no disk
    assert loop_writes("embedded://x.db") and loop_writes("embedded://x.db?synchronous=off")
    assert not loop_writes("embedded://x.db?synchronous=FULL")  # fsync per commit: a thread
    assert not loop_writes("embedded://x.db?synchronous=extra")


async def test_a_file_store_commits_on_the_loop_and_acks_after_the_commit(
    tmp_path: Path,
) -> None:
    # The loop runs a group's statements and its COMMIT, and no caller's call returns
    # before the COMMIT of its group has begun (its future is still pending when it
    # starts). A read made meanwhile is answered too.
    store = EmbeddedStore(str(tmp_path / "t.db"), StoreLimits())
    await store.open()
    loop_thread = threading.get_ident()
    futures: list[asyncio.Future[Any]] = []
    begun: list[str] = []
    commits: list[tuple[bool, int]] = []  # of writes: (a caller was answered, thread)

    def trace(statement: str) -> None:
        if statement.startswith("BEGIN"):
            begun.append(statement)
        elif statement == "COMMIT" and begun.pop() == "BEGIN IMMEDIATE":
            answered = any(f.done() for f in futures)
            commits.append((answered, threading.get_ident()))

    try:
        conn = store._conn
        assert conn is not None
        conn.set_trace_callback(trace)
        for group in range(3):
            futures[:] = [
                asyncio.ensure_future(store.record_event(ev(f"e{group}.{n}", item=f"i{n}")))
                for n in range(5)
            ]
            await asyncio.sleep(0)  # the calls are made: one group, one transaction
            read = asyncio.ensure_future(store.get_session("s1"))
            assert await asyncio.gather(*futures) == [True] * 5
            assert (await read) is not None
        assert len(commits) == 3
        assert not any(answered for answered, _ in commits)
        assert {thread for _, thread in commits} == {loop_thread}
    finally:
        await store.close()


@SYNC
async def test_close_finishes_calls_and_truncates_the_wal(tmp_path: Path, sync: str) -> None:
    path = tmp_path / "c.db"
    store = open_store(f"embedded://{path}?synchronous={sync}", StoreLimits())
    await store.open()
    calls: list[Coroutine[Any, Any, object]] = [
        store.record_event(ev(f"e{n}", item=f"i{n}")) for n in range(30)
    ]
    calls.append(store.upsert_items({"a": {"title": "A"}}))
    tasks = [asyncio.ensure_future(call) for call in calls]
    await asyncio.sleep(0)  # every call is made, none is committed yet on the loop
    await asyncio.gather(store.close(), store.close())  # idempotent, also concurrently
    await store.close()
    assert await asyncio.gather(*tasks) == [True] * 30 + [1]
    assert wal_bytes(path) == 0
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 30


async def test_the_loop_connection_never_checkpoints(tmp_path: Path) -> None:
    # SQLite's autocheckpoint (1,000 pages) would copy the WAL into the main file, with
    # fsyncs, inside a commit on the loop; with the checkpoint thread held off, the main
    # file must not change while more than 1,000 pages are committed.
    path = tmp_path / "a.db"
    store = EmbeddedStore(
        str(path), StoreLimits(), checkpoint_interval_s=3600.0, checkpoint_wal_bytes=1 << 40
    )
    await store.open()
    try:
        before = db_bytes(path)
        for n in range(200):  # one transaction each: about 11 pages
            await store.record_event(ev(f"e{n}", session=f"s{n}", item=f"i{n}", user=f"u{n}"))
        assert wal_bytes(path) > 1000 * 4096
        assert db_bytes(path) == before
    finally:
        await store.close()
    assert wal_bytes(path) == 0 and db_bytes(path) > before  # close checkpointed it


@pytest.mark.parametrize(
    ("interval_s", "wal_bytes_"), [(0.05, 1 << 40), (3600.0, 64 * 1024)], ids=["time", "size"]
)
async def test_the_wal_is_checkpointed_while_open(
    tmp_path: Path, interval_s: float, wal_bytes_: int
) -> None:
    path = tmp_path / "k.db"
    store = EmbeddedStore(
        str(path), StoreLimits(), checkpoint_interval_s=interval_s, checkpoint_wal_bytes=wal_bytes_
    )
    await store.open()
    try:
        before = db_bytes(path)
        await store.record_events([ev(f"e{n}", item=f"i{n}") for n in range(500)])
        for n in range(20):
            await store.record_event(ev(f"x{n}", session=f"s{n}", user=f"u{n}"))
        await eventually(lambda: db_bytes(path) > before, "the main file took the WAL's pages")
        assert await store.count_events() == 520
    finally:
        await store.close()


async def test_the_wal_starts_over_under_continuous_writes(tmp_path: Path) -> None:
    # A PASSIVE checkpoint alone never catches up with a loop that keeps committing:
    # the WAL would grow for ever. The checkpoint thread holds the writes briefly and
    # starts it over, and the file is written over again while the loop goes on.
    # Decided by events: writes go on until three restarts completed and the events
    # written add up to twice the WAL file (which a WAL appended to could never
    # reach). A hold the scheduler stretched past the default 20 ms would be taken for
    # another connection's lock and back off for `checkpoint_interval_s`: that policy
    # is not what this test is about, so the hold budget is made generous.
    path = tmp_path / "w.db"
    store = EmbeddedStore(
        str(path),
        StoreLimits(),
        checkpoint_interval_s=3600.0,
        checkpoint_wal_bytes=256 * 1024,
        checkpoint_hold_busy_s=30.0,
    )
    await store.open()
    try:
        checkpointer = store._checkpointer
        assert checkpointer is not None
        start = wal_bytes(path)
        for n in range(10):
            await store.record_event(ev(f"e{n}", session=f"s{n}", item=f"i{n}"))
        per_event = (wal_bytes(path) - start) / 10  # one transaction each: ~11 pages
        # The deadline and the size only bound a failure (a WAL never started over).
        n, deadline = 10, time.monotonic() + 300.0
        while checkpointer.restarts < 3 or wal_bytes(path) >= n * per_event / 2:
            await store.record_event(ev(f"e{n}", session=f"s{n % 50}", item=f"i{n}"))
            await asyncio.sleep(0.001)
            n += 1
            assert time.monotonic() < deadline and wal_bytes(path) < 256 << 20, (
                f"{checkpointer.restarts} restarts, WAL {wal_bytes(path)} bytes"
                f" after {n} events of {per_event:.0f} bytes"
            )
        assert await store.count_events() == n
    finally:
        await store.close()
    assert wal_bytes(path) == 0


async def test_expired_rows_are_purged_on_the_loop_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    clock = Clock()
    limits = StoreLimits(session_ttl_s=60.0, profile_ttl_s=60.0, dedup_ttl_s=60.0)
    store = EmbeddedStore(str(path), limits, clock=clock, purge_interval_s=0.05)
    await store.open()
    try:
        n = 3 * LOOP_PURGE_CHUNK + 5
        await store.record_events([ev(f"e{i}", session=f"s{i}", user=f"u{i}") for i in range(n)])
        clock.now += 61
        await store.record_event(ev("fresh", session="live", user="alive"))

        def left() -> dict[str, int]:
            with sqlite3.connect(path) as db:
                return {
                    t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                    for t in ("sessions", "session_items", "profiles", "profile_recent", "dedup")
                }

        await eventually(lambda: left() == dict.fromkeys(left(), 1), "expired rows purged")
        session = await store.get_session("live")
        assert session is not None and session.items == ["i"]
        assert await store.count_events() == n + 1  # the log is not purged by age
    finally:
        await store.close()


async def test_one_purge_step_is_one_bounded_chunk(tmp_path: Path) -> None:
    clock = Clock()
    store = EmbeddedStore(
        str(tmp_path / "c.db"), StoreLimits(session_ttl_s=60.0), clock=clock, purge_interval_s=3600
    )
    await store.open()
    try:
        await store.record_events([ev(f"e{i}", session=f"s{i}") for i in range(40)])
        clock.now += 61
        db = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
        try:
            assert store._purge_step(db, clock.now, chunk=16, budget_s=0.0) is True
            assert db.execute("SELECT count(*) FROM sessions").fetchone()[0] == 24
            assert store._purge_step(db, clock.now, chunk=16, budget_s=60.0) is False
            assert db.execute("SELECT count(*) FROM sessions").fetchone()[0] == 0
        finally:
            db.close()
    finally:
        await store.close()


async def test_a_locked_file_delays_writes_without_blocking_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    store = EmbeddedStore(str(path), StoreLimits(), busy_timeout_s=30.0)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)  # another process, say
    try:
        await store.record_event(ev("e0"))
        other.execute("BEGIN IMMEDIATE")
        pending = asyncio.ensure_future(store.record_event(ev("e1", item="b")))
        for _ in range(20):  # the loop keeps running: other work goes on meanwhile
            await asyncio.sleep(0.005)
        assert not pending.done()
        session = await store.get_session("s1")  # reads are not blocked by a writer
        assert session is not None and session.items == ["i"]
        other.execute("COMMIT")
        assert await pending is True
    finally:
        other.close()
        await store.close()


async def test_a_lock_held_past_busy_timeout_fails_the_write(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = EmbeddedStore(str(path), StoreLimits(), busy_timeout_s=0.1)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable, match="locked"):
            await store.record_event(ev("e1"))
        other.execute("ROLLBACK")
        assert await store.record_event(ev("e1")) is True  # nothing was half-written
        assert await store.count_events() == 1
    finally:
        other.close()
        await store.close()


async def test_the_store_belongs_to_the_loop_that_opened_it() -> None:
    store = open_store("memory://", StoreLimits())
    await store.open()
    try:
        assert await store.record_event(ev("e1"))
        errors: list[BaseException] = []

        def elsewhere(call: Callable[[], Coroutine[Any, Any, object]]) -> None:
            try:
                asyncio.run(call())
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=elsewhere, args=(lambda: store.record_event(ev("e2")),))
        thread.start()
        await asyncio.to_thread(thread.join)
        assert len(errors) == 1 and isinstance(errors[0], StoreError)
        assert "event loop that opened it" in str(errors[0])
        assert await store.count_events() == 1
    finally:
        await store.close()
