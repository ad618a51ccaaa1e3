"""The HTTP/1.1 server of one process: a selectors loop holds every connection that is idle, receiving
a request head, or taking its answer; a bounded pool of handler threads answers requests."""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from .access import Access
from .accesslog import AccessLog
from .config import Config
from .conn import (
    BLOCKED,
    BUSY,
    CLOSED,
    DONE,
    HANDSHAKE,
    HEAD,
    IDLE,
    LINGER,
    REFILL,
    WOULD_BLOCK,
    WRITE,
    Conn,
    ShortBody,
)
from .http1 import HeadError, Request, find_head_end, parse_head
from .listen import bind, bound_port, client_host
from .metrics import Metrics
from .pool import HandlerPool
from .respond import Answer, Responder, Route
from .service import Service

log = logging.getLogger(__name__)

# Bytes read from a client at a time.
RECV = 64 << 10
# Connections accepted per readiness event before the loop looks at the others.
ACCEPT_BATCH = 64
# How often deadlines are checked, in seconds.
SWEEP = 0.25
# How long a closing connection is drained of what the client still sends (nginx's lingering close).
LINGER_TIME = 2.0
# How long accepting pauses when the process is out of file descriptors.
ACCEPT_PAUSE = 0.1
_LISTENER, _WAKE = object(), object()
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
_BUSY_REPLY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
               b"Content-Length: 38\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
               b"server busy: too many open connections\n")
_PLAIN_ON_TLS = b"this port speaks https: use https:// in GOPROXY\n"
_PLAIN_ON_TLS_REPLY = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                       b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_PLAIN_ON_TLS), _PLAIN_ON_TLS))


class Background(Protocol):
    """Work beside serving (cache housekeeping): started by its owner, stopped by ProxyServer.stop()."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


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
    """

    def __init__(self, config: Config, service: Service, metrics: Metrics, background: Sequence[Background] = (),
                 listener: socket.socket | None = None, access: AccessLog | None = None, share: int = 1,
                 routes: Mapping[str, Route] | None = None, control: Access | None = None) -> None:
        """Serve on listener (a bound, listening socket, shared by share processes), or bind
        config.host:config.port when None (raises OSError when that fails).

        background jobs are started by their owner and stopped, in order, by stop() once the
        requests in flight have drained. access receives the access lines (through logging
        when None). routes answer exact paths beside /metrics (a /health route replaces the
        plain "ok"). control holds the TLS context, the credentials and the module rules in force
        (none by default); the server and its Responder read it per connection and per request.
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
        self._conns: set[Conn] = set()
        self._waiting: dict[Conn, None] = {}  # connections waiting for a request head, oldest first
        self.stopping = False
        self._accept_paused = 0.0
        self._warned_cap = float("-inf")
        self._done = threading.Event()
        self._serving = False
        self._stopped = False
        self._drained = True
        self._thread: threading.Thread | None = None

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
                if drain_until is not None and (not self._conns or now >= drain_until):
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
                    self._guard(self._resume, conn, now)
                for key, mask in events:
                    data = key.data
                    if data is _LISTENER:
                        self._accept(now)
                    elif data is _WAKE:
                        self._drain_wake()
                    elif mask & _WRITE:
                        self._guard(self._write, data, now)
                    else:
                        self._guard(self._read, data, now)
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
            self._close(conn)

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
            if len(self._conns) >= self.cap and not self._evict(now):
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
            self._conns.add(conn)
            self._waiting[conn] = None
            if tls is not None:
                conn.state = HANDSHAKE
            self._watch(conn, _READ)

    def _evict(self, now: float) -> bool:
        """Close the connection that has waited longest for a request head; False when none waits."""
        if not self._waiting:
            return False
        oldest = next(iter(self._waiting))
        log.debug("at %d connections: closing the idle one from %s", self.cap, oldest.client)
        self._close(oldest)
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

    # The TLS handshake.

    def _handshake(self, conn: Conn, now: float) -> None:
        """Drive conn's TLS handshake a step; once done, wait for (or read) the first request."""
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(conn, _READ)
            return
        except ssl.SSLWantWriteError:
            self._watch(conn, _WRITE)
            return
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError) as exc:
            # A connect-and-close (a port scan, a TCP health check): not worth a line each.
            log.debug("client %s went away during the TLS handshake: %s", conn.client, exc)
            self._close(conn)
            return
        except ssl.SSLError as exc:
            self._tls_failed(conn, exc, now)
            return
        except OSError as exc:
            log.debug("client %s went away during the TLS handshake: %s", conn.client, exc.strerror or exc)
            self._close(conn)
            return
        conn.state = IDLE
        self._watch(conn, _READ)
        self._read(conn, now)  # the request may have arrived with the handshake's last flight

    def _tls_failed(self, conn: Conn, exc: ssl.SSLError, now: float) -> None:
        """Log a refused handshake in one line and close; a plain HTTP request gets a plain 400 first."""
        reason = getattr(exc, "reason", None) or exc.__class__.__name__
        if reason == "HTTP_REQUEST":
            log.info("client %s sent plain HTTP to the TLS port; answering 400", conn.client)
            try:
                socket.socket.send(conn.sock, _PLAIN_ON_TLS_REPLY)  # the bare socket: no TLS record
            except OSError:
                self._close(conn)
                return
            self._waiting.pop(conn, None)
            self._linger(conn, now)
            return
        log.info("client %s: TLS handshake failed: %s", conn.client, str(reason).replace("_", " ").lower())
        self._close(conn)

    # Reading request heads.

    def _read(self, conn: Conn, now: float) -> None:
        state = conn.state
        if state == LINGER:
            self._linger_read(conn)
            return
        if state == HANDSHAKE:
            self._handshake(conn, now)
            return
        try:
            data = conn.sock.recv(RECV)
            if conn.tls:
                data += self._pending(conn)
        except ssl.SSLWantWriteError:
            self._watch(conn, _WRITE)  # TLS needs to send first: read again once it can
            return
        except WOULD_BLOCK:
            return
        except OSError as exc:
            self._gone(conn, exc, now)
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        if conn.state == IDLE:
            conn.state = HEAD
            if not conn.fresh:
                conn.deadline = now + self.config.header_timeout
        buf = conn.buf + data if conn.buf else data
        try:
            end = find_head_end(buf, conn.searched)
            if end < 0:
                conn.buf, conn.searched = buf, len(buf)
                self._watch(conn, _READ)
                return
            req = parse_head(buf[:end])
        except HeadError as err:
            conn.buf = b""
            self._send(conn, self.responder.reject(err), now)
            return
        conn.buf, conn.searched = buf[end:], 0
        self._begin(conn, req, now)

    def _begin(self, conn: Conn, req: Request, now: float) -> None:
        """Answer req in this loop when its answer is at hand (a hit held in memory), else in the pool.

        A handler thread costs two thread switches per request (about 60 us here, a third of a
        small hit), and answering from memory never waits, so the loop does it itself.
        """
        answer = self.responder.answer_now(req, self.stopping, conn.client)
        if answer is None:
            self._dispatch(conn, req)
            return
        conn.fresh = False
        self._send(conn, answer, now)

    @staticmethod
    def _pending(conn: Conn) -> bytes:
        """Return what the TLS layer decrypted and holds beyond the last recv (the selector cannot see it)."""
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        more = b""
        while sock.pending():
            try:
                more += sock.recv(RECV)
            except WOULD_BLOCK:
                break
        return more

    def _dispatch(self, conn: Conn, req: Request) -> None:
        self._waiting.pop(conn, None)
        self._unwatch(conn)
        conn.state = BUSY
        conn.fresh = False
        self.pool.submit(lambda: self._serve(conn, req))

    # Answering (in handler threads).

    def _serve(self, conn: Conn, req: Request | None) -> None:
        """Answer req, then every complete pipelined request after it, and hand conn back.

        With req None, go on with the streamed answer under way: read its next piece first.
        """
        if req is not None:
            conn.load(self.responder.answer(req, self.stopping, conn.client))
        else:
            try:
                conn.refill()
            except (OSError, ShortBody) as exc:
                self._broken(conn, exc)
                self._hand_back(conn, CLOSED)
                return
        while True:
            result = self._push_here(conn)
            if result != DONE:
                self._hand_back(conn, WRITE if result == BLOCKED else CLOSED)
                return
            answer = self._complete(conn, time.monotonic())
            if not answer.keep or self.stopping:
                self._hand_back(conn, LINGER if answer.linger else CLOSED)
                return
            nxt = self._pipelined(conn)
            if nxt is None:
                self._hand_back(conn, IDLE)
                return
            conn.load(self.responder.reject(nxt) if isinstance(nxt, HeadError)
                      else self.responder.answer(nxt, self.stopping, conn.client))

    def _push_here(self, conn: Conn) -> int:
        """Send in this (handler) thread until done or blocked; CLOSED when the connection failed."""
        while True:
            try:
                result = conn.push()
                if result != REFILL:
                    return result
                conn.refill()
            except ShortBody as exc:
                self._broken(conn, exc)
                return CLOSED
            except OSError as exc:
                self._gone(conn, exc, time.monotonic())
                return CLOSED

    def _pipelined(self, conn: Conn) -> Request | HeadError | None:
        """Return the next complete request already received, its HeadError, or None."""
        if not conn.buf:
            return None
        try:
            end = find_head_end(conn.buf, 0)
            if end < 0:
                return None
            req = parse_head(conn.buf[:end])
        except HeadError as err:
            conn.buf = b""
            return err
        conn.buf = conn.buf[end:]
        return req

    def _complete(self, conn: Conn, now: float) -> Answer:
        """Count and log the answer just sent in full, and release its blob."""
        answer = conn.answer
        assert answer is not None
        self.responder.record(answer, conn.client, len(answer.data) - answer.head_len + answer.size, now)
        conn.release()
        conn.answer = None
        return answer

    def _hand_back(self, conn: Conn, after: int) -> None:
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

    # Back in the loop: writing, keep-alive, lingering close.

    def _resume(self, conn: Conn, now: float) -> None:
        after = conn.after
        if after == CLOSED:
            self._close(conn)
        elif after == LINGER:
            self._linger(conn, now)
        elif after == WRITE:
            conn.state = WRITE
            conn.deadline = now + self.config.client_timeout
            self._watch(conn, _WRITE)
        else:
            self._next(conn, now)

    def _send(self, conn: Conn, answer: Answer, now: float) -> None:
        """Send an answer made in the loop (a refused head, a timeout) and carry on from there."""
        self._waiting.pop(conn, None)
        conn.load(answer)
        conn.state = WRITE
        conn.deadline = now + self.config.client_timeout
        self._write(conn, now)

    def _write(self, conn: Conn, now: float) -> None:
        if conn.state != WRITE:  # TLS: a handshake or a read that waited to send
            self._read(conn, now)
            return
        before = conn.pushed
        try:
            result = conn.push()
        except ShortBody as exc:
            self._broken(conn, exc)
            self._close(conn)
            return
        except OSError as exc:
            self._gone(conn, exc, now)
            self._close(conn)
            return
        if result == BLOCKED:
            if conn.pushed != before:
                conn.deadline = now + self.config.client_timeout
            self._watch(conn, _WRITE)
        elif result == REFILL:
            self._unwatch(conn)
            conn.state = BUSY
            self.pool.submit(lambda: self._serve(conn, None))
        else:
            answer = self._complete(conn, now)
            if not answer.keep or self.stopping:
                if answer.linger:
                    self._linger(conn, now)
                else:
                    self._close(conn)
            else:
                self._next(conn, now)

    def _next(self, conn: Conn, now: float) -> None:
        """Wait for the connection's next request (it may be received already)."""
        if conn.buf:
            nxt = self._pipelined(conn)
            if isinstance(nxt, HeadError):
                self._send(conn, self.responder.reject(nxt), now)
                return
            if nxt is not None:
                self._dispatch(conn, nxt)
                return
            conn.state, conn.searched = HEAD, len(conn.buf)
            conn.deadline = now + self.config.header_timeout
        elif self.stopping:
            self._close(conn)
            return
        else:
            conn.state = IDLE
            conn.deadline = now + self.config.client_timeout
        self._waiting[conn] = None
        self._watch(conn, _READ)

    def _linger(self, conn: Conn, now: float) -> None:
        """Shut the write side and drain what the client still sends, so it reads the answer
        before the close (closing with unread bytes would reset the connection and lose it)."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.state = LINGER
        conn.deadline = now + LINGER_TIME
        self._watch(conn, _READ)

    def _linger_read(self, conn: Conn) -> None:
        try:
            if conn.sock.recv(RECV):
                return
        except WOULD_BLOCK:
            return
        except OSError:
            pass
        self._close(conn)

    # Deadlines, failures, closing.

    def _sweep(self, now: float) -> None:
        if self._accept_paused and now >= self._accept_paused and not self.stopping:
            self._accept_paused = 0.0
            self._sel.register(self.listener, _READ, _LISTENER)
        for conn in [c for c in self._conns if c.state != BUSY and c.deadline <= now]:
            state = conn.state
            if state == HEAD:
                log.info("client %s: request head not complete within %gs; closing", conn.client,
                         self.config.header_timeout)
                conn.buf = b""
                self._send(conn, self.responder.timeout(), now)
            elif state == HANDSHAKE:
                log.info("client %s: TLS handshake not complete within %gs; closing", conn.client,
                         self.config.header_timeout)
                self._close(conn)
            elif state == WRITE and conn.answer is not None and conn.answer.status != 408:
                answer = conn.answer
                log.info("client %s: took nothing of %s %s for %gs; closing", conn.client, answer.method,
                         answer.target, self.config.client_timeout)
                self._record_partial(conn, now)
                self._close(conn)
            else:
                self._close(conn)

    def _gone(self, conn: Conn, exc: OSError, now: float) -> None:
        """Log, in one line, a client that went away (reset, broken pipe) and count what it got."""
        answer = conn.answer
        if answer is None:
            if conn.buf or conn.state == HEAD:
                log.info("client %s went away while sending a request: %s", conn.client, exc.strerror or exc)
            return
        log.info("client %s went away during %s %s after %d of %d bytes: %s", conn.client, answer.method,
                 answer.target, conn.body_sent(), len(answer.data) - answer.head_len + answer.size,
                 exc.strerror or exc)
        self._record_partial(conn, now)

    def _broken(self, conn: Conn, exc: Exception) -> None:
        """Log an answer cut short by storage: the client sees a short body, never a wrong one."""
        answer = conn.answer
        what = f"{answer.method} {answer.target}" if answer else "an answer"
        log.error("cannot finish %s for %s: %s; closing the connection", what, conn.client, exc)
        self._record_partial(conn, time.monotonic())

    def _record_partial(self, conn: Conn, now: float) -> None:
        answer = conn.answer
        if answer is not None:
            self.responder.record(answer, conn.client, conn.body_sent(), now)
            conn.release()
            conn.answer = None

    def _watch(self, conn: Conn, events: int) -> None:
        if conn.events == events:
            return
        if conn.events:
            self._sel.modify(conn.sock, events, conn)
        else:
            self._sel.register(conn.sock, events, conn)
        conn.events = events

    def _unwatch(self, conn: Conn) -> None:
        if conn.events:
            self._sel.unregister(conn.sock)
            conn.events = 0

    def _close(self, conn: Conn) -> None:
        if conn.state == CLOSED:
            return
        try:
            self._unwatch(conn)
        except (KeyError, ValueError, OSError):
            conn.events = 0
        self._conns.discard(conn)
        self._waiting.pop(conn, None)
        conn.close()

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
        for conn in [c for c in self._conns if c.state == IDLE and not c.fresh]:
            self._close(conn)
        busy = sum(1 for c in self._conns if c.state in (BUSY, WRITE))
        log.info("stopped accepting connections; waiting up to %gs for %d request(s) in flight",
                 self.config.shutdown_timeout, busy)

    def _finish(self) -> None:
        with self._lock:
            self._finished = True
            back, self._returned = self._returned, []
        left = [c for c in self._conns if c.state in (BUSY, WRITE)]
        self._drained = not left
        for conn in back:
            self._close(conn)
        for conn in list(self._conns):
            if conn.state == BUSY:  # a handler thread has it: make its next send fail, it closes it
                try:  # the bare socket's shutdown: a TLS socket's would drop its state under the thread
                    socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)
                except OSError:
                    pass
                self._conns.discard(conn)
            else:
                self._close(conn)
        self.pool.close()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()
        self.access.close()
        self._done.set()

    def stop(self) -> bool:
        """Stop accepting, wait up to shutdown_timeout for the requests in flight and the answers
        being sent, close the rest, then stop the background jobs in order. Returns True when
        everything finished in time. Call it from any thread but the serving one."""
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
            if self._thread is not None:
                self._thread.join(timeout=5)
            for job in self.background:
                job.stop()
            if self._drained:
                log.info("all requests finished; shutdown complete")
            else:
                log.warning("shutdown timeout: requests still running were abandoned")
        return self._drained
