"""Build the proxy's object graph from a Config: the one place that wires modules together."""

from __future__ import annotations

import os
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from .accesslog import AccessLog
from .config import Config
from .download import Downloader
from .errors import StartupError
from .locks import FileLocks, KeyLocks
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
from .sumdb.client import SumDB
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
                    urls: tuple[str, ...] | None = None) -> Upstreams:
    """Return the ordered upstream list of config (or of urls) with its private routes and retries."""
    private = [(p.pattern, Upstream.from_url(p.url, p.headers())) for p in config.private_upstreams]
    return Upstreams([Upstream.from_url(u) for u in urls or config.upstreams], transport,
                     attempts=config.retry_attempts, backoff=config.retry_backoff,
                     sleep=sleep, private=private if urls is None else [], metrics=metrics)


def build_verifier(config: Config, upstreams: Upstreams, storage: DiskStorage, metrics: Metrics,
                   sleep: Sleep = time.sleep, locks: KeyLocks | None = None) -> Verifier:
    """Return the checksum verifier -gosumdb asks for (one that verifies nothing when off)."""
    private = lambda module: upstreams.private_route(module) is not None  # noqa: E731
    if config.gosumdb is None:
        return Verifier(None, config.gonosumdb, private)
    db = config.gosumdb
    direct = build_upstreams(config, upstreams.transport, metrics, sleep, urls=(db.url or f"https://{db.name}",))
    return Verifier(SumDB(db, upstreams, direct, storage, metrics, locks), config.gonosumdb, private)


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


def build_storage(config: Config) -> DiskStorage:
    """Return the disk cache of config, its directory made; raise StartupError when it cannot be."""
    root = os.path.abspath(config.cache_dir)
    try:
        os.makedirs(root, mode=0o755, exist_ok=True)
        return DiskStorage(root)
    except OSError as exc:
        raise StartupError(f"cannot create the cache directory {root}: {exc.strerror}") from None


def build(config: Config, clock: Clock = time.time, sleep: Sleep = time.sleep,
          progress: Progress | None = None, metrics: Metrics | None = None,
          on_use: Callable[[str], None] | None = None) -> App:
    """Return every part of the proxy for config, wired; nothing is started.

    clock and sleep are injectable for tests; progress shows zip downloads (off when None).
    metrics is where counts go (a worker's slot of the server's shared region; a private
    registry when None); on_use receives the uses of artifacts (the usage store's record when
    None). Raises StartupError when the cache directory cannot be made.
    """
    metrics = metrics or Metrics()
    storage = build_storage(config)
    locks = FileLocks(storage.root)
    transport = build_transport(config)
    upstreams = build_upstreams(config, transport, metrics, sleep)
    verifier = build_verifier(config, upstreams, storage, metrics, sleep, locks)
    flights: SingleFlight[bool] = SingleFlight()
    downloader = Downloader(storage, upstreams, verifier, progress or Progress("off"), metrics, clock,
                            config.download_connections, config.max_concurrent_downloads)
    usage = UsageStore(storage.root, clock)
    cleaner = Cleaner(storage, usage, clock, config.max_cache_age, config.max_cache_size,
                      lambda key: flights.in_flight(key) or locks.busy(key), metrics)
    service = Service(config, storage, upstreams, flights, verifier, downloader, locks, on_use or usage.record, clock)
    return App(config, metrics, storage, transport, upstreams, verifier, flights, downloader, usage, cleaner,
               service)


def build_server(config: Config, clock: Clock = time.time, sleep: Sleep = time.sleep,
                 progress: Progress | None = None, listener: socket.socket | None = None,
                 metrics: Metrics | None = None, on_use: Callable[[str], None] | None = None,
                 access: AccessLog | None = None, share: int = 1) -> ProxyServer:
    """Return a bound, not yet serving server for config.

    Alone (listener None) it binds config's address and its housekeeping is its first
    background job. As one of share workers on the parent's listener it has no housekeeping
    (the parent runs it): metrics is its slot of the shared region and on_use sends uses to
    the parent. Raises StartupError when the cache directory cannot be made or the address
    cannot be bound.
    """
    app = build(config, clock, sleep, progress, metrics, on_use)
    background = [] if listener is not None else [Housekeeping(app.usage, app.cleaner, config.cleanup_interval)]
    try:
        return ProxyServer(config, app.service, app.metrics, background=background, listener=listener,
                           access=access, share=share)
    except OSError as exc:
        raise StartupError(f"cannot listen on {config.host or '0.0.0.0'}:{config.port}: {exc.strerror}") from None


def build_housekeeping(config: Config, metrics: Metrics, clock: Clock = time.time) -> tuple[Housekeeping, UsageStore]:
    """Return the housekeeping of a server whose workers are other processes, and its usage store.

    Cleanup treats a key as in use while any process holds its fetch lock. Raises StartupError
    when the cache directory cannot be made.
    """
    storage = build_storage(config)
    locks = FileLocks(storage.root)
    usage = UsageStore(storage.root, clock)
    cleaner = Cleaner(storage, usage, clock, config.max_cache_age, config.max_cache_size, locks.busy, metrics)
    return Housekeeping(usage, cleaner, config.cleanup_interval), usage
