"""The continuous learner on an embedded store: it follows the log, trains, judges and
promotes (the served model switches), rejects a worse candidate, and resumes its
window after a restart."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from liverec.learn.learner import LearnConfig, Learner, decide
from liverec.learn.registry import Registry
from liverec.model.checkpoint import load_checkpoint
from liverec.model.config import TrainConfig
from liverec.recommend.base import RecContext
from liverec.recommend.gru import GRURecommender
from liverec.recommend.online import OnlineRecommender
from liverec.store import Store, StoreLimits, open_store
from liverec.types import Event

from .tiny_model import tiny_config

OLD = [f"f{i}" for i in range(6)]  # product families of the first phase
NEW = ["n0", "n1"]  # a product line that appears later


def walks(n: int, families: list[str], seed: int, t0: float, noise: float = 0.1) -> list[Event]:
    """`n` sessions walking the chain fam-0 -> fam-1 -> ... of 8 items of one family
    (sometimes skipping one), one event per second from `t0`."""
    rng = random.Random(seed)
    events, t = [], t0
    for s in range(n):
        fam, pos = rng.choice(families), rng.randrange(8)
        for j in range(rng.randint(2, 6)):
            events.append(Event(f"e{j}", f"w{seed}-{s}", "view", f"{fam}-{pos % 8}", t))
            pos += 2 if rng.random() < noise else 1
            t += 1.0
    return events


def shuffled(events: list[Event], seed: int) -> list[Event]:
    """The same sessions with their items shuffled across all sessions."""
    items = [e.item_id for e in events]
    random.Random(seed).shuffle(items)
    return [
        Event(e.id, e.session_id, e.action, i, e.ts) for e, i in zip(events, items, strict=True)
    ]


def tiny_train(seed: int = 1) -> TrainConfig:
    """The tiny model's config, with the summed loss (the small steps suit 4 epochs)."""
    return tiny_config(seed, batch_mean=False)


def learn_config(models: Path, **changes: object) -> LearnConfig:
    values: dict[str, object] = {
        "models_dir": models,
        "min_events": 100,
        "interval_s": None,
        "window_events": 3000,
        "holdout_fraction": 0.15,
        "min_holdout_cases": 20,
        "margin": 0.01,
        "train": tiny_train(),
        "poll_s": 0.02,
    }
    values.update(changes)
    return LearnConfig(**values)  # type: ignore[arg-type]


async def test_first_model_then_finetuned_model_with_new_items_is_served(
    embedded_store: Store, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    learner = Learner(embedded_store, learn_config(models))
    learner.open()
    await embedded_store.record_events(walks(500, OLD, seed=1, t0=1000.0))
    await learner.catch_up()
    assert learner.due()
    first = await learner.round()
    registry = Registry(models)
    assert first.decision == "promoted", first.reason
    assert registry.current() == first.version
    record = registry.get(first.version or "")
    assert (record.mode, record.parent, record.status) == ("initial", None, "promoted")
    m = record.metrics
    assert m["candidate"]["recall@20"] > m["popularity"]["recall@20"] and m["live"] is None
    assert record.window["events"] == len(learner.window) and record.window["last"]

    served = GRURecommender(models, OnlineRecommender(), poll_s=0.02, process=False)
    await served.start()
    try:
        assert served.version == first.version
        # the shift: a new product line becomes popular
        await embedded_store.record_events(walks(500, OLD + NEW + NEW, seed=2, t0=9000.0))
        await learner.catch_up()
        assert learner.due()
        second = await learner.round()
        assert second.decision == "promoted", second.reason
        record = registry.get(second.version or "")
        assert (record.mode, record.parent) == ("finetune", first.version)
        assert record.new_items == 16 and record.items == 48 + 16
        assert record.metrics["new_item_cases"] > 0
        assert record.metrics["candidate"]["recall@20"] > record.metrics["live"]["recall@20"]
        _, _, index, meta = load_checkpoint(models / (second.version or ""))
        assert meta["parent"] == first.version and "n1-7" in index
        # the serving side switches to it by itself (it polls models/CURRENT)
        for _ in range(250):
            if served.version == second.version:
                break
            await asyncio.sleep(0.02)
        assert served.version == second.version
        ctx = RecContext("s", ["n0-2"], 5, current_item="n0-2")
        got = await served.recommend(ctx)
        assert got.model == second.version and "n0-3" in [r.item_id for r in got.items]
    finally:
        await served.close()
        await learner.close()


@pytest.mark.parametrize("mode", ["retrain", "finetune"])
async def test_worse_candidate_trained_on_shuffled_data_is_rejected(
    embedded_store: Store, tmp_path: Path, mode: str
) -> None:
    models = tmp_path / "models"
    recent = walks(80, OLD, seed=3, t0=90_000.0)  # the held-out, most recent sessions
    noise = shuffled(walks(500, OLD, seed=4, t0=50_000.0), seed=5)
    # the window holds exactly the shuffled sessions and the recent ones
    learner = Learner(
        embedded_store,
        learn_config(
            models, mode=mode, window_events=len(noise + recent), holdout_fraction=80 / 580
        ),
    )
    learner.open()
    try:
        await embedded_store.record_events(walks(600, OLD, seed=1, t0=1000.0))
        await learner.catch_up()
        live = await learner.round()
        assert live.decision == "promoted", live.reason
        await embedded_store.record_events(noise + recent)
        await learner.catch_up()
        plan = learner.plan(list(learner.window))
        assert plan.holdout.n_sessions == 80  # = the recent sessions, time-ordered
        result = await learner.round()
    finally:
        await learner.close()
    assert result.decision == "rejected", result.reason
    assert result.reason.startswith("worse than live on recall@20")
    registry = Registry(models)
    assert registry.current() == live.version  # the live model stays
    record = registry.get(result.version or "")
    assert record.status == "rejected" and record.reason == result.reason
    cand, before = record.metrics["candidate"], record.metrics["live"]
    assert cand["recall@20"] < before["recall@20"] - 0.01
    assert [c["version"] for c in registry.changes()] == [live.version]


async def test_the_loop_learns_on_its_own_and_a_restart_resumes_its_window(
    tmp_path: Path,
) -> None:
    url, models = f"embedded://{tmp_path}/live.db", tmp_path / "models"
    store = open_store(url, StoreLimits())
    await store.open()
    learner = Learner(store, learn_config(models, window_events=1500))
    await learner.start()
    try:
        await store.record_events(walks(500, OLD, seed=1, t0=1000.0))
        for _ in range(500):
            if learner.rounds:
                break
            await asyncio.sleep(0.02)
        assert learner.last is not None and learner.last.decision == "promoted"
        window = [e.position for e in learner.window]
    finally:
        await learner.close()
        await store.close()
    assert len(window) == 1500

    # a new learner process: the consumer group hands back the unacknowledged window
    store = open_store(url, StoreLimits())
    await store.open()
    again = Learner(store, learn_config(models, window_events=1500))
    again.open()
    try:
        await again.catch_up()
        assert [e.position for e in again.window] == window
        assert again.new_events == 0 and not again.due()  # nothing new since that round
        await store.record_events(walks(30, OLD, seed=9, t0=5000.0))
        await again.catch_up()
        assert 0 < again.new_events < 200 and len(again.window) == 1500
    finally:
        await again.close()
        await store.close()


def test_promotion_rule() -> None:
    pop = {"recall@20": 0.2, "mrr@20": 0.05}
    assert decide({"recall@20": 0.3, "mrr@20": 0.1}, None, pop, 0.01)[0]
    assert not decide({"recall@20": 0.2, "mrr@20": 0.1}, None, pop, 0.01)[0]
    live = {"recall@20": 0.5, "mrr@20": 0.2}
    assert decide({"recall@20": 0.495, "mrr@20": 0.195}, live, pop, 0.01)[0]  # within margin
    ok, why = decide({"recall@20": 0.6, "mrr@20": 0.18}, live, pop, 0.01)
    assert not ok and why.startswith("worse than live on mrr@20")


def test_settings_map_to_the_learn_config(tmp_path: Path) -> None:
    from liverec.config import Settings
    from liverec.errors import ConfigError

    settings = Settings(
        model_path=str(tmp_path / "models"),
        learn_mode="retrain",
        learn_epochs=3,
        learn_set=("model.layers=16", "loss=cross-entropy"),
    )
    config = LearnConfig.from_settings(settings)
    assert config.mode == "retrain" and config.train.n_epochs == 3
    assert config.train.model.layers == (16,) and config.train.loss == "cross-entropy"
    with pytest.raises(ConfigError):
        LearnConfig.from_settings(settings.replace(learn_mode="sometimes"))
    with pytest.raises(ConfigError):
        LearnConfig.from_settings(settings.replace(model_path=None))
    with pytest.raises(ConfigError):
        LearnConfig.from_settings(settings.replace(learn_interval_s=None, learn_min_events=None))


async def test_lists_queued_across_a_promotion_are_made_by_their_own_model(
    embedded_store: Store, tmp_path: Path
) -> None:
    from liverec.recommend.gru.served import ServedModel

    models = tmp_path / "models"
    learner = Learner(embedded_store, learn_config(models))
    learner.open()
    try:
        await embedded_store.record_events(walks(500, OLD, seed=1, t0=1000.0))
        await learner.catch_up()
        assert (await learner.round()).decision == "promoted"
        served = GRURecommender(models, OnlineRecommender(), poll_s=None, process=False)
        await served.start()
        await embedded_store.record_events(walks(500, NEW, seed=2, t0=9000.0))
        await learner.catch_up()
        assert (await learner.round()).decision == "promoted"  # 16 more items
    finally:
        await learner.close()
    try:
        contexts = [
            RecContext(f"s{n}", [f"f{n % 6}-{n % 8}"], 20, current_item=None) for n in range(40)
        ]
        pending = [asyncio.create_task(served.recommend(c)) for c in contexts]
        await asyncio.sleep(0)  # every list is queued for the micro-batcher now
        served.served = ServedModel.load(models, quantize=True)  # what reload() then does
        lists = await asyncio.gather(*pending)
        assert all(len(got.items) == 20 for got in lists)
    finally:
        await served.close()
