"""Prometheus metrics: labelled counters and gauges, rendered in the text exposition format."""

from __future__ import annotations

import threading
from collections.abc import Callable

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _format_value(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


class Metric:
    """Metric is one named family of samples keyed by label values; safe for many threads."""

    def __init__(self, name: str, help: str, kind: str, labels: tuple[str, ...] = ()) -> None:
        self.name, self.help, self.kind, self.label_names = name, help, kind, labels
        self._values: dict[Labels, float] = {}
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> Labels:
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name}: labels {sorted(labels)} != {sorted(self.label_names)}")
        return tuple((n, str(labels[n])) for n in self.label_names)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """inc adds amount to the sample with these labels."""
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def set(self, value: float, **labels: str) -> None:
        """set replaces the sample with these labels (gauges)."""
        key = self._key(labels)
        with self._lock:
            self._values[key] = value

    def get(self, **labels: str) -> float:
        """get returns the sample with these labels, 0 when never set."""
        key = self._key(labels)
        with self._lock:
            return self._values.get(key, 0.0)

    def samples(self) -> list[tuple[Labels, float]]:
        """samples returns a snapshot of every (labels, value)."""
        with self._lock:
            return sorted(self._values.items())


class Metrics:
    """Metrics is the proxy's registry; gauges computed at scrape time register a callback."""

    def __init__(self) -> None:
        self._families: list[Metric] = []
        self._collectors: list[Callable[[], None]] = []
        self.requests = self.counter("goproxy_requests_total", "HTTP requests by endpoint and status.",
                                     ("endpoint", "status"))
        self.cache = self.counter("goproxy_cache_requests_total", "Artifact requests by cache result.",
                                  ("result",))
        self.bytes_served = self.counter("goproxy_served_bytes_total", "Response body bytes sent to clients.")
        self.upstream_requests = self.counter("goproxy_upstream_requests_total", "Requests sent upstream.",
                                              ("upstream",))
        self.upstream_errors = self.counter("goproxy_upstream_errors_total",
                                            "Failed upstream requests by kind.", ("upstream", "kind"))
        self.upstream_retries = self.counter("goproxy_upstream_retries_total", "Upstream retries.",
                                             ("upstream",))
        self.bytes_fetched = self.counter("goproxy_fetched_bytes_total", "Body bytes fetched from upstreams.")
        self.downloads_active = self.gauge("goproxy_downloads_in_flight", "Zip downloads under way.")
        self.downloads_queued = self.gauge("goproxy_downloads_queued", "Zip downloads waiting for a slot.")
        self.cache_bytes = self.gauge("goproxy_cache_bytes", "Bytes in the cache.")
        self.cache_entries = self.gauge("goproxy_cache_entries", "Files in the cache.")
        self.verifications = self.counter("goproxy_checksum_verifications_total",
                                          "Checksum database verifications by result.", ("result",))
        self.upstream_up = self.gauge("goproxy_upstream_up",
                                      "Whether each upstream is up (1) or marked down and skipped (0).",
                                      ("upstream",))
        self.upstream_skipped = self.counter("goproxy_upstream_skipped_total",
                                             "Requests not sent to an upstream because it was down.", ("upstream",))
        self.upstream_refused = self.counter("goproxy_upstream_refused_total",
                                             "Upstream answers refused as not what was asked for, by reason.",
                                             ("upstream", "reason"))
        self.background_refreshes = self.counter("goproxy_background_refreshes_total",
                                                 "Stale list, @latest and query answers refreshed in the background, "
                                                 "by result.", ("result",))

    def counter(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Metric:
        """counter makes a counter family (registered for rendering)."""
        return self._register(Metric(name, help, "counter", labels))

    def gauge(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Metric:
        """gauge makes a gauge family (registered for rendering)."""
        return self._register(Metric(name, help, "gauge", labels))

    def _register(self, metric: Metric) -> Metric:
        self._families.append(metric)
        return metric

    def on_scrape(self, collect: Callable[[], None]) -> None:
        """on_scrape registers collect, run before each render to refresh computed gauges."""
        self._collectors.append(collect)

    def render(self) -> bytes:
        """render returns every family in Prometheus text format 0.0.4."""
        for collect in self._collectors:
            collect()
        lines: list[str] = []
        for m in self._families:
            lines.append(f"# HELP {m.name} {m.help}")
            lines.append(f"# TYPE {m.name} {m.kind}")
            samples = m.samples()
            if not samples and not m.label_names:
                samples = [((), 0.0)]
            for labels, value in samples:
                lines.append(f"{m.name}{_format_labels(labels)} {_format_value(value)}")
        return ("\n".join(lines) + "\n").encode()

    CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
