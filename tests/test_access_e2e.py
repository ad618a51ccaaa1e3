"""Access control through the real go command: a credential over https (in GOPROXY and in .netrc), refusals
it prints, a denied version, and an allow-list; Go's test module proxy upstream."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from goproxy.rules import parse_rules
from goproxy.server import ProxyServer
from tests.support.certs import Certs
from tests.support.gotestproxy import GoTestProxy, go_env, run_go
from tests.support.helpers import ROOT
from tests.support.proc import Proc

pytestmark = pytest.mark.timeout(600)

SECRET = "ci-Secret-7f3a9c"
REASON = "compromised release, see SEC-123"


def go_fails(go: str, args: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run the go command, which must fail; return what it printed."""
    proc = subprocess.run([go, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, proc.stdout
    return proc.stderr + proc.stdout


@pytest.fixture
def tls_auth_proxy(procs: list[Proc], testproxy: GoTestProxy, certs: Certs, tmp_path: Path) -> tuple[Proc, int]:
    """A goproxy process serving https, with one credential, ci, made by `goproxy.py auth hash`."""
    made = subprocess.run([sys.executable, str(ROOT / "goproxy.py"), "auth", "hash", "-name", "ci"],
                          input=SECRET + "\n", capture_output=True, text=True, timeout=60, check=True)
    clients = tmp_path / "clients"
    clients.write_text(made.stdout)
    p = Proc(["-host", "127.0.0.1", "-port", "0", "-cache", str(tmp_path / "cache"), "-upstream", testproxy.url,
              "-workers", "1", "-progress", "off", "-auth-file", str(clients), "-tls-cert", str(certs.cert),
              "-tls-key", str(certs.key)])
    procs.append(p)
    port = int(p.wait_line(r"Set GOPROXY=https://localhost:(\d+),direct").group(1))
    return p, port


def test_go_downloads_over_https_with_a_credential_and_is_refused_without(
        go: str, tls_auth_proxy: tuple[Proc, int], certs: Certs, tmp_path: Path) -> None:
    p, port = tls_auth_proxy
    trust = {"SSL_CERT_FILE": str(certs.ca)}
    env = {**go_env(tmp_path, f"https://ci:{SECRET}@127.0.0.1:{port}", modcache="ok"), **trust}
    out = run_go(go, ["mod", "download", "-json", "rsc.io/quote@v1.5.2"], env, tmp_path)
    assert json.loads(out)["Version"] == "v1.5.2"

    for proxy, tag in ((f"https://127.0.0.1:{port}", "none"), (f"https://ci:not-{SECRET}@127.0.0.1:{port}", "wrong"),
                       (f"https://nobody:{SECRET}@127.0.0.1:{port}", "unknown")):
        env = {**go_env(tmp_path, proxy, modcache=f"refused-{tag}"), **trust}
        text = go_fails(go, ["mod", "download", "rsc.io/quote@v1.5.1"], env, tmp_path)
        assert "401 Unauthorized" in text, tag
        assert "authentication required" in text, tag

    text = p.text()
    assert "refused: wrong secret or unknown name 'ci'" in text
    assert "refused: wrong secret or unknown name 'nobody'" in text
    assert SECRET not in text
    assert base64.b64encode(f"ci:{SECRET}".encode()).decode() not in text
    assert base64.b64encode(f"ci:not-{SECRET}".encode()).decode() not in text


def test_go_sends_a_credential_from_netrc(go: str, tls_auth_proxy: tuple[Proc, int], certs: Certs,
                                         tmp_path: Path) -> None:
    _, port = tls_auth_proxy
    env = {**go_env(tmp_path, f"https://127.0.0.1:{port}"), "SSL_CERT_FILE": str(certs.ca)}
    netrc = Path(env["HOME"]) / ".netrc"
    netrc.write_text(f"machine 127.0.0.1:{port} login ci password {SECRET}\n")  # the go command matches host:port
    netrc.chmod(0o600)
    out = run_go(go, ["mod", "download", "-json", "rsc.io/sampler@v1.3.0"], env, tmp_path)
    assert json.loads(out)["Version"] == "v1.3.0"


def test_go_without_the_ca_refuses_the_certificate(go: str, tls_auth_proxy: tuple[Proc, int], tmp_path: Path) -> None:
    _, port = tls_auth_proxy
    env = go_env(tmp_path, f"https://ci:{SECRET}@127.0.0.1:{port}")
    assert "certificate" in go_fails(go, ["mod", "download", "rsc.io/quote@v1.5.2"], env, tmp_path)


def test_a_denied_version_fails_with_its_reason_and_leaves_the_list_and_latest(
        go: str, testproxy: GoTestProxy, make_proxy: Callable[..., ProxyServer], tmp_path: Path) -> None:
    rules = parse_rules([{"pattern": "rsc.io/quote", "versions": "v1.5.2", "action": "deny", "reason": REASON}])
    proxy = make_proxy([testproxy.url], rules=rules)
    env = go_env(tmp_path, f"http://127.0.0.1:{proxy.port}")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "go.mod").write_text("module example.com/scratch\n\ngo 1.21\n")

    text = go_fails(go, ["get", "rsc.io/quote@v1.5.2"], env, scratch)
    assert "403 Forbidden" in text
    assert f"rsc.io/quote@v1.5.2: {REASON}" in text

    versions = run_go(go, ["list", "-m", "-versions", "rsc.io/quote"], env, scratch).split()
    assert versions[0] == "rsc.io/quote"
    assert "v1.5.1" in versions
    assert "v1.5.2" not in versions
    latest = json.loads(run_go(go, ["list", "-m", "-json", "rsc.io/quote@latest"], env, scratch))
    assert latest["Version"] == "v1.5.1"

    run_go(go, ["get", "rsc.io/quote@v1.5.1"], env, scratch)  # an allowed version of the same module
    assert "rsc.io/quote v1.5.1" in (scratch / "go.mod").read_text()


def test_an_allow_list_lets_only_the_listed_modules_download(
        go: str, testproxy: GoTestProxy, make_proxy: Callable[..., ProxyServer], tmp_path: Path) -> None:
    rules = parse_rules([{"pattern": "rsc.io", "action": "allow"},
                         {"pattern": "*", "action": "deny", "reason": "not on the allow-list; ask #platform"}])
    proxy = make_proxy([testproxy.url], rules=rules)
    env = go_env(tmp_path, f"http://127.0.0.1:{proxy.port},direct")  # the block holds against ,direct too
    out = run_go(go, ["mod", "download", "-json", "rsc.io/quote@v1.5.2", "rsc.io/sampler@v1.3.0"], env, tmp_path)
    assert out.count('"Version"') == 2
    text = go_fails(go, ["mod", "download", "golang.org/x/text@v0.3.0"], env, tmp_path)
    assert "403 Forbidden" in text
    assert "golang.org/x/text@v0.3.0: not on the allow-list; ask #platform" in text
