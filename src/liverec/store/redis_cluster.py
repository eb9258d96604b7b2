"""The Redis Cluster store: the Redis backend with its keys spread over the slots of a
Redis Cluster and the event log partitioned over several streams.

Owns: the hash-tagged key layout, the per-slot Lua steps that record an event, the
partitioned event log (which partition a session writes, merged reads, consumer
groups on every partition) and the cluster's errors. Everything else (open_session,
profiles, the catalog, pipelining concurrent calls, URL options) is `RedisStore`'s:
this class only overrides where Cluster differs. Described in docs/storage.md.

Key layout. Every key of one session carries the hash tag ``{s:LEN:SESSION}`` and every
key of one user ``{u:LEN:USER}`` (LEN, the id's length, keeps ids holding ``}`` or
``:`` apart), so each lies in one slot and a Lua script updates it atomically. The log
is P streams ``{log:0}`` ... ``{log:P-1}``; a session always writes partition
``crc32(session id) % P``, so its events keep their order. The catalog shares the
tag ``{catalog}``.

Recording an event takes two round trips of per-slot scripts, in this order:

1. the session's slot: unless the event id's dedup key exists, apply the event to the
   session and then set the dedup key. It decides the return value: True for the
   call that set it, False for any later one.
2. the log partition's slot and the user's slot, in one pipeline: each script applies
   the event unless its own marker for (session, event id) exists, then sets the
   marker, so running it twice changes nothing.

Each marker is set last in its script: Redis does not roll a failed script back, so a
script that fails on its first write (a foreign key of the wrong type) leaves no
marker, and the retry applies that part again.

Step 2 runs for a duplicate too, so whatever a failed earlier attempt left undone is
done by the retry; a call returns (True or False) only once all three parts are in
place. A call that fails raises StoreUnavailable and is not acked, and the client's
retry completes the event: an acked event is always logged and applied, exactly once.
The cost is two markers per event beside the dedup key, each living `dedup_ttl_s`.

Log entries get ids ``MS-SEQ`` from this process's clock and a counter that never
goes back, so events recorded one after another sort in that order across
partitions; readers merge the partitions by (id, partition). A stream that already
holds a greater id (another process's clock is ahead) gets one from Redis instead.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, cast
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterError, RedisClusterException, TryAgainError

from ..errors import ConfigError, StoreError, StoreUnavailable
from ..types import Event
from .base import LoggedEvent, StoreLimits
from .redis import RedisStore, redis_url_options
from .redis_scripts import LUA_FUNCTIONS, Script, decode_event, read_stream_tail, ttl_ms

# KEYS: dedup, session hash, session items
# ARGV: dedup_ttl_ms, ts, item_id, user_id ('' = anonymous), session_max, session_ttl_ms
SESSION_STEP_LUA: Final = (
    LUA_FUNCTIONS
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
apply_session(KEYS[2], KEYS[3], ARGV[3], ARGV[2], ARGV[4], ARGV[5], ARGV[6])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
return 1
"""
)

# KEYS: marker, log partition
# ARGV: dedup_ttl_ms, log_max (0 = off), entry id, id, session_id, action, item_id, ts,
#       user_id, rating, origin
LOG_STEP_LUA: Final = (
    LUA_FUNCTIONS
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
append_log(KEYS[2], ARGV[2], ARGV[3], {'id', ARGV[4], 'session_id', ARGV[5],
           'action', ARGV[6], 'item_id', ARGV[7], 'ts', ARGV[8], 'user_id', ARGV[9],
           'rating', ARGV[10], 'origin', ARGV[11]})
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return 1
"""
)

# KEYS: marker, counters, recent, purchases, ratings, ratings order
# ARGV: dedup_ttl_ms, action, item_id, rating ('' = none), recent_max, profile_max,
#       profile_ttl_ms
PROFILE_STEP_LUA: Final = (
    LUA_FUNCTIONS
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
apply_profile({KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]}, ARGV[2], ARGV[3], ARGV[4],
              ARGV[5], ARGV[6], ARGV[7])
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return 1
"""
)

_Call = tuple[Script, list[str], list[str]]
_Key = tuple[int, int, int]  # (ms, seq, partition): the order of the merged log


class RedisClusterStore(RedisStore):
    """Redis Cluster-backed store. See the module docstring for the key layout."""

    _session_step = Script(SESSION_STEP_LUA)
    _log_step = Script(LOG_STEP_LUA)
    _profile_step = Script(PROFILE_STEP_LUA)

    def __init__(self, connect_url: str, limits: StoreLimits, **options: Any) -> None:
        super().__init__(connect_url, limits, **options)
        if "{" in self.prefix or "}" in self.prefix:
            raise ConfigError("prefix: '{' and '}' are not allowed with Redis Cluster")
        self.partitions = limits.event_log_partitions
        self._logs = [f"{self.prefix}{{log:{n}}}" for n in range(self.partitions)]
        self._catalog_key = f"{self.prefix}{{catalog}}:items"
        self._catalog_version_key = f"{self.prefix}{{catalog}}:version"
        self._last_ms = 0
        self._seq = itertools.count(1)
        # follow(): (group, consumer) -> events read from Redis (so delivered and
        # pending there) but not yet returned, in log order
        self._unreturned: dict[tuple[str, str], list[tuple[_Key, LoggedEvent]]] = {}
        # follow(): (group, consumer) -> partitions whose last read returned events, so
        # may hold more that were not read yet
        self._maybe_more: dict[tuple[str, str], set[int]] = {}

    @classmethod
    def from_url(cls, url: str, limits: StoreLimits) -> RedisClusterStore:
        """``redis[s]+cluster://[[user]:password@]HOST:PORT[?prefix=P&...]``: any node."""
        parts = urlsplit(url)
        if not parts.hostname:
            raise ConfigError(
                "redis+cluster:// URL needs a host, e.g. redis+cluster://10.0.0.1:7000"
            )
        if parts.path not in ("", "/", "/0"):
            raise ConfigError("Redis Cluster has one database: no /DB in a redis+cluster:// URL")
        options = redis_url_options(parts.query)
        scheme = parts.scheme.lower().replace("+cluster", "")
        connect = urlunsplit(parts._replace(scheme=scheme, path="", query=""))
        return cls(connect, limits, url=url, **options)

    # --- connecting ------------------------------------------------------------

    def _connect(self) -> Redis:
        options = {k: v for k, v in self._options.items() if k != "timeout"}
        client = RedisCluster.from_url(self._connect_url, decode_responses=True, **options)
        # RedisCluster offers every command used here with Redis's signature; the
        # shared code is typed against Redis.
        return cast(Redis, client)

    def _scripts(self) -> tuple[Script, ...]:
        return (self._open_script, self._session_step, self._log_step, self._profile_step)

    async def _opened(self, client: Redis) -> None:
        # The partition of a session follows from P: refuse to write a log laid out
        # for another P, whose readers would miss partitions or reorder sessions.
        key = f"{self.prefix}{{meta}}:event_log_partitions"
        await client.set(key, str(self.partitions), nx=True)
        stored = int(await client.get(key) or self.partitions)
        if stored != self.partitions:
            raise ConfigError(
                f"the event log in {self.url} has {stored} partitions, but "
                f"event_log_partitions is {self.partitions}: set it to {stored}"
            )

    # --- the key layout --------------------------------------------------------

    def _session_key(self, kind: str, session_id: str) -> str:
        return f"{self.prefix}{{s:{len(session_id)}:{session_id}}}:{kind}"

    def _user_key(self, kind: str, user_id: str) -> str:
        return f"{self.prefix}{{u:{len(user_id)}:{user_id}}}:{kind}"

    def _dedup_key(self, session_id: str, event_id: str) -> str:
        return f"{self._session_key('dedup', session_id)}:{event_id}"

    def partition(self, session_id: str) -> int:
        """The log partition a session's events go to."""
        return zlib.crc32(session_id.encode("utf-8", "surrogatepass")) % self.partitions

    # --- recording: the per-slot steps -------------------------------------------

    async def _record_chunk(self, client: Redis, chunk: list[Event]) -> list[bool | Exception]:
        lim = self.limits
        dedup_ms = ttl_ms(lim.dedup_ttl_s)
        first: list[_Call] = []
        for e in chunk:
            keys = [
                self._dedup_key(e.session_id, e.id),
                self._session_key("session", e.session_id),
                self._session_key("items", e.session_id),
            ]
            args = [dedup_ms, repr(float(e.ts)), e.item_id, e.user_id or ""]
            args += [str(lim.session_max_items), ttl_ms(lim.session_ttl_s)]
            first.append((self._session_step, keys, args))
        outcomes: list[bool | Exception] = [
            r if isinstance(r, Exception) else bool(r)
            for r in await self._run_scripts(client, first)
        ]
        second: list[_Call] = []
        owners: list[int] = []  # second[i] completes chunk[owners[i]]
        for i, e in enumerate(chunk):
            if isinstance(outcomes[i], Exception):
                continue  # nothing of it was claimed: the retry starts afresh
            second.append(self._log_call(e, dedup_ms))
            owners.append(i)
            if e.user_id:
                second.append(self._profile_call(e, dedup_ms))
                owners.append(i)
        replies = await self._run_scripts(client, second) if second else []
        for i, reply in zip(owners, replies, strict=True):
            if isinstance(reply, Exception):
                outcomes[i] = reply  # not acked: the retry finishes it
        return outcomes

    def _log_call(self, e: Event, dedup_ms: str) -> _Call:
        n = self.partition(e.session_id)
        marker = f"{self._logs[n]}:seen:{len(e.session_id)}:{e.session_id}:{e.id}"
        args = [dedup_ms, str(self.limits.event_log_max or 0), self._entry_id(), e.id]
        args += [e.session_id, e.action, e.item_id, repr(float(e.ts)), e.user_id or ""]
        args += ["" if e.rating is None else repr(float(e.rating)), self.origin]
        return (self._log_step, [marker, self._logs[n]], args)

    def _profile_call(self, e: Event, dedup_ms: str) -> _Call:
        user = e.user_id or ""
        marker = f"{self._user_key('seen', user)}:{len(e.session_id)}:{e.session_id}:{e.id}"
        lim = self.limits
        args = [dedup_ms, e.action, e.item_id, "" if e.rating is None else repr(float(e.rating))]
        args += [str(lim.recent_max_items), str(lim.profile_max_items), ttl_ms(lim.profile_ttl_s)]
        return (self._profile_step, [marker, *self._profile_keys(user)], args)

    def _entry_id(self) -> str:
        """The next log entry id of this process: MS-SEQ, increasing."""
        self._last_ms = max(self._last_ms, int(time.time() * 1000))
        return f"{self._last_ms}-{next(self._seq)}"

    # --- reading the partitioned log ----------------------------------------------

    async def read_events(self, after: str | None = None, limit: int = 1000) -> list[LoggedEvent]:
        if limit <= 0:
            return []
        cursor = None if after is None else _parse(after)
        async with self._use("read_events") as client:
            async with client.pipeline(transaction=False) as pipe:
                for n, log in enumerate(self._logs):
                    if cursor is None:
                        start = "-"
                    else:  # the same id in a later partition comes after the cursor
                        ms, seq, p = cursor
                        start = f"({ms}-{seq}" if n <= p else f"{ms}-{seq}"
                    pipe.xrange(log, start, "+", count=limit)
                replies: list[Any] = await pipe.execute()
        return _merged(replies)[:limit]

    async def read_tail(self, limit: int) -> list[LoggedEvent]:
        if limit <= 0:
            return []
        async with self._use("read_tail") as client:
            replies = [await read_stream_tail(client, log, limit) for log in self._logs]
        return _merged(replies)[-limit:]

    async def count_events(self) -> int:
        async with self._use("count_events") as client:
            async with client.pipeline(transaction=False) as pipe:
                for log in self._logs:
                    pipe.xlen(log)
                return sum(int(n) for n in await pipe.execute())

    async def follow(self, group: str, consumer: str, count: int = 1000) -> list[LoggedEvent]:
        """A consumer group on every partition, merged (a k-way merge across calls).

        Each partition with none of its events waiting here is read (pending entries
        first, as RedisStore.follow). An event is returned only when no partition that
        may hold more unread events could still have an older one, oldest first, up to
        `count`; the rest wait here for the next call. Those are pending in Redis too,
        so after a restart they are delivered again.
        """
        if count <= 0:
            return []
        key = (group, consumer)
        waiting = self._unreturned.setdefault(key, [])
        more = self._maybe_more.setdefault(key, set())
        fresh = sorted(set(range(self.partitions)) - {k[2] for k, _ in waiting})
        async with self._use("follow") as client:
            reads = await asyncio.gather(
                *(self._follow_stream(client, self._logs[n], group, consumer, count) for n in fresh)
            )
        for n, entries in zip(fresh, reads, strict=True):
            if entries:
                more.add(n)
            else:
                more.discard(n)
            for entry_id, event in entries:
                ms, seq = _split_id(entry_id)
                waiting.append(((ms, seq, n), LoggedEvent(f"{entry_id}@{n}", event)))
        waiting.sort(key=lambda pair: pair[0])
        # the newest waiting event of a partition that may have more bounds what is safe
        newest: dict[int, _Key] = {k[2]: k for k, _ in waiting}
        bound = min((newest[n] for n in more if n in newest), default=None)
        ready = [i for i, (k, _) in enumerate(waiting[:count]) if bound is None or k <= bound]
        out = [waiting[i][1] for i in ready]
        del waiting[: len(ready)]
        return out

    async def ack(self, group: str, positions: Sequence[str]) -> None:
        if not positions:
            return
        by_partition: dict[int, list[str]] = {}
        for position in positions:
            ms, seq, n = _parse(position)
            if n >= self.partitions:
                raise StoreError(f"not a log position of this store: {position!r}")
            by_partition.setdefault(n, []).append(f"{ms}-{seq}")
        async with self._use("ack") as client:
            for n, ids in by_partition.items():
                await self._ack_stream(client, self._logs[n], group, ids)

    # --- tailing: one cursor per partition (see RedisStore.tail) ---------------------

    def _log_streams(self) -> list[str]:
        return self._logs

    def _position(self, partition: int, entry_id: str) -> str:
        return f"{entry_id}@{partition}"

    def _entry_of(self, partition: int, position: str) -> str:
        ms, seq, n = _parse(position)
        if n != partition:
            raise StoreError(f"not a position of log partition {partition}: {position!r}")
        return f"{ms}-{seq}"

    # --- errors ------------------------------------------------------------------

    @contextmanager
    def _errors(self, operation: str) -> Iterator[None]:
        """As RedisStore's, and redis-py's cluster errors that are no RedisError (no
        slot map, no reachable node) as StoreUnavailable."""
        try:
            with super()._errors(operation):
                yield
        except RedisClusterException as exc:
            raise StoreUnavailable(f"{operation}: Redis Cluster at {self.url}: {exc}") from exc

    def _mapped(self, operation: str, reply: Any) -> Any:
        """As RedisStore's, and a cluster that is down, failing over or without a slot
        map is unavailable (the call may succeed later), not a bug."""
        if isinstance(reply, ClusterError | TryAgainError | RedisClusterException):
            error = StoreUnavailable(f"{operation}: Redis Cluster at {self.url}: {reply}")
            error.__cause__ = reply
            return error
        return super()._mapped(operation, reply)


def _split_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


def _parse(position: str) -> _Key:
    """A position ``MS-SEQ@PARTITION`` as its sort key."""
    try:
        entry_id, _, n = position.partition("@")
        ms, seq = _split_id(entry_id)
        return ms, seq, int(n)
    except ValueError:
        raise StoreError(f"not a log position of this store: {position!r}") from None


def _merged(replies: list[Any]) -> list[LoggedEvent]:
    """Stream entries of every partition (each list in stream order), in log order."""
    keyed: list[tuple[_Key, LoggedEvent]] = []
    for n, entries in enumerate(replies):
        for entry_id, fields in entries:
            ms, seq = _split_id(str(entry_id))
            keyed.append(((ms, seq, n), LoggedEvent(f"{entry_id}@{n}", decode_event(fields))))
    keyed.sort(key=lambda pair: pair[0])
    return [logged for _, logged in keyed]
