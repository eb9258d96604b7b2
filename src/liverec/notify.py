"""Notifications between server processes over the store's pub/sub.

Owns: telling the other processes that this one changed the catalog, and reloading
the catalog when another one did. Polling (`catalog_poll_s`) stays as the fallback: a
notice is fire and forget, so a process that was not listening at that moment (store
unreachable, starting up) sees the change at its next poll.

Only a store shared between processes (`Store.shared_log`: Redis, Redis Cluster)
carries notices; with the embedded store there is one process and nothing to tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .catalog import Catalog
from .errors import StoreError
from .store.base import Store

log = logging.getLogger("liverec.notify")

CATALOG_CHANNEL = "notify:catalog"


class CatalogNotices:
    """Publishes this process's catalog writes; refreshes on the others'."""

    def __init__(self, store: Store, catalog: Catalog, retry_s: float = 1.0) -> None:
        self.store = store
        self.catalog = catalog
        self.retry_s = retry_s
        self.heard = 0  # notices that made this process reload its catalog
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.catalog.on_write = self.published
        self._task = asyncio.get_running_loop().create_task(
            self._listen(), name="liverec-catalog-notices"
        )

    async def published(self, version: int) -> None:
        """After a write of this process: tell the others (best effort)."""
        try:
            await self.store.publish(CATALOG_CHANNEL, str(version))
        except StoreError as exc:  # they see it at their next poll
            log.warning("catalog change not announced: %s", exc)

    async def _listen(self) -> None:
        failing = False
        while True:
            try:
                async for message in self.store.listen(CATALOG_CHANNEL):
                    failing = False
                    if int(message) > self.catalog.version and await self.catalog.refresh():
                        self.heard += 1
                        log.info("catalog reloaded on notice: version %d", self.catalog.version)
            except StoreError as exc:
                if not failing:
                    log.warning("catalog notices lost (polling goes on): %s", exc)
                failing = True
            except ValueError:
                log.warning("catalog notice not understood; ignored")
            except Exception:
                log.exception("catalog notices failed")
            await asyncio.sleep(self.retry_s)

    async def close(self) -> None:
        self.catalog.on_write = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
