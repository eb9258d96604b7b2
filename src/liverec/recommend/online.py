"""The online recommender: time-decayed popularity plus item-to-item co-occurrence.

Owns: the state learnt from the live event stream (no training step, no model file)
and the lists made from it. Every accepted event updates it at once, so an item first
seen a minute ago already receives recommendations (it is a neighbour of the items
seen before it in a session) and gives them (the reverse edge).

How it learns. Each event first goes through the influence ledger (influence.py):
its gain g is what it adds beyond what its contributor (signed-in user, else
session) has already been credited for the item, at most `item_cap` per item and
over at most `influence_items` items per contributor. With g > 0:

* popularity: pop[b] += g, decaying with half-life `half_life_s`;
* co-occurrence: for each of the last `cooc_window` distinct items a of the session
  other than b, at distance d (1 = the item just before b), cooc[a][b] += g / d and
  cooc[b][a] += reverse_weight * g / d, decaying with half-life `cooc_half_life_s`.
  Seeing b again moves it to the end of the window but adds no weight.

Decay costs nothing per item: values are stored in the units of a reference time t0
(an event at time t adds g * exp(rate * (t - t0))) and read as stored * exp(-rate *
(now - t0)); all items decay alike, so ranking by stored value is ranking by decayed
value. Before exp() could overflow (every ~430 half-lives) t0 moves on: an epoch
starts, the bounded top sets are converted at once and every other item lazily, when
it is next touched (O(its neighbours)); nothing ever sweeps all items.

Each item's strongest S = `strongest_n` neighbours (by cooc[a][b] / (occ[b] + s)^beta)
are cached for up to `cooc_cache_items` items and kept current by the edge updates
of observe: a list read `cooc_refresh_s` or less after it was computed from all the
item's neighbours has the item's current counts and neighbours' occurrence weights
(and shrink, which moves with time in stored units) of up to that long ago. These
move slowly once an item has a history (by about the interval over the age of that
history: 1 s in a day is 0.001 %), so the lists are exact but for that drift.

Scoring: a candidate b of the session's recent items a_j (most recent first,
j = 0, 1, ...) scores sum_j 1/(j+1) * cooc[a_j][b] / ((occ[a_j] + s)^(1-beta) *
(occ[b] + s)^beta) where occ is each item's decayed occurrence weight and s is
`shrink`; beta = 0.5 is cosine-like and keeps popular items from topping every list,
s keeps items that only a few sessions ever saw from doing so. Co-occurrence
candidates come first, then the most popular items fill up to k; items the user
rated low come last. A score is comparable only within its source.

Popular items come from a top set of `popular_size` to twice that items, kept exact
incrementally, and, for lists with a catalog filter, a second one holding only items
that passed the filter when they were last seen (an item back in stock rejoins at
its next event). The rules (base.apply_rules) therefore see at most
context_items * strongest_n co-occurrence candidates plus 2 * popular_size popular
ones, whatever the catalog and the traffic.

Per-event cost, with W = cooc_window, N = max_neighbours, C = context_items,
P = popular_size, R = the user's ratings and exclusions (bounded by
profile_max_items):

* observe: O(W) amortised (plus O(S) for each of its 2W edge updates that
  moves a neighbour into a cached list or needs its weakest member, O(N) for a
  neighbour-list trim every N/4 new neighbours, O(P) for a top-set trim every P new
  members);
* recommend: O(C * S + P + R) (plus O(N log N) per context item whose
  cached strongest neighbours are missing or older than `cooc_refresh_s`, O(P log P)
  for a re-sort of the top set at most every `popular_refresh_s`).

Neither depends on the number of items, sessions or catalog entries.

Bounds: `max_items` items (least recently seen dropped), `max_neighbours` per item
(the weakest quarter dropped when full, amortised), `max_sessions` session windows
and ledger entries (least recently active dropped). Edges to a dropped item stay
until their owner's next trim but are never recommended (only known items are).

Thread-safety: none. Call every method from the event loop thread only; nothing here
does I/O, so `recommend` runs inline (`recommend_sync`).

Why ~540 lines in one module (some 70 of them this description): the decayed
popularity, the co-occurrence edges and the lists read from them are one data
structure; the influence ledger, the decay and top-set helpers and the cached
strongest-neighbour lists already live in influence.py, decay.py and strongest.py.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter

from ..config import Settings
from ..errors import ConfigError
from ..types import Event, Rec
from .base import RecContext, RecList, Recommender, apply_rules, blocked_items
from .decay import Decay, Filter, TopSet
from .influence import DEFAULT_ACTION_WEIGHTS, LOW_RATING, Ledger
from .strongest import Strongest

__all__ = ["DEFAULT_ACTION_WEIGHTS", "LOW_RATING", "OnlineRecommender", "OnlineStats"]

_by_score = itemgetter(1)


class _Item:
    __slots__ = ("cep", "key", "nbrs", "occ", "pep", "pop")

    def __init__(self, key: str, pep: int, cep: int) -> None:
        self.key = key  # the one str object every structure shares for this id
        self.pop = 0.0  # popularity, stored units of epoch pep
        self.occ = 0.0  # occurrence weight, co-occurrence stored units of epoch cep
        self.nbrs: dict[str, float] | None = None  # b -> cooc[self][b], epoch cep
        self.pep = pep
        self.cep = cep


@dataclass(frozen=True, slots=True)
class OnlineStats:
    items: int
    sessions: int
    edges: int  # neighbour entries over all items (including edges to dropped items)
    contributors: int = 0  # sessions and users in the influence ledger


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
        shrink: float = 5.0,
        context_items: int = 5,
        popular_size: int = 512,
        popular_refresh_s: float = 1.0,
        item_cap: float = 3.0,
        influence_items: int = 50,
        influence_contributors: int = 100_000,
        cooc_refresh_s: float = 10.0,
        cooc_cache_items: int = 20_000,
        strongest_n: int = 64,
    ) -> None:
        problems = []
        if half_life_s <= 0 or cooc_half_life_s <= 0:
            problems.append("half-lives must be > 0 seconds")
        if min(cooc_window, max_neighbours, max_items, max_sessions) < 1:
            problems.append("cooc_window, max_neighbours, max_items, max_sessions must be >= 1")
        if min(context_items, popular_size, cooc_cache_items, strongest_n) < 1:
            problems.append(
                "context_items, popular_size, cooc_cache_items, strongest_n must be >= 1"
            )
        if popular_refresh_s < 0 or cooc_refresh_s < 0:
            problems.append("popular_refresh_s and cooc_refresh_s must be >= 0")
        if not 0.0 <= beta <= 1.0 or reverse_weight < 0 or not 0 <= shrink < math.inf:
            problems.append("beta must be in 0..1, reverse_weight and shrink >= 0")
        if problems:
            raise ConfigError("online recommender: " + "; ".join(problems))
        self._clock = clock
        self._ledger = Ledger(item_cap, influence_items, influence_contributors, action_weights)
        # item -> its strongest neighbours; insertion-ordered, the oldest computed evicted
        self._lists: dict[str, Strongest] = {}
        self.cooc_refresh_s = cooc_refresh_s
        self.cooc_cache_items = cooc_cache_items
        self.strongest_n = strongest_n
        self._drops = 0  # items dropped (max_items) so far
        now = clock()
        self._pop = Decay(half_life_s, now)
        self._cooc = Decay(cooc_half_life_s, now)
        self.cooc_window = cooc_window
        self.max_neighbours = max_neighbours
        self._keep_on_trim = max(1, max_neighbours * 3 // 4)
        self.max_items = max_items
        self.max_sessions = max_sessions
        self.reverse_weight = reverse_weight
        self.beta = beta
        self.shrink = shrink
        self.context_items = context_items
        self.popular_size = popular_size
        self.popular_refresh_s = popular_refresh_s
        self._items: OrderedDict[str, _Item] = OrderedDict()  # least recently seen first
        # session id -> its last distinct items, oldest first
        self._sessions: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._top = TopSet(popular_size)
        # the popular items a catalog filter accepts (built at the first filtered list)
        self._filter: Filter | None = None
        self._top_ok = TopSet(popular_size)
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
            shrink=settings.cooc_shrink,
            popular_size=settings.popular_candidates,
            popular_refresh_s=settings.popular_refresh_s,
            item_cap=settings.influence_item_cap,
            influence_items=settings.influence_session_items,
            influence_contributors=settings.influence_contributors,
            cooc_refresh_s=settings.cooc_refresh_s,
            cooc_cache_items=settings.cooc_cache_items,
            strongest_n=settings.cooc_list_neighbours,
        )

    @property
    def version(self) -> str:
        return "online"

    @property
    def action_weights(self) -> dict[str, float]:
        return self._ledger.action_weights

    # --- learning

    def weight(self, event: Event) -> float:
        """How much one event counts on its own (0..item_cap); <= 0 is ignored."""
        return self._ledger.weight(event)

    def observe(self, event: Event) -> None:
        gain = self._ledger.gain(event)
        sessions = self._sessions
        recent = sessions.get(event.session_id)
        if gain <= 0.0:  # nothing to learn; a repeated item still moves up the window
            if recent is not None and event.item_id in recent and recent[-1] != event.item_id:
                sessions[event.session_id] = (
                    *(a for a in recent if a != event.item_id),
                    recent[recent.index(event.item_id)],
                )
            return
        now = self._clock()
        t = event.ts if event.ts < now else now  # replayed events decay by their age
        self._catch_up(t)
        item = self._touch(event.item_id)
        b = item.key
        item.pop += gain * self._pop.gain(t)
        self._top.bump(b, item.pop)
        if self._filter is not None and self._filter(b):
            self._top_ok.bump(b, item.pop)

        if recent is None:
            sources: tuple[str, ...] = ()
            sessions[event.session_id] = (b,)
            if len(sessions) > self.max_sessions:
                sessions.popitem(last=False)
        else:
            sources = tuple(a for a in recent if a != b)
            sessions[event.session_id] = (*sources, b)[-self.cooc_window :]
            sessions.move_to_end(event.session_id)

        gw = gain * self._cooc.gain(t)
        item.occ += gw
        back = self.reverse_weight
        shrink = self.shrink * self._cooc.gain(now)  # stored units, as lists read it
        get = self._items.get
        for d, a in enumerate(reversed(sources), 1):
            src = get(a)
            if src is None:  # dropped since it entered the session window
                continue
            self._add_edge(src, item, gw / d, shrink)
            if back:
                self._add_edge(item, src, back * gw / d, shrink)

    def forget(self, session_id: str) -> None:
        # the ledger entry stays: a reconnect must not earn the session new weight
        self._sessions.pop(session_id, None)

    def _catch_up(self, t: float) -> None:
        """Start new decay epochs before exp() could overflow; O(popular_size)."""
        if self._pop.due(t):
            factor = self._pop.advance(t)
            self._top.rescale(factor)
            self._top_ok.rescale(factor)
        if self._cooc.due(t):
            self._cooc.advance(t)
            self._lists = {}  # computed in the old epoch's units

    def _sync(self, item: _Item) -> None:
        """Convert the item's values to the current epochs (O(its neighbours), once
        per epoch)."""
        if item.pep != self._pop.epoch:
            item.pop *= self._pop.carry(item.pep)
            item.pep = self._pop.epoch
        if item.cep != self._cooc.epoch:
            f = self._cooc.carry(item.cep)
            item.occ *= f
            if item.nbrs:
                item.nbrs = {k: v * f for k, v in item.nbrs.items()}
            item.cep = self._cooc.epoch

    def _occ(self, item: _Item) -> float:
        """The item's occurrence weight in the current epoch's units (no update)."""
        if item.cep == self._cooc.epoch:
            return item.occ
        return item.occ * self._cooc.carry(item.cep)

    def _touch(self, item_id: str) -> _Item:
        items = self._items
        item = items.get(item_id)
        if item is not None:
            items.move_to_end(item_id)
            self._sync(item)
            return item
        item = items[item_id] = _Item(item_id, self._pop.epoch, self._cooc.epoch)
        if len(items) > self.max_items:
            old_id, old = items.popitem(last=False)
            self._drops += 1
            self._lists.pop(old_id, None)
            self._edges -= len(old.nbrs or ())
            self._top.remove(old_id)
            self._top_ok.remove(old_id)
        return item

    def _add_edge(self, src: _Item, dst: _Item, x: float, shrink: float) -> None:
        """cooc[src][dst] += x; src's cached list follows (strongest.py)."""
        self._sync(src)
        b = dst.key
        nbrs = src.nbrs
        if nbrs is None:
            nbrs = src.nbrs = {}
        if b in nbrs:
            c = nbrs[b] = nbrs[b] + x
        else:
            c = nbrs[b] = x
            self._edges += 1
            if len(nbrs) > self.max_neighbours:
                self._trim(src, nbrs)
                return
        cached = self._lists.get(src.key)
        if cached is None or cached.epoch != self._cooc.epoch:
            return
        occ = self._occ(dst)
        if occ > 0.0 and not cached.follow(b, c / (occ + shrink) ** self.beta):
            del self._lists[src.key]  # rebuilt when next read

    def _trim(self, src: _Item, nbrs: dict[str, float]) -> None:
        items = self._items
        live = [kv for kv in nbrs.items() if kv[0] in items]
        if len(live) > self._keep_on_trim:
            live = heapq.nlargest(self._keep_on_trim, live, key=_by_score)
        self._edges -= len(nbrs) - len(live)
        src.nbrs = dict(live)
        self._lists.pop(src.key, None)  # may hold neighbours just dropped

    # --- serving

    async def recommend(self, ctx: RecContext) -> RecList:
        return RecList(self.recommend_sync(ctx), self.version)

    def recommend_sync(self, ctx: RecContext) -> list[Rec]:
        """The list for `ctx`, computed inline (no I/O, no awaits)."""
        if ctx.k <= 0:
            return []
        now = self._clock()
        self._catch_up(now)
        low = {i for i, r in ctx.ratings.items() if r <= LOW_RATING}
        blocked = blocked_items(ctx)
        cooc = self._cooc_candidates(ctx.items, low, ctx.k + len(blocked) + len(low), now)
        popular = self._popular(ctx.available, now)
        f = self._pop.to_now(now)
        return apply_rules(self._ranked(cooc, low, popular, f), ctx, self.knows)

    def knows(self, item_id: str) -> bool:
        return item_id in self._items

    def _cooc_candidates(
        self, seq: Sequence[str], low: set[str], limit: int, now: float
    ) -> list[tuple[str, float]]:
        """Co-occurrence candidates of the session's recent items, best first."""
        get = self._items.get
        beta = self.beta
        shrink = self.shrink * self._cooc.gain(now)
        scores: dict[str, float] | None = None
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
            if src is None or not src.nbrs:
                continue
            self._sync(src)
            if src.occ <= 0.0:
                continue
            ra = 1.0 / (j * (src.occ + shrink) ** (1.0 - beta))
            weights = self._strongest(src, now, shrink)
            if scores is None:  # the first list: one comprehension, no lookups
                scores = {b: ra * w for b, w in weights.items()}
                continue
            score_of = scores.get
            for b, w in weights.items():
                scores[b] = score_of(b, 0.0) + ra * w
        if not scores or limit <= 0:
            return []
        # rank the keys, not (key, score) tuples: a thousand short-lived tuples per
        # call would set off the garbage collector every call. The limit-th score is
        # found among the bare floats (C), the few keys at or above it sorted (stable:
        # ties keep the order in which the candidates came, as heapq.nlargest would)
        if len(scores) > limit:
            values = list(scores.values())
            values.sort()
            least = values[-limit]
            best = [b for b, v in scores.items() if v >= least]
        else:
            best = list(scores)
        best.sort(key=scores.__getitem__, reverse=True)
        return [(b, scores[b]) for b in best[:limit]]

    def _strongest(self, src: _Item, now: float, shrink: float) -> dict[str, float]:
        """src's neighbours b with weight cooc[src][b] / (occ[b] + shrink)^beta, the
        strongest `strongest_n` of them (all when it has no more).

        Cached for up to `cooc_cache_items` items; an edge update of src keeps its
        list current (`_add_edge`), so a list is computed from all of src's neighbours
        (O(max_neighbours)) only when it is older than `cooc_refresh_s` (occ[b] and the
        shrink, in stored units, move with every event of b and with time: a list's
        normalisers are up to that old), after a trim of src's neighbours, an epoch
        change, or an update that leaves a member weaker than a neighbour left out."""
        assert src.nbrs is not None
        key, items, epoch = src.key, self._items, self._cooc.epoch
        cached = self._lists.get(key)
        if cached is not None and cached.epoch == epoch and now - cached.at < self.cooc_refresh_s:
            if cached.drops == self._drops:
                return cached.weights
            if all(b in items for b in cached.weights):  # none of its members dropped
                cached.drops = self._drops
                return cached.weights
        get, beta = items.get, self.beta
        weights: dict[str, float] = {}
        if epoch == 0:  # every value is in the first epoch's units (the first ~8 years)
            for b, c in src.nbrs.items():
                nb = get(b)
                if nb is not None and nb.occ > 0.0:
                    weights[b] = c / (nb.occ + shrink) ** beta
        else:
            for b, c in src.nbrs.items():
                nb = get(b)
                if nb is not None and nb.occ > 0.0:
                    o = nb.occ if nb.cep == epoch else self._occ(nb)
                    weights[b] = c / (o + shrink) ** beta
        if cached is not None:
            del self._lists[key]  # re-inserted as the newest
        cached = self._lists[key] = Strongest(self.strongest_n, now, epoch, self._drops, weights)
        if len(self._lists) > self.cooc_cache_items:
            del self._lists[next(iter(self._lists))]
        return cached.weights

    def _popular(self, available: Filter | None, now: float) -> list[tuple[str, float]]:
        """The ranked popular candidates for a list: the top set, or with a catalog
        filter the top set of the items it accepts (re-seeded from both when the
        filter changes, O(popular_size))."""
        if available is None:
            return self._top.ranked(now, self.popular_refresh_s)
        if available != self._filter:
            self._filter = available
            before, self._top_ok = self._top_ok, TopSet(self.popular_size, available)
            for members in (before.members, self._top.members):
                for key, pop in members.items():
                    if available(key):
                        self._top_ok.bump(key, pop)
        return self._top_ok.ranked(now, self.popular_refresh_s)

    @staticmethod
    def _ranked(
        cooc: list[tuple[str, float]],
        low: set[str],
        popular: list[tuple[str, float]],
        f: float,
    ) -> Iterator[tuple[str, float]]:
        """Co-occurrence candidates, then popular items; low-rated items last."""
        demoted: list[tuple[str, float]] = []
        for item, score in cooc:
            if item in low:
                demoted.append((item, score))
            else:
                yield item, score
        for item, stored in popular:
            if item in low:
                demoted.append((item, stored * f))
            else:
                yield item, stored * f
        yield from demoted

    def popular_iter(self, limit: int, skip: Container[str] = ()) -> Iterator[tuple[str, float]]:
        """The most popular known items with their decayed popularity, best first:
        up to `limit` of the top set's `popular_size` to twice that items, `skip`
        left out. O(popular_size); items outside the top set are never listed."""
        now = self._clock()
        self._catch_up(now)
        f = self._pop.to_now(now)
        n = 0
        for item, stored in self._top.ranked(now, self.popular_refresh_s):
            if n >= limit:
                return
            if item not in skip:
                n += 1
                yield item, stored * f

    # --- introspection

    def neighbours(self, item_id: str, n: int = 20) -> list[tuple[str, float]]:
        """The item's strongest known neighbours with their normalised scores."""
        return self._cooc_candidates((item_id,), set(), n, self._clock())

    def degree(self, item_id: str) -> int:
        """Neighbour entries stored for one item (0 if unknown)."""
        item = self._items.get(item_id)
        return len(item.nbrs) if item is not None and item.nbrs else 0

    def popularity(self, item_id: str) -> float:
        """The item's decayed popularity now (0 if unknown)."""
        item = self._items.get(item_id)
        if item is None:
            return 0.0
        now = self._clock()
        self._catch_up(now)
        return item.pop * self._pop.carry(item.pep) * self._pop.to_now(now)

    def stats(self) -> OnlineStats:
        return OnlineStats(
            items=len(self._items),
            sessions=len(self._sessions),
            edges=self._edges,
            contributors=len(self._ledger),
        )
