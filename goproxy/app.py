"""Build the proxy's object graph from a Config: the one place that wires modules together."""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from .config import Config
from .download import Downloader
from .errors import StartupError
from .health import Health
from .locks import LocalOnly
from .metrics import Metrics
from .net.dial import direct_connector
from .net.dns import Resolver
from .net.http import Timeouts, Transport
from .net.proxy import Proxy, proxy_connector
from .progress import Progress
from .server import ProxyServer
from .service import Service
from .singleflight import SingleFlight
from .storage.cleanup import Cleaner, Housekeeping
from .storage.disk import DiskStorage
from .storage.usage import UsageStore
from .sumdb.client import Sources, SumDB
from .sumdb.verify import Verifier
from .upstream import Upstream, Upstreams

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
                    urls: tuple[str, ...] | None = None, health: Health | None = None) -> Upstreams:
    """Return the ordered upstream list of config (or of urls) with its private routes and retries.

    health, when given, tracks which of them are down (one Health serves every list).
    """
    private = [(p.pattern, Upstream.from_url(p.url, p.headers())) for p in config.private_upstreams]
    return Upstreams([Upstream.from_url(u) for u in urls or config.upstreams], transport,
                     attempts=config.retry_attempts, backoff=config.retry_backoff,
                     sleep=sleep, private=private if urls is None else [], metrics=metrics, health=health)


def build_sumdb_sources(config: Config, upstreams: Upstreams, metrics: Metrics, sleep: Sleep = time.sleep,
                        clock: Clock = time.time) -> dict[str, Sources]:
    """Return where each checksum database this proxy serves or verifies against is read from.

    The databases are -sumdbs and the -gosumdb one; each is read through the upstreams' /sumdb/
    passthrough, else directly at https://<name> through the outbound transport (-proxy, -dns),
    except that a -gosumdb URL is where its database is read, alone.
    """
    db = config.gosumdb
    names = list(dict.fromkeys([*config.sumdbs, *([db.name] if db is not None else [])]))
    sources = {}
    for name in names:
        explicit = db.url if db is not None and db.name == name and db.url else ""
        direct = build_upstreams(config, upstreams.transport, metrics, sleep, urls=(explicit or f"https://{name}",),
                                 health=upstreams.health)
        sources[name] = Sources(name, upstreams, direct, upstream_first=not explicit, clock=clock)
    return sources


def build_verifier(config: Config, upstreams: Upstreams, storage: DiskStorage, metrics: Metrics,
                   sleep: Sleep = time.sleep, sources: dict[str, Sources] | None = None) -> Verifier:
    """Return the checksum verifier -gosumdb asks for (one that verifies nothing when off).

    It reads the database from sources (built from config when not given).
    """
    private = lambda module: upstreams.private_route(module) is not None  # noqa: E731
    if config.gosumdb is None:
        return Verifier(None, config.gonosumdb, private)
    db = config.gosumdb
    source = (sources or build_sumdb_sources(config, upstreams, metrics, sleep))[db.name]
    return Verifier(SumDB(db, source, storage, metrics), config.gonosumdb, private)


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
          progress: Progress | None = None) -> App:
    """Return every part of the proxy for config, wired; nothing is started.

    clock and sleep are injectable for tests; progress shows zip downloads (off when None).
    Raises StartupError when the cache directory cannot be made.
    """
    metrics = Metrics()
    storage = DiskStorage(config.cache_dir)
    try:
        os.makedirs(storage.root, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create the cache directory {storage.root}: {exc.strerror}") from None
    transport = build_transport(config)
    health = Health(metrics, clock, no_answer_limit=config.retry_attempts)
    metrics.on_scrape(health.probe_due)  # a scrape starts due probes, so an idle proxy still notices
    upstreams = build_upstreams(config, transport, metrics, sleep, health=health)
    sources = build_sumdb_sources(config, upstreams, metrics, sleep, clock)
    verifier = build_verifier(config, upstreams, storage, metrics, sleep, sources)
    flights: SingleFlight[bool] = SingleFlight()
    downloader = Downloader(storage, upstreams, verifier, progress or Progress("off"), metrics, clock,
                            config.download_connections, config.max_concurrent_downloads)
    usage = UsageStore(storage.root, clock)
    cleaner = Cleaner(storage, usage, clock, config.max_cache_age, config.max_cache_size, flights.in_flight,
                      metrics)
    service = Service(config, storage, upstreams, flights, verifier, downloader, LocalOnly(), usage.record, clock,
                      sumdbs=sources)
    return App(config, metrics, storage, transport, upstreams, verifier, flights, downloader, usage, cleaner,
               service)


def build_server(config: Config, clock: Clock = time.time, sleep: Sleep = time.sleep,
                 progress: Progress | None = None) -> ProxyServer:
    """Return a bound, not yet serving server for config; its housekeeping is its first background job.

    Raises StartupError when the cache directory cannot be made or the address cannot be bound.
    """
    app = build(config, clock, sleep, progress)
    housekeeping = Housekeeping(app.usage, app.cleaner, config.cleanup_interval)
    try:
        return ProxyServer(config, app.service, app.metrics, background=[housekeeping])
    except OSError as exc:
        raise StartupError(f"cannot listen on {config.host or '0.0.0.0'}:{config.port}: {exc.strerror}") from None
