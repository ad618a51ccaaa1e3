"""Connection opening, and the small helpers every outbound path shares.

The helpers: IP literals, error descriptions, Basic credentials and URLs with their passwords
masked.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import socket
import ssl
import urllib.parse
from collections.abc import Callable

# A connector opens a connected TCP socket to (host, port) within timeout; raises OSError.
Connector = Callable[[str, int, float], socket.socket]

# A resolver maps a host name to its addresses; raises OSError.
Resolve = Callable[[str], list[str]]


def direct_connector(resolve: Resolve | None = None) -> Connector:
    """Return a Connector that connects straight to the host.

    The host is looked up with resolve when given (the -dns resolver), else by the system;
    each address is tried in turn and the last failure raised.
    """

    def connect(host: str, port: int, timeout: float) -> socket.socket:
        if resolve is None:
            return socket.create_connection((host, port), timeout=timeout)
        last: OSError | None = None
        for address in resolve(host):
            try:
                return socket.create_connection((address, port), timeout=timeout)
            except OSError as exc:
                last = exc
        raise last or OSError(f"no addresses for {host}")

    return connect


def is_ip(host: str) -> str | None:
    """Return host in canonical form when it is an IP literal (brackets allowed), else None."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def describe(exc: BaseException | None) -> str:
    """Return a one-line description of a failed network operation for logs and error bodies."""
    if exc is None:
        return "no address"
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS error: certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    return (str(exc) or type(exc).__name__).replace("\n", " ")


def basic_auth(user: str, password: str) -> str:
    """Return the Authorization (or Proxy-Authorization) value for HTTP Basic credentials."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def mask_url(url: str) -> str:
    """Return url with the password of its userinfo replaced by ***, for logs and errors."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    user = urllib.parse.quote(parts.username or "", safe="")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def mask(text: str) -> str:
    """Return text with the password of any URL in it masked, even in a malformed URL."""
    return re.sub(r"//([^/@:]*):[^/@]*@", r"//\1:***@", text)
