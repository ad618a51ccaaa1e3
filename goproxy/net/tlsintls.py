"""TLS started on a connection that is already TLS (a tunnel through an https:// proxy).

SSLContext.wrap_socket cannot layer TLS on an SSLSocket, so the inner session runs on an
SSLObject whose records travel through the outer socket.
"""

from __future__ import annotations

import io
import socket
import ssl
from typing import Any, cast

_CHUNK = 1 << 16


def wrap(ctx: ssl.SSLContext, sock: socket.socket, server_hostname: str) -> socket.socket:
    """Start TLS with server_hostname on sock, a plain socket or an SSLSocket.

    The result has the socket methods http.client and the DoH client use. Raises OSError
    (ssl.SSLError).
    """
    if isinstance(sock, ssl.SSLSocket):
        return cast(socket.socket, TLSInTLS(sock, ctx, server_hostname))
    return ctx.wrap_socket(sock, server_hostname=server_hostname)


class TLSInTLS:
    """A TLS session carried inside the outer TLS socket; closing it closes both."""

    def __init__(self, outer: ssl.SSLSocket, ctx: ssl.SSLContext, server_hostname: str) -> None:
        self._outer = outer
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = ctx.wrap_bio(self._incoming, self._outgoing, server_hostname=server_hostname)
        self._run(self._tls.do_handshake)

    def _run(self, op: Any, *args: Any) -> Any:
        """Call an SSLObject operation, moving records through the outer socket until it completes."""
        while True:
            try:
                result = op(*args)
            except ssl.SSLWantReadError:
                self._flush()
                data = self._outer.recv(_CHUNK)
                if data:
                    self._incoming.write(data)
                else:
                    self._incoming.write_eof()
                continue
            self._flush()
            return result

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self._outer.sendall(data)

    def recv(self, n: int = _CHUNK, flags: int = 0) -> bytes:
        """Return up to n bytes, b"" once the server has closed the session."""
        try:
            return cast(bytes, self._run(self._tls.read, n))
        except ssl.SSLZeroReturnError:
            return b""

    def recv_into(self, buffer: Any, n: int = 0, flags: int = 0) -> int:
        """Read up to n bytes (0: the buffer's length) into buffer; return how many were read."""
        data = self.recv(n or len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def send(self, data: bytes | memoryview, flags: int = 0) -> int:
        """Send data through the session; return how many bytes were taken."""
        return cast(int, self._run(self._tls.write, data))

    def sendall(self, data: bytes | memoryview, flags: int = 0) -> None:
        """Send all of data through the session."""
        view = memoryview(data)
        while view:
            view = view[self.send(view):]

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        """Return a buffered reader, all http.client asks of a socket's makefile."""
        return io.BufferedReader(socket.SocketIO(self, "rb"))  # type: ignore[arg-type]

    def _decref_socketios(self) -> None:
        """Do nothing when a makefile reader closes: the socket stays open."""

    def selected_alpn_protocol(self) -> str | None:
        """Return the protocol the inner handshake agreed on by ALPN, or None."""
        return self._tls.selected_alpn_protocol()

    def getpeercert(self, binary_form: bool = False) -> Any:
        """Return the server's certificate from the inner session, as SSLSocket.getpeercert does."""
        return self._tls.getpeercert(binary_form)

    def settimeout(self, timeout: float | None) -> None:
        """Set the outer socket's timeout, which bounds every read and write."""
        self._outer.settimeout(timeout)

    def gettimeout(self) -> float | None:
        """Return the outer socket's timeout."""
        return self._outer.gettimeout()

    def setsockopt(self, *args: Any) -> None:
        """Set an option on the outer socket."""
        self._outer.setsockopt(*args)

    def fileno(self) -> int:
        """Return the outer socket's file descriptor."""
        return self._outer.fileno()

    def close(self) -> None:
        """Close the outer socket, and with it the session."""
        self._outer.close()

    def __enter__(self) -> TLSInTLS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
