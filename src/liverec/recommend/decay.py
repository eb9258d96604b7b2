"""Time-decayed values without per-item decay work, and the incremental top set.

Owns: `Decay`, exponential decay read against a reference time t0 (values are stored
in t0's units; an event at t adds w * exp(rate * (t - t0)); every value decays alike,
so comparing stored values compares decayed ones) which moves on in epochs before
exp() could overflow, and `TopSet`, the most popular items kept exact as values grow,
so that no list ever ranks every item.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable
from operator import itemgetter
from typing import Final

_MAX_EXPONENT: Final = 300.0  # exp(300) ~ 1e130, far from overflow (exp(709))
_by_score = itemgetter(1)


def _by_score_desc(kv: tuple[str, float]) -> float:
    return -kv[1]


Filter = Callable[[str], bool]


class Decay:
    """Exponential decay read against a reference time t0 that moves on in epochs."""

    __slots__ = ("_t0s", "epoch", "rate", "t0")

    def __init__(self, half_life_s: float, t0: float) -> None:
        self.rate = math.log(2.0) / half_life_s
        self.t0 = t0
        self.epoch = 0
        self._t0s = [t0]  # t0 of each epoch (one more every ~430 half-lives)

    def gain(self, t: float) -> float:
        """What one unit of weight at time t is worth in stored units."""
        return math.exp(self.rate * (t - self.t0))

    def to_now(self, now: float) -> float:
        """Multiply a stored value by this to get its decayed value at `now`."""
        return math.exp(-self.rate * (now - self.t0))

    def due(self, t: float) -> bool:
        return self.rate * (t - self.t0) > _MAX_EXPONENT

    def advance(self, t: float) -> float:
        """Start a new epoch at t; returns the factor converting current values."""
        factor = math.exp(-self.rate * (t - self.t0))  # 0.0 after a very long gap
        self.t0 = t
        self.epoch += 1
        self._t0s.append(t)
        return factor

    def carry(self, epoch: int) -> float:
        """The factor converting a value stored in `epoch` to the current epoch."""
        return math.exp(-self.rate * (self.t0 - self._t0s[epoch]))


class TopSet:
    """Candidates for the most popular items, kept exact without scanning all items.

    Invariant: every item outside `members` (that `keep` accepts) has a stored
    popularity <= `floor` <= every member's. Stored popularity only grows (epoch
    conversions are uniform), so an item that rises above the floor joins, and
    trimming keeps the best `size`."""

    __slots__ = ("dirty", "floor", "keep", "members", "size", "sorted", "sorted_at")

    def __init__(self, size: int, keep: Filter | None = None) -> None:
        self.size = size
        self.keep = keep
        self.members: dict[str, float] = {}
        self.floor = 0.0
        self.sorted: list[tuple[str, float]] = []
        self.sorted_at = -math.inf
        self.dirty = False

    def bump(self, key: str, pop: float) -> None:
        if key in self.members:
            self.members[key] = pop
            self.dirty = True  # its rank may change: re-sorted within refresh_s
        elif pop > self.floor:
            # a new member is ranked at once (O(size) insert), so a list never misses
            # an item for up to refresh_s, e.g. a new store's first items
            self.members[key] = pop
            bisect.insort(self.sorted, (key, pop), key=_by_score_desc)
            self.dirty = True
            if len(self.members) > 2 * self.size:
                self._trim()

    def _trim(self) -> None:
        members = self.members.items()
        if self.keep is not None:  # drop what the filter refuses now (out of stock)
            keep = self.keep
            members = [kv for kv in members if keep(kv[0])]  # type: ignore[assignment]
        best = heapq.nlargest(self.size, members, key=_by_score)
        self.members = dict(best)
        self.sorted = best  # nlargest is best first
        if len(best) >= self.size:
            self.floor = best[-1][1]
        self.dirty = True

    def remove(self, key: str) -> None:
        if self.members.pop(key, None) is not None:
            self.sorted = [kv for kv in self.sorted if kv[0] != key]
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
