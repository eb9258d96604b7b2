"""The rules every recommendation list obeys, in process (recommend/base.py): never
the current item or an excluded one, only known and available items, k unique items
best first, low-rated items last."""

from __future__ import annotations

import dataclasses

import pytest

from liverec.recommend.base import (
    LOW_RATING,
    RecContext,
    RecList,
    Recommender,
    apply_rules,
    blocked_items,
    demote_low_rated,
)
from liverec.types import Event, Rec

SCORED = [("a", 5.0), ("b", 4.0), ("a", 3.5), ("c", 3.0), ("d", 2.0), ("e", 1.0)]


def ids(recs: list[Rec]) -> list[str]:
    return [r.item_id for r in recs]


def test_context_position_defaults_to_the_sequence_length() -> None:
    assert RecContext("s", ["x", "y"], 5).position == 2
    assert RecContext("s", ["x", "y"], 5, position=40).position == 40
    assert RecContext("s", ["x", "y"], 5, position=0).position == 0


def test_blocked_are_the_excluded_and_the_current_item() -> None:
    ctx = RecContext("s", ["x"], 5, current_item="x", exclude={"p"})
    assert blocked_items(ctx) == {"x", "p"}
    assert blocked_items(RecContext("s", [], 5)) == set()
    assert ctx.exclude == {"p"}  # not changed by the rules


def test_k_unique_items_best_first() -> None:
    out = apply_rules(SCORED, RecContext("s", [], 3))
    assert out == [Rec("a", 5.0), Rec("b", 4.0), Rec("c", 3.0)]  # the repeated "a" is skipped
    assert ids(apply_rules(SCORED, RecContext("s", [], 1))) == ["a"]
    assert ids(apply_rules(SCORED, RecContext("s", [], 10))) == ["a", "b", "c", "d", "e"]
    assert isinstance(apply_rules([("a", 1)], RecContext("s", [], 1))[0].score, float)


def test_never_the_current_item_nor_excluded_ones() -> None:
    ctx = RecContext("s", ["b"], 3, current_item="b", exclude={"c"})
    assert ids(apply_rules(SCORED, ctx)) == ["a", "d", "e"]


def test_only_known_and_available_items() -> None:
    ctx = RecContext("s", [], 3, available=lambda item: item != "a")
    assert ids(apply_rules(SCORED, ctx)) == ["b", "c", "d"]
    ctx = RecContext("s", [], 3)
    assert ids(apply_rules(SCORED, ctx, is_known=lambda item: item in "ce")) == ["c", "e"]


def test_low_rated_items_go_last_in_their_order() -> None:
    recs = [Rec(i, s) for i, s in [("a", 4.0), ("b", 3.0), ("c", 2.0), ("d", 1.0)]]
    assert demote_low_rated(recs, {}) is recs
    assert LOW_RATING == 2.0
    got = demote_low_rated(recs, {"a": 1.0, "b": LOW_RATING, "c": 2.5, "d": 5.0})
    assert ids(got) == ["c", "d", "a", "b"]
    assert demote_low_rated(recs, {"a": 3.0}) is recs  # no low rating: the list itself


class Fixed(Recommender):
    """The least a recommender implements: the optional hooks keep their defaults."""

    @property
    def version(self) -> str:
        return "fixed-1"

    def observe(self, event: Event) -> None:
        pass

    async def recommend(self, ctx: RecContext) -> RecList:
        return RecList(apply_rules(SCORED, ctx), self.version)


async def test_recommender_defaults() -> None:
    rec = Fixed()
    await rec.start()
    assert rec.version_for("any-session") == "fixed-1"
    assert rec.is_ready() is True and rec.figures() == {}
    # a promotion notice finds no new model in a recommender that serves no model file
    # (an A/B pair reports a switch when either side made one: ab.py)
    assert await rec.check_model() is False
    rec.forget("any-session")
    got = await rec.recommend(RecContext("s", ["a"], 2, current_item="a"))
    assert got == RecList([Rec("b", 4.0), Rec("c", 3.0)], "fixed-1")
    await rec.close()


def test_a_recommender_must_name_its_version_observe_and_recommend() -> None:
    class NoVersion(Recommender):
        def observe(self, event: Event) -> None:
            pass

        async def recommend(self, ctx: RecContext) -> RecList:
            return RecList([], "x")

    class NoObserve(Recommender):
        version = "x"  # type: ignore[assignment]

        async def recommend(self, ctx: RecContext) -> RecList:
            return RecList([], "x")

    class NoRecommend(Recommender):
        version = "x"  # type: ignore[assignment]

        def observe(self, event: Event) -> None:
            pass

    for incomplete in (NoVersion, NoObserve, NoRecommend):
        with pytest.raises(TypeError):
            incomplete()  # type: ignore[abstract]


def test_lists_are_immutable_and_contexts_slotted() -> None:
    recs = RecList([Rec("a", 1.0)], "m")
    with pytest.raises(dataclasses.FrozenInstanceError):
        recs.model = "other"  # type: ignore[misc]
    assert not hasattr(recs, "__dict__")
    assert not hasattr(RecContext("s", [], 1), "__dict__")
