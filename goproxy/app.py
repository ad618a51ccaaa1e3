"""Build the proxy's object graph from a Config: the one place that wires modules together."""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from . import __version__
from .airgap.gosum import GoSumVerifier, Want
from .airgap.offline import OfflineUpstreams
from .config import Config
from .download import Downloader
from .errors import StartupError
from .locks import LocalOnly
from .metrics import Metrics
from .net.dial import direct_connector
from .net.dns import Resolver
from .net.http import Timeouts, Transport
from .net.proxy import Proxy, proxy_connector
from .page import PAGE_TYPE, proxy_address, render
from .progress import Progress
from .server import ProxyServer, Route
from .service import Service
from .singleflight import SingleFlight
from .status.cachecount import CacheCounter
from .status.logring import WarningRing
from .status.model import to_json
from .status.source import CacheReport, ChecksumReport, StatusSource, UpstreamTable
from .status.traffic import History, read_counters
from .storage.cleanup import Cleaner, Housekeeping
from .storage.disk import DiskStorage
from .storage.usage import UsageStore
from .sumdb.client import SumDB
from .sumdb.verify import Verifier
from .upstream import Upstream, Upstreams

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], None]


def build_transport(config: Config) -> Transport:
    """Return the outbound transport that -ca-file, -proxy, -no-proxy and -dns describe.

    The -dns resolver looks up every outbound host, the proxy's included; its DoH requests go
    through the proxy, which is then looked up with the system resolver, as is the DNS server's
    own host name.
    """
    tls = ssl.create_default_context(cafile=config.ca_file or None)
    resolve = None
    if config.dns:
        bootstrap = Proxy(config.proxy, config.no_proxy, tls=tls) if config.proxy else None
        resolve = Resolver(config.dns, cafile=config.ca_file or None, connect=proxy_connector(bootstrap),
                           timeout=Timeouts().connect).resolve
    proxy = Proxy(config.proxy, config.no_proxy, resolve=resolve, tls=tls) if config.proxy else None
    return Transport(timeouts=Timeouts(read=config.upstream_timeout), connector=direct_connector(resolve),
                     tls=tls, proxy=proxy)


def build_upstreams(config: Config, transport: Transport, metrics: Metrics, sleep: Sleep = time.sleep,
                    urls: tuple[str, ...] | None = None) -> Upstreams:
    """Return the ordered upstream list of config (or of urls) with its private routes and retries."""
    private = [(p.pattern, Upstream.from_url(p.url, p.headers())) for p in config.private_upstreams]
    return Upstreams([Upstream.from_url(u) for u in urls or config.upstreams], transport,
                     attempts=config.retry_attempts, backoff=config.retry_backoff,
                     sleep=sleep, private=private if urls is None else [], metrics=metrics)


def build_verifier(config: Config, upstreams: Upstreams, storage: DiskStorage, metrics: Metrics,
                   sleep: Sleep = time.sleep) -> Verifier:
    """Return the checksum verifier -gosumdb asks for (one that verifies nothing when off)."""
    private = lambda module: upstreams.private_route(module) is not None  # noqa: E731
    if config.gosumdb is None:
        return Verifier(None, config.gonosumdb, private)
    db = config.gosumdb
    direct = build_upstreams(config, upstreams.transport, metrics, sleep, urls=(db.url or f"https://{db.name}",))
    return Verifier(SumDB(db, upstreams, direct, storage, metrics), config.gonosumdb, private)


def build_offline(config: Config, storage: DiskStorage, metrics: Metrics,
                  clock: Clock) -> tuple[OfflineUpstreams, Verifier]:
    """Return the upstreams and verifier of -upstream off: the cache alone, no outbound connection."""
    private = [(p.pattern, Upstream.from_url(p.url)) for p in config.private_upstreams]
    upstreams = OfflineUpstreams(storage, metrics, clock, config.list_ttl, private)
    is_private = lambda module: upstreams.private_route(module) is not None  # noqa: E731
    db = config.gosumdb
    sumdb = SumDB(db, upstreams, upstreams, storage, metrics) if db is not None else None
    log.info("offline (-upstream off): no outbound connections; answering from %s alone", storage.root)
    return upstreams, Verifier(sumdb, config.gonosumdb, is_private)


@dataclass
class App:
    """The proxy's parts, built and wired, for a server or a command to use."""

    config: Config
    metrics: Metrics
    storage: DiskStorage
    transport: Transport
    upstreams: Upstreams
    verifier: Verifier
    flights: SingleFlight[bool]
    downloader: Downloader
    usage: UsageStore
    cleaner: Cleaner
    service: Service


def build(config: Config, clock: Clock = time.time, sleep: Sleep = time.sleep,
          progress: Progress | None = None, gosum: Mapping[tuple[str, str], Want] | None = None) -> App:
    """Return every part of the proxy for config, wired; nothing is started.

    clock and sleep are injectable for tests; progress shows zip downloads (off when None).
    gosum, when given, are go.sum hashes every fetched zip and go.mod must also match (prefetch).
    Raises StartupError when the cache directory cannot be made.
    """
    metrics = Metrics()
    storage = DiskStorage(config.cache_dir)
    try:
        os.makedirs(storage.root, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create the cache directory {storage.root}: {exc.strerror}") from None
    upstreams: Upstreams
    if config.offline:
        upstreams, verifier = build_offline(config, storage, metrics, clock)
        transport = upstreams.transport
    else:
        transport = build_transport(config)
        upstreams = build_upstreams(config, transport, metrics, sleep)
        verifier = build_verifier(config, upstreams, storage, metrics, sleep)
    if gosum is not None:
        verifier = GoSumVerifier(verifier, gosum)
    flights: SingleFlight[bool] = SingleFlight()
    downloader = Downloader(storage, upstreams, verifier, progress or Progress("off"), metrics, clock,
                            config.download_connections, config.max_concurrent_downloads)
    usage = UsageStore(storage.root, clock)
    cleaner = Cleaner(storage, usage, clock, config.max_cache_age, config.max_cache_size, flights.in_flight,
                      metrics)
    service = Service(config, storage, upstreams, flights, verifier, downloader, LocalOnly(), usage.record, clock)
    return App(config, metrics, storage, transport, upstreams, verifier, flights, downloader, usage, cleaner,
               service)


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


def build_server(config: Config, clock: Clock = time.time, sleep: Sleep = time.sleep,
                 progress: Progress | None = None) -> ProxyServer:
    """Return a bound, not yet serving server for config.

    Its background jobs, in order: cache housekeeping, the traffic history sampler, and the
    capture of warnings for the front page. Raises StartupError when the cache directory cannot
    be made or the address cannot be bound.
    """
    progress = progress or Progress("off")
    app = build(config, clock, sleep, progress)
    housekeeping = Housekeeping(app.usage, app.cleaner, config.cleanup_interval)
    status, history, ring = build_status(config, app, progress, clock)
    try:
        return ProxyServer(config, app.service, app.metrics, background=[housekeeping, history, LogCapture(ring)],
                           routes=status_routes(status, config))
    except OSError as exc:
        raise StartupError(f"cannot listen on {config.host or '0.0.0.0'}:{config.port}: {exc.strerror}") from None
