"""Parsers for option values: Go durations, sizes, booleans, integers, lists and URLs.

Each raises ValueError with a one-line message saying what was expected.
"""

from __future__ import annotations

import re
import urllib.parse

# Go duration syntax: one or more <number><unit>, e.g. 1h30m, 100ms, 720h, 1.5s.
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}
_HOST = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?")
_IPV6 = re.compile(r"[0-9a-f:.]*:[0-9a-f:.]*")


def parse_duration(text: str) -> float:
    """Return the seconds of a Go duration ("1h30m", "100ms", "0").

    Raises ValueError for anything else, negative durations included.
    """
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


def parse_positive_duration(text: str) -> float:
    """Return the seconds of a Go duration that must be greater than zero; raise ValueError."""
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be greater than 0")
    return seconds


def format_duration(seconds: float) -> str:
    """Return seconds in Go's style for logs and help ("5m0s", "100ms", "0s")."""
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
    """Return the bytes of "20GB", "512MiB", "100k" or a plain number; raise ValueError."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"invalid size {text!r} (want e.g. 500MB, 20GB, 1TiB)")
    unit = (m.group(2) or "").lower()
    base = _SIZE_UNITS[unit[:1]] if unit else 1
    if "i" in unit:
        base = 1024 ** {"k": 1, "m": 2, "g": 3, "t": 4}[unit[:1]]
    return int(float(m.group(1)) * base)


def parse_bool(text: str) -> bool:
    """Return the boolean of one of Go's strconv.ParseBool forms (or yes/no, on/off)."""
    t = text.strip().lower()
    if t in ("1", "t", "true", "yes", "on"):
        return True
    if t in ("0", "f", "false", "no", "off"):
        return False
    raise ValueError(f"invalid boolean {text!r} (want true or false)")


def parse_int(text: str, low: int = 0, high: int | None = None, what: str = "integer") -> int:
    """Return text as an integer from low to high (inclusive); raise ValueError saying so."""
    want = f"an {what} from {low} to {high}" if high is not None else f"an {what} of at least {low}"
    t = text.strip()
    if not re.fullmatch(r"[+-]?\d+", t):
        raise ValueError(f"invalid value {text!r} (want {want})")
    n = int(t)
    if n < low or (high is not None and n > high):
        raise ValueError(f"{n} is out of range (want {want})")
    return n


def parse_port(text: str) -> int:
    """Return a TCP port from 0 to 65535 (0: pick a free one); raise ValueError."""
    return parse_int(text, 0, 65535, "integer port")


def parse_list(text: str) -> tuple[str, ...]:
    """Return the items of a comma-separated value, blanks dropped."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def check_url(url: str) -> str:
    """Return an http(s) URL without trailing slashes; raise ValueError naming what is wrong.

    The host must be a DNS name or an IP literal and the port, when given, a number.
    """
    url = url.strip().rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} must be an http:// or https:// URL")
    where = parts.netloc.rpartition("@")[2]
    try:
        port = parts.port
    except ValueError:
        port = 0
    host = parts.hostname or ""
    if port == 0 or not (_HOST.fullmatch(host) or _IPV6.fullmatch(host)):
        raise ValueError(f"{url!r}: invalid host or port {where!r}")
    if parts.query or parts.fragment or any(c.isspace() for c in url):
        raise ValueError(f"{url!r}: an upstream URL has no query, fragment or white space")
    return url


# The -upstream value that means no upstream at all (offline: serve the cache only).
OFF = "off"


def parse_url_list(text: str) -> tuple[str, ...]:
    """Return the URLs of a list separated by "," or "|" (GOPROXY's two separators).

    "off" alone gives (OFF,): no upstream, nothing fetched. Raises ValueError for an empty
    list, a malformed URL, or "off" mixed with URLs.
    """
    parts = [u.strip() for u in re.split(r"[,|]", text) if u.strip()]
    if OFF in (p.lower() for p in parts):
        if len(parts) > 1:
            raise ValueError(f"{text!r}: off means no upstream; it cannot be combined with URLs")
        return (OFF,)
    urls = tuple(check_url(u) for u in parts)
    if not urls:
        raise ValueError("at least one upstream URL is required")
    return urls


def parse_choice(text: str, choices: tuple[str, ...], what: str) -> str:
    """Return text lower-cased when it is one of choices; raise ValueError listing them."""
    value = text.strip().lower()
    if value not in choices:
        raise ValueError(f"invalid {what} {text!r} (want {', '.join(choices[:-1])} or {choices[-1]})")
    return value
