"""Traffic shapes for the load generator in bench/load.py (used by bench/matrix.py too).

Owns: which item each socket views next, and when the aggregate rate bursts.

* ``structured`` (load.py's default): Zipf popularity over the items, and half of the
  steps go to one of the current item's 8 "related" items (real co-occurrence);
* ``uniform``: every view drawn uniformly from the items;
* ``unseen``: every view an item id never seen before (a new SKU each time);
* ``hot``: one item takes 50% of the views, the rest uniform;
* bursts (any shape): the rate is ``factor`` times the base rate for ``on_s`` seconds
  of every ``period_s``, with the base rate chosen so the mean stays the asked rate
  (each socket's schedule runs on a warped clock, so even a socket that sends less
  than once per burst takes part in it).

Both load generators send what `schedule` says: bench/load.py's Python client draws
it as it goes, bench/loadclient.js (Node) reads it from a file load.py writes first.

No asyncio and no I/O here: plain functions of a seeded `random.Random`.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Iterator, Sequence

RELATED = 8  # related items per catalog item
P_RELATED = 0.5  # share of steps that follow a related item
P_HOT = 0.5  # share of views that go to the hot item
SHAPES = ("structured", "uniform", "unseen", "hot")


class Catalog:
    """Zipf popularity over `n` items (random rank order) and fixed related items."""

    def __init__(self, n: int, zipf_s: float, seed: int, fmt: str = "item-{}") -> None:
        rnd = random.Random(seed)
        self.ids = [fmt.format(i) for i in range(n)]
        order = list(range(n))
        rnd.shuffle(order)
        self.by_rank = order
        weights = [1.0 / (r + 1) ** zipf_s for r in range(n)]
        total, acc, cdf = sum(weights), 0.0, []
        for w in weights:
            acc += w
            cdf.append(acc / total)
        self.cdf = cdf
        self.related = [[rnd.randrange(n) for _ in range(RELATED)] for _ in range(n)]

    def draw(self, rnd: random.Random) -> int:
        return self.by_rank[min(len(self.cdf) - 1, bisect.bisect_left(self.cdf, rnd.random()))]

    def step(self, current: int | None, rnd: random.Random) -> int:
        if current is not None and rnd.random() < P_RELATED:
            return self.related[current][rnd.randrange(RELATED)]
        return self.draw(rnd)


def walker(
    shape: str, ids: Sequence[str], catalog: Catalog | None, rnd: random.Random, tag: str
) -> Callable[[], str]:
    """The item ids one socket views, one per call. `tag` makes `unseen` ids unique
    across sockets and processes; `catalog` is needed for `structured`."""
    if shape == "structured":
        assert catalog is not None
        current: list[int | None] = [None]

        def structured() -> str:
            current[0] = catalog.step(current[0], rnd)
            return catalog.ids[current[0]]

        return structured
    if shape == "uniform":
        return lambda: ids[rnd.randrange(len(ids))]
    if shape == "hot":
        return lambda: ids[0] if rnd.random() < P_HOT else ids[rnd.randrange(len(ids))]
    if shape == "unseen":
        counter = [0]

        def unseen() -> str:
            counter[0] += 1
            return f"new-{tag}-{counter[0]}"

        return unseen
    raise ValueError(f"unknown traffic shape {shape!r} (one of {', '.join(SHAPES)})")


def next_due(due: float, mean: float, rnd: random.Random, burst: Sequence[float] | None) -> float:
    """The next send time of a socket whose mean interval is `mean` seconds (uniform
    jitter +-50%). With `burst` = (factor, on_s, period_s) the socket's clock is warped:
    the rate is `factor` times the base rate in the first `on_s` of every period, and
    the base rate is such that the mean over a period is unchanged."""
    if not burst:
        return due + mean * (0.5 + rnd.random())
    return unwarp(warp(due, burst) + mean * (0.5 + rnd.random()), burst)


def warp(t: float, burst: Sequence[float]) -> float:
    """Cumulative intensity: seconds of mean-rate traffic sent by time `t`."""
    factor, on_s, period_s = burst
    base = period_s / (period_s - on_s + factor * on_s)  # the base rate / the mean rate
    k, x = divmod(t, period_s)
    return k * period_s + base * factor * min(x, on_s) + base * max(0.0, x - on_s)


def unwarp(u: float, burst: Sequence[float]) -> float:
    """The inverse of `warp`."""
    factor, on_s, period_s = burst
    base = period_s / (period_s - on_s + factor * on_s)
    k, y = divmod(u, period_s)
    y_on = base * factor * on_s
    x = y / (base * factor) if y < y_on else on_s + (y - y_on) / base
    return k * period_s + x


def schedule(
    shape: str,
    catalog: Catalog,
    seed: int,
    socket: int,
    tag: str,
    mean: float,
    end: float,
    burst: Sequence[float] | None,
) -> Iterator[tuple[float, str]]:
    """One socket's sends until `end`: (seconds from the start, item id), a random
    phase first, then one every `mean` seconds (see `next_due`)."""
    rnd = random.Random(seed * 1_000_003 + socket)
    next_item = walker(shape, catalog.ids, catalog, rnd, f"{tag}{socket}")
    due = rnd.random() * mean
    while due < end:
        yield due, next_item()
        due = next_due(due, mean, rnd, burst)


def warm_items(catalog: Catalog, seed: int, n: int) -> list[str]:
    """The items of the warm-up events sent on one socket before the sockets open."""
    rnd, current, out = random.Random(seed), None, []
    for _ in range(n):
        current = catalog.step(current, rnd)
        out.append(catalog.ids[current])
    return out
