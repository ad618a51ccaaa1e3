"""DNS over HTTPS: RFC 8484 wire-format and JSON (application/dns-json) queries.

Each query is a GET on its own connection, over HTTP/2 when the server picks it (h2.py), else
HTTP/1.1.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

from . import h2, tlsintls
from .dial import Connector, is_ip

# The largest body accepted: a DNS message is at most 64 KiB, a JSON answer is smaller.
MAX_BODY = 64 << 10

_RDTYPES = {"A": 1, "AAAA": 28}
_CNAME = 5
# The most CNAMEs followed within one answer.
MAX_CNAMES = 8

# An answer: the addresses, the smallest TTL on the way to them, and the name a CNAME chain
# ended at when the server did not follow it (None otherwise).
Answer = tuple[list[str], float, Optional[str]]


class NoSuchHost(Exception):
    """The server answered NXDOMAIN."""


class NotThisFormat(Exception):
    """The server did not answer in the format asked for."""


class DoH:
    """A client of one DoH server (url), over connections that connect opens and tls secures.

    tls should offer ALPN h2 and http/1.1; timeout bounds each query.
    """

    def __init__(self, url: str, tls: ssl.SSLContext, connect: Connector, timeout: float) -> None:
        self.url, self.tls, self.connect, self.timeout = url, tls, connect, timeout

    def _get(self, params: dict[str, str], accept: str) -> Reply:
        parts = urllib.parse.urlsplit(self.url)
        query = "&".join(q for q in (parts.query, urllib.parse.urlencode(params)) if q)
        url = urllib.parse.urlunsplit(parts._replace(query=query, fragment=""))
        return get(url, {"Accept": accept, "User-Agent": "goproxy"}, self.connect, self.tls, self.timeout)

    def wire(self, query: bytes) -> bytes:
        """Send an RFC 8484 query (its ID should be 0) and return the answer's bytes.

        Raises NotThisFormat when the server answers with anything but application/dns-message,
        OSError and ValueError as get does.
        """
        param = base64.urlsafe_b64encode(query).rstrip(b"=").decode()
        reply = self._get({"dns": param}, "application/dns-message")
        if reply.status != 200:
            raise NotThisFormat(f"HTTP status {reply.status or 'other than 200'}")
        if reply.content_type and not reply.content_type.startswith("application/dns-message"):
            raise NotThisFormat(f"answered {reply.content_type}")
        return reply.body

    def json(self, name: str, rdtype: str) -> Answer:
        """Ask for name's rdtype ("A" or "AAAA") records in the JSON format.

        CNAMEs in the answer are followed. Raises NotThisFormat when the answer is not DNS JSON,
        NoSuchHost for NXDOMAIN, ValueError for another error code or a bad record.
        """
        reply = self._get({"name": name, "type": rdtype}, "application/dns-json")
        if reply.status != 200:
            raise NotThisFormat(f"HTTP status {reply.status or 'other than 200'}")
        try:
            data = json.loads(reply.body)
            status = int(data["Status"])
            answers = [(int(a["type"]), _fqdn(str(a["name"])), str(a["data"]), float(a.get("TTL", 0)))
                       for a in data.get("Answer") or []]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise NotThisFormat("answer is not DNS JSON") from None
        if status == 3:
            raise NoSuchHost()
        if status != 0:
            raise ValueError(f"server answered rcode {status}")
        owner = _fqdn(name)
        ttls: list[float] = []
        for _ in range(MAX_CNAMES):
            found = [(d, t) for kind, n, d, t in answers if kind == _RDTYPES[rdtype] and n == owner]
            if found:
                addresses = [is_ip(d) for d, _ in found]
                if None in addresses:
                    raise ValueError(f"bad {rdtype} record in {found!r}")
                return [a for a in addresses if a], min(ttls + [t for _, t in found]), None
            cname = next(((d, t) for kind, n, d, t in answers if kind == _CNAME and n == owner), None)
            if cname is None:
                break
            owner = _fqdn(cname[0])
            ttls.append(cname[1])
        return [], min(ttls, default=0.0), owner.rstrip(".") if ttls else None


def _fqdn(name: str) -> str:
    return name.lower().rstrip(".") + "."


@dataclass(frozen=True)
class Reply:
    """A DoH server's answer.

    status is 0 when an HTTP/2 server sent a Huffman-coded status this client does not
    decode (never for 200, which HPACK always sends as a static table index); content_type
    is "" when unknown for the same reason.
    """

    status: int
    content_type: str
    body: bytes


def get(url: str, headers: Mapping[str, str], connect: Connector, tls: ssl.SSLContext, timeout: float) -> Reply:
    """Send GET url on a new connection and return the server's reply.

    The connection is opened by connect and secured by tls (whose ALPN list should offer h2
    and http/1.1); timeout bounds the whole exchange.

    Raises OSError for network and TLS failures, ValueError for a malformed answer.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or 443
    authority = (f"[{host}]" if ":" in host else host) + ("" if port == 443 else f":{port}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    deadline = time.monotonic() + timeout
    raw = connect(host, port, timeout)
    try:
        raw.settimeout(timeout)
        sock = tlsintls.wrap(tls, raw, host)
    except BaseException:
        raw.close()
        raise
    with sock:
        if getattr(sock, "selected_alpn_protocol", lambda: None)() == "h2":
            return Reply(*h2.get(sock, authority, path, headers, deadline, MAX_BODY))
        return _h1_get(sock, host, port, path, headers)


def _h1_get(sock: socket.socket, host: str, port: int, path: str, headers: Mapping[str, str]) -> Reply:
    conn = http.client.HTTPConnection(host, port)
    conn.sock = sock
    try:
        conn.request("GET", path, headers=dict(headers))
        resp = conn.getresponse()
        body = resp.read(MAX_BODY + 1)
    except http.client.HTTPException as exc:
        raise ValueError(f"bad HTTP answer: {type(exc).__name__} {exc}") from exc
    if len(body) > MAX_BODY:
        raise ValueError(f"answer larger than {MAX_BODY} bytes")
    return Reply(resp.status, resp.headers.get("Content-Type", ""), body)
