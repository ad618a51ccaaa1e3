"""Upstream proxies: ordered fallback, retries with backoff, and the status → error table."""

from __future__ import annotations

import email.utils
import functools
import logging
import random
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from .errors import ChecksumError, NotFound, ProxyError, TransientError, UpstreamError
from .health import Health
from .metrics import Metrics
from .net.dial import basic_auth, mask_url
from .net.http import Response, Transport
from .patterns import match
from .validate import looks_like_html

log = logging.getLogger(__name__)

T = TypeVar("T")

# The longest Retry-After we honour, in seconds; a longer one is capped to this.
MAX_RETRY_AFTER = 10.0
# What a probe of a down upstream asks for: cheap, and answered by any module proxy (200 or 404).
PROBE_PATH = "/sumdb/sum.golang.org/supported"


class UpstreamDown(UpstreamError):
    """Every upstream that could serve a request is marked down and was skipped; status 502."""


class InvalidAnswer(UpstreamError):
    """An upstream answer that cannot be what was asked for; status 502.

    A block page, a zip that is no module zip, a go.mod for another module, a list of junk.
    Never cached, not retried on the same upstream (the next one is tried).

    reason is the metrics label: "html" for an HTML page, "invalid" for anything else.
    """

    def __init__(self, upstream: str, path: str, problem: str, reason: str = "invalid") -> None:
        super().__init__(f"upstream {upstream} sent {path} that cannot be what was asked for: {problem}")
        self.reason = reason


@dataclass(frozen=True)
class Upstream:
    """One proxy base URL ("https://proxy.golang.org") and the headers it alone may see."""

    url: str
    auth: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_url(cls, url: str, auth: Mapping[str, str] | None = None) -> Upstream:
        """Return the upstream at url, credentials in its userinfo moved into a header.

        Credentials in url's userinfo (https://user:token@host) become a Basic Authorization
        header (unless auth has one), so they go only to that host and never appear in a
        logged URL.
        """
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
        """Return the URL with any password masked, for logs and error messages."""
        return mask_url(self.url)


# A consumer reads an upstream's answer (resp) from the upstream (up) that gave it.
Consume = Callable[[Response, Upstream], T]


def classify(resp: Response, body: bytes) -> ProxyError:
    """Return the error kind of a non-200 upstream answer: the one table of upstream statuses.

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
    """An ordered list of upstreams that a proxy path is fetched from, with retries.

    Each upstream is tried up to attempts times on transient failures (5xx, 429, network errors,
    short bodies), sleeping backoff·2^n with full jitter between tries (Retry-After honoured up to
    MAX_RETRY_AFTER); a not-found or a spent upstream moves on to the next one. A try that got
    no answer at all (refused, reset, timed out) is tried again only when no other upstream is
    left to ask.
    """

    def __init__(self, upstreams: list[Upstream], transport: Transport, attempts: int = 3,
                 backoff: float = 0.1, sleep: Callable[[float], None] = time.sleep,
                 rng: Callable[[], float] = random.random,
                 private: list[tuple[str, Upstream]] | None = None, metrics: Metrics | None = None,
                 health: Health | None = None) -> None:
        """Fetch from upstreams in order (private routes first), attempts tries each.

        health, when given, tracks whether each upstream is reachable: a down one is skipped
        and probed (PROBE_PATH) until it answers; without it every upstream is always tried.
        """
        if not upstreams:
            raise ValueError("at least one upstream is required")
        self.upstreams = upstreams
        # private routes: (pattern, upstream); a module matching a pattern goes to that one only.
        self.private = private or []
        self.metrics = metrics or Metrics()
        self.transport = transport
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.health = health
        self._sleep = sleep
        self._rng = rng
        if health is not None:
            for up in [*upstreams, *(u for _, u in self.private)]:
                health.register(up.name, functools.partial(self.probe, up))

    def private_route(self, module: str) -> Upstream | None:
        """Return the private upstream whose pattern matches module first, or None."""
        for pattern, up in self.private:
            if match(pattern, module):
                return up
        return None

    def fetch(self, path: str, consume: Consume[T], module: str | None = None,
              headers: Callable[[], dict[str, str]] | None = None) -> T:
        """Return consume(response) for the first upstream answering 200 to GET path ("/mod/@v/list").

        A module matching a private route is fetched from that upstream alone. Upstreams marked
        down are skipped without a request. consume reads the body; it may raise TransientError
        (retried) or another ProxyError such as InvalidAnswer (the next upstream is tried). An
        HTML page (Content-Type text/html) is refused before consume sees it. Raises NotFound
        when every upstream said not found (with the last one's text), UpstreamDown when every
        upstream was skipped as down, InvalidAnswer when the only upstream tried sent one,
        else UpstreamError with the last error. headers, when given, makes the request headers
        of each attempt (a resumed download asks for what it still lacks).
        """
        chain = self.chain(module)
        last: ProxyError | None = None
        all_not_found = True
        skipped: list[str] = []
        for i, up in enumerate(chain):
            if self.health is not None and not self.health.available(up.name):
                self.metrics.upstream_skipped.inc(upstream=up.name)
                skipped.append(up.name)
                all_not_found = False
                continue
            # A try that gets no answer already cost a whole timeout: while another upstream is
            # left, it is asked at once instead of the silent one again.
            alone = not any(self._usable(u) for u in chain[i + 1:])
            try:
                return self.fetch_from(up, path, consume, headers, retry_silence=alone)
            except ProxyError as exc:
                last = exc
                if not isinstance(exc, NotFound):
                    all_not_found = False
                if i + 1 < len(chain) and not isinstance(exc, InvalidAnswer):  # that one is logged already
                    log.info("upstream %s: %s %s; trying the next", up.name, path, _short(exc))
        down = f" (down, skipped: {', '.join(skipped)})" if skipped else ""
        if last is None:
            raise UpstreamDown(f"{path}: every upstream is down{down}; they are probed and used again "
                               "as soon as they answer")
        if all_not_found:
            raise last
        if isinstance(last, NotFound):
            raise UpstreamError(f"{path}: no upstream could serve it (last: {last.status} {last}){down}")
        if isinstance(last, InvalidAnswer) and not down:
            raise last
        raise UpstreamError(f"{last}{down}")

    def _usable(self, up: Upstream) -> bool:
        return self.health is None or not self.health.is_down(up.name)

    def chain(self, module: str | None = None) -> list[Upstream]:
        """Return the upstreams a request for module goes to, in order: its private route alone, or all."""
        route = self.private_route(module) if module else None
        return [route] if route else list(self.upstreams)

    def available(self, module: str | None = None) -> bool:
        """Report whether any upstream for module is up (asking starts due probes of down ones)."""
        if self.health is None:
            return True
        return any([self.health.available(up.name) for up in self.chain(module)])

    def probe(self, up: Upstream) -> bool:
        """Report whether up answers HTTP at all (any status below 500) to a cheap request."""
        try:
            resp = self.transport.get(up.url + PROBE_PATH, auth=up.auth)
        except ProxyError as exc:
            log.debug("probe of upstream %s: %s", up.name, exc)
            return False
        with resp:
            return resp.status < 500

    def fetch_from(self, up: Upstream, path: str, consume: Consume[T],
                   headers: Callable[[], dict[str, str]] | None = None, retry_silence: bool = True) -> T:
        """Return consume(resp, up) for GET path from one upstream, with retries.

        consume sees 200 and 206 answers (never an HTML page), and 416 to a request with a
        Range header (up lets it send more requests to the same place). With health, any answer
        below 500 counts as reachable; a try with no answer (Health.no_answer, elsewhere when
        retry_silence is False), and giving up after a 5xx on the last try (Health.failed), as
        unreachable; every try's end is reported (Health.finished: its time to response headers,
        and its error unless it served the request or said not found). Retries stop
        early when the upstream is marked down meanwhile, and after a try with no answer when
        retry_silence is False. Refused answers (InvalidAnswer) are logged here, once.
        """
        url = up.url + path
        m = self.metrics
        health = self.health
        for attempt in range(1, self.attempts + 1):
            m.upstream_requests.inc(upstream=up.name)
            server_error = silent = False  # this try got a 5xx; no answer at all
            latency: float | None = None  # seconds to the response headers
            try:
                sent = headers() if headers else {}
                asked = time.monotonic()
                try:
                    resp = self.transport.get(url, headers=sent, auth=up.auth)
                except TransientError as exc:  # no answer: refused, reset, timed out
                    silent = True
                    if health is not None:
                        health.no_answer(up.name, str(exc), elsewhere=not retry_silence)
                    raise
                latency = time.monotonic() - asked
                with resp:
                    try:
                        server_error = resp.status >= 500
                        if health is not None and not server_error:
                            health.answered(up.name)
                        if resp.status in (200, 206) or (resp.status == 416 and "Range" in sent):
                            ctype = resp.header("Content-Type")
                            if looks_like_html(ctype, b""):
                                raise InvalidAnswer(up.name, path, f"an HTML page (Content-Type {ctype}), "
                                                    "as a captive portal or filter sends", "html")
                            result = consume(resp, up)
                            if health is not None:
                                health.finished(up.name, latency)
                            return result
                        raise classify(resp, resp.read_all(limit=64 << 10))
                    finally:
                        m.bytes_fetched.inc(resp.bytes_read)
            except ProxyError as exc:
                if health is not None:
                    health.finished(up.name, latency, "" if isinstance(exc, NotFound) else str(exc))
                if isinstance(exc, InvalidAnswer):
                    log.warning("%s", exc)
                    m.upstream_refused.inc(upstream=up.name, reason=exc.reason)
                if not isinstance(exc, NotFound):
                    m.upstream_errors.inc(upstream=up.name, kind=_kind(exc))
                last_try = attempt == self.attempts
                if health is not None and last_try and server_error:
                    health.failed(up.name, str(exc))
                if not isinstance(exc, TransientError) or last_try or (silent and not retry_silence):
                    raise
                if health is not None and health.is_down(up.name):
                    raise  # marked down meanwhile by another request: move on at once
                m.upstream_retries.inc(upstream=up.name)
                delay = self._delay(attempt, exc.retry_after)
                log.warning("upstream %s: %s failed (%s); retry %d/%d in %.2fs",
                            up.name, path, exc, attempt, self.attempts - 1, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Return the wait before retry number attempt: Retry-After if given, else jittered backoff."""
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER)
        return float(self.backoff * 2.0 ** (attempt - 1) * self._rng())


def _kind(exc: ProxyError) -> str:
    """Return the metrics label of a failed upstream request."""
    if isinstance(exc, TransientError):
        return "transient"
    if isinstance(exc, InvalidAnswer):
        return "invalid"
    return "checksum" if isinstance(exc, ChecksumError) else "other"


def _short(exc: ProxyError) -> str:
    if isinstance(exc, NotFound):
        return f"not found ({exc.status})"
    return f"failed: {exc}"
