"""Prometheus metrics for the whole server: counters, gauges and histograms in shared memory.

Their values live in one slot per process of a shared region, summed when /metrics is rendered.
"""

from __future__ import annotations

import bisect
import logging
import operator
import threading
from collections.abc import Callable, Iterator, Sequence

from .shm import Region, Slot

log = logging.getLogger(__name__)

Labels = tuple[tuple[str, str], ...]

# Request and upstream durations, in seconds (the last bucket, +Inf, is implied).
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0, 300.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _format_value(v: float) -> str:
    if v == float("inf"):
        return "+Inf"
    return str(int(v)) if float(v).is_integer() else repr(float(v))


# How a gauge's values from several processes combine.
_MERGES: dict[str, Callable[[float, float], float]] = {"sum": operator.add, "max": max, "min": min}


class Metric:
    """One named family of samples keyed by label values; safe for many threads.

    Values live in this process's slot of the shared region, so every process's are seen by
    a render in any of them. merge says how a gauge's values from several processes combine:
    "sum" (default), "max" or "min"; counters and histograms always sum, and keep counting
    across a worker's restart.
    """

    def __init__(self, name: str, help: str, kind: str, labels: tuple[str, ...], slot: Slot,
                 merge: str = "sum") -> None:
        if merge not in _MERGES:
            raise ValueError(f"{name}: merge must be sum, max or min, not {merge!r}")
        self.name, self.help, self.kind, self.label_names, self.merge = name, help, kind, labels, merge
        self._slot = slot
        self._offsets: dict[tuple[str, ...], int] = {}
        self._lock = threading.Lock()

    def _values(self, labels: dict[str, str]) -> tuple[str, ...]:
        names = self.label_names
        if len(labels) != len(names):
            raise ValueError(f"{self.name}: labels {sorted(labels)} != {sorted(names)}")
        try:
            return tuple([str(labels[n]) for n in names])
        except KeyError:
            raise ValueError(f"{self.name}: labels {sorted(labels)} != {sorted(names)}") from None

    def _labels_text(self, values: tuple[str, ...], extra: Labels = ()) -> str:
        return _format_labels(tuple(zip(self.label_names, values)) + extra)

    def _offset(self, values: tuple[str, ...]) -> int:
        off = self._offsets.get(values)
        if off is None:
            off = self._offsets[values] = self._slot.offset(f"{self.name}\0\0{self._labels_text(values)}")
        return off

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add amount to the sample with these labels."""
        off = self._offset(self._values(labels))
        with self._lock:
            self._slot.add(off, amount)

    def set(self, value: float, **labels: str) -> None:
        """Replace the sample with these labels (gauges)."""
        off = self._offset(self._values(labels))
        with self._lock:
            self._slot.put(off, value)

    def get(self, **labels: str) -> float:
        """Return this process's sample with these labels, 0 when never set."""
        off = self._offsets.get(self._values(labels))
        return 0.0 if off is None else self._slot.get(off)

    def samples(self) -> list[tuple[Labels, float]]:
        """Return a snapshot of this process's (labels, value) pairs."""
        return sorted((tuple(zip(self.label_names, v)), self._slot.get(off)) for v, off in list(self._offsets.items()))


class Histogram(Metric):
    """A histogram family: counts of observations at or below each bucket bound, their sum and count."""

    def __init__(self, name: str, help: str, labels: tuple[str, ...], slot: Slot,
                 buckets: Sequence[float] = DURATION_BUCKETS) -> None:
        super().__init__(name, help, "histogram", labels, slot)
        self.buckets = tuple(sorted(buckets))
        self._cells: dict[tuple[str, ...], tuple[int, ...]] = {}

    def _cells_of(self, values: tuple[str, ...]) -> tuple[int, ...]:
        cells = self._cells.get(values)
        if cells is None:
            text = self._labels_text(values)
            keys = [f"{self.name}\0_bucket{i}\0{text}" for i in range(len(self.buckets) + 1)]
            keys += [f"{self.name}\0_sum\0{text}", f"{self.name}\0_count\0{text}"]
            cells = self._cells[values] = tuple(self._slot.offset(k) for k in keys)
        return cells

    def observe(self, value: float, **labels: str) -> None:
        """Count one observation of value in the sample with these labels."""
        cells = self._cells_of(self._values(labels))
        slot = self._slot
        with self._lock:
            slot.add(cells[bisect.bisect_left(self.buckets, value)], 1.0)
            slot.add(cells[-2], value)
            slot.add(cells[-1], 1.0)

    def count(self, **labels: str) -> float:
        """Return this process's number of observations with these labels."""
        cells = self._cells.get(self._values(labels))
        return 0.0 if cells is None else self._slot.get(cells[-1])

    def render(self, values: dict[tuple[str, str], float]) -> Iterator[str]:
        """Yield the exposition lines of this family from summed (suffix, labels text) values."""
        groups = sorted({text for (_, text) in values})
        for text in groups:
            inner = text[1:-1]
            running = 0.0
            for i, bound in enumerate((*self.buckets, float("inf"))):
                running += values.get((f"_bucket{i}", text), 0.0)
                le = f'le="{_format_value(bound)}"'
                yield f"{self.name}_bucket{{{inner + ',' if inner else ''}{le}}} {_format_value(running)}"
            yield f"{self.name}_sum{text} {_format_value(values.get(('_sum', text), 0.0))}"
            yield f"{self.name}_count{text} {_format_value(values.get(('_count', text), 0.0))}"


class Metrics:
    """The proxy's registry of metric families, rendered for the whole server.

    Each process renders its own slot and every other process's slot of the same region (a
    private one-slot region when none is given). Gauges computed at scrape time register a callback with on_scrape.
    """

    CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(self, region: Region | None = None, slot: int = 0) -> None:
        self.region = region or Region(1)
        self.slot = self.region.slot(slot)
        self._families: list[Metric] = []
        self._collectors: list[Callable[[], None]] = []
        self.requests = self.counter("goproxy_requests_total", "HTTP requests by endpoint and status.",
                                     ("endpoint", "status"))
        self.request_seconds = self.histogram("goproxy_request_duration_seconds",
                                              "Time from a request's head to the last byte of its answer.",
                                              ("endpoint",))
        self.cache = self.counter("goproxy_cache_requests_total", "Artifact requests by cache result.",
                                  ("result",))
        self.bytes_served = self.counter("goproxy_served_bytes_total", "Response body bytes sent to clients.")
        self.upstream_requests = self.counter("goproxy_upstream_requests_total", "Requests sent upstream.",
                                              ("upstream",))
        self.upstream_seconds = self.histogram("goproxy_upstream_request_duration_seconds",
                                               "Time to fetch one missing artifact from upstream, retries and "
                                               "fallbacks included.", ("kind",))
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
                                      ("upstream",), merge="min")
        self.upstream_skipped = self.counter("goproxy_upstream_skipped_total",
                                             "Requests not sent to an upstream because it was down.", ("upstream",))
        self.upstream_refused = self.counter("goproxy_upstream_refused_total",
                                             "Upstream answers refused as not what was asked for, by reason.",
                                             ("upstream", "reason"))
        self.background_refreshes = self.counter("goproxy_background_refreshes_total",
                                                 "Stale list, @latest and query answers refreshed in the background, "
                                                 "by result.", ("result",))

    def counter(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Metric:
        """Make and register a counter family."""
        return self._register(Metric(name, help, "counter", labels, self.slot))

    def gauge(self, name: str, help: str, labels: tuple[str, ...] = (), merge: str = "sum") -> Metric:
        """Make and register a gauge family; merge ("sum", "max" or "min") combines the processes' values.

        A gauge left by a process that ended counts no more, and a process taking over its slot
        starts the gauge from 0.
        """
        self.slot.zero(f"{name}\0")
        return self._register(Metric(name, help, "gauge", labels, self.slot, merge))

    def histogram(self, name: str, help: str, labels: tuple[str, ...] = (),
                  buckets: Sequence[float] = DURATION_BUCKETS) -> Histogram:
        """Make and register a histogram family with these bucket upper bounds."""
        metric = Histogram(name, help, labels, self.slot, buckets)
        self._register(metric)
        return metric

    def _register(self, metric: Metric) -> Metric:
        self._families.append(metric)
        return metric

    def on_scrape(self, collect: Callable[[], None]) -> None:
        """Register collect, run before each render to refresh computed gauges."""
        self._collectors.append(collect)

    def render(self) -> bytes:
        """Return every family in Prometheus text format 0.0.4, summed over the server's processes."""
        for collect in self._collectors:
            collect()
        kinds = {m.name: m for m in self._families}
        totals: dict[str, dict[tuple[str, str], float]] = {name: {} for name in kinds}
        for key, value, live in self.region.entries():
            family, _, rest = key.partition("\0")
            metric = kinds.get(family)
            if metric is None:
                continue
            if metric.kind == "gauge" and not live:
                continue
            suffix, _, text = rest.partition("\0")
            values = totals[family]
            old = values.get((suffix, text))
            values[(suffix, text)] = value if old is None else _MERGES[metric.merge](old, value)
        lines: list[str] = []
        for m in self._families:
            lines.append(f"# HELP {m.name} {m.help}")
            lines.append(f"# TYPE {m.name} {m.kind}")
            values = totals[m.name]
            if isinstance(m, Histogram):
                lines.extend(m.render(values))
                continue
            if not values and not m.label_names:
                values = {("", ""): 0.0}
            for (_, text), value in sorted(values.items()):
                lines.append(f"{m.name}{text} {_format_value(value)}")
        return ("\n".join(lines) + "\n").encode()
