"""The content model: items related by their catalog fields, and a home list for a
store without traffic.

Owns: `ContentIndex`, an inverted index over weighted catalog tokens kept up to date
item by item from the catalog's change notifications, the related items of one item
(`related`) or of a session's newest items (`related_to`, which merges the cached
lists of its anchors) and the cold-start home list (`home`).

Tokens and weights (a token's weight in an item is its field weight times its idf,
idf = log(1 + items / items with the token)):

* category 3, brand 3, each attribute name=value 2 (`{"genre": ["Drama", "War"]}`
  gives two tokens), title words 1, price band 0.5 (currency and a factor-of-2 band:
  16-31.99 USD is one band), description words 0.5 (its first `DESCRIPTION_WORDS`
  distinct words). Words are lower-cased Unicode word runs of 2+ characters, common
  English stop words left out.

`related(item)` ranks the candidates that share a token with the item by the cosine
of their weighted token vectors. Its cost does not grow with the catalog:

* each token keeps at most `max_postings` items (the most recently updated ones: a
  category of 100k items keeps 1,000 of them), and one query reads at most `scan`
  postings, rarest tokens first (they say the most);
* item norms are computed after each update batch with the idf of that moment, and
  recomputed lazily (O(tokens)) when the catalog has grown or shrunk by more than a
  factor of 2 since, so norms drift only within that factor and each item pays for
  it about log2(catalog growth) times;
* the best `neighbours` of an item are cached (LRU, `cache_items` items) and reused
  until some item's tokens changed and the entry is `refresh_s` old (a stock-only
  update changes no tokens: the related lists filter stock when read).

So a query costs O(tokens of the item + scan), an upsert or removal O(tokens of the
item) (postings are insertion-ordered dicts: add, remove and evict-oldest are O(1)),
and memory is O(items * tokens per item). Nothing is rebuilt per change. The scan
is done with arrays: items are numbered, each token's postings are also kept as an
array of numbers (newest first; an update of up to `PATCH_BATCH` items patches the
arrays of its tokens, O(postings) in C each, a bulk import drops them and the first
lookup that reads one rebuilds it, O(postings) in Python, once), and a lookup
concatenates the arrays it reads, sums the gains per candidate (`np.add.at` into a
scratch array) and divides by an array of norms; the Python work per lookup is
O(tokens of the item), not O(scan).

`related_to(recent, n)`, the blend's per-event call, merges the cached lists of the
session's newest 3 items: O(3 * neighbours) dict operations (the newest anchor's list
is copied as a whole) and one sort of at most 3 * neighbours keys.

`home(n)` is the cold-start list: in-stock items taken round-robin over the largest
categories, newest first within each (catalog order: the most recently added or
updated item is the newest). It is rebuilt at most every `refresh_s` after a change,
at O(categories + n) (per-category in-stock sets are kept up to date per item).

Thread-safety: none; call from the event loop thread only.

Why ~500 lines in one module: the postings, the norms and the neighbour cache are
one index, updated and invalidated together.
"""

from __future__ import annotations

import heapq
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from ..catalog import CatalogItem

FIELD_WEIGHTS: Final = {
    "c": 3.0,  # category
    "b": 3.0,  # brand
    "a": 2.0,  # attribute name=value
    "t": 1.0,  # title word
    "p": 0.5,  # price band
    "d": 0.5,  # description word
}
TITLE_WORDS: Final = 32
PATCH_BATCH: Final = 64  # updates of up to this many items patch the posting arrays
DESCRIPTION_WORDS: Final = 64
_UNSEEN: Final = np.iinfo(np.int64).max
# a cached related list: (content generation, when, best first, the same as a dict)
_Cached = tuple[int, float, list[tuple[str, float]], dict[str, float]]
_WORD_RE: Final = re.compile(r"[^\W_]{2,}")
_STOP: Final = frozenset(
    "a an and are as at be by for from has in is it its of on or the this to was were "
    "will with".split()
)


def _words(text: str | None, limit: int) -> list[str]:
    if not text:
        return []
    out: dict[str, None] = {}
    for match in _WORD_RE.finditer(text.lower()):
        word = match.group()
        if word not in _STOP:
            out[word] = None
            if len(out) >= limit:
                break
    return list(out)


def item_tokens(item: CatalogItem) -> dict[str, float]:
    """The item's tokens with their field weights (a token in two fields: the larger)."""
    out: dict[str, float] = {}

    def add(token: str, weight: float) -> None:
        if out.get(token, 0.0) < weight:
            out[token] = weight

    if item.category:
        add("c:" + item.category.lower(), FIELD_WEIGHTS["c"])
    if item.brand:
        add("b:" + item.brand.lower(), FIELD_WEIGHTS["b"])
    for name, value in item.attributes:
        add(f"a:{name.lower()}={value.lower()}", FIELD_WEIGHTS["a"])
    for word in _words(item.title, TITLE_WORDS):
        add("t:" + word, FIELD_WEIGHTS["t"])
    if item.price is not None and item.price > 0:
        add(f"p:{item.currency}:{math.floor(math.log2(item.price))}", FIELD_WEIGHTS["p"])
    for word in _words(item.description, DESCRIPTION_WORDS):
        add("d:" + word, FIELD_WEIGHTS["d"])
    return out


class ContentIndex:
    """Weighted catalog tokens with an inverted index; see the module docstring."""

    def __init__(
        self,
        *,
        max_postings: int = 1000,
        scan: int = 2000,
        neighbours: int = 50,
        cache_items: int = 10_000,
        refresh_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min(max_postings, scan, neighbours, cache_items) < 1 or refresh_s < 0:
            raise ValueError("content index: sizes must be >= 1 and refresh_s >= 0")
        self.max_postings = max_postings
        self.scan = scan
        self.neighbours = neighbours
        self.cache_items = cache_items
        self.refresh_s = refresh_s
        self._clock = clock
        self._tokens: dict[str, dict[str, float]] = {}  # item -> token -> field weight
        # items are numbered (slots, reused after removal) so that a lookup scores
        # its candidates with array operations instead of per-posting dict updates
        self._slot: dict[str, int] = {}
        self._ids: list[str] = []  # slot -> item ("" = free)
        self._free: list[int] = []
        self._norm_val = np.ones(64)  # slot -> norm
        self._norm_at = np.zeros(64, dtype=np.int64)  # slot -> items when computed (0: never)
        self._acc = np.zeros(64)  # lookup scratch: slot -> dot product so far
        self._first = np.full(64, _UNSEEN, dtype=np.int64)  # scratch: slot -> first read at
        self._arrays: dict[str, npt.NDArray[np.int64]] = {}  # token -> slots, newest first
        self._patch = True  # patch the arrays a change touches (False: drop them)
        self._in_stock: dict[str, bool] = {}
        self._postings: dict[str, dict[str, None]] = {}  # token -> items, oldest first
        self._df: dict[str, int] = {}  # token -> items with it (not capped)
        self._category: dict[str, str] = {}  # item -> its category key ("" = none)
        self._stocked: dict[str, dict[str, None]] = {}  # category -> in-stock items
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._home: tuple[int, float, list[str]] = (-1, -math.inf, [])
        self.generation = 0  # bumped by every change (the home list follows it)
        self.content_generation = 0  # bumped when tokens changed (cached related lists)

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._tokens

    # --- updates (catalog listener)

    def update(self, items: Iterable[CatalogItem], gone: Iterable[str] = ()) -> None:
        """Index (or re-index) items and drop removed ones: O(tokens) per item.

        An item whose tokens did not change (a stock change, a price within its band)
        keeps its postings; its norm is recomputed with today's idf, and unless that
        moved it, cached related lists stay valid: a catalog whose stock churns does
        not turn every lookup into an uncached one."""
        items, gone = list(items), list(gone)
        # a few changes patch the posting arrays they touch (O(postings) in C each);
        # a bulk import drops them instead, to be rebuilt once by the next lookup
        self._patch = len(items) + len(gone) <= PATCH_BATCH
        added, kept = [], []
        moved = False
        for item in items:
            key = item.item_id
            tokens = item_tokens(item)
            if self._tokens.get(key) == tokens:
                self._restock(key, item.in_stock)
                kept.append(key)
                continue
            self._remove(key)
            self._add(item, tokens)
            added.append(key)
            moved = True
        for item_id in gone:
            moved = self._remove(item_id) or moved
        for item_id in added:  # after the batch: the idf of the whole batch
            self._norm(item_id)
        for item_id in kept:
            slot = self._slot.get(item_id)
            if slot is None:  # also in `gone`
                continue
            before = float(self._norm_val[slot])
            self._norm_at[slot] = 0
            moved = moved or self._norm(item_id) != before
        self.generation += 1
        if moved:
            self.content_generation += 1

    def on_catalog_change(self, items: Sequence[CatalogItem], gone: Sequence[str]) -> None:
        """The `Catalog.listeners` entry."""
        self.update(items, gone)

    def _idf(self, token: str) -> float:
        return math.log(1.0 + len(self._tokens) / max(1, self._df.get(token, 0)))

    def _restock(self, key: str, in_stock: bool) -> None:
        """The stock of an indexed item; it becomes its category's newest. O(1)."""
        self._in_stock[key] = in_stock
        stocked = self._stocked.setdefault(self._category[key], {})
        stocked.pop(key, None)
        if in_stock:
            stocked[key] = None
        elif not stocked:
            del self._stocked[self._category[key]]

    def _add(self, item: CatalogItem, tokens: dict[str, float]) -> None:
        key = item.item_id
        self._tokens[key] = tokens
        self._in_stock[key] = item.in_stock
        if self._free:
            slot = self._free.pop()
            self._ids[slot] = key
        else:
            slot = len(self._ids)
            self._ids.append(key)
            if slot >= len(self._norm_val):  # doubling: amortised O(1)
                self._norm_val = np.resize(self._norm_val, 2 * slot)
                self._norm_at = np.resize(self._norm_at, 2 * slot)
                self._acc = np.zeros(2 * slot)
                self._first = np.full(2 * slot, _UNSEEN, dtype=np.int64)
        self._slot[key] = slot
        self._norm_at[slot] = 0
        arrays = self._arrays
        for token in tokens:
            self._df[token] = self._df.get(token, 0) + 1
            posting = self._postings.get(token)
            if posting is None:
                posting = self._postings[token] = {}
            posting[key] = None
            evicted = len(posting) > self.max_postings
            if evicted:
                del posting[next(iter(posting))]
            array = arrays.pop(token, None)
            if array is not None and self._patch:  # newest first: the oldest is last
                arrays[token] = np.concatenate(((slot,), array[:-1] if evicted else array))
        category = (item.category or "").lower()
        self._category[key] = category
        if item.in_stock:
            self._stocked.setdefault(category, {})[key] = None

    def _norm(self, key: str) -> float:
        """The item's vector norm, recomputed when the catalog size moved 2x since."""
        slot = self._slot[key]
        at = int(self._norm_at[slot])
        n = len(self._tokens)
        if at and at <= 2 * n and n <= 2 * at:
            return float(self._norm_val[slot])
        idf = self._idf
        tokens = self._tokens[key]
        norm = math.sqrt(sum((w * idf(t)) ** 2 for t, w in tokens.items())) or 1.0
        self._norm_val[slot] = norm
        self._norm_at[slot] = n
        return norm

    def _posting_array(self, token: str) -> npt.NDArray[np.int64]:
        """The token's postings as slots, newest first. An update of up to
        `PATCH_BATCH` items patches the arrays it touches (O(postings) in C per token);
        a larger one drops them, and the first lookup that reads one rebuilds it
        (O(postings) in Python, once)."""
        array = self._arrays.get(token)
        if array is None:
            posting = self._postings[token]
            array = self._arrays[token] = np.fromiter(
                map(self._slot.__getitem__, reversed(posting)), dtype=np.int64, count=len(posting)
            )
        return array

    def _remove(self, key: str) -> bool:
        tokens = self._tokens.pop(key, None)
        if tokens is None:
            return False
        arrays = self._arrays
        slot = self._slot[key]
        for token in tokens:
            left = self._df[token] - 1
            posting = self._postings.get(token)
            if posting is not None and posting.pop(key, 0) is None:
                array = arrays.pop(token, None)
                if array is not None and self._patch:
                    arrays[token] = array[array != slot]
            if left <= 0:
                del self._df[token]
                self._postings.pop(token, None)
                arrays.pop(token, None)
            else:
                self._df[token] = left
        del self._slot[key]
        self._ids[slot] = ""
        self._free.append(slot)
        del self._in_stock[key]
        category = self._category.pop(key)
        stocked = self._stocked.get(category)
        if stocked is not None:
            stocked.pop(key, None)
            if not stocked:
                del self._stocked[category]
        self._cache.pop(key, None)
        return True

    # --- queries

    def in_stock(self, item_id: str) -> bool:
        return self._in_stock.get(item_id, False)

    def related(self, item_id: str, n: int) -> list[tuple[str, float]]:
        """Up to n in-stock items most similar to item_id (never itself), best first;
        [] for an item the index does not hold. O(n) from the cache (plus one `_score`
        when the item's list is not cached)."""
        stocked = self._in_stock
        out: list[tuple[str, float]] = []
        for b, s in self._neighbours(item_id)[0]:
            if len(out) >= n:
                break
            if stocked.get(b, False):
                out.append((b, s))
        return out

    def related_to(
        self, recent: Sequence[str], n: int, context: int = 3
    ) -> list[tuple[str, float]]:
        """Related items of a session: the related lists of its newest `context`
        distinct catalog items (newest first, j = 1, 2, ...), each score divided by j,
        summed; never one of those items.

        Per call, from the cache: O(context + neighbours * context) dict operations
        and one sort of at most `neighbours * context` keys in C; the newest anchor's
        list is copied as a dict (no per-entry Python work), the others are added
        entry by entry."""
        anchors: list[str] = []
        tokens = self._tokens
        for item in reversed(recent):
            if item not in anchors and item in tokens:
                anchors.append(item)
                if len(anchors) >= context:
                    break
        if len(anchors) == 1:  # the sum of one list is that list
            return self.related(anchors[0], n)
        if not anchors:
            return []
        scores = dict(self._neighbours(anchors[0])[1])
        get = scores.get
        for j, anchor in enumerate(anchors[1:], 2):
            for b, s in self._neighbours(anchor)[0]:
                scores[b] = get(b, 0.0) + s / j
        for a in anchors:
            scores.pop(a, None)
        stocked = self._in_stock
        out: list[tuple[str, float]] = []
        # a stable sort: ties keep the order first met, as heapq.nlargest would
        for b in sorted(scores, key=scores.__getitem__, reverse=True):
            if stocked.get(b, False):
                out.append((b, scores[b]))
                if len(out) >= n:
                    break
        return out

    def _neighbours(self, item_id: str) -> tuple[list[tuple[str, float]], dict[str, float]]:
        """The item's best `neighbours` (best first, and as a dict), from the cache
        while the tokens did not change or the entry is younger than `refresh_s`:
        O(1) on a hit, `_score` + O(neighbours) on a miss."""
        now = self._clock()
        cached = self._cache.get(item_id)
        if cached is not None and (
            cached[0] == self.content_generation or now - cached[1] < self.refresh_s
        ):
            self._cache.move_to_end(item_id)
            return cached[2], cached[3]
        best = self._score(item_id)
        as_dict = dict(best)
        self._cache.pop(item_id, None)  # (re)inserted as the newest
        self._cache[item_id] = (self.content_generation, now, best, as_dict)
        if len(self._cache) > self.cache_items:
            self._cache.popitem(last=False)
        return best, as_dict

    def _score(self, item_id: str) -> list[tuple[str, float]]:
        """The item's best `neighbours` by cosine, uncached: O(tokens of the item) in
        Python and O(scan) in array operations (plus O(postings) per token whose
        array a change made stale)."""
        tokens = self._tokens.get(item_id)
        if not tokens:
            return []
        # A token belongs to one field (its prefix), so it has the same weight w in
        # every item: each shared token adds (w * idf)^2 to the dot product.
        gain = {t: (w * self._idf(t)) ** 2 for t, w in tokens.items()}
        # rarest and heaviest tokens first: they say the most, and the scan budget is
        # spent on them before the broad ones
        order = sorted(gain, key=gain.__getitem__, reverse=True)
        parts: list[npt.NDArray[np.int64]] = []
        gains: list[float] = []
        lengths: list[int] = []
        budget = self.scan
        for token in order:
            if budget <= 0:
                break
            if token not in self._postings:
                continue
            part = self._posting_array(token)[:budget]  # the newest postings first
            parts.append(part)
            gains.append(gain[token])
            lengths.append(len(part))
            budget -= len(part)
        if not parts:
            return []
        slots = np.concatenate(parts)  # [postings read]
        weights = np.repeat(np.asarray(gains), lengths)  # [postings read]
        position = np.arange(len(slots))  # [postings read]
        # per-item scratch (zero / _UNSEEN between lookups): sum the gains per item and
        # note where each item first appears, without sorting the postings read
        acc, first = self._acc, self._first
        np.add.at(acc, slots, weights)
        np.minimum.at(first, slots, position)
        cand = slots[first[slots] == position]  # [candidates], in order of first appearance
        dots = acc[cand]  # [candidates]
        acc[slots] = 0.0
        first[slots] = _UNSEEN
        keep = cand != self._slot[item_id]
        cand, dots = cand[keep], dots[keep]
        if not len(cand):
            return []
        n = len(self._tokens)
        at = self._norm_at[cand]
        stale = np.flatnonzero((at == 0) | (at > 2 * n) | (2 * at < n))
        ids = self._ids
        for i in stale.tolist():  # rare: a new item, or the catalog moved 2x
            self._norm(ids[int(cand[i])])
        scores = dots / (self._norm(item_id) * self._norm_val[cand])  # [candidates]
        m = self.neighbours
        if len(scores) > m:  # the best m (and any tied with the m-th), then sort
            kth = np.partition(scores, len(scores) - m)[len(scores) - m]
            top = np.flatnonzero(scores >= kth)
        else:
            top = np.arange(len(scores))
        # ties: the first read first (a rarer token, a newer item), as a scan would
        best = top[np.argsort(-scores[top], kind="stable")][:m]
        return [
            (ids[c], v) for c, v in zip(cand[best].tolist(), scores[best].tolist(), strict=True)
        ]

    def home(self, n: int) -> list[str]:
        """The cold-start list: n in-stock items, round-robin over the largest
        categories, newest first in each. O(kept list) per call; rebuilt at most every
        `refresh_s` after a change, at O(categories + n)."""
        generation, built, items = self._home
        now = self._clock()
        if generation != self.generation and (len(items) < n or now - built >= self.refresh_s):
            items = self._build_home(max(n, 100))
            self._home = (self.generation, now, items)
        stocked = self._in_stock  # a list kept for up to refresh_s: re-check stock
        return [i for i in items if stocked.get(i, False)][:n]

    def _build_home(self, n: int) -> list[str]:
        groups = heapq.nlargest(n, self._stocked.items(), key=lambda kv: (len(kv[1]), kv[0]))
        iters = [reversed(members) for _, members in groups]
        out: list[str] = []
        while iters and len(out) < n:
            alive = []
            for it in iters:
                nxt = next(it, None)
                if nxt is not None:
                    out.append(nxt)
                    alive.append(it)
                    if len(out) >= n:
                        break
            iters = alive
        return out
