"""Blending the content model into the behavioural model's lists as evidence arrives.

Owns: `BlendedRecommender`, which wraps the behavioural recommender (online, GRU4Rec
or an A/B split) and a `ContentIndex`, counts the evidence behind each list, and
shares the list between the two by one rule:

    content slots c = floor(k * N / (N + e)),  behavioural slots b = k - c

* A list for an item (the item just interacted with, else the session's newest):
  e = co-view events of that item: events on it in a session whose previous distinct
  item was another one, and events on another item right after it (each co-view
  counts for both items); N = `item_evidence` (default 3). Items of a served GRU
  checkpoint's training set count as fully evidenced (e = infinity): the model
  learnt their neighbours. The content part: the related items of the session's
  newest `CONTEXT_ITEMS` (3) distinct items, the newest weighing most (content.py).
* A list with no item (a new shopper's hello, a home page): e = events seen by this
  process (including those replayed from the log at start), N = `home_evidence`
  (default 200); the content part is the cold-start home list. The same holds for an
  item the catalog does not describe.

The list is then: the behavioural list's best b, the content list's best c, then
the rest of the behavioural list, then the rest of the content list, filtered by the
business rules (never the current or an excluded item, only available items, no
repeats) and cut at k. So a new item's page shows related catalog items first and
popular items only after them; with k = 8 and N = 3, the behavioural model's best
two items lead the row from the first co-view on, half the row is behaviour at 3
(= N), and content no longer leads any slot past 21 (N * (k - 1)) co-views: it only
fills a short list (N = 3 measured better than N = 10 on MovieLens 100k, see
docs/model-quality.md). An empty catalog leaves the behavioural list untouched; with
N = 0 content only fills short lists.

Cost per event: O(1) to count (bounded maps: `max_items` items, `max_sessions`
sessions, least recently used dropped); per list: the behavioural model's cost, then
nothing more when content gets no slot (c = 0) and the behavioural list is already
full (the usual case for an item past N * (k - 1) co-views); otherwise one content
call: `related_to` (cached lists: O(3 * neighbours) dict operations and one C sort of
at most 3 * neighbours keys; an item whose list is not cached adds one lookup,
O(tokens + content_scan), see content.py) or `home` (O(n) from a kept list), and
O(k + excluded) to merge.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

from ..types import Event, Rec
from .base import (
    RecContext,
    RecList,
    Recommender,
    apply_rules,
    blocked_items,
    demote_low_rated,
)
from .content import ContentIndex

CONTEXT_ITEMS = 3  # the session's newest distinct items whose related items are merged


class BlendedRecommender(Recommender):
    """The behavioural recommender with the content model blended in (see module doc)."""

    def __init__(
        self,
        inner: Recommender,
        content: ContentIndex,
        *,
        item_evidence: float = 3.0,
        home_evidence: float = 200.0,
        max_items: int = 200_000,
        max_sessions: int = 100_000,
        trained: Callable[[str], bool] | None = None,
    ) -> None:
        if item_evidence < 0 or home_evidence < 0 or min(max_items, max_sessions) < 1:
            raise ValueError("evidence thresholds must be >= 0 and bounds >= 1")
        self.inner = inner
        self.content = content
        self.item_evidence = item_evidence
        self.home_evidence = home_evidence
        self.max_items = max_items
        self.max_sessions = max_sessions
        self.trained = trained
        self.events = 0
        self._coview: OrderedDict[str, int] = OrderedDict()  # item -> co-view events
        self._last: OrderedDict[str, str] = OrderedDict()  # session -> last distinct item

    # --- delegation

    @property
    def version(self) -> str:
        return self.inner.version

    def version_for(self, session_id: str) -> str:
        return self.inner.version_for(session_id)

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    def is_ready(self) -> bool:
        return self.inner.is_ready()

    async def check_model(self) -> bool:
        return await self.inner.check_model()

    def figures(self) -> dict[str, float]:
        return self.inner.figures()

    def forget(self, session_id: str) -> None:
        self.inner.forget(session_id)
        self._last.pop(session_id, None)

    # --- evidence

    def observe(self, event: Event) -> None:
        """The inner model's observe, then O(1): the session's last item, co-views."""
        self.inner.observe(event)
        if event.action == "remove_from_cart":
            return
        self.events += 1
        b = event.item_id
        last = self._last
        a = last.get(event.session_id)
        if a is None:
            if len(last) >= self.max_sessions:
                last.popitem(last=False)
        else:
            last.move_to_end(event.session_id)
            if a != b:
                self._count(a)
                self._count(b)
        last[event.session_id] = b

    def _count(self, item: str) -> None:
        coview = self._coview
        n = coview.get(item)
        if n is None:
            coview[item] = 1
            if len(coview) > self.max_items:
                coview.popitem(last=False)
        else:
            coview[item] = n + 1
            coview.move_to_end(item)

    def evidence(self, item_id: str) -> float:
        """Co-view events of the item (infinity for an item a served model trained on).
        O(1)."""
        if self.trained is not None and self.trained(item_id):
            return math.inf
        return float(self._coview.get(item_id, 0))

    # --- lists

    def content_slots(self, k: int, evidence: float, threshold: float) -> int:
        """floor(k * N / (N + e)): the slots the content list gets before the rest of
        the behavioural list. O(1)."""
        if threshold <= 0 or math.isinf(evidence):
            return 0
        return math.floor(k * threshold / (threshold + evidence))

    async def recommend(self, ctx: RecContext) -> RecList:
        """The inner model's list, then (module docstring, "Cost per event") nothing
        more when content gets no slot and that list is full, else one `related_to`
        or `home` call and an O(k + excluded) merge."""
        behavioural = await self.inner.recommend(ctx)
        index = self.content
        if ctx.k <= 0 or not len(index):
            return behavioural
        anchor = ctx.current_item or (ctx.items[-1] if ctx.items else None)
        want = ctx.k + len(ctx.exclude) + 1
        related = anchor is not None and anchor in index
        if related:
            c = self.content_slots(ctx.k, self.evidence(anchor or ""), self.item_evidence)
        else:
            c = self.content_slots(ctx.k, float(self.events), self.home_evidence)
        ours = behavioural.items
        if c == 0 and len(ours) >= ctx.k:
            # content would only fill a short list, and this one is full: the merge
            # below would give the behavioural list's first k, so skip the lookup
            return RecList(demote_low_rated(list(ours[: ctx.k]), ctx.ratings), behavioural.model)
        if related:
            content = index.related_to(ctx.items or [anchor or ""], want, CONTEXT_ITEMS)
        else:
            content = [(i, 0.0) for i in index.home(want)]
        blocked = blocked_items(ctx)
        available = ctx.available
        content = [
            (i, s) for i, s in content if i not in blocked and (available is None or available(i))
        ]
        if not content:
            return behavioural
        b = ctx.k - c
        scored = (
            *((r.item_id, r.score) for r in ours[:b]),
            *content[:c],
            *((r.item_id, r.score) for r in ours[b:]),
            *content[c:],
        )
        items: list[Rec] = demote_low_rated(apply_rules(scored, ctx), ctx.ratings)
        return RecList(items, behavioural.model)
