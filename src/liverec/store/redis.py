"""The Redis store: profiles, sessions and the event log in one Redis server.

Owns: the Redis key layout (and converting profile keys written before purchases
and ratings were bounded), calling the Lua scripts (redis_scripts.py) that record an
event and open a session atomically in one round trip, sending concurrent
record_event calls in one pipeline, following and tailing the event log, URL
options, and mapping redis-py errors to the liverec error tree. Key layout and
durability are described in docs/storage.md. It is one client of one server, so
its ~630 lines stay one module: the Lua and the stream helpers the Cluster backend
shares are redis_scripts.py's.

Single-node Redis only: the record script touches keys of a session, of a user and
the global event log in one call, which Redis Cluster cannot route to one slot.
Durability is Redis's own: with ``appendonly yes`` and ``appendfsync everysec`` an
acked event survives a restart of liverec and of Redis, and at most about one second
of events is lost if the Redis host itself crashes.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

from ..errors import ConfigError, StoreError, StoreUnavailable
from ..types import Event, Profile, SessionRecord
from .base import LoggedEvent, Store, StoreLimits
from .redis_scripts import (
    OPEN_SESSION_LUA,
    RECORD_LUA,
    Script,
    decode_event,
    read_stream_tail,
    ttl_ms,
)
from .urls import mask_url

DEFAULT_PREFIX: Final = "liverec:"
PIPELINE_CHUNK: Final = 500  # record_events: script calls per round trip


class RedisStore(Store):
    """Redis-backed store (redis.asyncio). See the module docstring for its limits."""

    _record_script = Script(RECORD_LUA)
    _open_script = Script(OPEN_SESSION_LUA)
    shared_log = True

    def __init__(
        self,
        connect_url: str,
        limits: StoreLimits,
        *,
        url: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        socket_timeout_s: float = 2.0,
        socket_connect_timeout_s: float = 2.0,
        health_check_interval_s: int = 30,
        max_connections: int = 64,
        pool_timeout_s: float = 5.0,
    ) -> None:
        super().__init__(limits)
        self.url = mask_url(url or connect_url)
        self.prefix = prefix
        self._connect_url = connect_url
        self._options: dict[str, Any] = {
            "socket_timeout": socket_timeout_s,
            "socket_connect_timeout": socket_connect_timeout_s,
            "health_check_interval": health_check_interval_s,
            "max_connections": max_connections,
            "timeout": pool_timeout_s,  # waiting for a free pooled connection
        }
        self._max_connections = max_connections
        self._pool_timeout_s = pool_timeout_s
        # A fair (FIFO) gate in front of the pool: redis-py's blocking pool lets a task
        # that just released a connection take it again ahead of the waiters, which
        # starves some of them past any timeout under load.
        self._gate = asyncio.Semaphore(max_connections)
        self._client: Redis | None = None
        self._waiting: deque[tuple[Event, asyncio.Future[bool]]] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._log_key = f"{prefix}log"
        self._catalog_key = f"{prefix}catalog:items"
        self._catalog_version_key = f"{prefix}catalog:version"
        # follow(): (stream, group, consumer) -> where its pending entries are read from
        # next; None once they are drained (then only new entries, '>', are read)
        self._pending_from: dict[tuple[str, str, str], str | None] = {}

    @classmethod
    def from_url(cls, url: str, limits: StoreLimits) -> RedisStore:
        """``redis[s]://[[user]:password@]HOST:PORT/DB[?prefix=P&socket_timeout=2&...]``."""
        parts = urlsplit(url)
        options = redis_url_options(parts.query)
        if not parts.hostname:
            raise ConfigError("redis:// URL needs a host, e.g. redis://127.0.0.1:6379/0")
        return cls(urlunsplit(parts._replace(query="")), limits, url=url, **options)

    # --- lifecycle ------------------------------------------------------------

    async def open(self) -> None:
        if self._client is not None:
            raise StoreError("store already opened")
        client = self._connect()
        try:
            with self._errors("open"):
                await client.ping()
                for script in self._scripts():
                    await client.script_load(script.text)
                await self._opened(client)
        except BaseException:
            await client.aclose()
            raise
        self._client = client

    def _connect(self) -> Redis:
        """A client (not yet connected) for the URL and options."""
        pool = BlockingConnectionPool.from_url(
            self._connect_url,
            decode_responses=True,
            retry=Retry(NoBackoff(), 1),  # one reconnect; the record script is idempotent
            **self._options,
        )
        return Redis.from_pool(pool)

    def _scripts(self) -> tuple[Script, ...]:
        """The Lua scripts loaded at open (and again when Redis has lost them)."""
        return (self._record_script, self._open_script)

    async def _opened(self, client: Redis) -> None:
        """Checks a backend makes once connected, before the store is usable."""

    async def close(self) -> None:
        if self._flusher is not None:  # let calls already made finish first
            await asyncio.wait([self._flusher])
            self._flusher = None
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def ping(self) -> bool:
        try:
            async with self._use("ping") as client:
                return bool(await client.set(f"{self.prefix}ping", "1", px=10_000))
        except StoreError:
            return False

    # --- the Store interface --------------------------------------------------

    async def open_session(
        self, session_id: str, user_id: str | None, now: float
    ) -> tuple[SessionRecord, bool]:
        keys = [self._session_key("session", session_id), self._session_key("items", session_id)]
        args = [user_id or "", repr(float(now)), ttl_ms(self.limits.session_ttl_s)]
        async with self._use("open_session") as client:
            existed, owner, created, last_seen, items = await self._eval(
                client, self._open_script, keys, args
            )
        record = SessionRecord(
            session_id, owner or None, list(items), float(created), float(last_seen)
        )
        return record, bool(existed)

    async def get_session(self, session_id: str) -> SessionRecord | None:
        async with self._use("get_session") as client:
            async with client.pipeline(transaction=True) as pipe:
                pipe.hgetall(self._session_key("session", session_id))
                pipe.lrange(self._session_key("items", session_id), 0, -1)
                fields, items = await pipe.execute()
        if not fields:
            return None
        return SessionRecord(
            session_id,
            fields.get("user") or None,
            list(items),
            float(fields.get("created", 0.0)),
            float(fields.get("last_seen", 0.0)),
        )

    async def record_event(self, event: Event) -> bool:
        """One script call. Calls made while a round trip is in flight are sent
        together in the next one (one pipeline), like the embedded group commit."""
        if self._client is None:
            raise StoreUnavailable(f"the store {self.url} is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._waiting.append((event, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush(), name="liverec-redis-record")
        return await future

    async def record_events(self, events: Sequence[Event]) -> list[bool]:
        """Pipelined: PIPELINE_CHUNK script calls per round trip."""
        results: list[bool] = []
        async with self._use("record_events") as client:
            for start in range(0, len(events), PIPELINE_CHUNK):
                chunk = list(events[start : start + PIPELINE_CHUNK])
                for reply in await self._record_chunk(client, chunk):
                    if isinstance(reply, Exception):
                        raise reply
                    results.append(reply)
        return results

    async def get_profile(self, user_id: str) -> Profile:
        purchases_key = self._user_key("purchases", user_id)
        async with self._use("get_profile") as client:
            async with client.pipeline(transaction=True) as pipe:
                pipe.hgetall(self._user_key("counters", user_id))
                pipe.lrange(self._user_key("recent", user_id), 0, -1)
                pipe.zrange(purchases_key, 0, -1)
                pipe.hgetall(self._user_key("ratings", user_id))
                replies = await pipe.execute(raise_on_error=False)
            counters, recent, purchases, ratings = replies
            if isinstance(purchases, ResponseError) and "WRONGTYPE" in str(purchases):
                # a plain set written before profile_max_items, not yet converted
                purchases = await client.smembers(purchases_key)
            for reply in (counters, recent, purchases, ratings):
                if isinstance(reply, Exception):
                    raise reply
        return Profile(
            user_id,
            purchases=set(purchases),
            ratings={k: float(v) for k, v in ratings.items()},
            recent=list(recent),
            counters={k: int(v) for k, v in counters.items()},
        )

    async def read_events(self, after: str | None = None, limit: int = 1000) -> list[LoggedEvent]:
        if limit <= 0:
            return []
        start = "-" if after is None else f"({after}"
        async with self._use("read_events") as client:
            entries: Any = await client.xrange(self._log_key, start, "+", count=limit)
        return [LoggedEvent(str(position), decode_event(fields)) for position, fields in entries]

    async def read_tail(self, limit: int) -> list[LoggedEvent]:
        if limit <= 0:
            return []
        async with self._use("read_tail") as client:
            entries = await read_stream_tail(client, self._log_key, limit)
        return [LoggedEvent(str(position), decode_event(fields)) for position, fields in entries]

    async def count_events(self) -> int:
        async with self._use("count_events") as client:
            return int(await client.xlen(self._log_key))

    async def upsert_items(self, items: Mapping[str, Mapping[str, Any]]) -> int:
        if not items:
            return await self.catalog_version()
        mapping: dict[Any, Any] = {item_id: _dumps(data) for item_id, data in items.items()}
        async with self._use("upsert_items") as client:
            async with client.pipeline(transaction=True) as pipe:
                pipe.hset(self._catalog_key, mapping=mapping)
                pipe.incr(self._catalog_version_key)
                _, version = await pipe.execute()
        return int(version)

    async def remove_items(self, item_ids: Sequence[str]) -> int:
        async with self._use("remove_items") as client:
            async with client.pipeline(transaction=True) as pipe:
                if item_ids:
                    pipe.hdel(self._catalog_key, *item_ids)
                pipe.incr(self._catalog_version_key)
                *_, version = await pipe.execute()
        return int(version)

    async def get_items(self, item_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        wanted = list(dict.fromkeys(item_ids))
        if not wanted:
            return {}
        async with self._use("get_items") as client:
            values = await client.hmget(self._catalog_key, wanted)
        return {i: json.loads(v) for i, v in zip(wanted, values, strict=True) if v is not None}

    async def all_items(self) -> tuple[int, dict[str, dict[str, Any]]]:
        # HSCAN does not block Redis on a big catalog; the version is read first, so
        # the items include every write up to it (and maybe later ones).
        async with self._use("all_items") as client:
            version = int(await client.get(self._catalog_version_key) or 0)
            items = {
                item_id: json.loads(data)
                async for item_id, data in client.hscan_iter(self._catalog_key, count=1000)
            }
        return version, items

    async def catalog_version(self) -> int:
        async with self._use("catalog_version") as client:
            return int(await client.get(self._catalog_version_key) or 0)

    # --- helpers --------------------------------------------------------------

    @property
    def _redis(self) -> Redis:
        if self._client is None:
            raise StoreUnavailable(f"the store {self.url} is not open")
        return self._client

    def _key(self, kind: str, ident: str) -> str:
        # Each kind has its own word before the id, so ids containing ':' cannot collide.
        return f"{self.prefix}{kind}:{ident}"

    # The key layout: the Cluster backend overrides these three to add hash tags.

    def _session_key(self, kind: str, session_id: str) -> str:
        """A key of one session: ``session`` (hash) or ``items`` (list)."""
        return self._key(kind, session_id)

    def _user_key(self, kind: str, user_id: str) -> str:
        """A key of one user's profile: counters, recent, purchases, ratings, ratings_order."""
        return self._key(kind, user_id)

    def _dedup_key(self, session_id: str, event_id: str) -> str:
        # the length makes (session, event) unambiguous whatever ':' the ids hold
        return self._key("dedup", f"{len(session_id)}:{session_id}:{event_id}")

    def _profile_keys(self, user_id: str) -> list[str]:
        """The keys `apply_profile` (Lua) takes, in its order."""
        kinds = ("counters", "recent", "purchases", "ratings", "ratings_order")
        return [self._user_key(kind, user_id) for kind in kinds]

    def _record_args(self, e: Event) -> tuple[list[str], list[str]]:
        lim, user = self.limits, e.user_id or ""
        keys = [
            self._dedup_key(e.session_id, e.id),
            self._log_key,
            self._session_key("session", e.session_id),
            self._session_key("items", e.session_id),
            *self._profile_keys(user),
        ]
        args = [
            ttl_ms(lim.dedup_ttl_s),
            str(lim.event_log_max or 0),
            str(lim.session_max_items),
            ttl_ms(lim.session_ttl_s),
            str(lim.recent_max_items),
            ttl_ms(lim.profile_ttl_s),
            e.id,
            e.session_id,
            e.action,
            e.item_id,
            repr(float(e.ts)),
            user,
            "" if e.rating is None else repr(float(e.rating)),
            str(lim.profile_max_items),
            self.origin,
        ]
        return keys, args

    async def _flush(self) -> None:
        """Send waiting record_event calls, PIPELINE_CHUNK per round trip, until none wait."""
        while self._waiting:
            count = min(len(self._waiting), PIPELINE_CHUNK)
            batch = [self._waiting.popleft() for _ in range(count)]
            outcomes: list[bool | BaseException]
            try:
                async with self._use("record_event") as client:
                    replies = await self._record_chunk(client, [e for e, _ in batch])
                outcomes = [self._mapped("record_event", r) for r in replies]
            except StoreError as exc:
                outcomes = [exc] * count
            except BaseException:  # cancelled (loop shutting down): nobody is left to wait
                failure = StoreUnavailable(f"the store {self.url} was closed while recording")
                for _, future in (*batch, *self._waiting):
                    if not future.done():
                        future.set_exception(failure)
                self._waiting.clear()
                raise
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():  # its caller was cancelled
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    async def _record_chunk(self, client: Redis, chunk: list[Event]) -> list[bool | Exception]:
        """Replies in order: True/False, or the redis-py error of that call."""
        calls = [(self._record_script, *self._record_args(e)) for e in chunk]
        replies = await self._run_scripts(client, calls)
        return [r if isinstance(r, Exception) else bool(r) for r in replies]

    async def _run_scripts(
        self, client: Redis, calls: Sequence[tuple[Script, list[str], list[str]]]
    ) -> list[Any]:
        """Script calls (script, keys, args) in one pipeline; replies in order, a
        redis-py error in place of the reply of a call that failed."""
        async with client.pipeline(transaction=False) as pipe:
            for script, keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        if any(isinstance(r, NoScriptError) for r in replies):
            # The server lost its script cache (restart, SCRIPT FLUSH): nothing of the
            # failed calls ran, so run exactly those again, in order (EVAL loads it).
            for i, (script, keys, args) in enumerate(calls):
                if isinstance(replies[i], NoScriptError):
                    try:
                        replies[i] = await self._eval(client, script, keys, args)
                    except RedisError as exc:
                        replies[i] = exc
        return replies

    @staticmethod
    async def _eval(client: Redis, script: Script, keys: list[str], args: list[str]) -> Any:
        try:
            return await client.evalsha(script.sha, len(keys), *keys, *args)  # type: ignore[misc]
        except NoScriptError:
            return await client.eval(script.text, len(keys), *keys, *args)  # type: ignore[misc]

    @asynccontextmanager
    async def _use(self, operation: str) -> AsyncIterator[Redis]:
        """The client, once a connection slot is free, with errors mapped by `_errors`."""
        client = self._redis
        with self._errors(operation):
            try:
                async with asyncio.timeout(self._pool_timeout_s):
                    await self._gate.acquire()
            except TimeoutError:
                raise StoreUnavailable(
                    f"{operation}: all {self._max_connections} connections to Redis at "
                    f"{self.url} stayed busy for {self._pool_timeout_s} s"
                ) from None
            try:
                yield client
            finally:
                self._gate.release()

    @contextmanager
    def _errors(self, operation: str) -> Iterator[None]:
        """Raise redis-py and socket errors as liverec errors (see `_mapped`)."""
        try:
            yield
        except (RedisError, OSError) as exc:
            raise self._mapped(operation, exc) from exc

    def _mapped(self, operation: str, reply: Any) -> Any:
        """A redis-py error as a liverec error: unreachable or refusing writes ->
        StoreUnavailable, anything else -> StoreError. Other values pass through."""
        if not isinstance(reply, RedisError | OSError):
            return reply
        where = f"{operation}: Redis at {self.url}"
        error: StoreError
        if isinstance(reply, RedisConnectionError | RedisTimeoutError | OSError):
            error = StoreUnavailable(f"{where} unreachable: {reply}")
        elif isinstance(reply, ReadOnlyError | OutOfMemoryError) or str(reply).startswith(
            "MISCONF"  # persistence is failing: Redis refuses writes
        ):
            error = StoreUnavailable(f"{where} refuses writes: {reply}")
        else:
            error = StoreError(f"{where}: {reply}")
        error.__cause__ = reply
        return error

    # --- following the log: a consumer group on the stream --------------------------

    async def follow(self, group: str, consumer: str, count: int = 1000) -> list[LoggedEvent]:
        """XREADGROUP: first this consumer's pending entries (delivered, never acked),
        then new ones. The group is created (XGROUP CREATE ... 0 MKSTREAM) on first use."""
        if count <= 0:
            return []
        async with self._use("follow") as client:
            entries = await self._follow_stream(client, self._log_key, group, consumer, count)
        return [LoggedEvent(position, event) for position, event in entries]

    async def _follow_stream(
        self, client: Redis, stream: str, group: str, consumer: str, count: int
    ) -> list[tuple[str, Event]]:
        """Up to `count` (entry id, event) of `stream` for the consumer, as `follow`."""
        key = (stream, group, consumer)
        for _ in range(2):  # a second time when the group vanished (stream deleted)
            if key not in self._pending_from:
                try:
                    await client.xgroup_create(stream, group, id="0", mkstream=True)
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
                self._pending_from[key] = "0"
            try:
                return await self._read_group(client, key, count)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._pending_from.pop(key, None)
        raise StoreError(f"follow: the consumer group {group!r} keeps disappearing")

    async def _read_group(
        self, client: Redis, key: tuple[str, str, str], count: int
    ) -> list[tuple[str, Event]]:
        stream, group, consumer = key
        while True:
            start = self._pending_from[key]
            reply: Any = await client.xreadgroup(
                group, consumer, {stream: start or ">"}, count=count
            )
            entries = reply[0][1] if reply else []
            if start is not None:
                if not entries:
                    self._pending_from[key] = None  # pending drained: new entries next
                    continue
                self._pending_from[key] = str(entries[-1][0])
            trimmed = [position for position, fields in entries if not fields]
            if trimmed:  # pending entries trimmed from the stream come back empty
                await client.xack(stream, group, *trimmed)
            events = [(str(p), decode_event(f)) for p, f in entries if f]
            if events or not entries:
                return events

    async def ack(self, group: str, positions: Sequence[str]) -> None:
        if not positions:
            return
        async with self._use("ack") as client:
            await self._ack_stream(client, self._log_key, group, positions)

    @staticmethod
    async def _ack_stream(client: Redis, stream: str, group: str, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), PIPELINE_CHUNK):
            await client.xack(stream, group, *ids[start : start + PIPELINE_CHUNK])

    # --- tailing the log from "now" (no consumer group: nothing is left behind) -------

    def _log_streams(self) -> list[str]:
        return [self._log_key]

    def log_partitions(self) -> int:
        return len(self._log_streams())

    async def log_ends(self) -> list[str]:
        async with self._use("log_ends") as client:
            async with client.pipeline(transaction=False) as pipe:
                for stream in self._log_streams():
                    pipe.xrevrange(stream, "+", "-", count=1)
                replies: list[Any] = await pipe.execute()
        return [self._position(n, str(r[0][0]) if r else "0-0") for n, r in enumerate(replies)]

    async def tail(
        self, partition: int, after: str, block_s: float, count: int
    ) -> list[LoggedEvent]:
        """XREAD BLOCK on the partition's stream. The wait is kept under half the
        socket timeout, so a quiet log never reads as an unreachable Redis."""
        stream = self._log_streams()[partition]
        entry_id = self._entry_of(partition, after)
        socket_s = float(self._options["socket_timeout"] or block_s * 2)
        block_ms = max(1, int(min(block_s, socket_s / 2) * 1000))
        async with self._use("tail") as client:
            reply: Any = await client.xread({stream: entry_id}, count=count, block=block_ms)
        entries = reply[0][1] if reply else []
        return [
            LoggedEvent(self._position(partition, str(p)), decode_event(f), f.get("origin") or None)
            for p, f in entries
            if f
        ]

    def _position(self, partition: int, entry_id: str) -> str:
        """A log position as read_events names it (the cluster adds the partition)."""
        return entry_id

    def _entry_of(self, partition: int, position: str) -> str:
        """The stream entry id of a position of `partition`."""
        return position

    # --- pub/sub: notifications between processes ------------------------------------

    async def publish(self, channel: str, message: str) -> None:
        async with self._use("publish") as client:
            await client.publish(f"{self.prefix}{channel}", message)

    async def listen(self, channel: str) -> AsyncIterator[str]:
        """SUBSCRIBE on a connection of its own, to the node the URL names (Redis
        Cluster delivers a PUBLISH made on any node to subscribers on every node)."""
        options = {
            k: v for k, v in self._options.items() if k not in ("timeout", "max_connections")
        }
        client = Redis.from_url(self._connect_url, decode_responses=True, **options)
        try:
            with self._errors("listen"):
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(f"{self.prefix}{channel}")
                    while True:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None and message.get("type") == "message":
                            yield str(message["data"])
        finally:
            await client.aclose()


def redis_url_options(query: str) -> dict[str, Any]:
    """The RedisStore keyword arguments given in a store URL's query string."""
    options: dict[str, Any] = {}
    numbers = {
        "socket_timeout": ("socket_timeout_s", float),
        "socket_connect_timeout": ("socket_connect_timeout_s", float),
        "health_check_interval": ("health_check_interval_s", int),
        "max_connections": ("max_connections", int),
        "pool_timeout": ("pool_timeout_s", float),
    }
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "prefix":
            options["prefix"] = value
        elif key in numbers:
            name, kind = numbers[key]
            try:
                options[name] = kind(value)
            except ValueError:
                raise ConfigError(f"{key}: not a number: {value!r}") from None
            if options[name] <= 0 and key != "health_check_interval":
                raise ConfigError(f"{key} must be > 0")
        else:
            known = ", ".join(["prefix", *numbers])
            raise ConfigError(f"unknown option {key!r} in store URL (known: {known})")
    return options


def _dumps(data: Mapping[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True, allow_nan=False)
