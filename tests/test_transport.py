"""Transport: pooled keep-alive connections, timeouts, short bodies, redirects and credentials."""

from __future__ import annotations

import socket

import pytest

from goproxy.errors import TransientError
from goproxy.net.dial import mask_url
from goproxy.net.http import Timeouts, Transport
from tests.support.rawserver import RawServer, Script, response


def serve(servers: list[RawServer], script: Script) -> RawServer:
    s = RawServer(script)
    servers.append(s)
    return s


def test_keep_alive_connection_is_reused(servers: list[RawServer]) -> None:
    s = serve(servers, lambda c, req: c.sendall(response(200, b"hello")))
    t = Transport()
    for _ in range(5):
        r = t.get(s.url + "/x")
        assert r.read_all() == b"hello"
    assert s.connections == 1
    assert t.idle_connections() == 1


def test_idle_connections_expire(servers: list[RawServer]) -> None:
    now = [0.0]
    s = serve(servers, lambda c, req: c.sendall(response(200, b"x")))
    t = Transport(idle_timeout=90, clock=lambda: now[0])
    t.get(s.url + "/").read_all()
    now[0] += 91
    t.get(s.url + "/").read_all()
    assert s.connections == 2


def test_pool_caps_idle_per_host() -> None:
    t = Transport(max_idle_per_host=2, max_idle_total=3)
    key = ("http", "127.0.0.1", 1)
    for _ in range(5):
        conn, _ = t._take(key)
        t._put(key, conn)  # the same conn each time: it is reused, count stays 1
    conns = [t._take(key)[0] for _ in range(4)]
    for c in conns:
        t._put(key, c)
    assert t.idle_connections() == 2


def test_server_closing_idle_connection_is_retried_transparently(servers: list[RawServer]) -> None:
    def once_then_close(c: socket.socket, req: bytes) -> None:
        c.sendall(response(200, b"ok"))
        c.close()

    s = serve(servers, once_then_close)
    t = Transport()
    assert t.get(s.url + "/a").read_all() == b"ok"
    assert t.get(s.url + "/b").read_all() == b"ok"
    assert s.connections == 2


def test_short_body_is_a_transient_error(servers: list[RawServer]) -> None:
    def cut(c: socket.socket, req: bytes) -> None:
        c.sendall(response(200, b"partial", length=100))
        c.close()

    s = serve(servers, cut)
    with pytest.raises(TransientError, match="cut short|reading body"):
        Transport().get(s.url + "/").read_all()


def test_header_timeout(servers: list[RawServer]) -> None:
    s = serve(servers, lambda c, req: s.release.wait(30))
    t = Transport(timeouts=Timeouts(read=0.2))
    with pytest.raises(TransientError, match="timed out"):
        t.get(s.url + "/")


def test_body_stall_times_out(servers: list[RawServer]) -> None:
    def stall(c: socket.socket, req: bytes) -> None:
        c.sendall(response(200, b"abc", length=10))
        s.release.wait(30)

    s = serve(servers, stall)
    t = Transport(timeouts=Timeouts(read=0.2))
    with pytest.raises(TransientError):
        t.get(s.url + "/").read_all()


def test_connect_refused_is_transient() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(TransientError):
        Transport().get(f"http://127.0.0.1:{port}/")


def test_redirect_to_other_host_drops_auth(servers: list[RawServer]) -> None:
    target = serve(servers, lambda c, req: c.sendall(response(200, b"final")))
    origin = serve(servers, lambda c, req: c.sendall(
        response(302, b"", {"Location": f"http://localhost:{target.port}/there"})))
    t = Transport()
    r = t.get(origin.url + "/here", auth={"Authorization": "Bearer s3cret"})
    assert r.read_all() == b"final"
    assert b"s3cret" in origin.requests[0]
    assert b"s3cret" not in target.requests[0]
    assert b"GET /there" in target.requests[0]


def test_redirect_to_same_host_keeps_auth(servers: list[RawServer]) -> None:
    def script(c: socket.socket, req: bytes) -> None:
        if req.startswith(b"GET /here"):
            c.sendall(response(307, b"", {"Location": "/there"}))
        else:
            c.sendall(response(200, b"ok"))

    s = serve(servers, script)
    assert Transport().get(s.url + "/here", auth={"Authorization": "Basic x"}).read_all() == b"ok"
    assert all(b"Basic x" in r for r in s.requests)


def test_mask_url_hides_password() -> None:
    assert mask_url("http://user:pw@host:8080/p") == "http://user:***@host:8080/p"
    assert mask_url("http://host/p") == "http://host/p"
