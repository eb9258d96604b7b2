"""Cost of the content model against catalog size: one uncached related-items lookup
(and, in the same run, the same lookup scanned with per-posting dict updates as
before the array scan: the baseline), a cached one, one item update, one blended
list (online model + content) per event, and the index's memory per item.

Synthetic catalogs (seeded): 200 categories, 2,000 brands, titles of 3-6 words from
a 5,000-word Zipf vocabulary, prices log-uniform 5-2,000, a colour and a size
attribute. Each size is timed in the same run, so read the ratios between rows and
columns; the figures are medians of `--repeat` rounds. Memory: what the index
allocates (tracemalloc, first round; the catalog objects excluded).

    .venv/bin/python bench/bench_content.py --sizes 10000,100000,300000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import heapq
import math
import random
import statistics
import time
import tracemalloc
from itertools import islice

from liverec.catalog import CatalogItem
from liverec.recommend.base import RecContext
from liverec.recommend.blend import BlendedRecommender
from liverec.recommend.content import ContentIndex
from liverec.recommend.online import OnlineRecommender
from liverec.types import Event


def catalog(n: int, seed: int = 0) -> list[CatalogItem]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(5000)]
    weights = [1.0 / (i + 1) for i in range(5000)]
    out = []
    for i in range(n):
        title = " ".join(rng.choices(words, weights, k=rng.randint(3, 6)))
        out.append(
            CatalogItem(
                item_id=f"i{i}",
                title=title,
                category=f"cat{rng.randrange(200)}",
                brand=f"brand{rng.randrange(2000)}",
                price=round(5 * 400 ** rng.random(), 2),
                attributes=(("color", f"c{rng.randrange(10)}"), ("size", f"s{rng.randrange(20)}")),
            )
        )
    return out


class DictScan(ContentIndex):
    """The baseline: the same index, its lookup scanned posting by posting into a dict."""

    def _score(self, item_id: str) -> list[tuple[str, float]]:
        tokens = self._tokens.get(item_id)
        if not tokens:
            return []
        gain = {t: (w * self._idf(t)) ** 2 for t, w in tokens.items()}
        scores: dict[str, float] = {}
        budget = self.scan
        for token in sorted(gain, key=gain.__getitem__, reverse=True):
            if budget <= 0:
                break
            posting = self._postings.get(token)
            if not posting:
                continue
            for b in islice(reversed(posting), budget):
                scores[b] = scores.get(b, 0.0) + gain[token]
            budget -= min(len(posting), budget)
        scores.pop(item_id, None)
        qn = self._norm(item_id)
        for b, dot in scores.items():
            scores[b] = dot / (qn * self._norm(b))
        best = heapq.nlargest(self.neighbours, scores, key=scores.__getitem__)
        return [(b, scores[b]) for b in best]


def lookup_us(index: ContentIndex, probe: list[int]) -> float:
    t0 = time.perf_counter()
    for i in probe:
        index.related(f"i{i}", 20)
    return (time.perf_counter() - t0) / len(probe) * 1e6


async def measure(n: int, lookups: int, rng: random.Random, memory: bool) -> tuple[float, ...]:
    items = catalog(n)
    gc.collect()
    if memory:  # traced (slower): only in the first round
        tracemalloc.start()
    index = ContentIndex(refresh_s=0.0)
    index.update(items)
    index.related("i0", 1)  # posting arrays are built by the first lookup that reads them
    for token in index._postings:
        index._posting_array(token)
    bytes_per_item = tracemalloc.get_traced_memory()[0] / n if memory else math.nan
    tracemalloc.stop()
    probe = rng.sample(range(n), lookups)
    # uncached related lookups: each item asked once; then again, from the cache
    related_us = lookup_us(index, probe)
    hit_us = lookup_us(index, probe)
    baseline = DictScan(refresh_s=0.0)
    baseline.__dict__.update(index.__dict__)  # the same postings and norms
    baseline._cache = type(index._cache)()
    baseline_us = lookup_us(baseline, probe)
    # item updates (a price change re-indexes the item)
    t0 = time.perf_counter()
    for i in probe:
        old = items[i]
        index.update([CatalogItem(old.item_id, old.title, (old.price or 1) + 1, **_rest(old))])
    update_us = (time.perf_counter() - t0) / lookups * 1e6
    # events: observe + blended list, sessions of 5 random items (uncached lookups)
    blend = BlendedRecommender(OnlineRecommender(), index)
    seqs: dict[str, list[str]] = {}
    t0 = time.perf_counter()
    for j, i in enumerate(probe):
        sid = f"s{j // 5}"
        item = f"i{i}"
        seq = seqs.setdefault(sid, [])
        seq.append(item)
        blend.observe(Event(f"e{j}", sid, "view", item, time.time()))
        await blend.recommend(RecContext(sid, seq, 10, current_item=item))
    event_us = (time.perf_counter() - t0) / lookups * 1e6
    return related_us, baseline_us, hit_us, update_us, event_us, bytes_per_item


def _rest(item: CatalogItem) -> dict[str, object]:
    return {"category": item.category, "brand": item.brand, "attributes": item.attributes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(
        "| catalog items | related lookup µs | before: dict scan µs | cached µs "
        "| item update µs | event (observe + list) µs | index bytes per item |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in (int(s) for s in args.sizes.split(",")):
        runs = [
            asyncio.run(measure(n, args.lookups, random.Random(r), r == 0))
            for r in range(args.repeat)
        ]
        med = [statistics.median(r[c] for r in runs) for c in range(5)] + [runs[0][5]]
        print(
            f"| {n:,} | {med[0]:.0f} | {med[1]:.0f} | {med[2]:.1f} | {med[3]:.0f} "
            f"| {med[4]:.0f} | {med[5]:,.0f} |"
        )


if __name__ == "__main__":
    main()
