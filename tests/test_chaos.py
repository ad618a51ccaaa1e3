"""Chaos end to end: the go command gets every module through an upstream failing ~30% of requests."""

from __future__ import annotations

import http.client
import subprocess
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pytest

from goproxy.server import ProxyServer
from tests.support.chaos import FAULTS, Chaos
from tests.support.gotestproxy import MODULES, GoTestProxy, download, go_env

pytestmark = pytest.mark.timeout(900)


def fetch(url: str, path: str) -> bytes:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request("GET", parts.path + "/" + path)
        resp = conn.getresponse()
        assert resp.status == 200, path
        return resp.read()
    finally:
        conn.close()


def test_go_downloads_everything_through_a_failing_upstream(
        go: str, testproxy: GoTestProxy, make_proxy: Callable[..., ProxyServer], tmp_path: Path) -> None:
    direct = download(go, tmp_path, testproxy.url, "direct-modcache")
    chaos = Chaos(testproxy.url, rate=0.3)
    try:
        proxy = make_proxy([chaos.url], retry_attempts=5, upstream_timeout=0.5)
        url = f"http://127.0.0.1:{proxy.port}"
        # A request that meets a stall gets 502 after -upstream-timeout while the fetch goes on in
        # the background; the go command's next run finds what it missed in the cache.
        env = go_env(tmp_path, url, modcache="chaos-modcache")
        for _ in range(10):
            proc = subprocess.run([go, "mod", "download", *MODULES], env=env, cwd=tmp_path, capture_output=True,
                                  text=True, timeout=300)
            if proc.returncode == 0:
                break
            assert proc.stderr.count("502 Bad Gateway") == proc.stderr.count("no upstream answered within"), \
                proc.stderr
        got = download(go, tmp_path, url, "chaos-modcache")
    finally:
        chaos.close()
    assert got == direct
    assert len(got) >= 20
    assert set(chaos.faults) == set(FAULTS), chaos.faults
    assert sum(chaos.faults.values()) >= 20
    # Every file the proxy kept is byte for byte what the upstream really serves.
    root = Path(proxy.config.cache_dir)
    # (dot files are the cache's own: fetch locks, the usage database)
    files = [p for p in root.rglob("*") if p.is_file() and not p.relative_to(root).parts[0].startswith(".")]
    assert len(files) >= 3 * len(MODULES)
    for f in files:
        assert f.read_bytes() == fetch(testproxy.url, f.relative_to(root).as_posix()), f
