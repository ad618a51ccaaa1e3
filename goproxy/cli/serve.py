"""Serving: start the proxy, say how it is configured, stop it cleanly on SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Mapping

from .. import __version__
from ..app import build_server
from ..config import Config
from ..errors import StartupError
from ..net.dial import mask_url
from ..net.dns import parse_dns_server
from ..net.proxy import parse_proxy_url
from ..progress import Progress
from ..sdnotify import Notifier
from ..server import ProxyServer
from ..values import format_duration

log = logging.getLogger("goproxy")


def log_startup(config: Config, server: ProxyServer) -> None:
    """Log the configuration the proxy runs with, secrets masked."""
    log.info("goproxy %s starting", __version__)
    log.info("listening on %s:%d", config.host or "0.0.0.0", server.port)
    log.info("cache directory: %s", os.path.abspath(config.cache_dir))
    log.info("upstreams: %s", ", ".join(mask_url(u) for u in config.upstreams))
    log_network(config)
    log.info("list TTL: %s; not-found TTL: %s", format_duration(config.list_ttl),
             format_duration(config.not_found_ttl))
    log.info("checksum databases proxied: %s", ", ".join(config.sumdbs) or "none")
    log.info("zip downloads: %d connections each, %s at once", config.download_connections,
             config.max_concurrent_downloads or "unlimited")
    if config.gosumdb is None:
        log.info("checksum verification: off")
    else:
        where = config.gosumdb.url or "through the upstream, else directly"
        log.info("checksum verification: %s (%s); not verified: %s", config.gosumdb.name, where,
                 ", ".join(config.gonosumdb) or "none")
    for p in config.private_upstreams:
        auth = f" with {p.auth_type} auth" if p.auth_type else ""
        log.info("private modules %s → %s%s", p.pattern, mask_url(p.url), auth)


def log_network(config: Config) -> None:
    """Log the outbound proxy, the hosts that bypass it, and the DNS in use."""
    if config.proxy:
        bypass = f" (not for {', '.join(config.no_proxy)})" if config.no_proxy else ""
        log.info("outbound proxy: %s%s", parse_proxy_url(config.proxy).text, bypass)
    else:
        log.info("outbound proxy: none")
    log.info("DNS: %s", parse_dns_server(config.dns) if config.dns else "system resolver")
    if config.ca_file:
        log.info("trusted CA certificates: %s", config.ca_file)


def serve(config: Config, environ: Mapping[str, str], progress: Progress | None = None) -> int:
    """Run the proxy until SIGINT or SIGTERM, then drain; return the exit status.

    Under systemd (NOTIFY_SOCKET in environ) it reports READY=1 once listening and STOPPING=1
    when a stop begins. Returns 1 when the proxy cannot start (logged with the reason).
    """
    notifier = Notifier(environ.get("NOTIFY_SOCKET"))
    try:
        server = build_server(config, progress=progress)
    except StartupError as exc:
        log.error("%s", exc)
        return 1
    log_startup(config, server)
    for job in server.background:
        job.start()
    log.info("Set GOPROXY=http://localhost:%d,direct", server.port)
    stopper: list[threading.Thread] = []

    def on_signal(signum: int, _frame: object) -> None:
        if stopper:
            return
        log.info("received %s; shutting down", signal.Signals(signum).name)
        notifier.notify("STOPPING=1")
        # shutdown() blocks until serve_forever returns, so it must run off the serving thread.
        t = threading.Thread(target=server.stop, name="goproxy-stop")
        stopper.append(t)
        t.start()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    notifier.notify("READY=1", f"STATUS=serving on port {server.port}")
    server.serve()
    if stopper:
        stopper[0].join()
    log.info("goproxy stopped")
    return 0
