"""Run real liverec server processes for tests: `liverec serve` on a free port."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiverecServer:
    """A `liverec serve` subprocess (real uvicorn) bound to 127.0.0.1:<free port>."""

    def __init__(
        self,
        store_url: str = "memory://",
        port: int | None = None,
        nofile: int | None = None,
        **settings: Any,
    ):
        """nofile: the server process's descriptor limit (set in the child only, so the
        test process keeps its own, whatever it holds open at the time)."""
        self.store_url = store_url
        self.port = port or free_port()
        self.nofile = nofile
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="liverec-server-", suffix=".log")[1])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def start(self, timeout: float = 120.0) -> LiverecServer:
        # `timeout` only bounds a failure: a busy machine can take long to import torch
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEREC_")}
        env["LIVEREC_STORE_URL"] = self.store_url
        env["LIVEREC_LOG_LEVEL"] = "warning"
        for key, value in self.settings.items():
            env["LIVEREC_" + key.upper()] = str(value)
        cmd = [sys.executable, "-m", "liverec.cli", "serve", "--port", str(self.port)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=self._limits
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=0.5) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.kill()  # not left running (and not reported again as a ResourceWarning)
        raise RuntimeError(f"server did not start within {timeout} s:\n{self.log()}")

    def _limits(self) -> None:  # runs in the child, between fork and exec
        if self.nofile is not None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, hard))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (graceful shutdown) and wait; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def get_json(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def post_json(
        self, path: str, body: Any, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path,
            data=data,
            method="POST",
            headers={"content-type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def get_text(self, path: str) -> str:
        with urllib.request.urlopen(self.base + path, timeout=5) as r:
            return str(r.read().decode())
