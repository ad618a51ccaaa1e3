"""Wiring of the outbound side: transport, upstreams, checksum database sources and the verifier."""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable

from ..airgap.offline import OfflineUpstreams
from ..config import Config
from ..health import Health
from ..metrics import Metrics
from ..net.dial import direct_connector
from ..net.dns import Resolver
from ..net.http import Timeouts, Transport
from ..net.proxy import Proxy, proxy_connector
from ..storage.base import Storage
from ..sumdb.client import Sources, SumDB, verified_tree_key
from ..sumdb.verify import Verifier
from ..upstream import Upstream, Upstreams

log = logging.getLogger("goproxy.app")

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


class SumdbSources:
    """Where each checksum database served under /sumdb/ is read from, by name.

    The databases of -sumdbs and -gosumdb are known from the start; a database the cache holds a
    verified tree head of (imported from a bundle) is served too, found when first asked for.
    """

    def __init__(self, make: Callable[[str, str], Sources], names: list[str], explicit: dict[str, str],
                 storage: Storage) -> None:
        """Make each database's Sources with make(name, url) (url "" for the usual places).

        names are the databases known from the start; explicit maps names to the database URL
        -gosumdb gives.
        """
        self._make = make
        self._storage = storage
        self._sources = {name: make(name, explicit.get(name, "")) for name in names}

    def __getitem__(self, name: str) -> Sources:
        return self._sources[name]

    def __call__(self, name: str) -> Sources | None:
        """Return where database name is read from, or None when it is not served here."""
        found = self._sources.get(name)
        if found is None and self._storage.stat(verified_tree_key(name)) is not None:
            found = self._sources.setdefault(name, self._make(name, ""))
        return found


def build_sumdb_sources(config: Config, upstreams: Upstreams, storage: Storage, metrics: Metrics,
                        sleep: Sleep = time.sleep, clock: Clock = time.time) -> SumdbSources:
    """Return where each checksum database this proxy serves or verifies against is read from.

    Each is read through the upstreams' /sumdb/ passthrough, else directly at https://<name>
    through the outbound transport (-proxy, -dns), except that a -gosumdb URL is where its
    database is read, alone. Offline, both are the cache.
    """
    db = config.gosumdb

    def make(name: str, explicit: str) -> Sources:
        if isinstance(upstreams, OfflineUpstreams):
            return Sources(name, upstreams, None, clock=clock)
        direct = build_upstreams(config, upstreams.transport, metrics, sleep, urls=(explicit or f"https://{name}",),
                                 health=upstreams.health)
        return Sources(name, upstreams, direct, upstream_first=not explicit, clock=clock)

    names = list(dict.fromkeys([*config.sumdbs, *([db.name] if db is not None else [])]))
    explicit = {db.name: db.url} if db is not None and db.url else {}
    return SumdbSources(make, names, explicit, storage)


def build_verifier(config: Config, upstreams: Upstreams, storage: Storage, metrics: Metrics,
                   sources: SumdbSources) -> Verifier:
    """Return the checksum verifier -gosumdb asks for (one that verifies nothing when off)."""
    private = lambda module: upstreams.private_route(module) is not None  # noqa: E731
    if config.gosumdb is None:
        return Verifier(None, config.gonosumdb, private)
    db = config.gosumdb
    return Verifier(SumDB(db, sources[db.name], storage, metrics), config.gonosumdb, private)


def build_offline(config: Config, storage: Storage, metrics: Metrics, clock: Clock) -> OfflineUpstreams:
    """Return the upstreams of -upstream off: the cache alone, no outbound connection."""
    private = [(p.pattern, Upstream.from_url(p.url)) for p in config.private_upstreams]
    log.info("offline (-upstream off): no outbound connections; answering from the cache alone")
    return OfflineUpstreams(storage, metrics, clock, config.list_ttl, private)
