"""Baseline next-item scorers for offline evaluation (all implement `StepScorer`).

Owns: `Popularity`, `ItemKNN`, `MarkovChain`, `VSKNN` and `make_baseline`. Each is
fitted on training `Sessions` with the `ItemIndex` of the model it is compared to
(items outside the index are ignored) and scores all items of that index.

- `Popularity`: training event counts, the same list for everyone.
- `ItemKNN` (Hidasi et al. 2016, item-kNN baseline): items similar to the last item,
  sim(i, j) = c(i, j) / ((c(i) + lambda)^alpha * (c(j) + lambda)^(1 - alpha)) where
  c(i) counts the training sessions holding i and c(i, j) those holding both;
  alpha = 0.5 is the cosine, lambda (default 20) damps rare items; sim(i, i) = 0.
- `MarkovChain`: first-order transition counts last item -> next item. Ties (most
  often at count 0) are broken by training popularity, a term too small to change
  any order of counts (`pop_tiebreak=True`, the default; this is the floor quoted
  in docs/model-quality.md, 0.347 Recall@20 on Diginetica; without it ties count
  against the target and Recall@20 drops to 0.307).
- `VSKNN` (Ludewig & Jannach 2018, "vector multiplication" session-kNN, defaults of
  session-rec's `vsknn`): candidates are the `sample_size` most recent training
  sessions sharing an item with the current session; the current session is a
  vector with linearly decaying weights (position p of L gets p/L, the latest
  occurrence of an item counts); similarity = dot product with the binary
  neighbour vector / number of distinct current items; the `k` most similar
  neighbours add sim / step to each of their items, where step is how far back
  (1 = the last item) the most recent current item they share lies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .data import ItemIndex, Sessions, concat_ranges, encode

BASELINES = ("pop", "iknn", "vsknn", "markov")


def _encoded(train: Sessions, item_index: ItemIndex) -> tuple[np.ndarray, np.ndarray]:
    offsets, codes, _ = encode(train, item_index, min_length=1)
    return offsets, codes


def _distinct(offsets: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR (offsets, items) of the distinct items of each session, items sorted."""
    sess = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    n = int(codes.max()) + 1 if len(codes) else 1
    keys = np.unique(sess * n + codes)
    s, items = keys // n, keys % n
    out = np.zeros(len(offsets), dtype=np.int64)
    np.cumsum(np.bincount(s, minlength=len(offsets) - 1), out=out[1:])
    return out, items


@dataclass(slots=True)
class _CSR:
    """Rows of a sparse (n_items, n_items) float32 matrix."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray

    @classmethod
    def from_pairs(cls, rows: np.ndarray, cols: np.ndarray, n: int) -> _CSR:
        """Counts of each distinct (row, col) pair."""
        keys, counts = np.unique(rows * n + cols, return_counts=True)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(keys // n, minlength=n), out=indptr[1:])
        return cls(indptr, keys % n, counts.astype(np.float32))

    def dense_rows(self, items: np.ndarray, n: int) -> np.ndarray:
        """(len(items), n) float32: row `items[r]` in row r."""
        out = np.zeros((len(items), n), dtype=np.float32)
        lengths = self.indptr[items + 1] - self.indptr[items]
        g = concat_ranges(self.indptr[items], lengths)
        out[np.repeat(np.arange(len(items)), lengths), self.indices[g]] = self.data[g]
        return out

    def keep_top(self, n_top: int) -> None:
        """Keep the `n_top` largest values of each row."""
        row = np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))
        order = np.lexsort((-self.data, row))
        rank = np.arange(len(order)) - self.indptr[row[order]]
        keep = np.sort(order[rank < n_top])
        self.indices, self.data = self.indices[keep], self.data[keep]
        np.cumsum(np.bincount(row[keep], minlength=len(self.indptr) - 1), out=self.indptr[1:])


class Popularity:
    """Most frequent training items, for every session alike."""

    name = "pop"

    def __init__(self) -> None:
        self.n_items = 0
        self.scores = np.zeros(0, dtype=np.float32)

    def fit(self, train: Sessions, item_index: ItemIndex) -> Popularity:
        _, codes = _encoded(train, item_index)
        self.n_items = len(item_index)
        self.scores = np.bincount(codes, minlength=self.n_items).astype(np.float32)
        return self

    def reset(self, n_slots: int) -> None:
        pass

    def step(self, slots: np.ndarray, items: np.ndarray, new: np.ndarray) -> np.ndarray:
        return np.tile(self.scores, (len(slots), 1))


class ItemKNN:
    """Item-to-item cosine neighbours of the last item (Hidasi et al. 2016)."""

    name = "iknn"

    def __init__(self, lmbd: float = 20.0, alpha: float = 0.5, n_sims: int | None = None) -> None:
        self.lmbd, self.alpha, self.n_sims = lmbd, alpha, n_sims
        self.n_items = 0
        self.sims = _CSR(np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))

    def fit(self, train: Sessions, item_index: ItemIndex) -> ItemKNN:
        offsets, codes = _encoded(train, item_index)
        self.n_items = n = len(item_index)
        d_off, d_items = _distinct(offsets, codes)
        lengths = np.diff(d_off)
        sess = np.repeat(np.arange(len(lengths)), lengths)
        left = np.repeat(np.arange(len(d_items)), lengths[sess])  # every pair in a session
        right = concat_ranges(d_off[sess], lengths[sess])
        other = left != right
        sims = _CSR.from_pairs(d_items[left[other]], d_items[right[other]], n)
        support = np.bincount(d_items, minlength=n).astype(np.float64) + self.lmbd
        row = np.repeat(np.arange(n), np.diff(sims.indptr))
        norm = support[row] ** self.alpha * support[sims.indices] ** (1.0 - self.alpha)
        sims.data = (sims.data / np.maximum(norm, 1e-12)).astype(np.float32)
        if self.n_sims is not None:
            sims.keep_top(self.n_sims)
        self.sims = sims
        return self

    def reset(self, n_slots: int) -> None:
        pass

    def step(self, slots: np.ndarray, items: np.ndarray, new: np.ndarray) -> np.ndarray:
        return self.sims.dense_rows(items, self.n_items)


class MarkovChain:
    """First-order Markov chain: how often each item followed the last item."""

    name = "markov"

    def __init__(self, pop_tiebreak: bool = True) -> None:
        self.pop_tiebreak = pop_tiebreak
        self.n_items = 0
        self.counts = _CSR(np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
        self.prior = np.zeros(0, dtype=np.float32)

    def fit(self, train: Sessions, item_index: ItemIndex) -> MarkovChain:
        offsets, codes = _encoded(train, item_index)
        self.n_items = n = len(item_index)
        follows = np.ones(len(codes), dtype=bool)  # event t has a successor in its session
        follows[offsets[1:] - 1] = False
        src = np.flatnonzero(follows)
        self.counts = _CSR.from_pairs(codes[src], codes[src + 1], n)
        pop = np.bincount(codes, minlength=n).astype(np.float64)
        # below 1/2: never reorders two different (integer) counts
        self.prior = (0.5 * pop / (pop.max() + 1.0)).astype(np.float32)
        return self

    def reset(self, n_slots: int) -> None:
        pass

    def step(self, slots: np.ndarray, items: np.ndarray, new: np.ndarray) -> np.ndarray:
        out = self.counts.dense_rows(items, self.n_items)
        if self.pop_tiebreak:
            out += self.prior
        return out


@dataclass(slots=True)
class _KnnState:
    items: list[int] = field(default_factory=list)
    relevant: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


class VSKNN:
    """Vector-multiplication session-kNN (Ludewig & Jannach 2018)."""

    name = "vsknn"

    def __init__(self, k: int = 100, sample_size: int = 5000) -> None:
        self.k, self.sample_size = k, sample_size
        self.n_items = 0
        self.states: list[_KnnState] = []
        empty = np.zeros(1, dtype=np.int64)
        self.s_ptr, self.s_items = empty, empty[:0]  # session -> distinct items
        self.i_ptr, self.i_sess = empty, empty[:0]  # item -> sessions, oldest first

    def fit(self, train: Sessions, item_index: ItemIndex) -> VSKNN:
        offsets, codes, kept = encode(train, item_index, min_length=1)
        self.n_items = n = len(item_index)
        # number sessions by recency (last event; file order without times) so that
        # "the most recent sessions" are simply the largest numbers
        ends = train.end_times()[kept] if train.timed else np.arange(len(kept), dtype=float)
        by_recency = np.argsort(ends, kind="stable")
        lengths = np.diff(offsets)[by_recency]
        codes = codes[concat_ranges(offsets[by_recency], lengths)]
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        self.s_ptr, self.s_items = _distinct(offsets, codes)
        sess = np.repeat(np.arange(len(self.s_ptr) - 1), np.diff(self.s_ptr))
        order = np.lexsort((sess, self.s_items))
        self.i_sess = sess[order]
        self.i_ptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.s_items, minlength=n), out=self.i_ptr[1:])
        return self

    def reset(self, n_slots: int) -> None:
        self.states = [_KnnState() for _ in range(n_slots)]

    def step(self, slots: np.ndarray, items: np.ndarray, new: np.ndarray) -> np.ndarray:
        out = np.zeros((len(slots), self.n_items), dtype=np.float32)
        for r, (slot, item, fresh) in enumerate(
            zip(slots.tolist(), items.tolist(), new.tolist(), strict=True)
        ):
            state = self.states[slot]
            if fresh:
                state.items, state.relevant = [], np.zeros(0, dtype=np.int64)
            if item not in state.items:
                state.relevant = np.union1d(state.relevant, self._sessions_of(item))
            state.items.append(item)
            out[r] = self._score(state)
        return out

    def _sessions_of(self, item: int) -> np.ndarray:
        return self.i_sess[self.i_ptr[item] : self.i_ptr[item + 1]]

    def _score(self, state: _KnnState) -> np.ndarray:
        cand = state.relevant[-self.sample_size :]  # the most recent ones
        if len(cand) == 0:
            return np.zeros(self.n_items, dtype=np.float32)
        length = len(state.items)
        last = {it: p for p, it in enumerate(state.items)}  # latest position of each item
        sim = np.zeros(len(cand), dtype=np.float64)
        step = np.full(len(cand), np.inf)
        for it, p in last.items():
            s = self._sessions_of(it)
            s = s[np.searchsorted(s, cand[0]) :]
            loc = np.searchsorted(cand, s)
            loc = loc[cand[np.minimum(loc, len(cand) - 1)] == s]
            sim[loc] += (p + 1) / length  # loc holds distinct candidates
            step[loc] = np.minimum(step[loc], length - p)
        sim /= len(last)
        if len(cand) > self.k:
            nb = np.argpartition(-sim, self.k - 1)[: self.k]
        else:
            nb = np.arange(len(cand))
        nb = nb[sim[nb] > 0]
        sessions = cand[nb]
        lengths = self.s_ptr[sessions + 1] - self.s_ptr[sessions]
        g = concat_ranges(self.s_ptr[sessions], lengths)
        weights = np.repeat(sim[nb] / step[nb], lengths)
        scores: np.ndarray = np.bincount(self.s_items[g], weights=weights, minlength=self.n_items)
        return scores.astype(np.float32)


def make_baseline(
    name: str, train: Sessions, item_index: ItemIndex
) -> Popularity | ItemKNN | VSKNN | MarkovChain:
    """A fitted baseline by name: pop, iknn, vsknn or markov."""
    if name == "pop":
        return Popularity().fit(train, item_index)
    if name == "iknn":
        return ItemKNN().fit(train, item_index)
    if name == "vsknn":
        return VSKNN().fit(train, item_index)
    if name == "markov":
        return MarkovChain().fit(train, item_index)
    raise ValueError(f"unknown baseline {name!r}; one of {', '.join(BASELINES)}")
