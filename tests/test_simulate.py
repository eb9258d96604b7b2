"""`liverec simulate`: bounded synthetic shoppers over real sockets, loopback only."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from liverec.errors import ConfigError
from liverec.simulate import SimConfig, check_loopback, run

from .servers import LiverecServer


@pytest.mark.parametrize(
    "url", ["ws://127.0.0.1:8000/v1/ws", "ws://localhost:1/v1/ws", "wss://[::1]:9/v1/ws"]
)
def test_loopback_urls_are_accepted(url: str) -> None:
    check_loopback(url)


@pytest.mark.parametrize(
    "url",
    ["ws://10.0.0.7:8000/v1/ws", "ws://example.com/v1/ws", "http://127.0.0.1:8000/", "ws:///x"],
)
def test_other_hosts_are_refused(url: str) -> None:
    with pytest.raises(ConfigError):
        check_loopback(url)


@pytest.mark.parametrize(
    "changes", [{"shoppers": 0}, {"shoppers": 501}, {"duration_s": 0}, {"duration_s": 4000}]
)
def test_bounds(changes: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        SimConfig(**changes)  # type: ignore[arg-type]


def _events_total(metrics: str) -> int:
    return sum(
        int(float(v)) for v in re.findall(r"^liverec_events_total\{[^}]*\} (\S+)$", metrics, re.M)
    )


async def test_shoppers_drive_the_server_and_every_event_is_answered() -> None:
    srv = LiverecServer("memory://", demo="on", demo_warmup_sessions=0).start()
    try:
        report = await run(SimConfig(srv.ws_url, shoppers=6, duration_s=2.0, think_s=0.02))
        summary = report.to_dict()
        assert summary["errors"] == {}
        assert report.events > 20 and report.sessions >= 6
        assert report.acked == report.events == report.recs == len(report.latencies_s)
        assert _events_total(srv.get_text("/metrics")) == report.events  # all reached the server
    finally:
        srv.stop()


def test_cli_prints_a_summary_and_refuses_remote_hosts() -> None:
    srv = LiverecServer("memory://", demo="on", demo_warmup_sessions=0).start()
    try:
        cmd = [sys.executable, "-m", "liverec.cli", "simulate", "--url", srv.ws_url]
        done = subprocess.run(
            [*cmd, "--shoppers", "2", "--duration", "1", "--think-ms", "20", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert summary["events"] > 0 and summary["acked"] == summary["events"]
        assert summary["latency_ms"]["p50"] is not None
    finally:
        srv.stop()
    refused = subprocess.run(
        [sys.executable, "-m", "liverec.cli", "simulate", "--url", "ws://192.0.2.1/v1/ws"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "on this machine" in refused.stderr
