"""Reliability: a full disk, and kill -9 at random moments during concurrent downloads."""

from __future__ import annotations

import random
import resource
from pathlib import Path

import pytest

from goproxy.storage.base import PARTIAL_SUFFIXES
from tests.support.helpers import get, kill_under_load
from tests.support.proc import Proc, start
from tests.support.upstream import Module, Upstream, generate

pytestmark = pytest.mark.timeout(600)


def artifacts(root: Path) -> list[Path]:
    """artifacts lists committed cache files: not in-progress files, not the usage database."""
    return [p for p in root.rglob("*") if p.is_file() and not p.relative_to(root).parts[0].startswith(".")
            and not any(p.name.endswith(s) for s in PARTIAL_SUFFIXES)]


def expected(upstream: Upstream, root: Path, f: Path) -> bytes:
    return upstream.routes["/" + f.relative_to(root).as_posix()].body


def test_disk_full_gives_5xx_keeps_no_partial_and_recovers(procs: list[Proc], upstream: Upstream,
                                                           tmp_path: Path) -> None:
    m = upstream.add(generate("example.com/full", "v1.0.0", size=400_000))
    cache = tmp_path / "cache"
    # One process: the file-size limit below is set on it alone.
    p, port = start(procs, "-host", "127.0.0.1", "-port", "0", "-cache", str(cache), "-upstream", upstream.url,
                    "-workers", "1")
    # The disk "fills" at 100 KB per file for the proxy process (RLIMIT_FSIZE: writes fail EFBIG).
    resource.prlimit(p.proc.pid, resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
    status, _, body = get(port, "/example.com/full/@v/v1.0.0.zip")
    assert 500 <= status < 600, body
    assert b"disk full" in body, body
    assert not [f for f in cache.rglob("*") if f.is_file() and f.name.endswith(".zip")]
    assert not [f for f in cache.rglob("*.part")]
    # Space returns: the same request now succeeds, with the right bytes.
    resource.prlimit(p.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert get(port, "/example.com/full/@v/v1.0.0.zip")[2] == m.zip
    assert get(port, "/health")[0] == 200


def test_kill_9_during_concurrent_downloads_leaves_only_complete_artifacts(
        procs: list[Proc], upstream: Upstream, tmp_path: Path) -> None:
    rng = random.Random(1234)
    mods: list[Module] = [upstream.add(generate(f"example.com/k{i}", "v1.0.0", size=rng.randint(50_000, 400_000)))
                          for i in range(30)]
    paths = [f"/example.com/k{i}/@v/v1.0.0.{ext}" for i in range(len(mods)) for ext in ("info", "mod", "zip")]
    cache = tmp_path / "cache"
    # One process, killed outright (a worker's own kill -9 is in test_workers.py).
    args = ["-host", "127.0.0.1", "-port", "0", "-cache", str(cache), "-upstream", upstream.url, "-workers", "1"]
    for round_ in range(4):
        p, port = start(procs, *args)
        target = upstream.total() + rng.randint(5, 40)
        # Kill after a random number of upstream requests, or once there is nothing left to fetch.
        kill_under_load(p, port, paths, 20, round_ * 100, lambda: upstream.total() >= target or len(  # noqa: B023
            artifacts(cache)) == len(paths))  # (kill_under_load calls it before it returns)
        for f in artifacts(cache):
            assert f.read_bytes() == expected(upstream, cache, f), f
    # A last run serves everything correctly from what the kills left behind.
    p, port = start(procs, *args)
    for path in paths:
        status, _, body = get(port, path)
        assert status == 200, path
        assert body == upstream.routes[path].body, path
