"""Redis coordination against a real redis-server: one lock holder at a time, leases that free a
dead holder's key and fence a stalled one, shared last-used times, and one cleaner at a time."""

from __future__ import annotations

import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from goproxy.coord import LEASE, RedisLocks, RedisUsage, parse_lock_url
from goproxy.locks import LockTimeout
from goproxy.storage.base import LeaseLost
from goproxy.storage.cleanup import Cleaner
from goproxy.storage.disk import DiskStorage
from tests.support.helpers import ROOT, FakeClock
from tests.support.redisd import RedisServer

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("text,want", [
    ("", ""),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://:secret@redis.internal:6380/2", "redis://:secret@redis.internal:6380/2"),
    ("rediss://redis.internal", "rediss://redis.internal"),
], ids=["off", "plain", "password-and-db", "tls"])
def test_lock_url_forms(text: str, want: str) -> None:
    assert parse_lock_url(text) == want


@pytest.mark.parametrize("text,problem", [
    ("http://redis:6379", "want redis://"),
    ("redis://:pw@/0", "missing host"),
    ("redis://host:99999", "bad port"),
    ("redis://host:6379/zero", "database number"),
    ("redis://:hunter2@host:6379/x", r"redis://:\*\*\*@host"),
], ids=["scheme", "no-host", "port", "db", "password-masked"])
def test_bad_lock_urls_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as err:
        parse_lock_url(text)
    assert "hunter2" not in str(err.value)


def locks(redisd: RedisServer, namespace: str, lease: float = LEASE,
          clock: Callable[[], float] = time.monotonic) -> RedisLocks:
    import redis

    return RedisLocks(redis.Redis(host="127.0.0.1", port=redisd.port), namespace, lease, clock)


@pytest.fixture
def ns() -> str:
    return f"test-{secrets.token_hex(6)}"


def test_one_holder_at_a_time_and_a_waiter_gets_the_key_on_release(redisd: RedisServer, ns: str) -> None:
    a, b = locks(redisd, ns), locks(redisd, ns)
    got = threading.Event()
    with a.hold("k", 5) as lease:
        assert lease.valid()
        assert a.held("k")
        with pytest.raises(LockTimeout), b.hold("k", 0.2):
            pass

        def wait() -> None:
            with b.hold("k", 10):
                got.set()

        t = threading.Thread(target=wait)
        t.start()
        assert not got.wait(0.3)
    t.join(10)
    assert got.is_set()
    assert not a.held("k")


def test_a_dead_holder_frees_the_key_after_its_lease(redisd: RedisServer, ns: str) -> None:
    code = ("import sys, time, redis; from goproxy.coord import RedisLocks\n"
            f"l = RedisLocks(redis.Redis(port={redisd.port}), {ns!r}, lease=1.0)\n"
            "with l.hold('k', 5):\n    print('held', flush=True); time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "held\n"
        b = locks(redisd, ns)
        with pytest.raises(LockTimeout), b.hold("k", 1.5):  # renewed while the holder lives
            pass
        child.kill()
        child.wait(10)
        with b.hold("k", 5) as lease:
            assert lease.valid()
    finally:
        child.kill()
        child.wait(10)


def test_a_stalled_holder_finds_its_lease_invalid_and_commits_nothing(
        redisd: RedisServer, ns: str, tmp_path: Path) -> None:
    clock = FakeClock()
    a = locks(redisd, ns, lease=10.0, clock=clock)
    store = DiskStorage(str(tmp_path))
    with a.hold("k", 5) as lease:
        assert lease.valid()
        clock.advance(9.5)  # no renewal reached Redis for most of the lease: it may be gone
        assert not lease.valid()
        with pytest.raises(LeaseLost):
            store.write("example.com/m/@v/list", b"v1.0.0\n", fence=lease.valid)
    assert store.stat("example.com/m/@v/list") is None


def test_release_never_deletes_a_newer_holders_key(redisd: RedisServer, ns: str) -> None:
    a = locks(redisd, ns)
    with a.hold("k", 5):
        redisd.client.set(f"{ns}:lock:k", "someone-else")  # our lease ran out; another took the key
    assert redisd.client.get(f"{ns}:lock:k") == b"someone-else"


def test_lost_key_is_noticed_by_the_renewal(redisd: RedisServer, ns: str) -> None:
    from tests.support.helpers import wait_for

    a = locks(redisd, ns, lease=0.3)
    with a.hold("k", 5) as lease:
        redisd.client.set(f"{ns}:lock:k", "someone-else")
        wait_for(lambda: not lease.valid(), timeout=5)


def test_shared_usage_keeps_the_latest_use_and_forgets_only_old_ones(redisd: RedisServer, ns: str) -> None:
    import redis

    clock = FakeClock()
    a = RedisUsage(redis.Redis(port=redisd.port), ns, clock)
    b = RedisUsage(redis.Redis(port=redisd.port), ns, clock)
    a.record("example.com/m/@v/v1.0.0.zip")
    clock.advance(10)
    b.record("example.com/m/@v/v1.0.0.info")
    b.record("example.com/m/@v/list")
    assert b.flush() == 2
    assert a.flush() == 1  # the older time arrives later: it does not move the use backwards
    now = clock.now
    assert a.last_used() == {("example.com/m", "v1.0.0"): now, ("example.com/m", ""): now}
    a.adopt([("example.com/m", "v1.0.0", now - 100), ("example.com/n", "v2.0.0", now - 100)])
    assert b.last_used()[("example.com/m", "v1.0.0")] == now
    assert b.last_used()[("example.com/n", "v2.0.0")] == now - 100
    a.forget([("example.com/m", "v1.0.0"), ("example.com/n", "v2.0.0")], before=now - 50)
    assert set(b.last_used()) == {("example.com/m", "v1.0.0"), ("example.com/m", "")}


def test_only_one_cleaner_runs_a_pass_at_a_time(redisd: RedisServer, ns: str, tmp_path: Path) -> None:
    import redis

    a, b = locks(redisd, ns), locks(redisd, ns)
    store = DiskStorage(str(tmp_path))
    store.write("example.com/m/@v/v1.0.0.info", b"{}")
    usage = RedisUsage(redis.Redis(port=redisd.port), ns)
    cleaner = Cleaner(store, usage, max_age=1.0, exclusive=lambda: b.try_hold("cleanup"))
    with a.try_hold("cleanup") as mine:
        assert mine is not None
        report = cleaner.run()
        assert report.elsewhere
        assert report.removed == []
    assert not cleaner.run().elsewhere


def test_start_fails_clearly_when_redis_is_unreachable_or_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from goproxy.coord import connect
    from goproxy.errors import StartupError

    with pytest.raises(StartupError, match=r"cannot reach the lock service redis://:\*\*\*@127.0.0.1:9/0") as err:
        connect("redis://:hunter2@127.0.0.1:9/0")
    assert "hunter2" not in str(err.value)
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(StartupError, match=r"pip install 'goproxy\[redis\]'"):
        connect("redis://127.0.0.1:9/0")
