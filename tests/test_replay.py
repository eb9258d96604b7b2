"""What is served is what was measured: replaying held-out sessions through the
running server's WebSocket gives the Recall@20 and MRR@20 that `liverec evaluate
--serving-rules` reports for the same model and split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from liverec.cli import main as liverec_main
from liverec.model.evaluate import evaluate
from liverec.model.formats import load_sessions, write_sessions
from liverec.model.scorer import load_scorer
from liverec.model.train import train

from .replay_helpers import assert_matches, replay
from .servers import LiverecServer
from .tiny_model import REPLAY_CONFIG, walks


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("replay")
    train_path, test_path = d / "train.txt", d / "test.txt"
    write_sessions(walks(1500, 1), train_path, "lines")
    write_sessions(walks(60, 2), test_path, "lines")
    train(
        load_sessions(train_path, fmt="lines"), REPLAY_CONFIG, out_dir=d / "model", progress=False
    )
    return train_path, test_path, d / "model"


async def test_replay_over_websocket_matches_evaluate_serving_rules(
    split: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    train_path, test_path, model_dir = split
    # the command-line figure, as a user would get it
    code = liverec_main(
        [
            "evaluate",
            "--model",
            str(model_dir),
            "--train",
            str(train_path),
            "--test",
            str(test_path),
            "--serving-rules",
            "--json",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    measured = next(v for k, v in printed.items() if k.startswith("gru4rec"))
    scorer, index = load_scorer(model_dir)
    direct = evaluate(
        scorer, index, load_sessions(test_path, fmt="lines"), ks=(20,), serving_rules=True
    )
    assert measured["recall@20"] == pytest.approx(direct["recall@20"])

    test = load_sessions(test_path, fmt="lines")
    server = LiverecServer(
        "memory://",
        model_path=str(model_dir),
        events_per_s=1e6,
        events_burst=10000,
        model_quantize="true",
        # float32 GRU layers and a full-rank shortlist: what `evaluate --serving-rules`
        # scores, so the figures must match exactly (the int8 GRU / low-rank defaults
        # cost 0.1 % of Recall@20 on Diginetica: bench/bench_model.py quality)
        model_quantize_gru="false",
        model_rank="0",
    ).start()
    try:
        replayed = await replay(server.ws_url, test, index)
    finally:
        server.stop()
    assert_matches(measured, replayed)
