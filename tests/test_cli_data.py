"""Reading data on the command line: named columns for JSON lines, refusing what does
not look like sessions, and progress that suits a log when stderr is not a terminal.

Each command runs as a subprocess with stderr piped (not a terminal)."""

from __future__ import annotations

import json
from pathlib import Path

from .test_cli_errors import one_error_line, run_cli

TINY = ["--set", "model.layers=16", "--set", "n_sample=8", "--set", "batch_size=8"]
TINY += ["--set", "threads=1", "--epochs", "1", "--preset", "rsc15"]


def shop_log(path: Path) -> Path:
    """Sessions as JSON lines with this shop's own field names."""
    with path.open("w") as f:
        for s in range(40):
            for step in range(3):
                record = {"visit": f"v{s}", "sku": f"p{(s + step) % 9}", "at": 1000 * s + step}
                f.write(json.dumps(record) + "\n")
    return path


def test_split_reads_named_json_fields(tmp_path: Path) -> None:
    data = shop_log(tmp_path / "shop.jsonl")
    out = run_cli(
        "split", "--data", str(data), "--out", str(tmp_path / "split"), "--fraction", "0.25",
        "--session-col", "visit", "--item-col", "sku", "--time-col", "at",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    train = (tmp_path / "split" / "train.tsv").read_text().splitlines()
    assert train[0] == "SessionId\tItemId\tTime" and train[1].startswith("v0\tp0\t")
    assert len(train) == 1 + 30 * 3


def test_json_lines_without_named_fields_say_which_flags(tmp_path: Path) -> None:
    data = shop_log(tmp_path / "shop.jsonl")
    out = run_cli("train", "--data", str(data), "--out", str(tmp_path / "m"), *TINY)
    line = one_error_line(out)
    assert "--session-col" in line and "--item-col" in line, line
    assert not (tmp_path / "m").exists()


def test_prose_is_not_taken_for_sessions(tmp_path: Path) -> None:
    prose = tmp_path / "notes.txt"
    prose.write_text(
        "It was the best of times it was the worst of times\n"
        "it was the age of wisdom it was the age of foolishness\n" * 20
    )
    for command in ("train", "split"):
        out = run_cli(command, "--data", str(prose), "--out", str(tmp_path / command), *(
            TINY if command == "train" else ["--fraction", "0.5"]
        ))  # fmt: skip
        line = one_error_line(out)
        assert "does not look like sessions" in line and "--format lines" in line, line
        assert not (tmp_path / command).exists()


def test_progress_is_lines_in_a_log(tmp_path: Path) -> None:
    """Piped: whole lines ending in a "done" summary, never a redrawn bar."""
    db = f"embedded://{tmp_path / 'shop.db'}"
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"item_id": f"p{i}", "title": f"P {i}"}) + "\n"
                             for i in range(5)))  # fmt: skip
    imported = run_cli("catalog", "import", str(items), "--store", db)
    assert imported.returncode == 0, imported.stderr
    exported = run_cli("export-events", "--store", db, "--out", str(tmp_path / "ev.jsonl"))
    assert exported.returncode == 0, exported.stderr
    data = tmp_path / "train.txt"
    data.write_text("".join(f"a{i % 7} a{(i + 1) % 7} b{i % 3}\n" for i in range(60)))
    trained = run_cli("train", "--data", str(data), "--out", str(tmp_path / "m"), *TINY)
    assert trained.returncode == 0, trained.stderr
    for out, done in (
        (imported, "catalog import: done 5/5 items (100%)"),
        (exported, "export-events: done 0 ev"),
        (trained, "epoch 1/1: done "),
    ):
        assert "\r" not in out.stderr, out.stderr
        assert any(line.startswith(done) for line in out.stderr.splitlines()), out.stderr
    quiet = run_cli("export-events", "--store", db, "--out", str(tmp_path / "e2.jsonl"), "--quiet")
    assert quiet.returncode == 0 and "export-events:" not in quiet.stderr, quiet.stderr
