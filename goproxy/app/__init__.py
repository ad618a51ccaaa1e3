"""Build the proxy's object graph from a Config: the one place that wires modules together.

network.py wires the outbound side, stores.py storage and the coordination of replicas,
frontpage.py the status page; build() puts them together in dependency order.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping

from ..access import Access, TLSLoadError, server_context
from ..accesslog import AccessLog
from ..airgap.gosum import GoSumVerifier, Want
from ..auth import AuthFile, AuthFileError
from ..config import Config
from ..download import Downloader
from ..errors import StartupError
from ..health import Health
from ..metrics import Metrics
from ..progress import Progress
from ..readiness import Readiness
from ..respond import Route
from ..server import Background, ProxyServer
from ..service import Service
from ..singleflight import SingleFlight
from ..storage.cleanup import Housekeeping
from ..sumdb.verify import Verifier
from ..upstream import Upstreams
from .frontpage import LogCapture, build_status, status_routes
from .network import (
    Clock,
    Sleep,
    build_offline,
    build_sumdb_sources,
    build_transport,
    build_upstreams,
    build_verifier,
)
from .parts import App
from .stores import build_coordination, build_storage

__all__ = ["App", "build", "build_access", "build_housekeeping", "build_server", "build_transport",
           "build_upstreams"]


def build_access(config: Config, clock: Callable[[], float] = time.monotonic) -> Access:
    """Return the access settings config asks for: its TLS context, credentials and module rules.

    clock paces the checks of the auth file for changes. Raises StartupError naming the
    certificate, key or auth file that cannot be used.
    """
    try:
        tls = server_context(config.tls_cert, config.tls_key) if config.tls_cert else None
        auth = AuthFile(config.auth_file, clock) if config.auth_file else None
    except (TLSLoadError, AuthFileError) as exc:
        raise StartupError(str(exc)) from None
    return Access(tls, auth, config.metrics_auth == "on", config.rules)


def build(config: Config, clock: Clock = time.time, sleep: Sleep = time.sleep,
          progress: Progress | None = None, gosum: Mapping[tuple[str, str], Want] | None = None,
          metrics: Metrics | None = None, on_use: Callable[[str], None] | None = None,
          control: Access | None = None, early_answers: bool = False) -> App:
    """Return every part of the proxy for config, wired; nothing is started.

    clock and sleep are injectable for tests; progress shows zip downloads (off when None).
    gosum, when given, are go.sum hashes every fetched zip and go.mod must also match (prefetch).
    metrics is where counts go (a worker's slot of the server's shared region; a private
    registry when None); on_use receives the uses of artifacts (the usage stores when None).
    control holds the module rules the service obeys (config's rules when None). early_answers
    lets the service answer a fetched .info, .mod or checksum DB file while it is being committed.
    Raises StartupError when the cache directory cannot be made, or a shared store (bucket,
    Redis) cannot be reached or its client is not installed.
    """
    metrics = metrics or Metrics()
    storage, local = build_storage(config)
    upstreams: Upstreams
    if config.offline:
        upstreams = build_offline(config, storage, metrics, clock)
    else:
        health = Health(metrics, clock, no_answer_limit=config.retry_attempts)
        metrics.on_scrape(health.probe_due)  # a scrape starts due probes, so an idle proxy still notices
        upstreams = build_upstreams(config, build_transport(config), metrics, sleep, health=health)
    sources = build_sumdb_sources(config, upstreams, storage, metrics, sleep, clock)
    verifier: Verifier = build_verifier(config, upstreams, storage, metrics, sources)
    if gosum is not None:
        verifier = GoSumVerifier(verifier, gosum)
    flights: SingleFlight[bool] = SingleFlight()
    coordination = build_coordination(config, storage, local, metrics, clock, flights.in_flight)
    downloader = Downloader(storage, upstreams, verifier, progress or Progress("off"), metrics, clock,
                            config.download_connections, config.max_concurrent_downloads)
    service = Service(config, storage, upstreams, flights, verifier, downloader, coordination.locks,
                      on_use or coordination.record, clock, sumdbs=sources,
                      control=control or Access(rules=config.rules), early_answers=early_answers)
    readiness = Readiness(coordination.checks, service.health)
    return App(config, metrics, storage, local, upstreams.transport, upstreams, verifier, flights, downloader,
               coordination, service, readiness)


def build_server(config: Config, clock: Clock = time.time, sleep: Sleep = time.sleep,
                 progress: Progress | None = None, listener: socket.socket | None = None,
                 metrics: Metrics | None = None, on_use: Callable[[str], None] | None = None,
                 access: AccessLog | None = None, share: int = 1) -> ProxyServer:
    """Return a bound, not yet serving server for config.

    Alone (listener None) it binds config's address and its background jobs are, in order: cache
    housekeeping, the traffic history sampler, and the capture of warnings for the front page.
    As one of share workers on the parent's listener it has no housekeeping (the parent runs
    it): metrics is its slot of the shared region and on_use sends uses to the parent.
    /health reports a degraded shared store or a down upstream, and /ready fails (503) while a
    shared store is unreachable. With -tls-cert it serves https; with -auth-file every request
    but /health and /ready needs a credential; config's rules decide module artifacts (see
    build_access). Raises StartupError when the cache directory cannot be made, a shared store
    cannot be reached, the certificate, key or auth file cannot be used, or the address cannot
    be bound.
    """
    progress = progress or Progress("off")
    control = build_access(config, clock)
    app = build(config, clock, sleep, progress, metrics=metrics, on_use=on_use, control=control, early_answers=True)
    status, history, ring = build_status(config, app, progress, clock)
    background: list[Background] = [history, LogCapture(ring)]
    if listener is None:
        background.insert(0, Housekeeping(app.coordination.usages, app.coordination.cleaners,
                                          config.cleanup_interval))
    routes: dict[str, Route] = {"/health": lambda host: app.readiness.health(),
                                "/ready": lambda host: app.readiness.ready(), **status_routes(status, config)}
    try:
        return ProxyServer(config, app.service, app.metrics, background=background, routes=routes,
                           listener=listener, access=access, share=share, control=control)
    except OSError as exc:
        raise StartupError(f"cannot listen on {config.host or '0.0.0.0'}:{config.port}: {exc.strerror}") from None


def build_housekeeping(config: Config, metrics: Metrics, clock: Clock = time.time) -> Housekeeping:
    """Return the housekeeping of a server whose workers are other processes (run by the parent).

    Cleanup treats a key as in use while any process holds its fetch lock. Raises StartupError
    when the cache directory cannot be made or a shared store cannot be reached.
    """
    storage, local = build_storage(config)
    coordination = build_coordination(config, storage, local, metrics, clock, lambda key: False)
    return Housekeeping(coordination.usages, coordination.cleaners, config.cleanup_interval)
