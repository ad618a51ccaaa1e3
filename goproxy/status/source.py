"""The status collector: one Status from small readers, each giving one typed piece."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from ..metrics import Metrics
from ..progress import Transfer
from .cachecount import CacheCounter
from .model import CacheStatus, ChecksumStatus, Counters, LogEntry, Minute, Status, UpstreamStatus
from .traffic import read_upstream_counts, read_verifications


class UpstreamHealth(Protocol):
    """What the page reads of one upstream's health, once the upstream list tracks it."""

    @property
    def state(self) -> str:
        """Return "up" or "down"."""

    @property
    def last_success(self) -> float | None:
        """Return the time of the last successful request, None if none yet."""

    @property
    def last_error(self) -> str:
        """Return the last failure's one-line description ("" when none), passwords masked."""

    @property
    def last_error_at(self) -> float | None:
        """Return the time of the last failure, None if none yet."""

    @property
    def median_latency(self) -> float | None:
        """Return the median time to response headers over recent requests, in seconds."""


class UpstreamTable:
    """Give one UpstreamStatus per configured upstream: traffic from metrics, health from health().

    The traffic is the whole server's. upstreams are (name, route) pairs: route "" for the public
    list, else the private route's module pattern. health maps upstream names to their health;
    without it (or for a name it does not know) the health fields are None: not available.
    """

    def __init__(self, upstreams: Sequence[tuple[str, str]], metrics: Metrics,
                 health: Callable[[], Mapping[str, UpstreamHealth]] | None = None) -> None:
        self.upstreams = tuple(upstreams)
        self.metrics = metrics
        self.health = health

    def __call__(self) -> tuple[UpstreamStatus, ...]:
        """Return the upstreams in configured order, public ones first."""
        counts = read_upstream_counts(self.metrics)
        health = self.health() if self.health is not None else {}
        rows = []
        for name, route in self.upstreams:
            requests, errors = counts.get(name, (0, 0))
            h = health.get(name)
            if h is None:
                rows.append(UpstreamStatus(name, route, requests, errors))
            else:
                rows.append(UpstreamStatus(name, route, requests, errors, h.state, h.last_success,
                                           h.last_error or None, h.last_error_at, h.median_latency))
        return tuple(rows)


class ChecksumReport:
    """Give the checksum database's ChecksumStatus: the whole server's verification counts from metrics.

    name "" means verification is off. tree_size gives the size of the newest verified tree
    (None while none is verified); without it the size is not available.
    """

    def __init__(self, name: str, proxied: Sequence[str], metrics: Metrics,
                 tree_size: Callable[[], int | None] | None = None) -> None:
        self.name = name
        self.proxied = tuple(proxied)
        self.metrics = metrics
        self.tree_size = tree_size

    def __call__(self) -> ChecksumStatus:
        """Return the state now."""
        v = read_verifications(self.metrics)
        size = self.tree_size() if self.tree_size is not None and self.name else None
        return ChecksumStatus(bool(self.name), self.name, size, v.get("ok", 0), v.get("failure", 0),
                              v.get("unavailable", 0), self.proxied)


class CacheReport:
    """Give the CacheStatus: the counter's latest count and the cleanup settings.

    next_cleanup gives when the next cleanup pass is due; without it, that is not available.
    """

    def __init__(self, counter: CacheCounter, max_bytes: int, max_age: float, interval: float,
                 next_cleanup: Callable[[], float | None] | None = None) -> None:
        self.counter = counter
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.interval = interval
        self.next_cleanup = next_cleanup

    def __call__(self) -> CacheStatus:
        """Return the state now (the count may be a few minutes old: see CacheCounter)."""
        due = self.next_cleanup() if self.next_cleanup is not None else None
        return CacheStatus(self.counter.latest(), self.max_bytes, self.max_age, self.interval, due)


class StatusSource:
    """Collect a Status from its readers, one call each; any reader may be replaced.

    version, started (Unix time) and workers are fixed; clock gives now. Every other argument
    is a function returning one piece: upstreams, checksum, cache, traffic (running totals),
    history (points oldest first), downloads (oldest first) and warnings (newest first).
    """

    def __init__(self, *, version: str, started: float, workers: int | None,
                 upstreams: Callable[[], Sequence[UpstreamStatus]],
                 checksum: Callable[[], ChecksumStatus],
                 cache: Callable[[], CacheStatus],
                 traffic: Callable[[], Counters],
                 history: Callable[[], Sequence[Minute]],
                 downloads: Callable[[], Sequence[Transfer]],
                 warnings: Callable[[], Sequence[LogEntry]],
                 clock: Callable[[], float] = time.time) -> None:
        self.version = version
        self.started = started
        self.workers = workers
        self.upstreams = upstreams
        self.checksum = checksum
        self.cache = cache
        self.traffic = traffic
        self.history = history
        self.downloads = downloads
        self.warnings = warnings
        self.clock = clock

    def collect(self) -> Status:
        """Return the status now."""
        now = self.clock()
        return Status(self.version, now, self.started, max(now - self.started, 0.0), self.workers,
                      tuple(self.upstreams()), self.checksum(), self.cache(), self.traffic(),
                      tuple(self.history()), tuple(self.downloads()), tuple(self.warnings()))
