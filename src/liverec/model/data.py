"""Session data: the in-memory layout every model and baseline reads.

Owns: `Sessions` (events grouped by session in CSR form, time-ordered inside each
session), `ItemIndex` (string item id <-> dense int index), `encode` (int sessions
for a given index), `build_sessions` (flat events into `Sessions`, by the order
below), `fingerprint` and `DataError`. Reading and writing files in the supported
layouts is formats.py's.

Order: sessions by start time (ties: order of first appearance in the file), events
inside a session by time (ties: file order). Where any event lacks a time the data
is treated as untimed: sessions keep the order of their first appearance, events
their file order, and every time is NaN.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LiverecError


class DataError(LiverecError):
    """A data file is missing, unreadable or not in the expected layout."""


@dataclass(slots=True)
class Sessions:
    """Events grouped by session: session s holds items[offsets[s]:offsets[s+1]].

    Sessions are ordered by their start time (file order when there is no time);
    events inside a session are in time order. Item ids are the strings found in
    the data. `times` is NaN where the source has no timestamps.
    """

    session_ids: np.ndarray  # (S,) str
    offsets: np.ndarray  # (S+1,) int64
    items: np.ndarray  # (N,) str
    times: np.ndarray  # (N,) float64 epoch seconds or NaN

    @property
    def n_sessions(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_events(self) -> int:
        return int(self.offsets[-1])

    @property
    def timed(self) -> bool:
        """True when every event has a timestamp (and there is at least one event)."""
        return self.n_events > 0 and not bool(np.isnan(self.times).any())

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def session(self, s: int) -> np.ndarray:
        return self.items[self.offsets[s] : self.offsets[s + 1]]

    def session_index(self) -> np.ndarray:
        """(N,) int64: the session number of every event."""
        return np.repeat(np.arange(self.n_sessions, dtype=np.int64), self.lengths())

    def select(self, keep: np.ndarray) -> Sessions:
        """The sessions picked by a boolean mask (S,) or an index array, in that order."""
        idx = np.flatnonzero(keep) if keep.dtype == np.bool_ else np.asarray(keep, np.int64)
        lengths = self.lengths()[idx]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        gather = concat_ranges(self.offsets[idx], lengths)
        return Sessions(self.session_ids[idx], offsets, self.items[gather], self.times[gather])

    def filter_events(self, keep: np.ndarray, min_length: int = 1) -> Sessions:
        """Keep the events where `keep` (N,) is True, then drop sessions shorter than
        `min_length`."""
        sess = self.session_index()[keep]
        lengths = np.bincount(sess, minlength=self.n_sessions).astype(np.int64)
        offsets = np.zeros(self.n_sessions + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        out = Sessions(self.session_ids, offsets, self.items[keep], self.times[keep])
        return out.select(lengths >= min_length) if min_length > 0 else out

    def start_times(self) -> np.ndarray:
        """(S,) time of the first event of each session (NaN if untimed or empty)."""
        out = np.full(self.n_sessions, np.nan)
        nonempty = self.lengths() > 0
        out[nonempty] = self.times[self.offsets[:-1][nonempty]]
        return out

    def end_times(self) -> np.ndarray:
        """(S,) time of the last event of each session (NaN if untimed or empty)."""
        out = np.full(self.n_sessions, np.nan)
        nonempty = self.lengths() > 0
        out[nonempty] = self.times[self.offsets[1:][nonempty] - 1]
        return out

    @classmethod
    def from_lists(
        cls,
        sessions: Sequence[Sequence[str]],
        session_ids: Sequence[str] | None = None,
        times: Sequence[Sequence[float]] | None = None,
    ) -> Sessions:
        lengths = np.fromiter((len(s) for s in sessions), dtype=np.int64, count=len(sessions))
        offsets = np.zeros(len(sessions) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = [str(i) for s in sessions for i in s]
        items = np.array(flat, dtype=str) if flat else np.array([], dtype="<U1")
        if times is None:
            t = np.full(len(flat), np.nan)
        else:
            t = np.array([float(x) for s in times for x in s], dtype=np.float64)
        ids = (
            np.array([str(s) for s in session_ids], dtype=str)
            if session_ids is not None
            else np.array([str(i) for i in range(len(sessions))], dtype=str)
        )
        return cls(ids, offsets, items, t)


class ItemIndex:
    """Dense int index of item ids (the vocabulary of a model)."""

    def __init__(self, ids: Iterable[str]) -> None:
        self.ids: list[str] = list(ids)
        self.index: dict[str, int] = {s: i for i, s in enumerate(self.ids)}
        if len(self.index) != len(self.ids):
            raise ValueError("duplicate item ids in ItemIndex")

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item: object) -> bool:
        return item in self.index

    @classmethod
    def from_sessions(cls, sessions: Sessions) -> ItemIndex:
        """Items in order of first appearance."""
        _, first = np.unique(sessions.items, return_index=True)
        return cls(sessions.items[np.sort(first)].tolist())

    def encode(self, items: Iterable[str]) -> np.ndarray:
        """int64 indices, -1 for unknown items."""
        get = self.index.get
        return np.fromiter((get(str(i), -1) for i in items), dtype=np.int64)

    def add(self, item: str) -> int:
        """Grow the vocabulary (used by continuous learning); returns the index."""
        idx = self.index.get(item)
        if idx is None:
            idx = len(self.ids)
            self.ids.append(item)
            self.index[item] = idx
        return idx


def encode(
    sessions: Sessions, item_index: ItemIndex, min_length: int = 2, n_items: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer sessions for a model: `(offsets (S'+1,), items (N',) int64, kept (S',))`.

    Items unknown to `item_index` (or with an index >= `n_items`) are dropped, then
    sessions shorter than `min_length`; `kept` holds the original session numbers.
    """
    codes = _encode_fast(sessions.items, item_index)
    limit = len(item_index) if n_items is None else min(n_items, len(item_index))
    keep = (codes >= 0) & (codes < limit)
    sess = sessions.session_index()[keep]
    lengths = np.bincount(sess, minlength=sessions.n_sessions).astype(np.int64)
    kept = np.flatnonzero(lengths >= max(min_length, 1))
    event_keep = np.isin(sess, kept)
    lengths = lengths[kept]
    offsets = np.zeros(len(kept) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets, codes[keep][event_keep], kept


def _encode_fast(items: np.ndarray, item_index: ItemIndex) -> np.ndarray:
    """Encode via the distinct values (far fewer dict lookups than events)."""
    if len(items) == 0:
        return np.zeros(0, dtype=np.int64)
    uniq, inverse = np.unique(items, return_inverse=True)
    codes: np.ndarray = item_index.encode(uniq.tolist())[inverse.reshape(-1)]
    return codes


def concat_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(starts[i], starts[i] + lengths[i]) for every i."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    new_starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=new_starts[1:])
    shift = np.repeat(np.asarray(starts, np.int64) - new_starts, lengths)
    out: np.ndarray = np.arange(total, dtype=np.int64) + shift
    return out


# --------------------------------------------------------------------------- building


def build_sessions(
    session_keys: Sequence[str], items: Sequence[str], times: np.ndarray | None = None
) -> Sessions:
    """Group flat events (one entry per event, file order) into `Sessions`.

    Applies the module's ordering rule (see the module docstring)."""
    n = len(session_keys)
    if len(items) != n or (times is not None and len(times) != n):
        raise DataError("session, item and time columns differ in length")
    first: dict[str, int] = {}
    setdefault = first.setdefault
    codes = np.fromiter((setdefault(k, len(first)) for k in session_keys), np.int64, count=n)
    t = np.full(n, np.nan) if times is None else np.asarray(times, dtype=np.float64)
    timed = n > 0 and not bool(np.isnan(t).any())
    if timed:
        order = np.lexsort((t, codes))  # stable: equal times keep file order
    else:
        order = np.argsort(codes, kind="stable")
        t = np.full(n, np.nan)
    lengths = np.bincount(codes, minlength=len(first)).astype(np.int64)
    offsets = np.zeros(len(first) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if timed:
        starts = t[order][offsets[:-1]]
        perm = np.argsort(starts, kind="stable")  # ties: first appearance (= code order)
        order = order[concat_ranges(offsets[perm], lengths[perm])]
        lengths = lengths[perm]
        np.cumsum(lengths, out=offsets[1:])
    else:
        perm = np.arange(len(first))
    ids = np.array(list(first), dtype=str) if first else np.array([], dtype="<U1")
    item_arr = np.array(items, dtype=str) if n else np.array([], dtype="<U1")
    return Sessions(ids[perm], offsets, item_arr[order], t[order])


def fingerprint(source: str | Path | Sessions) -> str:
    """sha256 (hex) of a file's bytes, or of a `Sessions`' ids, order, items and times."""
    h = hashlib.sha256()
    if isinstance(source, Sessions):
        h.update("\x1f".join(source.session_ids.tolist()).encode())
        h.update(np.ascontiguousarray(source.offsets, dtype="<i8").tobytes())
        h.update("\x1f".join(source.items.tolist()).encode())
        h.update(np.ascontiguousarray(source.times, dtype="<f8").tobytes())
        return h.hexdigest()
    p = Path(source)
    try:
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise DataError(f"cannot read {p}: {exc.strerror or exc}") from exc
    return h.hexdigest()
