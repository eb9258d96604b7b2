"""The COMMIT of the embedded store's loop transactions, on a thread of its own.

Owns: `Committer`, one thread that runs the COMMIT of a transaction the event loop
has begun and filled on its connection (embedded.py), then calls the loop back with
the outcome. The loop does the statements of a group of writes itself (short, and
holding the GIL: on a thread each would have to take it back); the COMMIT, which
writes the group's pages into the WAL (tens of KB per event) with the GIL released,
runs here, while the loop serves other sockets. Between `commit` and its callback
the connection is the thread's: the loop neither reads nor writes on it, so writes
made meanwhile wait and go in the next group (embedded.py keeps that rule).

Durability does not change: a caller's future resolves in the callback, after the
COMMIT has returned, as it did on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Final

log = logging.getLogger("liverec.store.embedded")

Done = Callable[[BaseException | None], None]  # called on the loop: None = committed

_STOP: Final = object()


class Committer:
    """A thread that commits the loop connection's open transaction (see the module)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self._loop = loop
        self._jobs: queue.SimpleQueue[tuple[sqlite3.Connection, Done] | object] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def commit(self, c: sqlite3.Connection, done: Done) -> None:
        """COMMIT the transaction open on `c` (rolled back if that fails), then call
        `done(error)` on the loop. `c` must not be used until then."""
        self._jobs.put((c, done))

    def stop(self) -> None:
        """End the thread after the commits queued; blocks (call it off the loop)."""
        self._jobs.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if not isinstance(job, tuple):
                return
            c, done = job
            error: BaseException | None = None
            try:
                c.execute("COMMIT")  # the durability point of every write in the group
            except Exception as exc:
                error = exc
                try:
                    if c.in_transaction:
                        c.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("rollback after a failed commit failed")
            try:
                self._loop.call_soon_threadsafe(done, error)
            except RuntimeError:  # the loop is closed: nobody waits any more
                return
