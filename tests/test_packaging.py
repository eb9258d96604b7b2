"""What ships: docker-compose.yml passes `docker-compose config`; the wheel carries web/
and an installed copy serves the widget and the demo; the help and the docs list every
setting."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from .servers import free_port

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


IGNORED = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")


def _pip(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=300, env=env
    )


@pytest.mark.slow
def test_wheel_carries_web_assets_and_serves_them(tmp_path: Path) -> None:
    """Build the wheel, install it (no dependencies) into a fresh virtualenv that sees
    this environment's packages but not this source tree, and serve the widget and the
    demo store from the installed package."""
    tree, dist = tmp_path / "tree", tmp_path / "dist"  # a copy: no build/ left in the repo
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    for name in ("src", "web"):
        shutil.copytree(ROOT / name, tree / name, symlinks=True, ignore=IGNORED)
    built = _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(tree))
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("liverec-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    for asset in ("widget/liverec.js", "demo/layout.html", "feed/index.html"):
        assert f"liverec/web/{asset}" in names, sorted(names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEREC_", "PYTHON"))}
    installed = _pip(
        "--python", str(python), "install", "--no-deps", "--no-index", str(wheel), env=env
    )
    assert installed.returncode == 0, installed.stderr
    assert (Path(site) / "liverec" / "web" / "widget" / "liverec.js").is_file()
    # Then the dependencies (torch included) from this environment, as a plain path:
    # its .pth files (an editable liverec, say) are not processed.
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    where = subprocess.run(
        [str(python), "-c", "import liverec.server.app as a; print(a.default_web_dir())"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(site), where.stdout  # the package's copy, not the source's

    port, log = free_port(), tmp_path / "server.log"
    with log.open("wb") as out:  # the child keeps its own descriptor
        server = subprocess.Popen(
            [str(venv / "bin" / "liverec"), "serve", "--port", str(port), "--store", "memory://",
             "--demo", "--demo-warmup-sessions", "0", "--log-level", "warning"],
            env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "installed server did not start"
                time.sleep(0.1)
        with urllib.request.urlopen(base + "/widget/liverec.js", timeout=5) as r:
            assert r.read() == (ROOT / "web" / "widget" / "liverec.js").read_bytes()
        with urllib.request.urlopen(base + "/demo", timeout=5) as r:
            page = r.read().decode()
        assert r.status == 200 and "/widget/liverec.js" in page
    finally:
        server.terminate()
        server.wait(30)
