"""The scaled docker-compose example passes `docker-compose config`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = shutil.which("docker-compose")


@pytest.mark.skipif(COMPOSE is None, reason="docker-compose not installed")
def test_scaled_compose_config_is_valid() -> None:
    assert COMPOSE is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEREC_")}
    env["LIVEREC_ADMIN_TOKEN"] = "t" * 64
    out = subprocess.run(
        [COMPOSE, "-f", str(ROOT / "docker-compose.scale.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    services = ("\n" + out.stdout).split("\nservices:\n", 1)[1].split("\nvolumes:\n", 1)[0]
    names = set(re.findall(r"^  (\S+):$", services, re.MULTILINE))
    replicas = {n for n in names if n.startswith("liverec-")}
    assert len(replicas) >= 2 and {"redis", "proxy", "learner"} <= names, names
    # every replica shares the one Redis; the proxy sends to every replica
    assert out.stdout.count("LIVEREC_STORE_URL: redis://redis:6379/0") == len(replicas) + 1
    for name in replicas:
        assert f"{name}:8000" in out.stdout, name
