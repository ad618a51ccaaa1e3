"""Build the proxy's object graph from a Config: the one place that wires modules together."""

from __future__ import annotations

import logging
import os
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from . import __version__
from .airgap.gosum import GoSumVerifier, Want
from .airgap.offline import OfflineUpstreams
from .config import Config
from .coord import RedisLocks, RedisUsage
from .coord import connect as connect_redis
from .download import Downloader
from .errors import StartupError, StoreUnavailable
from .locks import KeyLocks, LocalOnly
from .metrics import Metrics
from .net.dial import direct_connector, mask_url
from .net.dns import Resolver
from .net.http import Timeouts, Transport
from .net.proxy import NoProxy, Proxy, parse_proxy_url, proxy_connector
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
from .storage.base import Storage
from .storage.cleanup import Cleaner, Housekeeping
from .storage.disk import DiskStorage
from .storage.s3 import S3Storage, make_client, split_storage_url
from .storage.usage import DB_NAME, Usage, UsageStore
from .sumdb.client import SumDB
from .sumdb.verify import Verifier
from .upstream import Upstream, Upstreams

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], None]

log = logging.getLogger(__name__)


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


def build_verifier(config: Config, upstreams: Upstreams, storage: Storage, metrics: Metrics,
                   sleep: Sleep = time.sleep) -> Verifier:
    """Return the checksum verifier -gosumdb asks for (one that verifies nothing when off)."""
    private = lambda module: upstreams.private_route(module) is not None  # noqa: E731
    if config.gosumdb is None:
        return Verifier(None, config.gonosumdb, private)
    db = config.gosumdb
    direct = build_upstreams(config, upstreams.transport, metrics, sleep, urls=(db.url or f"https://{db.name}",))
    return Verifier(SumDB(db, upstreams, direct, storage, metrics), config.gonosumdb, private)


def build_offline(config: Config, storage: Storage, metrics: Metrics,
                  clock: Clock) -> tuple[OfflineUpstreams, Verifier]:
    """Return the upstreams and verifier of -upstream off: the cache alone, no outbound connection."""
    private = [(p.pattern, Upstream.from_url(p.url)) for p in config.private_upstreams]
    upstreams = OfflineUpstreams(storage, metrics, clock, config.list_ttl, private)
    is_private = lambda module: upstreams.private_route(module) is not None  # noqa: E731
    db = config.gosumdb
    sumdb = SumDB(db, upstreams, upstreams, storage, metrics) if db is not None else None
    log.info("offline (-upstream off): no outbound connections; answering from the cache alone")
    return upstreams, Verifier(sumdb, config.gonosumdb, is_private)


# The shared store's usage database under the local tier, when replicas share no Redis.
BUCKET_USAGE_DB = ".bucket-usage.db"


def s3_proxies(config: Config) -> dict[str, str]:
    """Return botocore's proxies for the object store: -proxy unless -no-proxy names the endpoint.

    Raises StartupError for a SOCKS proxy (botocore speaks only to HTTP proxies).
    """
    if not config.proxy:
        return {}
    host, port = "s3.amazonaws.com", 443
    if config.s3_endpoint:
        parts = urllib.parse.urlsplit(config.s3_endpoint)
        host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    if NoProxy(config.no_proxy).matches(host, port):
        return {}
    if parse_proxy_url(config.proxy).scheme.startswith("socks"):
        raise StartupError("the object store cannot be reached through a SOCKS proxy: use an http:// -proxy, "
                           f"or list {host} in -no-proxy")
    url = config.proxy if "://" in config.proxy else "http://" + config.proxy
    return {"http": url, "https": url}


def build_storage(config: Config) -> tuple[Storage, DiskStorage]:
    """Return the storage config asks for and its local disk: the disk cache in -cache itself,
    or, with -storage s3://…, the bucket and its local read-through tier in -cache.

    Raises StartupError when the cache directory cannot be made, boto3 is missing, or the
    bucket cannot be reached (missing, credentials refused, store down).
    """
    local = DiskStorage(config.cache_dir)
    try:
        os.makedirs(local.root, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create the cache directory {local.root}: {exc.strerror}") from None
    if not config.storage:
        return local, local
    bucket, prefix = split_storage_url(config.storage)
    client = make_client(config.s3_endpoint, config.s3_region, s3_proxies(config), config.ca_file)
    storage = S3Storage(bucket, prefix, client, local)
    try:
        storage.check()
    except StoreUnavailable as exc:
        raise StartupError(str(exc)) from None
    log.info("storage: %s%s; local tier %s", config.storage,
             f" at {config.s3_endpoint}" if config.s3_endpoint else "", local.root)
    return storage, local


class Health:
    """What /health and /ready say: whether the shared store and the lock service answer."""

    def __init__(self, checks: list[tuple[str, Callable[[], None]]]) -> None:
        self.checks = checks

    def problems(self) -> list[str]:
        """Return one line per part that cannot be reached now."""
        found = []
        for name, check in self.checks:
            try:
                check()
            except StoreUnavailable as exc:
                found.append(f"{name}: {exc}")
        return found

    def health(self) -> tuple[str, bytes]:
        """Return /health's body: "ok", or "degraded" with the reasons (still 200: the process lives)."""
        problems = self.problems()
        text = "ok\n" if not problems else "degraded\n" + "".join(p + "\n" for p in problems)
        return "text/plain; charset=utf-8", text.encode()

    def ready(self) -> tuple[str, bytes]:
        """Return /ready's body; raise StoreUnavailable (503) while a shared part is unreachable."""
        problems = self.problems()
        if problems:
            raise StoreUnavailable("not ready: " + "; ".join(problems))
        return "text/plain; charset=utf-8", b"ready\n"


@dataclass
class App:
    """The proxy's parts, built and wired, for a server or a command to use.

    usage and cleaner are the shared store's; with -storage s3://… usages and cleaners also
    hold the local tier's.
    """

    config: Config
    metrics: Metrics
    storage: Storage
    local: DiskStorage
    transport: Transport
    upstreams: Upstreams
    verifier: Verifier
    flights: SingleFlight[bool]
    downloader: Downloader
    usage: Usage
    cleaner: Cleaner
    service: Service
    usages: list[Usage]
    cleaners: list[Cleaner]
    health: Health


def build(config: Config, clock: Clock = time.time, sleep: Sleep = time.sleep,
          progress: Progress | None = None, gosum: Mapping[tuple[str, str], Want] | None = None) -> App:
    """Return every part of the proxy for config, wired; nothing is started.

    clock and sleep are injectable for tests; progress shows zip downloads (off when None).
    gosum, when given, are go.sum hashes every fetched zip and go.mod must also match (prefetch).
    Raises StartupError when the cache directory cannot be made, or a shared store (bucket,
    Redis) cannot be reached or its client is not installed.
    """
    metrics = Metrics()
    storage, local = build_storage(config)
    checks: list[tuple[str, Callable[[], None]]] = []
    if isinstance(storage, S3Storage):
        checks.append(("object store", storage.check))
    redis_locks = None
    if config.lock_url:
        client = connect_redis(config.lock_url, config.ca_file)
        namespace = f"goproxy:{config.storage or 'disk:' + local.root}"
        redis_locks = RedisLocks(client, namespace)
        log.info("replica coordination: %s", mask_url(config.lock_url))
        checks.append(("lock service", redis_locks.check))
    locks: KeyLocks = redis_locks or LocalOnly()
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
    in_flight = flights.in_flight
    if redis_locks is not None:
        in_flight = lambda key: flights.in_flight(key) or redis_locks.held(key)  # noqa: E731
    usage: Usage
    usages: list[Usage]
    if redis_locks is not None:
        usage = RedisUsage(redis_locks.client, redis_locks.namespace, clock)
    else:
        usage = UsageStore(local.root, clock, name=BUCKET_USAGE_DB if storage is not local else DB_NAME)
    exclusive = (lambda: redis_locks.try_hold("cleanup")) if redis_locks is not None else None
    if storage is local:  # one cache: its size and age limits
        cleaner = Cleaner(storage, usage, clock, config.max_cache_age, config.max_cache_size, in_flight, metrics,
                          exclusive)
        usages, cleaners = [usage], [cleaner]
    else:  # the bucket ages out; the local tier keeps under the size limit
        cleaner = Cleaner(storage, usage, clock, config.max_cache_age, 0, in_flight, metrics, exclusive)
        local_usage = UsageStore(local.root, clock)
        usages = [usage, local_usage]
        cleaners = [cleaner, Cleaner(local, local_usage, clock, 0, config.max_cache_size, flights.in_flight)]
    record = usage.record if len(usages) == 1 else _record_all(usages)
    service = Service(config, storage, upstreams, flights, verifier, downloader, locks, record, clock)
    return App(config, metrics, storage, local, transport, upstreams, verifier, flights, downloader, usage,
               cleaner, service, usages, cleaners, Health(checks))


def _record_all(usages: list[Usage]) -> Callable[[str], None]:
    def record(key: str) -> None:
        for u in usages:
            u.record(key)

    return record


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
    capture of warnings for the front page. /health reports a degraded shared store and /ready
    fails (503) while one is unreachable. Raises StartupError when the cache directory cannot be
    made, a shared store cannot be reached, or the address cannot be bound.
    """
    progress = progress or Progress("off")
    app = build(config, clock, sleep, progress)
    housekeeping = Housekeeping(app.usages, app.cleaners, config.cleanup_interval)
    status, history, ring = build_status(config, app, progress, clock)
    routes: dict[str, Route] = {"/health": lambda host: app.health.health(),
                                "/ready": lambda host: app.health.ready(), **status_routes(status, config)}
    try:
        return ProxyServer(config, app.service, app.metrics, background=[housekeeping, history, LogCapture(ring)],
                           routes=routes)
    except OSError as exc:
        raise StartupError(f"cannot listen on {config.host or '0.0.0.0'}:{config.port}: {exc.strerror}") from None
