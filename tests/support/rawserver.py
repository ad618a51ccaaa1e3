"""A raw-socket server on 127.0.0.1 that answers each connection with a scripted behaviour."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

# A script gets the accepted socket and the request bytes it read (up to the blank line); what it
# returns is ignored.
Script = Callable[[socket.socket, bytes], object]


class RawServer:
    """RawServer accepts connections and runs script(sock, request) for each, in a thread."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self.connections = 0
        self.release = threading.Event()  # scripts that stall wait on this
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            while True:
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        data += chunk
                except OSError:
                    return
                with self._lock:
                    self.requests.append(data)
                try:
                    self.script(conn, data)
                except OSError:
                    return
                if getattr(conn, "_closed", False):
                    return

    def close(self) -> None:
        self._closed = True
        self.release.set()
        self.sock.close()


def response(status: int, body: bytes, headers: dict[str, str] | None = None, length: int | None = None) -> bytes:
    """response renders an HTTP/1.1 response; length overrides Content-Length (to lie about it)."""
    head = [f"HTTP/1.1 {status} X"]
    for k, v in (headers or {}).items():
        head.append(f"{k}: {v}")
    head.append(f"Content-Length: {len(body) if length is None else length}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body
