"""The profile-store and event-log interface that every backend implements.

Owns: the contract between the server and storage. One backend per file
(`embedded.py`, `redis.py`, `redis_cluster.py`), chosen by URL in `open_store`
(store/__init__.py).
The contract test suite (tests/test_store_contract.py) runs against every backend.

Durability rule: when `record_event` returns, the event is in the event log and
applied to the session and profile, durably enough to survive a restart of the
liverec process. Only then may the server ack it.
"""

from __future__ import annotations

import abc
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..types import Event, Profile, SessionRecord


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """Bounds and expiry the store applies; copied from Settings by open_store."""

    session_max_items: int = 200
    recent_max_items: int = 100
    profile_max_items: int = 1000  # purchases and ratings kept per profile (each)
    session_ttl_s: float | None = 7 * 86400.0
    profile_ttl_s: float | None = 180 * 86400.0
    dedup_ttl_s: float = 86400.0
    event_log_max: int | None = None
    event_log_partitions: int = 8  # streams the log is split over (Redis Cluster only)


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """An event read back from the append-only log, with its log position."""

    position: str  # opaque, increasing; pass to read_events(after=...)
    event: Event
    origin: str | None = None  # the `Store.origin` of the process that logged it, if known


class Store(abc.ABC):
    """Profiles, sessions and the event log. All methods are coroutine-safe."""

    url: str
    # True when other processes may write the same event log (Redis, Redis Cluster):
    # then `log_ends` and `tail` let a process follow what the others record.
    shared_log: bool = False

    def __init__(self, limits: StoreLimits) -> None:
        self.limits = limits
        # Names this store object (one per server process) in the log entries it
        # writes, so a process following the shared log can skip its own events.
        self.origin = secrets.token_hex(8)

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect / create schema. Raises StoreUnavailable if unreachable."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush everything pending and release resources. Idempotent."""

    @abc.abstractmethod
    async def ping(self) -> bool:
        """True when the store is reachable and writable right now."""

    @abc.abstractmethod
    async def open_session(
        self, session_id: str, user_id: str | None, now: float
    ) -> tuple[SessionRecord, bool]:
        """Load the session or create it owned by `user_id`.

        Returns (record, existed). An anonymous session opened with a `user_id` is
        claimed by that user (atomically: one claimant wins); an owner, once set,
        never changes. The caller checks `record.user_id` against the caller's identity.
        """

    @abc.abstractmethod
    async def get_session(self, session_id: str) -> SessionRecord | None:
        """The stored session, or None when unknown or expired."""

    @abc.abstractmethod
    async def record_event(self, event: Event) -> bool:
        """Durably append and apply one event, in one round trip where possible.

        Returns True when the event was new, False when its id was already
        recorded for this session (then nothing is changed). Applying means:
        append to the event log; append item to the session sequence (bounded);
        for a user: counters[action] += 1, recent (bounded), purchases on
        "purchase", ratings on "rate"; refresh expiry.
        Raises StoreUnavailable when it cannot be recorded (then it was not).
        """

    @abc.abstractmethod
    async def get_profile(self, user_id: str) -> Profile:
        """The user's profile (empty when unknown)."""

    @abc.abstractmethod
    async def read_events(self, after: str | None = None, limit: int = 1000) -> list[LoggedEvent]:
        """Events in log order strictly after `after` (from the start when None)."""

    @abc.abstractmethod
    async def read_tail(self, limit: int) -> list[LoggedEvent]:
        """The last `limit` events of the log, in log order (to warm models at start)."""

    @abc.abstractmethod
    async def count_events(self) -> int:
        """Number of entries in the event log."""

    async def record_events(self, events: Sequence[Event]) -> list[bool]:
        """Record several events; backends may override with one round trip."""
        return [await self.record_event(e) for e in events]

    # --- the catalog: item metadata, validated by liverec.catalog, opaque here ------

    @abc.abstractmethod
    async def upsert_items(self, items: Mapping[str, Mapping[str, Any]]) -> int:
        """Insert or replace items (item_id -> JSON-serialisable dict), all or nothing.

        Returns the catalog version after the write. The version grows by one with
        every write (upsert or remove), so a process that polls `catalog_version`
        sees any change made by another; an unchanged version means no change.
        """

    @abc.abstractmethod
    async def remove_items(self, item_ids: Sequence[str]) -> int:
        """Delete items (unknown ids are ignored); returns the catalog version after."""

    @abc.abstractmethod
    async def get_items(self, item_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored items among `item_ids` (unknown ids are absent)."""

    @abc.abstractmethod
    async def all_items(self) -> tuple[int, dict[str, dict[str, Any]]]:
        """(version, every item); the items include every write up to that version
        (a backend that cannot read both atomically may include later writes too)."""

    @abc.abstractmethod
    async def catalog_version(self) -> int:
        """The catalog version: 0 before the first write."""

    # --- following the event log: consumer groups (used by the continuous learner) --

    @abc.abstractmethod
    async def follow(self, group: str, consumer: str, count: int = 1000) -> list[LoggedEvent]:
        """Up to `count` log events never delivered to `group`, oldest first.

        A group is created at the start of the log on first use. What was delivered
        but not acknowledged with `ack` is delivered again, first, to a consumer that
        comes back under the same name (after a restart); events trimmed from the log
        meanwhile are skipped. A group has one consumer, which makes one call at a time:
        the embedded backend tracks delivery per store object, Redis per consumer name
        (XREADGROUP).
        """

    @abc.abstractmethod
    async def ack(self, group: str, positions: Sequence[str]) -> None:
        """Acknowledge delivered events of `group`, in log order: they are not
        delivered again. The embedded backend keeps the highest position acknowledged,
        so acknowledge a prefix of what was delivered."""

    # --- tailing the shared log: every process learns from every event -------------

    def log_partitions(self) -> int:
        """How many partitions the event log has (each is tailed on its own)."""
        return 1

    async def log_ends(self) -> list[str]:
        """Per partition, a cursor at its end ("now"): `tail` from it returns only
        events recorded later. Only for a `shared_log` store."""
        raise NotImplementedError(f"{type(self).__name__} has no log other processes write")

    async def tail(
        self, partition: int, after: str, block_s: float, count: int
    ) -> list[LoggedEvent]:
        """Up to `count` events of one log partition strictly after the cursor `after`
        (a `log_ends` cursor or the position of an event `tail` returned), waiting up to
        `block_s` for the first. Positions are per partition; no consumer group is
        created, so a follower leaves nothing behind in the store. Entries carry their
        `origin`. Only for a `shared_log` store."""
        raise NotImplementedError(f"{type(self).__name__} has no log other processes write")

    # --- notifications between processes (pub/sub) ------------------------------------

    async def publish(self, channel: str, message: str) -> None:  # noqa: B027 - optional
        """Tell every process listening on `channel` (fire and forget: a process that
        is not listening right now misses it). No-op for a store of one process."""

    def listen(self, channel: str) -> AsyncIterator[str]:
        """The messages published on `channel` from now on, until the connection
        fails (then StoreUnavailable). Only for a `shared_log` store."""
        raise NotImplementedError(f"{type(self).__name__} has no other processes to hear")
