"""Hot reload of a served model directory of any family (gru4rec, vsknn, hybrid).

Owns: `ModelSwitch`, the recommender `liverec serve --model PATH` runs for PATH. It
serves through the recommender of the family PATH holds (a checkpoint directory, or
the one a models/ registry's CURRENT names) and polls PATH every `model_poll_s`.
When the resolved directory or its meta.json changes:

- GRU4Rec to GRU4Rec: the GRU recommender's own `reload` (scoring workers, states
  rebuilt lazily; gru/recommender.py);
- any other change: the new family's recommender is built on a thread (reading the
  checkpoint, indexing sessions.tsv), the newest `model_refeed_events` events this
  process observed are fed to it (a V-SkNN or hybrid session index then knows the
  live sessions the old one had learnt), it is started, the events that arrived
  meanwhile are fed too, and it replaces the old one between two events. The old one
  is closed once no list it is making is outstanding. A directory that does not load
  is logged and the old model stays served.

The `_total` figures (/metrics counters) of replaced recommenders are kept and
added to the current one's, so the counters never go down at a switch.

The online fallback is shared by every recommender built here; it is started and
closed once, by the switch, and learns each event once (re-fed events are not shown
to it again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path

from ..config import Settings
from ..errors import ModelError
from ..model import META
from ..types import Event
from . import model_family
from .base import RecContext, RecList, Recommender
from .gru.served import resolve_checkpoint

log = logging.getLogger("liverec.reload")

DEFAULTS = Settings()
Build = Callable[[Path, Recommender], tuple[str, Recommender]]  # (family, recommender) of a path


class _Shared(Recommender):
    """The shared online fallback as one family recommender sees it: start and close
    are the switch's, and it learns nothing while `muted` (events being re-fed)."""

    def __init__(self, online: Recommender) -> None:
        self.online = online
        self.muted = True

    @property
    def version(self) -> str:
        return self.online.version

    def observe(self, event: Event) -> None:
        if not self.muted:
            self.online.observe(event)

    async def recommend(self, ctx: RecContext) -> RecList:
        return await self.online.recommend(ctx)

    def forget(self, session_id: str) -> None:
        self.online.forget(session_id)

    def is_ready(self) -> bool:
        return self.online.is_ready()

    def figures(self) -> dict[str, float]:
        return self.online.figures()


def _stamp(path: Path) -> tuple[Path, float] | None:
    """(directory, meta.json mtime) PATH resolves to now; None: nothing to serve yet."""
    try:
        directory = resolve_checkpoint(path)
        return directory, (directory / META).stat().st_mtime
    except (ModelError, OSError):
        return None


class ModelSwitch(Recommender):
    """Serves `path` through its family's recommender, replaced when `path` changes.
    Call only from the event loop thread."""

    def __init__(
        self,
        path: Path,
        online: Recommender,
        build: Build,
        *,
        poll_s: float | None = DEFAULTS.model_poll_s,
        refeed_events: int = DEFAULTS.model_refeed_events,
    ) -> None:
        """`build(path, fallback)` -> (family, recommender) of what path holds now."""
        self.path = path
        self.online = online
        self._build = build
        self.poll_s = poll_s
        self.recent: deque[Event] = deque(maxlen=max(refeed_events, 0))  # 0: keeps none
        self._refeed = refeed_events > 0
        self.observed = 0  # events observed so far (which of `recent` are new)
        self._stamp = _stamp(path)
        shared = _Shared(online)
        self.family, self.current = build(path, shared)
        shared.muted = False
        self._busy: dict[int, int] = {}  # id(recommender) -> lists being made
        self._retired: list[Recommender] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closing: set[asyncio.Task[None]] = set()
        self.reloads = 0
        self._totals: dict[str, float] = {}  # counters of the replaced recommenders
        self._checking = asyncio.Lock()  # the poll and a promotion notice: one at a time

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        online: Recommender,
        build: Build,
    ) -> ModelSwitch:
        assert settings.model_path is not None
        return cls(
            Path(settings.model_path),
            online,
            build,
            poll_s=settings.model_poll_s,
            refeed_events=settings.model_refeed_events,
        )

    @property
    def version(self) -> str:
        return self.current.version

    @property
    def served(self) -> object | None:
        """The GRU checkpoint being served, if the family is gru4rec (else None)."""
        return getattr(self.current, "served", None)

    def version_for(self, session_id: str) -> str:
        return self.current.version_for(session_id)

    def observe(self, event: Event) -> None:
        self.current.observe(event)
        self.observed += 1
        if self._refeed:
            self.recent.append(event)

    def forget(self, session_id: str) -> None:
        self.current.forget(session_id)

    def is_ready(self) -> bool:
        return self.current.is_ready()

    def figures(self) -> dict[str, float]:
        now = self.current.figures()
        for name, value in self._totals.items():
            now[name] = now.get(name, 0.0) + value
        return now

    async def recommend(self, ctx: RecContext) -> RecList:
        rec = self.current
        key = id(rec)
        self._busy[key] = self._busy.get(key, 0) + 1
        try:
            return await rec.recommend(ctx)
        finally:
            self._busy[key] -= 1
            if not self._busy[key]:
                del self._busy[key]
                self._close_retired()

    async def start(self) -> None:
        await self.online.start()
        await self.current.start()
        if self.poll_s:
            loop = asyncio.get_running_loop()
            self._tasks.append(loop.create_task(self._watch(), name="liverec-model-switch"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for task in list(self._closing):
            await task
        for rec in self._retired:
            await rec.close()
        self._retired.clear()
        await self.current.close()
        await self.online.close()

    async def _watch(self) -> None:
        assert self.poll_s is not None
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.check_model()
            except Exception:  # a bug here must not end the watching
                log.exception("model reload failed; still serving %s", self.version)
                self._stamp = _stamp(self.path)

    async def check_model(self) -> bool:
        """Serve what `path` holds when it changed since the last look (the poll, or a
        promotion notice from liverec.notify; one check at a time, so both at once load
        it once). True when a new model is served."""
        async with self._checking:
            stamp = _stamp(self.path)
            if stamp is None or stamp == self._stamp:
                return False
            return await self.reload()

    async def reload(self) -> bool:
        """Serve what `path` holds now (see the module docstring); False: kept the old."""
        stamp = _stamp(self.path)
        if stamp is None:
            return False
        self._stamp = stamp
        try:
            family = model_family(self.path)
        except ModelError as exc:
            log.error("model at %s not loaded, still serving %s: %s", self.path, self.version, exc)
            return False
        reload_gru = getattr(self.current, "reload", None)
        if family == self.family == "gru4rec" and reload_gru is not None:
            ok = bool(await reload_gru())
            self.reloads += ok
            return ok
        shared = _Shared(self.online)
        since = self.observed
        backlog = list(self.recent)

        def build() -> tuple[str, Recommender]:
            got = self._build(self.path, shared)
            for event in backlog:  # muted: the online model has seen them
                got[1].observe(event)
            return got

        try:
            family, new = await asyncio.to_thread(build)
            await new.start()
        except (ModelError, OSError, ValueError, KeyError) as exc:
            log.error("model at %s not loaded, still serving %s: %s", self.path, self.version, exc)
            return False
        missed = self.observed - since  # arrived while building: the newest of `recent`
        if missed and self._refeed:
            for event in list(self.recent)[-missed:]:
                new.observe(event)
        shared.muted = False
        for name, value in self.current.figures().items():
            if name.endswith("_total"):
                self._totals[name] = self._totals.get(name, 0.0) + value
        old, self.current, self.family = self.current, new, family
        log.info("serving model %s (%s; was %s)", new.version, family, old.version)
        self.reloads += 1
        self._retired.append(old)
        self._close_retired()
        return True

    def _close_retired(self) -> None:
        """Close the replaced recommenders no list is being made by any more."""
        for rec in [r for r in self._retired if id(r) not in self._busy]:
            self._retired.remove(rec)
            task = asyncio.get_running_loop().create_task(rec.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
