"""HTTP server: routing, HEAD/GET, /health, response writing, connection cap, graceful shutdown."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from .config import Config
from .errors import MethodNotAllowed, ProxyError
from .metrics import Metrics
from .modpath import Artifact, parse_request
from .service import Reply, Service

log = logging.getLogger(__name__)
access_log = logging.getLogger("goproxy.access")

ALLOW = "GET, HEAD"
# Replies larger than this go out with socket.sendfile; smaller ones with one write.
SENDFILE_MIN = 64 << 10


# A route answers one exact path: called with the request's Host header ("" when absent), it
# returns (content type, body).
Route = Callable[[str], tuple[str, bytes]]


class Background(Protocol):
    """Background is work beside serving (cache housekeeping): started by cli.serve, stopped by stop()."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class ProxyServer(ThreadingHTTPServer):
    """ProxyServer is the threaded HTTP server; handlers reach the service through self.server."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, config: Config, service: Service, metrics: Metrics,
                 background: Sequence[Background] = (), routes: Mapping[str, Route] | None = None) -> None:
        """Bind the listening socket (config.host, config.port); serve() or start() serves.

        background jobs are started by their owner and stopped, in order, by stop() once the
        requests in flight have drained. routes add exact paths (a /health route replaces the
        plain "ok"); a route raising ProxyError answers with that error's status.
        """
        self.config = config
        self.service = service
        self.metrics = metrics
        # extra_routes maps an exact path to its Route.
        self.extra_routes: dict[str, Route] = {
            "/metrics": lambda host: (Metrics.CONTENT_TYPE, self.metrics.render()), **(routes or {})}
        self.background = tuple(background)
        self.stopping = False
        self._slots = threading.BoundedSemaphore(config.max_connections)
        self._active = 0
        self._idle_cond = threading.Condition()
        self._conns: set[socket.socket] = set()
        self._thread: threading.Thread | None = None
        super().__init__((config.host, config.port), Handler)

    @property
    def port(self) -> int:
        """port is the TCP port actually bound (useful when configured as 0)."""
        return int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("connection cap %d reached; refusing %s", self.config.max_connections,
                        client_address[0])
            _refuse(request, 503, "server busy: too many connections")
            self.shutdown_request(request)
            return
        with self._idle_cond:
            self._conns.add(request)
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._idle_cond:
                self._conns.discard(request)
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("unhandled error serving %s", client_address[0])

    def request_started(self) -> None:
        """request_started counts a request in flight (the drain waits for these)."""
        with self._idle_cond:
            self._active += 1

    def request_finished(self) -> None:
        """request_finished uncounts a request and wakes the drain when none is left."""
        with self._idle_cond:
            self._active -= 1
            self._idle_cond.notify_all()

    def start(self) -> ProxyServer:
        """start serves in a background thread (for tests and embedding) and returns self."""
        self._thread = threading.Thread(target=self.serve_forever, args=(0.1,), name="goproxy-server",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> bool:
        """stop stops accepting, waits up to shutdown_timeout for requests in flight, then closes
        idle keep-alive connections. Must not be called from the serving thread. True if drained."""
        self.stopping = True
        self.shutdown()
        self.server_close()
        log.info("stopped accepting connections; waiting up to %gs for %d request(s) in flight",
                 self.config.shutdown_timeout, self._active)
        deadline = time.monotonic() + self.config.shutdown_timeout
        with self._idle_cond:
            while self._active > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._idle_cond.wait(left)
            drained = self._active == 0
            conns = list(self._conns)
        for conn in conns:  # wake handlers blocked reading the next request on a keep-alive socket
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        for job in self.background:
            job.stop()
        if drained:
            log.info("all requests finished; shutdown complete")
        else:
            log.warning("shutdown timeout: %d request(s) still running were abandoned", self._active)
        return drained


def _refuse(sock: socket.socket, status: int, text: str) -> None:
    body = (text + "\n").encode()
    head = (f"HTTP/1.1 {status} Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n")
    try:
        sock.settimeout(1.0)
        sock.sendall(head.encode() + body)
    except OSError:
        pass


class Handler(BaseHTTPRequestHandler):
    """Handler parses the path, asks the service, and writes the reply; one instance per connection."""

    server: ProxyServer
    protocol_version = "HTTP/1.1"
    server_version = "goproxy"
    sys_version = ""
    error_content_type = "text/plain; charset=utf-8"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.config.client_timeout)
        # Replies go out in one write; without NODELAY, Nagle plus delayed ACKs add 40ms each.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def parse_request(self) -> bool:
        """parse_request adds strictness to the stdlib parser: exactly "METHOD SP target SP
        HTTP/1.x", so HTTP/0.9 lines and stray spaces are refused with 400."""
        if not super().parse_request():
            return False
        words = self.raw_requestline.rstrip(b"\r\n").split(b" ")
        if len(words) != 3 or not words[2].startswith(b"HTTP/1."):
            self.send_error(400, "malformed request line")
            return False
        return True

    def do_GET(self) -> None:
        self._handle(head=False)

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def __getattr__(self, name: str) -> Any:
        # Any other method (POST, PUT, DELETE, or one never heard of) gets 405 with Allow.
        if name.startswith("do_"):
            return self._method_not_allowed
        raise AttributeError(name)

    def _method_not_allowed(self) -> None:
        error = MethodNotAllowed(f"method {self.command} not allowed; use GET or HEAD")
        self._handle(head=False, error=error)

    def _handle(self, head: bool, error: ProxyError | None = None) -> None:
        started = time.monotonic()
        self.server.request_started()
        status, sent, source, endpoint = 500, 0, "", "other"
        reply: Reply | None = None
        try:
            if error is not None:
                raise error
            path = self.path.split("?", 1)[0]
            route = self.server.extra_routes.get(path)
            if path == "/health" and route is None:
                endpoint = "health"
                status, sent = self._send_bytes(200, "text/plain; charset=utf-8", b"ok\n", "no-store", head)
            elif route is not None:
                endpoint = path.strip("/") or "page"
                ctype, body = route(self.headers.get("Host", ""))
                status, sent = self._send_bytes(200, ctype, body, "no-store", head)
            else:
                req = parse_request(path)
                endpoint = req.kind if isinstance(req, Artifact) else "sumdb"
                reply = self.server.service.serve(req)
                source = reply.source
                status, sent = 200, self._send_reply(reply, head)
        except ProxyError as exc:
            status = exc.status
            sent = self._send_error_text(exc, head)
        except (ConnectionError, TimeoutError, socket.timeout) as exc:
            self.close_connection = True
            log.info("client %s went away during %s %s: %s", self.client_address[0], self.command,
                     self.path, exc)
        except Exception:
            log.exception("internal error serving %s %s", self.command, self.path)
            status = 500
            sent = self._send_error_text(ProxyError("internal server error"), head)
        finally:
            if reply is not None:
                reply.close()
            if self.server.stopping:
                self.close_connection = True
            self.server.request_finished()
        metrics = self.server.metrics
        metrics.requests.inc(endpoint=endpoint, status=str(status))
        metrics.bytes_served.inc(sent)
        if source in ("hit", "miss", "stale"):
            metrics.cache.inc(result=source)
        tag = {"hit": "[CACHE HIT] ", "miss": "[CACHE MISS] ", "stale": "[CACHE STALE] "}.get(source, "")
        access_log.info("%s%s %s %s %d %dB %.1fms", tag, self.client_address[0], self.command,
                        self.path, status, sent, (time.monotonic() - started) * 1000)

    def _write(self, status: int, headers: list[tuple[str, str]], body: bytes = b"") -> None:
        """_write sends the status line, headers and a small body in a single write."""
        reason = self.responses.get(status, ("",))[0]
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if self.close_connection:
            lines.append("Connection: close")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def _send_reply(self, reply: Reply, head: bool) -> int:
        blob = reply.blob
        headers = [("Content-Type", reply.content_type), ("Content-Length", str(blob.size)),
                   ("Cache-Control", reply.cache_control)]
        if head:
            self._write(200, headers)
            return 0
        if blob.file is None or blob.size < SENDFILE_MIN:
            body = blob.read()
            self._write(200, headers, body)
            return len(body)
        self._write(200, headers)
        if blob.sendfile:
            return int(self.connection.sendfile(blob.file, 0, blob.size))
        sent = 0
        while sent < blob.size:
            data = blob.file.read(min(SENDFILE_MIN, blob.size - sent))
            if not data:
                raise ConnectionError(f"storage ended {reply.source} content after {sent} of {blob.size} bytes")
            self.wfile.write(data)
            sent += len(data)
        return sent

    def _send_bytes(self, status: int, ctype: str, body: bytes, cache_control: str,
                    head: bool) -> tuple[int, int]:
        headers = [("Content-Type", ctype), ("Content-Length", str(len(body))), ("Cache-Control", cache_control)]
        self._write(status, headers, b"" if head else body)
        return status, 0 if head else len(body)

    def _send_error_text(self, exc: ProxyError, head: bool) -> int:
        body = (exc.message.replace("\n", " ").replace("\r", " ") + "\n").encode("utf-8", "replace")
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
        if exc.status == 405:
            headers.append(("Allow", ALLOW))
        if exc.status in (404, 410):
            headers.append(("Cache-Control", f"public, max-age={int(self.server.config.not_found_ttl)}"))
        else:
            headers.append(("Cache-Control", "no-store"))
        if exc.status >= 500 and exc.status != 502:
            self.close_connection = True
        self._write(exc.status, headers, b"" if head else body)
        return 0 if head else len(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """send_error answers protocol-level errors (bad request line, huge headers) in plain text."""
        self.close_connection = True
        self.request_version = "HTTP/1.1"  # answer even an HTTP/0.9-looking line with a status line
        text = message or self.responses.get(code, ("error",))[0]
        body = (text.replace("\n", " ") + "\n").encode("latin-1", "replace")
        try:
            self.send_response_only(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            pass
        access_log.info("%s %s %r %d", self.client_address[0], self.command or "-",
                        (self.requestline or "")[:200], code)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)
