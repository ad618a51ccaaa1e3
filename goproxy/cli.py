"""Command line: Go-style flags, config layering, logging set-up, building the server, start/stop."""

from __future__ import annotations

import logging
import logging.handlers
import os
import signal
import ssl
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from queue import SimpleQueue

from . import __version__
from . import config as cfg
from .cache import Cache
from .cleanup import Housekeeping
from .config import Config
from .download import Downloader
from .errors import ConfigError
from .metrics import Metrics
from .netproxy import Proxy, parse_proxy_url, proxy_connector
from .progress import Progress, choose_mode
from .resolver import Resolver, parse_dns_server
from .sdnotify import Notifier
from .server import ProxyServer
from .service import Service
from .sumdb import SumDB
from .transport import Timeouts, Transport, direct_connector, mask_url
from .upstream import Upstream, Upstreams

log = logging.getLogger("goproxy")

def _verify_cache(args: list[str], environ: Mapping[str, str]) -> int:
    from .verify import main as verify_main

    return verify_main(args, environ)


# Subcommands: name → function(args, environ) returning an exit status.
SUBCOMMANDS: dict[str, Callable[[list[str], Mapping[str, str]], int]] = {"verify-cache": _verify_cache}


def parse_flags(args: Sequence[str],
                booleans: frozenset[str] = frozenset()) -> tuple[dict[str, str], list[str]]:
    """parse_flags reads Go-style flags (-port 3000, -port=3000, --port 3000) up to the first
    non-flag or "--"; returns (flags, remaining args). Flags named in booleans take no value.
    Raises ConfigError for a flag missing its value."""
    flags: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        name = arg.lstrip("-")
        if arg.startswith("---") or not name:
            raise ConfigError(f"bad flag syntax: {arg}")
        if "=" in name:
            name, value = name.split("=", 1)
        elif name in booleans:
            value = "true"
        elif i + 1 < len(args):
            i += 1
            value = args[i]
        else:
            raise ConfigError(f"flag -{name}: needs a value")
        flags[name] = value
        i += 1
    return flags, list(args[i:])


def usage() -> str:
    """usage is the -h text: every flag with its environment variable and default."""
    lines = ["Usage: goproxy [flags]", "       goproxy " + " | ".join(sorted(SUBCOMMANDS)) + " [flags]"
             if SUBCOMMANDS else "", "", "Flags:"]
    defaults = Config()
    for opt in cfg.OPTIONS:
        if not opt.flag:
            continue
        default = getattr(defaults, opt.field)
        if isinstance(default, tuple):
            default = ",".join(default)
        elif isinstance(default, float):
            default = cfg.format_duration(default)
        env = f" (env {', '.join(opt.env_names())})" if opt.env else ""
        lines.append(f"  -{opt.flag} value\n        {opt.help}{env} (default {default!r})")
    lines.append(f"  -{cfg.CONFIG_FLAG} file\n        YAML or JSON config file (env {cfg.CONFIG_ENV})")
    lines.append("  -version\n        print the version and exit")
    return "\n".join(line for line in lines if line is not None) + "\n"


def load_config(flags: Mapping[str, str], environ: Mapping[str, str]) -> Config:
    """load_config layers defaults → config file → environment → flags; raises ConfigError."""
    env = cfg.environment(environ)
    flags = dict(flags)
    path = flags.pop(cfg.CONFIG_FLAG, None) or env.get(cfg.CONFIG_ENV)
    data = cfg.load_file(path) if path else None
    return cfg.build(data, env, flags, file_name=f"config file {path}" if path else "config file")


def setup_logging(level: str, progress: Progress | None = None) -> logging.handlers.QueueListener:
    """setup_logging sends log records to stderr with timestamps; the only place handlers are set.

    Request threads only enqueue records; one listener thread writes them, so no request waits
    on a lock around stderr. Stop the returned listener to flush what is queued. With a progress
    display in tty mode, lines are written above its block of bars.
    """
    handler = (progress.handler() if progress is not None and progress.mode == "tty"
               else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    queue: SimpleQueue[logging.LogRecord] = SimpleQueue()
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(logging.handlers.QueueHandler(queue))
    root.setLevel(getattr(logging, level.upper()))
    listener = logging.handlers.QueueListener(queue, handler)
    listener.start()
    return listener


def build_transport(config: Config) -> Transport:
    """build_transport makes the outbound transport from -ca-file, -proxy, -no-proxy and -dns.

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


def build_upstreams(config: Config, metrics: Metrics,
                    sleep: Callable[[float], None] = time.sleep) -> Upstreams:
    """build_upstreams makes the transport and the ordered, routed upstream list from config."""
    transport = build_transport(config)
    private = [(p.pattern, Upstream.from_url(p.url, p.headers())) for p in config.private_upstreams]
    return Upstreams([Upstream.from_url(u) for u in config.upstreams], transport,
                     attempts=config.retry_attempts, backoff=config.retry_backoff,
                     sleep=sleep, private=private, metrics=metrics)


def build_server(config: Config, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, progress: Progress | None = None) -> ProxyServer:
    """build_server wires cache, transport, upstreams and service into a bound (not yet serving)
    server. clock and sleep are injectable for tests."""
    cache = Cache(config.cache_dir)
    os.makedirs(cache.root, mode=0o755, exist_ok=True)
    metrics = Metrics()
    upstreams = build_upstreams(config, metrics, sleep)
    service = Service(config, cache, upstreams, clock=clock)
    if config.gosumdb is not None:
        service.sumdb = SumDB(config.gosumdb, upstreams, cache, metrics)
    service.fetch_zip = Downloader(cache, upstreams, config.download_connections, config.max_concurrent_downloads,
                                   service.verify_zip_file, progress, metrics, clock).fetch
    server = ProxyServer(config, service, metrics)
    housekeeping = Housekeeping(config, cache, service.flights.in_flight, clock, metrics)
    service.on_use = housekeeping.store.record
    server.background.append(housekeeping)  # started by serve(); stopped by server.stop()
    return server


def log_startup(config: Config, server: ProxyServer) -> None:
    """log_startup states the configuration the proxy runs with (secrets masked)."""
    log.info("goproxy %s starting", __version__)
    log.info("listening on %s:%d", config.host or "0.0.0.0", server.port)
    log.info("cache directory: %s", os.path.abspath(config.cache_dir))
    log.info("upstreams: %s", ", ".join(mask_url(u) for u in config.upstreams))
    log_network(config)
    log.info("list TTL: %s; not-found TTL: %s", cfg.format_duration(config.list_ttl),
             cfg.format_duration(config.not_found_ttl))
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
    """log_network states the outbound proxy, the hosts that bypass it, and the DNS in use."""
    if config.proxy:
        bypass = f" (not for {', '.join(config.no_proxy)})" if config.no_proxy else ""
        log.info("outbound proxy: %s%s", parse_proxy_url(config.proxy).text, bypass)
    else:
        log.info("outbound proxy: none")
    log.info("DNS: %s", parse_dns_server(config.dns) if config.dns else "system resolver")
    if config.ca_file:
        log.info("trusted CA certificates: %s", config.ca_file)


def serve(config: Config, environ: Mapping[str, str], progress: Progress | None = None) -> int:

    """serve runs the proxy until SIGINT or SIGTERM, then drains and returns 0.

    Under systemd (NOTIFY_SOCKET in environ) it reports READY=1 once listening and STOPPING=1
    when a stop begins."""
    notifier = Notifier(environ.get("NOTIFY_SOCKET"))
    try:
        server = build_server(config, progress=progress)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.host or "0.0.0.0", config.port, exc.strerror)
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
    server.serve_forever(0.1)
    if stopper:
        stopper[0].join()
    log.info("goproxy stopped")
    return 0


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """main is the program entry: subcommands, -h, -version, or serving; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if environ is None else environ
    if args and args[0] in SUBCOMMANDS:
        return SUBCOMMANDS[args[0]](args[1:], env)
    try:
        flags, rest = parse_flags(args, booleans=frozenset({"h", "help", "version"}))
        if {"h", "help"} & flags.keys():
            sys.stdout.write(usage())
            return 0
        if "version" in flags:
            print(f"goproxy {__version__}")
            return 0
        if rest:
            raise ConfigError(f"unexpected argument {rest[0]!r} (flags start with -; see -h)")
        config = load_config(flags, env)
    except ConfigError as exc:
        print(f"goproxy: {exc}", file=sys.stderr)
        return 2
    progress = Progress(choose_mode(config.progress, sys.stderr.isatty()), sys.stderr)
    listener = setup_logging(config.log_level, progress)
    try:
        return serve(config, env, progress)
    finally:
        listener.stop()


def _cache_command(args: list[str], environ: Mapping[str, str]) -> int:
    """_cache_command runs `goproxy cache stats|gc` (admin.py, imported only when asked for)."""
    from .admin import cache_command

    return cache_command(args, environ)


SUBCOMMANDS["cache"] = _cache_command
