"""The Prometheus exposition: series, histograms, and bounded label sets."""

from __future__ import annotations

from liverec.metrics import MAX_FEEDBACK_SERIES, Counter, Histogram, Metrics


def test_counter_caps_client_chosen_label_values() -> None:
    c = Counter("x_total", "help", ("model", "placement"), max_series=3)
    for i in range(10):
        c.inc("m", f"p{i}")
    c.inc("m", "p0")
    assert c.get("m", "p0") == 2 and c.get("other", "other") == 7
    assert len(c.values) == 4


def test_render_histogram_buckets_are_cumulative() -> None:
    h = Histogram("lat_seconds", "help", buckets=(0.001, 0.01), labels=("model",))
    for v in (0.0005, 0.005, 0.5):
        h.observe(v, "online")
    text = "\n".join(h.render())
    assert 'lat_seconds_bucket{model="online",le="0.001"} 1' in text
    assert 'lat_seconds_bucket{model="online",le="0.01"} 2' in text
    assert 'lat_seconds_bucket{model="online",le="+Inf"} 3' in text
    assert 'lat_seconds_count{model="online"} 3' in text


def test_feedback_counters_are_bounded_and_rendered() -> None:
    m = Metrics()
    for i in range(MAX_FEEDBACK_SERIES + 50):
        m.impressions.inc("online", f"placement-{i}")
    assert len(m.impressions.values) == MAX_FEEDBACK_SERIES + 1
    text = m.render()
    assert 'liverec_rec_impressions_total{model="other",placement="other"} 50' in text
    assert text.endswith("\n") and "# TYPE liverec_event_to_recs_seconds histogram" in text
