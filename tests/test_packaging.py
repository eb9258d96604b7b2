"""What ships: docker-compose.yml passes `docker-compose config`; the wheel carries web/
and an installed copy serves the widget and the demo; the help and the docs list every
setting."""

from __future__ import annotations

import os
import re
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


COMPOSE = shutil.which("docker-compose")


def compose_config(token: str | None) -> subprocess.CompletedProcess[str]:
    assert COMPOSE is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEREC_")}
    if token is not None:
        env["LIVEREC_ADMIN_TOKEN"] = token
    return subprocess.run(
        [COMPOSE, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )


@pytest.mark.skipif(COMPOSE is None, reason="docker-compose not installed")
def test_docker_compose_config_is_valid() -> None:
    out = compose_config("t" * 64)
    assert out.returncode == 0, out.stderr
    assert "appendonly" in out.stdout  # Redis persists what liverec acked
    assert "LIVEREC_STORE_URL: redis://redis:6379/0" in out.stdout
    assert "LIVEREC_ADMIN_TOKEN: " + "t" * 64 in out.stdout  # the operator gets in
    services = ("\n" + out.stdout).split("\nservices:\n", 1)[1].split("\nvolumes:\n", 1)[0]
    blocks = {b.split(":", 1)[0]: b for b in re.split(r"\n  (?=\S)", "\n" + services)[1:]}
    assert set(blocks) == {"learner", "liverec", "redis"}, list(blocks)
    assert "- learn" in blocks["learner"] and "models:/models" in blocks["learner"]
    assert "/readyz" in blocks["liverec"] and "healthcheck" in blocks["redis"]
    assert "models:/models" in blocks["liverec"] and "./models" not in out.stdout


@pytest.mark.skipif(COMPOSE is None, reason="docker-compose not installed")
def test_docker_compose_asks_for_the_admin_token() -> None:
    out = compose_config(None)
    assert out.returncode != 0
    assert "set LIVEREC_ADMIN_TOKEN" in out.stderr, out.stderr


def test_docker_build_context_leaves_out_the_environment() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for name in (".venv", ".git", "data", "models", "test-artifacts"):
        assert name in ignored, name
    dockerfile = (ROOT / ".ci" / "Dockerfile").read_text()
    assert "USER liverec" in dockerfile and "chown liverec:liverec /app/data /models" in dockerfile


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
        shutil.copytree(ROOT / name, tree / name, ignore=IGNORED)
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
        capture_output=True,
        text=True,
        check=True,
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
        [str(python), "-c", "import liverec.server.assets as a; print(a.default_web_dir())"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(site), where.stdout  # the package's copy, not the source's

    port, log = free_port(), tmp_path / "server.log"
    with log.open("wb") as out:  # the child keeps its own descriptor
        server = subprocess.Popen(
            [
                str(venv / "bin" / "liverec"),
                "serve",
                "--port",
                str(port),
                "--store",
                "memory://",
                "--demo",
                "--demo-warmup-sessions",
                "0",
                "--log-level",
                "warning",
            ],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
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


def test_the_package_list_names_every_package() -> None:
    """pyproject.toml lists the packages (web/ is mapped in as liverec.web): a new
    package under src/ must be added there, or the wheel would leave it out."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        ".".join(p.parent.relative_to(ROOT / "src").parts)
        for p in (ROOT / "src").rglob("__init__.py")
    }
    assert set(config["packages"]) == found | {"liverec.web"}
    assert config["package-dir"]["liverec.web"] == "web"
    assert not (ROOT / "src" / "liverec" / "web").exists()  # no link into web/


def test_docs_name_no_paths_of_a_development_machine() -> None:
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        for prefix in ("/work/", "/tmp/", "/root/", "/home/"):
            assert prefix not in text, f"{doc.name} names {prefix}..."


def test_operations_doc_lists_every_liverec_series() -> None:
    """Every liverec_* family a server exports is in docs/operations.md's table."""
    from prometheus_client.parser import text_string_to_metric_families

    from liverec.metrics import Metrics
    from liverec.recommend.base import MODEL_FIGURES
    from liverec.server.gc_policy import GcPolicy

    metrics = Metrics()
    metrics.set_models(lambda: {"a": "online"})
    GcPolicy(None, metrics)
    for name, help in MODEL_FIGURES.items():
        kind = "counter" if name.endswith("_total") else "gauge"
        metrics.add_gauge(name, help, lambda: 0.0, kind)
    doc = (ROOT / "docs" / "operations.md").read_text()
    for family in text_string_to_metric_families(metrics.render()):
        if family.name.startswith("liverec_"):
            shown = family.name + ("_total" if family.type == "counter" else "")
            assert f"`{shown}`" in doc, shown
