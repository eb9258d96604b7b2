"""The serving process's garbage-collection policy.

Owns: switching CPython's automatic cyclic garbage collector off while the server
runs, freezing the heap built at start (catalog, models, warmed co-occurrence), and
running a full collection on a timer, on the event loop, with its pause measured and
exported. Restores the interpreter's previous state on close.

Why: reference counting frees almost everything the server allocates; the cyclic
collector only has to find the rare reference cycle. With its default thresholds it
instead walks the young generations several times a second and the whole heap (about
200,000 tracked objects with 1,000 open sockets) every few seconds, each walk a pause
of the event loop: measured here at 1,000 events/s, gen-1 pauses of 12-25 ms and
gen-2 pauses of 30-200 ms that found nothing to free, which made the event-to-recs
p99 155-223 ms against 8.3 ms with the collector off (docs/benchmarks.md). With this
policy cycles still get collected, every `gc_full_interval_s` seconds (one pause,
counted in /metrics), so memory held by cyclic garbage stays bounded by what that
many seconds can produce.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time

from ..metrics import Counter, Metrics

log = logging.getLogger("liverec.server")


class GcPolicy:
    """`start` at the end of start-up, `close` at shutdown; interval None = CPython's
    default automatic collection (nothing changed)."""

    def __init__(self, interval_s: float | None, metrics: Metrics) -> None:
        self.interval_s = interval_s
        self.last_pause_s = 0.0
        self.collections = Counter(
            "liverec_gc_collections_total", "Timed full garbage collections run."
        )
        self.collected = Counter(
            "liverec_gc_collected_objects_total", "Objects freed by the timed collections."
        )
        metrics.extra.extend([self.collections, self.collected])
        metrics.add_gauge(
            "liverec_gc_last_pause_seconds",
            "Event-loop pause of the last timed full garbage collection.",
            lambda: self.last_pause_s,
        )
        self._task: asyncio.Task[None] | None = None
        self._was_enabled = gc.isenabled()
        self._frozen = False

    def start(self) -> None:
        if self.interval_s is None:
            return
        self._was_enabled = gc.isenabled()
        gc.collect()
        gc.freeze()  # start-up objects live as long as the process: never walk them again
        self._frozen = True
        gc.disable()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def collect_now(self) -> int:
        """One full collection of everything allocated since start; returns objects freed."""
        started = time.perf_counter()
        freed = gc.collect()
        self.last_pause_s = time.perf_counter() - started
        self.collections.inc()
        self.collected.inc(by=freed)
        log.debug("gc: %d objects freed in %.1f ms", freed, self.last_pause_s * 1e3)
        return freed

    async def _run(self) -> None:
        assert self.interval_s is not None
        while True:
            await asyncio.sleep(self.interval_s)
            self.collect_now()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._frozen:
            gc.unfreeze()
            self._frozen = False
        if self._was_enabled:
            gc.enable()
