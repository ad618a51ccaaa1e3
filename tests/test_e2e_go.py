"""End to end: the real go command through the proxy, with Go's test proxy and checksum DB upstream."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from goproxy.server import ProxyServer
from tests.support.gotestproxy import MODULES, SUMDB_KEY, SUMDB_NAME, GoTestProxy, download, go_env, run_go

pytestmark = pytest.mark.timeout(900)



def test_go_downloads_lists_and_verifies_through_the_proxy(
        go: str, testproxy: GoTestProxy, make_proxy: Callable[..., ProxyServer], tmp_path: Path) -> None:
    direct = download(go, tmp_path, testproxy.url, "direct-modcache")
    assert len(direct) == len(MODULES) >= 20

    proxy = make_proxy([testproxy.url], sumdbs=("sum.golang.org", SUMDB_NAME))
    proxy_url = f"http://127.0.0.1:{proxy.port}"
    assert download(go, tmp_path, proxy_url, "proxy-modcache") == direct

    env = go_env(tmp_path, proxy_url, modcache="proxy-modcache")
    versions = run_go(go, ["list", "-m", "-versions", "rsc.io/quote"], env, tmp_path).split()
    assert versions[0] == "rsc.io/quote"
    assert "v1.5.2" in versions
    assert "v1.0.0" in versions

    # go get in a scratch module, verifying against the test checksum DB through /sumdb/.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "go.mod").write_text("module example.com/scratch\n\ngo 1.21\n")
    env = go_env(tmp_path, proxy_url, gosumdb=SUMDB_KEY, modcache="sumdb-modcache")
    run_go(go, ["get", "rsc.io/quote@v1.5.2"], env, scratch)
    go_sum = (scratch / "go.sum").read_text()
    assert f"rsc.io/quote v1.5.2 {direct['rsc.io/quote@v1.5.2'][0]}" in go_sum
    cached_sumdb = Path(proxy.config.cache_dir) / "sumdb" / SUMDB_NAME
    assert (cached_sumdb / "lookup" / "rsc.io" / "quote@v1.5.2").exists()

    # With the upstream gone, a fresh module cache fills from the proxy's cache alone.
    testproxy.stop()
    assert download(go, tmp_path, proxy_url, "offline-modcache") == direct
    env = go_env(tmp_path, proxy_url, modcache="offline-modcache")
    assert "v1.5.2" in run_go(go, ["list", "-m", "-versions", "rsc.io/quote"], env, tmp_path)


def test_go_reports_proxy_not_found_text(go: str, testproxy: GoTestProxy,
                                         make_proxy: Callable[..., ProxyServer], tmp_path: Path) -> None:
    proxy = make_proxy([testproxy.url])
    env = go_env(tmp_path, f"http://127.0.0.1:{proxy.port}")
    proc = subprocess.run([go, "mod", "download", "-json", "rsc.io/quote@v1.99.0"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "v1.99.0" in proc.stdout + proc.stderr
