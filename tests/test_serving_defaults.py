"""One set of serving defaults: the GRU recommender's and the settings' agree."""

from __future__ import annotations

import inspect

from liverec.config import Settings
from liverec.recommend.gru import GRURecommender
from liverec.recommend.gru.served import ServedModel, ServeOptions


def test_gru_recommender_defaults_are_the_settings() -> None:
    defaults = Settings()
    params = inspect.signature(GRURecommender.__init__).parameters
    options = [p for p in params.values() if p.kind is p.KEYWORD_ONLY]
    assert options  # every keyword has a model_* setting of the same default
    for p in options:
        assert p.default == getattr(defaults, f"model_{p.name}"), p.name


def test_serve_options_and_loading_default_to_the_settings() -> None:
    defaults = Settings()
    assert ServeOptions() == ServeOptions(
        defaults.model_quantize, defaults.model_rank, defaults.model_quantize_gru
    )
    load = inspect.signature(ServedModel.load).parameters
    assert load["rank"].default == defaults.model_rank
    assert load["quantize_gru"].default == defaults.model_quantize_gru
