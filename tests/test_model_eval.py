"""Offline evaluation protocol (model/evaluate.py) on hand-made scorers with known ranks,
and the `evaluate` and `split` commands (model_commands.py) end to end."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from liverec.errors import LiverecError, ModelError
from liverec.model.data import ItemIndex, Sessions, fingerprint
from liverec.model.evaluate import StepScorer, evaluate, format_table, mask_served, ranks
from liverec.model.formats import load_sessions
from liverec.model_commands import register

INDEX = ItemIndex(["i0", "i1", "i2", "i3", "i4", "i5"])


class TableScorer:
    """Scores depend only on the item consumed: row `table[item]`."""

    name = "table"

    def __init__(self, table: np.ndarray) -> None:
        self.table = np.asarray(table, dtype=np.float32)
        self.n_items = self.table.shape[1]

    def reset(self, n_slots: int) -> None:
        pass

    def step(self, slots: np.ndarray, items: np.ndarray, new: np.ndarray) -> np.ndarray:
        return self.table[items].copy()


class RecordingScorer:
    """Remembers every call; scores the previous item of the slot highest, so a
    state mix-up between slots or sessions changes the metrics."""

    name = "recording"
    n_items = 6

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, bool]] = []
        self.prev: dict[int, int] = {}
        self.n_slots = 0

    def reset(self, n_slots: int) -> None:
        self.n_slots = n_slots
        self.prev = {}

    def step(self, slots: np.ndarray, items: np.ndarray, new: np.ndarray) -> np.ndarray:
        out = np.zeros((len(slots), self.n_items), dtype=np.float32)
        for r, (s, i, n) in enumerate(
            zip(slots.tolist(), items.tolist(), new.tolist(), strict=True)
        ):
            assert 0 <= s < self.n_slots
            self.calls.append((s, i, n))
            if n:
                self.prev.pop(s, None)
            if s in self.prev:
                out[r, self.prev[s]] = 1.0
            self.prev[s] = i
        return out


def sessions(*rows: str) -> Sessions:
    return Sessions.from_lists([r.split() for r in rows])


def test_scorer_classes_satisfy_the_protocol() -> None:
    # The test doubles below stand in for real scorers: they must offer every member the
    # protocol declares (read from StepScorer itself, so a new member fails here).
    members = set(StepScorer.__annotations__) | {
        name for name, value in vars(StepScorer).items() if callable(value) and name[0] != "_"
    }
    assert {"name", "n_items", "reset", "step"} <= members
    for scorer in (TableScorer(np.eye(6)), RecordingScorer()):
        missing = {m for m in members if not hasattr(scorer, m)}
        assert not missing, (type(scorer).__name__, missing)


def test_ranks_count_ties_against_the_target() -> None:
    scores = np.array([[3, 1, 1, 1, 0], [0, 0, 0, 0, 0], [5, 4, 3, 2, 1]], dtype=np.float32)
    assert ranks(scores, np.array([1, 4, 0])).tolist() == [3, 4, 0]
    nan = np.array([[np.nan, 1, 2]], dtype=np.float32)
    assert ranks(nan, np.array([0])).tolist() == [3]


def test_recall_boundary_and_mrr_values() -> None:
    # from i0 the next item is scored: i1 > i2 > i3 > i4 > i5 > i0
    row = np.array([0, 6, 5, 4, 3, 2], dtype=np.float32)
    table = np.tile(row, (6, 1))
    # targets: i1 (rank 0), i3 (rank 2), i5 (rank 4)
    test = sessions("i0 i1", "i0 i3", "i0 i5")
    res = evaluate(TableScorer(table), INDEX, test, ks=(2, 3, 5))
    assert res["cases"] == 3 and res["sessions"] == 3
    assert res["recall@2"] == pytest.approx(1 / 3)  # rank 2 is not in a list of 2
    assert res["recall@3"] == pytest.approx(2 / 3)  # rank 2 = K-1 is a hit
    assert res["recall@5"] == pytest.approx(1.0)  # rank 4 = K-1 is a hit
    assert res["mrr@2"] == pytest.approx(1 / 3)
    assert res["mrr@3"] == pytest.approx((1 + 1 / 3) / 3)
    assert res["mrr@5"] == pytest.approx((1 + 1 / 3 + 1 / 5) / 3)


def test_ties_are_pessimistic_in_metrics() -> None:
    # everything tied: the target is behind the 5 other items
    test = sessions("i0 i1")
    res = evaluate(TableScorer(np.ones((6, 6))), INDEX, test, ks=(5, 6))
    assert res["recall@5"] == 0.0
    assert res["recall@6"] == 1.0
    assert res["mrr@6"] == pytest.approx(1 / 6)


def test_every_event_after_the_first_is_a_target_and_unknown_items_are_dropped() -> None:
    table = np.eye(6, k=1)  # from i_j the best next item is i_{j+1}
    test = sessions("i0 i1 i2 i3", "i2 zz i3 i5", "zz i4", "i4 i5")
    res = evaluate(TableScorer(table), INDEX, test, ks=(1,))
    # session 1 becomes i2 i3 i5 (zz dropped), session 2 is too short and dropped
    assert res["sessions"] == 3
    assert res["cases"] == 3 + 2 + 1
    assert res["recall@1"] == pytest.approx(5 / 6)  # only i3 -> i5 misses


def test_items_beyond_the_scorer_vocabulary_are_dropped() -> None:
    scorer = TableScorer(np.eye(4, k=1))  # covers i0..i3 of a 6-item index
    res = evaluate(scorer, INDEX, sessions("i0 i1 i5", "i4 i5"), ks=(1,))
    assert res["cases"] == 1 and res["recall@1"] == 1.0


@pytest.mark.parametrize("batch_size", [1, 2, 3, 100])
def test_session_parallel_slots_reset_once_per_session(batch_size: int) -> None:
    test = sessions("i0 i1 i0 i1", "i2 i3", "i4 i5 i4", "i1 i1", "i3 i2 i3 i2 i3")
    scorer = RecordingScorer()
    res = evaluate(scorer, INDEX, test, ks=(1,), batch_size=batch_size)
    assert scorer.n_slots == min(batch_size, 5)
    assert res["cases"] == 3 + 1 + 2 + 1 + 4
    assert sum(n for _, _, n in scorer.calls) == 5  # one reset per session
    assert len(scorer.calls) == res["cases"]  # the last event of a session is not fed
    # "previous item" is a hit exactly where s[t+1] == s[t-1] within the same session
    assert res["recall@1"] == pytest.approx((2 + 0 + 1 + 0 + 3) / 11)
    # each session's events reach one slot, in order
    by_slot: dict[int, list[int]] = {}
    for s, i, n in scorer.calls:
        by_slot.setdefault(s, []).extend([-1, i] if n else [i])
    fed = sorted(tuple(x) for seq in by_slot.values() for x in _split(seq))
    expected = sorted(
        tuple(INDEX.encode(r.split())[:-1].tolist())
        for r in ("i0 i1 i0 i1", "i2 i3", "i4 i5 i4", "i1 i1", "i3 i2 i3 i2 i3")
    )
    assert fed == expected


def _split(seq: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for x in seq:
        if x == -1:
            out.append([])
        else:
            out[-1].append(x)
    return out


def test_serving_rules_never_rank_the_current_item() -> None:
    # the scorer likes the current item best, then i5
    table = np.eye(6) * 2.0
    table[:, 5] = 1.0
    test = sessions("i0 i0", "i1 i5")
    plain = evaluate(TableScorer(table), INDEX, test, ks=(1,))
    assert plain["recall@1"] == pytest.approx(0.5)  # the repeat is a hit
    served = evaluate(TableScorer(table), INDEX, test, ks=(1,), serving_rules=True)
    assert served["recall@1"] == pytest.approx(0.5)  # the repeat can't be; i5 moved up
    assert served["mrr@1"] == pytest.approx(0.5)


def test_mask_served_rows_and_batches() -> None:
    row = np.arange(5, dtype=np.float32)
    mask_served(row, 2, {4})
    assert row.tolist() == [0, 1, -np.inf, 3, -np.inf]
    batch = np.zeros((2, 4), dtype=np.float32)
    mask_served(batch, np.array([0, 3]))
    assert np.isneginf(batch).tolist() == [[True, False, False, False], [False] * 3 + [True]]


def test_coverage_counts_distinct_items_in_top_lists() -> None:
    table = np.tile(np.array([0, 5, 4, 3, 2, 1], dtype=np.float32), (6, 1))
    table[2] = [9, 0, 0, 0, 0, 8]  # from i2: i0 then i5
    res = evaluate(TableScorer(table), INDEX, sessions("i0 i1", "i2 i3"), ks=(1, 2))
    assert res["coverage@1"] == pytest.approx(2 / 6)  # i1, i0
    assert res["coverage@2"] == pytest.approx(4 / 6)  # i1 i2, i0 i5


def test_wrong_score_shape_is_a_model_error() -> None:
    class Bad(TableScorer):
        def step(self, slots: np.ndarray, items: np.ndarray, new: np.ndarray) -> np.ndarray:
            return np.zeros((len(slots), 3), dtype=np.float32)

    with pytest.raises(ModelError, match="shape"):
        evaluate(Bad(np.eye(6)), INDEX, sessions("i0 i1"))


def test_empty_test_set() -> None:
    res = evaluate(TableScorer(np.eye(6)), INDEX, sessions("zz i1"))
    assert res["cases"] == 0 and res["recall@20"] == 0.0


def test_format_table_has_one_row_per_model() -> None:
    res = {
        "gru4rec": {"recall@20": 0.5408, "mrr@20": 0.1827, "cases": 60858, "seconds": 12.5},
        "pop": {"recall@20": 0.0093, "mrr@20": 0.0021, "cases": 60858, "seconds": 1.0},
    }
    lines = format_table(res).splitlines()
    assert lines[0].split() == ["model", "recall@20", "mrr@20", "cases", "seconds"]
    assert lines[2].split() == ["gru4rec", "0.5408", "0.1827", "60858", "12.5"]
    assert lines[3].split()[0] == "pop"
    assert format_table({}) == "(no results)"


# --------------------------------------------------------------------------- commands


def run_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="liverec")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


def clickstream(path: Path) -> Path:
    """Four days of sessions where x is always followed by y, then two late ones."""
    rows = ["SessionId\tItemId\tTime"]
    day = 86400.0
    for s in range(40):
        t = s * day / 10
        items = ["x", "y", f"p{s % 5}"] if s % 2 else [f"p{s % 5}", "x", "y"]
        rows += [f"s{s}\t{item}\t{t + j * 60:.3f}" for j, item in enumerate(items)]
    rows += ["late\tx\t%.3f" % (5.5 * day), "late\ty\t%.3f" % (5.5 * day + 60)]
    rows += ["unseen\tnew1\t%.3f" % (5.6 * day), "unseen\tx\t%.3f" % (5.6 * day + 60)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_split_then_evaluate_baselines_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = clickstream(tmp_path / "clicks.tsv")
    out = tmp_path / "split"
    assert run_command(["split", "--data", str(data), "--out", str(out), "--days", "1"]) == 0
    meta = json.loads((out / "split.json").read_text())
    assert meta["format"] == "sessionrec" and meta["method"] == "time" and meta["days"] == 1.0
    assert meta["fingerprint"] == fingerprint(data)
    # test: sessions starting after day 4.6 (s39 at 3.9 is train): late; unseen loses new1
    assert meta["test"]["sessions"] == 1 and meta["test"]["cases"] == 1
    assert meta["train"]["sessions"] == 40
    assert json.loads(capsys.readouterr().out) == meta
    test = load_sessions(out / "test.tsv")
    assert [test.session(i).tolist() for i in range(test.n_sessions)] == [["x", "y"]]
    assert load_sessions(out / "train.tsv").n_events == 120

    argv = ["evaluate", "--train", str(out / "train.tsv"), "--test", str(out / "test.tsv")]
    assert run_command([*argv, "--json", "--k", "1,20"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert list(res) == ["pop", "iknn", "vsknn", "markov"]
    for name in ("iknn", "markov"):
        assert res[name]["recall@1"] == 1.0, name
    assert res["vsknn"]["mrr@20"] == 0.5  # x (the current item) ties with y: rank 1
    for key in ("recall@20", "mrr@20", "coverage@20", "cases", "seconds", "fit_seconds"):
        assert key in res["pop"]
    assert res["markov"]["cases"] == 1

    assert run_command([*argv, "--baselines", "pop,markov", "--serving-rules"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["model", "recall@5", "mrr@5"]
    assert [line.split()[0] for line in table[2:]] == ["pop", "markov"]


def test_split_by_fraction_for_untimed_data(tmp_path: Path) -> None:
    data = tmp_path / "s.txt"
    data.write_text("1 2\n2 3\n1 2 3\n3 1\n", encoding="utf-8")
    out = tmp_path / "o"
    with pytest.raises(LiverecError, match="--fraction"):
        run_command(["split", "--data", str(data), "--out", str(out)])
    assert run_command(["split", "--data", str(data), "--out", str(out), "--fraction", "0.25"]) == 0
    assert json.loads((out / "split.json").read_text())["test"]["sessions"] == 1
    assert (out / "test.tsv").read_text().splitlines()[1:] == ["3\t3\tnan", "3\t1\tnan"]


def test_command_errors_exit_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from liverec.cli import main

    missing = str(tmp_path / "missing.tsv")
    assert main(["evaluate", "--train", missing, "--test", missing]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("foo,bar\n1,2\n", encoding="utf-8")
    assert main(["split", "--data", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "session" in capsys.readouterr().err
    good = clickstream(tmp_path / "c.tsv")
    assert main(["evaluate", "--test", str(good)]) == 2
    assert "--train" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--test", str(good), "--train", str(good), "--baselines", "gru"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        run_command(["evaluate", "--test", str(good), "--k", "0"])
