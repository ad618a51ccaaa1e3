"""The /sumdb/ passthrough tells the truth: upstream first, else the database itself; supported 404 when neither."""

from __future__ import annotations

import http.client
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from goproxy.net.http import Transport
from goproxy.server import ProxyServer
from goproxy.sumdb.client import Sources
from goproxy.sumdb.db import parse_gosumdb
from goproxy.upstream import Upstream as UpstreamURL
from goproxy.upstream import Upstreams
from tests.support.gotestproxy import SUMDB_KEY, SUMDB_NAME, GoTestProxy, go_env, run_go
from tests.support.helpers import FakeClock, Sleeps, get, local_http, stop_http
from tests.support.upstream import Upstream

pytestmark = pytest.mark.timeout(300)

LOOKUP = "lookup/rsc.io/quote@v1.5.2"


class NoSumdb:
    """A module proxy forwarding to target that answers 404 for every /sumdb/ path (a Nexus, an Athens)."""

    def __init__(self, target: str) -> None:
        parts = urllib.parse.urlsplit(target)
        host, port, base = parts.hostname or "", parts.port or 80, parts.path.rstrip("/")
        self.sumdb_requests = 0
        owner = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if self.path.startswith("/sumdb/"):
                    owner.sumdb_requests += 1
                    status, body = 404, b"not found"
                else:
                    conn = http.client.HTTPConnection(host, port, timeout=30)
                    conn.request("GET", base + self.path)
                    resp = conn.getresponse()
                    status, body = resp.status, resp.read()
                    conn.close()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = local_http(H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        stop_http(self.server)


@pytest.fixture
def no_sumdb(testproxy: GoTestProxy) -> Iterator[NoSumdb]:
    up = NoSumdb(testproxy.url)
    yield up
    up.close()


def read(resp: Any, _up: object) -> bytes:
    return bytes(resp.read_all())


def sources(upstream_url: str, direct_url: str, clock: FakeClock) -> Sources:
    transport = Transport()
    ups = Upstreams([UpstreamURL(upstream_url)], transport, sleep=Sleeps())
    direct = Upstreams([UpstreamURL(direct_url)], transport, sleep=Sleeps())
    return Sources(SUMDB_NAME, ups, direct, clock=clock)


def direct_answer(testproxy: GoTestProxy, path: str) -> bytes:
    parts = urllib.parse.urlsplit(testproxy.url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    conn.request("GET", f"{parts.path}/sumdb-direct/{path}")
    body = conn.getresponse().read()
    conn.close()
    return body


def test_files_come_from_the_database_when_the_upstream_has_no_sumdb(
        testproxy: GoTestProxy, upstream: Upstream, clock: FakeClock) -> None:
    src = sources(upstream.url, testproxy.url + "/sumdb-direct", clock)
    assert src.fetch(LOOKUP, read) == direct_answer(testproxy, LOOKUP)
    assert upstream.count(f"/sumdb/{SUMDB_NAME}/supported") == 1
    assert upstream.count(f"/sumdb/{SUMDB_NAME}/{LOOKUP}") == 0  # known not to pass it through
    assert src.supported()
    assert src.known() is True
    assert upstream.total() == 1  # both answers remembered


def test_files_come_from_the_upstream_that_passes_the_database_through(
        testproxy: GoTestProxy, clock: FakeClock) -> None:
    src = sources(testproxy.url, "http://127.0.0.1:9", clock)  # the database itself is unreachable
    assert src.fetch(LOOKUP, read) == direct_answer(testproxy, LOOKUP)
    assert src.supported()


def test_a_file_the_upstream_lacks_comes_from_the_database(
        testproxy: GoTestProxy, upstream: Upstream, clock: FakeClock) -> None:
    upstream.set(f"/sumdb/{SUMDB_NAME}/supported", 200, b"")
    src = sources(upstream.url, testproxy.url + "/sumdb-direct", clock)
    assert src.fetch(LOOKUP, read) == direct_answer(testproxy, LOOKUP)
    assert upstream.count(f"/sumdb/{SUMDB_NAME}/{LOOKUP}") == 1


def test_supported_is_false_when_nothing_answers_and_asked_again_after_a_while(
        upstream: Upstream, clock: FakeClock) -> None:
    src = sources(upstream.url, "http://127.0.0.1:9", clock)
    assert src.known() is None
    assert not src.supported()
    assert src.known() is False
    assert upstream.count(f"/sumdb/{SUMDB_NAME}/supported") == 1
    clock.advance(599)
    assert not src.supported()
    assert upstream.count(f"/sumdb/{SUMDB_NAME}/supported") == 1
    clock.advance(2)
    assert src.known() is None
    upstream.set(f"/sumdb/{SUMDB_NAME}/supported", 200, b"")
    assert src.supported()
    assert upstream.count(f"/sumdb/{SUMDB_NAME}/supported") == 2


def proxy_for(make_proxy: Callable[..., ProxyServer], upstream_url: str, testproxy: GoTestProxy) -> ProxyServer:
    """A proxy verifying against the test database, which it reads at its own URL."""
    return make_proxy([upstream_url], sumdbs=(SUMDB_NAME,),
                      gosumdb=parse_gosumdb(f"{SUMDB_KEY} {testproxy.url}/sumdb-direct"))


def test_passthrough_serves_the_database_when_the_upstream_404s_every_sumdb_path(
        make_proxy: Callable[..., ProxyServer], no_sumdb: NoSumdb, testproxy: GoTestProxy) -> None:
    proxy = proxy_for(make_proxy, no_sumdb.url, testproxy)
    assert get(proxy, f"/sumdb/{SUMDB_NAME}/supported")[0] == 200
    for path in (LOOKUP, "latest", "tile/8/0/000"):
        status, _, body = get(proxy, f"/sumdb/{SUMDB_NAME}/{path}")
        assert status == 200, body
        if path != "latest":
            assert body == direct_answer(testproxy, path)
    assert (Path(proxy.config.cache_dir) / "sumdb" / SUMDB_NAME / LOOKUP).exists()


def test_go_get_verifies_through_a_proxy_whose_upstream_404s_every_sumdb_path(
        make_proxy: Callable[..., ProxyServer], no_sumdb: NoSumdb, testproxy: GoTestProxy, go: str,
        tmp_path: Path) -> None:
    proxy = proxy_for(make_proxy, no_sumdb.url, testproxy)
    scratch = tmp_path / "m"
    scratch.mkdir()
    (scratch / "go.mod").write_text("module example.com/m\n\ngo 1.21\n")
    env = go_env(tmp_path, f"http://127.0.0.1:{proxy.port}", gosumdb=SUMDB_KEY)
    run_go(go, ["get", "rsc.io/quote@v1.5.2"], env, scratch)
    assert "rsc.io/quote v1.5.2 h1:" in (scratch / "go.sum").read_text()
    assert get(proxy, f"/sumdb/{SUMDB_NAME}/{LOOKUP}")[0] == 200


def test_supported_is_404_when_nothing_can_serve_the_database(
        make_proxy: Callable[..., ProxyServer], upstream: Upstream) -> None:
    # The database's own host is reached through an outbound proxy that refuses every connection.
    proxy = make_proxy([upstream.url], sumdbs=(SUMDB_NAME,), proxy="http://127.0.0.1:9", no_proxy=("127.0.0.1",))
    status, _, body = get(proxy, f"/sumdb/{SUMDB_NAME}/supported")
    assert status == 404
    assert b"ask it directly" in body
    assert upstream.count(f"/sumdb/{SUMDB_NAME}/supported") == 1
    assert get(proxy, f"/sumdb/{SUMDB_NAME}/supported")[0] == 404
    assert upstream.count(f"/sumdb/{SUMDB_NAME}/supported") == 1  # remembered


def test_database_answers_that_cannot_be_what_was_asked_for_are_refused(
        make_proxy: Callable[..., ProxyServer], make_upstream: Callable[[], Upstream]) -> None:
    modules, database = make_upstream(), make_upstream()
    database.set(f"/{LOOKUP}", 200, b"<html><body>blocked</body></html>")
    database.set("/tile/8/0/000", 200, b"\x00" * 31)
    database.set("/latest", 200, b"hello")
    proxy = make_proxy([modules.url], sumdbs=(SUMDB_NAME,),
                       gosumdb=parse_gosumdb(f"{SUMDB_KEY} {database.url}"))
    for path, reason in ((LOOKUP, b"an HTML page"), ("tile/8/0/000", b"not 31"), ("latest", b"malformed tree")):
        status, _, body = get(proxy, f"/sumdb/{SUMDB_NAME}/{path}")
        assert status == 502, body
        assert reason in body, body
    assert not (Path(proxy.config.cache_dir) / "sumdb").exists()
