"""The listening socket: dual-stack binding, the open-files limit, and printable client addresses."""

from __future__ import annotations

import errno
import logging
import socket

log = logging.getLogger(__name__)

# How many connections the kernel may queue before one is accepted (capped by net.core.somaxconn).
BACKLOG = 4096


def bind(host: str, port: int, backlog: int = BACKLOG) -> socket.socket:
    """Return a listening TCP socket on host:port, inheritable by forked workers.

    An empty host listens on every address, IPv6 and IPv4 at once (an IPv6 socket on "::" with
    IPV6_V6ONLY off, as Go's ":port" does), or on IPv4 alone where the host has no IPv6. Any
    other host is resolved and the first address it gives is bound. Raises OSError when the
    address cannot be bound (in use, not local, refused).
    """
    if host:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        return _listen(family, (str(address[0]), int(address[1])), backlog)
    if socket.has_ipv6:
        try:
            return _listen(socket.AF_INET6, ("::", port), backlog, dual=True)
        except OSError as exc:
            if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT):
                raise
            log.info("no IPv6 on this host (%s); listening on IPv4 only", exc.strerror)
    return _listen(socket.AF_INET, ("0.0.0.0", port), backlog)


def _listen(family: int, address: tuple[str, int], backlog: int,
            dual: bool = False) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if dual:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bound_port(sock: socket.socket) -> int:
    """Return the TCP port sock is bound to (the one picked when it was bound to port 0)."""
    return int(sock.getsockname()[1])


def describe(sock: socket.socket) -> str:
    """Return "host:port" of a listening socket for the start-up log, "[::]:port" for IPv6."""
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"


def client_host(address: object) -> str:
    """Return the client's IP address from an accepted socket's peer address, IPv4 unmapped."""
    if isinstance(address, tuple) and address:
        host = str(address[0])
        return host[7:] if host.startswith("::ffff:") and "." in host else host
    return str(address) or "-"


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft limit on open files to the hard limit when it is lower; return (soft, hard).

    Called when the limit is already equal it does nothing, so a process under systemd's
    SystemCallFilter=~@resources (which kills a caller of setrlimit) is safe when the unit's
    LimitNOFILE sets both. Where the resource module is missing, returns (-1, -1).
    """
    try:
        import resource
    except ImportError:  # not on Unix
        return -1, -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinite = resource.RLIM_INFINITY
    if soft in (hard, infinite):
        return soft, hard
    want = hard if hard != infinite else max(soft, 1 << 20)
    if soft >= want:
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (OSError, ValueError) as exc:
        log.warning("cannot raise the open-files limit from %d to %d: %s", soft, want, exc)
        return soft, hard
    return want, hard
