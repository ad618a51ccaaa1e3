"""The Config dataclass, the option table (flag, env, file key), value parsing and layering."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import ConfigError

DEFAULT_UPSTREAM = "https://proxy.golang.org"


@dataclass(frozen=True)
class PrivateUpstream:
    """PrivateUpstream routes modules matching pattern to url alone, with optional credentials.

    auth_type is "" (none), "basic" (value "user:password"), "bearer" (value is the token) or
    "header" (name: value).
    """

    pattern: str
    url: str
    auth_type: str = ""
    auth_value: str = ""
    auth_name: str = ""

    def headers(self) -> dict[str, str]:
        """headers are the request headers that carry this upstream's credentials."""
        if self.auth_type == "basic":
            token = base64.b64encode(self.auth_value.encode()).decode()
            return {"Authorization": f"Basic {token}"}
        if self.auth_type == "bearer":
            return {"Authorization": f"Bearer {self.auth_value}"}
        if self.auth_type == "header":
            return {self.auth_name: self.auth_value}
        return {}


# Checksum databases the go command knows by name (cmd/go/internal/modfetch/key.go).
KNOWN_SUMDB_KEYS = {
    "sum.golang.org": "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8",
}


@dataclass(frozen=True)
class GoSumDB:
    """GoSumDB is the checksum database to verify against: its name, verifier key and URL.

    url "" means: through the first upstream that proxies /sumdb/<name>/, else https://<name>.
    """

    name: str
    key: str
    url: str = ""


def parse_gosumdb(text: str) -> GoSumDB | None:
    """parse_gosumdb reads GOSUMDB's forms: off, a known name, name+key, "name+key url"."""
    words = text.split()
    if not words or words == ["off"]:
        return None
    if len(words) > 2:
        raise ValueError(f"{text!r}: want off, sum.golang.org, name+key or \"name+key url\"")
    key, url = words[0], words[1] if len(words) == 2 else ""
    if key == "sum.golang.google.cn":
        key, url = KNOWN_SUMDB_KEYS["sum.golang.org"], url or "https://sum.golang.google.cn"
    key = KNOWN_SUMDB_KEYS.get(key, key)
    if not re.fullmatch(r"[^+\s]+\+[0-9a-f]{8}\+[A-Za-z0-9+/]+=*", key):
        raise ValueError(f"{words[0]!r} is not a known checksum database or a name+hash+key verifier key")
    if url:
        url = _check_url(url)
    from .note import Verifier

    return GoSumDB(Verifier(key).name, key, url)  # NoteError (a ValueError) for a bad key


def _parse_patterns(text: str) -> tuple[str, ...]:
    from .patterns import compile_pattern

    patterns = parse_list(text)
    for p in patterns:
        compile_pattern(p)
    return patterns


@dataclass(frozen=True)
class Config:
    """Config is every setting of the proxy, built once by cli.py and passed to each module."""

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
    max_connections: int = 512
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


# Go duration syntax: one or more <number><unit>, e.g. 1h30m, 100ms, 720h, 1.5s.
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_duration(text: str) -> float:
    """parse_duration returns seconds for a Go duration ("1h30m", "100ms", "0"); raises ValueError."""
    s = text.strip()
    if s in ("0", "-0", "+0"):
        return 0.0
    if not s or s[0] == "-":
        raise ValueError(f"invalid duration {text!r} (want e.g. 100ms, 5m, 1h30m)")
    if s[0] == "+":
        s = s[1:]
    total, pos = 0.0, 0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise ValueError(f"invalid duration {text!r} (want e.g. 100ms, 5m, 1h30m)")
    return total


def format_duration(seconds: float) -> str:
    """format_duration renders seconds in Go style for logs and help ("5m0s", "100ms")."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    whole = int(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    s_text = f"{s + (seconds - whole):g}s"
    if h:
        return f"{h}h{m}m{s_text}"
    if m:
        return f"{m}m{s_text}"
    return s_text


def parse_size(text: str) -> int:
    """parse_size returns bytes for "20GB", "512MiB", "100k" or a plain number; raises ValueError."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"invalid size {text!r} (want e.g. 500MB, 20GB, 1TiB)")
    unit = (m.group(2) or "").lower()
    binary = "i" in unit
    base = _SIZE_UNITS[unit[:1]] if unit else 1
    if binary:
        base = 1024 ** {"k": 1, "m": 2, "g": 3, "t": 4}[unit[:1]]
    return int(float(m.group(1)) * base)


def parse_bool(text: str) -> bool:
    """parse_bool accepts Go's strconv.ParseBool forms; raises ValueError."""
    t = text.strip().lower()
    if t in ("1", "t", "true", "yes", "on"):
        return True
    if t in ("0", "f", "false", "no", "off"):
        return False
    raise ValueError(f"invalid boolean {text!r} (want true or false)")


def _parse_port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range 0-65535")
    return port


def _parse_nonneg_int(text: str) -> int:
    n = int(text)
    if n < 0:
        raise ValueError(f"{n} is negative")
    return n


def _parse_positive_duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be greater than 0")
    return seconds


def _parse_positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise ValueError(f"{n} must be at least 1")
    return n


def parse_list(text: str) -> tuple[str, ...]:
    """parse_list splits a comma-separated value, dropping blanks."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _parse_url_list(text: str) -> tuple[str, ...]:
    urls = tuple(_check_url(u) for u in parse_list(text))
    if not urls:
        raise ValueError("at least one upstream URL is required")
    return urls


def _check_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", url):
        raise ValueError(f"{url!r} must be an http:// or https:// URL")
    return url


def _parse_private_upstreams(value: Any) -> tuple[PrivateUpstream, ...]:
    """_parse_private_upstreams reads the private_upstreams list; raises ValueError naming the entry."""
    from .patterns import compile_pattern

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
            url = _check_url(url)
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
    from .netproxy import parse_proxy_url

    if text.strip():
        parse_proxy_url(text)
    return text.strip()


def _parse_no_proxy(text: str) -> tuple[str, ...]:
    from .netproxy import parse_no_proxy

    return parse_no_proxy(text)


def _parse_dns(text: str) -> str:
    from .resolver import parse_dns_server

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


def _no_scalar(text: str) -> Any:
    raise ValueError("want a list of entries with pattern, url and optional auth")


def _parse_log_level(text: str) -> str:
    level = text.strip().lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ValueError(f"invalid log level {text!r} (want debug, info, warning or error)")
    return level


def _parse_progress(text: str) -> str:
    mode = text.strip().lower()
    if mode not in ("auto", "tty", "lines", "off"):
        raise ValueError(f"invalid progress mode {text!r} (want auto, tty, lines or off)")
    return mode


@dataclass(frozen=True)
class Option:
    """Option is one row of the options table: one name per layer, a parser and a help line."""

    field: str
    flag: str | None
    env: str | None
    key: str | None
    parse: Callable[[str], Any]
    help: str
    # parse_structured, when set, parses a file value that is a list or mapping.
    parse_structured: Callable[[Any], Any] | None = None
    # env_also are further environment variables for the option, read when env is not set.
    env_also: tuple[str, ...] = ()

    def env_names(self) -> tuple[str, ...]:
        """env_names are the option's environment variables in the order they are looked at."""
        return ((self.env,) if self.env else ()) + self.env_also

    def parse_value(self, value: Any, layer: str, variable: str | None = None) -> Any:
        """parse_value converts a raw value from a layer; raises ConfigError naming key and layer.

        layer is "flag", "env" (variable names which one, env by default) or the config file's name.
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
    Option("port", "port", "PORT", "port", _parse_port, "TCP port to listen on (0: pick a free one)"),
    Option("cache_dir", "cache", "CACHE_DIR", "cache_dir", str, "cache directory"),
    Option("upstreams", "upstream", "UPSTREAM_PROXY", "upstreams", _parse_url_list,
           "comma-separated upstream proxies, tried in order"),
    Option("upstream_timeout", "upstream-timeout", "UPSTREAM_TIMEOUT", "upstream_timeout", parse_duration,
           "how long to wait for an upstream's response headers, and for each read of its body"),
    Option("retry_attempts", "retry-attempts", "RETRY_ATTEMPTS", "retry_attempts", _parse_positive_int,
           "tries per upstream on 5xx, 429, resets, timeouts and short bodies"),
    Option("retry_backoff", "retry-backoff", "RETRY_BACKOFF", "retry_backoff", parse_duration,
           "first retry delay; doubles each retry, with full jitter"),
    Option("proxy", "proxy", "HTTP_PROXY", "proxy", _parse_proxy,
           "outbound proxy for upstreams, checksum DB and DoH: http://, https://, socks5:// or socks5h://, "
           "user:password@ allowed", env_also=("http_proxy", "HTTPS_PROXY", "https_proxy", "SOCKS5_PROXY",
                                              "socks5_proxy")),
    Option("no_proxy", "no-proxy", "NO_PROXY", "no_proxy", _parse_no_proxy,
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
           _parse_positive_int, "cap on concurrent client connections"),
    Option("client_timeout", "client-timeout", "CLIENT_TIMEOUT", "client_timeout", parse_duration,
           "idle timeout on client sockets"),
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
           _parse_positive_duration, "how often the cache cleanup runs"),
    Option("max_cache_size", "max-cache-size", "MAX_CACHE_SIZE", "max_cache_size", parse_size,
           "evict least recently used versions while the cache is bigger (e.g. 20GB; 0: unlimited)"),
    Option("download_connections", "download-connections", "DOWNLOAD_CONNECTIONS", "download_connections",
           _parse_positive_int, "parallel Range requests per zip larger than 512 KiB (1: one stream)"),
    Option("max_concurrent_downloads", "max-concurrent-downloads", "MAX_CONCURRENT_DOWNLOADS",
           "max_concurrent_downloads", _parse_nonneg_int,
           "zip downloads at once; more wait their turn in arrival order (0: unlimited)"),
    Option("progress", "progress", "PROGRESS", "progress", _parse_progress,
           "download progress on stderr: auto (tty if a terminal, else lines), tty, lines or off"),
]

# Options that only choose the config file: they are read before the file is.
CONFIG_FLAG, CONFIG_ENV = "config", "GOPROXY_CONFIG"


def options_by(attr: str) -> dict[str, Option]:
    """options_by indexes OPTIONS by "flag", "env" or "key"."""
    return {getattr(o, attr): o for o in OPTIONS if getattr(o, attr)}


def load_file(path: str) -> dict[str, Any]:
    """load_file reads a .yaml/.yml/.json config file; raises ConfigError naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
    elif path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise ConfigError(
                f"config file {path}: reading YAML needs PyYAML (pip install pyyaml), or use a .json file"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path}: {exc}".replace("\n", " ")) from None
    else:
        raise ConfigError(f"config file {path}: unknown format (want .yaml, .yml or .json)")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping of keys to values")
    return data


def build(
    file_data: Mapping[str, Any] | None,
    env: Mapping[str, str],
    flags: Mapping[str, str],
    file_name: str = "config file",
) -> Config:
    """build layers defaults → file → environment → flags into a Config; raises ConfigError."""
    values: dict[str, Any] = {}
    by_key = options_by("key")
    for key, raw in (file_data or {}).items():
        opt = by_key.get(str(key))
        if opt is None:
            known = ", ".join(sorted(by_key))
            raise ConfigError(f"{file_name}: unknown key {key!r} (known keys: {known})")
        values[opt.field] = opt.parse_value(raw, file_name)
    for opt in OPTIONS:
        present = [name for name in opt.env_names() if name in env]
        if present:  # the first set to something, else the first set at all
            name = next((n for n in present if env[n]), present[0])
            values[opt.field] = opt.parse_value(env[name], "env", name)
    by_flag = options_by("flag")
    for name, raw in flags.items():
        opt = by_flag.get(name)
        if opt is None:
            raise ConfigError(f"flag -{name}: unknown flag")
        values[opt.field] = opt.parse_value(raw, "flag")
    return Config(**values)


def environment(environ: Mapping[str, str]) -> dict[str, str]:
    """environment returns the variables the options table names (and GOPROXY_CONFIG) from environ."""
    names = {name for o in OPTIONS for name in o.env_names()} | {CONFIG_ENV}
    return {k: v for k, v in environ.items() if k in names}
