"""The Config dataclass and the option table: one row per option (flag, env, file key, parser, help)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from .coord import parse_lock_url
from .errors import ConfigError
from .net.dial import basic_auth
from .net.dns import parse_dns_server
from .net.proxy import parse_no_proxy, parse_proxy_url
from .patterns import compile_pattern
from .rules import Rules, parse_rules
from .storage.bucket import parse_storage_url
from .sumdb.db import GoSumDB, parse_gosumdb
from .values import (
    OFF,
    check_url,
    parse_bool,
    parse_choice,
    parse_duration,
    parse_int,
    parse_list,
    parse_port,
    parse_positive_duration,
    parse_size,
    parse_url_list,
)

DEFAULT_UPSTREAM = "https://proxy.golang.org"


@dataclass(frozen=True)
class PrivateUpstream:
    """A route of the modules matching pattern to url alone, with optional credentials.

    auth_type is "" (none), "basic" (value "user:password"), "bearer" (value is the token) or
    "header" (name: value).
    """

    pattern: str
    url: str
    auth_type: str = ""
    auth_value: str = ""
    auth_name: str = ""

    def headers(self) -> dict[str, str]:
        """Return the request headers that carry this upstream's credentials ({} without any)."""
        if self.auth_type == "basic":
            user, _, password = self.auth_value.partition(":")
            return {"Authorization": basic_auth(user, password)}
        if self.auth_type == "bearer":
            return {"Authorization": f"Bearer {self.auth_value}"}
        if self.auth_type == "header":
            return {self.auth_name: self.auth_value}
        return {}


def _parse_patterns(text: str) -> tuple[str, ...]:
    patterns = parse_list(text)
    for p in patterns:
        compile_pattern(p)
    return patterns


@dataclass(frozen=True)
class Config:
    """Every setting of the proxy, built once by the command line and passed to each module."""

    host: str = ""
    port: int = 12345
    cache_dir: str = "cache"
    upstreams: tuple[str, ...] = (DEFAULT_UPSTREAM,)
    list_ttl: float = 300.0
    upstream_timeout: float = 10.0
    retry_attempts: int = 3
    retry_backoff: float = 0.1
    proxy: str = field(default="", repr=False)  # may hold a password
    no_proxy: tuple[str, ...] = ()
    dns: str = ""
    ca_file: str = ""
    not_found_ttl: float = 60.0
    sumdbs: tuple[str, ...] = ("sum.golang.org",)
    max_connections: int = 10000
    client_timeout: float = 60.0
    shutdown_timeout: float = 10.0
    log_level: str = "info"
    private_upstreams: tuple[PrivateUpstream, ...] = ()
    gosumdb: GoSumDB | None = None
    gonosumdb: tuple[str, ...] = ()
    max_cache_age: float = 0.0  # 0: keep unused versions forever
    cleanup_interval: float = 86400.0
    max_cache_size: int = 0  # bytes; 0: unlimited
    download_connections: int = 4  # parallel Range requests per big zip; 1: one stream
    max_concurrent_downloads: int = 4  # zip downloads at once; 0: unlimited
    progress: str = "auto"  # auto, tty, lines or off
    max_stale: float = 86400.0  # a stale list/@latest/query this old or younger is answered at once
    storage: str = ""  # "": the disk cache in cache_dir; "s3://BUCKET[/PREFIX]": a shared bucket
    s3_endpoint: str = ""  # "": AWS
    s3_region: str = ""  # "": the standard AWS lookup
    lock_url: str = ""  # "": locks for this host alone; redis://...: across replicas

    @property
    def offline(self) -> bool:
        """Whether -upstream is off: no outbound connection, the cache is all there is."""
        return self.upstreams == (OFF,)
    workers: str = "auto"  # worker processes: "auto" (one per usable CPU) or a number
    header_timeout: float = 10.0  # a whole request head must arrive within this
    handler_threads: int = 64  # per worker: requests answered at once
    auth_file: str = ""  # "": no client authentication
    tls_cert: str = ""  # "": plain http (with tls_key, both or neither)
    tls_key: str = ""
    metrics_auth: str = "on"  # "off": /metrics answers without a credential
    rules: Rules = field(default_factory=Rules, compare=False)  # module rules (config file only)


def _parse_private_upstreams(value: Any) -> tuple[PrivateUpstream, ...]:
    """Return the private_upstreams list's routes; raise ValueError naming the entry."""
    if not isinstance(value, list):
        raise ValueError("want a list of entries with pattern, url and optional auth")
    routes = []
    for i, entry in enumerate(value):
        where = f"entry {i + 1}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: want a mapping with pattern, url and optional auth")
        unknown = set(entry) - {"pattern", "url", "auth"}
        if unknown:
            raise ValueError(f"{where}: unknown key {sorted(unknown)[0]!r} (known: pattern, url, auth)")
        pattern, url = entry.get("pattern"), entry.get("url")
        if not isinstance(pattern, str) or not isinstance(url, str):
            raise ValueError(f"{where}: pattern and url are required strings")
        where = f"entry {i + 1} ({pattern})"
        try:
            compile_pattern(pattern)
            url = check_url(url)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        auth = entry.get("auth") or {}
        if not isinstance(auth, dict):
            raise ValueError(f"{where}: auth must be a mapping with type and value")
        bad = set(auth) - {"type", "value", "name"}
        if bad:
            raise ValueError(f"{where}: unknown auth key {sorted(bad)[0]!r} (known: type, value, name)")
        kind = str(auth.get("type", "")) if auth else ""
        if auth and kind not in ("basic", "bearer", "header"):
            raise ValueError(f"{where}: unknown auth type {kind!r} (want basic, bearer or header)")
        secret, name = str(auth.get("value", "")), str(auth.get("name", ""))
        if auth and not secret:
            raise ValueError(f"{where}: auth needs a value")
        if kind == "basic" and ":" not in secret:
            raise ValueError(f"{where}: basic auth value must be user:password")
        if kind == "header" and not re.fullmatch(r"[A-Za-z0-9-]+", name):
            raise ValueError(f"{where}: header auth needs a name (an HTTP header name)")
        routes.append(PrivateUpstream(pattern, url, kind, secret, name))
    return tuple(routes)


def _parse_proxy(text: str) -> str:
    if text.strip():
        parse_proxy_url(text)
    return text.strip()


def _parse_dns(text: str) -> str:
    if text.strip():
        parse_dns_server(text)
    return text.strip()


def _parse_ca_file(text: str) -> str:
    import ssl

    if text:
        try:
            ssl.create_default_context(cafile=text)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"{text}: {getattr(exc, 'strerror', None) or exc}") from None
    return text


def _parse_endpoint(text: str) -> str:
    return check_url(text) if text.strip() else ""


def _no_scalar(text: str) -> Any:
    raise ValueError("want a list of entries with pattern, url and optional auth")


def _parse_log_level(text: str) -> str:
    return parse_choice(text, ("debug", "info", "warning", "error"), "log level")


def _parse_progress(text: str) -> str:
    return parse_choice(text, ("auto", "tty", "lines", "off"), "progress mode")


def _parse_positive_int(text: str) -> int:
    return parse_int(text, 1)


def _parse_nonneg_int(text: str) -> int:
    return parse_int(text, 0)


def _no_rules_scalar(text: str) -> Any:
    raise ValueError("want a list of rules, each a mapping with pattern, action and optional versions, reason")


def _parse_on_off(text: str) -> str:
    # YAML reads a bare on/off as a boolean: the file layer hands it over as true/false.
    value = {"true": "on", "false": "off"}.get(text.strip().lower(), text)
    return parse_choice(value, ("on", "off"), "setting")


def _parse_workers(text: str) -> str:
    if text.strip().lower() == "auto":
        return "auto"
    return str(parse_int(text, 1))


@dataclass(frozen=True)
class Option:
    """One row of the options table: one name per layer, a parser and a help line."""

    field: str
    flag: str | None
    env: str | None
    key: str | None
    parse: Callable[[str], Any]
    help: str
    # parse_structured, when set, parses a file value that is a list or mapping.
    parse_structured: Callable[[Any], Any] | None = None
    # env_also: further environment variables for the option, read when env is not set.
    env_also: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """The value's kind as Go's flag package prints it in -h ("int", "duration"; "string" otherwise)."""
        return _KINDS.get(self.parse, "string")

    def env_names(self) -> tuple[str, ...]:
        """Return the option's environment variables in the order they are looked at."""
        return ((self.env,) if self.env else ()) + self.env_also

    def parse_value(self, value: Any, layer: str, variable: str | None = None) -> Any:
        """Convert a raw value from a layer; raise ConfigError naming key and layer.

        layer is "flag", "env" (variable names which one, env by default) or the config file's name.
        A list or mapping goes to parse_structured when the option has one.
        """
        if layer == "flag":
            name = f"flag -{self.flag}"
        elif layer == "env":
            name = f"environment variable {variable or self.env}"
        else:
            name = f"{layer}: key {self.key}"
        if self.parse_structured is not None and isinstance(value, (list, dict)):
            try:
                return self.parse_structured(value)
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from None
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif value is None:
            raise ConfigError(f"{name}: missing value")
        elif isinstance(value, dict):
            raise ConfigError(f"{name}: want a single value, not a mapping")
        try:
            return self.parse(str(value))
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None


OPTIONS: list[Option] = [
    Option("host", "host", "LISTEN_HOST", "host", str, "address to listen on (empty: all interfaces)"),
    Option("port", "port", "PORT", "port", parse_port, "TCP port to listen on (0: pick a free one)"),
    Option("cache_dir", "cache", "CACHE_DIR", "cache_dir", str, "cache directory"),
    Option("upstreams", "upstream", "UPSTREAM_PROXY", "upstreams", parse_url_list,
           "comma-separated upstream proxies, tried in order (off: none, serve the cache only)"),
    Option("upstream_timeout", "upstream-timeout", "UPSTREAM_TIMEOUT", "upstream_timeout", parse_duration,
           "how long a client waits for upstreams (every retry included), and for an upstream's response "
           "headers and each read of its body"),
    Option("retry_attempts", "retry-attempts", "RETRY_ATTEMPTS", "retry_attempts", _parse_positive_int,
           "tries per upstream on 5xx, 429, resets, timeouts and short bodies"),
    Option("retry_backoff", "retry-backoff", "RETRY_BACKOFF", "retry_backoff", parse_duration,
           "first retry delay; doubles each retry, with full jitter"),
    Option("proxy", "proxy", "HTTP_PROXY", "proxy", _parse_proxy,
           "outbound proxy for upstreams, checksum DB and DoH: http://, https://, socks5:// or socks5h://, "
           "user:password@ allowed", env_also=("http_proxy", "HTTPS_PROXY", "https_proxy", "SOCKS5_PROXY",
                                              "socks5_proxy")),
    Option("no_proxy", "no-proxy", "NO_PROXY", "no_proxy", parse_no_proxy,
           "comma-separated hosts reached without the proxy: domains (with subdomains), IPs, CIDRs, host:port, *",
           env_also=("no_proxy",)),
    Option("dns", "dns", "DNS_SERVER", "dns", _parse_dns,
           "DNS server for outbound hosts: IP[:port], udp://, tcp://, tls://host, https://host/path, quic://host"),
    Option("ca_file", "ca-file", "SSL_CERT_FILE", "ca_file", _parse_ca_file,
           "PEM file of CA certificates trusted instead of the system's (upstreams, proxy, DNS servers)"),
    Option("list_ttl", "list-ttl", "LIST_TTL", "list_ttl", parse_duration,
           "how long list, @latest and query .info stay fresh"),
    Option("not_found_ttl", "not-found-ttl", "NOT_FOUND_TTL", "not_found_ttl", parse_duration,
           "how long an upstream not-found is remembered"),
    Option("sumdbs", "sumdbs", "SUMDBS", "sumdbs", parse_list,
           "checksum databases proxied under /sumdb/ (comma-separated names)"),
    Option("max_connections", "max-connections", "MAX_CONNECTIONS", "max_connections",
           _parse_positive_int, "open client connections at once, for the whole server"),
    Option("client_timeout", "client-timeout", "CLIENT_TIMEOUT", "client_timeout", parse_duration,
           "how long a connection may sit idle between requests, or take nothing of its answer"),
    Option("shutdown_timeout", "shutdown-timeout", "SHUTDOWN_TIMEOUT", "shutdown_timeout",
           parse_duration, "how long shutdown waits for in-flight requests"),
    Option("log_level", "log-level", "LOG_LEVEL", "log_level", _parse_log_level,
           "debug, info, warning or error"),
    Option("private_upstreams", None, None, "private_upstreams", _no_scalar,
           "modules routed to private upstreams (file only)", parse_structured=_parse_private_upstreams),
    Option("gosumdb", "gosumdb", "GOSUMDB", "gosumdb", parse_gosumdb,
           "checksum database to verify zips and go.mod files against (off, sum.golang.org, name+key [url])"),
    Option("gonosumdb", "gonosumdb", "GONOSUMDB", "gonosumdb", _parse_patterns,
           "comma-separated module patterns never verified (GONOSUMDB syntax)"),
    Option("max_cache_age", "max-cache-age", "MAX_CACHE_AGE", "max_cache_age", parse_duration,
           "remove module versions unused for longer than this (0s: keep forever)"),
    Option("cleanup_interval", "cleanup-interval", "CLEANUP_INTERVAL", "cleanup_interval",
           parse_positive_duration, "how often the cache cleanup runs"),
    Option("max_cache_size", "max-cache-size", "MAX_CACHE_SIZE", "max_cache_size", parse_size,
           "evict least recently used versions while the cache is bigger (e.g. 20GB; 0: unlimited)"),
    Option("download_connections", "download-connections", "DOWNLOAD_CONNECTIONS", "download_connections",
           _parse_positive_int, "parallel Range requests per zip larger than 512 KiB (1: one stream)"),
    Option("max_concurrent_downloads", "max-concurrent-downloads", "MAX_CONCURRENT_DOWNLOADS",
           "max_concurrent_downloads", _parse_nonneg_int,
           "zip downloads at once; more wait their turn in arrival order (0: unlimited)"),
    Option("progress", "progress", "PROGRESS", "progress", _parse_progress,
           "download progress on stderr: auto (tty if a terminal, else lines), tty, lines or off"),
    Option("storage", "storage", "STORAGE", "storage", parse_storage_url,
           "where artifacts live: empty for the disk cache in -cache, or s3://BUCKET[/PREFIX] shared by "
           "replicas (then -cache is a local read-through tier)"),
    Option("s3_endpoint", "s3-endpoint", "S3_ENDPOINT", "s3_endpoint", _parse_endpoint,
           "URL of an S3-compatible object store (empty: AWS S3)"),
    Option("s3_region", "s3-region", "S3_REGION", "s3_region", str.strip,
           "the bucket's region (empty: AWS_REGION or the AWS config file; us-east-1 with -s3-endpoint)"),
    Option("lock_url", "lock", "LOCK_URL", "lock_url", parse_lock_url,
           "redis://[:password@]host:port/db shared by replicas: one upstream fetch per artifact, shared "
           "last-used times, one cleanup at a time"),
    Option("max_stale", "max-stale", "MAX_STALE", "max_stale", parse_duration,
           "answer a list, @latest or query .info at most this old from the cache at once while it is refreshed "
           "in the background (0s: wait for the refresh)"),
    Option("workers", "workers", "WORKERS", "workers", _parse_workers,
           "worker processes sharing the listening socket: a number, or auto (one per CPU this process may use)"),
    Option("header_timeout", "header-timeout", "HEADER_TIMEOUT", "header_timeout", parse_positive_duration,
           "how long a client may take to send a whole request head"),
    Option("handler_threads", "handler-threads", "HANDLER_THREADS", "handler_threads", _parse_positive_int,
           "threads per worker answering requests; a request waiting on an upstream holds one"),
    Option("auth_file", "auth-file", "AUTH_FILE", "auth_file", str.strip,
           "file of name:hash client credentials (goproxy auth hash); every request but /health and /ready "
           "needs one (empty: no authentication)"),
    Option("tls_cert", "tls-cert", "TLS_CERT", "tls_cert", str.strip,
           "PEM certificate chain to serve https with (with -tls-key)"),
    Option("tls_key", "tls-key", "TLS_KEY", "tls_key", str.strip, "PEM private key of -tls-cert"),
    Option("metrics_auth", "metrics-auth", "METRICS_AUTH", "metrics_auth", _parse_on_off,
           "with -auth-file, /metrics needs a credential too: on or off (for a scraper on a trusted network)"),
    Option("rules", None, None, "rules", _no_rules_scalar,
           "module rules: deny, allow or serve offline by pattern and versions (file only)",
           parse_structured=parse_rules),
]

_KINDS: dict[Callable[[str], Any], str] = {
    parse_port: "int", _parse_positive_int: "int", _parse_nonneg_int: "int", parse_duration: "duration",
    parse_positive_duration: "duration", parse_size: "size", parse_bool: "bool",
}
