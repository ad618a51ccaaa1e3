"""Wiring of the front page (/) and /status.json: the status collector and its sources."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .. import __version__
from ..config import Config
from ..page import PAGE_TYPE, proxy_address, render
from ..progress import Progress
from ..respond import Route
from ..status.board import Board, Posting, gather, merge_downloads, merge_health, merge_history, merge_warnings
from ..status.cachecount import CacheCounter
from ..status.logring import WarningRing
from ..status.model import to_json
from ..status.source import CacheReport, ChecksumReport, StatusSource, UpstreamTable
from ..status.traffic import History, read_counters
from ..storage.cleanup import next_pass_at
from ..workers import worker_count
from .parts import App

Clock = Callable[[], float]


class LogCapture:
    """A log handler attached to the root logger while the server runs (start) and detached at stop."""

    def __init__(self, handler: logging.Handler) -> None:
        self.handler = handler

    def start(self) -> None:
        """Attach the handler."""
        logging.getLogger().addHandler(self.handler)

    def stop(self) -> None:
        """Detach the handler."""
        logging.getLogger().removeHandler(self.handler)


def build_status(config: Config, app: App, progress: Progress, clock: Clock = time.time,
                 ) -> tuple[StatusSource, History, WarningRing]:
    """Return the front page's status collector, with the history sampler and the warnings ring it reads.

    The sampler and the ring are still to be started or attached by the caller. Alone, the process
    shows its own figures. As one of several workers (metrics in a region made for several
    processes) it shows the whole server's: the others' downloads, warnings, upstream health and
    history from their boards (it posts its own on its board as they change), the parent's start
    time, and cleanup passes the parent runs on the interval's grid.
    """
    metrics = app.metrics
    region = metrics.region
    health = app.upstreams.health
    own_health = health.report if health is not None else dict
    board = Board(region, metrics.slot.index, gather(
        clock, progress.snapshot, lambda: ring.entries(), own_health, lambda: history.minutes(),
        lambda: counter.mine())) if region.slots > 1 else None
    others: Callable[[], list[tuple[Posting, bool]]] = board.others if board is not None else list
    changed = board.changed if board is not None else None
    history = History(lambda: read_counters(metrics), clock, on_sample=changed)
    ring = WarningRing(on_keep=changed)
    counter = CacheCounter(app.storage, app.usage.last_used, clock, on_count=changed,
                           others=lambda: [p.count for p, _ in others() if p.count is not None])
    if board is not None:
        left = board.left()  # the warnings of the worker that had this slot before (it died or was replaced)
        if left is not None:
            ring.adopt(left.warnings)
        progress.watch(board.changed)
        if health is not None:
            health.watch(board.changed)
    upstreams = [(u.name, "") for u in app.upstreams.upstreams] + [(u.name, p) for p, u in app.upstreams.private]
    sumdb = app.verifier.sumdb
    interval = config.cleanup_interval
    source = StatusSource(
        version=__version__, started=region.created if board is not None else clock(),
        workers=worker_count(config.workers) if board is not None else 1, clock=clock,
        upstreams=UpstreamTable(upstreams, metrics,
                                None if health is None else lambda: merge_health(own_health(), others())),
        checksum=ChecksumReport(app.verifier.db_name, config.sumdbs, metrics,
                                sumdb.verified_tree_size if sumdb is not None else None),
        cache=CacheReport(counter, config.max_cache_size, config.max_cache_age, interval,
                          app.cleaner.next_pass if board is None else lambda: next_pass_at(clock(), interval)),
        traffic=lambda: read_counters(metrics),
        history=lambda: merge_history(history.minutes(), others()),
        downloads=lambda: merge_downloads(clock(), progress.snapshot(), others()),
        warnings=lambda: merge_warnings(ring.entries(), others()))
    return source, history, ring


def status_routes(source: StatusSource, config: Config) -> dict[str, Route]:
    """Return the routes of the front page (/) and /status.json.

    The page names the proxy by the request's Host header, else by config's address, with https
    when the proxy serves TLS.
    """
    host = config.host if config.host not in ("", "0.0.0.0", "::") else "localhost"
    fallback = f"[{host}]:{config.port}" if ":" in host else f"{host}:{config.port}"
    scheme = "https" if config.tls_cert else "http"
    return {"/": lambda h: (PAGE_TYPE, render(source.collect(), proxy_address(h, fallback), scheme)),
            "/status.json": lambda h: ("application/json", to_json(source.collect()))}
