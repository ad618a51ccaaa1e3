"""Outbound HTTP: pooled keep-alive http.client connections, timeouts, redirects, proxies, connect hooks."""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..errors import TransientError, UpstreamError
from . import tlsintls
from .dial import Connector, describe, direct_connector, mask_url
from .proxy import Proxy

log = logging.getLogger(__name__)

_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_REDIRECTS = 5


@dataclass(frozen=True)
class Timeouts:
    """The bounds on each phase of an upstream request, in seconds."""

    connect: float = 5.0
    tls: float = 5.0
    read: float = 10.0  # waiting for response headers, and for each body read
    total: float = 1800.0  # the whole request, body included


class Response:
    """An upstream answer whose body is read in pieces; release or close it when done."""

    def __init__(self, pool: Transport, key: tuple[str, str, int], conn: _Conn,
                 resp: http.client.HTTPResponse, url: str, deadline: float) -> None:
        self._pool, self._key, self._conn, self._resp = pool, key, conn, resp
        self.url = url
        self.status = resp.status
        self.reason = resp.reason
        self.headers = resp.headers
        self._deadline = deadline
        self._done = False
        self._complete = False  # the whole body has been read
        self.bytes_read = 0  # body bytes read so far

    def header(self, name: str, default: str = "") -> str:
        """Return one response header's value, or default."""
        return self.headers.get(name, default)

    def read(self, n: int = 1 << 16) -> bytes:
        """Return up to n body bytes, b"" at the end.

        Raises TransientError on timeout or reset.
        """
        if self._done:
            return b""
        if time.monotonic() > self._deadline:
            self.close()
            raise TransientError(f"GET {self.url}: request took longer than the total timeout")
        try:
            data = self._resp.read1(n) if n > 0 else b""
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise TransientError(f"GET {self.url}: reading body: {describe(exc)}") from exc
        self.bytes_read += len(data)
        if not data and n > 0:
            if self._resp.length:  # Content-Length promised more than arrived
                self.close()
                raise TransientError(f"GET {self.url}: body cut short ({self._resp.length} bytes missing)")
            self._complete = True
            self.release()
        return data

    def read_all(self, limit: int = 64 << 20) -> bytes:
        """Return the whole body (at most limit bytes).

        Raises TransientError (as read does) or UpstreamError (a body over limit).
        """
        chunks: list[bytes] = []
        size = 0
        while True:
            data = self.read()
            if not data:
                return b"".join(chunks)
            size += len(data)
            if size > limit:
                self.close()
                raise UpstreamError(f"GET {self.url}: response larger than {limit} bytes")
            chunks.append(data)

    def release(self) -> None:
        """Return the connection to the pool if the body was fully read, else close it."""
        if self._done:
            return
        self._done = True
        reusable = self._complete and not self._resp.will_close
        self._resp.close()
        if reusable:
            self._pool._put(self._key, self._conn)
        else:
            self._conn.close()

    def close(self) -> None:
        """Drop the connection without reading the rest of the body."""
        if not self._done:
            self._done = True
            self._resp.close()
            self._conn.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Conn(http.client.HTTPConnection):
    """An http.client connection whose socket comes from the transport's connector."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None, timeouts: Timeouts,
                 connector: Connector) -> None:
        super().__init__(host, port, timeout=timeouts.read)
        self._tls, self._timeouts, self._connector = tls, timeouts, connector
        self.idle_since = 0.0
        # proxy_headers is None for a connection to the target itself; for one to an HTTP proxy
        # that forwards plain-http requests, the headers (credentials) each request carries.
        self.proxy_headers: dict[str, str] | None = None

    def connect(self) -> None:
        sock = self._connector(self.host, self.port, self._timeouts.connect)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls is not None:
            sock.settimeout(self._timeouts.tls)
            try:
                sock = tlsintls.wrap(self._tls, sock, self.host)
            except BaseException:
                sock.close()
                raise
        sock.settimeout(self._timeouts.read)
        self.sock = sock



class Transport:
    """An HTTP client that sends GET requests over pooled keep-alive connections; safe for many threads.

    Idle connections are kept up to max_idle_per_host per host and max_idle_total overall, and
    dropped after idle_timeout seconds. With a proxy, connections to hosts it applies to go
    through it: https as a tunnel, plain http in absolute form to an HTTP proxy (a tunnel
    through SOCKS); pools stay keyed by the target, never shared between targets.
    """

    def __init__(self, timeouts: Timeouts | None = None, connector: Connector | None = None,
                 tls: ssl.SSLContext | None = None, max_idle_per_host: int = 10,
                 max_idle_total: int = 100, idle_timeout: float = 90.0,
                 clock: Callable[[], float] = time.monotonic,
                 user_agent: str = "goproxy", proxy: Proxy | None = None) -> None:
        self.timeouts = timeouts or Timeouts()
        self.connector = connector or direct_connector()
        self.proxy = proxy
        self.tls = tls or ssl.create_default_context()
        self.max_idle_per_host, self.max_idle_total = max_idle_per_host, max_idle_total
        self.idle_timeout = idle_timeout
        self.user_agent = user_agent
        self._clock = clock
        self._idle: dict[tuple[str, str, int], deque[_Conn]] = {}
        self._idle_count = 0
        self._lock = threading.Lock()

    def get(self, url: str, headers: Mapping[str, str] | None = None,
            auth: Mapping[str, str] | None = None) -> Response:
        """Send GET url, following redirects, and return the response, whatever its status.

        auth headers go only to the host of url, never to another host a redirect names.
        Raises TransientError on connection failures and timeouts, UpstreamError on bad URLs.
        """
        deadline = time.monotonic() + self.timeouts.total
        origin = urllib.parse.urlsplit(url).netloc
        for _ in range(_MAX_REDIRECTS + 1):
            sent = dict(headers or {})
            if auth and urllib.parse.urlsplit(url).netloc == origin:
                sent.update(auth)
            resp = self._get_once(url, sent, deadline)
            location = resp.header("Location")
            if resp.status not in _REDIRECTS or not location:
                return resp
            resp.close()
            url = urllib.parse.urljoin(url, location)
            log.debug("redirected to %s", mask_url(url))
        raise UpstreamError(f"GET {mask_url(url)}: too many redirects")

    def _get_once(self, url: str, headers: dict[str, str], deadline: float) -> Response:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamError(f"unsupported URL {mask_url(url)}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key = (parts.scheme, parts.hostname, port)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        headers.setdefault("User-Agent", self.user_agent)
        for attempt in (0, 1):
            conn, reused = self._take(key)
            sent, line = headers, target
            if conn.proxy_headers is not None:  # absolute form, to an HTTP proxy
                sent, line = {**headers, **conn.proxy_headers}, f"http://{parts.netloc.rpartition('@')[2]}{target}"
            try:
                conn.request("GET", line, headers=sent)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                # A pooled connection the server closed while idle: retry once on a fresh one.
                if reused and attempt == 0 and not isinstance(exc, socket.timeout):
                    continue
                raise TransientError(f"GET {mask_url(url)}: {describe(exc)}") from exc
            return Response(self, key, conn, resp, mask_url(url), deadline)
        raise AssertionError("unreachable")

    def _take(self, key: tuple[str, str, int]) -> tuple[_Conn, bool]:
        now = self._clock()
        with self._lock:
            idle = self._idle.get(key)
            while idle:
                conn = idle.pop()
                self._idle_count -= 1
                if now - conn.idle_since < self.idle_timeout:
                    return conn, True
                conn.close()
        return self._dial(key), False

    def _dial(self, key: tuple[str, str, int]) -> _Conn:
        """Make an unconnected _Conn for key that connects directly or through the proxy."""
        scheme, host, port = key
        tls = self.tls if scheme == "https" else None
        proxy = self.proxy
        if proxy is None or not proxy.applies(host, port):
            return _Conn(host, port, tls, self.timeouts, self.connector)
        if scheme == "http" and proxy.forwards_http:
            conn = _Conn(host, port, None, self.timeouts, lambda _h, _p, timeout: proxy.connect_proxy(timeout))
            conn.proxy_headers = proxy.auth_headers()
            return conn
        return _Conn(host, port, tls, self.timeouts, proxy.tunnel)

    def _put(self, key: tuple[str, str, int], conn: _Conn) -> None:
        conn.idle_since = self._clock()
        with self._lock:
            idle = self._idle.setdefault(key, deque())
            if len(idle) >= self.max_idle_per_host or self._idle_count >= self.max_idle_total:
                conn.close()
                return
            idle.append(conn)
            self._idle_count += 1

    def idle_connections(self) -> int:
        """Return the number of pooled connections waiting for reuse."""
        with self._lock:
            return self._idle_count

    def close(self) -> None:
        """Drop every idle connection."""
        with self._lock:
            for idle in self._idle.values():
                for conn in idle:
                    conn.close()
            self._idle.clear()
            self._idle_count = 0
