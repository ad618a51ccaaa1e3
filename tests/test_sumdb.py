"""Checksum verification against Go's own test checksum database: accept, reject, fail closed."""

from __future__ import annotations

import base64
import hashlib
import http.client
import logging
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from goproxy.errors import ConfigError
from goproxy.server import ProxyServer
from goproxy.sumdb.db import GoSumDB, parse_gosumdb
from tests.support.gotestproxy import SUMDB_KEY, SUMDB_NAME, GoTestProxy, go_env, run_go
from tests.support.helpers import get, local_http, stop_http

pytestmark = pytest.mark.timeout(300)

QUOTE = "/rsc.io/quote/@v/v1.5.2"


class Tamper:
    """Tamper forwards to target, passing each answer through mutate(path, body)."""

    def __init__(self, target: str, mutate: Callable[[str, bytes], bytes]) -> None:
        parts = urllib.parse.urlsplit(target)
        host, port, base = parts.hostname or "", parts.port or 80, parts.path.rstrip("/")

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                conn = http.client.HTTPConnection(host, port, timeout=30)
                conn.request("GET", base + self.path)
                resp = conn.getresponse()
                body = mutate(self.path, resp.read())
                conn.close()
                self.send_response(resp.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = local_http(H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        stop_http(self.server)


@pytest.fixture
def tampers() -> Iterator[list[Tamper]]:
    made: list[Tamper] = []
    yield made
    for t in made:
        t.close()


def sumdb(url: str = "", key: str = SUMDB_KEY) -> GoSumDB | None:
    return parse_gosumdb(f"{key} {url}".strip())


def cached(proxy: ProxyServer, path: str) -> bool:
    return (Path(proxy.config.cache_dir) / path.lstrip("/")).exists()


def test_gosumdb_forms() -> None:
    assert parse_gosumdb("off") is None
    default = parse_gosumdb("sum.golang.org")
    assert default is not None
    assert default.name == "sum.golang.org"
    db = parse_gosumdb(f"{SUMDB_KEY} http://127.0.0.1:9/x")
    assert db is not None
    assert (db.name, db.url) == (SUMDB_NAME, "http://127.0.0.1:9/x")
    for bad in ["nonsense", "a+b+c", f"{SUMDB_KEY[:-2]}AA", f"{SUMDB_KEY} ftp://x", "a b c"]:
        with pytest.raises(ValueError):
            parse_gosumdb(bad)


def test_bad_gosumdb_names_the_variable() -> None:
    from goproxy.configload import build

    with pytest.raises(ConfigError, match="GOSUMDB"):
        build({}, {"GOSUMDB": "sum.golang.org+00000000+AAAA"}, {})


def test_verified_modules_are_served_and_cached(make_proxy: Callable[..., ProxyServer], testproxy: GoTestProxy) -> None:
    proxy = make_proxy([testproxy.url], gosumdb=sumdb(testproxy.url + "/sumdb-direct"))
    for ext in ("zip", "mod", "info"):
        assert get(proxy, f"{QUOTE}.{ext}")[0] == 200
    assert get(proxy, "/golang.org/x/text/@v/v0.3.0.zip")[0] == 200
    tree = Path(proxy.config.cache_dir) / "sumdb" / SUMDB_NAME / ".verified-tree"
    assert tree.read_text().startswith("go.sum database tree\n")
    assert get(proxy, "/metrics")[2].count(b'goproxy_checksum_verifications_total{result="ok"}') == 1


def test_verification_through_the_upstream_sumdb_passthrough(make_proxy: Callable[..., ProxyServer],
                                                             testproxy: GoTestProxy) -> None:
    proxy = make_proxy([testproxy.url], gosumdb=sumdb())  # no URL: the upstream proxies /sumdb/<name>/
    assert get(proxy, f"{QUOTE}.zip")[0] == 200
    assert (Path(proxy.config.cache_dir) / "sumdb" / SUMDB_NAME / "lookup/rsc.io/quote@v1.5.2").exists()


def test_wrong_hashes_are_rejected_and_nothing_cached(make_proxy: Callable[..., ProxyServer], testproxy: GoTestProxy,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    proxy = make_proxy([testproxy.url], gosumdb=sumdb(testproxy.url + "/sumdb-wrong"))
    for ext in ("zip", "mod"):
        status, _, body = get(proxy, f"{QUOTE}.{ext}")
        assert status == 502, body
        assert b"checksum mismatch" in body, body
        assert not cached(proxy, f"{QUOTE}.{ext}")
    assert "SECURITY" in caplog.text
    assert get(proxy, f"{QUOTE}.zip")[0] == 502  # and stays rejected: the failure was not cached


def test_gonosumdb_patterns_skip_verification(make_proxy: Callable[..., ProxyServer], testproxy: GoTestProxy) -> None:
    proxy = make_proxy([testproxy.url], gosumdb=sumdb(testproxy.url + "/sumdb-wrong"), gonosumdb=("rsc.io/quote",))
    assert get(proxy, f"{QUOTE}.zip")[0] == 200
    assert get(proxy, "/golang.org/x/text/@v/v0.3.0.zip")[0] == 502


def test_tampered_tile_is_rejected(make_proxy: Callable[..., ProxyServer], testproxy: GoTestProxy,
                                   tampers: list[Tamper]) -> None:
    def flip(path: str, body: bytes) -> bytes:
        if "/tile/" in path and "/data/" not in path and body:
            return bytes([body[0] ^ 1]) + body[1:]
        return body

    t = Tamper(testproxy.url + "/sumdb-direct", flip)
    tampers.append(t)
    proxy = make_proxy([testproxy.url], gosumdb=sumdb(t.url))
    status, _, body = get(proxy, f"{QUOTE}.zip")
    assert status == 502
    assert b"SECURITY" in body
    assert not cached(proxy, f"{QUOTE}.zip")


def test_wrong_key_is_rejected(make_proxy: Callable[..., ProxyServer], testproxy: GoTestProxy) -> None:
    raw = b"\x01" + hashlib.sha256(b"another key").digest()
    key_hash = hashlib.sha256(SUMDB_NAME.encode() + b"\n" + raw).digest()[:4].hex()
    other = f"{SUMDB_NAME}+{key_hash}+{base64.b64encode(raw).decode()}"
    proxy = make_proxy([testproxy.url], gosumdb=sumdb(testproxy.url + "/sumdb-direct", key=other))
    status, _, body = get(proxy, f"{QUOTE}.zip")
    assert status == 502
    assert b"does not verify" in body
    assert not cached(proxy, f"{QUOTE}.zip")


def test_forked_tree_is_detected(make_proxy: Callable[..., ProxyServer], testproxy: GoTestProxy) -> None:
    # Two logs under one name and key: the first proxy keeps the tree head it verified (from the
    # small "wrong" log); the second sees the real, larger log, which does not extend it.
    first = make_proxy([testproxy.url], gosumdb=sumdb(testproxy.url + "/sumdb-wrong"))
    assert get(first, f"{QUOTE}.mod")[0] == 502
    first.stop()
    second = make_proxy([testproxy.url], gosumdb=sumdb(testproxy.url + "/sumdb-direct"),
                        cache_dir=first.config.cache_dir)
    status, _, body = get(second, "/golang.org/x/text/@v/v0.3.0.mod")
    assert status == 502, body
    assert b"forked" in body, body
    assert not cached(second, "/golang.org/x/text/@v/v0.3.0.mod")


def test_unreachable_database_fails_closed(make_proxy: Callable[..., ProxyServer], testproxy: GoTestProxy) -> None:
    proxy = make_proxy([testproxy.url], gosumdb=sumdb("http://127.0.0.1:9"))
    status, _, body = get(proxy, f"{QUOTE}.zip")
    assert status == 502
    assert b"unreachable" in body
    assert not cached(proxy, f"{QUOTE}.zip")


def test_go_command_downloads_through_a_verifying_proxy(make_proxy: Callable[..., ProxyServer], testproxy: GoTestProxy,
                                                        go: str, tmp_path: Path) -> None:
    proxy = make_proxy([testproxy.url], gosumdb=sumdb(testproxy.url + "/sumdb-direct"),
                       sumdbs=(SUMDB_NAME,))
    scratch = tmp_path / "m"
    scratch.mkdir()
    (scratch / "go.mod").write_text("module example.com/m\n\ngo 1.21\n")
    (scratch / "m.go").write_text('package m\n\nimport _ "rsc.io/quote"\n')
    env = go_env(tmp_path, f"http://127.0.0.1:{proxy.port}", gosumdb=SUMDB_KEY)
    env["GOFLAGS"] = "-mod=mod"
    run_go(go, ["get", "rsc.io/quote@v1.5.2"], env, scratch)
    run_go(go, ["mod", "download", "all"], env, scratch)
    assert "rsc.io/quote v1.5.2 h1:" in (scratch / "go.sum").read_text()
    assert cached(proxy, f"{QUOTE}.zip")


def test_verify_cache_reports_tampered_files(make_proxy: Callable[..., ProxyServer], testproxy: GoTestProxy) -> None:
    import subprocess
    import sys

    from tests.support.helpers import ROOT

    db = f"{SUMDB_KEY} {testproxy.url}/sumdb-direct"
    proxy = make_proxy([testproxy.url], gosumdb=sumdb(testproxy.url + "/sumdb-direct"))
    for path in (f"{QUOTE}.zip", f"{QUOTE}.mod", "/golang.org/x/text/@v/v0.3.0.zip"):
        assert get(proxy, path)[0] == 200
    cache = proxy.config.cache_dir

    def verify() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(ROOT / "goproxy.py"), "verify-cache", "-cache", cache,
                               "-upstream", testproxy.url, "-gosumdb", db], capture_output=True, text=True,
                              timeout=120)

    ok = verify()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "3 verified, 0 failed" in ok.stdout
    mod = Path(cache) / "rsc.io/quote/@v/v1.5.2.mod"
    mod.write_bytes(mod.read_bytes() + b"// tampered\n")
    bad = verify()
    assert bad.returncode == 1
    assert "MISMATCH rsc.io/quote@v1.5.2/go.mod" in bad.stdout
    assert "2 verified, 1 failed" in bad.stdout
