"""Tests of the online recommender (popularity + co-occurrence) with an injected clock."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from liverec.config import Settings
from liverec.errors import ConfigError
from liverec.recommend.base import RecContext
from liverec.recommend.online import OnlineRecommender
from liverec.recommend.strongest import Strongest
from liverec.types import Event

HOUR = 3600.0


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Feed:
    """Builds events stamped with the clock's time (or an explicit one)."""

    def __init__(self, rec: OnlineRecommender, clock: Clock) -> None:
        self.rec = rec
        self.clock = clock
        self.ids = itertools.count()

    def event(
        self,
        session: str,
        item: str,
        action: str = "view",
        ts: float | None = None,
        rating: float | None = None,
        user: str | None = None,
    ) -> None:
        ts = self.clock.t if ts is None else ts
        event = Event(f"e{next(self.ids)}", session, action, item, ts, user, rating)
        self.rec.observe(event)

    def session(self, session: str, items: list[str]) -> None:
        for item in items:
            self.event(session, item)


def make(**kwargs: object) -> tuple[OnlineRecommender, Clock, Feed]:
    clock = Clock()
    kwargs.setdefault("popular_refresh_s", 0.0)
    rec = OnlineRecommender(clock=clock, **kwargs)  # type: ignore[arg-type]
    return rec, clock, Feed(rec, clock)


def ids(rec: OnlineRecommender, items: list[str], k: int = 10, **kw: object) -> list[str]:
    ctx = RecContext(session_id="q", items=items, k=k, **kw)  # type: ignore[arg-type]
    return [r.item_id for r in rec.recommend_sync(ctx)]


def noise(feed: Feed, n_sessions: int, seed: int = 1) -> None:
    rnd = random.Random(seed)
    for s in range(n_sessions):
        feed.session(f"noise{s}", [f"n{rnd.randrange(40)}" for _ in range(rnd.randint(1, 6))])


def test_item_followed_by_another_tops_its_list_despite_a_more_popular_one() -> None:
    rec, _, feed = make()
    noise(feed, 200)
    for s in range(10):
        feed.session(f"ab{s}", ["A", "B"])
    for s in range(12):  # more co-occurrences with A than B has, but P is everywhere
        feed.session(f"ap{s}", ["A", "P"])
    for s in range(200):
        feed.session(f"xp{s}", [f"n{s % 40}", "P"])
    assert ids(rec, ["A"], current_item="A")[0] == "B"


def test_an_item_first_seen_now_gets_and_gives_recommendations() -> None:
    rec, clock, feed = make()
    noise(feed, 100)
    for s in range(10):
        feed.session(f"ab{s}", ["A", "B"])
    clock.t += 60.0
    feed.session("fresh", ["A", "NEW"])
    assert "NEW" in ids(rec, ["A"], k=3, current_item="A")
    assert ids(rec, ["NEW"], current_item="NEW")[0] == "A"


def test_popularity_decays_with_the_half_life() -> None:
    rec, clock, feed = make(half_life_s=HOUR)
    for s in range(50):
        feed.event(f"old{s}", "OLD")
    clock.t += 10 * HOUR
    for s in range(5):
        feed.event(f"new{s}", "NEW")
    assert ids(rec, []) == ["NEW", "OLD"]
    assert rec.popularity("OLD") == pytest.approx(50 / 1024)
    assert rec.popularity("NEW") == pytest.approx(5.0)
    feed.event("late", "LATE", ts=clock.t - HOUR)  # a replayed event decays by its age
    assert rec.popularity("LATE") == pytest.approx(0.5)


def test_decayed_values_survive_many_half_lives_without_overflow() -> None:
    rec, clock, feed = make(half_life_s=1.0, cooc_half_life_s=1.0)
    for step in range(300):  # 3000 half-lives: several reference rescales
        clock.t += 10.0
        feed.session(f"s{step}", [f"i{step % 7}", f"j{step % 5}"])
    pops = [rec.popularity(f"i{n}") for n in range(7)]
    assert all(math.isfinite(p) for p in pops)
    assert rec.popularity("i5") == pytest.approx(1.0)  # step 299 -> i5, j4, seen now
    assert set(ids(rec, [], k=2)) == {"i5", "j4"}
    assert rec.popularity("i4") == pytest.approx(2.0**-10)
    assert ids(rec, ["i5"], k=1, current_item="i5") == ["j4"]
    assert all(math.isfinite(s) for _, s in rec.neighbours("i5"))


def test_rules_current_excluded_unique_and_catalog_smaller_than_k() -> None:
    rec, _, feed = make()
    for s in range(5):
        feed.session(f"s{s}", ["A", "B", "C", "D", "B"])
    got = ids(rec, ["A", "B"], k=50, current_item="B", exclude={"C"})
    assert sorted(got) == ["A", "D"]
    got = ids(rec, ["A"], k=50, current_item="A")
    assert sorted(got) == ["B", "C", "D"]
    assert ids(rec, ["A"], k=0) == []


def test_only_known_items_even_when_edges_point_to_dropped_ones() -> None:
    rec, _, feed = make(max_items=3)
    feed.session("s", ["A", "GONE"])
    feed.session("t", ["A", "X", "Y"])  # GONE is the least recently seen: dropped
    assert not rec.knows("GONE")
    assert rec.degree("A") == 3  # the edge to GONE is still stored...
    got = ids(rec, ["A"], k=10, current_item="A")
    assert "GONE" not in got  # ...but never recommended
    assert set(got) == {"X", "Y"}
    assert set(ids(rec, ["UNSEEN", "GONE"], k=10)) == {"A", "X", "Y"}


def test_low_rated_items_are_demoted_and_do_not_drive_the_list() -> None:
    rec, _, feed = make()
    for s in range(10):
        feed.session(f"ab{s}", ["A", "B"])
    for s in range(3):
        feed.session(f"ac{s}", ["A", "C"])
    for s in range(20):
        feed.session(f"xp{s}", ["X", "P"])
    assert ids(rec, ["A"], current_item="A")[0] == "B"
    got = ids(rec, ["A"], current_item="A", ratings={"B": 1.0})
    assert got[0] == "C" and got[-1] == "B"
    got = ids(rec, [], ratings={"P": 2.0, "X": 5.0})
    assert got[-1] == "P"
    # a low-rated session item is not used as a source: only A's neighbours lead
    got = ids(rec, ["A", "X"], current_item="X", ratings={"X": 1.0})
    assert got[0] == "B"


def test_repeating_the_item_just_seen_counts_only_the_stronger_action() -> None:
    once, _, feed1 = make()
    feed1.session("s", ["A", "B"])
    again, _, feed2 = make()
    feed2.session("s", ["A", "A", "A", "B"])
    # cooc / ((occ[A] + shrink)^0.5 * (occ[B] + shrink)^0.5) = 1 / 6
    assert again.neighbours("A") == once.neighbours("A") == [("B", pytest.approx(1 / 6))]
    stronger, _, feed3 = make()
    feed3.session("s", ["A", "B"])
    feed3.event("s", "B", "add_to_cart")  # the A -> B edge now counts 2, not 3
    feed3.session("t", ["A", "C"])
    feed3.event("t", "C", "purchase")  # A -> C counts 3
    assert ids(stronger, ["A"], k=2, current_item="A") == ["C", "B"]


def test_action_and_rating_weights() -> None:
    rec, _, feed = make()
    feed.event("s", "R1", "rate", rating=1.0)
    feed.event("s", "RM", "remove_from_cart")
    assert not rec.knows("R1") and not rec.knows("RM")
    feed.event("s", "R5", "rate", rating=5.0)
    feed.event("t", "P", "purchase")
    assert rec.popularity("R5") == pytest.approx(3.0)
    assert rec.popularity("P") == pytest.approx(3.0)


def test_bounds_hold_under_a_long_random_stream() -> None:
    rec, clock, feed = make(
        max_neighbours=8, max_items=50, max_sessions=20, influence_contributors=20, popular_size=4
    )
    rnd = random.Random(7)
    for _ in range(6000):
        clock.t += rnd.random()
        item = f"i{min(int(rnd.paretovariate(1.0)), 300)}"
        feed.event(f"s{rnd.randrange(100)}", item, rnd.choice(["view", "click", "purchase"]))
        if rnd.random() < 0.01:
            rec.forget(f"s{rnd.randrange(100)}")
    stats = rec.stats()
    assert stats.items == 50 and 0 < stats.sessions <= 20 and 0 < stats.contributors <= 20
    known = [f"i{n}" for n in range(301) if rec.knows(f"i{n}")]
    assert len(known) == 50
    assert all(rec.degree(i) <= 8 for i in known)
    assert stats.edges == sum(rec.degree(i) for i in known)
    # the small top set (4 to 8 items) yields the exact popularity ranking, exclusions
    # included, and nothing beyond it: a list never scans every known item
    truth = sorted(known, key=rec.popularity, reverse=True)
    ctx = RecContext(session_id="q", items=[], k=10, exclude=set(truth[:2]))
    got = [r.score for r in rec.recommend_sync(ctx)]
    assert 2 <= len(got) <= 6
    assert got == pytest.approx([rec.popularity(i) for i in truth[2:][: len(got)]])


def test_forget_drops_the_session_window() -> None:
    rec, _, feed = make()
    feed.session("s", ["A"])
    assert rec.stats().sessions == 1
    rec.forget("s")
    rec.forget("never-seen")
    assert rec.stats().sessions == 0
    feed.session("s", ["B"])
    assert rec.degree("A") == 0 and rec.degree("B") == 0


def test_empty_session_gets_the_popular_items() -> None:
    rec, _, feed = make()
    assert ids(rec, []) == []
    for n, item in enumerate(["A", "B", "C"]):
        for s in range(3 - n):
            feed.event(f"{item}{s}", item)
    assert ids(rec, []) == ["A", "B", "C"]
    assert ids(rec, ["UNKNOWN"], k=2) == ["A", "B"]


def test_a_new_item_is_in_the_popular_list_at_once_whatever_the_refresh() -> None:
    """The top set is re-sorted at most every popular_refresh_s, but an item that joins
    it is ranked at once: a new store's first second of lists is not one item long."""
    rec, clock, feed = make(popular_refresh_s=3600.0)
    feed.session("s1", ["A", "B"])
    assert ids(rec, []) == ["B", "A"] or ids(rec, []) == ["A", "B"]
    feed.session("s2", ["C"])
    feed.session("s3", ["C"])
    assert set(ids(rec, [])) == {"A", "B", "C"}
    for s in range(3):  # A overtakes C: a re-rank, which waits for the refresh
        feed.event(f"t{s}", "A")
    assert set(ids(rec, [])) == {"A", "B", "C"}
    clock.t += 3600.0
    assert ids(rec, [])[0] == "A"


async def test_async_recommend_matches_the_sync_path() -> None:
    rec, _, feed = make()
    feed.session("s", ["A", "B", "C"])
    ctx = RecContext(session_id="q", items=["A"], k=5, current_item="A")
    assert (await rec.recommend(ctx)).items == rec.recommend_sync(ctx)
    assert rec.version == "online" and rec.is_ready()
    await rec.close()


def test_from_settings_and_validation() -> None:
    settings = Settings(
        popularity_half_life_s=60.0, cooc_window=3, cooc_max_neighbours=7, max_items=99
    )
    rec = OnlineRecommender.from_settings(settings, clock=Clock())
    assert (rec.cooc_window, rec.max_neighbours, rec.max_items) == (3, 7, 99)
    with pytest.raises(ConfigError):
        OnlineRecommender(half_life_s=0.0)
    with pytest.raises(ConfigError):
        OnlineRecommender(max_neighbours=0)
    with pytest.raises(ConfigError):
        OnlineRecommender(beta=2.0)


def test_window_links_only_the_last_items() -> None:
    rec, _, feed = make(cooc_window=2, reverse_weight=0.0)
    feed.session("s", ["A", "B", "C", "D"])
    assert [b for b, _ in rec.neighbours("A")] == ["B", "C"]
    assert [b for b, _ in rec.neighbours("B")] == ["C", "D"]
    assert rec.neighbours("D") == []


ALL_ACTIONS = ("view", "click", "add_to_cart", "purchase", "remove_from_cart")


def hammer(
    feed: Feed, session: str, item: str, user: str | None = None, rounds: int = 1000
) -> None:
    """Every action on one item, `rounds` times, ratings in and far out of scale."""
    for _ in range(rounds):
        for action in ALL_ACTIONS:
            feed.event(session, item, action, user=user)
        for rating in (5.0, 1e6, -1e6, math.inf, math.nan):
            feed.event(session, item, "rate", rating=rating, user=user)


def test_one_session_adds_at_most_the_item_cap_whatever_it_sends() -> None:
    rec, _, feed = make()
    hammer(feed, "attacker", "X")
    assert rec.popularity("X") == pytest.approx(3.0)  # one purchase's worth
    rec.forget("attacker")  # closing the socket does not reset what it was credited
    hammer(feed, "attacker", "X", rounds=10)
    assert rec.popularity("X") == pytest.approx(3.0)
    # a signed-in user shares one budget over all of its sessions
    for s in range(10):
        hammer(feed, f"user-session-{s}", "Y", user="mallory", rounds=3)
    assert rec.popularity("Y") == pytest.approx(3.0)
    # an edge gains at most the cap from one session, however often it is walked
    for _ in range(500):
        feed.event("walker", "P", "purchase")
        feed.event("walker", "Z", "purchase")
    once, _, feed1 = make()
    feed1.event("walker", "P", "purchase")
    feed1.event("walker", "Z", "purchase")
    (got, score), (want, expected) = *rec.neighbours("P"), *once.neighbours("P")
    assert got == want == "Z" and score == pytest.approx(expected)


def test_one_session_adds_weight_to_a_bounded_number_of_items() -> None:
    rec, _, feed = make(influence_items=4)
    feed.session("s", ["A", "B", "C", "D", "E", "F"])
    assert [rec.popularity(i) for i in "ABCDEF"] == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert not rec.knows("E")
    feed.event("s", "A", "purchase")  # an item already credited may still grow to the cap
    assert rec.popularity("A") == pytest.approx(3.0)
    feed.session("t", ["E"])
    assert rec.popularity("E") == pytest.approx(1.0)


def test_a_catalog_filter_gets_its_popular_items_without_a_scan() -> None:
    rec, _, feed = make(popular_size=4)
    in_catalog = {f"c{n}" for n in range(6)}
    assert ids(rec, [], available=in_catalog.__contains__) == []  # installs the filter
    for n in range(30):  # 30 items more popular than any catalog item
        for s in range(40 - n):
            feed.event(f"hot{n}-{s}", f"hot{n}")
    for n in range(6):
        for s in range(6 - n):
            feed.event(f"c{n}-{s}", f"c{n}")
    got = ids(rec, [], available=in_catalog.__contains__)
    assert got[:4] == ["c0", "c1", "c2", "c3"]
    assert ids(rec, [])[:3] == ["hot0", "hot1", "hot2"]
    # an item out of stock is skipped; the list never reads past the bounded top sets
    got = ids(rec, [], available=lambda i: i in in_catalog and i != "c1")
    assert got[:3] == ["c0", "c2", "c3"]
    assert len(ids(rec, [], k=100)) <= 8


def test_a_clock_jump_of_many_half_lives_forgets_without_overflow() -> None:
    rec, clock, feed = make(half_life_s=1.0, cooc_half_life_s=1.0)
    feed.session("s", ["A", "B"])
    clock.t += 1e9  # ~1.4e9 half-lives at once
    feed.session("t", ["C", "D"])
    assert rec.popularity("A") == 0.0 and rec.popularity("C") == pytest.approx(1.0)
    assert ids(rec, ["C"], k=3, current_item="C")[0] == "D"
    feed.event("u", "E", ts=math.nan)  # a time that is not a number counts as now
    feed.event("v", "F", ts=clock.t + 1e6)  # and one in the future too
    assert rec.popularity("E") == rec.popularity("F") == pytest.approx(1.0)


@pytest.mark.parametrize(("contributors", "x_weight"), [(1, 2.0), (100_000, 1.0)])
def test_the_influence_ledger_size_is_a_setting(contributors: int, x_weight: float) -> None:
    """A contributor dropped from the ledger (least recent, beyond its size) has its
    credits forgotten: its repeat adds weight again."""
    clock = Clock()
    settings = Settings(influence_contributors=contributors)
    rec = OnlineRecommender.from_settings(settings, clock=clock)
    feed = Feed(rec, clock)
    feed.session("a", ["X", "W"])
    feed.session("b", ["Y"])
    feed.session("a", ["X"])
    assert rec.popularity("X") == pytest.approx(x_weight)


def twins(**kwargs: object) -> tuple[OnlineRecommender, OnlineRecommender, Clock, Feed, Feed]:
    """Two recommenders on one clock: `cached` as configured, `exact` with every list
    rescored from all neighbours (cooc_refresh_s=0), fed the same events."""
    clock = Clock()
    cached = OnlineRecommender(clock=clock, popular_refresh_s=0.0, **kwargs)  # type: ignore[arg-type]
    exact = OnlineRecommender(
        clock=clock,
        popular_refresh_s=0.0,
        **{**kwargs, "cooc_refresh_s": 0.0},  # type: ignore[arg-type]
    )
    return cached, exact, clock, Feed(cached, clock), Feed(exact, clock)


def star(feeds: tuple[Feed, ...], n: int) -> None:
    """A with n neighbours X0..X{n-1}; X_i also seen in i sessions of its own, so the
    weights of A's neighbours are distinct and decrease with i."""
    for feed in feeds:
        for i in range(n):
            feed.session(f"a{i}", ["A", f"X{i}"])
            for s in range(i):
                feed.session(f"x{i}.{s}", [f"X{i}"])


def test_cached_lists_follow_edge_updates_exactly() -> None:
    # the clock stands still: no list is ever old, every change must come from the
    # edge updates themselves (a neighbour left out entering, a member gaining)
    cached, exact, _, feed, feed2 = twins(cooc_refresh_s=3600.0, max_neighbours=200)
    star((feed, feed2), 70)
    assert cached.neighbours("A", 64) == exact.neighbours("A", 64)  # cached now
    assert "X64" not in dict(cached.neighbours("A", 64))
    for f in (feed, feed2):
        f.session("b1", ["A", "X66"])  # left out: enters, the weakest member leaves
        f.session("b2", ["A", "X3"])  # a member gets stronger
        f.session("b3", ["X7", "A"])  # the reverse edge into A
    got, want = cached.neighbours("A", 64), exact.neighbours("A", 64)
    assert [b for b, _ in got] == [b for b, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want])
    assert "X66" in dict(got) and "X63" not in dict(got)


def test_a_member_weaker_than_one_left_out_recomputes_the_list() -> None:
    cached, exact, _, feed, feed2 = twins(cooc_refresh_s=3600.0, max_neighbours=200)
    star((feed, feed2), 65)  # the list holds X0..X63; X64 is left out
    assert cached.neighbours("A", 64) == exact.neighbours("A", 64)
    for f in (feed, feed2):
        for s in range(300):  # X0 seen everywhere: its normaliser grows, no edge to A
            f.session(f"y{s}", [f"Y{s}", "X0"])
        f.session("b", ["A", "X0"])  # the edge update finds X0 below X64's weight
    got, want = cached.neighbours("A", 64), exact.neighbours("A", 64)
    assert [b for b, _ in got] == [b for b, _ in want]
    assert "X0" not in dict(got) and "X64" in dict(got)


def test_neighbours_normalisers_are_at_most_cooc_refresh_s_old() -> None:
    cached, exact, clock, feed, feed2 = twins(cooc_refresh_s=10.0)
    for f in (feed, feed2):
        f.session("s", ["A", "B", "C"])
    assert cached.neighbours("A") == exact.neighbours("A")  # A's list cached now
    for f in (feed, feed2):
        for s in range(5):  # B seen elsewhere: its occurrence weight grows
            f.session(f"b{s}", ["B"])
    stale, fresh = cached.neighbours("A"), exact.neighbours("A")
    assert dict(stale)["B"] > dict(fresh)["B"]  # scored with B's old normaliser
    clock.t += 10.0
    assert cached.neighbours("A") == exact.neighbours("A")


def test_a_strongest_list_follows_its_edges_and_says_when_it_cannot_tell() -> None:
    top = Strongest(2, 0.0, 0, 0, {"a": 3.0, "b": 2.0, "c": 1.0})
    assert top.weights == {"a": 3.0, "b": 2.0} and top.ceiling == 1.0
    assert top.follow("c", 2.5)  # enters; b leaves, and bounds those left out
    assert top.weights == {"a": 3.0, "c": 2.5} and top.ceiling == 2.0
    assert top.follow("d", 1.5) and top.follow("b", 1.8)  # left out, stay out
    assert top.weights == {"a": 3.0, "c": 2.5} and top.ceiling == 2.0
    assert top.follow("d", 2.7)  # above the least member (c): displaces it
    assert top.weights == {"a": 3.0, "d": 2.7} and top.ceiling == 2.5
    assert top.follow("a", 2.6)  # weaker, still above every one left out
    assert top.follow("e", 2.65)  # displaces a
    assert top.weights == {"d": 2.7, "e": 2.65} and top.ceiling == 2.6
    assert not top.follow("d", 2.55)  # below a's 2.6: only a rebuild can tell
    every = Strongest(3, 0.0, 0, 0, {"a": 1.0})  # room for all: nothing is left out
    assert every.follow("b", 0.5) and every.follow("a", 0.1)
    assert every.weights == {"a": 0.1, "b": 0.5} and every.ceiling == -math.inf
