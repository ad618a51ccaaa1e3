"""The HTTP/1.1 exchange on each connection of a server loop, from the TLS handshake to the close.

A request head is answered in the loop or in a handler thread and sent there, then comes
keep-alive or a lingering close. The loop (server.ProxyServer) owns the listening socket, the
deadlines and stopping; it hands each connection's events here.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import time
from typing import Protocol

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
from .pool import HandlerPool
from .respond import Answer, Responder

# The connections' steps log as the server they are part of.
log = logging.getLogger("goproxy.server")

# Bytes read from a client at a time.
RECV = 64 << 10
# How long a closing connection is drained of what the client still sends (nginx's lingering close).
LINGER_TIME = 2.0
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
_PLAIN_ON_TLS = b"this port speaks https: use https:// in GOPROXY\n"
_PLAIN_ON_TLS_REPLY = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                       b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_PLAIN_ON_TLS), _PLAIN_ON_TLS))


class Loop(Protocol):
    """The loop that owns the connections, as their exchanges see it."""

    stopping: bool

    def hand_back(self, conn: Conn, after: int) -> None:
        """Give conn back to the loop, to continue in state after (IDLE, WRITE, LINGER, CLOSED)."""


class Connections:
    """The connections of one server loop, and the steps of the HTTP/1.1 exchange on each.

    The loop calls read() and write() on a connection's events, resume() when a handler thread
    hands one back, expire() when its deadline passes. A connection is registered in sel (the
    loop's selector) only while the loop owns it; live holds every open connection, waiting
    those waiting for a request head, oldest first (the ones the loop may close for a new one).
    """

    def __init__(self, config: Config, responder: Responder, pool: HandlerPool, sel: selectors.BaseSelector,
                 loop: Loop) -> None:
        self.config = config
        self.responder = responder
        self.pool = pool
        self.sel = sel
        self.loop = loop
        self.live: set[Conn] = set()
        self.waiting: dict[Conn, None] = {}  # connections waiting for a request head, oldest first

    # The TLS handshake.

    def _handshake(self, conn: Conn, now: float) -> None:
        """Drive conn's TLS handshake a step; once done, wait for (or read) the first request."""
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self.watch(conn, _READ)
            return
        except ssl.SSLWantWriteError:
            self.watch(conn, _WRITE)
            return
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError) as exc:
            # A connect-and-close (a port scan, a TCP health check): not worth a line each.
            log.debug("client %s went away during the TLS handshake: %s", conn.client, exc)
            self.close(conn)
            return
        except ssl.SSLError as exc:
            self._tls_failed(conn, exc, now)
            return
        except OSError as exc:
            log.debug("client %s went away during the TLS handshake: %s", conn.client, exc.strerror or exc)
            self.close(conn)
            return
        conn.state = IDLE
        self.watch(conn, _READ)
        self.read(conn, now)  # the request may have arrived with the handshake's last flight

    def _tls_failed(self, conn: Conn, exc: ssl.SSLError, now: float) -> None:
        """Log a refused handshake in one line and close; a plain HTTP request gets a plain 400 first."""
        reason = getattr(exc, "reason", None) or exc.__class__.__name__
        if reason == "HTTP_REQUEST":
            log.info("client %s sent plain HTTP to the TLS port; answering 400", conn.client)
            try:
                socket.socket.send(conn.sock, _PLAIN_ON_TLS_REPLY)  # the bare socket: no TLS record
            except OSError:
                self.close(conn)
                return
            self.waiting.pop(conn, None)
            self._linger(conn, now)
            return
        log.info("client %s: TLS handshake failed: %s", conn.client, str(reason).replace("_", " ").lower())
        self.close(conn)

    # Reading request heads.

    def read(self, conn: Conn, now: float) -> None:
        """Take what conn's client sent: more of a request head, a handshake step, or bytes to discard.

        A complete head is answered in the loop or handed to the pool; a bad one gets its error
        answer; a client that closed or failed has its connection closed.
        """
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
                data += conn.tls_pending(RECV)
        except ssl.SSLWantWriteError:
            self.watch(conn, _WRITE)  # TLS needs to send first: read again once it can
            return
        except WOULD_BLOCK:
            return
        except OSError as exc:
            self._gone(conn, exc, now)
            self.close(conn)
            return
        if not data:
            self.close(conn)
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
                self.watch(conn, _READ)
                return
            req = parse_head(buf[:end])
        except HeadError as err:
            conn.buf = b""
            self.send(conn, self.responder.reject(err), now)
            return
        conn.buf, conn.searched = buf[end:], 0
        self._begin(conn, req, now)

    def _begin(self, conn: Conn, req: Request, now: float) -> None:
        """Answer req in this loop when its answer is at hand (a hit held in memory), else in the pool.

        A handler thread costs two thread switches per request (about 60 us here, a third of a
        small hit), and answering from memory never waits, so the loop does it itself.
        """
        answer = self.responder.answer_now(req, self.loop.stopping, conn.client)
        if answer is None:
            self._dispatch(conn, req)
            return
        conn.fresh = False
        self.send(conn, answer, now)

    def _dispatch(self, conn: Conn, req: Request) -> None:
        self.waiting.pop(conn, None)
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
            conn.load(self.responder.answer(req, self.loop.stopping, conn.client))
        else:
            try:
                conn.refill()
            except (OSError, ShortBody) as exc:
                self._broken(conn, exc)
                self.loop.hand_back(conn, CLOSED)
                return
        while True:
            result = self._push_here(conn)
            if result != DONE:
                self.loop.hand_back(conn, WRITE if result == BLOCKED else CLOSED)
                return
            answer = self._complete(conn, time.monotonic())
            if not answer.keep or self.loop.stopping:
                self.loop.hand_back(conn, LINGER if answer.linger else CLOSED)
                return
            nxt = conn.next_request()
            if nxt is None:
                self.loop.hand_back(conn, IDLE)
                return
            conn.load(self.responder.reject(nxt) if isinstance(nxt, HeadError)
                      else self.responder.answer(nxt, self.loop.stopping, conn.client))

    def _push_here(self, conn: Conn) -> int:
        """Send in this (handler) thread until DONE or BLOCKED, and return which; CLOSED when the connection failed."""
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

    def _complete(self, conn: Conn, now: float) -> Answer:
        """Count and log the answer just sent in full, release its blob, and return it."""
        answer = conn.answer
        assert answer is not None
        self.responder.record(answer, conn.client, len(answer.data) - answer.head_len + answer.size, now)
        conn.release()
        conn.answer = None
        return answer

    # Back in the loop: writing, keep-alive, lingering close.

    def resume(self, conn: Conn, now: float) -> None:
        """Continue conn, handed back by a handler thread, in its conn.after state."""
        after = conn.after
        if after == CLOSED:
            self.close(conn)
        elif after == LINGER:
            self._linger(conn, now)
        elif after == WRITE:
            conn.state = WRITE
            conn.deadline = now + self.config.client_timeout
            self.watch(conn, _WRITE)
        else:
            self._next(conn, now)

    def send(self, conn: Conn, answer: Answer, now: float) -> None:
        """Send an answer made in the loop (a refused head, a timeout) and carry on from there."""
        self.waiting.pop(conn, None)
        conn.load(answer)
        conn.state = WRITE
        conn.deadline = now + self.config.client_timeout
        self.write(conn, now)

    def write(self, conn: Conn, now: float) -> None:
        """Send more of conn's answer now that its socket takes bytes.

        A TLS connection not sending an answer (its handshake or a read waited to send) reads
        instead. A send that made progress renews the -client-timeout deadline. Once the answer
        is out, wait for the next request, or linger or close (no keep-alive, or stopping); a
        streamed body's next piece is read in the pool.
        """
        if conn.state != WRITE:  # TLS: a handshake or a read that waited to send
            self.read(conn, now)
            return
        before = conn.pushed
        try:
            result = conn.push()
        except ShortBody as exc:
            self._broken(conn, exc)
            self.close(conn)
            return
        except OSError as exc:
            self._gone(conn, exc, now)
            self.close(conn)
            return
        if result == BLOCKED:
            if conn.pushed != before:
                conn.deadline = now + self.config.client_timeout
            self.watch(conn, _WRITE)
        elif result == REFILL:
            self._unwatch(conn)
            conn.state = BUSY
            self.pool.submit(lambda: self._serve(conn, None))
        else:
            answer = self._complete(conn, now)
            if not answer.keep or self.loop.stopping:
                if answer.linger:
                    self._linger(conn, now)
                else:
                    self.close(conn)
            else:
                self._next(conn, now)

    def _next(self, conn: Conn, now: float) -> None:
        """Wait for the connection's next request (it may be received already)."""
        if conn.buf:
            nxt = conn.next_request()
            if isinstance(nxt, HeadError):
                self.send(conn, self.responder.reject(nxt), now)
                return
            if nxt is not None:
                self._dispatch(conn, nxt)
                return
            conn.state, conn.searched = HEAD, len(conn.buf)
            conn.deadline = now + self.config.header_timeout
        elif self.loop.stopping:
            self.close(conn)
            return
        else:
            conn.state = IDLE
            conn.deadline = now + self.config.client_timeout
        self.waiting[conn] = None
        self.watch(conn, _READ)

    def _linger(self, conn: Conn, now: float) -> None:
        """Close gently: shut the write side, then drain what the client sends for LINGER_TIME.

        So the client reads the answer before the close (closing with unread bytes would reset
        the connection and lose it).
        """
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close(conn)
            return
        conn.state = LINGER
        conn.deadline = now + LINGER_TIME
        self.watch(conn, _READ)

    def _linger_read(self, conn: Conn) -> None:
        try:
            if conn.sock.recv(RECV):
                return
        except WOULD_BLOCK:
            return
        except OSError:
            pass
        self.close(conn)

    # Failures, watching, closing.

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
        self.record_partial(conn, now)

    def _broken(self, conn: Conn, exc: Exception) -> None:
        """Log an answer cut short by storage: the client sees a short body, never a wrong one."""
        answer = conn.answer
        what = f"{answer.method} {answer.target}" if answer else "an answer"
        log.error("cannot finish %s for %s: %s; closing the connection", what, conn.client, exc)
        self.record_partial(conn, time.monotonic())

    def record_partial(self, conn: Conn, now: float) -> None:
        """Count and log the body bytes of conn's answer sent so far, and release it (no answer: nothing)."""
        answer = conn.answer
        if answer is not None:
            self.responder.record(answer, conn.client, conn.body_sent(), now)
            conn.release()
            conn.answer = None

    def watch(self, conn: Conn, events: int) -> None:
        """Have the selector report events (EVENT_READ or EVENT_WRITE) for conn, registering it if need be."""
        if conn.events == events:
            return
        if conn.events:
            self.sel.modify(conn.sock, events, conn)
        else:
            self.sel.register(conn.sock, events, conn)
        conn.events = events

    def _unwatch(self, conn: Conn) -> None:
        if conn.events:
            self.sel.unregister(conn.sock)
            conn.events = 0

    def close(self, conn: Conn) -> None:
        """Close conn and forget it; a closed connection is left as it is."""
        if conn.state == CLOSED:
            return
        try:
            self._unwatch(conn)
        except (KeyError, ValueError, OSError):
            conn.events = 0
        self.live.discard(conn)
        self.waiting.pop(conn, None)
        conn.close()
