"""Cost of the content model against catalog size: one uncached related-items lookup,
one item update, and one blended list (online model + content) per event.

Synthetic catalogs (seeded): 200 categories, 2,000 brands, titles of 3-6 words from
a 5,000-word Zipf vocabulary, prices log-uniform 5-2,000, a colour and a size
attribute. Each size is timed in the same run, so read the ratios between rows; the
figures are medians of `--repeat` rounds.

    .venv/bin/python bench/bench_content.py --sizes 10000,100000,300000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

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


async def measure(n: int, lookups: int, rng: random.Random) -> tuple[float, float, float]:
    items = catalog(n)
    index = ContentIndex(refresh_s=0.0)
    index.update(items)
    probe = rng.sample(range(n), lookups)
    # uncached related lookups: each item asked once
    t0 = time.perf_counter()
    for i in probe:
        index.related(f"i{i}", 20)
    related_us = (time.perf_counter() - t0) / lookups * 1e6
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
    return related_us, update_us, event_us


def _rest(item: CatalogItem) -> dict[str, object]:
    return {"category": item.category, "brand": item.brand, "attributes": item.attributes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print("| catalog items | related lookup µs | item update µs | event (observe + list) µs |")
    print("|---:|---:|---:|---:|")
    for n in (int(s) for s in args.sizes.split(",")):
        runs = [asyncio.run(measure(n, args.lookups, random.Random(r))) for r in range(args.repeat)]
        med = [statistics.median(r[c] for r in runs) for c in range(3)]
        print(f"| {n:,} | {med[0]:.0f} | {med[1]:.0f} | {med[2]:.0f} |")


if __name__ == "__main__":
    main()
