"""The HTTP/1.1 server of one process: the selectors loop that accepts, watches and drains connections.

The loop holds every connection that is idle, receiving a request head, or taking its answer;
a bounded pool of handler threads answers requests. Each connection's exchange is carried by
connections.Connections.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from .access import Access
from .accesslog import AccessLog
from .config import Config
from .conn import BUSY, HANDSHAKE, HEAD, IDLE, WRITE, Conn
from .connections import Connections
from .listen import bind, bound_port, client_host
from .metrics import Metrics
from .pool import HandlerPool
from .respond import Responder, Route
from .service import Service

log = logging.getLogger(__name__)

# Connections accepted per readiness event before the loop looks at the others.
ACCEPT_BATCH = 64
# How often deadlines are checked, in seconds.
SWEEP = 0.25
# How long accepting pauses when the process is out of file descriptors.
ACCEPT_PAUSE = 0.1
_LISTENER, _WAKE = object(), object()
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
_BUSY_REPLY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
               b"Content-Length: 38\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
               b"server busy: too many open connections\n")


class Background(Protocol):
    """Work beside serving (cache housekeeping): started by its owner, stopped by ProxyServer.stop()."""

    def start(self) -> None:
        """Start the work (its owner calls this)."""

    def stop(self) -> None:
        """Stop the work (ProxyServer.stop() calls this once the requests in flight have drained)."""


class ProxyServer:
    """Serve the module proxy protocol on one listening socket.

    One loop thread owns the connections while they wait: for the first byte of a request
    (-client-timeout between keep-alive requests), for the rest of the head (whole head within
    -header-timeout, counted from the accept for a new connection), or for the client to take
    its answer (files by non-blocking sendfile, streams a piece at a time). A request whose head
    has arrived is answered by the loop when its answer is at hand (Responder.answer_now: a hit
    held in memory), else goes to the handler pool (HandlerPool: -handler-threads), which answers
    it and any pipelined request after it, in order. So idle connections, slow senders and slow
    readers hold no thread. At -max-connections (this process's share when several workers
    share the socket) the longest-waiting idle connection is closed for a new one; with none,
    the new one gets 503.

    With a TLS context in control, accepted sockets are wrapped and their non-blocking handshake
    (HANDSHAKE) is driven by the same events, within -header-timeout of the accept; files then
    go out in pieces read by the loop, since sendfile cannot encrypt. Credentials are checked
    per request by the Responder (Responder._answer, for the loop's answers too), before routing.

    The steps of each connection's exchange are connections.Connections'; the server keeps the
    listening socket, the hand-backs from handler threads, the deadlines and stopping.
    """

    def __init__(self, config: Config, service: Service, metrics: Metrics, background: Sequence[Background] = (),
                 listener: socket.socket | None = None, access: AccessLog | None = None, share: int = 1,
                 routes: Mapping[str, Route] | None = None, control: Access | None = None) -> None:
        """Prepare to serve on listener, or on config.host:config.port when listener is None.

        listener is a bound, listening socket, shared by share processes; binding
        config.host:config.port raises OSError when it fails. background jobs are started by
        their owner and stopped, in order, by stop() once the requests in flight have drained.
        access receives the access lines (through logging when None). routes answer exact paths
        beside /metrics (a /health route replaces the plain "ok"). control holds the TLS context,
        the credentials and the module rules in force (none by default); the server and its
        Responder read it per connection and per request.
        """
        self.config = config
        self.service = service
        self.metrics = metrics
        # extra_routes maps an exact path to its Route.
        self.extra_routes: dict[str, Route] = {
            "/metrics": lambda host: (Metrics.CONTENT_TYPE, self.metrics.render()), **(routes or {})}
        self.background = tuple(background)
        self.access = access or AccessLog()
        self.control = control or Access()
        self.responder = Responder(config, service, metrics, self.access, self.extra_routes, self.control)
        self.listener = listener if listener is not None else bind(config.host, config.port)
        self.listener.setblocking(False)
        self.cap = max(1, -(-config.max_connections // max(1, share)))
        self.pool = HandlerPool(config.handler_threads)
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._lock = threading.Lock()
        self._returned: list[Conn] = []
        self._sleeping = False
        self._finished = False
        self.stopping = False
        self._accept_paused = 0.0
        self._warned_cap = float("-inf")
        self._done = threading.Event()
        self._serving = False
        self._stopped = False
        self._drained = True
        self._thread: threading.Thread | None = None
        self.connections = Connections(config, self.responder, self.pool, self._sel, self)

    @property
    def port(self) -> int:
        """The TCP port actually bound (useful when configured as 0)."""
        return bound_port(self.listener)

    def start(self) -> ProxyServer:
        """Serve in a background thread (for tests and embedding); return self."""
        self._thread = threading.Thread(target=self.serve, name="goproxy-server", daemon=True)
        self._thread.start()
        return self

    def serve(self) -> None:
        """Serve in this thread until stop() has drained the connections or given up on them."""
        self._serving = True
        self.access.start()
        sel = self._sel
        sel.register(self.listener, _READ, _LISTENER)
        sel.register(self._wake_r, _READ, _WAKE)
        next_sweep = 0.0
        drain_until: float | None = None
        pool = self.pool
        try:
            while True:
                now = time.monotonic()
                if self.stopping and drain_until is None:
                    drain_until = now + self.config.shutdown_timeout
                    self._begin_drain()
                if drain_until is not None and (not self.connections.live or now >= drain_until):
                    break
                timeout = max(0.0, next_sweep - now)
                if pool.pending():
                    timeout = min(timeout, pool.stuck)
                with self._lock:
                    if self._returned:
                        timeout = 0.0
                    else:
                        self._sleeping = True
                events = sel.select(timeout)
                with self._lock:
                    self._sleeping = False
                    back, self._returned = self._returned, []
                now = time.monotonic()
                for conn in back:
                    self._guard(self.connections.resume, conn, now)
                for key, mask in events:
                    data = key.data
                    if data is _LISTENER:
                        self._accept(now)
                    elif data is _WAKE:
                        self._drain_wake()
                    elif mask & _WRITE:
                        self._guard(self.connections.write, data, now)
                    else:
                        self._guard(self.connections.read, data, now)
                if pool.pending():
                    pool.check(now)
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + SWEEP
        finally:
            self._finish()

    def _guard(self, step: Callable[[Conn, float], None], conn: Conn, now: float) -> None:
        """Run one loop step on conn; an unexpected error closes conn, never the loop."""
        try:
            step(conn, now)
        except Exception:
            log.exception("internal error on the connection from %s", conn.client)
            self.connections.close(conn)

    # Accepting.

    def _accept(self, now: float) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = self.listener.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:  # out of file descriptors or buffers: breathe, then go on
                log.warning("cannot accept connections (%s); pausing %gs", exc.strerror or exc, ACCEPT_PAUSE)
                self._sel.unregister(self.listener)
                self._accept_paused = now + ACCEPT_PAUSE
                return
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                sock.close()
                continue
            if len(self.connections.live) >= self.cap and not self._evict(now):
                self._refuse(sock, now)
                continue
            tls = self.control.tls
            if tls is not None:
                try:
                    sock = tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                except OSError as exc:
                    log.debug("cannot start TLS on a connection from %s: %s", client_host(address), exc)
                    sock.close()
                    continue
            conn = Conn(sock, client_host(address))
            conn.deadline = now + self.config.header_timeout
            self.connections.live.add(conn)
            self.connections.waiting[conn] = None
            if tls is not None:
                conn.state = HANDSHAKE
            self.connections.watch(conn, _READ)

    def _evict(self, now: float) -> bool:
        """Close the connection that has waited longest for a request head; False when none waits."""
        if not self.connections.waiting:
            return False
        oldest = next(iter(self.connections.waiting))
        log.debug("at %d connections: closing the idle one from %s", self.cap, oldest.client)
        self.connections.close(oldest)
        return True

    def _refuse(self, sock: socket.socket, now: float) -> None:
        if now - self._warned_cap >= 10.0:
            self._warned_cap = now
            log.warning("at %d connections, every one with a request in progress: answering 503", self.cap)
        if not self.control.tls:  # a TLS client would take the plain answer for a broken handshake
            try:
                sock.send(_BUSY_REPLY)
            except OSError:
                pass
        sock.close()

    # Hand-backs from handler threads.

    def hand_back(self, conn: Conn, after: int) -> None:
        """Give conn back to the loop, to continue in state after (IDLE, WRITE, LINGER, CLOSED)."""
        conn.after = after
        with self._lock:
            finished = self._finished
            if not finished:
                self._returned.append(conn)
                wake, self._sleeping = self._sleeping, False
        if finished:
            conn.close()
        elif wake:
            try:
                self._wake_w.send(b"\0")
            except OSError:
                pass

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    # Deadlines.

    def _sweep(self, now: float) -> None:
        if self._accept_paused and now >= self._accept_paused and not self.stopping:
            self._accept_paused = 0.0
            self._sel.register(self.listener, _READ, _LISTENER)
        connections = self.connections
        for conn in [c for c in connections.live if c.state != BUSY and c.deadline <= now]:
            state = conn.state
            if state == HEAD:
                log.info("client %s: request head not complete within %gs; closing", conn.client,
                         self.config.header_timeout)
                conn.buf = b""
                connections.send(conn, self.responder.timeout(), now)
            elif state == HANDSHAKE:
                log.info("client %s: TLS handshake not complete within %gs; closing", conn.client,
                         self.config.header_timeout)
                connections.close(conn)
            elif state == WRITE and conn.answer is not None and conn.answer.status != 408:
                answer = conn.answer
                log.info("client %s: took nothing of %s %s for %gs; closing", conn.client, answer.method,
                         answer.target, self.config.client_timeout)
                connections.record_partial(conn, now)
                connections.close(conn)
            else:
                connections.close(conn)

    # Stopping.

    def _begin_drain(self) -> None:
        """Stop accepting; close connections idle between requests; let the others finish.

        A connection accepted but still waiting for its first request is not idle: its client
        is about to send one (closing it would fail a request the listener took in), so it gets
        its answer, within -header-timeout, and is closed after it.
        """
        try:
            if not self._accept_paused:
                self._sel.unregister(self.listener)
        except (KeyError, ValueError):
            pass
        self.listener.close()
        for conn in [c for c in self.connections.live if c.state == IDLE and not c.fresh]:
            self.connections.close(conn)
        busy = sum(1 for c in self.connections.live if c.state in (BUSY, WRITE))
        log.info("stopped accepting connections; waiting up to %gs for %d request(s) in flight",
                 self.config.shutdown_timeout, busy)

    def _finish(self) -> None:
        """Close what the loop holds, noting whether a request was still in flight (stop()'s answer).

        A connection a handler thread holds is not closed under it: its socket is shut down, so
        the thread's next send fails and the thread closes it.
        """
        with self._lock:
            self._finished = True
            back, self._returned = self._returned, []
        left = [c for c in self.connections.live if c.state in (BUSY, WRITE)]
        self._drained = not left
        for conn in back:
            self.connections.close(conn)
        for conn in list(self.connections.live):
            if conn.state == BUSY:  # a handler thread has it: make its next send fail, it closes it
                try:  # the bare socket's shutdown: a TLS socket's would drop its state under the thread
                    socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)
                except OSError:
                    pass
                self.connections.live.discard(conn)
            else:
                self.connections.close(conn)
        self.pool.close()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()
        self.access.close()
        self._done.set()

    def stop(self) -> bool:
        """Stop serving; return True when everything finished in time.

        Stop accepting, wait up to shutdown_timeout for the requests in flight and the answers
        being sent, close the rest, wait for answers given before they were committed to be
        committed, then stop the background jobs in order. Call it from any thread but the
        serving one.
        """
        if not self._stopped:
            self._stopped = True
            self.stopping = True
            if self._serving:
                try:
                    self._wake_w.send(b"\0")
                except OSError:
                    pass
                self._done.wait(self.config.shutdown_timeout + 10)
            else:
                self.listener.close()
                self._finish()
            if not self.service.settle(self.config.shutdown_timeout):
                log.warning("shutdown timeout: answers already given were not all kept in the cache")
            if self._thread is not None:
                self._thread.join(timeout=5)
            for job in self.background:
                job.stop()
            if self._drained:
                log.info("all requests finished; shutdown complete")
            else:
                log.warning("shutdown timeout: requests still running were abandoned")
        return self._drained
