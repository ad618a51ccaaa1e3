"""Traffic figures read from Metrics, and the per-minute history a background sampler keeps."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

from ..metrics import Metrics
from .model import Counters, Minute

log = logging.getLogger(__name__)

# Endpoints that are not the go command's traffic: probes, scrapes and this page.
ADMIN_ENDPOINTS = frozenset({"health", "ready", "metrics", "page", "status.json"})
# SAMPLE_INTERVAL is the history's step, in seconds; HISTORY_POINTS how many steps it keeps.
SAMPLE_INTERVAL = 60.0
HISTORY_POINTS = 60


def read_counters(metrics: Metrics) -> Counters:
    """Return the traffic counted in metrics so far (admin endpoints not counted as requests)."""
    requests = sum(v for labels, v in metrics.requests.samples() if dict(labels)["endpoint"] not in ADMIN_ENDPOINTS)
    return Counters(
        requests=int(requests),
        hits=int(metrics.cache.get(result="hit")),
        misses=int(metrics.cache.get(result="miss")),
        stale=int(metrics.cache.get(result="stale")),
        bytes_served=int(metrics.bytes_served.get()),
        bytes_fetched=int(metrics.bytes_fetched.get()),
        upstream_requests=int(sum(v for _, v in metrics.upstream_requests.samples())),
        upstream_errors=int(sum(v for _, v in metrics.upstream_errors.samples())),
    )


def read_upstream_counts(metrics: Metrics) -> dict[str, tuple[int, int]]:
    """Return each upstream's (requests, errors) counted in metrics, by upstream name."""
    counts: dict[str, tuple[int, int]] = {}
    for labels, v in metrics.upstream_requests.samples():
        name = dict(labels)["upstream"]
        counts[name] = (counts.get(name, (0, 0))[0] + int(v), counts.get(name, (0, 0))[1])
    for labels, v in metrics.upstream_errors.samples():
        name = dict(labels)["upstream"]
        counts[name] = (counts.get(name, (0, 0))[0], counts.get(name, (0, 0))[1] + int(v))
    return counts


class History:
    """Keep requests and hit ratio per interval (a minute) over the last points intervals.

    read gives the running totals; each sample() stores the difference since the one before.
    start() takes the first reading and samples at every whole interval of clock in a daemon
    thread; stop() ends it. Nothing here runs per request.
    """

    def __init__(self, read: Callable[[], Counters], clock: Callable[[], float] = time.time,
                 interval: float = SAMPLE_INTERVAL, points: int = HISTORY_POINTS) -> None:
        self.read = read
        self.clock = clock
        self.interval = interval
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
