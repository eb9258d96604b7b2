"""V-SkNN as first written, over plain dicts: the reference the array scoring of
liverec.recommend.vsknn must equal, value for value (test_vsknn's equivalence test).

Kept deliberately simple and slow: one dict entry per candidate session, `heapq`
for the sample and the neighbours (ties in gathering order), one dict update per
neighbour item, and the fill list from a heap over every item."""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from operator import attrgetter, itemgetter


class RefSession:
    __slots__ = ("items", "key", "stamp")

    def __init__(self, key: str, stamp: int) -> None:
        self.key = key
        self.stamp = stamp  # -1 once evicted
        self.items: dict[str, None] = {}


_stamp_of = attrgetter("stamp")
_similarity = itemgetter(1)


def ref_ranked(scores: dict[str, float], limit: int | None = None) -> list[tuple[str, float]]:
    pairs = sorted((-v, i) for i, v in scores.items())
    return [(i, -v) for v, i in pairs[:limit]]


class RefIndex:
    def __init__(
        self,
        *,
        neighbours: int,
        sample: int,
        per_item: int,
        window: int,
        session_items: int,
        max_sessions: int,
    ) -> None:
        self.neighbours, self.sample, self.per_item = neighbours, sample, per_item
        self.window, self.session_items, self.max_sessions = window, session_items, max_sessions
        self.sessions: OrderedDict[str, RefSession] = OrderedDict()
        self.by_item: dict[str, deque[RefSession]] = {}
        self.support: dict[str, int] = {}
        self.clock = 0

    def add(self, session: str, item: str) -> None:
        self.clock += 1
        s = self.sessions.get(session)
        if s is None:
            s = self.sessions[session] = RefSession(session, self.clock)
            if len(self.sessions) > self.max_sessions:
                self._evict()
        else:
            s.stamp = self.clock
            self.sessions.move_to_end(session)
        if item not in s.items and len(s.items) < self.session_items:
            s.items[item] = None
            self.by_item.setdefault(item, deque(maxlen=self.per_item)).append(s)
            self.support[item] = self.support.get(item, 0) + 1

    def add_sessions(self, sessions: Iterable[Sequence[str]]) -> None:
        for n, items in enumerate(sessions, 1):
            for item in items:
                self.add(f"t{n}", item)

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
            if queue is None:
                continue
            while queue and queue[0].stamp < 0:
                queue.popleft()
            if not queue:
                del self.by_item[item]

    def scores(self, items: Sequence[str], exclude: str | None = None) -> dict[str, float]:
        window = items[-self.window :]
        length = len(window)
        last = {item: p for p, item in enumerate(window)}
        sim: dict[RefSession, float] = {}
        step: dict[RefSession, int] = {}
        for p in sorted(last.values(), reverse=True):
            for s in self.by_item.get(window[p], ()):
                if s in sim:
                    sim[s] += (p + 1) / length
                else:
                    sim[s] = (p + 1) / length
                    step[s] = length - p
        me = self.sessions.get(exclude) if exclude is not None else None
        if me is not None:
            sim.pop(me, None)
        candidates: Iterable[RefSession] = sim
        if len(sim) > self.sample:
            candidates = heapq.nlargest(self.sample, sim, key=_stamp_of)
        live = [(s, sim[s]) for s in candidates if s.stamp >= 0]
        if len(live) > self.neighbours:
            live = heapq.nlargest(self.neighbours, live, key=_similarity)
        out: dict[str, float] = {}
        for s, similarity in live:
            gain = similarity / len(last) / step[s]
            for item in s.items:
                out[item] = out.get(item, 0.0) + gain
        return out

    def fill(self, size: int) -> list[str]:
        top = heapq.nsmallest(size, self.support.items(), key=lambda kv: (-kv[1], kv[0]))
        return [i for i, _ in top]
