"""`goproxy cache rm`: removing module versions (files, last-use rows, local tier and bucket), dry runs,
argument errors, and removal while worker processes serve other modules."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from goproxy.cli.cache import cache_command
from goproxy.storage.disk import DiskStorage
from goproxy.storage.usage import UsageStore
from tests.support.helpers import ROOT, get, wait_for
from tests.support.proc import Proc, start
from tests.support.seaweed import Seaweed, s3_env
from tests.support.upstream import Reply, Upstream, generate

pytestmark = pytest.mark.timeout(120)


def fill(cache: Path, files: dict[str, bytes]) -> DiskStorage:
    cache.mkdir(exist_ok=True)
    store = DiskStorage(str(cache))
    for key, data in files.items():
        store.write(key, data)
    return store


def usage_rows(cache: Path) -> set[tuple[str, str]]:
    with sqlite3.connect(cache / ".usage.db") as db:
        return {(m, v) for m, v in db.execute("SELECT module, version FROM usage")}


def files_under(cache: Path) -> set[str]:
    return {str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file() and not p.name.startswith(".")
            and ".locks" not in p.parts}


CACHED = {
    "example.com/m/@v/v1.0.0.info": b'{"Version":"v1.0.0"}',
    "example.com/m/@v/v1.0.0.mod": b"module example.com/m\n",
    "example.com/m/@v/v1.0.0.zip": b"z" * 1000,
    "example.com/m/@v/v1.1.0.info": b'{"Version":"v1.1.0"}',
    "example.com/m/@v/v1.1.0.mod": b"module example.com/m\n",
    "example.com/m/@v/list": b"v1.0.0\nv1.1.0\n",
    "example.com/m/@latest": b'{"Version":"v1.1.0"}',
    "example.com/m/v2/@v/v2.0.0.mod": b"module example.com/m/v2\n",
    "example.com/!foo/@v/v1.0.0.mod": b"module example.com/Foo\n",
}


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    root = tmp_path / "cache"
    fill(root, CACHED)
    usage = UsageStore(str(root))
    usage.adopt([("example.com/m", "v1.0.0", 1.0), ("example.com/m", "v1.1.0", 1.0), ("example.com/m", "", 1.0),
                 ("example.com/m/v2", "v2.0.0", 1.0)])
    usage.close()
    return root


def rm(cache: Path, *args: str) -> int:
    return cache_command(["rm", "-cache", str(cache), *args], {})


def test_rm_removes_every_file_of_the_version_and_its_last_use(cache: Path, capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    assert rm(cache, "example.com/m@v1.0.0") == 0
    assert files_under(cache) == {k for k in CACHED if "v1.0.0" not in k or "/m/" not in k}
    assert usage_rows(cache) == {("example.com/m", "v1.1.0"), ("example.com/m", ""), ("example.com/m/v2", "v2.0.0")}
    assert capsys.readouterr().out.splitlines() == [
        "removed example.com/m@v1.0.0: v1.0.0.zip, v1.0.0.mod, v1.0.0.info (1041 bytes)",
        "removed 1 entries, 3 files, 1041 bytes (1.0 kB)",
    ]


def test_rm_dry_run_lists_and_removes_nothing(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert rm(cache, "-dry-run", "example.com/m") == 0
    assert files_under(cache) == set(CACHED)
    assert len(usage_rows(cache)) == 4
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "would remove example.com/m (list and @latest): list, @latest (34 bytes)"
    assert out[-1] == "would remove 3 entries, 7 files, 1116 bytes (1.1 kB)"


def test_rm_of_a_module_takes_every_version_its_list_and_latest_and_nothing_else(
        cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert rm(cache, "example.com/m") == 0
    assert files_under(cache) == {"example.com/m/v2/@v/v2.0.0.mod", "example.com/!foo/@v/v1.0.0.mod"}
    assert usage_rows(cache) == {("example.com/m/v2", "v2.0.0")}
    assert not (cache / "example.com/m/@v").exists()  # emptied directories go too
    assert "removed 3 entries, 7 files" in capsys.readouterr().out


def test_rm_takes_module_paths_as_typed_and_escapes_them(cache: Path) -> None:
    assert rm(cache, "example.com/Foo@v1.0.0") == 0
    assert "example.com/!foo/@v/v1.0.0.mod" not in files_under(cache)


def test_rm_of_what_is_not_cached_says_so_and_exits_1(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert rm(cache, "example.com/m@v9.9.9", "example.com/m/v2@v2.0.0") == 1
    captured = capsys.readouterr()
    assert captured.err == "goproxy cache rm: example.com/m@v9.9.9: not in the cache\n"
    assert "example.com/m/v2/@v/v2.0.0.mod" not in files_under(cache)  # the other argument was still done


@pytest.mark.parametrize("args,message", [
    ([], "goproxy cache rm: name at least one MODULE or MODULE@VERSION to remove"),
    (["nodot/m"], "goproxy cache rm: invalid module path 'nodot/m': missing dot in first path element"),
    (["example.com/m@v1!x"], "goproxy cache rm: invalid version 'v1!x': disallowed version string"),
    (["-fix", "example.com/m"], "goproxy cache rm: flag -fix: only cache verify takes it"),
], ids=["no-target", "bad-path", "bad-version", "wrong-flag"])
def test_rm_usage_errors_exit_2(cache: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                message: str) -> None:
    assert rm(cache, *args) == 2
    assert capsys.readouterr().err.strip() == message
    assert files_under(cache) == set(CACHED)


def test_rm_on_a_bucket_removes_the_object_and_the_local_copy(seaweed: Seaweed, s3_url: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in s3_env().items():
        monkeypatch.setenv(name, value)
    env = {"STORAGE": s3_url, "S3_ENDPOINT": seaweed.endpoint, "CACHE_DIR": str(tmp_path / "local")}
    from goproxy.app import build
    from goproxy.configload import load

    app = build(load({}, env))
    for key in ("example.com/m/@v/v1.0.0.mod", "example.com/m/@v/v1.0.0.info", "example.com/m/@v/v1.1.0.mod"):
        app.storage.write(key, b"x")
        app.local.write(key, b"x")
    app.usage.close()
    assert cache_command(["rm", "example.com/m@v1.0.0"], env) == 0
    bucket, prefix = s3_url[len("s3://"):].split("/", 1)
    assert set(seaweed.objects(bucket, prefix + "/")) == {"example.com/m/@v/v1.1.0.mod"}
    assert files_under(tmp_path / "local") == {"example.com/m/@v/v1.1.0.mod"}
    assert capsys.readouterr().out.startswith("removed example.com/m@v1.0.0: v1.0.0.mod, v1.0.0.info (2 bytes)")


def served_by(p: Proc, path: str, since: int = 0) -> set[str]:
    """Return the workers ([w1], [w2]) whose access lines show path, in the output after offset since."""
    pattern = r"\[(w\d+)\] (?:\[CACHE \w+\] )?127\.0\.0\.1 GET " + re.escape(path) + " "
    return set(re.findall(pattern, p.text()[since:]))


def test_rm_while_workers_serve_other_modules_takes_only_the_named_version(
        procs: list[Proc], upstream: Upstream, tmp_path: Path) -> None:
    mods = [upstream.add(generate(f"example.com/busy{i}", "v1.0.0", size=100_000)) for i in range(4)]
    target = upstream.add(generate("example.com/busy0", "v1.1.0", size=100_000))
    cache = tmp_path / "cache"
    p, port = start(procs, "-host", "127.0.0.1", "-port", "0", "-cache", str(cache), "-workers", "2",
                    "-progress", "off", "-upstream", upstream.url)
    others = [f"/{m.path}/@v/{m.version}.{ext}" for m in mods for ext in ("info", "mod", "zip")]
    gone = [f"/{target.path}/@v/{target.version}.{ext}" for ext in ("info", "mod", "zip")]
    for path in others + gone:
        assert get(port, path)[0] == 200
    for _ in range(300):  # until both workers hold the target's .info in memory
        assert get(port, gone[0])[0] == 200
        if served_by(p, gone[0]) == {"w1", "w2"}:
            break
    assert served_by(p, gone[0]) == {"w1", "w2"}

    stop = threading.Event()
    failures: list[str] = []
    answered = [0]

    def client(offset: int) -> None:
        i = offset
        while not stop.is_set():
            path = others[i % len(others)]
            status, _, body = get(port, path)
            if status != 200 or body != upstream.routes[path].body:
                failures.append(f"{path}: {status}")
            answered[0] += 1
            i += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(6)]
    for t in threads:
        t.start()
    wait_for(lambda: answered[0] > 50)
    out = subprocess.run([sys.executable, str(ROOT / "goproxy.py"), "cache", "rm", "-cache", str(cache),
                          f"{target.path}@{target.version}"], capture_output=True, text=True, timeout=60)
    seen = answered[0]
    wait_for(lambda: answered[0] > seen + 50)  # the other modules go on being served
    stop.set()
    for t in threads:
        t.join(30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("removed example.com/busy0@v1.1.0: v1.1.0.zip, v1.1.0.mod, v1.1.0.info")
    assert failures == []
    assert not (cache / "example.com/busy0/@v/v1.1.0.zip").exists()
    assert (cache / "example.com/busy0/@v/v1.0.0.zip").exists()

    # The next requests fetch it again; no worker answers from the copy it held in memory.
    fresh = json.dumps({"Version": target.version, "Time": "2025-05-05T05:05:05Z"}).encode()
    upstream.routes[gone[0]] = Reply(body=fresh, headers={"Content-Type": "application/json"})
    for path in gone:
        status, _, body = get(port, path)
        assert status == 200
        assert body == upstream.routes[path].body
    mark = len(p.text())
    for _ in range(300):
        assert get(port, gone[0])[2] == fresh
        if served_by(p, gone[0], mark) == {"w1", "w2"}:
            break
    assert served_by(p, gone[0], mark) == {"w1", "w2"}
    for path in gone:
        assert upstream.count(path) == 2
    for path in others:
        assert upstream.count(path) == 1
