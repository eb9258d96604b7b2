"""Session data: the in-memory layout every model and baseline reads, and loaders.

Owns: `Sessions` (events grouped by session in CSR form, time-ordered inside each
session), `ItemIndex` (string item id <-> dense int index), and the loaders for the
supported file layouts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


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

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def session(self, s: int) -> np.ndarray:
        return self.items[self.offsets[s] : self.offsets[s + 1]]

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
