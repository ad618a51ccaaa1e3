"""Upstream proxies: ordered fallback, retries with backoff, and the status → error table."""

from __future__ import annotations

import email.utils
import logging
import random
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from .errors import ChecksumError, NotFound, ProxyError, TransientError, UpstreamError
from .metrics import Metrics
from .net.dial import basic_auth, mask_url
from .net.http import Response, Transport
from .patterns import match

log = logging.getLogger(__name__)

T = TypeVar("T")

# The longest Retry-After we honour, in seconds; a longer one is capped to this.
MAX_RETRY_AFTER = 10.0


@dataclass(frozen=True)
class Upstream:
    """Upstream is one proxy base URL ("https://proxy.golang.org") and the headers it alone may see."""

    url: str
    auth: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_url(cls, url: str, auth: Mapping[str, str] | None = None) -> Upstream:
        """from_url moves credentials in url's userinfo (https://user:token@host) into a Basic
        Authorization header, so they go only to that host and never appear in a logged URL."""
        parts = urllib.parse.urlsplit(url)
        headers = dict(auth or {})
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            headers.setdefault("Authorization", basic_auth(user, password))
            host = parts.hostname or ""
            netloc = f"[{host}]" if ":" in host else host
            if parts.port:
                netloc += f":{parts.port}"
            url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
        return cls(url, headers)

    @property
    def name(self) -> str:
        """name is the URL with any password masked, for logs and error messages."""
        return mask_url(self.url)


# A consumer reads an upstream's answer (resp) from the upstream (up) that gave it.
Consume = Callable[[Response, Upstream], T]


def classify(resp: Response, body: bytes) -> ProxyError:
    """classify maps a non-200 upstream status to an error kind: the one table of upstream statuses.

    404/410 → NotFound (with upstream's text); 429 and 5xx → TransientError (retried);
    any other status → UpstreamError (not retried, next upstream is tried).
    """
    text = body.decode("utf-8", "replace").strip().replace("\n", " ")[:500]
    where = f"{resp.url}: {resp.status} {resp.reason}"
    if resp.status in (404, 410):
        return NotFound(text or f"not found: {where}", status=resp.status)
    if resp.status == 429 or resp.status >= 500:
        return TransientError(f"{where} {text}".strip(), retry_after=_retry_after(resp.header("Retry-After")))
    return UpstreamError(f"{where} {text}".strip())


def _retry_after(value: str) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Upstreams:
    """Upstreams fetches a proxy path from an ordered list of upstreams with retries.

    Each upstream is tried up to attempts times on transient failures (5xx, 429, network errors,
    short bodies), sleeping backoff·2^n with full jitter between tries (Retry-After honoured up to
    MAX_RETRY_AFTER); a not-found or a spent upstream moves on to the next one.
    """

    def __init__(self, upstreams: list[Upstream], transport: Transport, attempts: int = 3,
                 backoff: float = 0.1, sleep: Callable[[float], None] = time.sleep,
                 rng: Callable[[], float] = random.random,
                 private: list[tuple[str, Upstream]] | None = None, metrics: Metrics | None = None) -> None:
        if not upstreams:
            raise ValueError("at least one upstream is required")
        self.upstreams = upstreams
        # private routes: (pattern, upstream); a module matching a pattern goes to that one only.
        self.private = private or []
        self.metrics = metrics or Metrics()
        self.transport = transport
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self._sleep = sleep
        self._rng = rng

    def private_route(self, module: str) -> Upstream | None:
        """private_route is the private upstream whose pattern matches module first, or None."""
        for pattern, up in self.private:
            if match(pattern, module):
                return up
        return None

    def fetch(self, path: str, consume: Consume[T], module: str | None = None,
              headers: Callable[[], dict[str, str]] | None = None) -> T:
        """fetch GETs path ("/mod/@v/list") and returns consume(response) for the first 200.

        A module matching a private route is fetched from that upstream alone. consume reads
        the body; it may raise TransientError (retried) or another ProxyError (tried on the
        next upstream). Raises NotFound when every upstream said not found (with the last
        one's text), else UpstreamError with the last error. headers, when given, makes the
        request headers of each attempt (a resumed download asks for what it still lacks).
        """
        route = self.private_route(module) if module else None
        chain = [route] if route else self.upstreams
        last: ProxyError | None = None
        all_not_found = True
        for i, up in enumerate(chain):
            try:
                return self.fetch_from(up, path, consume, headers)
            except ProxyError as exc:
                last = exc
                if not isinstance(exc, NotFound):
                    all_not_found = False
                if i + 1 < len(chain):
                    log.info("upstream %s: %s %s; trying %s", up.name, path, _short(exc), chain[i + 1].name)
        assert last is not None
        if all_not_found:
            raise last
        if isinstance(last, NotFound):
            raise UpstreamError(f"{path}: no upstream could serve it (last: {last.status} {last})")
        raise UpstreamError(str(last))

    def fetch_from(self, up: Upstream, path: str, consume: Consume[T],
                   headers: Callable[[], dict[str, str]] | None = None) -> T:
        """fetch_from GETs path from one upstream with retries; consume(resp, up) sees 200 and
        206 answers, and 416 to a request with a Range header (up lets it send more requests to
        the same place)."""
        url = up.url + path
        m = self.metrics
        for attempt in range(1, self.attempts + 1):
            m.upstream_requests.inc(upstream=up.name)
            try:
                sent = headers() if headers else {}
                resp = self.transport.get(url, headers=sent, auth=up.auth)
                with resp:
                    try:
                        if resp.status in (200, 206) or (resp.status == 416 and "Range" in sent):
                            return consume(resp, up)
                        raise classify(resp, resp.read_all(limit=64 << 10))
                    finally:
                        m.bytes_fetched.inc(resp.bytes_read)
            except ProxyError as exc:
                if not isinstance(exc, NotFound):
                    m.upstream_errors.inc(upstream=up.name, kind=_kind(exc))
                if not isinstance(exc, TransientError) or attempt == self.attempts:
                    raise
                m.upstream_retries.inc(upstream=up.name)
                delay = self._delay(attempt, exc.retry_after)
                log.warning("upstream %s: %s failed (%s); retry %d/%d in %.2fs",
                            up.name, path, exc, attempt, self.attempts - 1, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """_delay is the wait before retry number attempt: Retry-After if given, else jittered backoff."""
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER)
        return float(self.backoff * 2.0 ** (attempt - 1) * self._rng())


def _kind(exc: ProxyError) -> str:
    """_kind is the metrics label of a failed upstream request."""
    if isinstance(exc, TransientError):
        return "transient"
    return "checksum" if isinstance(exc, ChecksumError) else "other"


def _short(exc: ProxyError) -> str:
    if isinstance(exc, NotFound):
        return f"not found ({exc.status})"
    return f"failed: {exc}"
