"""Process metrics in the Prometheus text exposition format.

Owns: the counters, gauges and histograms the server exports on /metrics. Plain
Python, no I/O, no third-party client: a handful of series does not need one.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable

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


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    parts = []
    for n, v in zip(names, values, strict=True):
        escaped = v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        parts.append(f'{n}="{escaped}"')
    return "{" + ",".join(parts) + "}"


MAX_FEEDBACK_SERIES = 200  # (model, placement) pairs exported before "other"


class Counter:
    """A counter; with `max_series`, label values beyond that many series (e.g. client
    chosen placements) are counted under "other" so /metrics cannot grow without bound."""

    def __init__(
        self, name: str, help: str, labels: tuple[str, ...] = (), max_series: int | None = None
    ) -> None:
        self.name, self.help, self.label_names = name, help, labels
        self.max_series = max_series
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *labels: str, by: float = 1.0) -> None:
        if (
            self.max_series is not None
            and labels not in self.values
            and len(self.values) >= self.max_series
        ):
            labels = tuple("other" for _ in labels)
        self.values[labels] = self.values.get(labels, 0.0) + by

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0.0)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for key, value in sorted(self.values.items()):
            yield f"{self.name}{_labels(self.label_names, key)} {value:g}"


class Gauge:
    """A value read when /metrics is rendered; kind "counter" for one that only grows
    (kept by its owner, e.g. the recommender's batch count)."""

    def __init__(
        self, name: str, help: str, read: Callable[[], float], kind: str = "gauge"
    ) -> None:
        self.name, self.help, self.read, self.kind = name, help, read, kind

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        yield f"{self.name} {self.read():g}"


class Histogram:
    def __init__(
        self,
        name: str,
        help: str,
        buckets: tuple[float, ...] = LATENCY_BUCKETS,
        labels: tuple[str, ...] = (),
    ) -> None:
        self.name, self.help, self.buckets, self.label_names = name, help, buckets, labels
        self.series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, *labels: str) -> None:
        counts, totals = self.series.setdefault(labels, ([0] * (len(self.buckets) + 1), [0.0]))
        counts[bisect.bisect_left(self.buckets, value)] += 1
        totals[0] += value

    def count(self, *labels: str) -> int:
        entry = self.series.get(labels)
        return sum(entry[0]) if entry else 0

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        names = (*self.label_names, "le")
        for key, (counts, totals) in sorted(self.series.items()):
            running = 0
            for bound, n in zip(self.buckets, counts, strict=False):
                running += n
                yield f"{self.name}_bucket{_labels(names, (*key, f'{bound:g}'))} {running}"
            running += counts[-1]
            yield f"{self.name}_bucket{_labels(names, (*key, '+Inf'))} {running}"
            yield f"{self.name}_sum{_labels(self.label_names, key)} {totals[0]:.6f}"
            yield f"{self.name}_count{_labels(self.label_names, key)} {running}"


class Metrics:
    """Every series liverec exports; one instance per server process."""

    def __init__(self) -> None:
        self.connections_open = 0
        self.events = Counter("liverec_events_total", "Accepted events by action.", ("action",))
        self.duplicates = Counter("liverec_duplicate_events_total", "Events acked again.")
        self.errors = Counter("liverec_errors_total", "Error frames and closes by code.", ("code",))
        self.connections = Counter("liverec_connections_total", "WebSocket connections accepted.")
        self.closes = Counter("liverec_closes_total", "Connections closed by code.", ("code",))
        self.recs_latency = Histogram(
            "liverec_event_to_recs_seconds",
            "Time from an event frame's arrival to its recs frame being queued.",
            labels=("model",),
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
            "Recs frames the client reported as seen, by model version and placement.",
            ("model", "placement"),
            max_series=MAX_FEEDBACK_SERIES,
        )
        self.rec_clicks = Counter(
            "liverec_rec_clicks_total",
            "Clicks on recommended items, by model version and placement.",
            ("model", "placement"),
            max_series=MAX_FEEDBACK_SERIES,
        )
        self.extra: list[Counter | Histogram] = []  # series owned by other parts
        self._gauges = [
            Gauge(
                "liverec_connections_open",
                "Open WebSocket connections.",
                lambda: float(self.connections_open),
            )
        ]

    def add_gauge(
        self, name: str, help: str, read: Callable[[], float], kind: str = "gauge"
    ) -> None:
        self._gauges.append(Gauge(name, help, read, kind))

    def render(self) -> str:
        series: list[Counter | Gauge | Histogram] = [
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
        lines = [line for s in series for line in s.render()]
        return "\n".join(lines) + "\n"
