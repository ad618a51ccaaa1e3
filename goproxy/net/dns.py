"""Custom DNS (-dns): UDP/TCP, DNS over TLS, HTTPS and QUIC, and a TTL cache.

DNS over HTTPS speaks RFC 8484 and JSON. The wire protocols use dnspython (DoQ also needs
aioquic), imported only when a query is made; DoH's JSON format needs neither.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .dial import Connector, describe, direct_connector, is_ip, mask
from .doh import MAX_CNAMES, Answer, DoH, NoSuchHost, NotThisFormat

log = logging.getLogger(__name__)

# DNS server schemes and their default ports.
DEFAULT_PORTS = {"udp": 53, "tcp": 53, "tls": 853, "https": 443, "quic": 853}


@dataclass(frozen=True)
class DNSServer:
    """A parsed -dns value: how and where to ask; url is the DoH URL for https."""

    scheme: str
    host: str
    port: int
    url: str = ""

    def __str__(self) -> str:
        if self.scheme == "https":
            return mask(self.url)
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_dns_server(text: str) -> DNSServer:
    """Parse a -dns value into a DNSServer.

    Accepts IP[:port], udp://IP[:port], tcp://IP[:port], tls://host[:port],
    https://host[:port]/path or quic://host[:port]. Raises ValueError saying what is wrong, and
    what to install when the scheme needs a package that is missing.
    """
    raw = text.strip()
    scheme, sep, rest = raw.partition("://")
    scheme = scheme.lower() if sep else "udp"
    if not sep:
        rest = raw
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"{mask(raw)!r}: unknown DNS scheme {scheme!r} "
                         "(want IP[:port], udp://, tcp://, tls://, https:// or quic://)")
    if scheme == "https":
        parts = urllib.parse.urlsplit(raw)
        host = parts.hostname or ""
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{mask(raw)!r}: bad port (want 1-65535)") from None
    else:
        host, port = _split_host_port(raw, rest.rstrip("/"))
    if not host:
        raise ValueError(f"{mask(raw)!r}: missing DNS server host")
    if port == 0:
        raise ValueError(f"{mask(raw)!r}: bad port (want 1-65535)")
    if scheme in ("udp", "tcp") and is_ip(host) is None:
        raise ValueError(f"{raw!r}: a {scheme} DNS server must be an IP address")
    _require(scheme)
    return DNSServer(scheme, host, port or DEFAULT_PORTS[scheme], raw if scheme == "https" else "")


def _split_host_port(raw: str, text: str) -> tuple[str, int | None]:
    if is_ip(text):
        return text, None  # a bare IPv6 address
    m = re.fullmatch(r"\[([^\]/]*)\](?::([^:]*))?|([^:\[\]/?@]*)(?::([^:]*))?", text)
    if not m:
        raise ValueError(f"{raw!r}: want host[:port] (IPv6 as [addr]:port), nothing after")
    host = m.group(1) if m.group(1) is not None else m.group(3)
    port_text = m.group(2) if m.group(1) is not None else m.group(4)
    if port_text is None:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{raw!r}: bad port {port_text!r} (want 1-65535)")
    return host, int(port_text)


def _require(scheme: str) -> None:
    """Raise ValueError naming the package a scheme needs when it is missing."""
    if scheme == "https":
        return  # the JSON format needs nothing; RFC 8484 wire format is skipped without dnspython
    try:
        import dns.message  # noqa: F401
        import dns.query  # noqa: F401
    except ImportError:
        if scheme == "quic":
            raise ValueError("quic:// DNS needs dnspython and aioquic (pip install 'dnspython[doq]')") from None
        raise ValueError(f"{scheme}:// DNS needs dnspython (pip install dnspython)") from None
    if scheme == "quic":
        try:
            import dns.quic
        except ImportError:
            have = False
        else:
            have = bool(dns.quic.have_quic)
        if not have:
            raise ValueError("quic:// DNS needs aioquic (pip install aioquic)")
        import inspect

        import dns.query as query

        if "server_hostname" not in inspect.signature(query.quic).parameters:
            raise ValueError("quic:// DNS needs dnspython 2.4 or newer to check the server's name")


def _have_dnspython() -> bool:
    try:
        import dns.message  # noqa: F401
    except ImportError:
        return False
    return True


class ResolveError(OSError):
    """A failed lookup; its message names the host and the DNS server."""


class Resolver:
    """A resolver that looks host names up on one DNS server and caches answers for their TTL.

    cafile replaces the system CAs for DoT, DoH and DoQ certificates (checked against the
    server's host name or IP as written in the spec); connect opens DoH connections (through
    the outbound proxy, when there is one). The DNS server's own host name is looked up with
    the system resolver. clock is injectable for tests.

    DoH asks in RFC 8484 wire format first; if the server answers that with anything but a
    DNS message (Google's /resolve answers 400), it asks in JSON (application/dns-json), and
    keeps to whichever format worked.
    """

    def __init__(self, server: DNSServer | str, cafile: str | None = None, connect: Connector | None = None,
                 timeout: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.server = parse_dns_server(server) if isinstance(server, str) else server
        self.timeout = timeout
        self._cafile = cafile
        self._tls = ssl.create_default_context(cafile=cafile)
        if self.server.scheme == "https":
            self._tls.set_alpn_protocols(["h2", "http/1.1"])
        self._https = DoH(self.server.url, self._tls, connect or direct_connector(), timeout)
        self._clock = clock
        self._cache: dict[str, tuple[float, list[str]]] = {}
        self._lock = threading.Lock()
        self._detecting = threading.Lock()
        # The DoH format that worked ("wire" or "json"); None until one has.
        self.doh_format: str | None = None if _have_dnspython() else "json"

    def resolve(self, host: str) -> list[str]:
        """Return host's IPv4 then IPv6 addresses (an IP literal as it is).

        Answers come from the cache while the answer's TTL lasts. Raises ResolveError naming
        host and DNS server.
        """
        ip = is_ip(host.strip("[]"))
        if ip is not None:
            return [ip]
        name = host.lower().rstrip(".")
        now = self._clock()
        with self._lock:
            hit = self._cache.get(name)
            if hit is not None and hit[0] > now:
                return list(hit[1])
        addresses, ttl = self._lookup(name)
        if ttl > 0:
            with self._lock:
                self._cache[name] = (now + ttl, addresses)
        return list(addresses)

    def _lookup(self, name: str) -> tuple[list[str], float]:
        """Ask for A and AAAA at once; either one answering is enough."""
        results: dict[str, tuple[list[str], float] | BaseException] = {}

        def ask(rdtype: str) -> None:
            try:
                results[rdtype] = self._query(name, rdtype)
            except NoSuchHost as exc:
                results[rdtype] = exc
            except _errors() as exc:
                results[rdtype] = exc

        aaaa = threading.Thread(target=ask, args=("AAAA",), name="goproxy-resolve", daemon=True)
        aaaa.start()
        ask("A")
        aaaa.join()
        found: list[str] = []
        ttls: list[float] = []
        errors: list[BaseException] = []
        for rdtype in ("A", "AAAA"):
            result = results[rdtype]
            if isinstance(result, NoSuchHost):
                raise ResolveError(f"resolving {name} via {self.server}: no such host") from None
            if isinstance(result, BaseException):
                log.debug("resolving %s %s via %s: %s", name, rdtype, self.server, result)
                errors.append(result)
            elif result[0]:
                found += result[0]
                ttls.append(result[1])
        if found:
            return found, min(ttls)
        if errors:
            raise ResolveError(f"resolving {name} via {self.server}: {_reason(errors[0])}") from errors[0]
        raise ResolveError(f"resolving {name} via {self.server}: no A or AAAA records")

    def _query(self, name: str, rdtype: str) -> tuple[list[str], float]:
        """Ask for name's rdtype records, asking again for the target of an unfollowed CNAME.

        Returns the addresses and the smallest TTL on the way.
        """
        ttls: list[float] = []
        for _ in range(MAX_CNAMES):
            addresses, ttl, target = self._ask(name, rdtype)
            ttls.append(ttl)
            if addresses or target is None:
                return addresses, min(ttls)
            name = target
        raise ValueError(f"more than {MAX_CNAMES} CNAMEs")

    def _ask(self, name: str, rdtype: str) -> Answer:
        if self.server.scheme == "https":
            return self._doh(name, rdtype)
        import dns.message

        q = dns.message.make_query(name, rdtype)
        return _addresses(self._exchange(q), q, name, rdtype)

    def _exchange(self, q: Any) -> Any:
        """Send query q over UDP (TCP when truncated), TCP, TLS or QUIC."""
        import dns.query

        s = self.server
        last: OSError | None = None
        for where in self._server_addresses():
            try:
                if s.scheme == "udp":
                    return dns.query.udp_with_fallback(q, where, timeout=self.timeout, port=s.port)[0]
                if s.scheme == "tcp":
                    return dns.query.tcp(q, where, timeout=self.timeout, port=s.port)
                if s.scheme == "tls":
                    return dns.query.tls(q, where, timeout=self.timeout, port=s.port, ssl_context=self._tls,
                                         server_hostname=s.host)
                return dns.query.quic(q, where, timeout=self.timeout, port=s.port,
                                      verify=self._cafile or True, server_hostname=s.host)
            except OSError as exc:
                last = exc
            except _quic_eof():
                # aioquic logs the reason (on the "quic" logger); dnspython only says EOF.
                last = ConnectionError("QUIC connection closed before the answer (certificate not trusted, "
                                       "or the server went away)")
        assert last is not None
        raise last

    def _server_addresses(self) -> list[str]:
        """Return the DNS server's IPs: as written, else from the system resolver."""
        host = self.server.host
        if is_ip(host):
            return [host]
        try:
            infos = socket.getaddrinfo(host, self.server.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise OSError(f"looking up the DNS server {host}: {exc}") from exc
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    # DNS-over-HTTPS.

    def _doh(self, name: str, rdtype: str) -> Answer:
        if self.doh_format is None:
            with self._detecting:  # one query finds the format; the others wait for it
                if self.doh_format is None:
                    return self._doh_detect(name, rdtype)
        if self.doh_format == "json":
            return self._https.json(name, rdtype)
        try:
            return self._doh_wire(name, rdtype)
        except NotThisFormat as exc:
            raise ValueError(f"not a DNS answer: {exc}") from None

    def _doh_detect(self, name: str, rdtype: str) -> Answer:
        """Ask in wire format, then in JSON, and keep the format that worked."""
        try:
            result = self._doh_wire(name, rdtype)
        except NotThisFormat as exc:
            wire = exc
        else:
            self.doh_format = "wire"
            return result
        try:
            result = self._https.json(name, rdtype)
        except NotThisFormat as exc:
            raise ValueError(f"not a DoH server: RFC 8484 query: {wire}; JSON query: {exc}") from None
        log.info("DNS server %s answers in JSON (application/dns-json)", self.server)
        self.doh_format = "json"
        return result

    def _doh_wire(self, name: str, rdtype: str) -> Answer:
        import dns.exception
        import dns.message

        q = dns.message.make_query(name, rdtype)
        q.id = 0  # RFC 8484 section 4.1: ID 0 keeps GET answers cacheable
        try:
            msg = dns.message.from_wire(self._https.wire(q.to_wire()))
        except dns.exception.DNSException:
            raise NotThisFormat("answer is not a DNS message") from None
        return _addresses(msg, q, name, rdtype)


def _addresses(msg: Any, q: Any, name: str, rdtype: str) -> Answer:
    """Read rdtype records for name from answer msg, following CNAMEs in it.

    Raises NoSuchHost for NXDOMAIN, ValueError for another error code or an answer to some
    other question.
    """
    import dns.name
    import dns.rcode
    import dns.rdataclass
    import dns.rdatatype

    if not q.is_response(msg):
        raise ValueError("answer does not match the question")
    rcode = msg.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        raise NoSuchHost()
    if rcode != dns.rcode.NOERROR:
        raise ValueError(f"server answered {dns.rcode.to_text(rcode)}")
    qname = dns.name.from_text(name)
    want = dns.rdatatype.from_text(rdtype)
    ttls: list[float] = []
    for _ in range(MAX_CNAMES):
        rrset = msg.get_rrset(msg.answer, qname, dns.rdataclass.IN, want)
        if rrset is not None:
            return [str(r.address) for r in rrset], float(min(ttls + [rrset.ttl])), None
        cname = msg.get_rrset(msg.answer, qname, dns.rdataclass.IN, dns.rdatatype.CNAME)
        if cname is None:
            break
        ttls.append(cname.ttl)
        qname = cname[0].target
    return [], float(min(ttls, default=0)), qname.to_text(omit_final_dot=True) if ttls else None


def _quic_eof() -> tuple[type[BaseException], ...]:
    """Return dnspython's exception for a QUIC connection closed under a query (() without it)."""
    try:
        from dns.quic._common import UnexpectedEOF
    except ImportError:
        return ()
    return (UnexpectedEOF,)


def _errors() -> tuple[type[BaseException], ...]:
    """Return the exceptions a failed query raises: network, protocol and dnspython's."""
    kinds: tuple[type[BaseException], ...] = (OSError, EOFError, ValueError)
    try:
        import dns.exception
    except ImportError:
        return kinds
    return (*kinds, dns.exception.DNSException)


def _reason(exc: BaseException) -> str:
    """Return a one-line description of a failed query (dnspython's Timeout reads "timed out")."""
    try:
        from dns.exception import Timeout
    except ImportError:
        return describe(exc)
    return "timed out" if isinstance(exc, Timeout) else describe(exc)
