"""End to end: the real go command through the proxy, with Go's test proxy and checksum DB upstream."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from goproxy.server import ProxyServer
from tests.support import gotestproxy
from tests.support.gotestproxy import SUMDB_KEY, SUMDB_NAME, GoTestProxy

pytestmark = pytest.mark.timeout(900)

MODULES = [
    "rsc.io/quote@v1.0.0", "rsc.io/quote@v1.1.0", "rsc.io/quote@v1.2.0", "rsc.io/quote@v1.2.1",
    "rsc.io/quote@v1.3.0", "rsc.io/quote@v1.4.0", "rsc.io/quote@v1.5.0", "rsc.io/quote@v1.5.1",
    "rsc.io/quote@v1.5.2", "rsc.io/quote@v1.5.3-pre1", "rsc.io/quote/v2@v2.0.1",
    "rsc.io/quote/v3@v3.0.0", "rsc.io/sampler@v1.0.0", "rsc.io/sampler@v1.2.0",
    "rsc.io/sampler@v1.2.1", "rsc.io/sampler@v1.3.0", "rsc.io/sampler@v1.3.1",
    "rsc.io/sampler@v1.99.99", "rsc.io/QUOTE@v1.5.2", "golang.org/x/text@v0.3.0",
    "golang.org/x/text@v0.0.0-20170915032832-14c0d48ead0c", "rsc.io/fortune@v1.0.0",
    "rsc.io/fortune/v2@v2.0.0", "rsc.io/breaker@v2.0.0+incompatible", "rsc.io/testonly@v1.0.0",
]


@pytest.fixture(scope="session")
def testproxy_binary(go: str, goroot: Path) -> Path:
    return gotestproxy.build(go, goroot)


@pytest.fixture
def testproxy(testproxy_binary: Path, goroot: Path) -> Iterator[GoTestProxy]:
    p = GoTestProxy(testproxy_binary, goroot)
    yield p
    p.stop()


def go_env(tmp: Path, goproxy: str, gosumdb: str = "off", modcache: str = "modcache") -> dict[str, str]:
    """go_env is a hermetic environment for the go command: nothing from the host leaks in."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TMPDIR")}
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    return {**keep, "HOME": str(home), "GOPROXY": goproxy, "GOSUMDB": gosumdb, "GOFLAGS": "-mod=mod",
            "GOMODCACHE": str(tmp / modcache), "GOPATH": str(tmp / "gopath"),
            "GOCACHE": str(tmp / "gocache"), "GOTOOLCHAIN": "local", "GOENV": "off",
            "GONOSUMDB": "", "GONOPROXY": "", "GOPRIVATE": "", "GOINSECURE": "", "CGO_ENABLED": "0"}


def run_go(go: str, args: list[str], env: dict[str, str], cwd: Path) -> str:
    proc = subprocess.run([go, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"go {' '.join(args)} failed:\n{proc.stderr}\n{proc.stdout}"
    return proc.stdout


def download(go: str, tmp: Path, goproxy: str, modcache: str) -> dict[str, tuple[str, str]]:
    """download runs go mod download -json for MODULES; returns module@version → (Sum, GoModSum)."""
    env = go_env(tmp, goproxy, modcache=modcache)
    out = run_go(go, ["mod", "download", "-json", *MODULES], env, tmp)
    sums: dict[str, tuple[str, str]] = {}
    decoder, pos = json.JSONDecoder(), 0
    while pos < len(out.strip()):
        while out[pos].isspace():
            pos += 1
        obj: dict[str, Any]
        obj, pos = decoder.raw_decode(out, pos)
        assert "Error" not in obj, obj
        sums[f"{obj['Path']}@{obj['Version']}"] = (obj["Sum"], obj["GoModSum"])
    return sums


def test_go_downloads_lists_and_verifies_through_the_proxy(
        go: str, testproxy: GoTestProxy, make_proxy: Callable[..., ProxyServer], tmp_path: Path) -> None:
    direct = download(go, tmp_path, testproxy.url, "direct-modcache")
    assert len(direct) == len(MODULES) >= 20

    proxy = make_proxy([testproxy.url], sumdbs=("sum.golang.org", SUMDB_NAME))
    proxy_url = f"http://127.0.0.1:{proxy.port}"
    assert download(go, tmp_path, proxy_url, "proxy-modcache") == direct

    env = go_env(tmp_path, proxy_url, modcache="proxy-modcache")
    versions = run_go(go, ["list", "-m", "-versions", "rsc.io/quote"], env, tmp_path).split()
    assert versions[0] == "rsc.io/quote" and "v1.5.2" in versions and "v1.0.0" in versions

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
