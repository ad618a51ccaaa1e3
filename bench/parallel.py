"""Parallel Range downloads: 4 connections vs 1 on an upstream capped per connection, and the
proxy's peak RSS while four 200 MB zips download at once. Used by bench/run.py."""

from __future__ import annotations

import io
import os
import re
import shutil
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

from tests.support.proc import Proc
from tests.support.upstream import Module, Upstream

# The capped upstream sends each connection this many bytes per second.
RATE = 4 << 20
CAPPED_SIZE = 24 << 20
BIG_SIZE = 200 << 20


def stored_zip(path: str, version: str, size: int) -> Module:
    """stored_zip is a module whose zip holds size random bytes, stored (building it is quick)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{path}@{version}/go.mod", f"module {path}\n")
        z.writestr(f"{path}@{version}/blob.bin", os.urandom(size))
    return Module(path, version, b'{"Version":"%s"}' % version.encode(), f"module {path}\n".encode(), buf.getvalue())


def _start(cache: Path, upstream: Upstream, *extra: str) -> tuple[Proc, str]:
    p = Proc(["-host", "127.0.0.1", "-port", "0", "-cache", str(cache), "-upstream", upstream.url,
              "-progress", "off", *extra], env={"PATH": os.environ["PATH"]})
    port = int(p.wait_line(r"Set GOPROXY=http://localhost:(\d+),direct").group(1))
    return p, f"http://127.0.0.1:{port}"


def _download(url: str, want: int) -> None:
    with urllib.request.urlopen(url, timeout=600) as resp:
        got = 0
        while chunk := resp.read(1 << 20):
            got += len(chunk)
    if got != want:
        raise RuntimeError(f"{url}: got {got} bytes, want {want}")


def _timed(work: Path, upstream: Upstream, m: Module, connections: int) -> float:
    cache = work / f"parallel-{connections}"
    shutil.rmtree(cache, ignore_errors=True)
    p, url = _start(cache, upstream, "-download-connections", str(connections))
    try:
        started = time.monotonic()
        _download(f"{url}/{m.path}/@v/{m.version}.zip", len(m.zip))
        return time.monotonic() - started
    finally:
        p.stop()
        shutil.rmtree(cache, ignore_errors=True)


def measure(work: Path) -> tuple[float, float]:
    """measure returns the seconds one cold zip download takes with 1 and with 4 connections,
    from an upstream that sends each connection RATE bytes per second."""
    upstream = Upstream()
    try:
        upstream.rate = RATE
        m = upstream.add(stored_zip("example.com/capped", "v1.0.0", CAPPED_SIZE))
        return _timed(work, upstream, m, 1), _timed(work, upstream, m, 4)
    finally:
        upstream.close()


def peak_rss_four_big(work: Path) -> float:
    """peak_rss_four_big returns the whole proxy's peak RSS in MB (the parent's and every worker's
    summed) while four 200 MB zips download at once, each over 4 connections, from an uncapped
    upstream."""
    upstream = Upstream()
    cache = work / "parallel-rss"
    p: Proc | None = None
    try:
        mods = [upstream.add(stored_zip(f"example.com/huge{i}", "v1.0.0", BIG_SIZE)) for i in range(4)]
        p, url = _start(cache, upstream, "-download-connections", "4", "-max-concurrent-downloads", "4")
        errors: list[BaseException] = []

        def download(m: Module) -> None:
            try:
                _download(f"{url}/{m.path}/@v/{m.version}.zip", len(m.zip))
            except BaseException as exc:  # reported below, from the main thread
                errors.append(exc)

        threads = [threading.Thread(target=download, args=(m,)) for m in mods]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        pids = [p.proc.pid] + [int(x) for x in re.findall(r"started \(pid (\d+)\)", p.text())]
        total = 0
        for pid in pids:
            text = Path(f"/proc/{pid}/status").read_text()
            m = re.search(r"VmHWM:\s+(\d+) kB", text)
            assert m is not None, text
            total += int(m.group(1))
        return total / 1024
    finally:
        if p is not None:
            p.stop()
        upstream.close()
        shutil.rmtree(cache, ignore_errors=True)
