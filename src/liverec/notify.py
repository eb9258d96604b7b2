"""Notifications between server processes over the store's pub/sub.

Owns: telling the other processes that this one changed the catalog, or that a new
model was promoted into the models/ registry, and reloading the catalog or checking
the model when another one did. Polling (`catalog_poll_s`, `model_poll_s`) stays as
the fallback: a notice is fire and forget, so a process that was not listening at
that moment (store unreachable, starting up) sees the change at its next poll.

Only a store shared between processes (`Store.shared_log`: Redis, Redis Cluster)
carries notices; with the embedded store there is one process and nothing to tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from .catalog import Catalog
from .errors import StoreError
from .recommend.base import Recommender
from .store.base import Store

log = logging.getLogger("liverec.notify")

CATALOG_CHANNEL = "notify:catalog"
MODEL_CHANNEL = "notify:model"


async def announce(store: Store, channel: str, message: str) -> bool:
    """Publish one notice (best effort: the listeners' polls are the fallback)."""
    try:
        await store.publish(channel, message)
    except StoreError as exc:
        log.warning("%s not announced: %s", channel, exc)
        return False
    return True


async def announce_model(store: Store, version: str) -> bool:
    """After a promotion (or rollback) in the models/ registry: every process checks it."""
    return await announce(store, MODEL_CHANNEL, version)


class Notices:
    """One listening task on one channel; each message goes to `heard`."""

    channel = ""

    def __init__(self, store: Store, retry_s: float = 1.0) -> None:
        self.store = store
        self.retry_s = retry_s
        self.heard = 0  # notices that changed something in this process
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._listen(), name=f"liverec-{self.channel.replace(':', '-')}"
        )

    async def hear(self, message: str) -> bool:
        """Act on one notice; True when it changed something."""
        raise NotImplementedError

    async def _listen(self) -> None:
        failing = False
        while True:
            try:
                async for message in self.store.listen(self.channel):
                    failing = False
                    if await self.hear(message):
                        self.heard += 1
            except StoreError as exc:
                if not failing:
                    log.warning("%s notices lost (polling goes on): %s", self.channel, exc)
                failing = True
            except ValueError:
                log.warning("%s notice not understood; ignored", self.channel)
            except Exception:
                log.exception("%s notices failed", self.channel)
            await asyncio.sleep(self.retry_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class CatalogNotices(Notices):
    """Publishes this process's catalog writes; refreshes on the others'."""

    channel = CATALOG_CHANNEL

    def __init__(self, store: Store, catalog: Catalog, retry_s: float = 1.0) -> None:
        super().__init__(store, retry_s)
        self.catalog = catalog

    async def start(self) -> None:
        self.catalog.on_write = self.published
        await super().start()

    async def published(self, version: int) -> None:
        """After a write of this process: tell the others (best effort)."""
        await announce(self.store, CATALOG_CHANNEL, str(version))

    async def hear(self, message: str) -> bool:
        if int(message) > self.catalog.version and await self.catalog.refresh():
            log.info("catalog reloaded on notice: version %d", self.catalog.version)
            return True
        return False

    async def close(self) -> None:
        self.catalog.on_write = None
        await super().close()


class ModelNotices(Notices):
    """Checks the served model's files at once when a promotion is announced."""

    channel = MODEL_CHANNEL

    def __init__(self, store: Store, recommender: Recommender, retry_s: float = 1.0) -> None:
        super().__init__(store, retry_s)
        self.check: Callable[[], Awaitable[bool]] = recommender.check_model

    async def hear(self, message: str) -> bool:
        if await self.check():
            log.info("model reloaded on notice of %s", message)
            return True
        return False
