"""An item's cached strongest co-occurrence neighbours, kept current by edge updates.

Owns: `Strongest`, the list the online recommender (online.py) reads for a context
item instead of weighing every neighbour of it on every list: the strongest `n`
neighbours b by weight cooc[item][b] / (occ[b] + shrink)^beta, built from all the
item's neighbours by `Strongest.build` and then told of every change of one of the
item's edges (`follow`), which keeps it the strongest `n` by the weights as evaluated,
or says that only a new `build` can tell.

How it stays exact without seeing the neighbours left out: their weights are not
stored, only `ceiling`, at least the largest of them. A neighbour left out is evaluated
again only when its edge changes (`follow`), and then it either enters the list
(displacing the weakest member, whose weight raises `ceiling`) or raises `ceiling`
itself; a member whose new weight falls below `ceiling` may now be weaker than one
left out, so `follow` returns False and the owner rebuilds the list.

No asyncio, no I/O; O(1) per `follow`, O(n) when a neighbour left out may enter
(its weight is above `floor`, a lower bound of the members'), O(m log m) per `build`
of m neighbours.
"""

from __future__ import annotations

import math
from itertools import islice

__all__ = ["Strongest"]


class Strongest:
    """One item's strongest neighbours with their weights (see the module)."""

    __slots__ = ("at", "ceiling", "drops", "epoch", "floor", "n", "weights")

    def __init__(
        self, n: int, at: float, epoch: int, drops: int, weights: dict[str, float]
    ) -> None:
        """`weights`: every neighbour's weight, in the neighbours' order (ties keep
        it); the strongest `n` of them are kept."""
        self.n = n
        self.at = at  # when built (the owner's clock)
        self.epoch = epoch  # the owner's decay epoch of the weights
        self.drops = drops  # the owner's count of dropped items when last checked
        self.ceiling = -math.inf  # >= every weight left out (-inf: none is)
        if len(weights) > n:  # sorted (C) beats heapq.nlargest (Python) here
            best = sorted(weights, key=weights.__getitem__, reverse=True)
            self.ceiling = weights[best[n]]
            weights = {b: weights[b] for b in best[:n]}
        self.weights = weights
        # <= every member's weight: a neighbour left out at or below it stays out
        # without a look at the members (after a member leaves, the old least weight
        # still bounds the new one)
        self.floor = -math.inf

    def follow(self, b: str, w: float) -> bool:
        """Neighbour b's weight is now w. False when the list can no longer tell
        whether it holds the strongest `n` (rebuild it)."""
        weights = self.weights
        if b in weights:
            if w < self.ceiling:  # a neighbour left out may now be stronger
                return False
            weights[b] = w
            if w < self.floor:
                self.floor = w
        elif len(weights) < self.n:  # every neighbour is in the list
            weights[b] = w
            if w < self.floor:
                self.floor = w
        else:
            if w > self.floor:
                least = min(weights.values())
                self.floor = least
                if w > least:  # b displaces the first member of least weight
                    values = list(weights.values())
                    del weights[next(islice(weights, values.index(least), None))]
                    weights[b] = w
                    w = least  # the weight of the member that left
            if w > self.ceiling:  # one left out
                self.ceiling = w
        return True
