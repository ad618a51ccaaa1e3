"""A chaos reverse proxy on 127.0.0.1: forwards to a real upstream, failing a share of requests."""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.helpers import local_http, stop_http

FAULTS = ("500", "502", "429", "reset", "truncate", "stall")


class Chaos:
    """Chaos forwards GETs to target, failing about rate of them in mixed ways.

    No path fails more than max_in_a_row times in a row, so a client that retries enough
    always gets through. faults counts what was injected.
    """

    def __init__(self, target: str, rate: float = 0.3, seed: int = 7, max_in_a_row: int = 3) -> None:
        parts = urllib.parse.urlsplit(target)
        self.host, self.port, self.base = parts.hostname or "", parts.port or 80, parts.path.rstrip("/")
        self.rate, self.max_in_a_row = rate, max_in_a_row
        self.rng = random.Random(seed)
        self.faults: Counter[str] = Counter()
        self.in_a_row: Counter[str] = Counter()
        self.release = threading.Event()  # stalled requests wait on this
        self.lock = threading.Lock()
        owner = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                owner._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = local_http(H)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{self.base}"

    def _pick(self, path: str) -> str | None:
        with self.lock:
            if self.in_a_row[path] < self.max_in_a_row and self.rng.random() < self.rate:
                fault = self.rng.choice(FAULTS)
                self.in_a_row[path] += 1
                self.faults[fault] += 1
                return fault
            self.in_a_row[path] = 0
            return None

    def _fetch(self, path: str) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            keep = {k: v for k, v in resp.getheaders() if k.lower() in ("content-type",)}
            return resp.status, keep, body
        finally:
            conn.close()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        fault = self._pick(h.path)
        if fault in ("500", "502", "429"):
            body = f"chaos {fault}".encode()
            h.send_response(int(fault))
            if fault == "429":
                h.send_header("Retry-After", "1")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            return
        if fault == "stall":
            self.release.wait(10)
            h.close_connection = True
            return
        status, headers, body = self._fetch(h.path)
        if fault in ("reset", "truncate") and status == 200 and len(body) > 1:
            h.send_response(200)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            if fault == "reset":
                h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.close_connection = True
            return
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def close(self) -> None:
        self.release.set()
        stop_http(self.server)
