"""Recommenders: the interface (base.py), the online popularity + co-occurrence
recommender (online.py) and the GRU4Rec serving side (gru.py).

Owns: choosing and building the recommender a server process runs.
"""

from __future__ import annotations

from ..config import Settings
from .base import Recommender


def build_recommender(settings: Settings) -> Recommender:
    """The online recommender, or GRU4Rec over it when a model path is set."""
    from .online import OnlineRecommender

    online = OnlineRecommender.from_settings(settings)
    if settings.model_path is None:
        return online
    from .gru import GRURecommender  # torch is imported only when a model is served

    return GRURecommender.from_settings(settings, fallback=online)
