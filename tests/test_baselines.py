"""Baseline scorers (model/baselines.py) on tiny synthetic sessions."""

from __future__ import annotations

import numpy as np
import pytest

from liverec.model.baselines import (
    VSKNN,
    ItemKNN,
    MarkovChain,
    Popularity,
    make_baseline,
)
from liverec.model.data import ItemIndex, Sessions, build_sessions
from liverec.model.evaluate import StepScorer, evaluate

INDEX = ItemIndex(["a", "b", "c", "d", "e"])
A, B, C, D, E = range(5)


def train_of(*rows: str) -> Sessions:
    return Sessions.from_lists([r.split() for r in rows])


def one(scorer: StepScorer, *items: int) -> np.ndarray:
    """Scores after feeding `items` as one session in slot 0."""
    scorer.reset(1)
    out = np.zeros(0)
    for t, item in enumerate(items):
        out = scorer.step(np.array([0]), np.array([item]), np.array([t == 0]))
    assert out.shape == (1, scorer.n_items) and out.dtype == np.float32
    return out[0]


def test_popularity_counts_events_and_ignores_unknown_items() -> None:
    pop = Popularity().fit(train_of("a b b", "b c zz"), INDEX)
    assert pop.n_items == 5
    assert one(pop, A).tolist() == [1, 3, 1, 0, 0]
    rows = pop.step(np.array([0, 1]), np.array([A, C]), np.array([True, True]))
    assert rows.shape == (2, 5) and (rows[0] == rows[1]).all()


def test_item_knn_cosine_with_regularisation() -> None:
    train = train_of("a a b", "a b", "a c", "d e")
    plain = ItemKNN(lmbd=0.0).fit(train, INDEX)
    s = one(plain, A)
    assert s[A] == 0.0  # never the item itself
    assert s[B] == pytest.approx(2 / np.sqrt(3 * 2))  # sessions counted once
    assert s[C] == pytest.approx(1 / np.sqrt(3 * 1))
    assert s[D] == s[E] == 0.0
    s20 = one(ItemKNN().fit(train, INDEX), A)
    assert s20[B] == pytest.approx(2 / np.sqrt(23 * 22))
    top1 = one(ItemKNN(lmbd=0.0, n_sims=1).fit(train, INDEX), A)
    assert (top1 > 0).sum() == 1 and top1[B] > 0


def test_item_knn_scores_from_the_last_item_only() -> None:
    knn = ItemKNN(lmbd=0.0).fit(train_of("a b", "c d"), INDEX)
    assert one(knn, A, C).tolist() == one(knn, C).tolist()


def test_markov_finds_the_most_frequent_successor() -> None:
    train = train_of("a b", "a b", "a c", "e a d", "d d d")
    mc = MarkovChain(pop_tiebreak=False).fit(train, INDEX)
    assert one(mc, A).tolist() == [0, 2, 1, 1, 0]
    assert one(mc, D).tolist() == [0, 0, 0, 2, 0]  # self-transitions count
    broken = one(MarkovChain().fit(train, INDEX), A)
    assert np.argsort(-broken).tolist()[:3] == [B, D, C]  # c and d tie; d is more popular
    assert broken[E] > 0 and broken[B] - broken[D] > 0.5  # the prior never reorders counts


def test_vsknn_similarity_and_scores_by_hand() -> None:
    # S0 = a b c (older), S1 = b d (most recent)
    knn = VSKNN().fit(train_of("a b c", "b d"), INDEX)
    # current a b: weights a 1/2, b 1; sim S0 = 1.5/2, sim S1 = 1/2, both step 1
    assert one(knn, A, B).tolist() == pytest.approx([0.75, 1.25, 0.75, 0.5, 0])
    assert one(knn, A).tolist() == pytest.approx([1, 1, 1, 0, 0])
    # current a d: S0 shares a (weight 1/2, two steps back), S1 shares d (weight 1)
    assert one(knn, A, D).tolist() == pytest.approx([0.125, 0.625, 0.125, 0.5, 0])


def test_vsknn_samples_the_most_recent_sessions_and_keeps_k() -> None:
    train = train_of("a b c", "b d")
    recent = VSKNN(sample_size=1).fit(train, INDEX)
    assert one(recent, B).tolist() == pytest.approx([0, 1, 0, 1, 0])
    # with timestamps, recency is the last event of a session, not file order
    timed = build_sessions(
        ["s0", "s0", "s0", "s1", "s1"], ["a", "b", "c", "b", "d"], np.array([1, 2, 9, 3, 4.0])
    )
    assert timed.session_ids.tolist() == ["s0", "s1"]
    by_time = VSKNN(sample_size=1).fit(timed, INDEX)
    assert one(by_time, B).tolist() == pytest.approx([1, 1, 1, 0, 0])
    # k = 1: only the most similar neighbour votes
    nearest = VSKNN(k=1).fit(train_of("a b c", "b d", "b e"), INDEX)
    assert one(nearest, A, B).tolist() == pytest.approx([0.75, 0.75, 0.75, 0, 0])


def test_vsknn_slots_are_independent_and_reset() -> None:
    knn = VSKNN().fit(train_of("a b c", "b d", "e a"), INDEX)
    knn.reset(2)
    knn.step(np.array([0, 1]), np.array([A, E]), np.array([True, True]))
    both = knn.step(np.array([0, 1]), np.array([B, A]), np.array([False, False]))
    assert both[0].tolist() == pytest.approx(one(knn, A, B).tolist())
    assert both[1].tolist() == pytest.approx(one(knn, E, A).tolist())
    knn.reset(1)
    knn.step(np.array([0]), np.array([E]), np.array([True]))
    fresh = knn.step(np.array([0]), np.array([D]), np.array([True]))
    assert fresh[0].tolist() == pytest.approx(one(knn, D).tolist())


def test_unseen_items_score_nothing_but_do_not_fail() -> None:
    train = train_of("a b", "b c")
    for scorer in (ItemKNN(), MarkovChain(pop_tiebreak=False), VSKNN()):
        scorer.fit(train, INDEX)
        assert one(scorer, E).sum() == 0.0


@pytest.mark.parametrize("name", ["pop", "iknn", "vsknn", "markov"])
def test_every_baseline_learns_a_to_b(name: str) -> None:
    # a is always followed by b; c by d; e is the most frequent item overall.
    # Served lists never hold the current item (vsknn scores it as high as b).
    rows = ["a b e", "c d e", "e a b", "e c d", "a b", "c d", "e e"]
    train = train_of(*rows)
    test = train_of("a b", "c d")
    scorer = make_baseline(name, train, INDEX)
    res = evaluate(scorer, INDEX, test, ks=(1, 3), serving_rules=True)
    assert res["cases"] == 2
    if name == "pop":
        assert res["recall@1"] == 0.0  # always e
    else:
        assert res["recall@1"] == 1.0


def test_make_baseline_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown baseline"):
        make_baseline("sknn", train_of("a b"), INDEX)
