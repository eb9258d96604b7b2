"""The model families a learning round chooses between (`learn_family`).

Owns: which candidates a round builds for a family set (gru4rec: the GRU4Rec
candidate, as before; vsknn: a session index of the training part; hybrid: the two
fused, its weight chosen by `liverec.recommend.family.search_weight`; auto: all three), how
each is scored on the round's held-out sessions, the winner (by
`liverec.recommend.family.balanced` against the single families, GRU4Rec and
V-SkNN, scored too when only the hybrid is wanted: the rule of `liverec train
--family auto`), the scorer of a
served directory of any family, and writing the winner's directory. The winner is
then judged against the served model by the learner's usual rule (learner.py).

The vsknn and hybrid candidates index the round's training part, the sessions the
GRU4Rec candidate was trained on, so what is measured is what is served.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ..model.checkpoint import save_checkpoint
from ..model.data import ItemIndex, Sessions
from ..model.evaluate import StepScorer
from ..model.formats import write_sessions
from ..model.moments import ScoreMoments
from ..model.scorer import GRUScorer
from ..recommend.family import (
    RULE,
    VSKNN_PARAMS,
    balanced,
    family_scorer,
    hybrid_meta,
    search_weight,
    write_vsknn,
)
from ..recommend.hybrid import SESSIONS, HybridScorer
from ..recommend.vsknn import SessionIndex, VSKNNScorer
from .finetune import Candidate

FAMILY_SETS: Final = {
    "gru4rec": ("gru4rec",),
    "vsknn": ("vsknn",),
    "hybrid": ("hybrid",),
    "auto": ("gru4rec", "vsknn", "hybrid"),
}

Run = Callable[[StepScorer], dict[str, float]]  # held-out figures of a scorer
Mapped = Callable[[GRUScorer | HybridScorer, ItemIndex], StepScorer]  # onto the round's items


def needs_gru(families: str) -> bool:
    return any(f != "vsknn" for f in FAMILY_SETS[families])


@dataclass(slots=True)
class Choice:
    """A round's family candidates on the held-out sessions and the one chosen."""

    family: str
    weight: float | None  # the hybrid's, when it was tried
    figures: dict[str, dict[str, float]] = field(default_factory=dict)
    knn: SessionIndex | None = None

    def record(self, families: str) -> dict[str, Any]:
        """What the written directory's meta.json keeps under `selection`."""
        return {
            "learn_family": families,
            "winner": self.family,
            "weight": self.weight,
            "validation": self.figures,
            "rule": RULE,
        }


def choose(
    families: str,
    gru: Candidate | None,
    train: Sessions,
    union: ItemIndex,
    run: Run,
    mapped: Mapped,
) -> Choice:
    """Score the family set's candidates with `run` and pick the best (module docstring)."""
    wanted = FAMILY_SETS[families]
    figures: dict[str, dict[str, float]] = {}
    knn = None
    hybrid = "hybrid" in wanted  # the single families are its reference: scored too
    if gru is not None and ("gru4rec" in wanted or hybrid):
        figures["gru4rec"] = run(mapped(GRUScorer(gru.model), gru.item_index))
    if "vsknn" in wanted or hybrid:
        knn = SessionIndex(**VSKNN_PARAMS)
        knn.add_sessions(train.session(s).tolist() for s in range(train.n_sessions))
        figures["vsknn"] = run(VSKNNScorer(knn, union))
    key = balanced([figures[f] for f in ("gru4rec", "vsknn") if f in figures])
    weight = None
    if gru is not None and knn is not None and "hybrid" in wanted:
        moments = ScoreMoments(gru.model.item_weight.data, gru.model.item_bias.data)
        model, index, sessions = gru.model, gru.item_index, knn

        def score(w: float) -> dict[str, float]:
            return run(mapped(HybridScorer(model, index, sessions, w, moments), index))

        weight, best, tried = search_weight(score, key=key, zero=figures.get("gru4rec"))
        figures.update(tried)
        figures["hybrid"] = best
    winner = max((f for f in wanted if f in figures), key=lambda f: key(figures[f]))
    return Choice(winner, weight, figures, knn)


def served_scorer(
    directory: Path, union: ItemIndex, mapped: Mapped
) -> tuple[str, StepScorer, ItemIndex]:
    """(family, scorer over `union`'s items, own item index) of a served directory."""
    family, scorer, index = family_scorer(directory)
    if isinstance(scorer, VSKNNScorer):
        return family, VSKNNScorer(scorer.index, union), index
    assert isinstance(scorer, GRUScorer | HybridScorer)
    return family, mapped(scorer, index), index


def write(
    choice: Choice,
    staged: Path,
    gru: Candidate | None,
    train: Sessions,
    meta: dict[str, Any],
) -> None:
    """The chosen family's model directory in `staged`, `meta` in its meta.json."""
    if choice.family == "vsknn":
        write_vsknn(staged, train, meta)
        return
    assert gru is not None
    if choice.family == "hybrid":
        assert choice.weight is not None
        meta = hybrid_meta(choice.weight, meta)
        write_sessions(train, staged / SESSIONS)
    save_checkpoint(staged, gru.model, gru.config, gru.item_index, meta)
