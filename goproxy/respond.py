"""What to answer a parsed request, and the access line and metrics of each exchange.

Routing, the service's reply or the error's status, and response heads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .access import Access
from .accesslog import AccessLog
from .auth import CHALLENGE, claimed_name
from .config import Config
from .errors import MethodNotAllowed, ProxyError
from .http1 import HeadError, Request, format_head
from .metrics import Metrics
from .request import Artifact, SumdbRequest, parse_request
from .service import Service
from .storage.base import Blob

log = logging.getLogger("goproxy.server")

ALLOW = "GET, HEAD"
# Bodies smaller than this go out with the head in one write, read into memory if need be.
SENDFILE_MIN = 64 << 10
# Parsed request paths remembered (the module path checks cost more than the rest of a hit).
PARSE_CACHE = 8192
_TAGS = {"hit": "[CACHE HIT] ", "miss": "[CACHE MISS] ", "stale": "[CACHE STALE] "}
_TEXT = "text/plain; charset=utf-8"
_UNAUTHORIZED = b"authentication required: send the name:secret of a client credential (Basic or Bearer)\n"

# A route answers one exact path: called with the request's Host header ("" when absent), it
# returns (content type, body), or raises a ProxyError to answer with that error's status.
Route = Callable[[str], tuple[str, bytes]]


class Answer:
    """One response being sent: its head and a small body as data, then size bytes of blob if any.

    keep: another request may follow on the connection. linger: the request may have sent
    bytes the server did not read, so close by shutting down the write side and draining.
    """

    __slots__ = ("status", "data", "head_len", "blob", "size", "keep", "linger", "endpoint", "source", "method",
                 "target", "started")

    def __init__(self, status: int, head: bytes, body: bytes, blob: Blob | None, size: int, keep: bool,
                 linger: bool, endpoint: str, source: str, method: str, target: str, started: float) -> None:
        """Hold a response that sends head and body, then size bytes of blob (when not None)."""
        self.status, self.data, self.head_len = status, head + body if body else head, len(head)
        self.blob, self.size = blob, size
        self.keep, self.linger = keep, linger
        self.endpoint, self.source, self.method, self.target, self.started = endpoint, source, method, target, started


class Responder:
    """Answer requests: the extra routes, /health (unless a route answers it), the protocol's paths.

    The protocol's paths are answered through the service. Errors map to responses here, by
    class: a ProxyError gives its status and message as one line of text; anything else is
    logged with its traceback and answered 500. With credentials in control, a request without
    a valid one is answered 401 before routing (but /health, /ready, and /metrics when control
    says so).
    """

    def __init__(self, config: Config, service: Service, metrics: Metrics, access: AccessLog,
                 extra_routes: dict[str, Route], control: Access | None = None) -> None:
        self.control = control or Access()
        self.config = config
        self.service = service
        self.metrics = metrics
        self.access = access
        self.extra_routes = extra_routes
        self._parsed: dict[str, Artifact | SumdbRequest] = {}
        self._not_found_control = f"public, max-age={int(config.not_found_ttl)}"

    def answer(self, req: Request, stopping: bool, client: str = "-") -> Answer:
        """Return the answer to req from client (its address, for logs); never raises.

        stopping closes the connection after it.
        """
        answer = self._answer(req, stopping, False, client)
        assert answer is not None
        return answer

    def answer_now(self, req: Request, stopping: bool, client: str = "-") -> Answer | None:
        """Return the answer to req when it is at hand, else None: answer() gives it, perhaps waiting.

        At hand: a hit held in memory (Service.serve_kept), or an error found before anything
        is looked up. Never waits on disk, locks, upstreams or a credential's hash (the
        server's loop calls it); never raises.
        """
        return self._answer(req, stopping, True, client)

    def _answer(self, req: Request, stopping: bool, now_only: bool, client: str) -> Answer | None:
        """Return the answer to req; with now_only, None as soon as giving it could wait.

        Both answer() and answer_now() come here, so the credential check (before routing)
        applies to both; with now_only a credential that is not remembered returns None, so a
        handler thread hashes it.
        """
        started = time.monotonic()
        method, target = req.method, req.target
        head = method == "HEAD"
        keep = req.keep_alive and not stopping
        extra: list[tuple[str, str]] = []
        if keep and req.version == "HTTP/1.0":
            extra.append(("Connection", "keep-alive"))
        endpoint = "other"
        try:
            if method != "GET" and not head:
                raise MethodNotAllowed(f"method {method} not allowed; use GET or HEAD")
            path = target.partition("?")[0]
            control = self.control
            auth = control.auth
            if auth is not None and control.needs_credential(path):
                auth.maybe_reload()
                who = auth.current().remembered(req.header("authorization")) if now_only else False
                if who is False and now_only:
                    return None  # telling needs a hash: a handler thread does it
                if not isinstance(who, str):  # not a remembered success: check() decides
                    refused = self._authenticate(control, req, client, extra, keep, started)
                    if refused is not None:
                        return refused
            route = self.extra_routes.get(path)
            if route is not None:
                if now_only:
                    return None
                endpoint = path.strip("/") or "page"
                ctype, body = route(req.header("host"))
                return self._bytes(200, ctype, body, "no-store", extra, keep, req, endpoint, started)
            if path == "/health":
                endpoint = "health"
                return self._bytes(200, _TEXT, b"ok\n", "no-store", extra, keep, req, endpoint, started)
            parsed = self._parse(path)
            endpoint = parsed.kind if isinstance(parsed, Artifact) else "sumdb"
            if now_only:
                kept = self.service.serve_kept(parsed)
                if kept is None:
                    return None
                reply = kept
            else:
                reply = self.service.serve(parsed)
        except ProxyError as exc:
            return self._error(exc, extra, keep, req, endpoint, started)
        except Exception:
            log.exception("internal error serving %s %s", method, target)
            return self._error(ProxyError("internal server error"), extra, False, req, endpoint, started)
        blob = reply.blob
        size = blob.size
        headers = [("Content-Type", reply.content_type), ("Content-Length", str(size)),
                   ("Cache-Control", reply.cache_control), *extra]
        data = format_head(200, headers, close=not keep)
        if head:
            blob.close()
            return Answer(200, data, b"", None, 0, keep, req.has_body, endpoint, reply.source, method, target, started)
        if blob.body is not None or size < SENDFILE_MIN:
            try:
                body = blob.read()
            except OSError as exc:
                blob.close()
                return self._error(ProxyError(f"cannot read {parsed.key} from the cache: {exc}"), extra, False, req,
                                   endpoint, started)
            blob.close()
            if len(body) != size:
                log.error("%s: read %d bytes of %d from the cache", parsed.key, len(body), size)
                return self._error(ProxyError("cache read came up short"), extra, False, req, endpoint, started)
            return Answer(200, data, body, None, 0, keep, req.has_body, endpoint, reply.source, method, target,
                          started)
        return Answer(200, data, b"", blob, size, keep, req.has_body, endpoint, reply.source, method, target, started)

    def _authenticate(self, control: Access, req: Request, client: str, extra: list[tuple[str, str]], keep: bool,
                      started: float) -> Answer | None:
        """Return None when req carries a valid credential, else its 401 answer (logged without the secret)."""
        auth = control.auth
        assert auth is not None
        header = req.header("authorization")
        if auth.current().check(header) is not None:
            return None
        name = claimed_name(header)
        if name is None:
            log.info("client %s: %s %s without a valid credential: 401", client, req.method, req.target)
        else:
            log.warning("client %s: %s %s refused: wrong secret or unknown name %r: 401", client, req.method,
                        req.target, name)
        headers = [("WWW-Authenticate", CHALLENGE), ("Content-Type", _TEXT),
                   ("Content-Length", str(len(_UNAUTHORIZED))), ("Cache-Control", "no-store"), *extra]
        head = format_head(401, headers, close=not keep)
        return Answer(401, head, b"" if req.method == "HEAD" else _UNAUTHORIZED, None, 0, keep, req.has_body,
                      "other", "", req.method, req.target, started)

    def _parse(self, path: str) -> Artifact | SumdbRequest:
        parsed = self._parsed.get(path)
        if parsed is None:
            parsed = parse_request(path)
            if len(self._parsed) >= PARSE_CACHE:
                self._parsed.clear()
            self._parsed[path] = parsed
        return parsed

    def _bytes(self, status: int, ctype: str, body: bytes, control: str, extra: list[tuple[str, str]], keep: bool,
               req: Request, endpoint: str, started: float) -> Answer:
        headers = [("Content-Type", ctype), ("Content-Length", str(len(body))), ("Cache-Control", control), *extra]
        head = format_head(status, headers, close=not keep)
        return Answer(status, head, b"" if req.method == "HEAD" else body, None, 0, keep, req.has_body, endpoint, "",
                      req.method, req.target, started)

    def _error(self, exc: ProxyError, extra: list[tuple[str, str]], keep: bool, req: Request, endpoint: str,
               started: float) -> Answer:
        """Return the answer for exc: its status, and its message as one line of text.

        A 5xx status other than 502 closes the connection; 405 names the allowed methods; 404 and
        410 may be cached for -not-found-ttl, any other error not at all.
        """
        status = exc.status
        if status >= 500 and status != 502:
            keep = False
        headers = []
        if status == 405:
            headers.append(("Allow", ALLOW))
        control = self._not_found_control if status in (404, 410) else "no-store"
        body = (exc.message.replace("\n", " ").replace("\r", " ") + "\n").encode("utf-8", "replace")
        headers += [("Content-Type", _TEXT), ("Content-Length", str(len(body))), ("Cache-Control", control)]
        headers += extra if keep else []
        head = format_head(status, headers, close=not keep)
        return Answer(status, head, b"" if req.method == "HEAD" else body, None, 0, keep, req.has_body, endpoint, "",
                      req.method, req.target, started)

    def reject(self, err: HeadError) -> Answer:
        """Return the answer to a request head the parser refused: its status, then close."""
        body = (err.message + "\n").encode("utf-8", "replace")
        head = format_head(err.status, [("Content-Type", _TEXT), ("Content-Length", str(len(body))),
                                        ("Cache-Control", "no-store")], close=True)
        return Answer(err.status, head, body, None, 0, False, True, "other", "", "-", "-", time.monotonic())

    def timeout(self) -> Answer:
        """Return the answer to a request head that did not arrive within -header-timeout."""
        return self.reject(HeadError(408, "request head not received in time"))

    def record(self, a: Answer, client: str, sent: int, now: float) -> None:
        """Count the finished exchange in the metrics and write its access line."""
        elapsed = now - a.started
        m = self.metrics
        m.requests.inc(endpoint=a.endpoint, status=str(a.status))
        m.request_seconds.observe(elapsed, endpoint=a.endpoint)
        if sent:
            m.bytes_served.inc(sent)
        source = a.source
        if source in _TAGS:
            m.cache.inc(result=source)
        access = self.access
        if access.enabled:
            access.line(f"{_TAGS.get(source, '')}{client} {a.method} {a.target} {a.status} {sent}B "
                        f"{elapsed * 1000:.1f}ms")
