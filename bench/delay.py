"""A forwarding HTTP proxy that adds a fixed delay to every request: a distant upstream on loopback."""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.helpers import local_http, stop_http


class Delayed:
    """Delayed serves target's answers on 127.0.0.1 after delay seconds each; url mirrors target's path."""

    def __init__(self, target: str, delay: float) -> None:
        parts = urllib.parse.urlsplit(target)
        host, port, base = parts.hostname or "", parts.port or 80, parts.path.rstrip("/")  # kept in url
        local = threading.local()

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                time.sleep(delay)  # the simulated round trip
                conn = getattr(local, "conn", None)
                if conn is None:
                    conn = local.conn = http.client.HTTPConnection(host, port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("range", "if-range")}
                try:
                    conn.request("GET", self.path, headers=headers)
                    resp = conn.getresponse()
                    body = resp.read()
                except (OSError, http.client.HTTPException):
                    local.conn = None
                    self.send_error(502)
                    return
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() in ("content-type", "content-range", "etag", "accept-ranges"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = local_http(H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{base}"

    def close(self) -> None:
        stop_http(self.server)
