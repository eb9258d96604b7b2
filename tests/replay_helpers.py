"""Replaying held-out sessions over a real WebSocket, as the offline evaluation
scores them under the serving rules: a new session per test session (the model
starts from a zero state), each event but the last answered with a list of 20 in
which the next item counts as a hit. test_replay, test_vsknn and test_family
compare the figures with `evaluate(..., serving_rules=True)`."""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass, field

import pytest

from liverec.model.data import Sessions

from .wsclient import Client


@dataclass
class Replayed:
    hits: int = 0
    rr: float = 0.0  # reciprocal ranks, summed
    cases: int = 0
    models: set[str] = field(default_factory=set)  # the `model` of every welcome and recs


async def replay(ws_url: str, test: Sessions, known: Container[str]) -> Replayed:
    """Every session of `test` (its items in `known`, two or more of them) over the
    socket, JSON and msgpack in turn, with k = 20."""
    out = Replayed()
    for s in range(test.n_sessions):
        items = [i for i in test.session(s).tolist() if i in known]
        if len(items) < 2:
            continue
        async with await Client.open(ws_url, binary=s % 2 == 0) as c:
            welcome, _ = await c.hello(k=20)
            out.models.add(welcome["model"])
            for pos, item in enumerate(items[:-1]):
                _, recs = await c.event(item, id=f"s{s}e{pos}")
                out.models.add(recs["model"])
                ids = [r["item_id"] for r in recs["items"]]
                target = items[pos + 1]
                out.cases += 1
                if target in ids:
                    out.hits += 1
                    out.rr += 1.0 / (ids.index(target) + 1)
    return out


def assert_matches(measured: Mapping[str, float], replayed: Replayed) -> None:
    """The served figures are the measured ones, and the measured ones mean something."""
    assert 0.2 < float(measured["recall@20"]) < 1.0, measured
    assert replayed.cases == measured["cases"]
    recall, mrr = replayed.hits / replayed.cases, replayed.rr / replayed.cases
    assert recall == pytest.approx(float(measured["recall@20"]), abs=1e-9)
    assert mrr == pytest.approx(float(measured["mrr@20"]), abs=1e-9)
