"""Last-used store: key mapping, write-behind flushes, stop flushes, kill -9 leaves a sound database."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from goproxy.server import ProxyServer
from goproxy.storage.cleanup import Housekeeping
from goproxy.storage.usage import DB_NAME, UsageStore, split_key
from tests.support.helpers import ROOT, FakeClock, background_job, get, kill_under_load, wait_for
from tests.support.proc import Proc, start
from tests.support.upstream import Upstream, generate


@pytest.mark.parametrize("key,pair", [
    ("example.com/m/@v/v1.0.0.zip", ("example.com/m", "v1.0.0")),
    ("example.com/m/@v/v1.0.0.info", ("example.com/m", "v1.0.0")),
    ("example.com/!m/v2/@v/v2.0.0-pre.mod.1.mod", ("example.com/!m/v2", "v2.0.0-pre.mod.1")),
    ("example.com/m/@v/master.info", ("example.com/m", "master")),
    ("example.com/m/@v/list", ("example.com/m", "")),
    ("example.com/m/@latest", ("example.com/m", "")),
    ("sumdb/sum.golang.org/lookup/example.com/m@v1.0.0", None),
    ("example.com/m/@v/v1.0.0.txt", None),
])
def test_split_key_maps_cache_keys_to_module_versions(key: str, pair: tuple[str, str] | None) -> None:
    assert split_key(key) == pair


def rows(db: Path) -> dict[tuple[str, str], float]:
    con = sqlite3.connect(db, timeout=10)
    try:
        return {(m, v): t for m, v, t in con.execute("SELECT module, version, last_used FROM usage")}
    finally:
        con.close()


def test_record_touches_no_database_until_flush_which_keeps_the_latest_use(tmp_path: Path,
                                                                           clock: FakeClock) -> None:
    store = UsageStore(str(tmp_path), clock)
    store.record("example.com/m/@v/v1.0.0.zip")
    clock.advance(10)
    store.record("example.com/m/@v/v1.0.0.info")
    store.record("example.com/m/@v/list")
    assert not (tmp_path / DB_NAME).exists()
    assert store.used_since_flush("example.com/m/@v/list")
    assert store.flush() == 2
    assert not store.used_since_flush("example.com/m/@v/list")
    assert rows(tmp_path / DB_NAME) == {("example.com/m", "v1.0.0"): clock.now, ("example.com/m", ""): clock.now}
    # An older time arriving later (a slow request) never moves a last use backwards.
    store.adopt([("example.com/m", "v1.0.0", clock.now - 100)])
    store._pending["example.com/m/@v/v1.0.0.mod"] = clock.now - 50
    store.flush()
    assert rows(tmp_path / DB_NAME)[("example.com/m", "v1.0.0")] == clock.now
    store.close()
    assert sqlite3.connect(tmp_path / DB_NAME).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_file_that_is_not_a_database_is_moved_aside_and_rebuilt(tmp_path: Path, clock: FakeClock) -> None:
    (tmp_path / DB_NAME).write_bytes(b"this is not sqlite" * 100)
    store = UsageStore(str(tmp_path), clock)
    store.record("example.com/m/@v/v1.0.0.zip")
    store.close()
    assert rows(tmp_path / DB_NAME) == {("example.com/m", "v1.0.0"): clock.now}
    assert len(list(tmp_path.glob(DB_NAME + ".corrupt-*"))) == 1


def rows_now(db: Path) -> dict[tuple[str, str], float]:
    """rows_now is rows(db), or nothing while the database or its table is still being created."""
    try:
        return rows(db) if db.exists() else {}
    except sqlite3.OperationalError:
        return {}


def test_flush_thread_writes_behind_and_server_stop_flushes_the_rest(make_proxy: Callable[..., ProxyServer],
                                                                     upstream: Upstream, clock: FakeClock) -> None:
    upstream.add(generate("example.com/a", "v1.0.0"))
    upstream.add(generate("example.com/b", "v1.0.0"))
    proxy = make_proxy([upstream.url])
    hk = background_job(proxy, Housekeeping)
    db = Path(proxy.config.cache_dir) / DB_NAME
    hk.store.flush_interval = 0.01
    hk.store.start()
    assert get(proxy, "/example.com/a/@v/v1.0.0.mod")[0] == 200
    wait_for(lambda: ("example.com/a", "v1.0.0") in rows_now(db))
    hk.store._stop.set()  # no more timed flushes: only the stop can write what follows
    flusher = hk.store._thread
    assert flusher is not None  # start() made it
    flusher.join()
    clock.advance(5)
    assert get(proxy, "/example.com/b/@v/v1.0.0.mod")[0] == 200
    assert ("example.com/b", "v1.0.0") not in rows(db)
    proxy.stop()
    assert rows(db)[("example.com/b", "v1.0.0")] == clock.now


def test_kill_9_between_flushes_leaves_a_database_that_opens_cleanly(procs: list[Proc], upstream: Upstream,
                                                                   tmp_path: Path) -> None:
    mods = [upstream.add(generate(f"example.com/k{i}", "v1.0.0")) for i in range(12)]
    paths = [f"/example.com/k{i}/@v/v1.0.0.{ext}" for i in range(len(mods)) for ext in ("info", "mod", "zip")]
    cache = tmp_path / "cache"
    db = cache / DB_NAME
    args = ["-host", "127.0.0.1", "-port", "0", "-cache", str(cache), "-upstream", upstream.url]
    rng = random.Random(7)
    for round_ in range(3):
        p, port = start(procs, *args)
        # A first flush lands, then hits keep coming and the process dies with uses buffered.
        assert get(port, paths[round_])[0] == 200
        wait_for(lambda: len(rows_now(db)) > round_, timeout=30, interval=0.05)  # noqa: B023 - called now
        target = upstream.total() + rng.randint(5, 30)
        # Kill after a random number of upstream requests, or once everything is cached.
        kill_under_load(p, port, paths, 10, round_ * 10, lambda: upstream.total() >= target or all(  # noqa: B023
            (cache / p.lstrip("/")).exists() for p in paths))  # (kill_under_load calls it before it returns)
        con = sqlite3.connect(db, timeout=10)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        con.close()
        assert ("example.com/k0", "v1.0.0") in rows(db)
    # The cache and its database serve on: the admin command reads it, a new server uses it.
    out = subprocess.run([sys.executable, str(ROOT / "goproxy.py"), "cache", "stats", "-cache", str(cache)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "modules: " in out.stdout
    p, port = start(procs, *args)
    assert get(port, paths[-1])[2] == mods[-1].zip
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(15) == 0
    assert ("example.com/k11", "v1.0.0") in rows(db)


def test_a_process_forked_while_the_database_is_busy_can_write_to_it(tmp_path: Path) -> None:
    store = UsageStore(str(tmp_path))
    stop = threading.Event()

    def churn() -> None:  # a parent's flush thread, writing all the time
        i = 0
        while not stop.is_set():
            i += 1
            store.record(f"m{i % 50}/@v/v1.0.{i}.zip")
            store.flush()

    writer = threading.Thread(target=churn, daemon=True)
    writer.start()
    wait_for(lambda: len(store.last_used()) > 10)
    try:
        for _ in range(3):
            pid = os.fork()
            if pid == 0:  # a worker: its own connection must not wait on the parent's locks
                started = time.monotonic()
                try:
                    child = UsageStore(str(tmp_path))
                    child.record("x/@v/v1.0.0.zip")
                    child.flush()
                    os._exit(0 if time.monotonic() - started < 2 else 3)
                except BaseException:
                    os._exit(1)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
    finally:
        stop.set()
        writer.join(10)
        store.close()
