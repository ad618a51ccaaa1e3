"""The whole air-gap trip with the real go command: prefetch a project's go.sum, export a bundle,
import it behind -upstream off, and build inside with checksum verification left on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from goproxy.server import ProxyServer
from goproxy.sumdb.client import verified_tree_key
from tests.support.airgap import Recorder, goproxy, read_bundle
from tests.support.gotestproxy import SUMDB_KEY, SUMDB_NAME, GoTestProxy, go_env, run_go
from tests.support.proc import Proc, start
from tests.support.sumdbserver import SumDBServer
from tests.support.upstream import Upstream, generate

pytestmark = pytest.mark.timeout(900)

MAIN_GO = """package main

import (
	"fmt"

	"example.com/version"
	_ "example.net/pkgadded/subpkg"
	_ "github.com/go-logr/logr"
	_ "golang.org/x/net/dns/dnsmessage"
	_ "golang.org/x/text/language"
	_ "k8s.io/klog/v2"
	"rsc.io/quote"
	quotev2 "rsc.io/quote/v2"
	quotev3 "rsc.io/quote/v3"
	"rsc.io/sampler"
	_ "rsc.io/testonly"
)

func main() {
	fmt.Println(quote.Hello(), quotev2.HelloV2(), quotev3.HelloV3(), sampler.Hello(), version.V)
}
"""


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


def download_all(go: str, env: dict[str, str], cwd: Path) -> dict[str, tuple[str, str]]:
    """Run go mod download -json all in cwd; return module@version → (Sum, GoModSum)."""
    out = run_go(go, ["mod", "download", "-json", "all"], env, cwd)
    sums: dict[str, tuple[str, str]] = {}
    decoder, pos, text = json.JSONDecoder(), 0, out.strip()
    while pos < len(text):
        obj, pos = decoder.raw_decode(text, pos)
        while pos < len(text) and text[pos].isspace():
            pos += 1
        assert "Error" not in obj, obj
        sums[f"{obj['Path']}@{obj['Version']}"] = (obj.get("Sum", ""), obj["GoModSum"])
    return sums


def offline_proxy(procs: list[Proc], cache: Path, recorder: Recorder) -> tuple[Proc, str]:
    """Start goproxy -upstream off on cache; an outbound connection would reach recorder."""
    p, port = start(procs, "-host", "127.0.0.1", "-port", "0", "-cache", str(cache), "-upstream", "off",
                    "-proxy", f"http://127.0.0.1:{recorder.port}", "-progress", "off")
    return p, f"http://127.0.0.1:{port}"


def test_a_project_builds_inside_the_air_gap_with_checksums_verified(
        go: str, testproxy: GoTestProxy, make_proxy: Callable[..., ProxyServer], procs: list[Proc],
        recorder: Recorder, tmp_path: Path) -> None:
    # Outside: go mod tidy through an online proxy gives the project's go.sum.
    online = make_proxy([testproxy.url], sumdbs=("sum.golang.org", SUMDB_NAME))
    project = tmp_path / "project"
    project.mkdir()
    (project / "go.mod").write_text("module example.com/scratch\n\ngo 1.21\n")
    (project / "main.go").write_text(MAIN_GO)
    outside = tmp_path / "outside"
    outside.mkdir()
    run_go(go, ["mod", "tidy"], go_env(outside, f"http://127.0.0.1:{online.port}", gosumdb=SUMDB_KEY), project)
    go_sum = (project / "go.sum").read_text()
    requires = (project / "go.mod").read_text().count("\n\t")
    assert requires >= 10
    direct = download_all(go, go_env(outside, testproxy.url, gosumdb=SUMDB_KEY, modcache="direct"), project)

    flags = ["-cache", str(tmp_path / "src"), "-upstream", testproxy.url, "-gosumdb", SUMDB_KEY, "-progress", "off"]
    p = goproxy("prefetch", *flags, str(project / "go.sum"))
    assert p.returncode == 0, p.stdout + p.stderr
    bundle = tmp_path / "carry.tgz"
    p = goproxy("bundle", "export", "-o", str(bundle), *flags, str(project / "go.sum"))
    assert p.returncode == 0, p.stdout + p.stderr
    testproxy.stop()  # nothing outside is reachable from here on

    # Inside: a fresh cache behind -upstream off, the bundle imported into it.
    inside = tmp_path / "inside"
    proxy, url = offline_proxy(procs, inside / "cache", recorder)
    p = goproxy("bundle", "import", "-cache", str(inside / "cache"), "-upstream", "off", "-gosumdb", SUMDB_KEY,
                str(bundle))
    assert p.returncode == 0, p.stdout + p.stderr
    work = inside / "project"
    shutil.copytree(project, work)
    (work / "go.sum").unlink()  # so every module is verified against the checksum database again
    env = go_env(inside, url, gosumdb=SUMDB_KEY, modcache="modcache")
    assert env["GOFLAGS"] == "-mod=mod"
    got = download_all(go, env, work)
    assert got == direct
    run_go(go, ["build", "-o", str(inside / "app"), "."], env, work)
    assert sorted((work / "go.sum").read_text().splitlines()) == sorted(go_sum.splitlines())
    assert "v1.1.0" in subprocess.run([str(inside / "app")], capture_output=True, text=True).stdout
    assert recorder.connections == 0
    assert "[CACHE MISS]" not in proxy.text()


def test_an_incremental_bundle_moves_the_offline_tree_forward_and_old_and_new_verify(
        go: str, upstream: Upstream, procs: list[Proc], recorder: Recorder, tmp_path: Path) -> None:
    db = SumDBServer(upstream)
    first = [db.add(generate(f"example.com/lib{i}", "v1.0.0")) for i in range(3)]
    db.filler(297)  # the first tree ends inside the second level-0 tile, which no record of ours is in
    flags = ["-cache", str(tmp_path / "src"), "-upstream", upstream.url, "-gosumdb", db.vkey, "-progress", "off"]
    names = [f"{m.path}@{m.version}" for m in first]
    b1 = tmp_path / "b1.tgz"
    p = goproxy("bundle", "export", "-o", str(b1), *flags, *names)
    assert p.returncode == 0, p.stderr
    size1 = db.size

    dst = tmp_path / "inside-cache"
    _proxy, url = offline_proxy(procs, dst, recorder)
    imp = ["bundle", "import", "-cache", str(dst), "-upstream", "off", "-gosumdb", db.vkey]
    assert goproxy(*imp, str(b1)).returncode == 0
    (tmp_path / "inside").mkdir()
    gopath_env = go_env(tmp_path / "inside", url, gosumdb=db.vkey, modcache="mc1")
    run_go(go, ["mod", "download", *names], gopath_env, tmp_path / "inside")

    # The database grows past a tile boundary; new versions are published.
    db.filler(400)
    later = [db.add(generate("example.com/lib0", "v1.1.0")), db.add(generate("example.com/new", "v1.0.0"))]
    new_names = [f"{m.path}@{m.version}" for m in later]
    b2 = tmp_path / "b2.tgz"
    p = goproxy("bundle", "export", "-o", str(b2), "-since", str(b1), *flags, *names, *new_names)
    assert p.returncode == 0, p.stderr
    members = read_bundle(b2)
    carried = {n.split("/@v/")[0] + "@" + n.split("/@v/")[1].rsplit(".", 1)[0]
               for n in members if "/@v/" in n and not n.endswith("/list")}
    assert carried == set(new_names)
    assert any(n.startswith(f"sumdb/{db.name}/tile/") for n in members)
    assert json.loads(members["manifest.json"])["since"]["tree_size"] == size1

    p = goproxy(*imp, str(b2))
    assert p.returncode == 0, p.stderr
    assert f"moved from {size1} to {db.size}" in p.stdout
    assert (dst / verified_tree_key(db.name)).read_bytes() == db.signed
    # The records imported before now carry the new tree head too.
    assert (dst / f"sumdb/{db.name}/lookup/example.com/lib1@v1.0.0").read_bytes().endswith(db.signed)

    # The go command that knew the old tree head checks the new one against it; old and new verify.
    run_go(go, ["mod", "download", *names, *new_names], dict(gopath_env, GOMODCACHE=str(tmp_path / "mc2")),
           tmp_path / "inside")
    (tmp_path / "fresh").mkdir()
    fresh = go_env(tmp_path / "fresh", url, gosumdb=db.vkey, modcache="mc")
    run_go(go, ["mod", "download", *new_names, *names], fresh, tmp_path / "fresh")
    assert recorder.connections == 0
    assert os.path.exists(tmp_path / "inside" / "gopath" / "pkg" / "sumdb" / db.name / "latest")
