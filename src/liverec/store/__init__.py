"""The profile store package: pick a backend from a URL.

Owns: `open_store(url, limits)`, the URL schemes and the mapping from Settings to
StoreLimits (masking secrets in URLs is `urls.py`). The interface is in `base.py`;
each backend is one module (`embedded.py`, which keeps its SQLite parts in
`sqlite_*.py`, `redis.py`, and `redis_cluster.py` built on it), imported only when its scheme is
used so that redis stays out of processes that do not need it.

Schemes (details in docs/storage.md):

- ``embedded://PATH`` -- SQLite file; relative paths are relative to the cwd.
- ``memory://`` -- the embedded backend on an in-memory database; tests only.
- ``redis://[[user]:password@]HOST:PORT/DB`` and ``rediss://...`` -- Redis.
- ``redis+cluster://[[user]:password@]HOST:PORT`` and ``rediss+cluster://...`` --
  Redis Cluster, reached through any of its nodes.
"""

from __future__ import annotations

from ..config import Settings
from ..errors import ConfigError
from .base import LoggedEvent, Store, StoreLimits
from .urls import mask_url

__all__ = [
    "SCHEMES",
    "LoggedEvent",
    "Store",
    "StoreLimits",
    "check_limits",
    "limits_from",
    "mask_url",
    "open_store",
]

SCHEMES = (
    "embedded://",
    "memory://",
    "redis://",
    "rediss://",
    "redis+cluster://",
    "rediss+cluster://",
)


def open_store(url: str, limits: StoreLimits) -> Store:
    """A store for `url`, not yet opened: the caller awaits `store.open()`.

    Raises ConfigError for an unknown scheme, a malformed URL or impossible limits.
    """
    check_limits(limits)
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in ("embedded", "memory"):
        from .embedded import EmbeddedStore

        return EmbeddedStore.from_url(url, limits)
    if scheme in ("redis", "rediss"):
        from .redis import RedisStore

        return RedisStore.from_url(url, limits)
    if scheme in ("redis+cluster", "rediss+cluster"):
        from .redis_cluster import RedisClusterStore

        return RedisClusterStore.from_url(url, limits)
    raise ConfigError(
        f"unsupported store URL {mask_url(url)!r}: expected one of {', '.join(SCHEMES)}"
    )


def check_limits(limits: StoreLimits) -> None:
    """Raise ConfigError when a limit is out of range."""
    problems = []
    if limits.session_max_items < 1 or limits.recent_max_items < 1:
        problems.append("session_max_items and recent_max_items must be >= 1")
    if limits.profile_max_items < 1:
        problems.append("profile_max_items must be >= 1")
    for name in ("session_ttl_s", "profile_ttl_s", "dedup_ttl_s"):
        value = getattr(limits, name)
        if value is not None and value <= 0:
            problems.append(f"{name} must be > 0 (or None for no expiry where allowed)")
    if limits.event_log_max is not None and limits.event_log_max < 1:
        problems.append("event_log_max must be >= 1 (or None to keep every event)")
    if not 1 <= limits.event_log_partitions <= 1024:
        problems.append("event_log_partitions must be between 1 and 1024")
    if problems:
        raise ConfigError("; ".join(problems))


def limits_from(settings: Settings) -> StoreLimits:
    """The store limits configured in `settings`."""
    return StoreLimits(
        session_max_items=settings.session_max_items,
        recent_max_items=settings.recent_max_items,
        profile_max_items=settings.profile_max_items,
        session_ttl_s=settings.session_ttl_s,
        profile_ttl_s=settings.profile_ttl_s,
        dedup_ttl_s=settings.dedup_ttl_s,
        event_log_max=settings.event_log_max,
        event_log_partitions=settings.event_log_partitions,
    )
