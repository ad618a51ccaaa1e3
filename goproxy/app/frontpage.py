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
from ..status.cachecount import CacheCounter
from ..status.logring import WarningRing
from ..status.model import to_json
from ..status.source import CacheReport, ChecksumReport, StatusSource, UpstreamTable
from ..status.traffic import History, read_counters
from .parts import App

Clock = Callable[[], float]


class LogCapture:
    """Attach a log handler to the root logger while the server runs (start), detach it at stop."""

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
    """Return the front page's status collector, with the history sampler and the warnings ring
    it reads (both still to be started or attached by the caller)."""
    metrics = app.metrics
    history = History(lambda: read_counters(metrics), clock)
    ring = WarningRing()
    upstreams = [(u.name, "") for u in app.upstreams.upstreams] + [(u.name, p) for p, u in app.upstreams.private]
    counter = CacheCounter(app.storage, app.usage.last_used, clock)
    source = StatusSource(
        version=__version__, started=clock(), workers=1, clock=clock,  # one serving process
        upstreams=UpstreamTable(upstreams, metrics),
        checksum=ChecksumReport(app.verifier.db_name, config.sumdbs, metrics),
        cache=CacheReport(counter, config.max_cache_size, config.max_cache_age, config.cleanup_interval),
        traffic=lambda: read_counters(metrics), history=history.minutes, downloads=progress.snapshot,
        warnings=ring.entries)
    return source, history, ring


def status_routes(source: StatusSource, config: Config) -> dict[str, Route]:
    """Return the routes of the front page (/) and /status.json.

    The page names the proxy by the request's Host header, else by config's address.
    """
    host = config.host if config.host not in ("", "0.0.0.0", "::") else "localhost"
    fallback = f"[{host}]:{config.port}" if ":" in host else f"{host}:{config.port}"
    return {"/": lambda h: (PAGE_TYPE, render(source.collect(), proxy_address(h, fallback))),
            "/status.json": lambda h: ("application/json", to_json(source.collect()))}
