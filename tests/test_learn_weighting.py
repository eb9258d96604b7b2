"""The learner's training data: each session's or user's share of the window is
bounded (liverec.learn.weighting), whatever it sends."""

from __future__ import annotations

import pytest

from liverec.config import Settings
from liverec.errors import ConfigError
from liverec.learn.learner import LearnConfig
from liverec.learn.weighting import bounded_events
from liverec.store.base import LoggedEvent
from liverec.types import Event


def logged(session: str, items: list[str], user: str | None = None) -> list[LoggedEvent]:
    return [
        LoggedEvent(f"{session}-{n}", Event(f"e{n}", session, "view", item, float(n), user))
        for n, item in enumerate(items)
    ]


def steps(events: list[LoggedEvent]) -> list[tuple[str, str]]:
    return [(e.event.session_id, e.event.item_id) for e in events]


def test_genuine_sessions_pass_unchanged() -> None:
    window = logged("a", ["P", "C1", "P", "C2"]) + logged("b", ["X", "Y", "Z"])
    assert bounded_events(window, 3, 50) == window


def test_a_hammering_session_adds_a_bounded_number_of_steps() -> None:
    window = logged("genuine", ["P", "C1"])
    window += logged("attacker", ["X"] * 1000 + ["P", "X"] * 1000 + [f"i{n}" for n in range(100)])
    window += logged("genuine2", ["P", "C2"])
    kept = steps(bounded_events(window, 3, 50))
    attacker = [item for s, item in kept if s == "attacker"]
    # X collapsed, then P and X three times each, then new items up to 50 distinct ones
    assert attacker[:6] == ["X", "P", "X", "P", "X", "P"]
    assert attacker.count("X") == 3 and attacker.count("P") == 3
    assert len(set(attacker)) == 50 and len(attacker) == 6 + 48
    assert ("genuine", "C1") in kept and ("genuine2", "C2") in kept


def test_a_user_shares_one_budget_over_all_of_its_sessions() -> None:
    window = []
    for s in range(20):
        window += logged(f"s{s}", ["P", "X"], user="mallory")
    window += logged("t", ["P", "X"], user="alice")
    kept = steps(bounded_events(window, 3, 50))
    assert sum(item == "X" for s, item in kept if s != "t") == 3
    assert [item for s, item in kept if s == "t"] == ["P", "X"]


def test_a_claimed_session_shares_its_users_budget() -> None:
    # "c" begins anonymously, is claimed by mallory, and mallory has another session:
    # X counts 3 times over the three parts together, and 4 distinct items at most.
    window = logged("c", ["X", "P", "X", "A"])
    window += logged("c", ["X", "P", "X", "B", "C"], user="mallory")
    window += logged("d", ["X", "P", "X", "D"], user="mallory")
    kept = [item for _, item in steps(bounded_events(window, 3, 4))]
    assert kept.count("X") == 3, kept
    assert set(kept) == {"X", "P", "A", "B"}, kept


def test_limits_come_from_the_influence_settings() -> None:
    settings = Settings(model_path="models", influence_item_cap=2.0, influence_session_items=7)
    config = LearnConfig.from_settings(settings)
    assert (config.item_repeats, config.contributor_items) == (2, 7)
    with pytest.raises(ConfigError):
        bounded_events([], 0, 1)
