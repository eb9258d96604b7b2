"""The recommender interface and the business rules every list obeys.

Owns: what the session manager asks of any recommender (online popularity and
co-occurrence, GRU4Rec serving) and the rules applied to every list: never the
item just interacted with, never already purchased items, only known (and
available) items, k unique items.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..types import Event, Rec


@dataclass(slots=True)
class RecContext:
    """Everything a recommender may use for one list."""

    session_id: str
    items: Sequence[str]  # the session's item sequence so far, oldest first (incl. newest)
    k: int
    current_item: str | None = None  # the item just interacted with (never recommended)
    exclude: set[str] = field(default_factory=set)  # e.g. purchased items
    ratings: dict[str, float] = field(default_factory=dict)  # the user's ratings, if any
    placement: str | None = None
    # Catalog availability (in stock, not removed); None: every known item is available.
    available: Callable[[str], bool] | None = None
    # How many items the session has taken in total (items may be a bounded tail);
    # lets a stateful recommender tell which items it has not consumed yet.
    position: int = -1

    def __post_init__(self) -> None:
        if self.position < 0:
            self.position = len(self.items)


@dataclass(frozen=True, slots=True)
class RecList:
    """One list and the model version that made it (named in the recs frame)."""

    items: list[Rec]
    model: str


# The figures a recommender may report (`Recommender.figures`), with their /metrics
# help; names ending in _total only grow. Under an A/B split the arms' figures add up.
MODEL_FIGURES = {
    "liverec_model_sessions": "Sessions whose model hidden state is held in memory.",
    "liverec_model_batches_total": "Micro-batches the session model scored.",
    "liverec_model_batched_events_total": "Events in those micro-batches (mean batch: ratio).",
    "liverec_model_worker_starts_total": "Scoring worker processes started (incl. restarts).",
    "liverec_model_threads": "torch threads of the thread that scores batches (model_threads).",
}


class Recommender(abc.ABC):
    """Scores items for a session. Implementations must be cheap per call."""

    @property
    @abc.abstractmethod
    def version(self) -> str:
        """Names the model that made a list, e.g. "online" or "gru4rec-20261129-1".

        Sent in every recs frame."""

    def version_for(self, session_id: str) -> str:
        """The version that serves this session (differs from `version` under an A/B split)."""
        return self.version

    @abc.abstractmethod
    def observe(self, event: Event) -> None:
        """Learn from one accepted event (online update). Must not block for long."""

    @abc.abstractmethod
    async def recommend(self, ctx: RecContext) -> RecList:
        """Up to ctx.k recommendations obeying the rules (see `apply_rules`)."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Start background work (model watchers); called once the server runs."""

    def forget(self, session_id: str) -> None:  # noqa: B027 - optional hook
        """The session's connection closed; drop per-session caches if any."""

    def is_ready(self) -> bool:
        return True

    async def check_model(self) -> bool:
        """A new model was announced (liverec.notify): look for it now, not at the next
        poll. True when a new one is served."""
        return False

    def figures(self) -> dict[str, float]:
        """Serving figures for /metrics, by the names in MODEL_FIGURES (missing: 0)."""
        return {}

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (threads, files)."""


def blocked_items(ctx: RecContext) -> set[str]:
    """Items no list may contain for this context."""
    blocked = set(ctx.exclude)
    if ctx.current_item is not None:
        blocked.add(ctx.current_item)
    return blocked


def apply_rules(
    scored: Iterable[tuple[str, float]],
    ctx: RecContext,
    is_known: Callable[[str], bool] | None = None,
) -> list[Rec]:
    """Filter candidates (best first) to k unique, allowed, known, available items.

    Reads candidates until k pass, so its cost is the number read (times the cost of
    `is_known` and `ctx.available`): give it a bounded candidate list, never every
    item, since with a catalog that rejects most candidates all of them are read."""
    blocked = blocked_items(ctx)
    out: list[Rec] = []
    seen: set[str] = set()
    for item, score in scored:
        if item in blocked or item in seen:
            continue
        if is_known is not None and not is_known(item):
            continue
        if ctx.available is not None and not ctx.available(item):
            continue
        seen.add(item)
        out.append(Rec(item, float(score)))
        if len(out) >= ctx.k:
            break
    return out


LOW_RATING = 2.0  # on a 1..5 scale: ratings at or below this demote an item


def demote_low_rated(items: list[Rec], ratings: dict[str, float]) -> list[Rec]:
    """Move items the user rated low to the end, keeping the order otherwise."""
    if not ratings:
        return items
    low = {i for i, r in ratings.items() if r <= LOW_RATING}
    return sorted(items, key=lambda r: r.item_id in low) if low else items
