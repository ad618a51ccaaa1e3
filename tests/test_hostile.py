"""Hostile requests: each gets a 4xx or a closed connection, touches no file and reaches no upstream."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from goproxy.errors import BadRequest, NotFound
from goproxy.modpath import escape_path, escape_version, unescape_path, unescape_version
from goproxy.request import parse_request
from goproxy.server import ProxyServer
from tests.support.helpers import get
from tests.support.upstream import Upstream, generate

LONG = "a" * 8192

HOSTILE: list[bytes] = [
    # traversal, raw
    b"GET /../../../../etc/passwd HTTP/1.1",
    b"GET /example.com/../../etc/@v/list HTTP/1.1",
    b"GET /example.com/m/@v/../../../../x.zip HTTP/1.1",
    b"GET /./example.com/m/@v/list HTTP/1.1",
    b"GET /example.com/./m/@v/list HTTP/1.1",
    b"GET //etc/passwd HTTP/1.1",
    b"GET /sumdb/../../etc/passwd HTTP/1.1",
    b"GET /sumdb/sum.golang.org/../../../x/latest HTTP/1.1",
    b"GET /sumdb/sum.golang.org/lookup/../../x@v1.0.0 HTTP/1.1",
    b"GET /example.com\\..\\..\\x/@v/list HTTP/1.1",
    b"GET /example.com/m/@v/v1.0.0.zip/../../../x HTTP/1.1",
    # traversal, percent-encoded and double-encoded
    b"GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1",
    b"GET /%2E%2E%2F%2E%2E%2Fetc/@v/list HTTP/1.1",
    b"GET /example.com/m/@v/%2e%2e%2f%2e%2e%2fx.zip HTTP/1.1",
    b"GET /example.com/m/@v/..%2f..%2fx.zip HTTP/1.1",
    b"GET /example.com/m/@v/..%252f..%252fx.zip HTTP/1.1",
    b"GET /%252e%252e/%252e%252e/x/@v/list HTTP/1.1",
    b"GET /example.com%2f..%2f..%2fx/@v/list HTTP/1.1",
    b"GET /example.com/m/@v/%c0%ae%c0%ae%c0%afx.zip HTTP/1.1",
    b"GET /example.com/m%5c..%5c..%5cx/@v/list HTTP/1.1",
    b"GET /example.com/m/@v/v1.0.0.zip%00.info HTTP/1.1",
    # NUL and control bytes
    b"GET /example.com/m%00/@v/list HTTP/1.1",
    b"GET /example.com/m\x01/@v/list HTTP/1.1",
    b"GET /example.com/m/@v/v1.0.0\x7f.zip HTTP/1.1",
    b"GET /example.com/m%0d%0aX-Injected:%201/@v/list HTTP/1.1",
    b"GET /example.com/m%09/@v/list HTTP/1.1",
    b"GET /exa\x00mple.com/m/@v/list HTTP/1.1",
    # unescaped upper case and bad escapes
    b"GET /github.com/Azure/sdk/@v/list HTTP/1.1",
    b"GET /github.com/!Azure/sdk/@v/list HTTP/1.1",
    b"GET /github.com/azure!/@v/list HTTP/1.1",
    b"GET /github.com/!!azure/@v/list HTTP/1.1",
    b"GET /github.com/m/@v/V1.0.0.mod HTTP/1.1",
    b"GET /github.com/m/@v/v1.0.0-!R!C.mod HTTP/1.1",
    # bogus paths and versions
    b"GET /nodot/m/@v/list HTTP/1.1",
    b"GET /-leading.com/m/@v/list HTTP/1.1",
    b"GET /example.com/m/@v/1.0.0.zip HTTP/1.1",
    b"GET /example.com/m/@v/v1.0.zip HTTP/1.1",
    b"GET /example.com/m/@v/v01.0.0.mod HTTP/1.1",
    b"GET /example.com/m/@v/v1.0.0-01.mod HTTP/1.1",
    b"GET /example.com/m/@v/v1.0.0+build.zip HTTP/1.1",
    b"GET /example.com/m/@v/v1.0.0+incompatible.zip HTTP/1.1",
    b"GET /example.com/m/v2/@v/v1.0.0.zip HTTP/1.1",
    b"GET /example.com/m/@v/.zip HTTP/1.1",
    b"GET /example.com/m/@v/v1.0.0.exe HTTP/1.1",
    b"GET /example.com/m/@v/-x.info HTTP/1.1",
    b"GET /example.com/m/@v/a..b.info HTTP/1.1",
    b"GET /example.com/CON/@v/list HTTP/1.1",
    b"GET /example.com/m/@latest/x HTTP/1.1",
    b"GET /sumdb/sum.golang.org/tile/99/0/000 HTTP/1.1",
    b"GET /sumdb/sum.golang.org/tile/8/0/x1/000 HTTP/1.1",
    b"GET /sumdb/sum.golang.org/lookup/example.com/m@v1 HTTP/1.1",
    b"GET /sumdb/sum.golang.org/other HTTP/1.1",
    # 8 KB paths
    b"GET /example.com/" + LONG.encode() + b"/@v/list HTTP/1.1",
    b"GET /example.com/m/@v/v1.0.0-" + LONG.encode() + b".info HTTP/1.1",
    b"GET /" + b"a/" * 4096 + b"@v/list HTTP/1.1",
    # malformed request lines
    b"GARBAGE",
    b"GET",
    b"GET /example.com/m/@v/list",
    b"GET /example.com/m/@v/list HTTP/9.9",
    b"GET /example.com/m/@v/list HTTP/1.1 extra",
    b"GET  /example.com/m/@v/list HTTP/1.1",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on the plain port
    b"GET http://evil.example/x/@v/list HTTP/1.1",
    b"GET example.com/m/@v/list HTTP/1.1",
    b"GET * HTTP/1.1",
    b"POST /example.com/m/@v/list HTTP/1.1",
    b"DELETE /example.com/m/@v/v1.0.0.zip HTTP/1.1",
    b"PUT /example.com/m/@v/v1.0.0.zip HTTP/1.1",
    # request smuggling shapes: a body on GET, two lengths, a transfer coding beside a length, folding
    b"GET /example.com/m/@v/list HTTP/1.1\r\nContent-Length: 5",
    b"GET /example.com/m/@v/list HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5",
    b"GET /example.com/m/@v/list HTTP/1.1\r\nTransfer-Encoding: chunked",
    b"POST /example.com/m/@v/list HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked",
    b"GET /example.com/m/@v/list HTTP/1.1\r\nX-A: 1\r\n X-B: 2",
    b"GET /example.com/m/@v/list HTTP/1.1\r\nX-A: 1\rX-B: 2",
    b"GET /example.com/m/@v/list HTTP/1.1\r\nContent-Length : 5",
]

OVERSIZED_HEADERS = [
    b"X-Big: " + b"x" * 70000,
    b"\r\n".join(b"X-H%d: v" % i for i in range(150)),
]


def exchange(port: int, data: bytes) -> bytes:
    """exchange sends raw bytes and returns everything the server answers before it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def snapshot(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*"))


@pytest.fixture
def hostile_proxy(make_proxy: Callable[..., ProxyServer], upstream: Upstream, tmp_path: Path) -> ProxyServer:
    upstream.add(generate("example.com/m", "v1.0.0"))
    return make_proxy([upstream.url])


def test_there_are_at_least_50_hostile_requests() -> None:
    assert len(HOSTILE) + len(OVERSIZED_HEADERS) >= 50


@pytest.mark.parametrize("line", HOSTILE, ids=[repr(h[:40]) for h in HOSTILE])
def test_hostile_request_is_refused_cleanly(hostile_proxy: ProxyServer, upstream: Upstream, tmp_path: Path,
                                            line: bytes) -> None:
    before = snapshot(tmp_path)
    answer = exchange(hostile_proxy.port, line + b"\r\nHost: x\r\n\r\n")
    if answer:
        status = answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/") else b""
        assert status[:1] == b"4" or status == b"505", answer[:200]
    assert upstream.total() == 0
    assert snapshot(tmp_path) == before
    assert get(hostile_proxy, "/example.com/m/@v/v1.0.0.mod")[0] == 200


@pytest.mark.parametrize("headers", OVERSIZED_HEADERS, ids=["huge-header", "too-many-headers"])
def test_oversized_headers_are_refused(hostile_proxy: ProxyServer, upstream: Upstream, headers: bytes) -> None:
    answer = exchange(hostile_proxy.port, b"GET /example.com/m/@v/list HTTP/1.1\r\n" + headers + b"\r\n\r\n")
    assert answer == b"" or answer.split(b" ", 2)[1][:1] == b"4"
    assert upstream.total() == 0
    assert get(hostile_proxy, "/health")[0] == 200


def test_idle_and_trickling_connections_do_not_starve_clients(hostile_proxy: ProxyServer) -> None:
    idle = [socket.create_connection(("127.0.0.1", hostile_proxy.port), timeout=10) for _ in range(300)]
    try:
        for i, s in enumerate(idle):  # half of them trickle a partial request line
            if i % 2:
                s.sendall(b"GET /exam")
        results: list[int] = []

        def client() -> None:
            results.append(get(hostile_proxy, "/example.com/m/@v/v1.0.0.mod")[0])

        threads = [threading.Thread(target=client) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == [200] * 20
    finally:
        for s in idle:
            s.close()


# Property-based: parsing never crashes, and escaping round-trips.
@settings(max_examples=300, deadline=None)
@given(st.text(min_size=0, max_size=200))
def test_parse_request_only_raises_protocol_errors(path: str) -> None:
    try:
        parse_request("/" + path)
    except (BadRequest, NotFound):
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_parse_request_on_arbitrary_bytes(data: bytes) -> None:
    try:
        req = parse_request("/" + data.decode("latin-1"))
    except (BadRequest, NotFound):
        return
    assert ".." not in req.key.split("/")
    assert "\x00" not in req.key


_elem = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_~-]{0,10}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(st.lists(_elem, min_size=1, max_size=4), st.from_regex(r"[a-z]{1,8}\.[a-z]{2,4}", fullmatch=True))
def test_escape_path_round_trips(elems: list[str], host: str) -> None:
    path = "/".join([host, *elems])
    try:
        escaped = escape_path(path)
    except BadRequest:
        return
    assert escaped == escaped.lower()
    assert unescape_path(escaped) == path


@settings(max_examples=300, deadline=None)
@given(st.from_regex(r"v[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(-[A-Za-z0-9]{1,8})?", fullmatch=True))
def test_escape_version_round_trips(version: str) -> None:
    escaped = escape_version(version)
    assert escaped == escaped.lower()
    assert unescape_version(escaped) == version
