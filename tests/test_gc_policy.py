"""The serving process's GC policy: automatic collection off, timed full collections."""

from __future__ import annotations

import asyncio
import gc
import time

from liverec.metrics import Metrics
from liverec.server.gc_policy import GcPolicy

from .servers import LiverecServer


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def make_cycles(n: int) -> None:
    for _ in range(n):
        a, b = Node(), Node()
        a.other, b.other = b, a  # unreachable once this returns: only the policy frees it


async def test_timed_collections_free_cycles_and_restore_the_interpreter() -> None:
    was_enabled = gc.isenabled()
    metrics = Metrics()
    policy = GcPolicy(0.05, metrics)
    policy.start()
    try:
        assert not gc.isenabled()
        assert gc.get_freeze_count() > 0  # the start-up heap is never walked again
        make_cycles(500)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if policy.collected.get() >= 1000:
                break
        assert policy.collected.get() >= 1000  # both objects of every cycle
        assert policy.collections.get() >= 1
        text = metrics.render()
        assert "liverec_gc_collections_total" in text
        assert "liverec_gc_last_pause_seconds" in text
    finally:
        await policy.close()
    assert gc.isenabled() == was_enabled
    assert gc.get_freeze_count() == 0


async def test_none_keeps_pythons_default() -> None:
    policy = GcPolicy(None, Metrics())
    policy.start()
    assert gc.isenabled() and gc.get_freeze_count() == 0
    await policy.close()
    assert gc.isenabled()


def test_server_reports_its_collections() -> None:
    server = LiverecServer("memory://", gc_full_interval_s=0.2).start()
    try:
        for _ in range(50):
            text = server.get_text("/metrics")
            if "liverec_gc_collections_total 0" not in text and (
                "liverec_gc_collections_total" in text
            ):
                break
            time.sleep(0.1)
        assert "liverec_gc_collections_total" in text
        assert "liverec_gc_collections_total 0" not in text, text
    finally:
        server.stop()
