"""`liverec` input errors: one clear line on stderr, a non-zero exit, never a traceback.

Each case runs the real command in a subprocess with a clean environment (no
`LIVEREC_*` variable but the case's own).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .servers import free_port


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LIVEREC_")}
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "liverec.cli", *args],
        env=clean,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    """The process failed with exactly one stderr line (after uvicorn's start-up lines)."""
    assert out.returncode not in (0, None), (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    assert len(errors) == 1, out.stderr
    assert errors[0] == lines[-1], out.stderr
    return errors[0]


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (["serve", "--port", "abc"], {}, ["--port", "'abc'", "integer"]),
        (["serve", "--log-level", "verbose"], {}, ["--log-level", "verbose", "debug"]),
        (["serve", "--demo", "ture"], {}, ["--demo", "ture", "boolean"]),
        (["serve", "--events-per-s", "fast"], {}, ["--events-per-s", "fast"]),
        (["serve", "--no-such-flag", "1"], {}, ["--no-such-flag"]),
        (["serve"], {"LIVEREC_DEMO": "ture"}, ["LIVEREC_DEMO", "ture", "boolean"]),
        (["serve"], {"LIVEREC_PORT": "80x"}, ["LIVEREC_PORT", "80x"]),
        (["serve"], {"LIVEREC_LOG_FORMAT": "xml"}, ["LIVEREC_LOG_FORMAT", "json"]),
        (["serve"], {"LIVEREC_STORE_ULR": "memory://"}, ["LIVEREC_STORE_ULR", "STORE_URL"]),
        (["serve", "--max-k", "0"], {}, ["max_k"]),
        (["serve", "--store", "postgres://x/y"], {}, ["store_url", "postgres://x/y"]),
        (["serve", "--model", "models/nope"], {}, ["model_path", "models/nope"]),
        (["serve", "--vsknn-data", "sessions/nope.txt"], {}, ["vsknn_data", "sessions/nope.txt"]),
        (["catalog", "import", "missing.jsonl", "--store", "memory://"], {}, ["missing.jsonl"]),
        (["export-events", "--store", "embedded://./none.db", "--out", "x.jsonl"], {}, ["none.db"]),
        (["train", "--data", "missing.tsv", "--out", "m"], {}, ["missing.tsv"]),
        (["learn", "--learn-mode", "guess"], {}, ["--learn-mode", "guess"]),
        (["token", "u1"], {}, ["LIVEREC_JWT_SECRET"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_input_is_one_line_and_a_non_zero_exit(
    tmp_path: Path, args: list[str], env: dict[str, str], names: list[str]
) -> None:
    out = run_cli(*args, env=env, cwd=tmp_path)
    line = one_error_line(out)
    for name in names:
        assert name in line, line
    assert list(tmp_path.iterdir()) == []  # no database, no output file left behind


def test_store_unreachable_at_start_is_one_line(tmp_path: Path) -> None:
    """A failure inside the app's start-up (the store cannot be opened) is reported
    by `liverec serve` itself, not as uvicorn's traceback."""
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    out = run_cli("serve", "--port", "0", "--store", url, cwd=tmp_path)
    line = one_error_line(out)
    assert line.startswith("liverec: error:") and "unreachable" in line, line
    assert "Application startup failed" not in out.stderr


def test_version() -> None:
    from liverec import __version__

    out = run_cli("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"liverec {__version__}"
