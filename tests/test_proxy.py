"""Integration: the proxy in-process against real upstream servers on 127.0.0.1."""

from __future__ import annotations

import http.client
import os
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from goproxy.server import ProxyServer
from tests.support.helpers import FakeClock, Sleeps, get, wait_for
from tests.support.upstream import Module, Upstream, generate

MOD = "example.com/Hello"
ESC = "example.com/!hello"


@pytest.fixture
def mod(upstream: Upstream) -> Module:
    return upstream.add(generate(MOD, "v1.0.0"))


def test_miss_then_hit_for_each_immutable_artifact(make_proxy: Callable[..., ProxyServer], upstream: Upstream,
                                                   mod: Module) -> None:
    proxy = make_proxy([upstream.url])
    for ext, body, ctype in [("info", mod.info, "application/json"), ("mod", mod.mod, "text/plain"),
                             ("zip", mod.zip, "application/zip")]:
        path = f"/{ESC}/@v/v1.0.0.{ext}"
        for _ in range(3):
            status, headers, got = get(proxy, path)
            assert status == 200
            assert got == body
            assert headers["content-length"] == str(len(body))
            assert headers["content-type"].startswith(ctype)
            assert "immutable" in headers["cache-control"]
        assert upstream.count(path) == 1
    cached = Path(proxy.config.cache_dir) / ESC / "@v" / "v1.0.0.zip"
    assert cached.read_bytes() == mod.zip


def test_head_sends_headers_without_body(make_proxy: Callable[..., ProxyServer], upstream: Upstream,
                                         mod: Module) -> None:
    proxy = make_proxy([upstream.url])
    status, headers, body = get(proxy, f"/{ESC}/@v/v1.0.0.zip", method="HEAD")
    assert (status, body) == (200, b"")
    assert headers["content-length"] == str(len(mod.zip))


def test_big_zip_is_served_whole_with_sendfile(make_proxy: Callable[..., ProxyServer], upstream: Upstream) -> None:
    big = upstream.add(generate("example.com/big", "v1.0.0", size=3 << 20))
    proxy = make_proxy([upstream.url])
    for _ in range(2):
        status, headers, body = get(proxy, "/example.com/big/@v/v1.0.0.zip")
        assert status == 200
        assert body == big.zip


def test_keep_alive_serves_many_requests_on_one_connection(make_proxy: Callable[..., ProxyServer], upstream: Upstream,
                                                           mod: Module) -> None:
    proxy = make_proxy([upstream.url])
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    for path in [f"/{ESC}/@v/v1.0.0.info", f"/{ESC}/@v/v1.0.0.mod", "/health", "/nope", f"/{ESC}/@v/list"]:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        assert resp.status in (200, 404)
        assert resp.getheader("Content-Length") is not None
    assert conn.sock is not None  # never closed by the server
    conn.close()


def test_list_and_latest_refresh_after_ttl(make_proxy: Callable[..., ProxyServer], upstream: Upstream, mod: Module,
                                           clock: FakeClock) -> None:
    proxy = make_proxy([upstream.url], list_ttl=300.0)
    for path in [f"/{ESC}/@v/list", f"/{ESC}/@latest"]:
        assert get(proxy, path)[0] == 200
        clock.advance(299)
        status, headers, _ = get(proxy, path)
        assert status == 200
        assert "max-age=300" in headers["cache-control"]
        assert upstream.count(path) == 1
        clock.advance(2)
        assert get(proxy, path)[0] == 200  # the stale copy, at once; refreshed in the background
        wait_for(lambda: upstream.count(path) == 2)  # noqa: B023 - wait_for calls it now
        wait_for(lambda: not proxy.service.flights.in_flight(path.lstrip("/")))  # noqa: B023 - wait_for calls it now
        clock.advance(-301)


def test_new_version_appears_in_list_after_ttl(make_proxy: Callable[..., ProxyServer], upstream: Upstream, mod: Module,
                                               clock: FakeClock) -> None:
    proxy = make_proxy([upstream.url])
    assert get(proxy, f"/{ESC}/@v/list")[2] == b"v1.0.0\n"
    upstream.add(generate(MOD, "v1.1.0"))
    assert get(proxy, f"/{ESC}/@v/list")[2] == b"v1.0.0\n"
    clock.advance(301)
    assert get(proxy, f"/{ESC}/@v/list")[2] == b"v1.0.0\n"  # stale, at once, while it is refreshed
    wait_for(lambda: get(proxy, f"/{ESC}/@v/list")[2] == b"v1.0.0\nv1.1.0\n")


def test_query_info_is_mutable(make_proxy: Callable[..., ProxyServer], upstream: Upstream, mod: Module,
                               clock: FakeClock) -> None:
    upstream.set(f"/{ESC}/@v/master.info", body=mod.info)
    proxy = make_proxy([upstream.url])
    status, headers, body = get(proxy, f"/{ESC}/@v/master.info")
    assert status == 200
    assert body == mod.info
    assert "immutable" not in headers["cache-control"]
    clock.advance(301)
    get(proxy, f"/{ESC}/@v/master.info")
    wait_for(lambda: upstream.count(f"/{ESC}/@v/master.info") == 2)


def test_stale_list_served_when_every_upstream_fails(make_proxy: Callable[..., ProxyServer], upstream: Upstream,
                                                     mod: Module, clock: FakeClock, sleeps: Sleeps) -> None:
    proxy = make_proxy([upstream.url], max_stale=0.0)  # no answer at once: the request waits for the refresh
    path = f"/{ESC}/@v/list"
    assert get(proxy, path)[2] == b"v1.0.0\n"
    upstream.set(path, 503, b"down")
    clock.advance(301)
    status, _, body = get(proxy, path)
    assert (status, body) == (200, b"v1.0.0\n")
    assert upstream.count(path) == 1 + 3  # the refresh was tried with retries
    assert len(sleeps.calls) == 2


def test_not_found_passes_through_and_is_remembered(make_proxy: Callable[..., ProxyServer], upstream: Upstream,
                                                    clock: FakeClock) -> None:
    proxy = make_proxy([upstream.url])
    path = "/example.com/missing/@v/v1.0.0.info"
    upstream.set(path, 404, b"not found: example.com/missing@v1.0.0: no such module")
    status, headers, body = get(proxy, path)
    assert status == 404
    assert body == b"not found: example.com/missing@v1.0.0: no such module\n"
    assert headers["content-type"].startswith("text/plain")
    clock.advance(59)
    assert get(proxy, path)[0] == 404
    assert upstream.count(path) == 1
    clock.advance(2)
    upstream.add(generate("example.com/missing", "v1.0.0"))
    assert get(proxy, path)[0] == 200
    assert upstream.count(path) == 2


def test_gone_keeps_its_410_status(make_proxy: Callable[..., ProxyServer], upstream: Upstream) -> None:
    proxy = make_proxy([upstream.url])
    upstream.set("/example.com/gone/@v/list", 410, b"gone for good")
    status, _, body = get(proxy, "/example.com/gone/@v/list")
    assert (status, body) == (410, b"gone for good\n")


def test_fallback_to_next_upstream_on_not_found_and_on_failure(make_proxy: Callable[..., ProxyServer],
                                                               make_upstream: Callable[[], Upstream],
                                                               sleeps: Sleeps) -> None:
    first, second = make_upstream(), make_upstream()
    m = second.add(generate("example.com/fb", "v1.0.0"))
    first.set("/example.com/fb/@v/v1.0.0.mod", 500, b"boom")
    proxy = make_proxy([first.url, second.url])
    assert get(proxy, "/example.com/fb/@v/v1.0.0.info")[2] == m.info  # first says 404
    assert get(proxy, "/example.com/fb/@v/v1.0.0.mod")[2] == m.mod  # first fails
    assert first.count("/example.com/fb/@v/v1.0.0.info") == 1
    assert first.count("/example.com/fb/@v/v1.0.0.mod") == 3


def test_last_upstream_not_found_text_reaches_client(make_proxy: Callable[..., ProxyServer],
                                                     make_upstream: Callable[[], Upstream]) -> None:
    first, second = make_upstream(), make_upstream()
    first.set("/example.com/x/@v/list", 404, b"first says no")
    second.set("/example.com/x/@v/list", 404, b"second says no")
    proxy = make_proxy([first.url, second.url])
    assert get(proxy, "/example.com/x/@v/list")[:3:2] == (404, b"second says no\n")


def test_upstream_failure_is_502_with_the_error(make_proxy: Callable[..., ProxyServer], upstream: Upstream) -> None:
    proxy = make_proxy([upstream.url])
    upstream.set("/example.com/x/@v/v1.0.0.mod", 500, b"internal trouble")
    status, _, body = get(proxy, "/example.com/x/@v/v1.0.0.mod")
    assert status == 502
    assert b"internal trouble" in body
    assert body.count(b"\n") == 1
    assert not (Path(proxy.config.cache_dir) / "example.com/x/@v/v1.0.0.mod").exists()


def test_invalid_info_json_is_rejected_and_not_cached(make_proxy: Callable[..., ProxyServer],
                                                      upstream: Upstream) -> None:
    proxy = make_proxy([upstream.url])
    upstream.set("/example.com/x/@v/v1.0.0.info", 200, b"<html>captive portal</html>")
    assert get(proxy, "/example.com/x/@v/v1.0.0.info")[0] == 502
    upstream.set("/example.com/x/@v/v1.0.0.info", 200, b'{"Version": "v9.9.9"}')
    assert get(proxy, "/example.com/x/@v/v1.0.0.info")[0] == 502
    assert not (Path(proxy.config.cache_dir) / "example.com/x/@v/v1.0.0.info").exists()


@pytest.mark.parametrize("path,status", [
    ("/Example.com/m/@v/list", 400),            # upper case must arrive escaped
    ("/example.com/m/@v/v1.zip", 400),          # zip needs a canonical version
    ("/example.com/m/@v/v1.0.0+meta.mod", 400),
    ("/example.com/m/@v/..%2f..%2fx.zip", 400),
    ("/example.com/m/@v/v1.0.0.ziphash", 404),
    ("/favicon.ico", 404),
    ("/index.html", 404),                      # "/" is the front page; nothing else is
])
def test_malformed_requests_never_reach_upstream(make_proxy: Callable[..., ProxyServer], upstream: Upstream, path: str,
                                                 status: int) -> None:
    proxy = make_proxy([upstream.url])
    got, headers, body = get(proxy, path)
    assert got == status
    assert body.endswith(b"\n")
    assert body.count(b"\n") == 1
    assert headers["content-type"].startswith("text/plain")
    assert upstream.total() == 0


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
def test_other_methods_get_405_with_allow(make_proxy: Callable[..., ProxyServer], upstream: Upstream,
                                          method: str) -> None:
    proxy = make_proxy([upstream.url])
    status, headers, _ = get(proxy, f"/{ESC}/@v/list", method=method)
    assert status == 405
    assert headers["allow"] == "GET, HEAD"
    assert upstream.total() == 0


def test_health(make_proxy: Callable[..., ProxyServer], upstream: Upstream) -> None:
    proxy = make_proxy([upstream.url])
    assert get(proxy, "/health")[:3:2] == (200, b"ok\n")


def raw_request(port: int, request_line: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request_line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
        chunks: list[bytes] = []
        while True:
            data = s.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)


TRAVERSALS = [
    b"GET /../../../../etc/passwd HTTP/1.1",
    b"GET /example.com/../../../etc/@v/list HTTP/1.1",
    b"GET /%2e%2e/%2e%2e/etc/@v/list HTTP/1.1",
    b"GET /example.com/%2E%2E%2F%2E%2E%2Fx/@v/list HTTP/1.1",
    b"GET /example.com/m/@v/..%252f..%252fx.info HTTP/1.1",
    b"GET /example.com\\..\\..\\x/@v/list HTTP/1.1",
    b"GET /example.com/m%00/@v/list HTTP/1.1",
    b"GET /sumdb/sum.golang.org/../../../x HTTP/1.1",
    b"GET /sumdb/../cache/x/@v/list HTTP/1.1",
    b"GET //etc/passwd/@v/list HTTP/1.1",
    b"GET /./example.com/m/@v/list HTTP/1.1",
    b"GET http://evil.example/../x/@v/list HTTP/1.1",
]


@pytest.mark.parametrize("line", TRAVERSALS)
def test_traversal_attempts_touch_nothing(make_proxy: Callable[..., ProxyServer], upstream: Upstream, tmp_path: Path,
                                          line: bytes) -> None:
    proxy = make_proxy([upstream.url])
    before = sorted(p for p in tmp_path.rglob("*"))
    answer = raw_request(proxy.port, line)
    assert answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 404")), answer[:100]
    assert upstream.total() == 0
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert get(proxy, "/health")[0] == 200


def test_single_flight_one_upstream_request_for_30_clients(make_proxy: Callable[..., ProxyServer],
                                                           upstream: Upstream) -> None:
    m = upstream.add(generate("example.com/sf", "v1.0.0", size=200_000))
    proxy: ProxyServer = make_proxy([upstream.url])
    upstream.gate = threading.Event()
    path = "/example.com/sf/@v/v1.0.0.zip"
    results: list[tuple[int, bytes]] = []
    lock = threading.Lock()

    def client() -> None:
        status, _, body = get(proxy, path)
        with lock:
            results.append((status, body))

    threads = [threading.Thread(target=client) for _ in range(30)]
    for t in threads:
        t.start()
    wait_for(lambda: proxy.service.flights.waiters("example.com/sf/@v/v1.0.0.zip") == 29)
    upstream.gate.set()
    for t in threads:
        t.join(30)
    assert upstream.count(path) == 1
    assert results == [(200, m.zip)] * 30


def test_client_hang_up_does_not_cancel_the_fetch(make_proxy: Callable[..., ProxyServer], upstream: Upstream) -> None:
    m = upstream.add(generate("example.com/hu", "v1.0.0"))
    proxy: ProxyServer = make_proxy([upstream.url])
    upstream.gate = threading.Event()
    path = "/example.com/hu/@v/v1.0.0.zip"
    s = socket.create_connection(("127.0.0.1", proxy.port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    wait_for(lambda: upstream.count(path) == 1)
    s.close()
    upstream.gate.set()
    cached = Path(proxy.config.cache_dir) / "example.com/hu/@v/v1.0.0.zip"
    wait_for(cached.exists)
    assert get(proxy, path)[2] == m.zip
    assert upstream.count(path) == 1


def test_failed_fetch_is_shared_by_waiters_and_not_cached(make_proxy: Callable[..., ProxyServer],
                                                          upstream: Upstream) -> None:
    proxy: ProxyServer = make_proxy([upstream.url])
    path = "/example.com/bad/@v/v1.0.0.mod"
    upstream.set(path, 500, b"nope")
    assert get(proxy, path)[0] == 502
    upstream.add(generate("example.com/bad", "v1.0.0"))
    assert get(proxy, path)[0] == 200  # the failure was not remembered


def test_no_partial_file_is_ever_visible(make_proxy: Callable[..., ProxyServer], upstream: Upstream) -> None:
    m = upstream.add(generate("example.com/cut", "v1.0.0", size=100_000))
    path = "/example.com/cut/@v/v1.0.0.zip"

    def cut(p: str, h: BaseHTTPRequestHandler) -> bool:
        if p != path:
            return False
        h.send_response(200)
        h.send_header("Content-Length", str(len(m.zip)))
        h.end_headers()
        h.wfile.write(m.zip[:1000])
        h.close_connection = True
        return True

    upstream.fault = cut
    proxy = make_proxy([upstream.url])
    assert get(proxy, path)[0] == 502
    root = Path(proxy.config.cache_dir)
    files = [p.name for p in root.rglob("*") if p.is_file() and not p.relative_to(root).parts[0].startswith(".")]
    assert files == ["v1.0.0.zip.part"]  # kept to resume from; never served
    assert get(proxy, path)[0] == 502
    upstream.fault = None
    assert get(proxy, path)[2] == m.zip


def test_graceful_stop_finishes_requests_in_flight(make_proxy: Callable[..., ProxyServer], upstream: Upstream) -> None:
    m = upstream.add(generate("example.com/gs", "v1.0.0"))
    proxy: ProxyServer = make_proxy([upstream.url])
    upstream.gate = threading.Event()
    path = "/example.com/gs/@v/v1.0.0.zip"
    out: list[tuple[int, dict[str, str], bytes]] = []
    t = threading.Thread(target=lambda: out.append(get(proxy, path)))
    t.start()
    wait_for(lambda: upstream.count(path) == 1)
    stopper = threading.Thread(target=proxy.stop)
    stopper.start()
    wait_for(lambda: proxy.stopping)
    upstream.gate.set()
    t.join(10)
    stopper.join(10)
    assert out
    assert out[0][0] == 200
    assert out[0][2] == m.zip
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()


def test_cache_files_are_0644(make_proxy: Callable[..., ProxyServer], upstream: Upstream, mod: Module) -> None:
    proxy = make_proxy([upstream.url])
    get(proxy, f"/{ESC}/@v/v1.0.0.mod")
    assert proxy.service.settle(10)  # answered while it was committed
    st = os.stat(Path(proxy.config.cache_dir) / ESC / "@v/v1.0.0.mod")
    assert st.st_mode & 0o777 == 0o644
