"""Session loaders, writers, fingerprints and the train/test splits (model/data.py, split.py)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from liverec.errors import LiverecError
from liverec.model.data import DataError, ItemIndex, Sessions, build_sessions, encode, fingerprint
from liverec.model.formats import cut_streams, detect_format, load_sessions, write_sessions
from liverec.model.split import last_fraction, time_split

DAY = 86400.0


def as_lists(s: Sessions) -> list[list[str]]:
    return [s.session(i).tolist() for i in range(s.n_sessions)]


def write(path: Path, text: str, gz: bool = False) -> Path:
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- layouts

SESSIONREC = "SessionId\tItemId\tTime\n2\tc\t30.0\n1\ta\t10.5\n1\tb\t12.0\n2\td\t25.0\n"


@pytest.mark.parametrize("gz", [False, True])
def test_sessionrec_tsv_orders_sessions_by_start_and_events_by_time(
    tmp_path: Path, gz: bool
) -> None:
    p = write(tmp_path / ("x.tsv.gz" if gz else "x.tsv"), SESSIONREC, gz)
    assert detect_format(p) == "sessionrec"
    s = load_sessions(p)
    assert s.session_ids.tolist() == ["1", "2"]
    assert as_lists(s) == [["a", "b"], ["d", "c"]]
    assert s.times.tolist() == [10.5, 12.0, 25.0, 30.0]
    assert s.timed


def test_equal_times_keep_file_order(tmp_path: Path) -> None:
    p = write(tmp_path / "x.tsv", "SessionId\tItemId\tTime\n1\tz\t5\n1\ty\t5\n1\tx\t4\n")
    assert as_lists(load_sessions(p)) == [["x", "z", "y"]]


def test_yoochoose_clicks_dat(tmp_path: Path) -> None:
    text = (
        "1,2014-04-07T10:54:09.868Z,214536500,0\n"
        "1,2014-04-07T10:51:09.277Z,214536502,0\n"
        "2,2014-04-06T08:00:00.000Z,214662742,S\n"
    )
    p = write(tmp_path / "clicks.dat", text)
    assert detect_format(p) == "yoochoose"
    s = load_sessions(p)
    assert s.session_ids.tolist() == ["2", "1"]
    assert as_lists(s) == [["214662742"], ["214536502", "214536500"]]
    assert s.times[1] == pytest.approx(1396867869.277)


def test_diginetica_orders_by_timeframe_and_dates_sessions(tmp_path: Path) -> None:
    text = (
        "session_id;user_id;item_id;timeframe;eventdate\n"
        "1;NA;81766;526309;2016-05-09\n"
        "1;NA;31331;1031018;2016-05-09\n"
        "1;NA;32118;243569;2016-05-09\n"
        "2;7;9654;75848;2016-01-02"
    )  # no trailing newline, as in the real file
    p = write(tmp_path / "train-item-views.csv", text)
    assert detect_format(p) == "diginetica"
    s = load_sessions(p)
    assert s.session_ids.tolist() == ["2", "1"]
    assert as_lists(s)[1] == ["32118", "81766", "31331"]
    may9 = float(np.datetime64("2016-05-09").astype("datetime64[s]").astype(np.int64))
    assert s.times[1] == pytest.approx(may9 + 243.569)


def test_retailrocket_cuts_visitor_streams_by_gap(tmp_path: Path) -> None:
    text = (
        "timestamp,visitorid,event,itemid,transactionid\n"
        "1000000,7,view,a,\n"
        "1600000,7,view,b,\n"  # +600 s: same session
        "9000000,7,addtocart,c,\n"  # +7400 s: new session
        "1200000,8,view,d,\n"
        "1300000,8,transaction,d,42\n"
    )
    p = write(tmp_path / "events.csv", text)
    assert detect_format(p) == "retailrocket"
    s = load_sessions(p)
    assert s.session_ids.tolist() == ["7:1", "8:1", "7:2"]
    assert as_lists(s) == [["a", "b"], ["d", "d"], ["c"]]
    assert s.times[0] == 1000.0
    views = load_sessions(p, actions={"view"}, gap_s=10000.0)
    assert as_lists(views) == [["a", "b"], ["d"]]


def test_cut_streams_counts_sessions_per_user() -> None:
    s = cut_streams(
        ["u", "v", "u", "u"], ["1", "2", "3", "4"], np.array([0.0, 5.0, 10.0, 100.0]), 50
    )
    assert s.session_ids.tolist() == ["u:1", "v:1", "u:2"]
    assert as_lists(s) == [["1", "3"], ["2"], ["4"]]


@pytest.mark.parametrize("gz", [False, True])
def test_lines_layout(tmp_path: Path, gz: bool) -> None:
    p = write(tmp_path / ("s.txt.gz" if gz else "s.txt"), "1 2\n3 4 5\n\n6\n", gz)
    assert detect_format(p) == "lines"
    s = load_sessions(p)
    assert as_lists(s) == [["1", "2"], ["3", "4", "5"], ["6"]]
    assert not s.timed
    assert np.isnan(s.times).all()


def test_liverec_export_drops_duplicate_event_ids_and_filters_actions(tmp_path: Path) -> None:
    rows = [
        {"id": "e1", "session_id": "s1", "action": "view", "item_id": "A", "ts": 10.0},
        {"id": "e2", "session_id": "s1", "action": "purchase", "item_id": "B", "ts": 12.0},
        {"id": "e2", "session_id": "s1", "action": "purchase", "item_id": "B", "ts": 12.0},
        {"id": "e1", "session_id": "s0", "action": "view", "item_id": "C", "ts": 5.0,
         "user_id": "u", "rating": None},
    ]  # fmt: skip
    p = write(tmp_path / "log.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    assert detect_format(p) == "liverec"
    s = load_sessions(p)
    assert s.session_ids.tolist() == ["s0", "s1"]
    assert as_lists(s) == [["C"], ["A", "B"]]
    assert as_lists(load_sessions(p, actions={"view"})) == [["C"], ["A"]]


def test_generic_jsonl_needs_columns(tmp_path: Path) -> None:
    p = write(tmp_path / "x.jsonl", '{"s": 1, "i": "a", "t": "2024-01-01T00:00:01Z"}\n')
    assert detect_format(p) == "jsonl"
    with pytest.raises(DataError, match="session_col"):
        load_sessions(p)
    s = load_sessions(p, session_col="s", item_col="i", time_col="t")
    assert as_lists(s) == [["a"]]
    assert s.times[0] == pytest.approx(1704067201.0)


def test_generic_csv_with_named_and_guessed_columns(tmp_path: Path) -> None:
    p = write(tmp_path / "x.csv", "user,sess,product,when,kind\nu,9,p1,3,buy\nu,9,p2,1,view\n")
    s = load_sessions(p, session_col="sess", item_col="product", time_col="when")
    assert as_lists(s) == [["p2", "p1"]]
    only = load_sessions(
        p, fmt="csv", session_col="sess", item_col="product", action_col="kind", actions={"view"}
    )
    assert as_lists(only) == [["p2"]]
    q = write(tmp_path / "y.csv", "session_id;item_id;timestamp\n1;a;2\n1;b;1\n")
    assert as_lists(load_sessions(q)) == [["b", "a"]]
    with pytest.raises(DataError, match="session"):
        load_sessions(write(tmp_path / "z.csv", "foo,bar\n1,2\n"))


def test_errors_are_liverec_errors(tmp_path: Path) -> None:
    with pytest.raises(LiverecError, match="no such file"):
        load_sessions(tmp_path / "missing.tsv")
    with pytest.raises(DataError, match="unknown format"):
        load_sessions(write(tmp_path / "a.txt", "1 2\n"), fmt="parquet")
    with pytest.raises(DataError, match="empty"):
        load_sessions(write(tmp_path / "e.txt", ""))
    bad = write(tmp_path / "bad.tsv", "SessionId\tItemId\tTime\n1\ta\n")
    with pytest.raises(DataError, match="columns"):
        load_sessions(bad)


def test_missing_times_make_data_untimed(tmp_path: Path) -> None:
    p = write(tmp_path / "x.tsv", "SessionId\tItemId\tTime\n5\ta\tnan\n3\tb\t1\n5\tc\t0\n")
    s = load_sessions(p)
    assert s.session_ids.tolist() == ["5", "3"]  # first appearance
    assert as_lists(s) == [["a", "c"], ["b"]]
    assert not s.timed


# --------------------------------------------------------------------------- writing


@pytest.mark.parametrize("name", ["out.tsv", "out.tsv.gz"])
def test_write_tsv_round_trip(tmp_path: Path, name: str) -> None:
    s = build_sessions(["1", "1", "2"], ["a", "b", "c"], np.array([1.5, 2.25, 0.125]))
    write_sessions(s, tmp_path / name)
    back = load_sessions(tmp_path / name)
    assert as_lists(back) == as_lists(s) == [["c"], ["a", "b"]]
    assert back.times.tolist() == s.times.tolist()
    assert fingerprint(back) == fingerprint(s)


def test_write_untimed_tsv_and_lines_round_trip(tmp_path: Path) -> None:
    s = Sessions.from_lists([["3", "1"], ["2", "2", "9"]])
    write_sessions(s, tmp_path / "u.tsv")
    assert as_lists(load_sessions(tmp_path / "u.tsv")) == as_lists(s)
    write_sessions(s, tmp_path / "u.txt", fmt="lines")
    assert (tmp_path / "u.txt").read_text() == "3 1\n2 2 9\n"
    with pytest.raises(DataError):
        write_sessions(s, tmp_path / "u.parquet", fmt="parquet")


def test_fingerprint_of_files_and_sessions(tmp_path: Path) -> None:
    a = write(tmp_path / "a.txt", "1 2\n")
    b = write(tmp_path / "b.txt", "1 3\n")
    assert fingerprint(a) == fingerprint(str(a))
    assert fingerprint(a) != fingerprint(b)
    assert len(fingerprint(a)) == 64
    assert fingerprint(load_sessions(a)) != fingerprint(load_sessions(b))
    assert fingerprint(load_sessions(a)) == fingerprint(Sessions.from_lists([["1", "2"]]))


def test_encode_drops_unknown_items_then_short_sessions() -> None:
    s = Sessions.from_lists([["a", "x", "b"], ["x", "a"], ["b", "a", "b", "a"]])
    offsets, codes, kept = encode(s, ItemIndex(["a", "b"]))
    assert kept.tolist() == [0, 2]
    assert offsets.tolist() == [0, 2, 6]
    assert codes.tolist() == [0, 1, 1, 0, 1, 0]
    _, codes1, kept1 = encode(s, ItemIndex(["a", "b"]), n_items=1)
    assert kept1.tolist() == [2] and codes1.tolist() == [0, 0]


def test_sessions_select_and_filter_events() -> None:
    s = Sessions.from_lists([["a", "b"], ["c"], ["d", "e", "f"]], times=[[1, 2], [3], [4, 5, 6]])
    sub = s.select(np.array([2, 0]))
    assert as_lists(sub) == [["d", "e", "f"], ["a", "b"]]
    assert sub.times.tolist() == [4, 5, 6, 1, 2]
    kept = s.filter_events(s.items != "e", min_length=2)
    assert as_lists(kept) == [["a", "b"], ["d", "f"]]
    assert kept.session_ids.tolist() == ["0", "2"]


# --------------------------------------------------------------------------- splits


def timed_sessions() -> Sessions:
    # latest event at day 10.0; the test window of 1 day starts at day 9.0
    rows = [
        ("old", "a", 1.0), ("old", "b", 1.1), ("old", "c", 1.2),
        ("short", "a", 2.0),
        ("spans", "b", 8.9), ("spans", "c", 9.2),  # starts before the boundary: train
        ("edge", "a", 9.0), ("edge", "b", 9.1),  # starts exactly on the boundary: test
        ("late", "a", 9.5), ("late", "zz", 9.6), ("late", "c", 9.7),  # zz unseen in train
        ("gone", "zz", 9.8), ("gone", "b", 10.0),  # one known event left: dropped
    ]  # fmt: skip
    return build_sessions(
        [r[0] for r in rows], [r[1] for r in rows], np.array([r[2] * DAY for r in rows])
    )


def test_time_split_by_session_start() -> None:
    train, test = time_split(timed_sessions(), days=1.0)
    assert train.session_ids.tolist() == ["old", "spans"]  # "short" (1 event) dropped
    assert test.session_ids.tolist() == ["edge", "late"]
    assert as_lists(test) == [["a", "b"], ["a", "c"]]


def test_time_split_options() -> None:
    train, test = time_split(timed_sessions(), days=1.0, by="end")
    assert "spans" in test.session_ids.tolist()
    train, _ = time_split(timed_sessions(), days=1.0, min_length=1)
    assert "short" in train.session_ids.tolist()
    _, wide = time_split(timed_sessions(), days=1.5)
    assert "spans" in wide.session_ids.tolist()
    with pytest.raises(DataError, match="timestamps"):
        time_split(Sessions.from_lists([["a", "b"]]))
    with pytest.raises(DataError):
        time_split(timed_sessions(), days=0)


def test_test_items_unseen_in_cleaned_train_are_dropped() -> None:
    # "q" appears in train only in a 1-event session, which the cleaning drops
    s = build_sessions(
        ["t1", "t1", "t2", "x", "x", "x"],
        ["a", "b", "q", "a", "q", "b"],
        np.array([0.0, 1.0, 2.0, 5 * DAY, 5 * DAY + 1, 5 * DAY + 2]),
    )
    train, test = time_split(s, days=1.0)
    assert as_lists(train) == [["a", "b"]]
    assert as_lists(test) == [["a", "b"]]


def test_last_fraction_uses_stored_order() -> None:
    s = Sessions.from_lists([["a", "b"], ["b", "c"], ["a", "q"], ["c", "a", "b"]])
    train, test = last_fraction(s, fraction=0.5)
    assert as_lists(train) == [["a", "b"], ["b", "c"]]
    assert as_lists(test) == [["c", "a", "b"]]  # ["a", "q"] lost q, then was too short
    with pytest.raises(DataError):
        last_fraction(s, fraction=1.0)
