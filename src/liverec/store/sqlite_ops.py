"""The SQL of the embedded store: what each of its transactions does.

Owns: the statements that run inside a transaction, on the event loop or on the
writer thread alike (`EmbeddedStore` decides when and where): opening and reading
sessions, recording an event (duplicate ids, the session's items, the user's
profile with its bounded purchases and ratings), reading profiles, the event log and
the catalog, trimming the event log to `event_log_max`, and purging expired rows.
None of it begins or ends a transaction except `purge_step`, which is one.

Expiry uses the store's own clock at write time ("touched"), not event timestamps,
so it behaves like Redis key expiry. Expired rows are ignored on read, reset on
write, and deleted by `purge_step`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from typing import Any, Final

from ..types import Event, Profile, SessionRecord
from .base import LoggedEvent, StoreLimits
from .sqlite_schema import PROFILE_TABLES

PURGE_CHUNK: Final = 2000  # expired sessions/profiles/dedup rows per purge (thread, open)


class SqliteOps:
    """The store's transactions' SQL under `limits`; `c` is the connection whose
    transaction is open, `now`/`clock` the store's clock at its start."""

    def __init__(self, limits: StoreLimits) -> None:
        self.limits = limits
        self._logged_since_trim = 0

    # --- the Store interface ------------------------------------------------------

    def open_session(
        self,
        c: sqlite3.Connection,
        session_id: str,
        user_id: str | None,
        now: float,
        clock: float,
    ) -> tuple[SessionRecord, bool]:
        row = self._live_session(c, session_id, clock, reset=True)
        if row is None:
            c.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, 0, ?)",
                (session_id, user_id, now, now, clock),
            )
            return SessionRecord(session_id, user_id, [], now, now), False
        owner, created, last_seen = row[0], row[1], row[2]
        if owner is None and user_id is not None:  # the first signed-in visit claims it
            c.execute("UPDATE sessions SET user_id = ? WHERE session_id = ?", (user_id, session_id))
            owner = user_id
        if owner == user_id:  # only the owner's visit keeps the session alive
            last_seen = max(last_seen, now)
            c.execute(
                "UPDATE sessions SET last_seen = ?, touched = ? WHERE session_id = ?",
                (last_seen, clock, session_id),
            )
        return SessionRecord(
            session_id, owner, self._items(c, session_id), created, last_seen
        ), True

    def get_session(
        self, c: sqlite3.Connection, session_id: str, clock: float
    ) -> SessionRecord | None:
        row = self._live_session(c, session_id, clock, reset=False)
        if row is None:
            return None
        return SessionRecord(session_id, row[0], self._items(c, session_id), row[1], row[2])

    def get_profile(self, c: sqlite3.Connection, user_id: str, clock: float) -> Profile:
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
            r[0] for r in c.execute("SELECT item_id FROM profile_purchases WHERE user_id = ?", q)
        }
        profile.ratings = dict(  # oldest first
            c.execute(
                "SELECT item_id, rating FROM profile_ratings WHERE user_id = ?"
                " ORDER BY seq, item_id",
                q,
            )
        )
        return profile

    @staticmethod
    def read_events(c: sqlite3.Connection, start: int, limit: int) -> list[LoggedEvent]:
        rows = c.execute(
            "SELECT pos, id, session_id, action, item_id, ts, user_id, rating FROM events"
            " WHERE pos > ? ORDER BY pos LIMIT ?",
            (start, max(limit, 0)),
        )
        return [LoggedEvent(f"{r[0]:020d}", Event(*r[1:])) for r in rows]

    @staticmethod
    def read_tail(c: sqlite3.Connection, limit: int) -> list[LoggedEvent]:
        rows = c.execute(
            "SELECT pos, id, session_id, action, item_id, ts, user_id, rating FROM events"
            " ORDER BY pos DESC LIMIT ?",
            (max(limit, 0),),
        ).fetchall()
        return [LoggedEvent(f"{r[0]:020d}", Event(*r[1:])) for r in reversed(rows)]

    @staticmethod
    def count_events(c: sqlite3.Connection) -> int:
        # Exact and O(log n): positions are contiguous because rows are only appended
        # (AUTOINCREMENT; a rolled-back insert rolls back the sequence too) and only
        # ever removed from the head by trimming.
        row = c.execute("SELECT max(pos) - min(pos) + 1 FROM events").fetchone()
        return int(row[0] or 0)

    @classmethod
    def upsert_items(cls, c: sqlite3.Connection, rows: list[tuple[str, str]]) -> int:
        c.executemany(
            "INSERT INTO catalog VALUES (?, ?) ON CONFLICT (item_id)"
            " DO UPDATE SET data = excluded.data",
            rows,
        )
        return cls._bump_catalog(c)

    @classmethod
    def remove_items(cls, c: sqlite3.Connection, params: list[tuple[str]]) -> int:
        c.executemany("DELETE FROM catalog WHERE item_id = ?", params)
        return cls._bump_catalog(c)

    @staticmethod
    def get_items(c: sqlite3.Connection, wanted: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for item_id, data in c.execute(
                f"SELECT item_id, data FROM catalog WHERE item_id IN ({marks})", chunk
            ):
                out[item_id] = json.loads(data)
        return out

    @classmethod
    def all_items(cls, c: sqlite3.Connection) -> tuple[int, dict[str, dict[str, Any]]]:
        items = {i: json.loads(d) for i, d in c.execute("SELECT item_id, data FROM catalog")}
        return cls.catalog_version(c), items

    # --- the catalog version, sessions, recording events, trimming, purging ------

    @staticmethod
    def catalog_version(c: sqlite3.Connection) -> int:
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

    def record(self, c: sqlite3.Connection, e: Event, now: float) -> bool:
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

    def trim_log(self, c: sqlite3.Connection) -> None:
        cap = self.limits.event_log_max
        if cap is None or self._logged_since_trim < max(1, min(1000, cap // 10)):
            return
        c.execute("DELETE FROM events WHERE pos <= (SELECT max(pos) FROM events) - ?", (cap,))
        self._logged_since_trim = 0

    def purge_step(
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
