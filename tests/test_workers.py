"""Worker processes, as users run them: one fetch per artifact across workers, shared metrics and
usage, kill -9 of a worker, reload, stop, and a worker that cannot start."""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.helpers import ROOT, get, wait_for
from tests.support.proc import Proc, start
from tests.support.upstream import Module, Upstream, generate

pytestmark = pytest.mark.timeout(120)

TILE = "/sumdb/sum.golang.org/tile/8/0/000"


def proxy(procs: list[Proc], cache: Path, *args: str, workers: int = 2, env: dict[str, str] | None = None
          ) -> tuple[Proc, int]:
    return start(procs, "-host", "127.0.0.1", "-port", "0", "-cache", str(cache), "-workers", str(workers),
                 "-progress", "off", *args, env=env)


def worker_pids(p: Proc) -> dict[int, int]:
    """Return the live worker index → pid, from the start-up and restart lines."""
    pids: dict[int, int] = {}
    for index, pid in re.findall(r"worker (\d+) started \(pid (\d+)\)", p.text()):
        pids[int(index)] = int(pid)
    return pids


def served_by(p: Proc, path: str) -> set[str]:
    """Return the workers ([w1], [w2]) whose access lines show path."""
    return set(re.findall(r"\[(w\d+)\] (?:\[CACHE \w+\] )?127\.0\.0\.1 GET " + re.escape(path) + " ", p.text()))


@pytest.mark.parametrize("what", ["info", "mod", "zip", "list", "tile"])
def test_concurrent_clients_on_every_worker_make_one_upstream_request(
        procs: list[Proc], upstream: Upstream, tmp_path: Path, what: str) -> None:
    m = upstream.add(generate("example.com/flight", "v1.0.0", size=300_000))
    upstream.set(TILE, body=bytes(range(256)) * 32)
    upstream.set("/sumdb/sum.golang.org/supported")  # the upstream passes the database through
    path = TILE if what == "tile" else f"/example.com/flight/@v/{'list' if what == 'list' else 'v1.0.0.' + what}"
    want = upstream.routes[path].body
    # The upstream stays shut until both workers are seen waiting: give it longer than that can
    # take on a loaded machine, so no client gives up on it first.
    p, port = proxy(procs, tmp_path / "cache", "-upstream", upstream.url, "-upstream-timeout", "60s")
    upstream.gate = threading.Event()
    results: list[tuple[int, bytes]] = []
    threads = []
    for _ in range(16):
        t = threading.Thread(target=lambda: results.append(get(port, path)[::2]), daemon=True)
        t.start()
        threads.append(t)
    # A worker that did not get the key's lock waits on it: the clients reached both workers.
    p.wait_line(r"\[w\d\] waiting for another process's fetch of ")
    upstream.gate.set()
    for t in threads:
        t.join(60)
    assert [status for status, _ in results] == [200] * 16
    assert all(body == want for _, body in results)
    assert upstream.count(path) == 1
    if what == "info":  # the .mod was fetched in the same flight, once
        wait_for(lambda: (tmp_path / "cache" / m.path / "@v/v1.0.0.mod").exists())
        assert upstream.count("/example.com/flight/@v/v1.0.0.mod") == 1


def test_cache_gc_removal_is_never_served_from_a_workers_memory(procs: list[Proc], upstream: Upstream,
                                                                 tmp_path: Path) -> None:
    upstream.add(generate("example.com/gone", "v1.0.0"))
    cache = tmp_path / "cache"
    p, port = proxy(procs, cache, "-upstream", upstream.url)
    path = "/example.com/gone/@v/v1.0.0.info"
    for _ in range(300):  # until both workers hold it in memory
        assert get(port, path)[0] == 200
        if served_by(p, path) == {"w1", "w2"}:
            break
    wait_for(lambda: served_by(p, path) == {"w1", "w2"})
    assert upstream.count(path) == 1
    gc = subprocess.run([sys.executable, str(ROOT / "goproxy.py"), "cache", "gc", "-cache", str(cache),
                         "-max-cache-size", "1"], capture_output=True, text=True, timeout=60)
    assert gc.returncode == 0, gc.stderr
    assert not (cache / "example.com/gone/@v/v1.0.0.info").exists()
    gc_done = time.time()
    for _ in range(30):
        assert get(port, path)[0] == 200
    assert upstream.count(path) == 2  # fetched again, once, by whichever worker asked first

    def recorded() -> bool:
        try:
            with sqlite3.connect(cache / ".usage.db") as db:
                rows = db.execute("SELECT last_used FROM usage WHERE module = ? AND version = ?",
                                  ("example.com/gone", "v1.0.0")).fetchall()
        except sqlite3.Error:
            return False
        return bool(rows) and rows[0][0] >= gc_done

    wait_for(recorded, timeout=15, interval=0.1)  # its use came back through the parent's write-behind


def test_usage_is_written_by_one_process_and_housekeeping_runs_once(procs: list[Proc], upstream: Upstream,
                                                                      tmp_path: Path) -> None:
    mods = [upstream.add(generate(f"example.com/u{i}", "v1.0.0")) for i in range(12)]
    cache = tmp_path / "cache"
    p, port = proxy(procs, cache, "-upstream", upstream.url, "-workers", "3")
    paths = [f"/{m.path}/@v/v1.0.0.{ext}" for m in mods for ext in ("info", "mod")]
    stop = time.monotonic() + 4  # four write-behind intervals of load from every worker
    errors: list[str] = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop:
            status = get(port, rng.choice(paths))[0]
            if status != 200:
                errors.append(str(status))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len({w for path in paths for w in served_by(p, path)}) == 3

    def all_recorded() -> bool:
        try:
            with sqlite3.connect(cache / ".usage.db") as db:
                count: int = db.execute("SELECT count(*) FROM usage").fetchone()[0]
                return count == len(mods)
        except sqlite3.Error:
            return False

    wait_for(all_recorded, timeout=15, interval=0.1)
    text = p.text()
    assert "locked" not in text
    assert "cannot write last-used" not in text
    assert text.count("cache cleanup every") == 1  # in the parent alone
    assert not re.search(r"\[w\d\] cache cleanup", text)


def test_metrics_from_any_connection_sum_every_worker(procs: list[Proc], tmp_path: Path) -> None:
    p, port = proxy(procs, tmp_path / "cache", "-upstream", "http://127.0.0.1:9")
    for _ in range(40):
        assert get(port, "/health")[0] == 200
    wait_for(lambda: served_by(p, "/health") == {"w1", "w2"} and len(re.findall(r"GET /health ", p.text())) == 40)
    for _ in range(100):  # scrapes land on either worker: each sees the whole server
        if served_by(p, "/metrics") == {"w1", "w2"}:
            break
        body = get(port, "/metrics")[2].decode()
        assert 'goproxy_requests_total{endpoint="health",status="200"} 40\n' in body
        assert 'goproxy_request_duration_seconds_count{endpoint="health"} 40\n' in body
        assert 'goproxy_request_duration_seconds_bucket{endpoint="health",le="+Inf"} 40\n' in body
        assert "# TYPE goproxy_upstream_request_duration_seconds histogram" in body
    wait_for(lambda: served_by(p, "/metrics") == {"w1", "w2"})


def test_kill_9_of_a_worker_under_load(procs: list[Proc], upstream: Upstream, tmp_path: Path) -> None:
    rng = random.Random(7)
    mods: list[Module] = [upstream.add(generate(f"example.com/k{i}", "v1.0.0", size=rng.randint(100_000, 600_000)))
                          for i in range(10)]
    expected = {f"/{m.path}/@v/v1.0.0.{ext}": getattr(m, ext) for m in mods for ext in ("info", "mod", "zip")}
    p, port = proxy(procs, tmp_path / "cache", "-upstream", upstream.url)
    for path in expected:  # warm: the load is hits, as the workers' in-flight answers are cut
        assert get(port, path)[2] == expected[path]
    victim = worker_pids(p)[1]
    stop = threading.Event()
    ok_after: list[int] = []
    ok_before: list[int] = []
    wrong: list[str] = []
    killed = threading.Event()

    def client(seed: int) -> None:
        r = random.Random(seed)
        while not stop.is_set():
            path = r.choice(sorted(expected))
            try:
                status, _, body = get(port, path)
            except (OSError, http.client.HTTPException):
                continue  # a client of the killed worker: it fails, it is not served a part
            if status != 200 or body != expected[path]:
                wrong.append(f"{path}: {status} {len(body)}")
            else:
                (ok_after if killed.is_set() else ok_before).append(1)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    wait_for(lambda: len(ok_before) > 30, timeout=20)  # load under way on both workers
    os.kill(victim, signal.SIGKILL)
    killed.set()
    p.wait_line(rf"worker 1 \(pid {victim}\) was killed by SIGKILL; restarting it")
    wait_for(lambda: worker_pids(p)[1] != victim and f"worker 1 (pid {worker_pids(p)[1]}) serving" in p.text(),
             timeout=20)
    wait_for(lambda: len(ok_after) > 50, timeout=20)
    stop.set()
    for t in threads:
        t.join(30)
    assert wrong == []
    assert get(port, "/health")[0] == 200


def test_sighup_replaces_workers_without_a_failed_request(procs: list[Proc], make_upstream: Callable[[], Upstream],
                                                          tmp_path: Path) -> None:
    first, second = make_upstream(), make_upstream()
    second.add(generate("example.com/second", "v1.0.0"))
    conf = tmp_path / "goproxy.json"
    conf.write_text(json.dumps({"upstreams": [first.url]}))
    p, port = proxy(procs, tmp_path / "cache", "-config", str(conf))
    before = worker_pids(p)
    assert get(port, "/example.com/second/@v/v1.0.0.info")[0] == 404
    stop = threading.Event()
    failures: list[str] = []
    done = [0]

    def client() -> None:
        while not stop.is_set():
            try:
                status = get(port, "/health")[0]
            except (OSError, http.client.HTTPException) as exc:
                failures.append(repr(exc))
                continue
            if status != 200:
                failures.append(str(status))
            done[0] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    conf.write_text(json.dumps({"upstreams": [second.url], "not_found_ttl": "0s"}))
    p.proc.send_signal(signal.SIGHUP)
    p.wait_line(r"reload complete: 2 worker\(s\)")
    served = done[0]
    wait_for(lambda: done[0] > served + 50)
    stop.set()
    for t in threads:
        t.join(30)
    assert failures == []
    assert set(worker_pids(p).values()).isdisjoint(before.values())
    assert get(port, "/example.com/second/@v/v1.0.0.info")[0] == 200  # the new upstream is in use
    # An invalid file is refused; the workers keep running the configuration they have.
    conf.write_text("{not json")
    running = worker_pids(p)
    p.proc.send_signal(signal.SIGHUP)
    p.wait_line(r"reload: .*goproxy\.json.*; the workers keep the running configuration")
    assert worker_pids(p) == running
    assert get(port, "/health")[0] == 200


def test_a_worker_that_keeps_dying_at_start_stops_the_server(procs: list[Proc], tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(Path("/etc/ssl/certs/ca-certificates.crt").read_bytes())
    p, port = proxy(procs, tmp_path / "cache", "-upstream", "http://127.0.0.1:9", "-ca-file", str(ca))
    ca.unlink()  # the next worker to start cannot read it
    os.kill(worker_pids(p)[2], signal.SIGKILL)
    assert p.proc.wait(30) == 1
    text = p.text()
    assert re.search(r"worker 2 keeps failing at start \(3 times\): .*No such file", text), text
    assert "stopping: worker 2 cannot start" in text


def test_sigterm_drains_every_worker_and_exits_0(procs: list[Proc], upstream: Upstream, tmp_path: Path) -> None:
    m = upstream.add(generate("example.com/drain", "v1.0.0"))
    p, port = proxy(procs, tmp_path / "cache", "-upstream", upstream.url)
    upstream.gate = threading.Event()
    out: list[tuple[int, dict[str, str], bytes]] = []
    t = threading.Thread(target=lambda: out.append(get(port, "/example.com/drain/@v/v1.0.0.zip")), daemon=True)
    t.start()
    wait_for(lambda: upstream.active == 1)
    p.proc.send_signal(signal.SIGTERM)
    p.wait_line(r"waiting up to 10s for 1 request\(s\) in flight")
    upstream.gate.set()
    t.join(30)
    assert out
    assert out[0][0] == 200
    assert out[0][2] == m.zip
    assert p.proc.wait(30) == 0
    assert p.text().count(") stopped") == 2


def test_listens_on_ipv6_and_ipv4_without_a_host(procs: list[Proc], tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this host")
    p = Proc(["-port", "0", "-cache", str(tmp_path / "cache"), "-upstream", "http://127.0.0.1:9", "-workers", "2"])
    procs.append(p)
    port = int(p.wait_line(r"Set GOPROXY=http://localhost:(\d+),direct").group(1))
    conn = http.client.HTTPConnection("::1", port, timeout=10)
    conn.request("GET", "/health")
    assert conn.getresponse().status == 200
    conn.close()
    assert get(port, "/health")[0] == 200
    assert "listening on [::]:" in p.text()


def test_notify_ready_reloading_stopping_with_workers(tmp_path: Path, procs: list[Proc]) -> None:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(20)
    env = {"PATH": os.environ["PATH"], "NOTIFY_SOCKET": path}
    p, port = proxy(procs, tmp_path / "c", "-upstream", "http://127.0.0.1:9", env=env)
    ready = sock.recv(4096).decode().split("\n")
    assert "READY=1" in ready
    assert len(re.findall(r"worker \d \(pid \d+\) serving", p.text())) == 2  # every worker was accepting first
    p.proc.send_signal(signal.SIGHUP)
    assert "RELOADING=1" in sock.recv(4096).decode().split("\n")
    assert "READY=1" in sock.recv(4096).decode().split("\n")
    p.proc.send_signal(signal.SIGTERM)
    assert sock.recv(4096).decode() == "STOPPING=1"
    assert p.proc.wait(20) == 0
    sock.close()
