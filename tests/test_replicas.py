"""Replicas as real processes on one SeaweedFS bucket, coordinated through a real Redis: shared
hits, one upstream fetch per artifact, a lock holder killed mid-download, the store going down
and coming back, and two replicas racing to clean up."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from goproxy.server import ProxyServer
from goproxy.storage.bucket import split_storage_url
from goproxy.sumdb.db import parse_gosumdb
from tests.support.gotestproxy import SUMDB_KEY, SUMDB_NAME, GoTestProxy, download
from tests.support.helpers import get, wait_for
from tests.support.proc import Proc, start
from tests.support.redisd import RedisServer
from tests.support.seaweed import Seaweed, s3_env
from tests.support.upstream import Upstream, generate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

Start = Callable[..., tuple[Proc, int]]


@pytest.fixture
def replica(procs: list[Proc], tmp_path: Path, seaweed: Seaweed, s3_url: str) -> Start:
    """replica(name, upstream, *flags) starts goproxy.py on the test's bucket prefix; returns (proc, port)."""

    def run(name: str, upstream: str, *flags: str, store: Seaweed = seaweed, url: str = s3_url) -> tuple[Proc, int]:
        args = ["-host", "127.0.0.1", "-port", "0", "-cache", str(tmp_path / name), "-upstream", upstream,
                "-storage", url, "-s3-endpoint", store.endpoint, "-progress", "off", *flags]
        return start(procs, *args, env={"PATH": os.environ["PATH"], **s3_env()})

    return run


def misses(p: Proc) -> int:
    return p.text().count("[CACHE MISS]")


def test_a_module_set_fetched_through_one_replica_is_all_hits_on_the_others(
        go: str, testproxy: GoTestProxy, replica: Start, tmp_path: Path) -> None:
    direct = download(go, tmp_path, testproxy.url, "direct")
    (a, pa), (b, pb), (c, pc) = (replica(name, testproxy.url) for name in "abc")
    assert download(go, tmp_path, f"http://127.0.0.1:{pa}", "via-a") == direct
    assert misses(a) > 0
    a.stop()  # once its last answers, given while they were committed, are in the bucket
    testproxy.stop()  # upstream sees nothing new: there is nothing left to see it
    assert download(go, tmp_path, f"http://127.0.0.1:{pb}", "via-b") == direct
    assert download(go, tmp_path, f"http://127.0.0.1:{pc}", "via-c") == direct
    assert misses(b) == 0
    assert misses(c) == 0
    assert b.text().count("[CACHE HIT]") >= len(direct)


def test_thirty_clients_on_three_replicas_make_one_upstream_fetch(
        upstream: Upstream, replica: Start, redisd: RedisServer) -> None:
    m = upstream.add(generate("example.com/big", "v1.0.0", size=20 << 20))
    path = f"/{m.path}/@v/{m.version}.zip"
    ports = [replica(name, upstream.url, "-lock", redisd.url(), "-download-connections", "1")[1] for name in "abc"]
    upstream.gate = threading.Event()
    sent = threading.Semaphore(0)
    results: list[tuple[int, str]] = []

    def client(port: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("GET", path)
        sent.release()
        resp = conn.getresponse()
        results.append((resp.status, hashlib.sha256(resp.read()).hexdigest()))
        conn.close()

    threads = [threading.Thread(target=client, args=(ports[i % 3],)) for i in range(30)]
    for t in threads:
        t.start()
    for _ in threads:
        assert sent.acquire(timeout=30)
    wait_for(lambda: upstream.count(path) == 1, timeout=30)
    upstream.gate.set()
    for t in threads:
        t.join(120)
    want = hashlib.sha256(m.zip).hexdigest()
    assert len(results) == 30
    assert {status for status, _ in results} == {200}
    assert {digest for _, digest in results} == {want}
    assert upstream.count(path) == 1


def test_killing_the_lock_holder_mid_download_hands_the_fetch_to_another_replica(
        upstream: Upstream, replica: Start, redisd: RedisServer, seaweed: Seaweed, s3_url: str) -> None:
    m = upstream.add(generate("example.com/slow", "v1.0.0", size=20 << 20))
    path = f"/{m.path}/@v/{m.version}.zip"
    half_sent, release = threading.Event(), threading.Event()
    first = threading.Lock()

    def stall_first(p: str, h: BaseHTTPRequestHandler) -> bool:
        if p != path or not first.acquire(blocking=False):
            return False  # the take-over fetch is served normally
        h.send_response(200)
        h.send_header("Content-Length", str(len(m.zip)))
        h.end_headers()
        h.wfile.write(m.zip[: len(m.zip) // 2])
        h.wfile.flush()
        half_sent.set()
        release.wait(60)
        return True

    upstream.fault = stall_first
    # One process per replica: a SIGKILL then takes the whole replica down, as losing its host does
    # (a killed parent's workers would finish their requests first, the lock holder's download too).
    flags = ("-lock", redisd.url(), "-download-connections", "1", "-workers", "1")
    (a, pa), (_, pb) = replica("a", upstream.url, *flags), replica("b", upstream.url, *flags)
    bucket, prefix = split_storage_url(s3_url)
    cut: list[int] = []

    def first_client() -> None:
        try:
            cut.append(get(pa, path)[0])
        except (OSError, http.client.HTTPException):
            cut.append(0)

    t = threading.Thread(target=first_client)
    t.start()
    try:
        assert half_sent.wait(30)
        lock = f"goproxy:{s3_url}:lock:{path.lstrip('/')}"
        assert redisd.client.exists(lock)  # a holds the key's lock while it downloads
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
        t.join(30)
        assert cut != [200]
        assert path.lstrip("/") not in seaweed.objects(bucket, prefix)  # nothing partial committed
        status, _, body = get(pb, path)  # the client retries on another replica
        assert status == 200
        assert body == m.zip
        assert upstream.count(path) == 2  # b fetched once the dead holder's lease ran out
        objects = seaweed.objects(bucket, prefix)
        assert objects == {path.lstrip("/"): len(m.zip)}
    finally:
        release.set()


def test_a_store_outage_keeps_local_hits_answers_misses_503_and_recovers(
        upstream: Upstream, replica: Start, make_seaweed: Callable[[], Seaweed]) -> None:
    store = make_seaweed()
    store.client().create_bucket(Bucket="outage")
    hot, cold = (upstream.add(generate(f"example.com/{n}", "v1.0.0")) for n in ("hot", "cold"))
    _, port = replica("a", upstream.url, store=store, url="s3://outage")
    files = [f"/{hot.path}/@v/v1.0.0.{ext}" for ext in ("info", "mod", "zip")]
    for f in files:
        assert get(port, f)[0] == 200
    assert get(port, "/ready")[0] == 200
    # The .info and .mod were answered while they were committed: the store has them before it stops.
    wait_for(lambda: len(store.objects("outage")) == len(files))
    store.stop()
    for f in files:
        assert get(port, f)[0] == 200  # from the local tier
    status, _, body = get(port, f"/{cold.path}/@v/v1.0.0.zip")
    assert status == 503
    assert b"object store" in body
    status, _, body = get(port, "/ready")
    assert status == 503
    assert b"object store" in body
    status, _, body = get(port, "/health")
    assert status == 200
    assert body.startswith(b"degraded\nobject store")
    store.start()
    status, _, body = get(port, "/ready")  # no restart of the proxy
    assert (status, body) == (200, b"ready\n")
    assert get(port, "/health")[2] == b"ok\n"
    status, _, body = get(port, f"/{cold.path}/@v/v1.0.0.zip")
    assert status == 200
    assert body == cold.zip


def test_two_replicas_racing_to_clean_remove_each_version_once_and_never_one_in_use(
        upstream: Upstream, replica: Start, redisd: RedisServer, seaweed: Seaweed, s3_url: str) -> None:
    old = [upstream.add(generate(f"example.com/old{i}", "v1.0.0")) for i in range(4)]
    used = [upstream.add(generate(f"example.com/used{i}", "v1.0.0")) for i in range(3)]
    flags = ("-lock", redisd.url(), "-max-cache-age", "1h", "-cleanup-interval", "1s", "-log-level", "debug")
    (a, pa), (b, pb) = replica("a", upstream.url, *flags), replica("b", upstream.url, *flags)
    for m in old + used:
        for ext in ("info", "mod", "zip"):
            assert get(pa, f"/{m.path}/@v/v1.0.0.{ext}")[0] == 200
    usage = f"goproxy:{s3_url}:usage"
    wait_for(lambda: redisd.client.zcard(usage) == len(old) + len(used), timeout=20)
    for m in used:
        assert get(pb, f"/{m.path}/@v/v1.0.0.info")[0] == 200  # in use on the other replica too
    long_ago = time.time() - 86400
    bucket, prefix = split_storage_url(s3_url)

    def aged_and_removed() -> bool:
        # Age the old versions again each time: a use still on its way to Redis (through a
        # worker, its parent and a flush) may land after the first ageing and undo it.
        redisd.client.zadd(usage, {f"{m.path} v1.0.0": long_ago for m in old}, xx=True)
        return {k.split("/@v/")[0] for k in seaweed.objects(bucket, prefix)} == {m.path for m in used}

    wait_for(aged_and_removed, timeout=30, interval=0.05)
    passes = [p.text().count("cache cleanup: pass finished") for p in (a, b)]
    # Every pass that may have overlapped the removals has finished and logged what it removed.
    wait_for(lambda: all(p.text().count("cache cleanup: pass finished") >= n + 2 for p, n in zip((a, b), passes)),
             timeout=30)
    removed = re.findall(r"cache cleanup: removed (\S+@v1\.0\.0)", a.text() + b.text())
    assert sorted(removed) == sorted(f"{m.path}@v1.0.0" for m in old)
    for m in used:
        status, _, body = get(pb, f"/{m.path}/@v/v1.0.0.zip")
        assert status == 200
        assert body == m.zip


@pytest.mark.usefixtures("s3_creds")
def test_a_forked_checksum_log_is_caught_by_every_replica_sharing_the_tree_head(
        make_proxy: Callable[..., ProxyServer], testproxy: GoTestProxy, seaweed: Seaweed, s3_url: str,
        tmp_path: Path) -> None:
    # Two logs under one name and key: replica a verifies against the small "wrong" log and keeps
    # its tree head in the bucket; replica b, still running beside it with an empty local tier,
    # sees the real, larger log, which does not extend that head.
    shared = {"storage": s3_url, "s3_endpoint": seaweed.endpoint}
    a = make_proxy([testproxy.url], gosumdb=parse_gosumdb(f"{SUMDB_KEY} {testproxy.url}/sumdb-wrong"),
                   cache_dir=str(tmp_path / "a"), **shared)
    assert get(a, "/rsc.io/quote/@v/v1.5.2.mod")[0] == 502
    bucket, prefix = split_storage_url(s3_url)
    assert f"sumdb/{SUMDB_NAME}/.verified-tree" in seaweed.objects(bucket, prefix)
    b = make_proxy([testproxy.url], gosumdb=parse_gosumdb(f"{SUMDB_KEY} {testproxy.url}/sumdb-direct"),
                   cache_dir=str(tmp_path / "b"), **shared)
    status, _, body = get(b, "/golang.org/x/text/@v/v0.3.0.mod")
    assert status == 502
    assert b"forked" in body
    assert "golang.org/x/text/@v/v0.3.0.mod" not in seaweed.objects(bucket, prefix)


@pytest.mark.usefixtures("s3_creds")
def test_a_holder_that_lost_its_lease_commits_nothing_and_serves_what_the_new_holder_commits(
        make_proxy: Callable[..., ProxyServer], upstream: Upstream, redisd: RedisServer, seaweed: Seaweed,
        s3_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    m = upstream.add(generate("example.com/stalled", "v1.0.0", size=1 << 20))
    path = f"/{m.path}/@v/{m.version}.zip"
    proxy = make_proxy([upstream.url], storage=s3_url, s3_endpoint=seaweed.endpoint, lock_url=redisd.url(),
                       cache_dir=str(tmp_path / "a"), download_connections=1)
    upstream.gate = threading.Event()
    answers: list[tuple[int, bytes]] = []
    t = threading.Thread(target=lambda: answers.append(get(proxy, path)[::2]))
    t.start()
    wait_for(lambda: upstream.count(path) == 1, timeout=20)
    # The holder stalls (its upstream is slow) past its lease, and another replica takes the key.
    redisd.client.set(f"goproxy:{s3_url}:lock:{path.lstrip('/')}", "another-replica", px=5000)
    wait_for(lambda: "lost the lock" in caplog.text, timeout=20)
    upstream.gate.set()
    wait_for(lambda: "waiting for the holder that took over" in caplog.text, timeout=20)
    bucket, prefix = split_storage_url(s3_url)
    assert seaweed.objects(bucket, prefix) == {}  # the stale holder committed nothing
    t.join(30)
    assert answers == [(200, m.zip)]
    assert upstream.count(path) == 2  # fetched again once the other holder's lease ran out
    assert seaweed.objects(bucket, prefix) == {path.lstrip("/"): len(m.zip)}
