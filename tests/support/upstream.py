"""A real HTTP upstream on 127.0.0.1 serving generated modules, with counters and fault switches."""

from __future__ import annotations

import hashlib
import io
import json
import random
import socket
import ssl
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from goproxy.modpath import escape_path, escape_version
from tests.support.helpers import local_http, serve_in_thread, stop_http


def make_zip(module: str, version: str, files: dict[str, bytes]) -> bytes:
    """make_zip builds a module zip: each file under "module@version/"."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in sorted(files.items()):
            z.writestr(f"{module}@{version}/{name}", data)
    return buf.getvalue()


@dataclass
class Module:
    """Module is one generated module version: its .info, .mod and .zip bytes."""

    path: str
    version: str
    info: bytes
    mod: bytes
    zip: bytes


def generate(path: str, version: str, extra: bytes = b"", size: int = 0) -> Module:
    """generate makes a small valid module version; size pads one file to make a big zip."""
    mod = f"module {path}\n\ngo 1.21\n".encode()
    files = {"go.mod": mod, "lib.go": f"package lib\n\n// Version {version}\n".encode() + extra}
    if size:
        # Incompressible padding so the zip is really about size bytes.
        files["blob.bin"] = random.Random(f"{path}@{version}").randbytes(size)
    info = json.dumps({"Version": version, "Time": "2024-01-02T03:04:05Z"}).encode()
    return Module(path, version, info, mod, make_zip(path, version, files))


@dataclass
class Reply:
    """Reply is what the upstream answers for one path."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


# A fault hook sees (path, handler) and returns True when it has answered the request itself.
Fault = Callable[[str, BaseHTTPRequestHandler], bool]


class TLSServer(ThreadingHTTPServer):
    """TLSServer is a ThreadingHTTPServer speaking TLS; the handshake runs in the request thread."""

    tls: ssl.SSLContext

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr


class Upstream:
    """Upstream is a module proxy on 127.0.0.1:port; add modules, then count what it was asked.

    With tls (a server context) it speaks HTTPS and records in sni the name each client sent.
    """

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Reply] = {}
        self.hits: Counter[str] = Counter()
        self.seen_headers: list[tuple[str, dict[str, str]]] = []
        self.fault: Fault | None = None
        self.range_support = True
        # rate, when set, caps each connection's body at this many bytes per second.
        self.rate = 0
        # active is how many requests are being answered now; max_active the most at once.
        self.active = 0
        self.max_active = 0
        self._etags: dict[bytes, str] = {}
        self.gate: threading.Event | None = None  # when set, requests wait for it before answering
        self.lock = threading.Lock()
        owner = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()  # no Nagle delay between headers and body, as real servers do
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_GET(self) -> None:
                owner._serve(self, head=False)

            def do_HEAD(self) -> None:
                owner._serve(self, head=True)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.sni: list[str | None] = []
        self.scheme = "https" if tls else "http"
        if tls is None:
            self.server = local_http(H)
        else:
            tls.sni_callback = lambda _sock, name, _ctx: self.sni.append(name)
            server = TLSServer(("127.0.0.1", 0), H)
            server.tls = tls
            self.server = serve_in_thread(server)

    @property
    def url(self) -> str:
        """url is the base URL to configure as an upstream."""
        return self.url_at("127.0.0.1")

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url_at(self, host: str) -> str:
        """url_at is the base URL naming this upstream by host (which must lead to 127.0.0.1)."""
        return f"{self.scheme}://{host}:{self.port}"

    def add(self, m: Module, with_list: bool = True) -> Module:
        """add serves m's .info/.mod/.zip, and lists it in @v/list and @latest."""
        base = "/" + escape_path(m.path) + "/@v/" + escape_version(m.version)
        self.routes[base + ".info"] = Reply(body=m.info, headers={"Content-Type": "application/json"})
        self.routes[base + ".mod"] = Reply(body=m.mod)
        self.routes[base + ".zip"] = Reply(body=m.zip, headers={"Content-Type": "application/zip"})
        if with_list:
            lst = "/" + escape_path(m.path) + "/@v/list"
            old = self.routes.get(lst, Reply()).body.decode()
            versions = sorted(set(old.split()) | {m.version})
            self.routes[lst] = Reply(body=("\n".join(versions) + "\n").encode())
            self.routes["/" + escape_path(m.path) + "/@latest"] = Reply(body=m.info)
        return m

    def set(self, path: str, status: int = 200, body: bytes = b"", **headers: str) -> None:
        """set answers path with status and body."""
        self.routes[path] = Reply(status, body, dict(headers))

    def count(self, path: str) -> int:
        """count is how many requests path received."""
        with self.lock:
            return self.hits[path]

    def total(self) -> int:
        """total is how many requests arrived at all."""
        with self.lock:
            return sum(self.hits.values())

    def _serve(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        with self.lock:
            self.hits[h.path] += 1
            self.seen_headers.append((h.path, dict(h.headers.items())))
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            self._answer(h, head)
        finally:
            with self.lock:
                self.active -= 1

    def _answer(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        path = h.path
        if self.gate is not None:
            self.gate.wait(30)
        if self.fault is not None and self.fault(path, h):
            return
        reply = self.routes.get(path) or Reply(404, f"not found: {path}".encode())
        body, status = reply.body, reply.status
        headers = dict(reply.headers)
        etag = self._etags.get(body)  # a dict: bytes cache their hash, so big bodies are hashed once
        if etag is None:
            etag = self._etags[body] = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
        if status == 200 and self.range_support:
            headers["ETag"] = etag
        rng = h.headers.get("Range")
        if_range = h.headers.get("If-Range")
        if (rng and status == 200 and self.range_support and rng.startswith("bytes=")
                and if_range in (None, etag)):
            start_s, _, end_s = rng[6:].partition("-")
            start = int(start_s)
            end = int(end_s) if end_s else len(body) - 1
            if start >= len(body):
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(body)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            end = min(end, len(body) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
            body, status = body[start:end + 1], 206
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        if self.range_support:
            h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            try:
                self._write(h, body)
            except OSError:
                pass

    def _write(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        """_write sends body, paced to self.rate bytes per second when set (a slow link)."""
        rate = self.rate
        if not rate:
            h.wfile.write(body)
            return
        step = max(1, rate // 50)
        started = time.monotonic()
        for sent in range(0, len(body), step):
            ahead = started + sent / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)  # pacing the simulated link, not waiting for an event
            h.wfile.write(body[sent:sent + step])

    def close(self) -> None:
        """close stops the server."""
        if self.gate is not None:
            self.gate.set()
        stop_http(self.server)
