"""`liverec train` writes a checkpoint that `liverec evaluate` and the server load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from liverec.cli import main as liverec_main
from liverec.model.checkpoint import load_checkpoint
from liverec.model.data import Sessions
from liverec.model.formats import write_sessions

TINY = [
    "--set",
    "model.layers=16",
    "--set",
    "n_sample=8",
    "--set",
    "batch_size=8",
    "--set",
    "threads=1",
    "--epochs",
    "2",
    "--quiet",
]


def _data(tmp_path: Path) -> Path:
    sessions = Sessions.from_lists(
        [[f"a{i % 7}", f"a{(i + 1) % 7}", f"b{i % 3}"] for i in range(60)]
    )
    path = tmp_path / "train.txt"
    write_sessions(sessions, path, "lines")
    return path


def test_train_then_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _data(tmp_path)
    out = tmp_path / "model"
    assert (
        liverec_main(["train", "--data", str(data), "--out", str(out), *TINY, "--preset", "rsc15"])
        == 0
    )
    _model, config, index, meta = load_checkpoint(out)
    assert config.model.layers == (16,) and config.n_epochs == 2 and config.loss == "cross-entropy"
    assert len(index) == 10 and meta["version"].startswith("gru4rec-")
    assert meta["data_fingerprint"]
    capsys.readouterr()
    assert (
        liverec_main(
            [
                "evaluate",
                "--model",
                str(out),
                "--train",
                str(data),
                "--test",
                str(data),
                "--baselines",
                "pop",
                "--json",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"gru4rec", "pop"}
    assert 0.0 <= result["gru4rec"]["recall@20"] <= 1.0


@pytest.mark.parametrize(
    "bad",
    [
        ["--set", "nonsense=1"],
        ["--set", "n_epochs=x"],
        ["--set", "loss=hinge"],
        ["--preset", "nope"],
    ],
)
def test_bad_parameters_are_clear_errors(
    tmp_path: Path, bad: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    data = _data(tmp_path)
    code = liverec_main(["train", "--data", str(data), "--out", str(tmp_path / "m"), *bad])
    assert code == 2
    assert "liverec: error:" in capsys.readouterr().err


def test_missing_data_file(tmp_path: Path) -> None:
    assert (
        liverec_main(["train", "--data", str(tmp_path / "nope.tsv"), "--out", str(tmp_path / "m")])
        == 2
    )
