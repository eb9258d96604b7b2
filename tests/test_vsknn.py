"""Session-kNN served from a live index: bounds, live evidence, and served = offline."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from liverec.config import Settings
from liverec.errors import ConfigError
from liverec.model.data import ItemIndex
from liverec.model.evaluate import evaluate
from liverec.model.formats import load_sessions, write_sessions
from liverec.recommend import vsknn
from liverec.recommend.base import RecContext
from liverec.recommend.hybrid import index_bonus, knn_bonus
from liverec.recommend.online import OnlineRecommender
from liverec.recommend.vsknn import SessionIndex, VSKNNRecommender, VSKNNScorer, index_params
from liverec.types import Event

from .replay_helpers import assert_matches, replay
from .servers import LiverecServer
from .tiny_model import walks
from .vsknn_reference import RefIndex, ref_ranked
from .wsclient import Client

DEMO_MODEL = Path(__file__).resolve().parents[1] / "models" / "demo"


# --- the index ----------------------------------------------------------------------------


def test_index_bounds_sessions_queues_and_items_per_session() -> None:
    index = SessionIndex(max_sessions=3, per_item=2, session_items=2)
    for n in range(5):
        for item in ("a", "b", "c"):  # c is beyond session_items: never indexed
            index.add(f"s{n}", item)
    assert list(index.sessions) == ["s2", "s3", "s4"]  # the least recently active went
    assert index.support == {"a": 3, "b": 3} and not index.knows("c")
    assert [s.key for s in index.by_item["a"]] == ["s3", "s4"]  # the most recent per_item
    index.add("s2", "a")  # activity makes a session recent again
    index.add("s5", "z")
    assert list(index.sessions) == ["s4", "s2", "s5"] and index.support["a"] == 2
    for n in range(6, 9):
        index.add(f"s{n}", "y")
    assert not index.knows("a") and "a" not in index.support  # nothing holds it any more


def test_scores_follow_neighbours_and_exclude_the_session_itself() -> None:
    index = SessionIndex()
    index.add_sessions([["a", "b"], ["a", "c"], ["x", "y"]])
    scores = index.scores(["a"])
    assert set(scores) == {"a", "b", "c"} and scores["b"] == scores["c"]
    index.add("me", "a")
    index.add("me", "q")
    assert "q" not in index.scores(["a"], exclude="me")
    assert "q" in index.scores(["a"])


def test_sampling_keeps_only_the_most_recent_candidate_sessions() -> None:
    index = SessionIndex(sample=2, neighbours=10)
    index.add_sessions([["a", "old"]] * 5 + [["a", "new1"], ["a", "new2"]])
    assert set(index.scores(["a"])) == {"a", "new1", "new2"}
    wide = SessionIndex(sample=10, neighbours=10)
    wide.add_sessions([["a", "old"]] * 5 + [["a", "new1"], ["a", "new2"]])
    assert "old" in wide.scores(["a"])


def test_more_recent_shared_items_weigh_more() -> None:
    index = SessionIndex()
    index.add_sessions([["a", "after-a"], ["b", "after-b"]])
    scores = index.scores(["a", "b"])  # b is the latest: weight 2/2, a: 1/2 and step 2
    assert scores["after-b"] > scores["after-a"] > 0


def _streams(seed: int) -> tuple[dict[str, int], list[tuple[str, str, list[str], str | None]]]:
    """Index parameters and (session, item, query window, excluded session) steps of a
    random stream: few items (ties), small bounds (evictions, stale queue entries,
    both sampling branches), sessions that repeat items and come back."""
    rnd = random.Random(seed)
    params = {
        "neighbours": rnd.choice([1, 3, 50]),
        "sample": rnd.choice([2, 10, 250]),
        "per_item": rnd.choice([2, 5, 100]),
        "window": rnd.choice([1, 3, 10]),
        "session_items": rnd.choice([2, 5, 50]),
        "max_sessions": rnd.choice([3, 20, 1000]),
    }
    n_sessions, n_items = rnd.choice([5, 30, 200]), rnd.choice([5, 20, 300])
    seqs: dict[str, list[str]] = {}
    steps = []
    for _ in range(800):
        s = f"s{rnd.randrange(n_sessions)}"
        popular = min(int(rnd.paretovariate(1.0)), n_items)
        item = f"i{popular if rnd.random() < 0.7 else rnd.randrange(n_items)}"
        seqs.setdefault(s, []).append(item)
        q = f"s{rnd.randrange(n_sessions)}"
        steps.append((s, item, list(seqs.get(q) or [item]), q if rnd.random() < 0.8 else None))
    return params, steps


@pytest.mark.parametrize("seed", range(24))
def test_array_scoring_equals_the_plain_definition(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every score, ranking, fill list and hybrid bonus of the array index equals the
    dict implementation's (tests/vsknn_reference.py), exactly: same values, same
    ties broken the same way, through evictions and stale queue entries."""
    params, steps = _streams(seed)
    monkeypatch.setattr(vsknn, "FILL", 7)  # the fill list's boundary falls among ties
    index, ref = SessionIndex(**params), RefIndex(**params)
    columns = ItemIndex([f"i{j}" for j in range(0, 300, 3)])  # knows a third of the items
    for n, (session, item, window, exclude) in enumerate(steps):
        index.add(session, item)
        ref.add(session, item)
        want = ref.scores(window, exclude)
        numbers, values = index.neighbour_scores(window, exclude)
        assert index.scores(window, exclude) == want
        for limit in (None, 1, 5, 37):
            assert index.ranked(numbers, values, limit) == ref_ranked(want, limit)
        cols, add = index_bonus(index, numbers, values, columns, 4.0)
        ref_cols, ref_add = knn_bonus(want, columns, 4.0)
        assert sorted(zip(cols.tolist(), add.tolist(), strict=True)) == sorted(
            zip(ref_cols.tolist(), ref_add.tolist(), strict=True)
        )
        if n % 100 == 0:
            index._fill = None
            assert index.fill() == ref.fill(7)
    assert list(index.sessions) == list(ref.sessions) and index.support == ref.support


async def test_recommender_falls_back_without_evidence_and_obeys_the_rules() -> None:
    settings = Settings()
    online = OnlineRecommender.from_settings(settings)
    rec = VSKNNRecommender(SessionIndex(), online)
    for n, (s, item) in enumerate([("s1", "a"), ("s1", "b"), ("s1", "c"), ("s2", "a")]):
        rec.observe(Event(f"e{n}", s, "view", item, 1000.0 + n))
    got = await rec.recommend(RecContext("s3", ["a"], k=5, current_item="a"))
    assert got.model == "vsknn" and [r.item_id for r in got.items][:2] == ["b", "c"]
    assert "a" not in [r.item_id for r in got.items]
    excluded = await rec.recommend(RecContext("s3", ["a"], 5, current_item="a", exclude={"b"}))
    assert "b" not in [r.item_id for r in excluded.items]
    assert (await rec.recommend(RecContext("s3", [], k=5))).model == "online"
    unknown = await rec.recommend(RecContext("s3", ["a", "new"], k=5, current_item="new"))
    assert unknown.model == "online"


def test_settings_refuse_an_unknown_recommender_and_empty_bounds() -> None:
    with pytest.raises(ConfigError, match="recommender must be one of online, vsknn"):
        Settings(recommender="knn")
    with pytest.raises(ConfigError, match="vsknn_"):
        Settings(vsknn_sample=0)
    cmd = [sys.executable, "-m", "liverec.cli", "serve", "--recommender", "knn"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "'knn' is not one of online, vsknn" in done.stderr
    assert "Traceback" not in done.stderr


# --- served ------------------------------------------------------------------------------


async def test_a_live_session_is_neighbour_evidence_for_the_next_event() -> None:
    server = LiverecServer("memory://", recommender="vsknn").start()
    try:
        async with await Client.open(server.ws_url) as first:
            await first.hello()
            for item in ("tent", "stove", "gas"):
                await first.event(item)
        async with await Client.open(server.ws_url) as second:
            await second.hello(k=5)
            _, recs = await second.event("tent")
        assert recs["model"] == "vsknn"
        assert {"stove", "gas"} <= {r["item_id"] for r in recs["items"][:2]}
    finally:
        server.stop()


async def test_a_restarted_server_rebuilds_the_index_from_the_event_log(tmp_path: Path) -> None:
    url = f"embedded://{tmp_path / 'store.db'}"
    server = LiverecServer(url, recommender="vsknn").start()
    try:
        async with await Client.open(server.ws_url) as first:
            await first.hello()
            for item in ("kayak", "paddle", "vest"):
                await first.event(item)
    finally:
        server.stop()
    server = LiverecServer(url, recommender="vsknn").start()  # same store, empty memory
    try:
        async with await Client.open(server.ws_url) as second:
            await second.hello(k=5)
            _, recs = await second.event("kayak")
        assert recs["model"] == "vsknn"
        assert {"paddle", "vest"} <= {r["item_id"] for r in recs["items"][:2]}
    finally:
        server.stop()


async def test_gru4rec_over_vsknn_answers_items_the_checkpoint_lacks_from_the_index() -> None:
    server = LiverecServer("memory://", recommender="vsknn", model_path=str(DEMO_MODEL)).start()
    try:
        async with await Client.open(server.ws_url) as first:
            await first.hello()
            for item in ("new-lamp", "new-bulb"):  # not in the checkpoint
                await first.event(item)
        async with await Client.open(server.ws_url) as second:
            welcome, _ = await second.hello(k=5)
            _, recs = await second.event("new-lamp")
            assert recs["model"] == "vsknn" and recs["items"][0]["item_id"] == "new-bulb"
            _, recs = await second.event("aurora-15")
            assert recs["model"] == welcome["model"] != "vsknn"  # the checkpoint's
    finally:
        server.stop()


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("vsknn")
    write_sessions(walks(1500, 1), d / "train.tsv")
    write_sessions(walks(60, 2), d / "test.tsv")
    return d / "train.tsv", d / "test.tsv"


async def test_replay_over_websocket_matches_offline_evaluation(split: tuple[Path, Path]) -> None:
    train_path, test_path = split
    train, test = load_sessions(train_path), load_sessions(test_path)
    index = ItemIndex.from_sessions(train)
    scorer = VSKNNScorer.fit(train, index, **index_params(Settings()))
    measured = evaluate(scorer, index, test, ks=(20,), serving_rules=True)
    server = LiverecServer(
        "memory://",
        recommender="vsknn",
        vsknn_data=str(train_path),
        vsknn_live="off",  # the index is the file's: what was measured offline
        events_per_s=1e6,
        events_burst=10000,
    ).start()
    try:
        replayed = await replay(server.ws_url, test, index)
    finally:
        server.stop()
    assert replayed.models == {"vsknn"}
    assert_matches(measured, replayed)


def test_offline_scorer_ranks_in_the_served_order() -> None:
    train = walks(300, 3)
    index = ItemIndex.from_sessions(train)
    scorer = VSKNNScorer.fit(train, index)
    scorer.reset(1)
    first = train.session(0).tolist()[0]
    row = scorer.step(np.array([0]), np.array([index.index[first]]), np.array([True]))[0]
    served = [i for i, _ in scorer.index.order([first])]
    ranked = [index.ids[j] for j in np.argsort(-row, kind="stable")]
    assert ranked[: len(served)] == served
    assert len(set(row.tolist())) == len(row)  # distinct: no ties to break
