"""Traffic figures read from Metrics, and the per-minute history a background sampler keeps."""

from __future__ import annotations

import collections
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence

from ..metrics import Metrics
from .model import Counters, Minute

log = logging.getLogger(__name__)

# Endpoints that are not the go command's traffic: probes, scrapes and this page.
ADMIN_ENDPOINTS = frozenset({"health", "ready", "metrics", "page", "status.json"})
# The history's step, in seconds, and how many steps it keeps.
SAMPLE_INTERVAL = 60.0
HISTORY_POINTS = 60


# One sample line of the Prometheus text format: name, {labels} (optional), value.
_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_UNESCAPE = re.compile(r"\\(.)")
# The families the page reads.
FAMILIES = frozenset({"goproxy_requests_total", "goproxy_cache_requests_total", "goproxy_served_bytes_total",
                      "goproxy_fetched_bytes_total", "goproxy_upstream_requests_total",
                      "goproxy_upstream_errors_total", "goproxy_checksum_verifications_total"})

Totals = dict[str, list[tuple[dict[str, str], float]]]


def read_totals(metrics: Metrics, families: frozenset[str] = FAMILIES) -> Totals:
    """Return the whole server's samples of families, by family name.

    Every process's counts are summed, as /metrics shows them (read from its rendering, so
    every merge rule holds).
    """
    found: Totals = {name: [] for name in families}
    for line in metrics.render().decode().splitlines():
        if line.startswith("#") or line.partition("{")[0].partition(" ")[0] not in families:
            continue
        m = _SAMPLE.fullmatch(line)
        if m is None:
            continue
        labels = {k: _UNESCAPE.sub(lambda e: "\n" if e.group(1) == "n" else e.group(1), v)
                  for k, v in _LABEL.findall(m.group(2) or "")}
        found[m.group(1)].append((labels, float(m.group(3))))
    return found


def _sum(samples: list[tuple[dict[str, str], float]], **labels: str) -> int:
    return int(sum(v for have, v in samples if all(have.get(k) == want for k, want in labels.items())))


def read_counters(metrics: Metrics) -> Counters:
    """Return the traffic the whole server counted so far (admin endpoints not counted as requests)."""
    t = read_totals(metrics)
    requests = sum(v for labels, v in t["goproxy_requests_total"] if labels.get("endpoint") not in ADMIN_ENDPOINTS)
    cache = t["goproxy_cache_requests_total"]
    return Counters(
        requests=int(requests),
        hits=_sum(cache, result="hit"),
        misses=_sum(cache, result="miss"),
        stale=_sum(cache, result="stale"),
        bytes_served=_sum(t["goproxy_served_bytes_total"]),
        bytes_fetched=_sum(t["goproxy_fetched_bytes_total"]),
        upstream_requests=_sum(t["goproxy_upstream_requests_total"]),
        upstream_errors=_sum(t["goproxy_upstream_errors_total"]),
    )


def read_upstream_counts(metrics: Metrics) -> dict[str, tuple[int, int]]:
    """Return each upstream's (requests, errors) the whole server counted, by upstream name."""
    t = read_totals(metrics, frozenset({"goproxy_upstream_requests_total", "goproxy_upstream_errors_total"}))
    counts: dict[str, tuple[int, int]] = {}
    for labels, v in t["goproxy_upstream_requests_total"]:
        requests, errors = counts.get(labels["upstream"], (0, 0))
        counts[labels["upstream"]] = (requests + int(v), errors)
    for labels, v in t["goproxy_upstream_errors_total"]:
        requests, errors = counts.get(labels["upstream"], (0, 0))
        counts[labels["upstream"]] = (requests, errors + int(v))
    return counts


def read_verifications(metrics: Metrics) -> dict[str, int]:
    """Return the whole server's checksum verifications by result ("ok", "failure", "unavailable")."""
    t = read_totals(metrics, frozenset({"goproxy_checksum_verifications_total"}))
    return {labels["result"]: int(v) for labels, v in t["goproxy_checksum_verifications_total"]}


def merge_minutes(*histories: Sequence[Minute], interval: float = SAMPLE_INTERVAL,
                  points: int = HISTORY_POINTS) -> tuple[Minute, ...]:
    """Return one history from several processes' (each sampling the whole server's totals).

    It has one point per interval, the one that counted most where they differ (a process that
    started within that interval saw only part of it); the last points of them, oldest first.
    """
    best: dict[int, Minute] = {}
    for history in histories:
        for m in history:
            key = round(m.end / interval)
            have = best.get(key)
            if have is None or (m.requests, m.lookups) > (have.requests, have.lookups):
                best[key] = m
    return tuple(best[k] for k in sorted(best))[-points:]


class History:
    """Keep requests and hit ratio per interval (a minute) over the last points intervals.

    read gives the running totals; each sample() stores the difference since the one before.
    start() takes the first reading and samples at every whole interval of clock in a daemon
    thread; stop() ends it. Nothing here runs per request. on_sample, when given, is called
    after each point is stored.
    """

    def __init__(self, read: Callable[[], Counters], clock: Callable[[], float] = time.time,
                 interval: float = SAMPLE_INTERVAL, points: int = HISTORY_POINTS,
                 on_sample: Callable[[], None] | None = None) -> None:
        self.read = read
        self.clock = clock
        self.interval = interval
        self.on_sample = on_sample
        self._minutes: collections.deque[Minute] = collections.deque(maxlen=points)
        self._last: Counters | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        """Read the totals now and store what was counted since the previous reading.

        The first call only takes the reading the next one is measured from.
        """
        now, totals = self.clock(), self.read()
        with self._lock:
            last, self._last = self._last, totals
            if last is None:
                return
            d = totals.since(last)
            self._minutes.append(Minute(now, d.requests, d.hits, d.lookups, d.hit_ratio))
        if self.on_sample is not None:
            self.on_sample()

    def minutes(self) -> tuple[Minute, ...]:
        """Return the stored points, oldest first."""
        with self._lock:
            return tuple(self._minutes)

    def start(self) -> None:
        """Take the first reading now, then sample at each whole interval in a daemon thread."""
        self.sample()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="goproxy-history", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            now = self.clock()
            due = (now // self.interval + 1) * self.interval
            while now < due:  # the clock decides, not the timer: a wait may end a little early
                if self._stop.wait(due - now):
                    return
                now = self.clock()
            self.sample()

    def stop(self) -> None:
        """End the sampling thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
