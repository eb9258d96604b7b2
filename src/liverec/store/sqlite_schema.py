"""The embedded store's SQLite schema and its migration from older files.

Owns: the tables and indexes (`SCHEMA`), the schema version kept in the file's
``PRAGMA user_version`` (`SCHEMA_VERSION`), the columns added since version 1 and
setting up a file: refusing one made by a newer liverec, adding the missing columns
to one made by an older one, creating what is missing. Table layout is described in
docs/storage.md.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from ..errors import StoreError

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


def ensure_schema(c: sqlite3.Connection, path: str | None) -> None:
    """Bring the file of `c` (at `path`; None: in memory) to SCHEMA_VERSION in one
    transaction; on an error the caller rolls it back."""
    version = c.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has schema version {version}; this liverec knows "
            f"{SCHEMA_VERSION} (upgrade liverec)"
        )
    c.execute("BEGIN IMMEDIATE")
    _migrate(c)
    for statement in SCHEMA.split(";"):
        if statement.strip():
            c.execute(statement)
    c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    c.execute("COMMIT")


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
