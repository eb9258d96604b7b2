"""Shared fixtures: a private redis-server on a free port (never the machine's own);
an open embedded store (on a file of the test's own directory, or in memory); for
the widget's browser tests, Chromium and a store site on its own origin, one of each
per test module."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from liverec.store import Store, StoreLimits, open_store

from .servers import free_port
from .widgetsite import ShopSite, launch_browser

# Hypothesis times each example (200 ms deadline) and its input generation (health
# check too_slow): both fail a test on a busy machine for a reason that is not its
# property. Outcomes here are the properties alone.
settings.register_profile("liverec", deadline=None, suppress_health_check=[HealthCheck.too_slow])
# `bash .ci/dev mutate` runs the in-process tests once per mutant: derandomised Hypothesis
# (same examples every run, no example database) makes each mutant's verdict repeatable.
settings.register_profile(
    "mutate", parent=settings.get_profile("liverec"), derandomize=True, database=None
)
settings.load_profile(os.environ.get("LIVEREC_HYPOTHESIS_PROFILE") or "liverec")


class RedisServer:
    """A redis-server process this test run started and owns."""

    def __init__(self, port: int, workdir: Path, appendonly: bool = True) -> None:
        self.port = port
        self.workdir = workdir
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server is not installed (run .ci/run or apt-get install redis-server)"
            )
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--dir",
            str(self.workdir),
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60  # a failure bound: loading a big AOF on a busy machine
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private redis-server for the whole run; tests use distinct key prefixes or dbs."""
    workdir = Path(tempfile.mkdtemp(prefix="liverec-redis-"))
    server = RedisServer(free_port(), workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


_db_counter = iter(range(1, 16))


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A URL on the private server with a database no other test in this run used."""
    try:
        db = next(_db_counter)
    except StopIteration:  # more than 15 tests: fall back to key prefixes
        db = 0
    return (
        f"redis://127.0.0.1:{redis_server.port}/{db}?prefix=t{os.getpid()}x{time.monotonic_ns()}:"
    )


class RedisClusterServers:
    """A 3-master Redis Cluster (no replicas) this test run started and owns."""

    def __init__(self, ports: list[int], workdir: Path, appendonly: bool = False) -> None:
        self.ports = ports
        self.workdir = workdir
        self.appendonly = appendonly
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL naming the first node."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self) -> None:
        cli = shutil.which("redis-cli")
        if shutil.which("redis-server") is None or cli is None:
            pytest.fail("redis-server and redis-cli are needed (apt-get install redis-server)")
        self.procs = [self._spawn(port) for port in self.ports]
        for port in self.ports:
            self._wait_for(port, "PING", "PONG")
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
        )
        for port in self.ports:
            self._wait_for(port, "CLUSTER INFO", "cluster_state:ok")

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        args = [shutil.which("redis-server") or "redis-server", "--port", str(port)]
        args += ["--bind", "127.0.0.1", "--cluster-enabled", "yes"]
        args += ["--cluster-config-file", str(self.workdir / f"nodes-{port}.conf")]
        args += ["--save", "", "--appendonly", "yes" if self.appendonly else "no"]
        args += ["--appendfilename", f"appendonly-{port}.aof"]
        args += ["--appenddirname", f"aof-{port}", "--appendfsync", "everysec"]
        args += ["--daemonize", "no", "--dir", str(self.workdir), "--loglevel", "warning"]
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill(self, index: int) -> None:
        """SIGKILL one master (its append-only file, when on, keeps what it acked)."""
        self.procs[index].kill()
        self.procs[index].wait()

    def restart(self, index: int) -> None:
        """Start a killed master again on its port, config and data; wait until the
        cluster is ok on every node."""
        self.procs[index] = self._spawn(self.ports[index])
        for port in self.ports:
            self._wait_for(port, "CLUSTER INFO", "cluster_state:ok")

    @staticmethod
    def _wait_for(port: int, command: str, expected: str) -> None:
        cli = shutil.which("redis-cli") or "redis-cli"
        # A failure bound only. A master that other nodes marked FAIL (after
        # cluster-node-timeout, when a busy machine delayed its restart) rejoins only
        # after twice that timeout: 30 s with Redis' default of 15 s.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            reply = subprocess.run(
                [cli, "-h", "127.0.0.1", "-p", str(port), *command.split()],
                capture_output=True,
                text=True,
                timeout=5,
            )
            if expected in reply.stdout:
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {port} never answered {expected!r}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []


def free_cluster_ports(count: int) -> list[int]:
    """`count` free loopback ports below 55535 whose cluster bus port (+10000) is free."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port >= 55535 or port in ports:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """One private 3-master Redis Cluster for the whole run; tests use distinct prefixes."""
    workdir = Path(tempfile.mkdtemp(prefix="liverec-cluster-"))
    cluster = RedisClusterServers(free_cluster_ports(3), workdir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisClusterServers) -> str:
    """A URL on the private cluster with a key prefix no other test in this run used."""
    return f"{redis_cluster.url}?prefix=t{os.getpid()}x{time.monotonic_ns()}:"


@pytest.fixture
async def embedded_store(tmp_path: Path) -> AsyncIterator[Store]:
    """The embedded store on a file in the test's tmp_path, open; closed after the test."""
    s = open_store(f"embedded://{tmp_path}/live.db", StoreLimits())
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def memory_store() -> AsyncIterator[Store]:
    """The embedded store on an in-memory database, open; closed after the test."""
    s = open_store("memory://", StoreLimits())
    await s.open()
    yield s
    await s.close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's Chromium under Playwright (tests/widgetsite.py), for one test module."""
    yield from launch_browser()


@pytest.fixture(scope="module")
def shop() -> Iterator[ShopSite]:
    """A store site on its own origin (tests/widgetsite.py), for one test module."""
    site = ShopSite()
    yield site
    site.close()
