"""Serving session-kNN (V-SkNN, Ludewig & Jannach 2018) from a live session index.

Owns: `SessionIndex`, the bounded index of recent sessions that the live stream
updates one event at a time, the V-SkNN scoring over it, the list order every path
shares (`SessionIndex.order`), `VSKNNRecommender` (the served family) and
`VSKNNScorer` (the same lists for `liverec.model.evaluate`, so offline figures are
what is served).

The index. Each session is a recency stamp and its distinct items (at most
`session_items`; later new items are not indexed). Each item keeps the keys of the
`per_item` sessions that most recently took it, newest last. At most `max_sessions`
sessions are held; the least recently active goes first (its keys leave the items'
queues lazily, the queues are bounded anyway). With `live` on, every accepted event
indexes its item under its session at once: the session is neighbour evidence for
other sessions from the next event on. With `live` off the index holds what was
loaded at start (a training file): served lists are then exactly the offline ones.

V-SkNN for a session whose last `window` events are x_0..x_{L-1}: an item's weight is
(p+1)/L at its latest position p. Candidates are the sessions in the queues of the
window's distinct items, of which the `sample` most recent are kept; sim(c) = the
sum of the weights of the items c shares / number of distinct items; step(c) = L - p
of the most recent shared item. The `neighbours` most similar add sim/step to each
of their items. The current session is never its own neighbour.

Cost per event, all bounded by settings and independent of the index size:
gathering O(window x per_item) dict reads, choosing O(C log sample) with C <= window
x per_item, scoring O(neighbours x session_items), ordering O(R log R) for the R
scored items; indexing an event is O(1) (amortised O(session_items) on an eviction).
Memory: about 250 B per indexed session plus 60 B per (session, item) pair.
Thread-safety: none; call from the event loop thread (nothing here does I/O).
"""

from __future__ import annotations

import heapq
import logging
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from operator import attrgetter, itemgetter
from typing import Final

import numpy as np

from ..config import Settings
from ..model.data import ItemIndex, Sessions
from ..model.formats import load_sessions
from ..types import Event
from .base import (
    RecContext,
    RecList,
    Recommender,
    apply_rules,
    blocked_items,
    demote_low_rated,
)

log = logging.getLogger("liverec.vsknn")

VERSION: Final = "vsknn"
FILL: Final = 1100  # popular items kept for filling lists (> max_k + blocked items)
FILL_REFRESH: Final = 10_000  # indexed events between refreshes of the fill list
SPARE: Final = 16  # items ranked beyond k + blocked ones, for items the catalog drops


class _Session:
    __slots__ = ("items", "key", "stamp")

    def __init__(self, key: str, stamp: int) -> None:
        self.key = key
        self.stamp = stamp  # -1 once evicted: its entries in item queues are stale
        self.items: dict[str, None] = {}  # distinct items, first occurrence order


_stamp_of = attrgetter("stamp")
_similarity = itemgetter(1)


def ranked_items(scores: dict[str, float], limit: int | None = None) -> list[tuple[str, float]]:
    """(item, score), best first, ties by item id (every path orders alike); the
    best `limit` only when given (a partial sort)."""
    pairs = [(-v, i) for i, v in scores.items()]
    top = sorted(pairs) if limit is None or limit >= len(pairs) else heapq.nsmallest(limit, pairs)
    return [(i, -v) for v, i in top]


class SessionIndex:
    """Recent sessions by item, bounded; V-SkNN scores over them."""

    def __init__(
        self,
        *,
        neighbours: int = 50,
        sample: int = 250,
        per_item: int = 100,
        window: int = 10,
        session_items: int = 50,
        max_sessions: int = 1_000_000,
    ) -> None:
        self.neighbours, self.sample, self.per_item = neighbours, sample, per_item
        self.window, self.session_items, self.max_sessions = window, session_items, max_sessions
        self.sessions: OrderedDict[str, _Session] = OrderedDict()  # least recent first
        self.by_item: dict[str, deque[_Session]] = {}
        self.support: dict[str, int] = {}  # indexed sessions holding each item
        self.clock = 0  # stamps: one per indexed event
        self._fill: list[str] | None = None
        self._since_fill = 0

    def __len__(self) -> int:
        return len(self.sessions)

    def knows(self, item: str) -> bool:
        return item in self.by_item

    # --- updating ---------------------------------------------------------------------

    def add(self, session: str, item: str) -> None:
        """Index one event: `session` took `item` (O(1); see the module docstring)."""
        self.clock += 1
        s = self.sessions.get(session)
        if s is None:
            s = self.sessions[session] = _Session(session, self.clock)
            if len(self.sessions) > self.max_sessions:
                self._evict()
        else:
            s.stamp = self.clock
            self.sessions.move_to_end(session)
        if item not in s.items and len(s.items) < self.session_items:
            s.items[item] = None
            queue = self.by_item.get(item)
            if queue is None:
                queue = self.by_item[item] = deque(maxlen=self.per_item)
            queue.append(s)
            self.support[item] = self.support.get(item, 0) + 1
        self._since_fill += 1

    def add_sessions(self, sessions: Iterable[Sequence[str]], prefix: str = "t") -> int:
        """Index whole sessions (a training file), oldest first; returns how many."""
        n = 0
        for n, items in enumerate(sessions, 1):
            key = f"{prefix}{n}"
            for item in items:
                self.add(key, item)
        self._fill = None
        return n

    def _evict(self) -> None:
        _, old = self.sessions.popitem(last=False)
        old.stamp = -1
        for item in old.items:
            left = self.support[item] - 1
            if left:
                self.support[item] = left
            else:
                del self.support[item]
            queue = self.by_item.get(item)
            if queue is None:  # emptied before: this session had left the queue
                continue
            while queue and queue[0].stamp < 0:
                queue.popleft()
            if not queue:
                del self.by_item[item]

    # --- scoring ----------------------------------------------------------------------

    def scores(self, items: Sequence[str], exclude: str | None = None) -> dict[str, float]:
        """V-SkNN scores of the items following `items` (oldest first)."""
        window = items[-self.window :]
        length = len(window)
        last = {item: p for p, item in enumerate(window)}  # latest position of each
        sim: dict[_Session, float] = {}
        step: dict[_Session, int] = {}
        by_item = self.by_item
        # most recent item first: the first shared item seen gives a session's step
        for p in sorted(last.values(), reverse=True):
            queue = by_item.get(window[p])
            if queue is None:
                continue
            w = (p + 1) / length
            for s in queue:
                if s in sim:
                    sim[s] += w
                else:
                    sim[s] = w
                    step[s] = length - p
        me = self.sessions.get(exclude) if exclude is not None else None
        if me is not None:
            sim.pop(me, None)
        candidates: Iterable[_Session] = sim
        if len(sim) > self.sample:
            candidates = heapq.nlargest(self.sample, sim, key=_stamp_of)
        live = [(s, sim[s]) for s in candidates if s.stamp >= 0]
        if len(live) > self.neighbours:
            live = heapq.nlargest(self.neighbours, live, key=_similarity)
        n_items = len(last)
        out: dict[str, float] = {}
        get = out.get
        for s, similarity in live:
            gain = similarity / n_items / step[s]
            for item in s.items:
                out[item] = get(item, 0.0) + gain
        return out

    def order(self, items: Sequence[str], exclude: str | None = None) -> list[tuple[str, float]]:
        """The scored items, best first (`ranked_items`)."""
        return ranked_items(self.scores(items, exclude))

    def fill(self) -> list[str]:
        """The FILL items held by most indexed sessions (ties by id), for short lists."""
        if self._fill is None or self._since_fill >= FILL_REFRESH:
            top = heapq.nsmallest(FILL, self.support.items(), key=lambda kv: (-kv[1], kv[0]))
            self._fill, self._since_fill = [i for i, _ in top], 0
        return self._fill

    def full_order(self) -> list[str]:
        """Every indexed item in fill order (the offline scorer's tail of the ranking)."""
        return [i for i, _ in sorted(self.support.items(), key=lambda kv: (-kv[1], kv[0]))]


def index_params(settings: Settings) -> dict[str, int]:
    """SessionIndex keyword arguments from the vsknn_* settings."""
    return {
        "neighbours": settings.vsknn_neighbours,
        "sample": settings.vsknn_sample,
        "per_item": settings.vsknn_per_item,
        "window": settings.vsknn_window,
        "session_items": settings.vsknn_session_items,
        "max_sessions": settings.vsknn_max_sessions,
    }


class VSKNNRecommender(Recommender):
    """V-SkNN lists over a live session index, with an online fallback for sessions
    it has no evidence for (no items yet, or a current item no session holds)."""

    def __init__(
        self, index: SessionIndex, fallback: Recommender, live: bool = True, version: str = VERSION
    ) -> None:
        """`version` names the lists: a model directory's version, else "vsknn"."""
        self.index = index
        self.fallback = fallback
        self.live = live
        self._version = version

    @classmethod
    def from_settings(cls, settings: Settings, fallback: Recommender) -> VSKNNRecommender:
        index = SessionIndex(**index_params(settings))
        if settings.vsknn_data is not None:
            data = load_sessions(settings.vsknn_data)
            count = index.add_sessions(data.session(s).tolist() for s in range(data.n_sessions))
            log.info("vsknn index: %d sessions from %s", count, settings.vsknn_data)
        return cls(index, fallback, live=settings.vsknn_live)

    @property
    def version(self) -> str:
        return self._version

    def observe(self, event: Event) -> None:
        self.fallback.observe(event)
        if self.live:
            self.index.add(event.session_id, event.item_id)

    def forget(self, session_id: str) -> None:
        self.fallback.forget(session_id)  # the session stays indexed: it is evidence

    async def start(self) -> None:
        await self.fallback.start()

    async def close(self) -> None:
        await self.fallback.close()

    async def recommend(self, ctx: RecContext) -> RecList:
        index = self.index
        current = ctx.current_item
        if not ctx.items or (current is not None and not index.knows(current)):
            return await self.fallback.recommend(ctx)
        scores = index.scores(ctx.items, exclude=ctx.session_id)
        if not scores:
            return await self.fallback.recommend(ctx)
        # The best `limit` are enough unless the rules drop more than the spare ones.
        limit = ctx.k + len(blocked_items(ctx)) + len(ctx.ratings) + SPARE
        ranked = ranked_items(scores, limit)
        items = apply_rules(ranked, ctx)
        if len(items) < ctx.k:
            ranked = ranked_items(scores)  # every scored item, then the popular ones
            ranked += [(i, 0.0) for i in index.fill() if i not in scores]
            items = apply_rules(ranked, ctx)
        items = demote_low_rated(items, ctx.ratings)
        if len(items) < ctx.k:  # a tiny index: fill from the online model
            more = await self.fallback.recommend(ctx)
            have = {r.item_id for r in items}
            items += [r for r in more.items if r.item_id not in have][: ctx.k - len(items)]
        return RecList(items, self._version)


class VSKNNScorer:
    """`StepScorer` for `liverec.model.evaluate`: the served order as a score vector.

    Scored items get distinct values above every other item, in `order`; the rest
    follow in fill order. Ranking by this vector (ties count against the target)
    is therefore position in the served list, under the same rules."""

    name = VERSION

    def __init__(self, index: SessionIndex, item_index: ItemIndex) -> None:
        self.index = index
        self.item_index = item_index
        self.n_items = len(item_index)
        order = [item_index.index[i] for i in index.full_order() if i in item_index.index]
        self.base = np.zeros(self.n_items, dtype=np.float64)
        self.base[order] = np.arange(len(order), 0, -1, dtype=np.float64)
        self.slots: list[list[str]] = []

    @classmethod
    def fit(cls, train: Sessions, item_index: ItemIndex, **params: int) -> VSKNNScorer:
        index = SessionIndex(**params)
        index.add_sessions(train.session(s).tolist() for s in range(train.n_sessions))
        return cls(index, item_index)

    def reset(self, n_slots: int) -> None:
        self.slots = [[] for _ in range(n_slots)]

    def step(self, slots: np.ndarray, items: np.ndarray, new: np.ndarray) -> np.ndarray:
        ids = self.item_index.ids
        top = float(self.n_items + 1)
        out = np.tile(self.base, (len(slots), 1))
        for r, (slot, item, fresh) in enumerate(
            zip(slots.tolist(), items.tolist(), new.tolist(), strict=True)
        ):
            if fresh:
                self.slots[slot] = []
            seq = self.slots[slot]
            seq.append(ids[item])
            del seq[: -self.index.window]
            ranked = self.index.order(seq)
            get = self.item_index.index.get
            for pos, (name, _) in enumerate(ranked):
                j = get(name)
                if j is not None:
                    out[r, j] = top + len(ranked) - pos
        return out
