"""The learner choosing between model families (`learn_family`): it scores each
family's candidate on the round's held-out sessions, writes the measured winner with
the comparison in its meta.json, and judges later candidates against a served model
of any family."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from liverec.learn.learner import Learner
from liverec.learn.registry import Registry
from liverec.recommend import model_family
from liverec.store import Store

from .test_learn import OLD, learn_config, walks


async def test_auto_promotes_the_measured_winner_and_records_the_comparison(
    embedded_store: Store, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    learner = Learner(embedded_store, learn_config(models, family="auto"))
    learner.open()
    try:
        await embedded_store.record_events(walks(500, OLD, seed=1, t0=1000.0))
        await learner.catch_up()
        first = await learner.round()
        assert first.decision == "promoted", first.reason
        registry = Registry(models)
        meta = json.loads((registry.path(first.version or "") / "meta.json").read_text())
        selection = meta["selection"]
        figures = selection["validation"]
        assert {"gru4rec", "vsknn", "hybrid", "hybrid w=0"} <= set(figures)
        key = lambda f: (figures[f]["recall@20"], figures[f]["mrr@20"])  # noqa: E731
        winner = max(("gru4rec", "vsknn", "hybrid"), key=key)
        assert selection["winner"] == winner == meta.get("family", "gru4rec")
        assert model_family(models) == winner  # what `liverec serve --model models` serves
        assert first.metrics["candidate"] == figures[winner]
        assert registry.get(first.version or "").metrics["families"] == figures
        # the next round is judged against the served model, whatever its family
        await embedded_store.record_events(walks(500, OLD, seed=2, t0=9000.0))
        await learner.catch_up()
        second = await learner.round()
        assert second.decision in ("promoted", "rejected"), second.reason
        assert second.metrics["live_family"] == winner and second.metrics["live"] is not None
    finally:
        await learner.close()


@pytest.mark.parametrize("family", ["vsknn", "hybrid"])
async def test_a_single_family_set_writes_that_family(
    embedded_store: Store, tmp_path: Path, family: str
) -> None:
    models = tmp_path / "models"
    learner = Learner(embedded_store, learn_config(models, family=family))
    learner.open()
    try:
        await embedded_store.record_events(walks(500, OLD, seed=1, t0=1000.0))
        await learner.catch_up()
        first = await learner.round()
        assert first.decision == "promoted", first.reason
        assert model_family(models) == family
        meta = json.loads((Registry(models).path(first.version or "") / "meta.json").read_text())
        assert meta["selection"]["winner"] == family
        scored = set(meta["selection"]["validation"])
        if family == "vsknn":  # only the wanted family is scored
            assert scored == {"vsknn"}
        else:  # the single families are scored as the reference of the hybrid's choice
            assert scored >= {"hybrid", "gru4rec", "vsknn", "hybrid w=0"}
    finally:
        await learner.close()
