"""Custom DNS: spec parsing, and lookups against real servers — unbound over UDP/TCP, DoT and DoH
(HTTP/2), a DoH JSON endpoint and a DNS-over-QUIC server that forward to unbound."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from goproxy.configload import build
from goproxy.errors import ConfigError
from goproxy.net.dns import DNSServer, ResolveError, Resolver, parse_dns_server
from tests.support.certs import Certs
from tests.support.daemons import Unbound, free_port
from tests.support.dnsservers import DoHJSON, DoQServer
from tests.support.helpers import ROOT, FakeClock

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("spec,want,text", [
    ("127.0.0.1", DNSServer("udp", "127.0.0.1", 53), "udp://127.0.0.1:53"),
    ("127.0.0.1:5353", DNSServer("udp", "127.0.0.1", 5353), "udp://127.0.0.1:5353"),
    ("udp://10.0.0.1:53/", DNSServer("udp", "10.0.0.1", 53), "udp://10.0.0.1:53"),
    ("::1", DNSServer("udp", "::1", 53), "udp://[::1]:53"),
    ("[2001:db8::53]:5353", DNSServer("udp", "2001:db8::53", 5353), "udp://[2001:db8::53]:5353"),
    ("tcp://10.0.0.1", DNSServer("tcp", "10.0.0.1", 53), "tcp://10.0.0.1:53"),
    ("tls://dns.example", DNSServer("tls", "dns.example", 853), "tls://dns.example:853"),
    ("TLS://1.1.1.1:8853", DNSServer("tls", "1.1.1.1", 8853), "tls://1.1.1.1:8853"),
    ("https://dns.google/resolve", DNSServer("https", "dns.google", 443, "https://dns.google/resolve"),
     "https://dns.google/resolve"),
    ("https://h.example:8443/dns-query", DNSServer("https", "h.example", 8443, "https://h.example:8443/dns-query"),
     "https://h.example:8443/dns-query"),
])
def test_dns_specs_parse(spec: str, want: DNSServer, text: str) -> None:
    assert parse_dns_server(spec) == want
    assert str(want) == text


def test_quic_spec_parses_when_aioquic_is_installed() -> None:
    pytest.importorskip("aioquic", reason="DoQ needs aioquic: pip install 'dnspython[doq]'")
    assert parse_dns_server("quic://dns.example") == DNSServer("quic", "dns.example", 853)


@pytest.mark.parametrize("spec,words", [
    ("ftp://1.2.3.4", ["unknown DNS scheme", "ftp"]),
    ("udp://dns.google", ["must be an IP address"]),
    ("tcp://dns.google:53", ["must be an IP address"]),
    ("127.0.0.1:99999", ["bad port"]),
    ("127.0.0.1:0", ["bad port"]),
    ("tls://dns.example:x", ["bad port"]),
    ("https://dns.example:99999/q", ["bad port"]),
    ("tls://", ["missing DNS server host"]),
    ("https:///dns-query", ["missing DNS server host"]),
    ("quic://", ["missing DNS server host"]),
    ("udp://1.2.3.4/path", ["want host[:port]"]),
])
def test_malformed_dns_specs_are_rejected(spec: str, words: list[str]) -> None:
    with pytest.raises(ValueError) as err:
        parse_dns_server(spec)
    for w in words:
        assert w in str(err.value)


def test_missing_packages_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import dns.quic

    monkeypatch.setattr(dns.quic, "have_quic", False)
    with pytest.raises(ValueError, match=r"pip install aioquic"):
        parse_dns_server("quic://dns.example")
    monkeypatch.setitem(sys.modules, "dns.message", None)
    with pytest.raises(ValueError, match=r"pip install dnspython"):
        parse_dns_server("tls://dns.example")
    assert parse_dns_server("https://dns.google/resolve").scheme == "https"  # JSON needs nothing


@pytest.mark.parametrize("env,flags,words", [
    ({}, {"dns": "ftp://x"}, ["flag -dns", "unknown DNS scheme"]),
    ({"DNS_SERVER": "tls://h:70000"}, {}, ["environment variable DNS_SERVER", "bad port"]),
])
def test_bad_dns_config_names_flag_or_variable(env: dict[str, str], flags: dict[str, str], words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        build({}, env, flags)
    for w in words:
        assert w in str(err.value)


def test_dns_without_dnspython_fails_at_start_naming_the_flag(tmp_path: Path) -> None:
    # -S: no site-packages, as on a bare host.
    proc = subprocess.run([sys.executable, "-S", "-E", str(ROOT / "goproxy.py"), "-dns", "tls://127.0.0.1"],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 2
    assert "flag -dns" in proc.stderr
    assert "pip install dnspython" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_ip_literals_skip_dns() -> None:
    r = Resolver(f"udp://127.0.0.1:{free_port()}", timeout=0.2)
    assert r.resolve("10.1.2.3") == ["10.1.2.3"]
    assert r.resolve("[::1]") == ["::1"]


# Against unbound.

@pytest.mark.parametrize("name,want", [
    ("modules.test", ["127.0.0.1"]),
    ("six.test", ["::1"]),
    ("dual.test", ["127.0.0.1", "::1"]),
    ("alias.test", ["127.0.0.1"]),  # unbound leaves the CNAME for the client to follow
])
@pytest.mark.parametrize("scheme", ["udp", "tcp"])
def test_udp_and_tcp_lookups(unbound: Unbound, scheme: str, name: str, want: list[str]) -> None:
    r = Resolver(f"{scheme}://127.0.0.1:{unbound.port}")
    assert r.resolve(name) == want
    assert unbound.queries(name) >= 2  # A and AAAA


def test_truncated_udp_answer_is_retried_over_tcp(unbound: Unbound) -> None:
    import dns.flags
    import dns.message
    import dns.query

    q = dns.message.make_query("big.test", "A")
    assert dns.query.udp(q, "127.0.0.1", port=unbound.port, timeout=5).flags & dns.flags.TC
    assert len(Resolver(f"127.0.0.1:{unbound.port}").resolve("big.test")) == 100


def test_unknown_name_is_no_such_host_naming_the_server(unbound: Unbound) -> None:
    want = rf"resolving nope\.test via udp://127\.0\.0\.1:{unbound.port}: no such host"
    with pytest.raises(ResolveError, match=want):
        Resolver(f"127.0.0.1:{unbound.port}").resolve("nope.test")


def test_dns_over_tls_checks_the_certificate(unbound: Unbound, certs: Certs) -> None:
    spec = f"tls://127.0.0.1:{unbound.tls_port}"
    before = unbound.queries("modules.test")
    assert Resolver(spec, cafile=str(certs.ca)).resolve("modules.test") == ["127.0.0.1"]
    assert unbound.queries("modules.test") == before + 2
    with pytest.raises(ResolveError, match=rf"via {spec}: TLS error: certificate verify failed"):
        Resolver(spec).resolve("modules.test")  # the system CAs do not know the test CA
    # The certificate is for dns.test and 127.0.0.1, not for the name written in the spec.
    with pytest.raises(ResolveError, match=r"certificate verify failed.*(localhost|mismatch)"):
        Resolver(f"tls://localhost:{unbound.tls_port}", cafile=str(certs.ca)).resolve("modules.test")


def test_dns_over_https_wire_format_over_http2(unbound: Unbound, certs: Certs) -> None:
    r = Resolver(f"https://127.0.0.1:{unbound.https_port}/dns-query", cafile=str(certs.ca))
    assert r.resolve("dual.test") == ["127.0.0.1", "::1"]
    assert r.doh_format == "wire"
    assert unbound.queries("dual.test") == 2
    with pytest.raises(ResolveError, match="no such host"):
        r.resolve("nope.test")


@pytest.fixture
def doh_json(unbound: Unbound, certs: Certs) -> Iterator[DoHJSON]:
    server = DoHJSON(certs, unbound.port)
    yield server
    server.close()


def test_dns_over_https_falls_back_to_json_and_keeps_to_it(doh_json: DoHJSON, unbound: Unbound, certs: Certs) -> None:
    r = Resolver(doh_json.url, cafile=str(certs.ca))
    assert r.resolve("modules.test") == ["127.0.0.1"]
    assert r.doh_format == "json"
    assert (doh_json.refused, doh_json.json_answers) == (1, 2)  # one wire query refused, then A and AAAA
    assert r.resolve("alias.test") == ["127.0.0.1"]
    assert doh_json.refused == 1
    assert doh_json.json_answers > 2
    assert doh_json.accepts[0] == "application/dns-message"
    assert set(doh_json.accepts[1:]) == {"application/dns-json"}
    with pytest.raises(ResolveError, match="no such host"):
        r.resolve("nope.test")


def test_dns_over_https_wire_format_over_http1(unbound: Unbound, certs: Certs) -> None:
    server = DoHJSON(certs, unbound.port, wire=True)
    try:
        r = Resolver(server.url, cafile=str(certs.ca))
        assert r.resolve("dual.test") == ["127.0.0.1", "::1"]
        assert (r.doh_format, server.wire_answers, server.json_answers) == ("wire", 2, 0)
    finally:
        server.close()


def test_answers_are_cached_for_their_ttl(doh_json: DoHJSON, certs: Certs) -> None:
    clock = FakeClock()
    r = Resolver(doh_json.url, cafile=str(certs.ca), clock=clock)
    assert r.resolve("dual.test") == ["127.0.0.1", "::1"]  # A has TTL 40, AAAA 20
    asked = doh_json.json_answers
    assert r.resolve("DUAL.test.") == ["127.0.0.1", "::1"]
    clock.advance(19)
    r.resolve("dual.test")
    assert doh_json.json_answers == asked
    clock.advance(2)
    r.resolve("dual.test")
    assert doh_json.json_answers == asked + 2


def test_dns_over_quic(unbound: Unbound, certs: Certs) -> None:
    pytest.importorskip("aioquic", reason="DoQ needs aioquic: pip install 'dnspython[doq]' (make test installs it)")
    server = DoQServer(certs, unbound.port)
    try:
        r = Resolver(f"quic://127.0.0.1:{server.port}", cafile=str(certs.ca), timeout=5)
        assert r.resolve("dual.test") == ["127.0.0.1", "::1"]
        assert server.queries == 2
        assert unbound.queries("dual.test") == 2
        with pytest.raises(ResolveError, match=f"via quic://127.0.0.1:{server.port}: "):
            Resolver(f"quic://127.0.0.1:{server.port}", timeout=2).resolve("six.test")  # untrusted CA
        assert server.queries == 2
    finally:
        server.close()


def test_a_silent_server_times_out_naming_it() -> None:
    silent = socket.socket()  # accepts TCP (the kernel does), never answers TLS
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    port = silent.getsockname()[1]
    try:
        with pytest.raises(ResolveError, match=rf"^resolving modules\.test via tls://127\.0\.0\.1:{port}: timed out$"):
            Resolver(f"tls://127.0.0.1:{port}", timeout=0.3).resolve("modules.test")
    finally:
        silent.close()
