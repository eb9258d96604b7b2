"""Recommenders: the interface (base.py), the online popularity + co-occurrence
recommender (online.py), session-kNN (vsknn.py), the GRU4Rec serving side (gru/)
and the content model over catalog fields (content.py) blended into their lists
(blend.py).

Owns: choosing and building the recommender a server process runs.
"""

from __future__ import annotations

from ..catalog import Catalog
from ..config import Settings
from ..store.base import Store
from .base import Recommender
from .blend import BlendedRecommender
from .content import ContentIndex


def build_recommender(settings: Settings) -> Recommender:
    """The online recommender (or session-kNN over it, with recommender = vsknn), or
    GRU4Rec over that when a model path is set; with an A/B model path and share, that
    share of sessions goes to the second model; with `content_model` on, the catalog's
    content model blended in (`attach_catalog`)."""
    behavioural = _behavioural(settings)
    if not settings.content_model:
        return behavioural
    trained = None
    served_by = getattr(behavioural, "a", behavioural)  # an A/B split: the live arm
    if hasattr(served_by, "served"):  # a GRU checkpoint: its items are learnt
        gru = served_by

        def trained(item_id: str) -> bool:
            served = gru.served
            return served is not None and item_id in served.index.index

    content = ContentIndex(
        max_postings=settings.content_max_postings,
        scan=settings.content_scan,
        neighbours=settings.max_k,
        cache_items=settings.content_cache_items,
        refresh_s=settings.content_refresh_s,
    )
    return BlendedRecommender(
        behavioural,
        content,
        item_evidence=settings.content_item_evidence,
        home_evidence=settings.content_home_evidence,
        max_items=settings.max_items,
        max_sessions=settings.content_max_sessions,
        trained=trained,
    )


def attach_catalog(recommender: Recommender, catalog: Catalog) -> None:
    """Index the catalog's items in the recommender's content model and follow its
    changes (nothing to do without one)."""
    if isinstance(recommender, BlendedRecommender):
        recommender.content.update(catalog.items())
        catalog.listeners.append(recommender.content.on_catalog_change)


def _behavioural(settings: Settings) -> Recommender:
    from .online import OnlineRecommender

    online: Recommender = OnlineRecommender.from_settings(settings)
    if settings.recommender == "vsknn":
        from .vsknn import VSKNNRecommender

        online = VSKNNRecommender.from_settings(settings, fallback=online)
    live: Recommender = online
    if settings.model_path is not None:
        from .gru import GRURecommender  # torch is imported only when a model is served

        live = GRURecommender.from_settings(settings, fallback=online)
    if settings.ab_model_path is None or settings.ab_share <= 0.0:
        return live
    from .ab import ABRecommender
    from .gru import GRURecommender

    candidate = GRURecommender.from_settings(
        settings.replace(model_path=settings.ab_model_path), fallback=online
    )
    return ABRecommender(live, candidate, settings.ab_share)


async def warm_from_log(recommender: Recommender, store: Store, events: int) -> int:
    """Replay the newest `events` of the event log into the recommender's online state
    (it lives in memory: without this a restart would forget what it learnt).

    Each replayed event is observed as a live one (same bounded influence, same
    O(cooc_window) cost), so the replay costs O(events) and the lists served after
    it cost what they cost before the restart."""
    if events <= 0:
        return 0
    tail = await store.read_tail(events)
    for logged in tail:
        recommender.observe(logged.event)
    return len(tail)
