"""Idle, trickling and slow-reading clients by the thousand cost a normal client nothing."""

from __future__ import annotations

import re
import resource
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.helpers import get, wait_for
from tests.support.proc import Proc, start
from tests.support.upstream import Upstream, generate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(autouse=True)
def open_files() -> None:
    """Raise this process's open-files limit to the hard limit: the clients need thousands."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 12000:
        pytest.skip("needs an open-files limit of 12000 (ulimit -n)")


def rss_mb(p: Proc) -> float:
    """Return the resident memory of the proxy, parent and workers together, in MB."""
    pids = [p.proc.pid] + [int(pid) for pid in re.findall(r"started \(pid (\d+)\)", p.text())]
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            continue
        rss = re.search(r"VmRSS:\s+(\d+) kB", text)
        assert rss is not None, text
        total += int(rss.group(1))
    return total / 1024


def hit_times(port: int, path: str, n: int = 20) -> list[float]:
    times = []
    for _ in range(n):
        started = time.monotonic()
        assert get(port, path)[0] == 200
        times.append(time.monotonic() - started)
    return sorted(times)


def test_5000_idle_and_200_trickling_connections(procs: list[Proc], upstream: Upstream, tmp_path: Path,
                                                 record_property: Callable[[str, object], None]) -> None:
    upstream.add(generate("example.com/idle", "v1.0.0"))
    p, port = start(procs, "-host", "127.0.0.1", "-port", "0", "-cache", str(tmp_path / "cache"), "-upstream",
                    upstream.url, "-workers", "2", "-header-timeout", "8s", "-progress", "off")
    mod = "/example.com/idle/@v/v1.0.0.mod"
    assert get(port, mod)[0] == 200
    hit_times(port, mod)
    before = rss_mb(p)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(5000)]
    slow = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(200)]
    opened = time.monotonic()
    closed_at: dict[int, float] = {}
    stop = threading.Event()

    def trickle() -> None:
        line = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100
        for i in range(len(line)):
            for n, s in enumerate(slow):
                if n in closed_at:
                    continue
                try:
                    s.sendall(line[i:i + 1])
                except OSError:
                    closed_at[n] = time.monotonic() - opened
            if stop.wait(1.0) or len(closed_at) == len(slow):  # one byte a second each
                return

    def watch() -> None:
        while not stop.is_set() and len(closed_at) < len(slow):
            for n, s in enumerate(slow):
                if n in closed_at:
                    continue
                s.setblocking(False)
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data or data.startswith(b"HTTP/1.1 408"):
                    closed_at[n] = time.monotonic() - opened
            stop.wait(0.05)

    threads = [threading.Thread(target=trickle, daemon=True), threading.Thread(target=watch, daemon=True)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: time.monotonic() - opened > 2)  # every connection open and the trickle going
        times = hit_times(port, mod)
        during = rss_mb(p)
        assert times[len(times) // 2] < 0.05, times
        assert times[-1] < 0.1, times
        wait_for(lambda: len(closed_at) == len(slow), timeout=30)
        assert min(closed_at.values()) >= 7.0  # not before the header timeout...
        assert max(closed_at.values()) < 8.0 + 2.5  # ...and soon after it (the loop checks every 0.25s)
    finally:
        stop.set()
        for s in idle + slow:
            s.close()
    grown = during - before
    record_property("rss_growth_mb_for_5200_connections", round(grown, 1))
    print(f"\nRSS of the whole server: {before:.1f} MB idle, {during:.1f} MB with 5,200 open connections "
          f"({grown * 1024 / 5200:.1f} kB each); hit p50 {times[10] * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms")
    assert grown < 50, grown


def test_300_slow_readers_of_a_50_mb_zip(procs: list[Proc], upstream: Upstream, tmp_path: Path,
                                         record_property: Callable[[str, object], None]) -> None:
    m = upstream.add(generate("example.com/huge", "v1.0.0", size=50_000_000))
    p, port = start(procs, "-host", "127.0.0.1", "-port", "0", "-cache", str(tmp_path / "cache"), "-upstream",
                    upstream.url, "-workers", "2", "-handler-threads", "4", "-progress", "off")
    path = "/example.com/huge/@v/v1.0.0.zip"
    assert get(port, path)[2] == m.zip
    mod = "/example.com/huge/@v/v1.0.0.mod"
    hit_times(port, mod)
    before = rss_mb(p)
    readers = []
    for _ in range(300):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        s.setblocking(False)
        readers.append(s)
    got = [0] * len(readers)
    stop = threading.Event()

    def read_slowly() -> None:  # 1 kB every 0.1 s each: 10 kB/s
        while not stop.wait(0.1):
            for n, s in enumerate(readers):
                try:
                    got[n] += len(s.recv(1024))
                except BlockingIOError:
                    pass

    reader = threading.Thread(target=read_slowly, daemon=True)
    reader.start()
    try:
        wait_for(lambda: min(got) > 0, timeout=30)  # every reader is being answered
        times = hit_times(port, mod)
        during = rss_mb(p)
        assert times[len(times) // 2] < 0.05, times
        assert times[-1] < 0.1, times
    finally:
        stop.set()
        reader.join(10)
        for s in readers:
            s.close()
    record_property("rss_mb_with_300_slow_readers", round(during, 1))
    print(f"\nRSS of the whole server: {before:.1f} MB before, {during:.1f} MB with 300 slow readers; "
          f"hit p50 {times[10] * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms")
    assert during - before < 50
