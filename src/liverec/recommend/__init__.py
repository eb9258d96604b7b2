"""Recommenders: the interface (base.py), the online popularity + co-occurrence
recommender (online.py), session-kNN (vsknn.py) and the GRU4Rec serving side (gru.py).

Owns: choosing and building the recommender a server process runs.
"""

from __future__ import annotations

from ..config import Settings
from ..store.base import Store
from .base import Recommender


def build_recommender(settings: Settings) -> Recommender:
    """The online recommender (or session-kNN over it, with recommender = vsknn), or
    GRU4Rec over that when a model path is set; with an A/B model path and share,
    that share of sessions goes to the second model."""
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
