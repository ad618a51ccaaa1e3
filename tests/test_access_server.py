"""Access control in the server: https with a non-blocking handshake, client credentials (401), and the
open paths; the in-process server with a real TLS client."""

from __future__ import annotations

import base64
import http.client
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from goproxy.app import build_access
from goproxy.auth import hash_secret
from goproxy.config import Config
from goproxy.server import ProxyServer
from tests.support.certs import Certs
from tests.support.helpers import FakeClock, get, wait_for
from tests.support.upstream import Upstream, generate

MOD = "/example.com/m/@v/v1.0.0.mod"
ZIP = "/example.com/m/@v/v1.0.0.zip"
SECRET = "s3cret-for-ci"


def basic(name: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{secret}".encode()).decode()


def write_auth(path: Path, creds: dict[str, str]) -> Path:
    """Write an auth file of name → secret (hashed at a low cost: these tests need no real PBKDF2 work)."""
    path.write_text("".join(f"{n}:{hash_secret(s, iterations=1000)}\n" for n, s in creds.items()))
    return path


def https(server: ProxyServer, certs: Certs, path: str, method: str = "GET",
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=30, context=certs.client_context())
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def read_all(s: socket.socket, timeout: float = 10) -> bytes:
    s.settimeout(timeout)
    chunks = []
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, socket.timeout, ssl.SSLError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def tls_proxy(make_proxy: Callable[..., ProxyServer], upstream: Upstream, certs: Certs) -> ProxyServer:
    upstream.add(generate("example.com/m", "v1.0.0", size=3_000_000))
    return make_proxy([upstream.url], tls_cert=str(certs.cert), tls_key=str(certs.key), header_timeout=0.5)


@pytest.fixture
def auth_proxy(make_proxy: Callable[..., ProxyServer], upstream: Upstream, tmp_path: Path) -> ProxyServer:
    upstream.add(generate("example.com/m", "v1.0.0"))
    return make_proxy([upstream.url], auth_file=str(write_auth(tmp_path / "clients", {"ci": SECRET})))


# TLS.

def test_https_serves_module_files_speaking_http_1_1(tls_proxy: ProxyServer, upstream: Upstream,
                                                     certs: Certs) -> None:
    for path in (MOD, ZIP, MOD, ZIP):  # a miss, then hits (a small file from memory, a big one from disk)
        status, _, body = https(tls_proxy, certs, path)
        assert status == 200
        assert body == upstream.routes[path].body
    ctx = certs.client_context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        assert s.selected_alpn_protocol() == "http/1.1"


def test_a_big_file_reaches_a_slow_tls_reader_whole(tls_proxy: ProxyServer, upstream: Upstream,
                                                   certs: Certs) -> None:
    assert https(tls_proxy, certs, ZIP)[0] == 200  # now in the cache: sent from the file, in pieces
    want = upstream.routes[ZIP].body
    with socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=10) as raw, \
            certs.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(f"GET {ZIP} HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(0.3)  # a reader that takes nothing for a while: the server's sends block
        data = b""
        while not data.endswith(b"ok\n"):
            chunk = s.recv(1 << 20)
            assert chunk
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert rest[:len(want)] == want
    assert rest[len(want):].startswith(b"HTTP/1.1 200 OK")


def test_pipelined_requests_in_one_tls_record_are_all_answered(tls_proxy: ProxyServer, certs: Certs) -> None:
    with socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=10) as raw, \
            certs.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 3
                  + b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = read_all(s)
    assert data.count(b"HTTP/1.1 200 OK") == 4


def test_a_head_left_in_the_tls_layer_after_a_read_is_not_forgotten(tls_proxy: ProxyServer, certs: Certs,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # Reads smaller than a TLS record leave the rest decrypted in the TLS layer, where the selector
    # cannot see it: the server must take it before it waits for the socket again.
    monkeypatch.setattr("goproxy.connections.RECV", 256)
    with socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=10) as raw, \
            certs.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 3000 + b"\r\nConnection: close\r\n\r\n")
        assert read_all(s).startswith(b"HTTP/1.1 200 OK")


@pytest.mark.parametrize("first_bytes", [b"", b"\x16\x03\x01\x00"], ids=["silent", "half-client-hello"])
def test_a_handshake_not_finished_within_the_header_timeout_is_closed(
        tls_proxy: ProxyServer, certs: Certs, caplog: pytest.LogCaptureFixture, first_bytes: bytes) -> None:
    caplog.set_level(logging.INFO)
    with socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=10) as s:
        s.sendall(first_bytes)
        started = time.monotonic()
        assert read_all(s) == b""
        assert 0.4 <= time.monotonic() - started < 2.0
    assert any("TLS handshake not complete within 0.5s" in r.getMessage() for r in caplog.records)
    assert https(tls_proxy, certs, "/health")[0] == 200  # the server goes on


def test_plain_http_to_the_tls_port_gets_a_plain_400_and_a_close(tls_proxy: ProxyServer, certs: Certs) -> None:
    with socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=10) as s:
        s.sendall(b"GET " + MOD.encode() + b" HTTP/1.1\r\nHost: x\r\nUser-Agent: " + b"u" * 3000 + b"\r\n\r\n")
        data = read_all(s)
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert data.endswith(b"this port speaks https: use https:// in GOPROXY\n")
    assert https(tls_proxy, certs, "/health")[0] == 200


def test_a_client_that_distrusts_the_certificate_leaves_the_server_serving(tls_proxy: ProxyServer,
                                                                          certs: Certs) -> None:
    with pytest.raises(ssl.SSLCertVerificationError), \
            socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=10) as raw:
        ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")
    assert https(tls_proxy, certs, "/health")[0] == 200


@pytest.mark.parametrize("cert,key,message", [
    ("missing.pem", "key", "TLS certificate {d}/missing.pem: No such file or directory"),
    ("cert", "missing.pem", "TLS key {d}/missing.pem: No such file or directory"),
    ("key", "key", "TLS certificate {d}/key.pem with key {d}/key.pem: "),
    ("cert", "cert", "TLS certificate {d}/cert.pem with key {d}/cert.pem: "),
], ids=["no-cert", "no-key", "key-as-cert", "cert-as-key"])
def test_an_unusable_certificate_or_key_is_a_start_up_error_naming_the_file(
        certs: Certs, cert: str, key: str, message: str) -> None:
    d = certs.cert.parent

    def path(name: str) -> str:
        return str({"cert": certs.cert, "key": certs.key}.get(name, d / name))

    from goproxy.errors import StartupError
    with pytest.raises(StartupError) as err:
        build_access(Config(tls_cert=path(cert), tls_key=path(key)))
    assert str(err.value).startswith(message.format(d=d))


# Credentials.

def test_a_request_without_a_credential_gets_401_with_the_basic_challenge(auth_proxy: ProxyServer) -> None:
    for method in ("GET", "HEAD"):
        status, headers, body = get(auth_proxy, MOD, method=method)
        assert status == 401
        assert headers["www-authenticate"] == 'Basic realm="goproxy"'
        assert headers["cache-control"] == "no-store"
        assert body == (b"" if method == "HEAD" else
                        b"authentication required: send the name:secret of a client credential (Basic or Bearer)\n")


@pytest.mark.parametrize("header", [basic("ci", SECRET), f"Bearer ci:{SECRET}", f"bearer ci:{SECRET}"],
                         ids=["basic", "bearer", "bearer-lower-case"])
def test_a_valid_credential_is_served(auth_proxy: ProxyServer, upstream: Upstream, header: str) -> None:
    status, _, body = get(auth_proxy, MOD, headers={"Authorization": header})
    assert status == 200
    assert body == upstream.routes[MOD].body


@pytest.mark.parametrize("header", [basic("ci", "wrong"), basic("nobody", SECRET), f"Bearer ci{SECRET}",
                                    "Basic !!!", basic("", SECRET)],
                         ids=["wrong-secret", "unknown-name", "bearer-no-colon", "bad-base64", "empty-name"])
def test_a_wrong_credential_gets_401_and_nothing_is_fetched(auth_proxy: ProxyServer, upstream: Upstream,
                                                           header: str) -> None:
    status, headers, _ = get(auth_proxy, MOD, headers={"Authorization": header})
    assert status == 401
    assert headers["www-authenticate"] == 'Basic realm="goproxy"'
    assert upstream.count(MOD) == 0


@pytest.mark.parametrize("path,metrics_auth,status", [
    ("/health", "on", 200), ("/ready", "on", 200), ("/metrics", "on", 401), ("/metrics", "off", 200),
    ("/", "on", 401), ("/status.json", "on", 401), ("/sumdb/sum.golang.org/supported", "on", 401),
    ("/nope", "on", 401),
], ids=["health", "ready", "metrics", "metrics-auth-off", "front-page", "status-json", "sumdb", "unknown-path"])
def test_which_paths_need_a_credential(make_proxy: Callable[..., ProxyServer], upstream: Upstream, tmp_path: Path,
                                       path: str, metrics_auth: str, status: int) -> None:
    server = make_proxy([upstream.url], auth_file=str(write_auth(tmp_path / "clients", {"ci": SECRET})),
                        metrics_auth=metrics_auth)
    assert get(server, path)[0] == status


def test_a_refusal_is_one_line_with_address_and_name_never_the_secret(
        auth_proxy: ProxyServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    get(auth_proxy, MOD, headers={"Authorization": basic("ci", "not-" + SECRET)})
    get(auth_proxy, MOD, headers={"Authorization": f"Bearer mallory:{SECRET}"})
    get(auth_proxy, MOD)
    assert get(auth_proxy, MOD, headers={"Authorization": basic("ci", SECRET)})[0] == 200
    refusals = [r for r in caplog.records if "credential" in r.getMessage() or "refused" in r.getMessage()]
    assert [r.getMessage() for r in refusals] == [
        f"client 127.0.0.1: GET {MOD} refused: wrong secret or unknown name 'ci': 401",
        f"client 127.0.0.1: GET {MOD} refused: wrong secret or unknown name 'mallory': 401",
        f"client 127.0.0.1: GET {MOD} without a valid credential: 401",
    ]
    assert [r.levelno for r in refusals] == [logging.WARNING, logging.WARNING, logging.INFO]
    assert not [r for r in caplog.records if SECRET in r.getMessage()]


def test_a_changed_auth_file_is_in_force_within_a_second(auth_proxy: ProxyServer, tmp_path: Path,
                                                         clock: FakeClock) -> None:
    ops = {"Authorization": basic("ops", "ops-secret")}
    assert get(auth_proxy, MOD, headers=ops)[0] == 401
    write_auth(tmp_path / "clients", {"ci": SECRET, "ops": "ops-secret"})
    assert get(auth_proxy, MOD, headers=ops)[0] == 401  # not looked at again within the interval
    clock.advance(1.5)
    assert get(auth_proxy, MOD, headers=ops)[0] == 200
    assert get(auth_proxy, MOD, headers={"Authorization": basic("ci", SECRET)})[0] == 200


def test_a_reload_puts_new_credentials_and_a_new_certificate_in_force(
        make_proxy: Callable[..., ProxyServer], upstream: Upstream, certs: Certs, tmp_path: Path,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.support import certs as test_certs

    upstream.add(generate("example.com/m", "v1.0.0"))
    clients = write_auth(tmp_path / "clients", {"ci": SECRET})
    server = make_proxy([upstream.url], auth_file=str(clients), tls_cert=str(certs.cert), tls_key=str(certs.key))
    ci = {"Authorization": basic("ci", SECRET)}
    assert https(server, certs, MOD, headers=ci)[0] == 200
    other = test_certs.make(tmp_path_factory.mktemp("other-certs"))
    write_auth(tmp_path / "ops", {"ops": "ops-secret"})
    server.control.update(build_access(Config(auth_file=str(tmp_path / "ops"), tls_cert=str(other.cert),
                                              tls_key=str(other.key))))
    assert https(server, other, MOD, headers={"Authorization": basic("ops", "ops-secret")})[0] == 200
    assert https(server, other, MOD, headers=ci)[0] == 401
    with pytest.raises(ssl.SSLCertVerificationError):
        https(server, certs, MOD, headers=ci)


def test_a_tls_and_auth_hit_costs_no_pbkdf2_after_the_first(auth_proxy: ProxyServer,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    calls: list[Any] = []
    real = hashlib.pbkdf2_hmac

    def counted(*args: Any) -> bytes:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(hashlib, "pbkdf2_hmac", counted)
    ci = {"Authorization": basic("ci", SECRET)}
    for _ in range(20):
        assert get(auth_proxy, MOD, headers=ci)[0] == 200
    assert len(calls) == 1


def test_no_log_line_carries_the_secret(make_proxy: Callable[..., ProxyServer], upstream: Upstream,
                                        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # before the server is built: its access lines are records too
    upstream.add(generate("example.com/m", "v1.0.0"))
    server = make_proxy([upstream.url], auth_file=str(write_auth(tmp_path / "clients", {"ci": SECRET})))
    for header in (basic("ci", SECRET), basic("ci", SECRET + "x"), f"Bearer ci:{SECRET}", f"Bearer ci{SECRET}"):
        get(server, MOD, headers={"Authorization": header})
    wait_for(lambda: sum(bool(re.search(r"GET \S+ (200|401) ", r.getMessage())) for r in caplog.records) == 4)
    encoded = basic("ci", SECRET).split()[1]
    assert not [r for r in caplog.records if SECRET in r.getMessage() or encoded in r.getMessage()]


def test_the_front_page_of_a_tls_proxy_gives_an_https_goproxy_line(tls_proxy: ProxyServer, certs: Certs) -> None:
    status, _, body = https(tls_proxy, certs, "/", headers={"Host": "goproxy.internal:8443"})
    assert status == 200
    assert b"export GOPROXY=https://goproxy.internal:8443,direct" in body
