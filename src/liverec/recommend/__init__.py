"""Recommenders: the interface (base.py), the online popularity + co-occurrence
recommender (online.py), session-kNN (vsknn.py) and the GRU4Rec serving side (gru.py).

Owns: choosing and building the recommender a server process runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import Settings
from ..errors import ModelError
from ..store.base import Store
from .base import Recommender

FAMILIES = ("gru4rec", "vsknn", "hybrid")  # what a model directory's meta.json may hold


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
        live = _served_family(settings, online)
    if settings.ab_model_path is None or settings.ab_share <= 0.0:
        return live
    from .ab import ABRecommender

    candidate = _served_family(settings.replace(model_path=settings.ab_model_path), online)
    return ABRecommender(live, candidate, settings.ab_share)


def model_family(path: Path) -> str:
    """The family a model directory (or a registry's current one) holds: meta.json's
    `family`, gru4rec when absent (checkpoints written before families existed)."""
    from ..model import META
    from .served import resolve_checkpoint

    try:
        directory = resolve_checkpoint(path)
    except ModelError:
        return "gru4rec"  # an empty registry: the GRU recommender waits for a checkpoint
    try:
        meta = json.loads((directory / META).read_text())
        family = meta.get("family", "gru4rec") if isinstance(meta, dict) else None
    except (OSError, ValueError) as e:
        raise ModelError(f"unreadable {directory / META}: {e}") from e
    if family not in FAMILIES:
        raise ModelError(
            f"{directory / META}: family {family!r} is not one of {', '.join(FAMILIES)}"
        )
    return str(family)


def _served_family(settings: Settings, online: Recommender) -> Recommender:
    """The recommender serving settings.model_path, by the family its metadata names."""
    assert settings.model_path is not None
    path = Path(settings.model_path)
    family = model_family(path)
    if family == "gru4rec":
        from .gru import GRURecommender  # torch is imported only when a model is served

        return GRURecommender.from_settings(settings, fallback=online)
    from .served import resolve_checkpoint

    directory = resolve_checkpoint(path)
    if family == "vsknn":
        from .hybrid import load_index, read_meta
        from .vsknn import VSKNNRecommender

        meta = read_meta(directory)
        index = load_index(directory, dict(meta.get("vsknn") or {}))
        return VSKNNRecommender(index, online, live=settings.vsknn_live)
    from .hybrid import HybridRecommender

    return HybridRecommender.from_settings(settings, directory, online)


async def warm_from_log(recommender: Recommender, store: Store, events: int) -> int:
    """Replay the newest `events` of the event log into the recommender's online state
    (it lives in memory: without this a restart would forget what it learnt)."""
    if events <= 0:
        return 0
    tail = await store.read_tail(events)
    for logged in tail:
        recommender.observe(logged.event)
    return len(tail)
