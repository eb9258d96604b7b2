"""Model families per store: `liverec train --family`, a directory served by the family
its metadata names, and for each family served = offline under the serving rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from liverec.cli import main as liverec_main
from liverec.model.evaluate import evaluate
from liverec.model.formats import load_sessions
from liverec.recommend.family import family_scorer, train_family

from .replay_helpers import assert_matches, replay
from .servers import LiverecServer
from .tiny_model import REPLAY_CONFIG, walks
from .wsclient import Client

DAY = 86400.0
CONFIG = REPLAY_CONFIG


def write_walks(path: Path, n: int, seed: int, start: float) -> None:
    """`tiny_model.walks(n, seed)` with times, one session every ~5 minutes from
    `start`: 1500 sessions span about five days."""
    sessions = walks(n, seed)
    rows = ["SessionId\tItemId\tTime"]
    for s in range(sessions.n_sessions):
        t = start + s * 300.0
        for e, item in enumerate(sessions.session(s).tolist()):
            rows.append(f"{seed}-{s}\t{item}\t{t + e * 10.0}")
    path.write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("family")
    write_walks(d / "train.tsv", 1500, 1, 1_700_000_000.0)
    write_walks(d / "test.tsv", 60, 2, 1_700_000_000.0 + 6 * DAY)
    return d / "train.tsv", d / "test.tsv"


@pytest.fixture(scope="module")
def models(data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    train = load_sessions(data[0])
    d = tmp_path_factory.mktemp("family-models")
    out = {}
    for family in ("vsknn", "hybrid"):
        train_family(family, train, CONFIG, d / family)
        out[family] = d / family
    return out


@pytest.mark.parametrize("family", ["vsknn", "hybrid"])
async def test_replay_over_websocket_matches_offline_evaluation(
    family: str, data: tuple[Path, Path], models: dict[str, Path]
) -> None:
    model_dir = models[family]
    meta = json.loads((model_dir / "meta.json").read_text())
    assert meta["family"] == family
    name, scorer, index = family_scorer(model_dir)
    assert name == family
    test = load_sessions(data[1])
    measured = evaluate(scorer, index, test, ks=(20,), serving_rules=True, batch_size=1)
    server = LiverecServer(
        "memory://",
        model_path=str(model_dir),
        vsknn_live="off",  # the index is the directory's: what was measured offline
        events_per_s=1e6,
        events_burst=10000,
    ).start()
    try:
        replayed = await replay(server.ws_url, test, index.index)
    finally:
        server.stop()
    assert replayed.models == {meta["version"] if family == "hybrid" else "vsknn"}
    assert_matches(measured, replayed)


def test_hybrid_weight_is_chosen_on_the_last_day_of_the_training_data(
    models: dict[str, Path], data: tuple[Path, Path]
) -> None:
    meta = json.loads((models["hybrid"] / "meta.json").read_text())
    selection = meta["selection"]
    train = load_sessions(data[0])
    last_day = train.start_times() >= float(train.times.max()) - DAY
    assert selection["valid_sessions"] == int(last_day.sum()) > 0
    tried = {k: v for k, v in selection["validation"].items() if k.startswith("hybrid w=")}
    best = max(tried.values(), key=lambda f: (f["recall@20"], f["mrr@20"]))
    assert meta["hybrid"]["weight"] == selection["weight"]
    assert tried[f"hybrid w={selection['weight']:g}"] == best


def test_auto_writes_the_validation_winner_and_evaluate_scores_it(
    data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "auto"
    selection = train_family("auto", load_sessions(data[0]), CONFIG, out)
    figures = selection["validation"]
    assert {"gru4rec", "vsknn", "hybrid"} <= set(figures)
    key = lambda f: (figures[f]["recall@20"], figures[f]["mrr@20"])  # noqa: E731
    assert selection["winner"] == max(("gru4rec", "vsknn", "hybrid"), key=key)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["family"] == selection["winner"] and meta["selection"] == selection
    code = liverec_main(
        [
            "evaluate",
            "--model",
            str(out),
            "--test",
            str(data[1]),
            "--baselines",
            "none",
            "--serving-rules",
            "--json",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed) == [selection["winner"]]
    assert 0.2 < printed[selection["winner"]]["recall@20"] < 1.0


def test_an_unknown_family_in_the_metadata_stops_the_server_in_one_line(
    models: dict[str, Path], tmp_path: Path
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    meta = json.loads((models["vsknn"] / "meta.json").read_text())
    (bad / "meta.json").write_text(json.dumps({**meta, "family": "bogus"}))
    cmd = [sys.executable, "-m", "liverec.cli", "serve", "--model", str(bad)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "family 'bogus' is not one of gru4rec, vsknn, hybrid" in (
        done.stderr + done.stdout
    )
    assert "Traceback" not in done.stderr


def test_train_refuses_an_unknown_family() -> None:
    cmd = [
        sys.executable,
        "-m",
        "liverec.cli",
        "train",
        "--data",
        "x",
        "--out",
        "y",
        "--family",
        "knn",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "invalid choice: 'knn'" in done.stderr


DEMO_MODEL = Path(__file__).resolve().parents[1] / "models" / "demo"


async def test_an_ab_candidate_may_be_any_family(models: dict[str, Path]) -> None:
    server = LiverecServer(
        "memory://", model_path=str(DEMO_MODEL), ab_model_path=str(models["vsknn"]), ab_share=1.0
    ).start()
    try:
        async with await Client.open(server.ws_url) as c:
            await c.hello(k=5)
            _, recs = await c.event("i3-4")
        assert recs["model"] == "vsknn" and len(recs["items"]) == 5
    finally:
        server.stop()
