"""The Prometheus exposition: series from the start, bounded label sets, a valid document.

The document is read back with prometheus-client's parser, and checked with
`promtool check metrics` (Debian's prometheus package) where it is installed.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from liverec.metrics import (
    CLOSE_CODES,
    ERROR_CODES,
    MAX_FEEDBACK_SERIES,
    Counter,
    Histogram,
    Metrics,
)
from liverec.types import ACTIONS

from .servers import LiverecServer
from .wsclient import Client


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


def test_counter_caps_client_chosen_label_values() -> None:
    c = Counter("x_total", "help", ("arm", "placement"), max_series=3)
    for i in range(10):
        c.inc("a", f"p{i}")
    c.inc("a", "p0")
    assert c.get("a", "p0") == 2 and c.get("other", "other") == 7
    assert len(c.values) == 4


def test_histogram_buckets_are_cumulative() -> None:
    m = Metrics()
    h = Histogram("lat_seconds", "help", buckets=(0.001, 0.01), labels=("arm",))
    m.extra.append(h)
    for v in (0.0005, 0.005, 0.5):
        h.observe(v, "a")
    text = m.render()
    assert value(text, "lat_seconds_bucket", arm="a", le="0.001") == 1
    assert value(text, "lat_seconds_bucket", arm="a", le="0.01") == 2
    assert value(text, "lat_seconds_bucket", arm="a", le="+Inf") == 3
    assert value(text, "lat_seconds_count", arm="a") == 3
    assert value(text, "lat_seconds_sum", arm="a") == pytest.approx(0.5055)


def test_counters_start_at_zero_for_every_known_label() -> None:
    """A rate() alert on a counter sees 0 before the first event, not "no data"."""
    m = Metrics()
    m.set_models(lambda: {"a": "online"})
    text = m.render()
    for action in ACTIONS:
        assert value(text, "liverec_events_total", action=action) == 0, action
    for code in CLOSE_CODES:
        assert value(text, "liverec_closes_total", code=code) == 0, code
    for code in ERROR_CODES:
        assert value(text, "liverec_errors_total", code=code) == 0, code
    for name in (
        "liverec_duplicate_events_total",
        "liverec_connections_total",
        "liverec_store_failures_total",
        "liverec_replaced_recs_total",
        "liverec_store_write_seconds_count",
    ):
        assert value(text, name) == 0, name
    assert value(text, "liverec_event_to_recs_seconds_count", arm="a") == 0


def test_promotions_do_not_grow_the_label_sets() -> None:
    """Series are labelled by A/B arm; the versions live in liverec_model_info."""
    m = Metrics()
    served = {"a": "gru4rec-0", "b": "gru4rec-b0"}
    m.set_models(lambda: dict(served))
    for n in range(50):  # fifty promotions on each arm
        served["a"], served["b"] = f"gru4rec-{n}", f"gru4rec-b{n}"
        m.recs_latency.observe(0.002, served["a"])
        m.recs_latency.observe(0.003, served["b"])
        m.impressions.inc(served["b"], "product")
        m.rec_clicks.inc(served["a"], "home")
        m.impressions.inc("gru4rec-retired", "home")  # feedback on a list of an old model
    assert set(m.recs_latency.series) == {("a",), ("b",)}
    assert m.recs_latency.count("a") == m.recs_latency.count("b") == 50
    assert set(m.impressions.values) == {("b", "product"), ("a", "home")}
    assert m.impressions.get("b", "product") == m.rec_clicks.get("a", "home") == 50
    text = m.render()
    info = {k: v for k, v in samples(text).items() if k[0] == "liverec_model_info"}
    assert info == {
        ("liverec_model_info", (("arm", "a"), ("version", "gru4rec-49"))): 1.0,
        ("liverec_model_info", (("arm", "b"), ("version", "gru4rec-b49"))): 1.0,
    }


def test_feedback_counters_are_bounded() -> None:
    m = Metrics()
    for i in range(MAX_FEEDBACK_SERIES + 50):
        m.impressions.inc("online", f"placement-{i}")
    assert len(m.impressions.values) == MAX_FEEDBACK_SERIES + 1
    text = m.render()
    assert value(text, "liverec_rec_impressions_total", arm="other", placement="other") == 50


async def test_served_metrics_are_a_valid_exposition() -> None:
    """A real server's /metrics: process and GC series, liverec's own series counting
    what was sent, and a document promtool (or the client's parser) accepts."""
    server = LiverecServer("memory://").start()
    try:
        before = server.get_text("/metrics")
        assert value(before, "liverec_events_total", action="view") == 0
        client = await Client.open(server.ws_url, origin=server.base)
        await client.hello()
        for item in ("i1", "i2", "i3"):
            await client.event(item)
        await client.event("i2", action="add_to_cart")
        await client.ws.close()
        text = server.get_text("/metrics")
    finally:
        server.stop()
    names = {family.name for family in text_string_to_metric_families(text)}
    standard = {"process_cpu_seconds", "process_resident_memory_bytes", "python_gc_collections"}
    assert standard <= names, names
    assert value(text, "liverec_events_total", action="view") == 3
    assert value(text, "liverec_events_total", action="add_to_cart") == 1
    assert value(text, "liverec_events_total", action="purchase") == 0
    assert value(text, "liverec_connections_total") == 1
    assert value(text, "liverec_event_to_recs_seconds_count", arm="a") == 4
    assert value(text, "liverec_model_info", arm="a", version="online") == 1
    if PROMTOOL is not None:
        promtool_check(text)


PROMTOOL = shutil.which("promtool")


def promtool_check(text: str) -> None:
    assert PROMTOOL is not None
    out = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian: prometheus) not installed")
def test_promtool_accepts_every_kind_of_series() -> None:
    m = Metrics()
    m.set_models(lambda: {"a": "gru4rec-1", "b": "gru4rec-2"})
    m.add_gauge("liverec_model_batches_total", "Micro-batches scored.", lambda: 3.0, "counter")
    m.recs_latency.observe(0.004, "gru4rec-2")
    m.impressions.inc("gru4rec-1", 'a "quoted" \\ placement')
    promtool_check(m.render())
