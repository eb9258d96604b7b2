"""Cold-start quality of the content model on MovieLens 100k: Recall@k for items with
few training events, against popularity, and the blend against behaviour only.

The catalog is the data set's own item file (title, release year, genres): each
movie is an item with its title, its genre combination as category (a store's leaf
category, e.g. "Action|Thriller") and `genre` (each genre) and `decade` attributes.
Interactions (ratings, any value, as views) are ordered by time; the last
`--test-share` of the time range is the test period (a time split).

Protocol, streaming as the server runs: every model first learns the training
events, then for each test event in time order predicts the user's next item from
their history so far (the newest item is the anchor; every item the user already
rated is excluded), and only then learns that event. `--new-items 0.2` also drops
the training events of a random 20 % of the items, as if they entered the catalog
at the split (more cold targets than the data's own new releases give).

A hit: the event's item is in the top k. Recall@k = hits / test events (one target
per event), reported for all test events, for the events whose item had fewer than
N training events (its "cold" targets; N = 1: never seen in training), and for those
whose item had fewer than N events before the prediction ("now": training and
earlier test events; the cold start a server meets, since it learns from test
events too).

Models (all from liverec's own code, except the popularity count):

* popularity: most rated items so far (training and the test events already seen),
  not decayed;
* online (behaviour only): `OnlineRecommender` (popularity + co-occurrence), with
  half-lives of `--half-life-days` (MovieLens spans months, the served defaults
  hours and a week);
* content only: `ContentIndex.related_to` the user's newest 3 items (as the blend
  uses it), the home list without any;
* blend: `BlendedRecommender(online, content)` with the served defaults
  (`content_item_evidence` 3), as `liverec serve` runs it.

Run (one command; the baselines come from the same run):

    .venv/bin/python bench/eval_coldstart.py --data DIR_WITH_ml-100k.inter

DIR holds RecBole's atomic files of MovieLens 100k (`ml-100k.inter`,
`ml-100k.item`), e.g. from the `recbole` wheel's `dataset_example/ml-100k/`.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import random
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from liverec.catalog import CatalogItem
from liverec.config import Settings
from liverec.recommend.base import RecContext
from liverec.recommend.blend import CONTEXT_ITEMS, BlendedRecommender
from liverec.recommend.content import ContentIndex
from liverec.recommend.online import OnlineRecommender
from liverec.types import Event

Row = tuple[str, str, float]  # user, item, timestamp


def read_items(path: Path) -> list[CatalogItem]:
    out = []
    with path.open(encoding="latin-1") as fh:
        reader = csv.reader(fh, delimiter="\t")
        next(reader)  # typed header
        for row in reader:
            item_id, title, year, genres = [*row, "", "", ""][:4]
            names = genres.split()
            attrs = [("genre", g) for g in names]
            if year.isdigit():
                attrs.append(("decade", f"{int(year) // 10 * 10}s"))
            out.append(
                CatalogItem(
                    item_id=item_id,
                    title=title or item_id,
                    category="|".join(names) or None,
                    attributes=tuple(attrs),
                )
            )
    return out


def read_events(path: Path) -> list[Row]:
    rows: list[Row] = []
    with path.open() as fh:
        reader = csv.reader(fh, delimiter="\t")
        next(reader)
        for user, item, _rating, ts in reader:
            rows.append((user, item, float(ts)))
    rows.sort(key=lambda r: r[2])  # stable: the file order inside one timestamp
    return rows


class Popularity:
    """The baseline: most events so far, not decayed."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def observe(self, item: str) -> None:
        self.counts[item] += 1

    def top(self, k: int, exclude: set[str]) -> list[str]:
        out = []
        for item, _ in self.counts.most_common(k + len(exclude)):
            if item not in exclude:
                out.append(item)
                if len(out) == k:
                    break
        return out


async def evaluate(args: argparse.Namespace) -> None:
    data = Path(args.data)
    catalog = read_items(data / "ml-100k.item")
    rows = read_events(data / "ml-100k.inter")
    cutoff = rows[0][2] + (rows[-1][2] - rows[0][2]) * (1.0 - args.test_share)
    train = [r for r in rows if r[2] < cutoff]
    test = [r for r in rows if r[2] >= cutoff]
    new: set[str] = set()
    if args.new_items > 0:  # items that enter the catalog at the split: no training events
        ids = sorted({r[1] for r in rows}, key=int)
        new = set(random.Random(args.seed).sample(ids, round(len(ids) * args.new_items)))
        train = [r for r in train if r[1] not in new]
    train_count = Counter(item for _, item, _ in train)

    settings = Settings()
    clock = [train[0][2]]
    half_life = args.half_life_days * 86400.0
    online = OnlineRecommender(
        half_life_s=half_life,
        cooc_half_life_s=half_life,
        cooc_window=settings.cooc_window,
        max_neighbours=settings.cooc_max_neighbours,
        max_items=settings.max_items,
        clock=lambda: clock[0],
    )
    index = ContentIndex(
        max_postings=settings.content_max_postings,
        scan=settings.content_scan,
        neighbours=settings.max_k,
        cache_items=settings.content_cache_items,
        refresh_s=settings.content_refresh_s,
    )
    index.update(catalog)
    blend = BlendedRecommender(
        online,
        index,
        item_evidence=args.item_evidence,
        home_evidence=settings.content_home_evidence,
    )
    popularity = Popularity()
    history: dict[str, list[str]] = {}

    n = 0

    def learn(user: str, item: str, ts: float) -> None:
        nonlocal n
        n += 1
        clock[0] = ts
        blend.observe(Event(f"e{n}", user, "view", item, ts))  # reaches `online` too
        popularity.observe(item)
        history.setdefault(user, []).append(item)

    for user, item, ts in train:
        learn(user, item, ts)

    models = ("popularity", "online", "content", "blend")
    thresholds = args.cold
    groups = ["all", *(f"<{t}" for t in thresholds), *(f"<{t} now" for t in thresholds)]
    so_far = Counter(train_count)
    hits = {m: dict.fromkeys(groups, 0) for m in models}
    totals = dict.fromkeys(groups, 0)
    k = args.k
    started = time.perf_counter()
    for user, item, ts in test:
        seen = history.get(user, [])
        exclude = set(seen)
        in_groups = ["all", *(f"<{t}" for t in thresholds if train_count[item] < t)]
        in_groups += [f"<{t} now" for t in thresholds if so_far[item] < t]
        so_far[item] += 1
        if item not in exclude:  # a re-rating cannot be predicted by any model here
            for g in in_groups:
                totals[g] += 1
            anchor = seen[-1] if seen else None
            ctx = RecContext(user, seen[-50:], k, current_item=anchor, exclude=exclude)
            lists = {
                "popularity": popularity.top(k, exclude),
                "online": [r.item_id for r in online.recommend_sync(ctx)],
                "content": _content(index, seen, k, exclude),
                "blend": [r.item_id for r in (await blend.recommend(ctx)).items],
            }
            for m, got in lists.items():
                if item in got:
                    for g in in_groups:
                        hits[m][g] += 1
        learn(user, item, ts)
    elapsed = time.perf_counter() - started

    held = f", {len(new)} items held out as new" if new else ""
    print(
        f"MovieLens 100k: {len(catalog)} items, {len(train)} training and {len(test)} test "
        f"events (last {args.test_share:.0%} of the time range{held}); Recall@{k}; "
        f"blend N = {args.item_evidence:g}; {elapsed:.1f} s"
    )
    head = " | ".join(f"{g} ({totals[g]})" for g in groups)
    print(f"| model | {head} |")
    print("|---|" + "---:|" * len(groups))
    for m in models:
        cells = " | ".join(f"{hits[m][g] / max(1, totals[g]):.4f}" for g in groups)
        print(f"| {m} | {cells} |")


def _content(index: ContentIndex, seen: list[str], k: int, exclude: set[str]) -> list[str]:
    found: Iterable[str]
    if seen and seen[-1] in index:
        found = (i for i, _ in index.related_to(seen, k + len(exclude), CONTEXT_ITEMS))
    else:
        found = index.home(k + len(exclude))
    return [i for i in found if i not in exclude][:k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="directory with ml-100k.inter/.item")
    parser.add_argument("--test-share", type=float, default=0.2, help="share of the time range")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument(
        "--cold", type=lambda s: [int(x) for x in s.split(",")], default=[1, 5, 20],
        help="cold thresholds N: targets with fewer than N training events",
    )  # fmt: skip
    parser.add_argument(
        "--item-evidence", type=float, default=Settings().content_item_evidence,
        help="the blend's N (default: the served default)",
    )  # fmt: skip
    parser.add_argument("--half-life-days", type=float, default=30.0)
    parser.add_argument(
        "--new-items", type=float, default=0.0,
        help="share of items (random) whose training events are dropped: new in the catalog",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="picks the --new-items")
    args = parser.parse_args()
    asyncio.run(evaluate(args))


if __name__ == "__main__":
    main()
