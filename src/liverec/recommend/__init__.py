"""Recommenders: the interface (base.py), the online popularity + co-occurrence
recommender (online.py), session-kNN (vsknn.py), the GRU4Rec serving side (gru/),
the hybrid of the two (hybrid.py), and the content model over catalog fields
(content.py) blended into their lists (blend.py).

Owns: choosing and building the recommender a server process runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..catalog import Catalog
from ..config import Settings
from ..errors import ModelError
from ..model import META
from ..store.base import Store
from .ab import ABRecommender
from .base import Recommender
from .blend import BlendedRecommender
from .content import ContentIndex
from .online import OnlineRecommender
from .vsknn import VERSION as VSKNN_VERSION
from .vsknn import VSKNNRecommender

FAMILIES = ("gru4rec", "vsknn", "hybrid")  # what a model directory's meta.json may hold
FAMILY_CHOICES = (*FAMILIES, "auto")  # `liverec train --family` (family.py)


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
    if hasattr(served_by, "served"):  # a served model path: a GRU checkpoint's items are learnt
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
    online: Recommender = OnlineRecommender.from_settings(settings)
    if settings.recommender == "vsknn":
        online = VSKNNRecommender.from_settings(settings, fallback=online)
    live: Recommender = online
    if settings.model_path is not None:
        live = _served_family(settings, online)
    if settings.ab_model_path is None or settings.ab_share <= 0.0:
        return live
    candidate = _served_family(settings.replace(model_path=settings.ab_model_path), online)
    return ABRecommender(live, candidate, settings.ab_share)


def model_family(path: Path) -> str:
    """The family a model directory (or a registry's current one) holds: meta.json's
    `family`, gru4rec when absent (checkpoints written before families existed)."""
    from .gru.served import resolve_checkpoint  # torch, only when a model is served

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
    """The recommender serving settings.model_path, by the family its metadata names,
    replaced when the path changes (reloading.py)."""
    from .reloading import ModelSwitch

    def build(path: Path, fallback: Recommender) -> tuple[str, Recommender]:
        return _family_recommender(settings, path, fallback)

    return ModelSwitch.from_settings(settings, online, build)


def _family_recommender(
    settings: Settings, path: Path, fallback: Recommender
) -> tuple[str, Recommender]:
    """(family, its recommender) of what `path` holds now; the switch watches it."""
    family = model_family(path)
    if family == "gru4rec":
        from .gru import GRURecommender  # torch is imported only when a model is served

        gru = GRURecommender.from_settings(settings, fallback=fallback)
        gru.poll_s = None  # the switch watches the path
        return family, gru
    from .gru.served import resolve_checkpoint

    directory = resolve_checkpoint(path)
    if family == "vsknn":
        from .hybrid import load_index, read_meta

        meta = read_meta(directory)
        index = load_index(directory, dict(meta.get("vsknn") or {}))
        version = str(meta.get("version") or VSKNN_VERSION)
        return family, VSKNNRecommender(index, fallback, live=settings.vsknn_live, version=version)
    from .hybrid import HybridRecommender

    return family, HybridRecommender.from_settings(settings, directory, fallback)


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
