"""WAL checkpoints of the embedded store when transactions run on the event loop.

Owns: the checkpoint thread (`Checkpointer`) with its own connection, which copies
the WAL into the main file and starts the WAL over, so that no fsync runs on the
loop (whose connection has wal_autocheckpoint=0), and when it does so. The policy
and its timings are described in docs/storage.md.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import threading
import time
from typing import Final

from .sqlite_errors import busy

log = logging.getLogger("liverec.store.embedded")  # one logger for the embedded store

# The checkpoint thread (loop writes on a file; see Checkpointer) checkpoints and
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


class Checkpointer:
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
        self,
        path: str,
        synchronous: str,
        busy_timeout_s: float,
        interval_s: float,
        wal_bytes: int,
        hold_busy_s: float = HOLD_BUSY_S,
    ) -> None:
        self.path = path
        self.interval_s = interval_s
        self.wal_bytes = wal_bytes
        self.hold_busy_s = hold_busy_s
        self.busy_timeout_ms = int(busy_timeout_s * 1000)
        self.holding = False  # read on the loop: begin no write transaction while True
        self.restarts = 0  # completed: the WAL was started over
        self.conn = sqlite3.connect(
            path, timeout=hold_busy_s, isolation_level=None, check_same_thread=False
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
        for `hold_busy_s` or more (SQLite probably waited for another connection)."""
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
            self.restarts += 1
        except sqlite3.Error as exc:
            if self.pin.in_transaction:
                self.pin.execute("ROLLBACK")
            if not busy(exc):
                log.exception("starting the WAL of %s over failed", self.path)
            return False
        return time.monotonic() - start < self.hold_busy_s

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
