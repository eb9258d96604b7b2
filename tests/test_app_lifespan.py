"""The app's lifespan: a start that fails half-way closes what it had opened.

In process: `create_app` with the real embedded store, started through Starlette's
lifespan context; each start fails on a real setting that is only found wrong after
the store was opened.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from liverec.config import Settings
from liverec.errors import ConfigError, ModelError
from liverec.server.app import create_app
from liverec.store import limits_from, open_store

ROOT = Path(__file__).resolve().parents[1]


async def start_and_fail(settings: Settings, error: type[Exception]) -> bool:
    """Start the app on `settings` (expecting `error`); whether its store still answers."""
    store = open_store(settings.store_url, limits_from(settings))
    app = create_app(settings, store=store)
    with pytest.raises(error):
        async with app.router.lifespan_context(app):
            pass
    try:
        return await store.ping()
    finally:
        await store.close()


async def test_a_model_path_found_missing_at_start_closes_the_store(tmp_path: Path) -> None:
    settings = Settings(
        store_url=f"embedded://{tmp_path}/store.db", model_path=str(tmp_path / "no-model")
    )
    assert not await start_and_fail(settings, ModelError)


async def test_a_learner_refused_at_start_closes_the_store(tmp_path: Path) -> None:
    """learn_in_serve on a checkpoint (not a registry) fails after the store, the model,
    the catalog and the feed were started."""
    settings = Settings(
        store_url=f"embedded://{tmp_path}/store.db",
        model_path=str(ROOT / "models" / "demo"),
        model_process=False,
        learn_in_serve=True,
    )
    assert not await start_and_fail(settings, ConfigError)
