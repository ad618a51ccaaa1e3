"""When the network lies: block pages and answers that cannot be what was asked for are never cached."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from goproxy.download import PARALLEL_MIN
from goproxy.server import ProxyServer
from tests.support.gotestproxy import MODULES, GoTestProxy, download
from tests.support.helpers import ROOT, FakeClock, get, wait_for
from tests.support.upstream import Upstream, generate, make_zip

pytestmark = pytest.mark.timeout(600)

M = "example.com/m"
V = "v1.0.0"
BLOCK = (b"<!DOCTYPE html>\n<html><head><title>Blocked</title></head>"
         b"<body>Access to this site is blocked by your network administrator.</body></html>\n")


def block_everything(up: Upstream, content_type: str = "text/html; charset=utf-8") -> None:
    """Make up answer every path with 200 and an HTML block page, as a captive portal does."""
    def fault(_path: str, h: BaseHTTPRequestHandler) -> bool:
        h.send_response(200)
        if content_type:
            h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(BLOCK)))
        h.end_headers()
        h.wfile.write(BLOCK)
        return True

    up.fault = fault


def cache_files(proxy: ProxyServer) -> list[Path]:
    """Return every file in the proxy's cache but its own (the usage database, fetch locks)."""
    root = Path(proxy.config.cache_dir)
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.relative_to(root).parts[0].startswith("."))


def raw_zip(entries: list[tuple[str, bytes]]) -> bytes:
    """Return a zip holding entries as named, duplicates included."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names; that is the point
        with zipfile.ZipFile(buf, "w") as z:
            for name, data in entries:
                z.writestr(name, data)
    return buf.getvalue()


def big(data: bytes) -> bytes:
    return data + bytes(PARALLEL_MIN + 100_000)


GOOD_MOD = f"module {M}\n\ngo 1.21\n".encode()
BAD_ANSWERS = [
    pytest.param("zip", b"this is not a zip file", "application/zip", "not a zip file", id="zip-not-a-zip"),
    pytest.param("zip", BLOCK, "application/octet-stream", "an HTML page", id="zip-html-without-its-type"),
    pytest.param("zip", big(b"garbage"), "application/zip", "not a zip file", id="big-zip-not-a-zip"),
    pytest.param("zip", make_zip("example.com/other", V, {"go.mod": b"module example.com/other\n"}),
                 "application/zip", "is not under 'example.com/m@v1.0.0/'", id="zip-for-another-module"),
    pytest.param("zip", make_zip(M, "v1.0.1", {"go.mod": GOOD_MOD}), "application/zip",
                 "is not under 'example.com/m@v1.0.0/'", id="zip-for-another-version"),
    pytest.param("zip", raw_zip([(f"{M}@{V}/go.mod", GOOD_MOD), (f"{M}@{V}/../../escape.go", b"package x\n")]),
                 "application/zip", "escape.go", id="zip-path-outside-the-prefix"),
    pytest.param("zip", raw_zip([(f"{M}@{V}/a.go", b"package a\n"), (f"{M}@{V}/a.go", b"package b\n")]),
                 "application/zip", "multiple entries", id="zip-duplicate-names"),
    pytest.param("zip", raw_zip([(f"{M}@{V}/A.go", b"package a\n"), (f"{M}@{V}/a.go", b"package a\n")]),
                 "application/zip", "case-insensitive", id="zip-case-folded-names"),
    pytest.param("zip", make_zip("example.com/other", V, {"blob.bin": bytes(PARALLEL_MIN + 100_000)}),
                 "application/zip", "is not under", id="big-zip-for-another-module"),
    pytest.param("mod", b"module example.com/other\n", "text/plain", "names module 'example.com/other'",
                 id="mod-for-another-module"),
    pytest.param("mod", BLOCK, "", "an HTML page", id="mod-html-without-its-type"),
    pytest.param("mod", b"module example.com/m\nrequire (\n", "text/plain", "not a go.mod file", id="mod-unparsable"),
    pytest.param("list", b"v1.0.0\nv1.1.0\nwelcome to the hotel wifi\n", "text/plain", "not a version list",
                 id="list-with-junk-lines"),
    pytest.param("info", b'{"Version": "v9.9.9"}', "application/json", "not 'v1.0.0'", id="info-for-another-version"),
    pytest.param("latest", b"Please log in", "text/plain", "not JSON", id="latest-not-json"),
]


def artifact_path(kind: str) -> str:
    if kind == "list":
        return f"/{M}/@v/list"
    if kind == "latest":
        return f"/{M}/@latest"
    return f"/{M}/@v/{V}.{kind}"


@pytest.mark.parametrize("kind,body,ctype,reason", BAD_ANSWERS)
def test_answers_that_cannot_be_what_was_asked_for_are_refused_and_never_cached(
        make_proxy: Callable[..., ProxyServer], upstream: Upstream, kind: str, body: bytes, ctype: str,
        reason: str) -> None:
    path = artifact_path(kind)
    headers = {"Content-Type": ctype} if ctype else {}
    upstream.set(path, 200, body, **headers)
    proxy = make_proxy([upstream.url])
    status, _, text = get(proxy, path)
    assert status == 502, text
    assert reason.encode() in text, text
    assert upstream.url.encode() in text  # names the upstream that sent it
    assert cache_files(proxy) == []  # neither the answer nor a partial download is left
    assert get(proxy, path)[0] == 502  # and the refusal is not remembered as anything else


def test_block_page_upstream_alone_gets_502_naming_the_reason_and_nothing_cached(
        make_proxy: Callable[..., ProxyServer], upstream: Upstream) -> None:
    block_everything(upstream)
    proxy = make_proxy([upstream.url])
    for kind in ("list", "latest", "info", "mod", "zip"):
        status, _, body = get(proxy, artifact_path(kind))
        assert status == 502, kind
        assert b"an HTML page (Content-Type text/html" in body, body
    assert get(proxy, f"/{M}/@v/master.info")[0] == 502
    assert cache_files(proxy) == []
    health = proxy.service.upstreams.health
    assert health is not None
    assert not health.is_down(upstream.url)  # a block page answers at once: nothing to skip


@pytest.mark.parametrize("ctype", ["text/html; charset=utf-8", ""], ids=["typed", "sniffed"])
def test_block_page_before_a_good_upstream_never_reaches_the_cache(
        make_proxy: Callable[..., ProxyServer], make_upstream: Callable[[], Upstream], ctype: str) -> None:
    block, good = make_upstream(), make_upstream()
    block_everything(block, ctype)
    m = good.add(generate(M, V, size=PARALLEL_MIN + 50_000))
    proxy = make_proxy([block.url, good.url])
    for kind, want in (("list", b"v1.0.0\n"), ("latest", m.info), ("info", m.info), ("mod", m.mod), ("zip", m.zip)):
        status, _, body = get(proxy, artifact_path(kind))
        assert status == 200, body[:200]
        assert body == want
    assert block.total() >= 5
    for f in cache_files(proxy):
        assert b"blocked by your network administrator" not in f.read_bytes(), f


def test_go_command_downloads_correct_modules_past_a_block_page(
        go: str, testproxy: GoTestProxy, make_proxy: Callable[..., ProxyServer], make_upstream: Callable[[], Upstream],
        tmp_path: Path) -> None:
    block = make_upstream()
    block_everything(block)
    direct = download(go, tmp_path, testproxy.url, "direct-modcache")
    proxy = make_proxy([block.url, testproxy.url])
    assert download(go, tmp_path, f"http://127.0.0.1:{proxy.port}", "proxy-modcache") == direct
    assert len(direct) == len(MODULES)
    assert block.total() > 0
    files = cache_files(proxy)
    assert len(files) >= 3 * len(MODULES)
    for f in files:
        assert b"blocked by your network administrator" not in f.read_bytes(), f


def test_a_refused_answer_is_logged_once_with_its_upstream_and_the_next_one_serves(
        make_proxy: Callable[..., ProxyServer], make_upstream: Callable[[], Upstream],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    liar, good = make_upstream(), make_upstream()
    m = good.add(generate(M, V))
    liar.set(artifact_path("zip"), 200, make_zip("example.com/other", V, {"x.go": b"package x\n"}),
             **{"Content-Type": "application/zip"})
    proxy = make_proxy([liar.url, good.url])
    assert get(proxy, artifact_path("zip"))[::2] == (200, m.zip)
    lines = [r for r in caplog.records if "cannot be what was asked for" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].levelno == logging.WARNING
    assert liar.url in lines[0].getMessage()
    assert liar.count(artifact_path("zip")) == 1  # a refused answer is not retried on the same upstream
    metrics = get(proxy, "/metrics")[2]
    assert f'goproxy_upstream_refused_total{{upstream="{liar.url}",reason="invalid"}} 1'.encode() in metrics


def test_stale_list_is_kept_when_its_refresh_is_refused(
        make_proxy: Callable[..., ProxyServer], upstream: Upstream, clock: FakeClock) -> None:
    upstream.add(generate(M, V))
    proxy = make_proxy([upstream.url])
    path = artifact_path("list")
    assert get(proxy, path)[2] == b"v1.0.0\n"
    block_everything(upstream)
    clock.advance(301)
    assert get(proxy, path)[::2] == (200, b"v1.0.0\n")
    wait_for(lambda: upstream.count(path) == 2)
    wait_for(lambda: not proxy.service.flights.in_flight(path.lstrip("/")))
    assert get(proxy, path)[::2] == (200, b"v1.0.0\n")
    assert (Path(proxy.config.cache_dir) / path.lstrip("/")).read_bytes() == b"v1.0.0\n"


def cache_verify(cache: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "goproxy.py"), "cache", "verify", *flags, "-cache", cache],
                          capture_output=True, text=True, timeout=120)


def test_cache_verify_fix_removes_poisoned_files_and_the_next_request_gets_correct_bytes(
        make_proxy: Callable[..., ProxyServer], upstream: Upstream) -> None:
    m = upstream.add(generate(M, V))
    other = upstream.add(generate("example.com/fine", V))
    proxy = make_proxy([upstream.url])
    for kind in ("list", "latest", "info", "mod", "zip"):
        assert get(proxy, artifact_path(kind))[0] == 200
    assert get(proxy, "/example.com/fine/@v/v1.0.0.zip")[0] == 200
    proxy.stop()
    cache = proxy.config.cache_dir
    clean = cache_verify(cache)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "6 checked, 0 failed" in clean.stdout

    # A cache filled before the checks existed: the block page saved as the zip and the go.mod.
    (Path(cache) / f"{M}/@v/{V}.zip").write_bytes(BLOCK)
    (Path(cache) / f"{M}/@v/{V}.mod").write_bytes(BLOCK)
    found = cache_verify(cache)
    assert found.returncode == 1
    assert f"BAD {M}/@v/{V}.mod: an HTML page" in found.stdout
    assert f"BAD {M}/@v/{V}.zip: not a zip file" in found.stdout
    assert "6 checked, 2 failed" in found.stdout
    assert (Path(cache) / f"{M}/@v/{V}.zip").exists()  # without -fix nothing is removed

    fixed = cache_verify(cache, "-fix")
    assert fixed.returncode == 1
    assert "6 checked, 2 failed, 2 removed" in fixed.stdout
    assert not (Path(cache) / f"{M}/@v/{V}.zip").exists()
    assert not (Path(cache) / f"{M}/@v/{V}.mod").exists()
    again = cache_verify(cache)
    assert again.returncode == 0
    assert "4 checked, 0 failed" in again.stdout

    second = make_proxy([upstream.url], cache_dir=cache)
    assert get(second, artifact_path("zip"))[::2] == (200, m.zip)
    assert get(second, artifact_path("mod"))[::2] == (200, m.mod)
    assert get(second, "/example.com/fine/@v/v1.0.0.zip")[::2] == (200, other.zip)
    assert upstream.count(artifact_path("zip")) == 2
    assert upstream.count("/example.com/fine/@v/v1.0.0.zip") == 1


def test_cache_verify_takes_fix_only(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    bad = subprocess.run([sys.executable, str(ROOT / "goproxy.py"), "cache", "stats", "-fix", "-cache",
                          str(tmp_path / "cache")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "only cache verify takes it" in bad.stderr


@pytest.mark.parametrize("ranges", [False, True], ids=["one-stream", "parallel"])
def test_a_body_that_is_no_zip_is_abandoned_at_its_first_bytes(
        make_proxy: Callable[..., ProxyServer], upstream: Upstream, ranges: bool) -> None:
    path = artifact_path("zip")
    upstream.range_support = ranges
    upstream.set(path, 200, BLOCK + bytes(4 << 20), **{"Content-Type": "application/octet-stream"})
    proxy = make_proxy([upstream.url])
    status, _, body = get(proxy, path)
    assert status == 502
    assert b"an HTML page" in body
    fetched = proxy.metrics.bytes_fetched.get()
    assert fetched < 1 << 20, fetched  # not the 4 MB that followed
    assert upstream.count(path) == 1  # no further chunk was asked for
    assert cache_files(proxy) == []


def test_cache_verify_checks_checksum_database_files_and_leaves_other_files_alone(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from goproxy.cli.cache import verify
    from goproxy.storage.disk import DiskStorage

    root = tmp_path / "cache"
    files = {
        "example.com/m/@v/list": b"v1.0.0\n",
        "example.com/m/@v/v1.0.0.zip.part": b"partial bytes",  # a download under way
        "sumdb/sum.golang.org/.verified-tree": b"not an artifact",
        "sumdb/sum.golang.org/tile/8/0/000": b"\x00" * 32 * 256,
        "sumdb/sum.golang.org/tile/8/0/001": BLOCK,
        "sumdb/sum.golang.org/lookup/example.com/m@v1.0.0": b"not a record",
    }
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    assert verify(DiskStorage(str(root)), fix=True) == 1
    out = capsys.readouterr().out
    assert "BAD sumdb/sum.golang.org/tile/8/0/001: an HTML page" in out
    assert "BAD sumdb/sum.golang.org/lookup/example.com/m@v1.0.0: malformed record data" in out
    assert "4 checked, 2 failed, 2 removed" in out
    left = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and not p.name.startswith(".generation"))
    assert left == sorted(k for k in files if k.endswith(("list", ".part", ".verified-tree", "/000")))
