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

How it is computed. The dicts and queues above say which session holds what;
arrays mirror them for the scoring, so that an event costs a fixed number of numpy
calls over bounded arrays rather than a Python step per candidate: per session slot
its stamp and its items as item numbers; per item queue its slots, kept as the queue
changes. Sums run in the definition's order (sessions by most recent shared item,
then queue order; neighbours by similarity, ties in that order; their items in first
occurrence order), so the values, and therefore the lists, are those of the plain
dict implementation (tests/vsknn_reference.py) to the last bit.

Cost per event, all bounded by settings and independent of the index size:
gathering and choosing O(C) array work for the C <= window x per_item queue entries
(plus O(sample log sample) to order the sample), scoring O(neighbours x
session_items), ordering the best k + SPARE (+ blocked) of the R scored items O(R)
plus a sort of those; indexing an event is O(1) (amortised O(session_items) on an
eviction, O(per_item) to rebuild one queue's slots after one). A list the rules
leave short reads the fill list: the FILL items most sessions hold, recomputed every
FILL_REFRESH indexed events in O(items) array work.
Memory: about 250 B per indexed session plus 60 B per (session, item) pair in the
dicts, plus 4 x session_items + 28 B per session slot (arrays grow by doubling up to
max_sessions + 2), 32 B per item and about 110 B + 8 B per entry per item queue.
Thread-safety: none; call from the event loop thread (nothing here does I/O).

Why one module of ~600 lines: the index's dicts, their array mirror and the scoring
that reads the arrays change together (an update that one of them misses, or a sum
taken in another order, changes the lists), so they are kept side by side.
"""

from __future__ import annotations

import heapq
import logging
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from operator import attrgetter
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
    __slots__ = ("items", "key", "slot", "stamp", "uid")

    def __init__(self, key: str, stamp: int, slot: int, uid: int) -> None:
        self.key = key
        self.stamp = stamp  # -1 once evicted: its entries in item queues are stale
        self.slot = slot  # its row of the index's arrays (>= 1); minus its uid once evicted
        self.uid = uid  # unique over the index's life (>= 1): tells stale entries apart
        self.items: dict[str, None] = {}  # distinct items, first occurrence order


_slot_of = attrgetter("slot")


class _Queue(deque[_Session]):
    """The sessions that most recently took one item, oldest first, and their slots
    (a stale one's is minus its uid) in an array, `keys`: a ring once the queue is
    full (the oldest at `head`), kept up to date as sessions join (`push`) and
    rebuilt after one in it is evicted (`parts`)."""

    __slots__ = ("head", "keys")

    def __init__(self, maxlen: int) -> None:
        super().__init__((), maxlen)
        self.keys: np.ndarray | None = None
        self.head = 0

    def push(self, s: _Session) -> None:
        """Append `s` (O(1); amortised O(1) while the array grows to maxlen)."""
        full = len(self) == self.maxlen
        self.append(s)
        keys = self.keys
        if keys is None:
            return
        if full:  # the oldest entry's place takes the new one
            keys[self.head] = s.slot
            self.head = (self.head + 1) % len(keys)
        elif len(self) <= len(keys):
            keys[len(self) - 1] = s.slot
        else:
            assert self.maxlen is not None
            grown = np.empty(min(2 * len(keys), self.maxlen), dtype=np.int64)
            grown[: len(keys)] = keys
            grown[len(keys)] = s.slot
            self.keys = grown

    def parts(self) -> tuple[np.ndarray, ...]:
        """The slots in queue order: one array, or two when the ring has wrapped."""
        keys = self.keys
        if keys is None:
            keys = self.keys = np.fromiter(map(_slot_of, self), np.int64, len(self))
            self.head = 0
        head = self.head
        if head:
            return keys[head:], keys[:head]
        return (keys[: len(self)],)


_COLUMNS = np.arange(4096)


def _upto(n: int) -> np.ndarray:
    """0, 1, ..., n - 1 (a view of one shared array when it is long enough)."""
    return _COLUMNS[:n] if n <= len(_COLUMNS) else np.arange(n)


_EMPTY_I = np.empty(0, dtype=np.int64)
_EMPTY_F = np.empty(0, dtype=np.float64)
_NEVER = np.iinfo(np.int64).max  # a first-place mark above every rank


def _first_places(values: np.ndarray, scratch: np.ndarray, base: int) -> np.ndarray:
    """The positions where each distinct value of `values` (>= 0) first appears, in
    order; O(len(values)). `scratch` must hold less than `base` at every value; it
    is left holding at most base + len(values) there (the next call's base: more)."""
    n = len(values)
    rank = base + n - _upto(n)
    np.maximum.at(scratch, values, rank)  # the first place has the highest rank
    return np.flatnonzero(scratch[values] == rank)


def ranked_items(scores: dict[str, float], limit: int | None = None) -> list[tuple[str, float]]:
    """(item, score), best first, ties by item id (every path orders alike); the
    best `limit` only when given (a partial sort)."""
    pairs = [(-v, i) for i, v in scores.items()]
    top = sorted(pairs) if limit is None or limit >= len(pairs) else heapq.nsmallest(limit, pairs)
    return [(i, -v) for v, i in top]


class SessionIndex:
    """Recent sessions by item, bounded; V-SkNN scores over them.

    The dicts and queues say which sessions hold which items; arrays mirror them for
    the scoring: per session slot its stamp, its item count and its items (as item
    numbers, `_items`: max_sessions x session_items int32 at most), per item number
    its id. Scoring reads only the arrays and the queues' cached keys."""

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
        self.by_item: dict[str, _Queue] = {}
        self.support: dict[str, int] = {}  # indexed sessions holding each item
        self.clock = 0  # stamps: one per indexed event
        self._fill: list[str] | None = None
        self._since_fill = 0
        # session slots (0 is never used)
        cap = 1024
        self._stamp = np.full(cap, -1, dtype=np.int64)
        self._count = np.zeros(cap, dtype=np.int32)
        self._items = np.zeros((cap, session_items), dtype=np.int32)
        self._sim = np.zeros(cap, dtype=np.float64)  # scoring's scratch (zeros between)
        self._first = np.zeros(cap, dtype=np.int64)  # scratch (below `_base` between)
        self._base = 1
        self._free: list[int] = []
        self._next_slot = 1
        self._evicted = False  # once true, queues may hold stale entries
        self._uids = 0
        # item numbers: assigned while an indexed session holds the item
        self._number: dict[str, int] = {}
        self._names: list[str] = []
        self._free_numbers: list[int] = []
        self._acc = np.zeros(cap, dtype=np.float64)  # per number: scratch (zeros between)
        self._pos = np.zeros(cap, dtype=np.int64)  # per number: scratch
        self._support = np.zeros(cap, dtype=np.int64)  # per number: `support`, 0 if free
        self._cols = np.empty(0, dtype=np.int64)  # `columns`: number -> column, -2 unknown
        self._cols_of: dict[str, int] | None = None

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
            self._uids += 1
            s = self.sessions[session] = _Session(session, self.clock, self._slot(), self._uids)
            if len(self.sessions) > self.max_sessions:
                self._evict()
        else:
            s.stamp = self.clock
            self.sessions.move_to_end(session)
        slot = s.slot
        self._stamp[slot] = self.clock
        n = len(s.items)
        if item not in s.items and n < self.session_items:
            s.items[item] = None
            queue = self.by_item.get(item)
            if queue is None:
                queue = self.by_item[item] = _Queue(self.per_item)
            queue.push(s)
            self.support[item] = self.support.get(item, 0) + 1
            number = self._number.get(item)
            if number is None:
                number = self._name(item)
            self._support[number] += 1
            self._items[slot, n] = number
            self._count[slot] = n + 1
        self._since_fill += 1

    def add_sessions(self, sessions: Iterable[Sequence[str]], prefix: str = "t") -> int:
        """Index whole sessions (a training file), oldest first; returns how many."""
        n = 0
        for n, items in enumerate(sessions, 1):
            key = f"{prefix}{n}"
            for item in items:
                self.add(key, item)
        self._fill = None
        for queue in self.by_item.values():  # scoring then finds every queue's keys
            queue.parts()
        return n

    def _slot(self) -> int:
        if self._free:
            return self._free.pop()
        slot = self._next_slot
        self._next_slot += 1
        cap = len(self._stamp)
        if slot >= cap:  # grow by doubling: at most max_sessions + 2 slots
            size = min(2 * cap, self.max_sessions + 2)
            stamp, count = self._stamp, self._count
            self._stamp = np.full(size, -1, dtype=np.int64)
            self._stamp[:cap] = stamp
            self._count = np.zeros(size, dtype=np.int32)
            self._count[:cap] = count
            items = self._items
            self._items = np.zeros((size, self.session_items), dtype=np.int32)
            self._items[:cap] = items
            self._sim = np.zeros(size, dtype=np.float64)
            self._first = np.zeros(size, dtype=np.int64)
        return slot

    def _name(self, item: str) -> int:
        """A number for `item` (a free one when there is one)."""
        if self._free_numbers:
            number = self._free_numbers.pop()
            self._names[number] = item
            if number < len(self._cols):
                self._cols[number] = -2  # was another item's
        else:
            number = len(self._names)
            self._names.append(item)
            if number >= len(self._acc):
                size = 2 * len(self._acc)
                self._acc = np.zeros(size, dtype=np.float64)
                self._pos = np.zeros(size, dtype=np.int64)
                support = self._support
                self._support = np.zeros(size, dtype=np.int64)
                self._support[: len(support)] = support
        self._number[item] = number
        return number

    def _evict(self) -> None:
        _, old = self.sessions.popitem(last=False)
        old.stamp = -1
        self._stamp[old.slot] = -1
        self._count[old.slot] = 0
        self._free.append(old.slot)
        old.slot = -old.uid  # its entries left in queues stay distinct sessions
        self._evicted = True
        for item in old.items:
            left = self.support[item] - 1
            number = self._number[item]
            self._support[number] = left
            if left:
                self.support[item] = left
            else:
                del self.support[item]
                del self._number[item]
                self._free_numbers.append(number)
            queue = self.by_item.get(item)
            if queue is None:  # emptied before: this session had left the queue
                continue
            queue.keys = None  # its entry, if still there, is stale now
            while queue and queue[0].stamp < 0:
                queue.popleft()
            if not queue:
                del self.by_item[item]

    # --- scoring ----------------------------------------------------------------------

    def neighbour_scores(
        self, items: Sequence[str], exclude: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """V-SkNN scores of the items following `items` (oldest first): (item numbers,
        int, distinct; their scores, float64), both empty when nothing is scored. The
        values are those of the definition (module docstring) summed in its order:
        sessions by most recent shared item, then queue order; neighbours by
        similarity, ties in candidate order; their items in first occurrence order."""
        window = items[-self.window :]
        length = len(window)
        last = {item: p for p, item in enumerate(window)}  # latest position of each
        parts: list[np.ndarray] = []
        weights: list[float] = []
        steps: list[int] = []
        by_item = self.by_item
        # most recent item first: the first shared item seen gives a session's step
        for p in sorted(last.values(), reverse=True):
            queue = by_item.get(window[p])
            if queue is None:
                continue
            for part in queue.parts():
                parts.append(part)
                weights.append((p + 1) / length)
                steps.append(length - p)
        if not parts:
            return _EMPTY_I, _EMPTY_F
        sizes = [len(k) for k in parts]
        keys = np.concatenate(parts)
        weight = np.repeat(weights, sizes)
        steps_at = np.repeat(steps, sizes)
        stale = 0  # distinct evicted sessions among the candidates (never neighbours)
        if self._evicted and keys.min() < 0:
            gone = keys < 0
            stale = len(np.unique(keys[gone]))
            keep = ~gone
            keys, weight, steps_at = keys[keep], weight[keep], steps_at[keep]
        # the distinct sessions in the order they were gathered, their similarities
        # summed in that order (ufunc.at adds sequentially) and their steps; the
        # current session is never its own neighbour: a first-place mark above any
        # rank keeps its slot out of the heads (slot 0, never used, when none)
        me = self.sessions.get(exclude) if exclude is not None else None
        mine = me.slot if me is not None else 0
        first = self._first
        first[mine] = _NEVER
        heads = _first_places(keys, first, self._base)
        first[mine] = 0
        self._base += len(keys) + 1
        cand = keys[heads]
        np.add.at(self._sim, keys, weight)
        sim = self._sim[cand]
        self._sim[cand] = 0.0
        self._sim[mine] = 0.0
        step = steps_at[heads]
        if not len(cand):
            return _EMPTY_I, _EMPTY_F
        pick = None  # positions in cand of the neighbours, in order, once chosen
        if len(cand) + stale > self.sample:  # the `sample` most recent, newest first
            stamp = -self._stamp[cand]  # distinct: one per indexed event
            if len(cand) > self.sample:
                pick = np.argpartition(stamp, self.sample - 1)[: self.sample]
                pick = pick[np.argsort(stamp[pick])]
            else:
                pick = np.argsort(stamp)
        if len(cand if pick is None else pick) > self.neighbours:
            # the most similar, ties in the order above
            best = np.argsort(-(sim if pick is None else sim[pick]), kind="stable")
            pick = best[: self.neighbours] if pick is None else pick[best[: self.neighbours]]
        if pick is not None:
            cand, sim, step = cand[pick], sim[pick], step[pick]
        gain = sim / len(last) / step
        slots = cand
        count = self._count[slots]
        width = int(count.max())
        held = self._items[slots, :width][_upto(width) < count[:, None]]  # row-major
        at = _upto(len(held))
        self._pos[held] = at  # one position per distinct item stays (any one)
        numbers = held[self._pos[held] == at]
        np.add.at(self._acc, held, np.repeat(gain, count))  # in neighbour order
        scores = self._acc[numbers]
        self._acc[numbers] = 0.0
        return numbers, scores

    def scores(self, items: Sequence[str], exclude: str | None = None) -> dict[str, float]:
        """V-SkNN scores of the items following `items` (oldest first), by item id."""
        numbers, values = self.neighbour_scores(items, exclude)
        names = self._names
        return {names[j]: v for j, v in zip(numbers.tolist(), values.tolist(), strict=True)}

    def ranked(
        self, numbers: np.ndarray, values: np.ndarray, limit: int | None = None
    ) -> list[tuple[str, float]]:
        """`ranked_items` of `neighbour_scores`' output: (item, score), best first, ties
        by item id; the best `limit` only when given (ties at the limit all sorted)."""
        n = len(values)
        names = self._names
        if limit is None or limit >= n:
            pairs = sorted(
                zip((-values).tolist(), [names[j] for j in numbers.tolist()], strict=True)
            )
            return [(i, -v) for v, i in pairs]
        floor = np.partition(values, n - limit)[n - limit]  # the limit-th largest
        above = np.flatnonzero(values > floor)
        pairs = sorted(
            zip((-values[above]).tolist(), [names[j] for j in numbers[above].tolist()], strict=True)
        )
        out = [(i, -v) for v, i in pairs]
        tied = [names[j] for j in numbers[values == floor].tolist()]  # the rest: by id
        value = float(floor)
        out += [(i, value) for i in heapq.nsmallest(limit - len(out), tied)]
        return out

    def columns(self, numbers: np.ndarray, mapping: dict[str, int]) -> np.ndarray:
        """mapping[item] (-1 when absent) of the items `numbers`, int64; for one
        mapping at a time (a served model's item index): kept per item number."""
        if mapping is not self._cols_of:
            self._cols_of, self._cols = mapping, np.empty(0, dtype=np.int64)
        if len(self._cols) < len(self._names):
            grown = np.full(max(len(self._names), 2 * len(self._cols)), -2, dtype=np.int64)
            grown[: len(self._cols)] = self._cols
            self._cols = grown
        cols: np.ndarray = self._cols[numbers]
        missing = np.flatnonzero(cols == -2)
        if len(missing):
            names, get = self._names, mapping.get
            found = [get(names[j], -1) for j in numbers[missing].tolist()]
            cols[missing] = found
            self._cols[numbers[missing]] = found
        return cols

    def order(self, items: Sequence[str], exclude: str | None = None) -> list[tuple[str, float]]:
        """The scored items, best first (`ranked_items`)."""
        return self.ranked(*self.neighbour_scores(items, exclude))

    def fill(self) -> list[str]:
        """The FILL items held by most indexed sessions (ties by id), for short lists."""
        if self._fill is None or self._since_fill >= FILL_REFRESH:
            held = np.flatnonzero(self._support[: len(self._names)])  # O(items), in C
            top = self.ranked(held, self._support[held].astype(np.float64), FILL)
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
        numbers, values = index.neighbour_scores(ctx.items, exclude=ctx.session_id)
        if not len(numbers):
            return await self.fallback.recommend(ctx)
        # The best `limit` are enough unless the rules drop more than the spare ones.
        limit = ctx.k + len(blocked_items(ctx)) + len(ctx.ratings) + SPARE
        ranked = index.ranked(numbers, values, limit)
        items = apply_rules(ranked, ctx)
        if len(items) < ctx.k:
            ranked = index.ranked(numbers, values)  # every scored item, then the popular ones
            scored = {i for i, _ in ranked}
            ranked += [(i, 0.0) for i in index.fill() if i not in scored]
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
