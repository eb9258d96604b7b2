"""open_store: choosing a backend from a URL, URL options, masking, limit checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from liverec.config import Settings
from liverec.errors import ConfigError, StoreUnavailable
from liverec.store import StoreLimits, limits_from, mask_url, open_store
from liverec.store.embedded import EmbeddedStore
from liverec.store.redis import RedisStore


def test_embedded_paths() -> None:
    relative = open_store("embedded://./data/liverec.db", StoreLimits())
    assert isinstance(relative, EmbeddedStore)
    assert relative.path == "./data/liverec.db" and relative.synchronous == "NORMAL"
    absolute = open_store("embedded:///var/lib/liverec/liverec.db?synchronous=full", StoreLimits())
    assert isinstance(absolute, EmbeddedStore)
    assert absolute.path == "/var/lib/liverec/liverec.db" and absolute.synchronous == "FULL"
    assert absolute.url == "embedded:///var/lib/liverec/liverec.db?synchronous=full"


def test_memory() -> None:
    store = open_store("memory://", StoreLimits())
    assert isinstance(store, EmbeddedStore) and store.path is None and store.url == "memory://"


def test_redis_options() -> None:
    url = "rediss://app:s3cret@cache.internal:6380/2?prefix=shop:&socket_timeout=0.5"
    store = open_store(url, StoreLimits())
    assert isinstance(store, RedisStore)
    assert store.prefix == "shop:"
    assert store.url == "rediss://app:***@cache.internal:6380/2?prefix=shop:&socket_timeout=0.5"
    default = open_store("redis://127.0.0.1:6390/0", StoreLimits())
    assert isinstance(default, RedisStore) and default.prefix == "liverec:"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres://db/x", "expected one of embedded://, memory://, redis://, rediss://"),
        ("./liverec.db", "expected one of"),
        ("embedded://", "needs a file path"),
        ("memory://somewhere", "takes no path"),
        ("embedded://x.db?synchronous=SOMETIMES", "synchronous must be one of"),
        ("embedded://x.db?commit=thread", "unknown option 'commit'"),
        ("embedded://x.db?fsync=1", "unknown option 'fsync'"),
        ("redis://localhost:6379/0?sokcet_timeout=1", "unknown option 'sokcet_timeout'"),
        ("redis://localhost:6379/0?socket_timeout=soon", "not a number"),
        ("redis://localhost:6379/0?socket_timeout=0", "must be > 0"),
        ("redis:///0", "needs a host"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_store(url, StoreLimits())


def test_unknown_scheme_message_masks_password() -> None:
    with pytest.raises(ConfigError) as caught:
        open_store("mongodb://root:hunter2@db:27017/x", StoreLimits())
    assert "hunter2" not in str(caught.value)


def test_mask_url() -> None:
    assert mask_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert mask_url("redis://user:pw@h:1/0?prefix=a:") == "redis://user:***@h:1/0?prefix=a:"
    assert mask_url("redis://user@h:1/0") == "redis://user@h:1/0"
    assert mask_url("embedded://./x.db") == "embedded://./x.db"


def test_limits_are_checked() -> None:
    for bad in (
        StoreLimits(session_max_items=0),
        StoreLimits(recent_max_items=0),
        StoreLimits(profile_max_items=0),
        StoreLimits(session_ttl_s=0.0),
        StoreLimits(dedup_ttl_s=-1.0),
        StoreLimits(event_log_max=0),
    ):
        with pytest.raises(ConfigError):
            open_store("memory://", bad)


def test_limits_from_settings() -> None:
    settings = Settings(
        session_max_items=7, recent_max_items=3, profile_max_items=5, session_ttl_s=None
    )
    limits = limits_from(settings)
    assert limits == StoreLimits(
        session_max_items=7,
        recent_max_items=3,
        profile_max_items=5,
        session_ttl_s=None,
        profile_ttl_s=settings.profile_ttl_s,
        dedup_ttl_s=settings.dedup_ttl_s,
        event_log_max=None,
    )


async def test_unopenable_file_is_store_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = open_store(f"embedded://{blocker}/sub/x.db", StoreLimits())
    with pytest.raises(StoreUnavailable, match="cannot open"):
        await store.open()
