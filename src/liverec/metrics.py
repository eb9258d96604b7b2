"""The server's Prometheus metrics: liverec's own series and the process's.

Owns: the counters, gauges and histograms liverec exports on /metrics, kept as plain
numbers on the hot path (a dict increment per event) and turned into metric
families by one custom collector of prometheus-client when /metrics is scraped;
the standard `process_*`, `python_gc_*` and `python_info` series come from
prometheus-client's own collectors in the same registry.

Label sets are bounded: every label value a counter knows in advance (actions, close
codes, error codes, A/B arms) is exported from the start with 0, so a `rate()` alert
sees 0 rather than no data; recommendation series are labelled by A/B arm ("a", or
"b" under a split) and `liverec_model_info` names the version each arm serves, so a
promotion does not add series; client-chosen placements are capped (`max_series`).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .types import ACTIONS

# Event-to-recs latency buckets, seconds.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)

MAX_FEEDBACK_SERIES = 200  # (arm, placement) pairs exported before "other"
MAX_CODE_SERIES = 100  # error and close codes (chosen by the server; a safety cap)
ARMS = ("a", "b")
# WebSocket close codes (and HTTP statuses of refused handshakes) the server uses.
CLOSE_CODES = ("1000", "1008", "1009", "1011", "1012", "1013", "403", "429")
# Error frame codes the server sends (docs/protocol.md).
ERROR_CODES = (
    "bad_json",
    "bad_msgpack",
    "bad_frame",
    "bad_type",
    "unknown_type",
    "missing_field",
    "bad_field",
    "bad_id",
    "bad_action",
    "hello_required",
    "already_hello",
    "too_many_events",
    "unknown_recs",
    "frame_too_large",
    "rate_limited",
    "store_unavailable",
    "forbidden",
)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Relabel = Callable[[tuple[str, ...]], tuple[str, ...]]


class Counter:
    """A counter. `known` label values are exported from the start (an unlabelled
    counter always is); with `max_series`, label values beyond that many series (e.g.
    client-chosen placements) are counted under "other" so /metrics stays bounded;
    `relabel` maps the labels a caller gives to the exported ones (version -> arm)."""

    def __init__(
        self,
        name: str,
        help: str,
        labels: tuple[str, ...] = (),
        max_series: int | None = None,
        known: Iterable[tuple[str, ...]] = (),
        relabel: Relabel | None = None,
    ) -> None:
        self.name, self.help, self.label_names = name, help, labels
        self.max_series = max_series
        self.relabel = relabel
        self.values: dict[tuple[str, ...], float] = {} if labels else {(): 0.0}
        for key in known:
            self.values[key] = 0.0

    def inc(self, *labels: str, by: float = 1.0) -> None:
        if self.relabel is not None:
            labels = self.relabel(labels)
        if (
            self.max_series is not None
            and labels not in self.values
            and len(self.values) >= self.max_series
        ):
            labels = tuple("other" for _ in labels)
        self.values[labels] = self.values.get(labels, 0.0) + by

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0.0)

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.help, labels=self.label_names)
        for key, value in sorted(self.values.items()):
            family.add_metric(list(key), value)
        return family


class Gauge:
    """A value read when /metrics is scraped; kind "counter" for one that only grows
    (kept by its owner, e.g. the recommender's batch count)."""

    def __init__(
        self, name: str, help: str, read: Callable[[], float], kind: str = "gauge"
    ) -> None:
        self.name, self.help, self.read, self.kind = name, help, read, kind

    def family(self) -> Metric:
        if self.kind == "counter":
            return CounterMetricFamily(self.name, self.help, value=self.read())
        return GaugeMetricFamily(self.name, self.help, value=self.read())


class Histogram:
    def __init__(
        self,
        name: str,
        help: str,
        buckets: tuple[float, ...] = LATENCY_BUCKETS,
        labels: tuple[str, ...] = (),
        known: Iterable[tuple[str, ...]] = (),
        relabel: Relabel | None = None,
    ) -> None:
        self.name, self.help, self.buckets, self.label_names = name, help, buckets, labels
        self.relabel = relabel
        self.series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}
        for key in known if labels else [()]:
            self._entry(key)

    def _entry(self, key: tuple[str, ...]) -> tuple[list[int], list[float]]:
        return self.series.setdefault(key, ([0] * (len(self.buckets) + 1), [0.0]))

    def observe(self, value: float, *labels: str) -> None:
        if self.relabel is not None:
            labels = self.relabel(labels)
        counts, totals = self._entry(labels)
        counts[bisect.bisect_left(self.buckets, value)] += 1
        totals[0] += value

    def observe_none(self, *labels: str) -> None:
        """Export the series (all zero) before its first observation."""
        self._entry(labels)

    def count(self, *labels: str) -> int:
        entry = self.series.get(labels)
        return sum(entry[0]) if entry else 0

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.help, labels=self.label_names)
        for key, (counts, totals) in sorted(self.series.items()):
            running, buckets = 0, []
            for bound, n in zip(self.buckets, counts, strict=False):
                running += n
                buckets.append((_bound(bound), float(running)))
            running += counts[-1]
            buckets.append(("+Inf", float(running)))
            family.add_metric(list(key), buckets, totals[0])
        return family


def _bound(value: float) -> str:
    return repr(float(value))


class Series(Collector):
    """prometheus-client's view of liverec's series: built at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for series in self.metrics.all_series():
            yield series.family()
        versions = self.metrics.model_versions()
        if versions:
            info = InfoMetricFamily(
                "liverec_model", "The model version each A/B arm serves.", labels=("arm",)
            )
            for arm, version in sorted(versions.items()):
                info.add_metric([arm], {"version": version})
            yield info


class Metrics:
    """Every series liverec exports; one instance per server process."""

    def __init__(self) -> None:
        self.connections_open = 0
        # arm -> version; set by the server once the recommender is built
        self.model_versions: Callable[[], dict[str, str]] = dict
        self._split = False
        self.events = Counter(
            "liverec_events_total",
            "Accepted events by action.",
            ("action",),
            known=[(a,) for a in ACTIONS],
        )
        self.duplicates = Counter("liverec_duplicate_events_total", "Events acked again.")
        self.errors = Counter(
            "liverec_errors_total",
            "Error frames and closes by code.",
            ("code",),
            max_series=MAX_CODE_SERIES,
            known=[(c,) for c in ERROR_CODES],
        )
        self.connections = Counter("liverec_connections_total", "WebSocket connections accepted.")
        self.closes = Counter(
            "liverec_closes_total",
            "Connections closed by code.",
            ("code",),
            max_series=MAX_CODE_SERIES,
            known=[(c,) for c in CLOSE_CODES],
        )
        arm_known = [("a",)]
        self.recs_latency = Histogram(
            "liverec_event_to_recs_seconds",
            "Time from an event frame's arrival to its recs frame being queued, by A/B arm.",
            labels=("arm",),
            known=arm_known,
            relabel=self._arm_first,
        )
        self.store_latency = Histogram(
            "liverec_store_write_seconds", "Time to durably record one event."
        )
        self.store_failures = Counter(
            "liverec_store_failures_total", "Events the store could not record (not acked)."
        )
        self.dropped_frames = Counter(
            "liverec_replaced_recs_total", "Unsent recs frames replaced by newer ones."
        )
        self.impressions = Counter(
            "liverec_rec_impressions_total",
            "Recs frames the client reported as seen, by A/B arm and placement.",
            ("arm", "placement"),
            max_series=MAX_FEEDBACK_SERIES,
            relabel=self._arm_first,
        )
        self.rec_clicks = Counter(
            "liverec_rec_clicks_total",
            "Clicks on recommended items, by A/B arm and placement.",
            ("arm", "placement"),
            max_series=MAX_FEEDBACK_SERIES,
            relabel=self._arm_first,
        )
        self.extra: list[Counter | Histogram] = []  # series owned by other parts
        self._gauges = [
            Gauge(
                "liverec_connections_open",
                "Open WebSocket connections.",
                lambda: float(self.connections_open),
            )
        ]
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(Series(self))

    def set_models(self, versions: Callable[[], dict[str, str]]) -> None:
        """Where the served versions come from (arm -> version, read at each scrape and
        each count); the arms' latency series start at 0."""
        self.model_versions = versions
        arms = versions()
        self._split = "b" in arms  # fixed at start: a server has an A/B split or not
        for arm in arms:
            self.recs_latency.observe_none(arm)

    def arm(self, version: str) -> str:
        """The A/B arm ("a" or "b") whose model has this version; "a" when not split
        or when the version is no longer served (a late feedback frame)."""
        if not self._split:
            return "a"
        versions = self.model_versions()
        return "b" if versions.get("b") == version and versions.get("a") != version else "a"

    def _arm_first(self, labels: tuple[str, ...]) -> tuple[str, ...]:
        return (self.arm(labels[0]), *labels[1:]) if labels else labels

    def add_gauge(
        self, name: str, help: str, read: Callable[[], float], kind: str = "gauge"
    ) -> None:
        self._gauges.append(Gauge(name, help, read, kind))

    def all_series(self) -> Sequence[Counter | Gauge | Histogram]:
        return [
            *self._gauges,
            self.connections,
            self.closes,
            self.events,
            self.duplicates,
            self.errors,
            self.recs_latency,
            self.store_latency,
            self.store_failures,
            self.dropped_frames,
            self.impressions,
            self.rec_clicks,
            *self.extra,
        ]

    def render(self) -> str:
        """The Prometheus text exposition (format 0.0.4) of every series."""
        text: Any = generate_latest(self.registry)
        return str(text.decode("utf-8"))
