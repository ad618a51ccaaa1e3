"""Build the proxy's object graph from a Config: the one place that wires modules together.

network.py wires the outbound side, stores.py storage and the coordination of replicas,
frontpage.py the status page; build() puts them together in dependency order.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from ..airgap.gosum import GoSumVerifier, Want
from ..config import Config
from ..download import Downloader
from ..errors import StartupError
from ..health import Health
from ..metrics import Metrics
from ..progress import Progress
from ..readiness import Readiness
from ..server import ProxyServer, Route
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

__all__ = ["App", "build", "build_server", "build_transport", "build_upstreams"]


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
                      coordination.record(), clock, sumdbs=sources)
    readiness = Readiness(coordination.checks, service.health)
    return App(config, metrics, storage, local, upstreams.transport, upstreams, verifier, flights, downloader,
               coordination, service, readiness)


def build_server(config: Config, clock: Clock = time.time, sleep: Sleep = time.sleep,
                 progress: Progress | None = None) -> ProxyServer:
    """Return a bound, not yet serving server for config.

    Its background jobs, in order: cache housekeeping, the traffic history sampler, and the
    capture of warnings for the front page. /health reports a degraded shared store or a down
    upstream, and /ready fails (503) while a shared store is unreachable. Raises StartupError
    when the cache directory cannot be made, a shared store cannot be reached, or the address
    cannot be bound.
    """
    progress = progress or Progress("off")
    app = build(config, clock, sleep, progress)
    housekeeping = Housekeeping(app.coordination.usages, app.coordination.cleaners, config.cleanup_interval)
    status, history, ring = build_status(config, app, progress, clock)
    routes: dict[str, Route] = {"/health": lambda host: app.readiness.health(),
                                "/ready": lambda host: app.readiness.ready(), **status_routes(status, config)}
    try:
        return ProxyServer(config, app.service, app.metrics, background=[housekeeping, history, LogCapture(ring)],
                           routes=routes)
    except OSError as exc:
        raise StartupError(f"cannot listen on {config.host or '0.0.0.0'}:{config.port}: {exc.strerror}") from None
