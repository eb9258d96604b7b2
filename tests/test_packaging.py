"""The deployment files are valid: docker-compose.yml passes `docker-compose config`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_config_is_valid() -> None:
    out = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert "appendonly" in out.stdout  # Redis persists what liverec acked
    assert "LIVEREC_STORE_URL: redis://redis:6379/0" in out.stdout


def test_cli_help_lists_every_setting() -> None:
    from liverec.cli import build_parser
    from liverec.config import setting_docs

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    serve_help = sub.choices["serve"].format_help()  # type: ignore[attr-defined]
    for _, env, _, _ in setting_docs():
        assert env in serve_help, env


def test_configuration_doc_is_current() -> None:
    from liverec.config import markdown_table

    assert markdown_table() in (ROOT / "docs" / "configuration.md").read_text()
