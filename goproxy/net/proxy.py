"""Outbound proxies: proxy URLs, NO_PROXY matching, HTTP CONNECT and SOCKS5 tunnels."""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

from .dial import Connector, Resolve, basic_auth, describe, direct_connector, is_ip, mask

# Proxy schemes and their default ports (as the go command's httpproxy package has them).
SCHEMES = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080}

# The longest CONNECT reply head we read before giving up on the proxy.
_MAX_REPLY_HEAD = 16 << 10


class ProxyFailure(OSError):
    """A connection through the outbound proxy failed; the message names the proxy and why."""


@dataclass(frozen=True)
class ProxyURL:
    """A parsed -proxy value; text is the URL with the password masked."""

    scheme: str
    host: str
    port: int
    username: str = ""
    password: str = ""

    @property
    def text(self) -> str:
        """Return scheme://[user:***@]host:port for logs and error messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{urllib.parse.quote(self.username, safe='')}:***@" if self.username else ""
        return f"{self.scheme}://{user}{host}:{self.port}"


def parse_proxy_url(text: str) -> ProxyURL:
    """Parse a -proxy value: http://, https://, socks5:// or socks5h:// [user:password@]host[:port].

    A value without a scheme is http://. Raises ValueError saying what is wrong, and what to
    install when a SOCKS proxy is asked for without PySocks.
    """
    raw = text.strip()
    if "://" not in raw:
        raw = "http://" + raw
    parts = urllib.parse.urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"{mask(raw)}: unknown proxy scheme {scheme!r} (want http, https, socks5 or socks5h)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{mask(raw)}: bad port (want 1-65535)") from None
    if not parts.hostname:
        raise ValueError(f"{mask(raw)}: missing proxy host")
    if port == 0:
        raise ValueError(f"{mask(raw)}: bad port (want 1-65535)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{mask(raw)}: a proxy URL has no path, query or fragment")
    if scheme.startswith("socks"):
        try:
            import socks  # noqa: F401
        except ImportError:
            raise ValueError(f"{scheme}:// proxies need PySocks (pip install pysocks)") from None
    return ProxyURL(scheme, parts.hostname, port or SCHEMES[scheme],
                    urllib.parse.unquote(parts.username or ""), urllib.parse.unquote(parts.password or ""))


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = is_ip(host)
    return None if text is None else ipaddress.ip_address(text)


@dataclass(frozen=True)
class _Rule:
    """One NO_PROXY entry: a domain (with its subdomains), an IP, a network or "*"."""

    domain: str = ""
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    port: int = 0  # 0: any port

    def matches(self, host: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None, port: int) -> bool:
        """Report whether this entry covers host (ip: host as an address, or None) on port."""
        if self.port and self.port != port:
            return False
        if self.network is not None:
            return ip is not None and ip in self.network
        return self.domain == "*" or host == self.domain or host.endswith("." + self.domain)


def _parse_rule(entry: str) -> _Rule:
    """Parse one NO_PROXY entry; raise ValueError for a malformed one."""
    text = entry.strip().lower()
    if text == "*":
        return _Rule(domain="*")
    if "/" in text:
        try:
            return _Rule(network=ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"entry {entry!r}: not a CIDR network") from None
    host, port = text, 0
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:]*):(\d+)", text)
    if m:
        host = m.group(1) or m.group(3)
        port = int(m.group(2) or m.group(4) or 0)
        if not 0 < port < 65536 and (m.group(2) or m.group(4)):
            raise ValueError(f"entry {entry!r}: bad port")
    ip = _ip(host) if "[" not in host and "]" not in host else None
    if ip is not None:
        return _Rule(network=ipaddress.ip_network(ip), port=port)
    domain = host[2:] if host.startswith("*.") else host.lstrip(".")
    if not domain or not re.fullmatch(r"[a-z0-9_.-]+", domain):
        raise ValueError(f"entry {entry!r}: want a domain, an IP, a CIDR network, host:port or *")
    return _Rule(domain=domain.rstrip("."), port=port)


def parse_no_proxy(text: str) -> tuple[str, ...]:
    """Split and check a NO_PROXY list; raise ValueError naming a bad entry."""
    entries = tuple(e.strip() for e in text.split(",") if e.strip())
    for e in entries:
        _parse_rule(e)
    return entries


class NoProxy:
    """The set of hosts that bypass the proxy.

    Entries (case-insensitive): "*" (every host); a domain, which matches itself and its
    subdomains ("example.com", ".example.com" and "*.example.com" are the same); an IP address;
    a CIDR network ("10.0.0.0/8"), matched against hosts given as IP addresses; any of these
    but "*" and a network with ":port", which limits it to that port.
    """

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.rules = [_parse_rule(e) for e in entries]

    def matches(self, host: str, port: int) -> bool:
        """Report whether host:port bypasses the proxy."""
        name = host.lower().rstrip(".")
        ip = _ip(name)
        if ip is not None:
            name = str(ip)
        return any(r.matches(name, ip, port) for r in self.rules)


class Proxy:
    """One HTTP(S) or SOCKS5 proxy that outbound connections go through.

    Hosts that no_proxy names are connected to directly. The proxy's own host, and for socks5://
    each target host, are resolved with resolve when given (the -dns resolver), else by the
    system; socks5h:// and HTTP proxies resolve target names themselves. tls verifies an
    https:// proxy's certificate.
    """

    def __init__(self, url: str, no_proxy: Iterable[str] = (),
                 resolve: Resolve | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.url = parse_proxy_url(url)
        self.no_proxy = NoProxy(no_proxy)
        self._resolve = resolve
        self._direct = direct_connector(resolve)
        self._tls = tls or ssl.create_default_context()

    @property
    def forwards_http(self) -> bool:
        """Return True for HTTP proxies: plain-http requests go to them in absolute form."""
        return self.url.scheme in ("http", "https")

    def applies(self, host: str, port: int) -> bool:
        """Report whether connections to host:port go through the proxy."""
        return not self.no_proxy.matches(host, port)

    def auth_headers(self) -> dict[str, str]:
        """Return the headers carrying the proxy's credentials to an HTTP proxy (Basic), or none."""
        if not self.url.username or not self.forwards_http:
            return {}
        return {"Proxy-Authorization": basic_auth(self.url.username, self.url.password)}

    def connect(self, host: str, port: int, timeout: float) -> socket.socket:
        """Open a connection to host:port: a tunnel through the proxy, or direct for NO_PROXY hosts.

        This method is a Connector.
        """
        if self.applies(host, port):
            return self.tunnel(host, port, timeout)
        return self._direct(host, port, timeout)

    def connect_proxy(self, timeout: float) -> socket.socket:
        """Open a connection to the HTTP proxy itself (TLS for https://).

        Raises ProxyFailure naming the proxy.
        """
        u = self.url
        try:
            sock = self._direct(u.host, u.port, timeout)
        except OSError as exc:
            raise ProxyFailure(f"proxy {u.text}: {describe(exc)}") from exc
        if u.scheme != "https":
            return sock
        try:
            return self._tls.wrap_socket(sock, server_hostname=u.host)
        except OSError as exc:
            sock.close()
            raise ProxyFailure(f"proxy {u.text}: {describe(exc)}") from exc

    def tunnel(self, host: str, port: int, timeout: float) -> socket.socket:
        """Open a tunnel to host:port through the proxy (SOCKS5 or HTTP CONNECT).

        This method is a Connector. Raises ProxyFailure naming the proxy and what it answered.
        """
        if self.url.scheme.startswith("socks"):
            return self._socks(host, port, timeout)
        return self._http_connect(host, port, timeout)

    def _http_connect(self, host: str, port: int, timeout: float) -> socket.socket:
        u = self.url
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        sock = self.connect_proxy(timeout)
        try:
            sock.settimeout(timeout)
            head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
            for k, v in self.auth_headers().items():
                head += f"{k}: {v}\r\n"
            sock.sendall((head + "\r\n").encode("latin-1"))
            status_line = _read_head(sock).split("\r\n", 1)[0]
            fields = status_line.split(" ", 2)
            if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
                raise ProxyFailure(f"proxy {u.text}: bad reply to CONNECT {authority}: {status_line[:100]!r}")
            if not fields[1].startswith("2"):
                raise ProxyFailure(f"proxy {u.text}: CONNECT {authority} refused: {' '.join(fields[1:])}")
            return sock
        except ProxyFailure:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            raise ProxyFailure(f"proxy {u.text}: CONNECT {authority}: {describe(exc)}") from exc

    def _socks(self, host: str, port: int, timeout: float) -> socket.socket:
        import socks

        u = self.url
        remote_dns = u.scheme == "socks5h"
        targets = [host] if remote_dns or _ip(host) or self._resolve is None else self._resolve(host)
        proxies = [u.host] if _ip(u.host) or self._resolve is None else self._resolve(u.host)
        last: OSError | None = None
        for proxy_addr in proxies:
            for target in targets:
                try:
                    sock: socket.socket = socks.create_connection(
                        (target, port), timeout=timeout, proxy_type=socks.SOCKS5, proxy_addr=proxy_addr,
                        proxy_port=u.port, proxy_rdns=remote_dns, proxy_username=u.username or None,
                        proxy_password=u.password or None)
                    return sock
                except OSError as exc:
                    last = exc
                    if isinstance(exc, socks.SOCKS5AuthError):
                        break
        raise ProxyFailure(f"proxy {u.text}: {host}:{port}: {describe(last)}")


def _read_head(sock: socket.socket) -> str:
    """Read a reply head up to its blank line.

    Reads byte by byte so that nothing the tunnel carries afterwards is consumed.
    """
    data = bytearray()
    while not data.endswith(b"\r\n\r\n"):
        if len(data) > _MAX_REPLY_HEAD:
            raise OSError("reply head too long")
        b = sock.recv(1)
        if not b:
            raise OSError("proxy closed the connection")
        data += b
    return data.decode("latin-1")



def proxy_connector(proxy: Proxy | None, resolve: Resolve | None = None) -> Connector:
    """Return a Connector through proxy (NO_PROXY honoured), or a direct one without a proxy."""
    return proxy.connect if proxy is not None else direct_connector(resolve)
