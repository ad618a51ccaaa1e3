"""The server loop: keep-alive and pipelining, refused heads, the header deadline, lingering close,
the connection cap, slow readers, client resets, and the handler pool."""

from __future__ import annotations

import functools
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from goproxy.pool import HandlerPool
from goproxy.server import ProxyServer
from tests.support.helpers import get, wait_for
from tests.support.upstream import Upstream, generate

MOD = "/example.com/m/@v/v1.0.0.mod"


@pytest.fixture
def served(make_proxy: Callable[..., ProxyServer], upstream: Upstream) -> ProxyServer:
    upstream.add(generate("example.com/m", "v1.0.0", size=300_000))
    return make_proxy([upstream.url], header_timeout=1.0, client_timeout=2.0)


def read_all(s: socket.socket, timeout: float = 10) -> bytes:
    s.settimeout(timeout)
    chunks = []
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def connect(server: ProxyServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def test_pipelined_requests_are_answered_in_order_on_one_connection(served: ProxyServer) -> None:
    with connect(served) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"HEAD " + MOD.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET " + MOD.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = read_all(s)
    heads = re.findall(rb"HTTP/1\.1 \d{3} [A-Za-z ]+\r\n", data)
    assert heads == [b"HTTP/1.1 200 OK\r\n"] * 3 + [b"HTTP/1.1 404 Not Found\r\n"]
    assert data.count(b"module example.com/m") == 1  # HEAD sent no body
    assert data.endswith(b"not found: /nope\n")


@pytest.mark.parametrize("request_bytes,status", [
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", b"400"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", b"400"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"400"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", b"501"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", b"400"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n", b"400"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", b"400"),
    (b"GET / HTTP/1.1\nHost: x\n\n", b"400"),
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", b"505"),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: " + b"y" * 40000 + b"\r\n\r\n", b"431"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"400"),
    (b"GET / HTTP/1.1\r\n\r\n", b"400"),
], ids=["cl-on-get", "double-cl", "te-on-get", "te-gzip", "cl-and-te", "obs-fold", "bare-cr", "bare-lf",
        "http2", "long-line", "huge-header", "two-hosts", "no-host"])
def test_smuggling_shapes_get_their_status_and_a_closed_connection(served: ProxyServer, request_bytes: bytes,
                                                                   status: bytes) -> None:
    with connect(served) as s:
        s.sendall(request_bytes + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data = read_all(s)
    assert data.split(b" ", 2)[1] == status, data[:200]
    assert b"Connection: close" in data
    assert data.count(b"HTTP/1.1 ") == 1  # nothing after the refused request was taken as a request


def test_answer_to_a_request_with_an_unread_body_is_not_lost(served: ProxyServer) -> None:
    body = b"x" * 200_000  # more than the socket buffers: closing without draining would reset
    with connect(served) as s:
        s.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n")
        s.sendall(body)
        data = read_all(s)
    assert data.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert b"Allow: GET, HEAD\r\n" in data


def test_http_1_0_keep_alive_is_answered_with_keep_alive(served: ProxyServer) -> None:
    with connect(served) as s:
        s.sendall(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        s.settimeout(10)
        first = s.recv(65536)
        assert b"Connection: keep-alive\r\n" in first
        s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        assert read_all(s).startswith(b"HTTP/1.1 200 OK")


def test_a_head_sent_one_byte_at_a_time_is_cut_at_the_header_timeout(served: ProxyServer) -> None:
    line = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    with connect(served) as s:
        started = time.monotonic()
        s.settimeout(0.2)
        closed_after = None
        for byte in line:
            try:
                s.sendall(bytes([byte]))
                data = s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                data = b""
            closed_after = time.monotonic() - started
            break
    assert closed_after is not None
    assert 1.0 <= closed_after < 2.0  # the whole head, not per read
    assert data.startswith(b"HTTP/1.1 408 Request Timeout") or data == b""


def test_a_head_that_stops_arriving_is_answered_408_then_closed(served: ProxyServer) -> None:
    with connect(served) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and then nothing more
        s.settimeout(5)
        data = b""
        while chunk := s.recv(65536):  # to the close; a server that never closes times the test out
            data += chunk
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"\r\nConnection: close\r\n" in data


def test_idle_keep_alive_connection_is_closed_after_the_client_timeout(served: ProxyServer) -> None:
    with connect(served) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(10)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert read_all(s) == b""
        assert 1.5 <= time.monotonic() - started < 3.5


def test_at_the_connection_cap_the_longest_idle_connection_makes_room(make_proxy: Callable[..., ProxyServer],
                                                                      upstream: Upstream) -> None:
    proxy = make_proxy([upstream.url], max_connections=20)
    idle = [connect(proxy) for _ in range(20)]
    try:
        wait_for(lambda: len(proxy.connections.live) == 20)
        for _ in range(5):
            assert get(proxy, "/health")[0] == 200  # never locked out
        idle[0].settimeout(5)
        assert idle[0].recv(10) == b""  # the oldest waiter was closed for them
    finally:
        for s in idle:
            s.close()


def test_a_slow_reader_does_not_hold_a_handler_thread(make_proxy: Callable[..., ProxyServer],
                                                      upstream: Upstream) -> None:
    m = upstream.add(generate("example.com/big", "v1.0.0", size=3_000_000))
    proxy = make_proxy([upstream.url], handler_threads=1)
    path = "/example.com/big/@v/v1.0.0.zip"
    assert get(proxy, path)[2] == m.zip
    readers = []
    for _ in range(4):  # each takes a few bytes of a 3 MB zip, then stops reading
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        s.connect(("127.0.0.1", proxy.port))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        s.recv(100)
        readers.append(s)
    try:
        started = time.monotonic()
        assert get(proxy, MOD.replace("/m/", "/big/"))[0] == 200  # the one handler thread is free
        assert time.monotonic() - started < 1.0
    finally:
        for s in readers:
            s.close()


def test_a_client_reset_is_one_info_line(make_proxy: Callable[..., ProxyServer], upstream: Upstream,
                                         caplog: pytest.LogCaptureFixture) -> None:
    upstream.add(generate("example.com/r", "v1.0.0", size=8_000_000))  # more than socket buffers hold
    served = make_proxy([upstream.url])
    assert get(served, "/example.com/r/@v/v1.0.0.zip")[0] == 200
    caplog.set_level(logging.INFO)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", served.port))
    s.sendall(b"GET /example.com/r/@v/v1.0.0.zip HTTP/1.1\r\nHost: x\r\n\r\n")
    s.recv(100)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()  # a reset, with most of the answer unsent
    wait_for(lambda: any("went away" in r.getMessage() for r in caplog.records))
    gone = [r for r in caplog.records if "went away" in r.getMessage()]
    assert len(gone) == 1
    assert gone[0].levelno == logging.INFO
    assert gone[0].exc_info is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_pool_keeps_few_threads_runnable_and_wakes_more_for_stuck_tasks() -> None:
    now = [0.0]
    pool = HandlerPool(4, runnable=1, stuck=0.01, clock=lambda: now[0])
    release = threading.Event()
    started: list[int] = []
    lock = threading.Lock()

    def blocked(i: int) -> None:
        with lock:
            started.append(i)
        release.wait(10)

    for i in range(3):
        pool.submit(functools.partial(blocked, i))
    wait_for(lambda: started == [0])
    assert pool.threads == 1  # one runnable thread: the others wait their turn
    now[0] += 0.02  # the first task has now run for longer than stuck
    pool.check()
    wait_for(lambda: sorted(started) == [0, 1])
    now[0] += 0.02
    pool.check()
    wait_for(lambda: sorted(started) == [0, 1, 2])
    assert pool.threads == 3
    release.set()
    pool.close()


def test_stop_drains_then_closes_idle_connections(served: ProxyServer, tmp_path: Path) -> None:
    idle = connect(served)
    idle.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    idle.settimeout(5)
    assert idle.recv(65536).startswith(b"HTTP/1.1 200")
    assert served.stop() is True
    assert idle.recv(10) == b""
    idle.close()
