"""The online recommender: time-decayed popularity plus item-to-item co-occurrence.

Owns: the state learnt from the live event stream (no training step, no model file)
and the lists made from it. Every accepted event updates it at once, so an item first
seen a minute ago already receives recommendations (it is a neighbour of the items
seen before it in a session) and gives them (the reverse edge).

How it learns, per event with weight w > 0 (see `DEFAULT_ACTION_WEIGHTS`):

* popularity: pop[b] += w, decaying with half-life `half_life_s`;
* co-occurrence: for each of the last `cooc_window` distinct items a of the session,
  at distance d (1 = the item just before b), cooc[a][b] += w / d and
  cooc[b][a] += reverse_weight * w / d, decaying with half-life `cooc_half_life_s`.
  Repeating the item just seen (view, then add to cart) strengthens the same edges
  only by the increase in weight, so an edge counts the strongest action of a visit.

Decay costs nothing per item: values are stored in the units of a moving reference
time t0 (an event at time t adds w * exp(rate * (t - t0))), and every value is read
as stored * exp(-rate * (now - t0)). Since all items decay alike, ranking by stored
value is ranking by decayed value. Before exp() could overflow, every stored value
is multiplied down once and t0 moves (a sweep every ~430 half-lives).

Scoring: a candidate b of the session's recent items a_j (most recent first,
j = 0, 1, ...) scores sum_j 1/(j+1) * cooc[a_j][b] / (occ[a_j]^(1-beta) * occ[b]^beta)
where occ is each item's decayed occurrence weight; beta = 0.5 is cosine-like and
keeps popular items from topping every list. Co-occurrence candidates come first,
then decayed popularity fills up to k; items the user rated low come last. A score
is comparable only within its source; the list order is the ranking.

Bounds: `max_items` items (least recently seen dropped), `max_neighbours` per item
(the weakest quarter dropped when full, amortised), `max_sessions` session windows
(least recently active dropped). Edges to a dropped item stay until their owner's
next trim but are never recommended (only known items are).

Thread-safety: none. Call every method from the event loop thread only; nothing here
does I/O, so `recommend` runs inline (`recommend_sync`).
"""

from __future__ import annotations

import heapq
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from types import MappingProxyType
from typing import Final

from ..config import Settings
from ..errors import ConfigError
from ..types import Event, Rec
from .base import RecContext, RecList, Recommender, apply_rules, blocked_items

DEFAULT_ACTION_WEIGHTS: Final[Mapping[str, float]] = MappingProxyType(
    {
        "view": 1.0,
        "click": 1.0,
        "add_to_cart": 2.0,
        "purchase": 3.0,
        "remove_from_cart": 0.0,
        "rate": 1.0,  # multiplies (rating - LOW_RATING): 3 -> 1, 4 -> 2, 5 -> 3
    }
)
LOW_RATING: Final = 2.0  # on a 1..5 scale, ratings <= this are "low"
_MAX_EXPONENT: Final = 300.0  # exp(300) ~ 1e130, far from overflow (exp(709))
_by_score = itemgetter(1)


def _pop_of(kv: tuple[str, _Item]) -> float:
    return kv[1].pop


class _Decay:
    """Exponential decay read against a moving reference time t0."""

    __slots__ = ("rate", "t0")

    def __init__(self, half_life_s: float, t0: float) -> None:
        self.rate = math.log(2.0) / half_life_s
        self.t0 = t0

    def gain(self, t: float) -> float:
        """What one unit of weight at time t is worth in stored units."""
        return math.exp(self.rate * (t - self.t0))

    def to_now(self, now: float) -> float:
        """Multiply a stored value by this to get its decayed value at `now`."""
        return math.exp(-self.rate * (now - self.t0))

    def due(self, t: float) -> bool:
        return self.rate * (t - self.t0) > _MAX_EXPONENT


STRONGEST_N = 64  # neighbours of a context item considered per list
STRONGEST_REFRESH_S = 1.0  # how stale a cached strongest-neighbour list may be
STRONGEST_CACHED = 20_000  # items whose strongest neighbours are cached (~6 KB each)


class _Item:
    __slots__ = ("key", "nbrs", "occ", "pop")

    def __init__(self, key: str) -> None:
        self.key = key  # the one str object every structure shares for this id
        self.pop = 0.0  # popularity, stored units
        self.occ = 0.0  # occurrence weight, co-occurrence stored units
        self.nbrs: dict[str, float] | None = None  # b -> cooc[self][b], stored units


class _TopSet:
    """Candidates for the most popular items, kept exact without scanning all items.

    Invariant: every item outside `members` has a stored popularity <= `floor` <=
    every member's. Stored popularity only grows (rescales are uniform), so an item
    that rises above the floor joins, and trimming keeps the best `size`.
    """

    __slots__ = ("dirty", "floor", "members", "size", "sorted", "sorted_at")

    def __init__(self, size: int) -> None:
        self.size = size
        self.members: dict[str, float] = {}
        self.floor = 0.0
        self.sorted: list[tuple[str, float]] = []
        self.sorted_at = -math.inf
        self.dirty = False

    def bump(self, key: str, pop: float) -> None:
        if pop > self.floor or key in self.members:
            self.members[key] = pop
            self.dirty = True
            if len(self.members) > 2 * self.size:
                best = heapq.nlargest(self.size, self.members.items(), key=_by_score)
                self.members = dict(best)
                self.floor = best[-1][1]

    def remove(self, key: str) -> None:
        if self.members.pop(key, None) is not None:
            self.dirty = True

    def rescale(self, factor: float) -> None:
        self.members = {k: v * factor for k, v in self.members.items()}
        self.floor *= factor
        self.sorted = [(k, v * factor) for k, v in self.sorted]

    def ranked(self, now: float, refresh_s: float) -> list[tuple[str, float]]:
        """Members best first; re-sorted at most every `refresh_s` seconds."""
        if self.dirty and now - self.sorted_at >= refresh_s:
            self.sorted = sorted(self.members.items(), key=_by_score, reverse=True)
            self.sorted_at = now
            self.dirty = False
        return self.sorted


@dataclass(frozen=True, slots=True)
class OnlineStats:
    items: int
    sessions: int
    edges: int  # neighbour entries over all items (including edges to dropped items)


class OnlineRecommender(Recommender):
    """Decayed popularity + co-occurrence, learnt online. See the module docstring."""

    def __init__(
        self,
        half_life_s: float = 3600.0,
        cooc_window: int = 5,
        max_neighbours: int = 200,
        max_items: int = 1_000_000,
        clock: Callable[[], float] = time.time,
        *,
        cooc_half_life_s: float = 7 * 86400.0,
        max_sessions: int = 100_000,
        action_weights: Mapping[str, float] = DEFAULT_ACTION_WEIGHTS,
        reverse_weight: float = 0.5,
        beta: float = 0.5,
        context_items: int = 5,
        popular_size: int = 512,
        popular_refresh_s: float = 1.0,
    ) -> None:
        problems = []
        if half_life_s <= 0 or cooc_half_life_s <= 0:
            problems.append("half-lives must be > 0 seconds")
        if min(cooc_window, max_neighbours, max_items, max_sessions) < 1:
            problems.append("cooc_window, max_neighbours, max_items, max_sessions must be >= 1")
        if min(context_items, popular_size) < 1 or popular_refresh_s < 0:
            problems.append("context_items, popular_size >= 1 and popular_refresh_s >= 0")
        if not 0.0 <= beta <= 1.0 or reverse_weight < 0:
            problems.append("beta must be in 0..1 and reverse_weight >= 0")
        if problems:
            raise ConfigError("online recommender: " + "; ".join(problems))
        self._clock = clock
        # item -> (computed at, strongest neighbours); insertion-ordered, oldest evicted
        self._strongest_cache: dict[str, tuple[float, list[tuple[str, float]]]] = {}
        now = clock()
        self._pop = _Decay(half_life_s, now)
        self._cooc = _Decay(cooc_half_life_s, now)
        self.cooc_window = cooc_window
        self.max_neighbours = max_neighbours
        self._keep_on_trim = max(1, max_neighbours * 3 // 4)
        self.max_items = max_items
        self.max_sessions = max_sessions
        self.action_weights = dict(action_weights)
        self.reverse_weight = reverse_weight
        self.beta = beta
        self.context_items = context_items
        self.popular_refresh_s = popular_refresh_s
        self._items: OrderedDict[str, _Item] = OrderedDict()  # least recently seen first
        # session id -> (its last distinct items, oldest first; weight of the last event)
        self._sessions: OrderedDict[str, tuple[tuple[str, ...], float]] = OrderedDict()
        self._top = _TopSet(popular_size)
        self._edges = 0

    @classmethod
    def from_settings(
        cls, settings: Settings, clock: Callable[[], float] = time.time
    ) -> OnlineRecommender:
        return cls(
            half_life_s=settings.popularity_half_life_s,
            cooc_window=settings.cooc_window,
            max_neighbours=settings.cooc_max_neighbours,
            max_items=settings.max_items,
            clock=clock,
        )

    @property
    def version(self) -> str:
        return "online"

    # --- learning

    def weight(self, event: Event) -> float:
        """How much one event counts; events weighing <= 0 are ignored."""
        w = self.action_weights.get(event.action, 0.0)
        if event.action == "rate":
            w *= max(0.0, (event.rating or 0.0) - LOW_RATING)
        return w

    def observe(self, event: Event) -> None:
        w = self.weight(event)
        if w <= 0.0:
            return
        t = min(event.ts, self._clock())  # replayed events decay by their age
        if self._pop.due(t):
            self._rescale_pop(t)
        if self._cooc.due(t):
            self._rescale_cooc(t)
        item = self._touch(event.item_id)
        b = item.key
        item.pop += w * self._pop.gain(t)
        self._top.bump(b, item.pop)

        sessions = self._sessions
        state = sessions.get(event.session_id)
        if state is None:
            recent: tuple[str, ...] = ()
            last_w = 0.0
        else:
            recent, last_w = state
            sessions.move_to_end(event.session_id)
        if recent and recent[-1] == b:  # same item again: only a stronger action adds
            if w <= last_w:
                return
            edge_w, sources = w - last_w, recent[:-1]
        else:
            edge_w, sources = w, recent
            recent = (*recent, b)[-self.cooc_window :]
        sessions[event.session_id] = (recent, w)
        if state is None and len(sessions) > self.max_sessions:
            sessions.popitem(last=False)

        gw = edge_w * self._cooc.gain(t)
        item.occ += gw
        back = self.reverse_weight
        for d, a in enumerate(reversed(sources), 1):
            if a != b:
                self._add_edge(a, b, gw / d)
                if back:
                    self._add_edge(b, a, back * gw / d)

    def forget(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def _touch(self, item_id: str) -> _Item:
        items = self._items
        item = items.get(item_id)
        if item is not None:
            items.move_to_end(item_id)
            return item
        item = items[item_id] = _Item(item_id)
        if len(items) > self.max_items:
            old_id, old = items.popitem(last=False)
            self._edges -= len(old.nbrs or ())
            self._top.remove(old_id)
        return item

    def _add_edge(self, a: str, b: str, x: float) -> None:
        src = self._items.get(a)
        if src is None:  # dropped since it entered the session window
            return
        nbrs = src.nbrs
        if nbrs is None:
            nbrs = src.nbrs = {}
        if b in nbrs:
            nbrs[b] += x
            return
        nbrs[b] = x
        self._edges += 1
        if len(nbrs) > self.max_neighbours:
            self._trim(src, nbrs)

    def _trim(self, src: _Item, nbrs: dict[str, float]) -> None:
        items = self._items
        live = [kv for kv in nbrs.items() if kv[0] in items]
        if len(live) > self._keep_on_trim:
            live = heapq.nlargest(self._keep_on_trim, live, key=_by_score)
        self._edges -= len(nbrs) - len(live)
        src.nbrs = dict(live)

    def _rescale_pop(self, t: float) -> None:
        factor = 1.0 / self._pop.gain(t)
        for item in self._items.values():
            item.pop *= factor
        self._top.rescale(factor)
        self._pop.t0 = t

    def _rescale_cooc(self, t: float) -> None:
        factor = 1.0 / self._cooc.gain(t)
        for item in self._items.values():
            item.occ *= factor
            if item.nbrs:
                item.nbrs = {k: v * factor for k, v in item.nbrs.items()}
        self._cooc.t0 = t

    # --- serving

    async def recommend(self, ctx: RecContext) -> RecList:
        return RecList(self.recommend_sync(ctx), self.version)

    def recommend_sync(self, ctx: RecContext) -> list[Rec]:
        """The list for `ctx`, computed inline (no I/O, no awaits)."""
        if ctx.k <= 0:
            return []
        low = {i for i, r in ctx.ratings.items() if r <= LOW_RATING}
        blocked = blocked_items(ctx)
        cooc = self._cooc_candidates(ctx.items, low, ctx.k + len(blocked) + len(low))
        # enough popular items for k allowed ones, even if every candidate repeats
        ranked = self._ranked(cooc, low, blocked, ctx.k + len(low) + len(cooc))
        return apply_rules(ranked, ctx, self.knows)

    def knows(self, item_id: str) -> bool:
        return item_id in self._items

    def _cooc_candidates(
        self, seq: Sequence[str], low: set[str], limit: int
    ) -> list[tuple[str, float]]:
        """Co-occurrence candidates of the session's recent items, best first."""
        get = self._items.get
        beta = self.beta
        now = self._clock()
        scores: dict[str, float] = {}
        score_of = scores.get
        seen: set[str] = set()
        j = 0
        for a in reversed(seq):
            if j >= self.context_items:
                break
            if a in seen:
                continue
            seen.add(a)
            if a in low:  # a disliked item says nothing about what the user wants
                continue
            src = get(a)
            j += 1
            if src is None or not src.nbrs or src.occ <= 0.0:
                continue
            ra = 1.0 / (j * src.occ ** (1.0 - beta))
            for b, w in self._strongest(src, now):
                scores[b] = score_of(b, 0.0) + ra * w
        # rank the keys, not (key, score) tuples: a thousand short-lived tuples per
        # call would set off the garbage collector every call
        if len(scores) <= limit:
            best = sorted(scores, key=scores.__getitem__, reverse=True)
        else:
            best = heapq.nlargest(limit, scores, key=scores.__getitem__)
        return [(b, scores[b]) for b in best]

    def _strongest(self, src: _Item, now: float) -> list[tuple[str, float]]:
        """src's neighbours b with weight cooc[src][b] / occ[b]^beta, the strongest
        STRONGEST_N of them. Items with many neighbours (the popular ones, which are
        in most sessions) keep the list for up to STRONGEST_REFRESH_S: scanning every
        neighbour on every event was half of the server's CPU per event."""
        assert src.nbrs is not None
        cached = self._strongest_cache.get(src.key)
        if cached is not None and now - cached[0] < STRONGEST_REFRESH_S:
            return cached[1]
        get, beta = self._items.get, self.beta
        weights: dict[str, float] = {}
        for b, c in src.nbrs.items():
            nb = get(b)
            if nb is not None and nb.occ > 0.0:
                weights[b] = c / nb.occ**beta
        if len(weights) <= STRONGEST_N:
            return list(weights.items())  # cheap enough to redo every time
        best = heapq.nlargest(STRONGEST_N, weights, key=weights.__getitem__)
        strongest = [(b, weights[b]) for b in best]
        self._strongest_cache[src.key] = (now, strongest)
        if len(self._strongest_cache) > STRONGEST_CACHED:
            del self._strongest_cache[next(iter(self._strongest_cache))]
        return strongest

    def _ranked(
        self, cooc: list[tuple[str, float]], low: set[str], blocked: set[str], limit: int
    ) -> Iterator[tuple[str, float]]:
        """Co-occurrence candidates, then popular items; low-rated items last."""
        demoted: list[tuple[str, float]] = []
        for item, score in cooc:
            if item in low:
                demoted.append((item, score))
            else:
                yield item, score
        for item, score in self.popular_iter(limit, blocked):
            if item in low:
                demoted.append((item, score))
            else:
                yield item, score
        yield from demoted

    def popular_iter(self, limit: int, skip: Container[str] = ()) -> Iterator[tuple[str, float]]:
        """Known items by decayed popularity, best first.

        Yields the top set (`popular_size` to twice that, `skip` not applied), then,
        only if the caller reads past it, the best `limit` items outside it and
        outside `skip`, found by one scan of every item: O(items), ~0.1 s at 100k
        items. Only an exclusion list covering most of the top set gets there."""
        now = self._clock()
        f = self._pop.to_now(now)
        ranked = self._top.ranked(now, self.popular_refresh_s)
        for item, stored in ranked:
            yield item, stored * f
        if len(ranked) >= len(self._items):
            return
        done = {item for item, _ in ranked}
        rest = (kv for kv in self._items.items() if kv[0] not in done and kv[0] not in skip)
        for item, state in heapq.nlargest(limit, rest, key=_pop_of):
            yield item, state.pop * f

    # --- introspection

    def neighbours(self, item_id: str, n: int = 20) -> list[tuple[str, float]]:
        """The item's strongest known neighbours with their normalised scores."""
        return self._cooc_candidates((item_id,), set(), n)

    def degree(self, item_id: str) -> int:
        """Neighbour entries stored for one item (0 if unknown)."""
        item = self._items.get(item_id)
        return len(item.nbrs) if item is not None and item.nbrs else 0

    def popularity(self, item_id: str) -> float:
        """The item's decayed popularity now (0 if unknown)."""
        item = self._items.get(item_id)
        return 0.0 if item is None else item.pop * self._pop.to_now(self._clock())

    def stats(self) -> OnlineStats:
        return OnlineStats(items=len(self._items), sessions=len(self._sessions), edges=self._edges)
