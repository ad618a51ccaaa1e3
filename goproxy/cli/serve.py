"""Serving: start the proxy, say how it is configured, stop it cleanly on SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping

from .. import __version__, configload
from ..accesslog import AccessLog
from ..app import build_access, build_housekeeping, build_server
from ..config import Config
from ..errors import ConfigError, StartupError
from ..listen import bind, bound_port, describe, raise_open_files_limit
from ..metrics import Metrics
from ..net.dial import mask_url
from ..net.dns import parse_dns_server
from ..net.proxy import parse_proxy_url
from ..progress import Progress
from ..sdnotify import Notifier
from ..server import ProxyServer
from ..shm import Region
from ..storage.usage import UsageForwarder
from ..values import format_duration
from ..worker import Control, write_fd
from ..worker import run as run_worker_process
from ..workers import Supervisor, worker_count
from .common import parse_flags, setup_logging

log = logging.getLogger("goproxy")


def log_startup(config: Config, address: str, workers: int) -> None:
    """Log the configuration the proxy runs with, secrets masked."""
    log.info("goproxy %s starting", __version__)
    log.info("listening on %s with %d worker process%s", address, workers, "" if workers == 1 else "es")
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
    log_access(config)


def log_access(config: Config) -> None:
    """Log how clients are admitted (TLS, credentials) and the module rules; warn of credentials over plain http."""
    if config.tls_cert:
        log.info("serving https (HTTP/1.1) with certificate %s", config.tls_cert)
    if config.auth_file:
        log.info("client credentials from %s: every request but /health and /ready%s needs one", config.auth_file,
                 "" if config.metrics_auth == "on" else " and /metrics")
        if not config.tls_cert:
            log.warning("-auth-file without -tls-cert: secrets would cross the network in clear text, and the go "
                        "command sends credentials only over https; set -tls-cert and -tls-key, or serve "
                        "behind a proxy that terminates TLS")
    for rule in config.rules:
        reason = f" ({rule.reason})" if rule.reason and rule.action != "allow" else ""
        log.info("module rule %d: %s%s", rule.index + 1, rule.describe(), reason)


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


def serve(config: Config, environ: Mapping[str, str], progress: Progress | None = None,
          reload: Callable[[], Config] | None = None) -> int:
    """Run the proxy until SIGINT or SIGTERM, then drain; return the exit status.

    With -workers above 1 (and fork available) the parent binds, forks the workers and
    supervises them; SIGHUP reloads the configuration with reload (by default the flags this
    process was started with, the environment and the config file, read again). A single
    process (-workers 1) puts the reloaded certificate, credentials and module rules in force
    on SIGHUP; its other settings change on a restart. Under systemd
    (NOTIFY_SOCKET in environ) it reports READY=1 once every worker accepts, RELOADING=1 and
    STOPPING=1 when those begin. Returns 1 when the proxy cannot start (logged with the reason).
    """
    notifier = Notifier(environ.get("NOTIFY_SOCKET"))
    soft, hard = raise_open_files_limit()
    if 0 < soft < config.max_connections + 100:
        log.warning("the open-files limit (%d) is below -max-connections (%d): raise it (ulimit -n, LimitNOFILE)",
                    soft, config.max_connections)
    count = worker_count(config.workers)
    if count > 1 and hasattr(os, "fork"):
        return _supervise(config, count, environ, notifier, progress, reload or _reloader(environ))
    try:
        server = build_server(config, progress=progress, access=AccessLog(_access_writer(progress)))
    except StartupError as exc:
        log.error("%s", exc)
        return 1
    log_startup(config, describe(server.listener), 1)
    for job in server.background:
        job.start()
    log.info("Set GOPROXY=%s://localhost:%d,direct", _scheme(config), server.port)
    stopper: list[threading.Thread] = []
    reload = reload or _reloader(environ)

    def reload_access() -> None:
        notifier.notify("RELOADING=1", f"MONOTONIC_USEC={int(time.monotonic() * 1e6)}")
        try:
            fresh = build_access(reload())
        except (ConfigError, StartupError) as exc:
            log.error("reload: %s; keeping the running configuration", exc)
        else:
            server.control.update(fresh)
            log.info("reload: certificate, credentials and %d module rule(s) in force; other settings change "
                     "on a restart (or with -workers 2 or more, on reload)", len(fresh.rules))
        notifier.notify("READY=1")

    def on_hup(signum: int, _frame: object) -> None:
        threading.Thread(target=reload_access, name="goproxy-reload", daemon=True).start()

    def on_signal(signum: int, _frame: object) -> None:
        if stopper:
            return
        log.info("received %s; shutting down", signal.Signals(signum).name)
        notifier.notify("STOPPING=1")
        # stop() waits for the loop to finish draining, so it must run off the serving thread.
        t = threading.Thread(target=server.stop, name="goproxy-stop")
        stopper.append(t)
        t.start()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, on_hup)
    notifier.notify("READY=1", f"STATUS=serving on port {server.port}")
    server.serve()
    if stopper:
        stopper[0].join()
    log.info("goproxy stopped")
    return 0


def _supervise(config: Config, count: int, environ: Mapping[str, str], notifier: Notifier,
               progress: Progress | None, reload: Callable[[], Config]) -> int:
    """Bind, run the housekeeping here, and keep count worker processes serving."""
    region = Region(max(16, 2 * count + 2))
    try:
        build_access(config)  # each worker loads them again; a bad file stops the start here, once
        listener = bind(config.host, config.port)
        housekeeping = build_housekeeping(config, Metrics(region, 0))
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.host or "*", config.port, exc.strerror or exc)
        return 1
    except StartupError as exc:
        log.error("%s", exc)
        return 1
    port = bound_port(listener)
    log_startup(config, describe(listener), count)
    mode = "lines" if progress is not None and progress.mode == "tty" else (progress.mode if progress else "off")
    jobs = [housekeeping]

    def run_worker(index: int, cfg: Config, control: socket.socket, slot: int) -> int:
        def build(c: Config, sock: socket.socket, reg: Region, s: int, on_use: Callable[[str], None],
                  access: AccessLog) -> ProxyServer:
            return build_server(c, progress=Progress(mode, sys.stderr), listener=sock, metrics=Metrics(reg, s),
                                on_use=on_use, access=access, share=worker_count(c.workers))

        def forward(ctl: Control) -> tuple[Callable[[str], None], Callable[[], None]]:
            forwarder = UsageForwarder(ctl.send).start()
            return forwarder.record, forwarder.close

        return run_worker_process(index, cfg, listener, control, region, slot, build, forward, setup_logging)

    def on_ready() -> None:
        log.info("Set GOPROXY=%s://localhost:%d,direct", _scheme(config), port)
        notifier.notify("READY=1", f"STATUS=serving on port {port} with {count} workers")

    def on_config(new: Config) -> None:
        logging.getLogger().setLevel(getattr(logging, new.log_level.upper()))
        try:
            fresh = build_housekeeping(new, Metrics(region, 0))
        except StartupError as exc:
            log.error("reload: keeping the cache housekeeping as it was: %s", exc)
            return
        jobs[0].stop()
        jobs[0] = fresh
        fresh.start()

    def on_use(key: str, when: float) -> None:
        for store in jobs[0].stores:
            store.record(key, when)

    def checked_reload() -> Config:
        new = reload()
        try:
            build_access(new)
        except StartupError as exc:
            raise ConfigError(str(exc)) from None
        return new

    housekeeping.start()
    supervisor = Supervisor(config, count, region, run_worker, checked_reload, notifier, on_use, on_ready,
                            on_config)
    try:
        status = supervisor.run()
    finally:
        jobs[0].stop()
        listener.close()
    log.info("goproxy stopped")
    return status


def _scheme(config: Config) -> str:
    return "https" if config.tls_cert else "http"


def _reloader(environ: Mapping[str, str]) -> Callable[[], Config]:
    """Return a function loading the configuration again from this process's flags, environ and file."""
    flags, _ = parse_flags(sys.argv[1:], booleans=frozenset({"h", "help", "version"}))

    def load() -> Config:
        return configload.load(flags, environ)

    return load


def _access_writer(progress: Progress | None) -> Callable[[str], None]:
    """Return where access lines go: above the progress bars on a terminal, else straight to stderr."""
    if progress is not None and progress.mode == "tty":
        return progress.write_above
    return write_fd(2)
