"""Cost of the content model against catalog size: importing the catalog into the
index (time and memory), one related-items lookup uncached and cached, one item
update, and what one event costs the blend (observe + list) with the related lists
uncached and cached, beside the online model alone and the previous merge.

Synthetic catalogs (seeded): 200 categories, 2,000 brands, titles of 3-6 words from
a 5,000-word Zipf vocabulary, prices log-uniform 5-2,000, a colour and a size
attribute. Times are CPU time of this process (`time.process_time`), medians of
`--repeat` rounds (the import and memory: first round); memory is the RSS growth
while the index takes the catalog (its posting arrays built), per item.

The index is sized as `liverec serve` sizes it by default (related lists of `max_k`
= 100 items, `content_scan` 2,000 postings). Per event: sessions of 5 random catalog
items, k = 10, a fresh blend (no co-views: content takes every slot, the most the
blend ever does for one event):

* "online alone": the behavioural model by itself, the floor of the column;
* "blend, no catalog": what `liverec serve` runs without a catalog (the blend around
  an empty content index);
* "blend, uncached": every item's related list computed on first use;
* "blend, cached": the same events again in new sessions, every list from the cache;
* "before: list merge": the cached case with the merge of the three anchors' lists
  done as before (a dict built entry by entry, then sorted by item/score pairs),
  over the same cache in the same run;
* "stock churn": the cached case while one item's stock changes every 10 events,
  the clock moving 1 ms per event (1,000 events/s) from 1 s after the cache was
  filled, `refresh_s` = 1 s; "before": every update, stock included, made cached
  lists older than `refresh_s` stale (and the list merge as before).

    nice -n 10 .venv/bin/python bench/bench_content.py --sizes 5000,100000,1000000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from itertools import accumulate
from operator import itemgetter
from pathlib import Path
from typing import Any

from liverec.catalog import CatalogItem
from liverec.config import Settings
from liverec.recommend.base import RecContext, Recommender
from liverec.recommend.blend import BlendedRecommender
from liverec.recommend.content import ContentIndex
from liverec.recommend.online import OnlineRecommender
from liverec.types import Event

SESSION = 5  # items per session in the per-event rounds
CHURN = 10  # with stock churn: one stock change every CHURN events
K = 10


def catalog(n: int, seed: int = 0) -> list[CatalogItem]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(5000)]
    cum = list(accumulate(1.0 / (i + 1) for i in range(5000)))  # once, not per title
    out = []
    for i in range(n):
        title = " ".join(rng.choices(words, cum_weights=cum, k=rng.randint(3, 6)))
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


class ListMerge(ContentIndex):
    """The baseline merge: the same index and cache, `related_to` as before."""

    def related_to(
        self, recent: Sequence[str], n: int, context: int = 3
    ) -> list[tuple[str, float]]:
        anchors: list[str] = []
        for item in reversed(recent):
            if len(anchors) >= context:
                break
            if item not in anchors and item in self._tokens:
                anchors.append(item)
        if len(anchors) == 1:
            return self.related(anchors[0], n)
        scores: dict[str, float] = {}
        get = scores.get
        for j, anchor in enumerate(anchors, 1):
            for b, s in self._neighbours(anchor)[0]:
                scores[b] = get(b, 0.0) + s / j
        for a in anchors:
            scores.pop(a, None)
        stocked = self._in_stock
        out: list[tuple[str, float]] = []
        for b, s in sorted(scores.items(), key=itemgetter(1), reverse=True):
            if len(out) >= n:
                break
            if stocked.get(b, False):
                out.append((b, s))
        return out


class EveryUpdate(ListMerge):
    """The baseline invalidation too: every update, a stock change included, made
    each cached related list older than `refresh_s` stale."""

    def update(self, items: Iterable[CatalogItem], gone: Iterable[str] = ()) -> None:
        super().update(items, gone)
        self.content_generation += 1


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096


def per_call_us(calls: int, t0: float) -> float:
    return (time.process_time() - t0) / calls * 1e6


async def per_event_us(
    rec: Recommender,
    items: list[str],
    tag: str,
    churn: tuple[ContentIndex, list[CatalogItem]] | None = None,
) -> float:
    """observe + list per event, sessions of SESSION items; with `churn`, the index's
    clock moves 1 ms per event (1,000 events/s) and every CHURN-th event one catalog
    item's stock changes."""
    now = [1.0]  # 1 s after the cache was filled (at 0)
    if churn is not None:
        churn[0]._clock = lambda: now[0]
    t0 = time.process_time()
    seq: list[str] = []
    for j, item in enumerate(items):
        if churn is not None:
            now[0] += 0.001
            if j % CHURN == 0:
                old = churn[1][j % len(churn[1])]
                churn[0].update([replace(old, in_stock=not churn[0].in_stock(old.item_id))])
        sid = f"{tag}{j // SESSION}"
        if j % SESSION == 0:
            seq = []
        seq.append(item)
        rec.observe(Event(f"{tag}e{j}", sid, "view", item, 1000.0 + j))
        await rec.recommend(RecContext(sid, seq, K, current_item=item))
    return per_call_us(len(items), t0)


async def measure(n: int, lookups: int, rng: random.Random, first: bool) -> dict[str, float]:
    items = catalog(n)
    gc.collect()
    out: dict[str, float] = {}
    rss0 = rss_bytes()
    t0 = time.process_time()
    index = served_index(refresh_s=3600.0)
    index.update(items)
    out["import_s"] = time.process_time() - t0
    for token in index._postings:  # built by the first lookup that reads them
        index._posting_array(token)
    out["bytes_per_item"] = (rss_bytes() - rss0) / n if first else float("nan")
    probe = [f"i{i}" for i in rng.sample(range(n), lookups)]
    t0 = time.process_time()
    for item in probe:  # uncached: each item asked once
        index.related(item, 20)
    out["related_us"] = per_call_us(lookups, t0)
    t0 = time.process_time()
    for item in probe:
        index.related(item, 20)
    out["cached_us"] = per_call_us(lookups, t0)
    t0 = time.process_time()  # a stock change: the tokens stay, cached lists too
    for i in range(lookups):
        old = items[i]
        index.update([CatalogItem(old.item_id, old.title, old.price, in_stock=False, **_rest(old))])
    out["stock_update_us"] = per_call_us(lookups, t0)
    t0 = time.process_time()  # a new title word: the item is re-indexed
    for i in range(lookups):
        old = items[i]
        index.update([CatalogItem(old.item_id, f"{old.title} new", old.price, **_rest(old))])
    out["update_us"] = per_call_us(lookups, t0)
    # per event: the online model alone, then the blend uncached, cached, old merge
    events = [f"i{i}" for i in rng.sample(range(n), lookups)]
    out["online_us"] = await per_event_us(OnlineRecommender(), events, "o")
    out["no_catalog_us"] = await per_event_us(
        BlendedRecommender(OnlineRecommender(), served_index()), events, "n"
    )
    index._cache.clear()
    index.cache_items = max(index.cache_items, 2 * lookups)
    out["blend_uncached_us"] = await per_event_us(
        BlendedRecommender(OnlineRecommender(), index), events, "u"
    )
    out["blend_cached_us"] = await per_event_us(
        BlendedRecommender(OnlineRecommender(), index), events, "c"
    )
    out["blend_before_us"] = await per_event_us(
        BlendedRecommender(OnlineRecommender(), same_index(ListMerge, index)), events, "b"
    )
    # stock churn, refresh_s = 1 s: the cache filled at t = 0, the events from t = 1 s;
    # the stock of items the title round above did not touch
    stock = items[lookups:] or items
    for key, cls in (("churn_us", ContentIndex), ("churn_before_us", EveryUpdate)):
        churned = same_index(cls, index)
        churned.refresh_s, churned._clock = 1.0, lambda: 0.0
        churned._cache.clear()
        await per_event_us(BlendedRecommender(OnlineRecommender(), churned), events, "f")
        out[key] = await per_event_us(
            BlendedRecommender(OnlineRecommender(), churned), events, "s", (churned, stock)
        )
    return out


def served_index(**kw: Any) -> ContentIndex:
    """A content index sized as `liverec serve` sizes it by default."""
    settings = Settings()
    return ContentIndex(
        max_postings=settings.content_max_postings,
        scan=settings.content_scan,
        neighbours=settings.max_k,
        cache_items=settings.content_cache_items,
        **kw,
    )


def same_index(cls: type[ContentIndex], index: ContentIndex) -> ContentIndex:
    """`index`'s postings, norms and cache (shared, not copied) behind class `cls`."""
    other = cls.__new__(cls)
    other.__dict__.update(index.__dict__)
    return other


def _rest(item: CatalogItem) -> dict[str, object]:
    return {"category": item.category, "brand": item.brand, "attributes": item.attributes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="5000,100000")
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        runs = [
            asyncio.run(measure(n, min(args.lookups, n), random.Random(r), r == 0))
            for r in range(args.repeat)
        ]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        med["import_s"], med["bytes_per_item"] = runs[0]["import_s"], runs[0]["bytes_per_item"]
        rows.append((n, med))
        print(f"{n}: {med}", flush=True)
    print("\n| catalog items | import s | index bytes per item | related lookup µs "
          "| cached µs | item update µs | stock change µs |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, m in rows:
        print(f"| {n:,} | {m['import_s']:.1f} | {m['bytes_per_item']:,.0f} | "
              f"{m['related_us']:.0f} | {m['cached_us']:.1f} | {m['update_us']:.0f} | "
              f"{m['stock_update_us']:.0f} |")  # fmt: skip
    print("\n| catalog items | online alone µs | blend, no catalog µs "
          "| blend, uncached µs | blend, cached µs "
          "| before: list merge, cached µs | stock churn µs "
          "| before: stock churn µs |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, m in rows:
        print(f"| {n:,} | {m['online_us']:.0f} | {m['no_catalog_us']:.0f} "
              f"| {m['blend_uncached_us']:.0f} | "
              f"{m['blend_cached_us']:.0f} | {m['blend_before_us']:.0f} | "
              f"{m['churn_us']:.0f} | {m['churn_before_us']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
