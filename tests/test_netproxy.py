"""Outbound proxies against real servers: dante (SOCKS5, with and without a password), tinyproxy
(absolute form and CONNECT, with and without a password, and behind TLS as an https:// proxy),
NO_PROXY, and the custom resolver used through them; proxy URL and NO_PROXY parsing."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from goproxy.configload import build
from goproxy.errors import ConfigError
from goproxy.net.http import Transport
from goproxy.net.proxy import NoProxy, Proxy, ProxyURL, parse_no_proxy, parse_proxy_url
from goproxy.server import ProxyServer
from goproxy.sumdb.db import parse_gosumdb
from tests.support import daemons
from tests.support.certs import Certs
from tests.support.daemons import Daemon, Unbound
from tests.support.dnsservers import TLSFront
from tests.support.gotestproxy import SUMDB_KEY, SUMDB_NAME, GoTestProxy, go_env, run_go
from tests.support.helpers import ROOT, get, wait_for
from tests.support.proc import Proc, start
from tests.support.rawserver import RawServer, response
from tests.support.upstream import Module, Upstream, generate

pytestmark = pytest.mark.timeout(120)

MOD = "example.com/netproxy"


def need_pysocks() -> None:
    pytest.importorskip("socks", reason="SOCKS proxies need PySocks: pip install pysocks (make test installs it)")


@pytest.fixture
def started() -> Iterator[list[Daemon]]:
    """started collects the daemons a test starts and stops them afterwards."""
    made: list[Daemon] = []
    yield made
    for d in made:
        d.stop()


@pytest.fixture
def dante(started: list[Daemon], tmp_path: Path) -> tuple[Daemon, int]:
    need_pysocks()
    d, port = daemons.dante(tmp_path)
    started.append(d)
    return d, port


@pytest.fixture(scope="module")
def system_user() -> Iterator[tuple[str, str]]:
    """system_user is a throwaway login (name, password) for dante's username method."""
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("SOCKS5 password tests create a system user for dante: run as root with useradd")
    name, password = f"gpx{os.getpid() % 100000}", "pa@ss:w%rd"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True, capture_output=True)
        yield name, password
    finally:
        subprocess.run(["userdel", name], capture_output=True)


@pytest.fixture
def module(upstream: Upstream) -> Module:
    return upstream.add(generate(MOD, "v1.0.0"))


@pytest.fixture
def tls_upstream(certs: Certs) -> Iterator[Upstream]:
    up = Upstream(tls=certs.server_context())
    yield up
    up.close()


def fetch_zip(proxy: ProxyServer, m: Module) -> tuple[int, bytes]:
    status, _, body = get(proxy, f"/{m.path}/@v/{m.version}.zip")
    return status, body


def connect_lines(log: str, port: int) -> list[str]:
    """connect_lines are dante's log lines for connections it made to 127.0.0.1:port."""
    return [line for line in log.splitlines() if "tcp/connect [" in line and line.endswith(f"127.0.0.1.{port}")]


# SOCKS5 through dante.

def test_socks5_resolves_with_the_custom_resolver(dante: tuple[Daemon, int], unbound: Unbound, upstream: Upstream,
                                                  module: Module, make_proxy: Callable[..., ProxyServer]) -> None:
    d, port = dante
    proxy = make_proxy([upstream.url_at("modules.test")], proxy=f"socks5://127.0.0.1:{port}",
                       dns=f"127.0.0.1:{unbound.port}")
    assert fetch_zip(proxy, module) == (200, module.zip)
    assert connect_lines(d.log_text(), upstream.port)  # dante was asked for the address unbound gave
    assert unbound.queries("modules.test") >= 1


def test_socks5h_leaves_dns_to_the_proxy(dante: tuple[Daemon, int], unbound: Unbound, upstream: Upstream,
                                         module: Module, make_proxy: Callable[..., ProxyServer]) -> None:
    d, port = dante
    proxy = make_proxy([upstream.url_at("localhost")], proxy=f"socks5h://127.0.0.1:{port}",
                       dns=f"127.0.0.1:{unbound.port}")
    assert fetch_zip(proxy, module) == (200, module.zip)
    assert connect_lines(d.log_text(), upstream.port)
    assert unbound.queries("localhost") == 0  # the name went to dante, which looked it up itself


def test_socks5_username_and_password(system_user: tuple[str, str], started: list[Daemon], tmp_path: Path,
                                      upstream: Upstream, module: Module,
                                      make_proxy: Callable[..., ProxyServer]) -> None:
    need_pysocks()
    d, port = daemons.dante(tmp_path, auth=True)
    started.append(d)
    name, password = system_user
    quoted = "pa%40ss%3Aw%25rd"
    proxy = make_proxy([upstream.url], proxy=f"socks5://{name}:{quoted}@127.0.0.1:{port}")
    assert fetch_zip(proxy, module) == (200, module.zip)
    assert any(f"username%{name}@" in line for line in connect_lines(d.log_text(), upstream.port))

    wrong = make_proxy([upstream.url], proxy=f"socks5://{name}:wrong@127.0.0.1:{port}", retry_attempts=1,
                       cache_dir=str(tmp_path / "wrong"))
    status, body = fetch_zip(wrong, module)
    assert status == 502
    assert f"socks5://{name}:***@127.0.0.1:{port}".encode() in body
    assert b"wrong" not in body
    wait_for(lambda: "password authentication failed" in d.log_text())  # dante logs it after answering


def test_custom_dns_over_https_goes_through_the_socks_proxy(
        dante: tuple[Daemon, int], unbound: Unbound, certs: Certs, upstream: Upstream, module: Module,
        make_proxy: Callable[..., ProxyServer]) -> None:
    d, port = dante
    proxy = make_proxy([upstream.url_at("modules.test")], proxy=f"socks5://127.0.0.1:{port}",
                       dns=f"https://127.0.0.1:{unbound.https_port}/dns-query", ca_file=str(certs.ca))
    assert fetch_zip(proxy, module) == (200, module.zip)
    log = d.log_text()
    assert connect_lines(log, unbound.https_port)
    assert connect_lines(log, upstream.port)
    assert unbound.queries("modules.test") >= 1


@pytest.mark.timeout(600)
def test_go_command_through_socks5_with_custom_dns_and_checksum_db(
        go: str, testproxy: GoTestProxy, dante: tuple[Daemon, int], unbound: Unbound, tmp_path: Path,
        make_proxy: Callable[..., ProxyServer]) -> None:
    d, port = dante
    upstream = testproxy.url.replace("127.0.0.1", "modules.test")  # only unbound knows the name
    db = parse_gosumdb(f"{SUMDB_KEY} {upstream}/sumdb-direct")  # verified by direct fetches
    proxy = make_proxy([upstream], proxy=f"socks5://127.0.0.1:{port}", dns=f"127.0.0.1:{unbound.port}", gosumdb=db)
    env = go_env(tmp_path, f"http://127.0.0.1:{proxy.port}")
    out = run_go(go, ["mod", "download", "-json", "rsc.io/quote@v1.5.2"], env, tmp_path)
    assert '"Sum": "h1:' in out
    cached = Path(proxy.config.cache_dir)
    assert (cached / "sumdb" / SUMDB_NAME / "lookup" / "rsc.io" / "quote@v1.5.2").exists()
    testproxy_port = int(testproxy.url.split(":")[2].split("/")[0])
    assert connect_lines(d.log_text(), testproxy_port)  # one kept-alive tunnel carried module and checksum DB
    assert unbound.queries("modules.test") >= 1


# HTTP proxies through tinyproxy.

def request_lines(log: str) -> list[str]:
    """request_lines are the request lines tinyproxy logged ("GET http://…", "CONNECT host:port")."""
    return re.findall(r"Request \(file descriptor \d+\): (\S+ \S+)", log)


def test_http_proxy_sends_plain_http_in_absolute_form(started: list[Daemon], tmp_path: Path, upstream: Upstream,
                                                     module: Module, make_proxy: Callable[..., ProxyServer]) -> None:
    d, port = daemons.tinyproxy(tmp_path)
    started.append(d)
    proxy = make_proxy([upstream.url], proxy=f"127.0.0.1:{port}")  # no scheme: http://
    assert fetch_zip(proxy, module) == (200, module.zip)
    assert f"GET {upstream.url}/{MOD}/@v/v1.0.0.zip" in request_lines(d.log_text())


def test_http_proxy_tunnels_https_with_connect(started: list[Daemon], tmp_path: Path, certs: Certs,
                                              tls_upstream: Upstream, make_proxy: Callable[..., ProxyServer]) -> None:
    m = tls_upstream.add(generate(MOD, "v1.0.0"))
    d, port = daemons.tinyproxy(tmp_path, connect_ports=[tls_upstream.port])
    started.append(d)
    proxy = make_proxy([tls_upstream.url], proxy=f"http://127.0.0.1:{port}", ca_file=str(certs.ca))
    assert fetch_zip(proxy, m) == (200, m.zip)
    assert f"CONNECT 127.0.0.1:{tls_upstream.port}" in request_lines(d.log_text())


def test_http_proxy_credentials(started: list[Daemon], tmp_path: Path, certs: Certs, upstream: Upstream,
                                module: Module, tls_upstream: Upstream,
                                make_proxy: Callable[..., ProxyServer]) -> None:
    tm = tls_upstream.add(generate(MOD + "/tls", "v1.0.0"))
    d, port = daemons.tinyproxy(tmp_path, connect_ports=[tls_upstream.port], auth=("proxyuser", "letmein"))
    started.append(d)
    good = make_proxy([upstream.url, tls_upstream.url], proxy=f"http://proxyuser:letmein@127.0.0.1:{port}",
                      ca_file=str(certs.ca))
    assert fetch_zip(good, module) == (200, module.zip)  # absolute form with Proxy-Authorization
    assert fetch_zip(good, tm) == (200, tm.zip)  # CONNECT with Proxy-Authorization
    lines = request_lines(d.log_text())
    assert f"CONNECT 127.0.0.1:{tls_upstream.port}" in lines

    bad = make_proxy([upstream.url], proxy=f"http://proxyuser:nope@127.0.0.1:{port}", retry_attempts=1,
                     cache_dir=str(tmp_path / "bad"))
    status, _, body = get(bad, f"/{MOD}/@v/list")
    assert status == 502
    assert b"Unauthorized" in body  # tinyproxy says 401
    assert b"nope" not in body


def test_https_proxy_over_tls_both_ways(started: list[Daemon], tmp_path: Path, certs: Certs, upstream: Upstream,
                                        module: Module, tls_upstream: Upstream,
                                        make_proxy: Callable[..., ProxyServer]) -> None:
    tm = tls_upstream.add(generate(MOD + "/tls", "v1.0.0"))
    d, port = daemons.tinyproxy(tmp_path, connect_ports=[tls_upstream.port])
    started.append(d)
    front = TLSFront(certs, port)
    try:
        proxy = make_proxy([upstream.url, tls_upstream.url], proxy=front.url, ca_file=str(certs.ca))
        assert fetch_zip(proxy, module) == (200, module.zip)  # absolute form inside TLS
        assert fetch_zip(proxy, tm) == (200, tm.zip)  # TLS to the upstream inside TLS to the proxy
        lines = request_lines(d.log_text())
        assert f"GET {upstream.url}/{MOD}/@v/v1.0.0.zip" in lines
        assert f"CONNECT 127.0.0.1:{tls_upstream.port}" in lines
        assert front.connections >= 2
        assert tls_upstream.sni == [None]  # IP addresses are never sent as SNI; the tunnel carried TLS
    finally:
        front.close()


def test_no_proxy_hosts_are_reached_directly(started: list[Daemon], tmp_path: Path,
                                            make_upstream: Callable[[], Upstream],
                                            make_proxy: Callable[..., ProxyServer]) -> None:
    direct, proxied = make_upstream(), make_upstream()
    m1 = direct.add(generate(MOD + "/direct", "v1.0.0"))
    m2 = proxied.add(generate(MOD + "/proxied", "v1.0.0"))
    d, port = daemons.tinyproxy(tmp_path)
    started.append(d)
    proxy = make_proxy([direct.url_at("localhost"), proxied.url], proxy=f"http://127.0.0.1:{port}",
                       no_proxy=("example.org", ".LOCALHOST"))
    assert fetch_zip(proxy, m1) == (200, m1.zip)
    assert fetch_zip(proxy, m2) == (200, m2.zip)  # not found on the first upstream, then the proxied one
    lines = request_lines(d.log_text())
    assert not [line for line in lines if f":{direct.port}/" in line]
    assert [line for line in lines if f":{proxied.port}/{MOD}/proxied/@v/v1.0.0.zip" in line]


def test_dns_over_https_goes_through_connect_and_resolves_no_proxy_hosts(
        started: list[Daemon], tmp_path: Path, unbound: Unbound, certs: Certs, upstream: Upstream, module: Module,
        make_proxy: Callable[..., ProxyServer]) -> None:
    d, port = daemons.tinyproxy(tmp_path, connect_ports=[unbound.https_port])
    started.append(d)
    proxy = make_proxy([upstream.url_at("modules.test")], proxy=f"http://127.0.0.1:{port}", no_proxy=("*.test",),
                       dns=f"https://127.0.0.1:{unbound.https_port}/dns-query", ca_file=str(certs.ca))
    assert fetch_zip(proxy, module) == (200, module.zip)
    lines = request_lines(d.log_text())
    assert f"CONNECT 127.0.0.1:{unbound.https_port}" in lines
    assert not [line for line in lines if str(upstream.port) in line]


# DNS and TLS names, without a proxy.

def test_upstream_found_by_custom_dns_keeps_its_name_for_tls(
        unbound: Unbound, certs: Certs, tls_upstream: Upstream, make_proxy: Callable[..., ProxyServer]) -> None:
    m = tls_upstream.add(generate(MOD, "v1.0.0"))
    proxy = make_proxy([tls_upstream.url_at("modules.test")], dns=f"tls://127.0.0.1:{unbound.tls_port}",
                       ca_file=str(certs.ca))
    assert fetch_zip(proxy, m) == (200, m.zip)
    assert tls_upstream.sni
    assert set(tls_upstream.sni) == {"modules.test"}
    assert unbound.queries("modules.test") >= 1


def test_dns_failure_names_the_server(make_proxy: Callable[..., ProxyServer]) -> None:
    pytest.importorskip("dns.message", reason="custom DNS needs dnspython: pip install dnspython")
    port = daemons.free_port()
    proxy = make_proxy(["http://modules.test:1"], dns=f"tls://127.0.0.1:{port}", retry_attempts=1)
    status, _, body = get(proxy, f"/{MOD}/@v/list")
    assert status == 502
    assert f"resolving modules.test via tls://127.0.0.1:{port}: ".encode() in body


# The transport's side of an HTTP proxy.

def test_forwarded_requests_keep_a_pool_per_target(servers: list[RawServer]) -> None:
    fake = RawServer(lambda c, req: c.sendall(response(200, b"ok")))  # answers like a keep-alive proxy
    servers.append(fake)
    t = Transport(proxy=Proxy(f"http://u:p%20w@127.0.0.1:{fake.port}"))
    for url in ("http://a.example/x", "http://b.example:8080/y?q=1", "http://a.example/z"):
        assert t.get(url).read_all() == b"ok"
    heads = [r.split(b"\r\n") for r in fake.requests]
    assert [h[0] for h in heads] == [b"GET http://a.example/x HTTP/1.1", b"GET http://b.example:8080/y?q=1 HTTP/1.1",
                                     b"GET http://a.example/z HTTP/1.1"]
    assert all(b"Proxy-Authorization: Basic dTpwIHc=" in h for h in heads)  # u:p w
    assert all(any(line.startswith(b"Host: ") for line in h) for h in heads)
    assert fake.connections == 2
    assert t.idle_connections() == 2  # one per target, a.example's reused


def test_connect_refusal_names_the_proxy_and_status(servers: list[RawServer]) -> None:
    refuse = RawServer(lambda c, req: c.sendall(response(403, b"no", {"Connection": "close"})))
    servers.append(refuse)
    t = Transport(proxy=Proxy(f"http://user:secret@127.0.0.1:{refuse.port}"))
    with pytest.raises(Exception, match=rf"proxy http://user:\*\*\*@127.0.0.1:{refuse.port}: CONNECT a.example:443 "
                                        "refused: 403") as err:
        t.get("https://a.example/")
    assert "secret" not in str(err.value)
    assert refuse.requests[0].startswith(b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n")


# Parsing.

@pytest.mark.parametrize("text,want", [
    ("http://proxy.example:3128", ProxyURL("http", "proxy.example", 3128)),
    ("proxy.example:3128", ProxyURL("http", "proxy.example", 3128)),
    ("http://proxy.example", ProxyURL("http", "proxy.example", 80)),
    ("https://proxy.example/", ProxyURL("https", "proxy.example", 443)),
    ("SOCKS5://127.0.0.1", ProxyURL("socks5", "127.0.0.1", 1080)),
    ("socks5h://u%40x:p%3Aw@[::1]:9050", ProxyURL("socks5h", "::1", 9050, "u@x", "p:w")),
    ("http://user:@h:1", ProxyURL("http", "h", 1, "user", "")),
])
def test_proxy_urls_parse(text: str, want: ProxyURL) -> None:
    need_pysocks()
    assert parse_proxy_url(text) == want


@pytest.mark.parametrize("text,words", [
    ("ftp://h:21", ["unknown proxy scheme 'ftp'"]),
    ("socks4://h", ["unknown proxy scheme 'socks4'"]),
    ("http://h:99999", ["bad port"]),
    ("http://h:0", ["bad port"]),
    ("http://h:port", ["bad port"]),
    ("http://:8080", ["missing proxy host"]),
    ("http://user:s3cret@h:1/path", ["no path", "user:***@"]),
])
def test_malformed_proxy_urls_are_rejected(text: str, words: list[str]) -> None:
    with pytest.raises(ValueError) as err:
        parse_proxy_url(text)
    for w in words:
        assert w in str(err.value)
    assert "s3cret" not in str(err.value)


def test_socks_without_pysocks_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "socks", None)
    with pytest.raises(ValueError, match=r"socks5h:// proxies need PySocks \(pip install pysocks\)"):
        parse_proxy_url("socks5h://127.0.0.1:1080")
    assert parse_proxy_url("http://127.0.0.1:1").scheme == "http"


@pytest.mark.parametrize("entries,host,port,want", [
    ("*", "anything.example", 443, True),
    ("example.com", "example.com", 443, True),
    ("example.com", "proxy.golang.example.com", 443, True),
    ("example.com", "notexample.com", 443, False),
    (".example.com", "example.com", 80, True),
    (".example.com", "a.b.example.com", 80, True),
    ("*.example.com", "a.example.com", 80, True),
    ("EXAMPLE.com", "Sub.Example.COM.", 80, True),
    ("example.com:8080", "example.com", 8080, True),
    ("example.com:8080", "example.com", 443, False),
    ("10.0.0.0/8", "10.1.2.3", 80, True),
    ("10.0.0.0/8", "11.1.2.3", 80, False),
    ("10.0.0.0/8", "ten.example", 80, False),
    ("192.168.1.1", "192.168.1.1", 80, True),
    ("192.168.1.1", "192.168.1.2", 80, False),
    ("::1", "::1", 80, True),
    ("[::1]:8080", "::1", 8080, True),
    ("[::1]:8080", "::1", 80, False),
    ("fd00::/8", "fd12::1", 80, True),
    ("localhost, .corp.example", "git.corp.example", 443, True),
    ("", "example.com", 443, False),
])
def test_no_proxy_matching(entries: str, host: str, port: int, want: bool) -> None:
    assert NoProxy(parse_no_proxy(entries)).matches(host, port) is want


@pytest.mark.parametrize("text", ["10.0.0.0/33", "host:0", "host:99999", "bad host", "[::1", "a/b"])
def test_bad_no_proxy_entries_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="entry"):
        parse_no_proxy(text)


# Configuration and start-up.

@pytest.mark.parametrize("env,flags,want", [
    ({"HTTP_PROXY": "http://a:1", "HTTPS_PROXY": "http://b:1", "SOCKS5_PROXY": "socks5://c:1"}, {}, "http://a:1"),
    ({"https_proxy": "http://b:1", "SOCKS5_PROXY": "socks5://c:1"}, {}, "http://b:1"),
    ({"SOCKS5_PROXY": "socks5://c:1"}, {}, "socks5://c:1"),
    ({"HTTP_PROXY": "", "HTTPS_PROXY": "http://b:1"}, {}, "http://b:1"),
    ({"http_proxy": "http://lower:1"}, {}, "http://lower:1"),
    ({"HTTP_PROXY": "http://a:1"}, {"proxy": "http://flag:1"}, "http://flag:1"),
    ({"HTTP_PROXY": "http://a:1"}, {"proxy": ""}, ""),
])
def test_proxy_variables_in_order_and_the_flag_wins(env: dict[str, str], flags: dict[str, str], want: str) -> None:
    need_pysocks()
    assert build({}, env, flags).proxy == want


def test_no_proxy_from_env_file_and_flag() -> None:
    assert build({"no_proxy": ["a.example", "10.0.0.0/8"]}, {}, {}).no_proxy == ("a.example", "10.0.0.0/8")
    assert build({}, {"no_proxy": "b.example"}, {}).no_proxy == ("b.example",)
    assert build({}, {"NO_PROXY": "c.example,*"}, {"no-proxy": "d.example"}).no_proxy == ("d.example",)


@pytest.mark.parametrize("env,flags,words", [
    ({}, {"proxy": "ftp://x"}, ["flag -proxy", "unknown proxy scheme"]),
    ({"HTTPS_PROXY": "http://h:99999"}, {}, ["environment variable HTTPS_PROXY", "bad port"]),
    ({"socks5_proxy": "socks9://h"}, {}, ["environment variable socks5_proxy"]),
    ({"NO_PROXY": "10.0.0.0/40"}, {}, ["environment variable NO_PROXY", "10.0.0.0/40"]),
])
def test_bad_proxy_config_names_flag_or_variable(env: dict[str, str], flags: dict[str, str],
                                                 words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        build({}, env, flags)
    for w in words:
        assert w in str(err.value)


@pytest.mark.parametrize("args,env,words", [
    (["-proxy", "ftp://proxy.example"], {}, ["flag -proxy", "unknown proxy scheme"]),
    (["-proxy=http://proxy.example:70000"], {}, ["flag -proxy", "bad port"]),
    ([], {"HTTPS_PROXY": "socks5://127.0.0.1:1080"}, ["environment variable HTTPS_PROXY", "pip install pysocks"]),
])
def test_malformed_proxy_fails_at_start(args: list[str], env: dict[str, str], words: list[str],
                                        tmp_path: Path) -> None:
    # -S: no site-packages (so no PySocks), as on a bare host.
    proc = subprocess.run([sys.executable, "-S", "-E", str(ROOT / "goproxy.py"), *args], capture_output=True,
                          text=True, timeout=30, cwd=tmp_path, env={"PATH": os.environ["PATH"], **env})
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    for w in words:
        assert w in proc.stderr


def test_startup_log_states_proxy_and_dns_with_credentials_masked(procs: list[Proc], tmp_path: Path) -> None:
    pytest.importorskip("dns.message", reason="custom DNS needs dnspython: pip install dnspython")
    env = {"PATH": os.environ["PATH"], "HTTPS_PROXY": "http://alice:s3cret@proxy.example:3128",
           "NO_PROXY": "localhost,.corp.example", "DNS_SERVER": "tls://127.0.0.1:8853"}
    p, _ = start(procs, "-host", "127.0.0.1", "-port", "0", "-cache", str(tmp_path / "c"), env=env, cwd=tmp_path)
    p.wait_line(r"outbound proxy: http://alice:\*\*\*@proxy\.example:3128 \(not for localhost, \.corp\.example\)")
    p.wait_line(r"DNS: tls://127\.0\.0\.1:8853$")
    assert "s3cret" not in p.text()
    p2, _ = start(procs, "-host", "127.0.0.1", "-port", "0", "-cache", str(tmp_path / "d"), cwd=tmp_path)
    p2.wait_line("outbound proxy: none")
    p2.wait_line("DNS: system resolver")


def test_usage_lists_every_proxy_variable(capsys: pytest.CaptureFixture[str]) -> None:
    from goproxy import cli

    assert cli.main(["-h"], {}) == 0
    out = capsys.readouterr().out
    assert "HTTP_PROXY, http_proxy, HTTPS_PROXY, https_proxy, SOCKS5_PROXY, socks5_proxy" in out
    assert "-dns" in out
    assert "DNS_SERVER" in out
    assert "-no-proxy" in out
    assert "-ca-file" in out


def test_socket_level_sanity_of_free_ports() -> None:
    a, b, c = daemons.free_ports(3)
    assert len({a, b, c}) == 3
    with socket.socket() as s:
        s.bind(("127.0.0.1", a))
