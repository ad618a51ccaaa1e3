"""Access control in real processes: SIGHUP re-reads the module rules, the auth file and the certificate
(worker processes and a single process), and start-up errors name the file at fault."""

from __future__ import annotations

import base64
import http.client
import json
import signal
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from goproxy.auth import hash_secret
from tests.support import certs as test_certs
from tests.support.certs import Certs
from tests.support.helpers import ROOT, get
from tests.support.proc import Proc
from tests.support.upstream import Upstream, generate

pytestmark = pytest.mark.timeout(120)

M = "example.com/m"


def basic(name: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{secret}".encode()).decode()}


def https(port: int, ca: Certs, path: str, headers: dict[str, str]) -> int:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=ca.client_context())
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def write_config(path: Path, clients: dict[str, str], tls: Certs, denied: str) -> None:
    auth = path.parent / f"clients-{'-'.join(sorted(clients))}"
    auth.write_text("".join(f"{n}:{hash_secret(s, iterations=1000)}\n" for n, s in clients.items()))
    path.write_text(json.dumps({
        "auth_file": str(auth), "tls_cert": str(tls.cert), "tls_key": str(tls.key),
        "rules": [{"pattern": M, "versions": denied, "action": "deny", "reason": f"{denied} is bad"}]}))


def serve(procs: list[Proc], config: Path, upstream: Upstream, tmp_path: Path, workers: int) -> tuple[Proc, int]:
    p = Proc(["-config", str(config), "-host", "127.0.0.1", "-port", "0", "-cache", str(tmp_path / "cache"),
              "-upstream", upstream.url, "-workers", str(workers), "-progress", "off"])
    procs.append(p)
    return p, int(p.wait_line(r"Set GOPROXY=https://localhost:(\d+),direct").group(1))


@pytest.mark.parametrize("workers", [2, 1])
def test_sighup_re_reads_rules_credentials_and_certificate(
        procs: list[Proc], upstream: Upstream, certs: Certs, tmp_path: Path,
        tmp_path_factory: pytest.TempPathFactory, workers: int) -> None:
    for v in ("v1.0.0", "v1.1.0"):
        upstream.add(generate(M, v))
    old, new = f"/{M}/@v/v1.0.0.info", f"/{M}/@v/v1.1.0.info"
    config = tmp_path / "goproxy.json"
    write_config(config, {"ci": "ci-secret"}, certs, "v1.0.0")
    p, port = serve(procs, config, upstream, tmp_path, workers)
    ci, ops = basic("ci", "ci-secret"), basic("ops", "ops-secret")
    assert https(port, certs, old, ci) == 403
    assert https(port, certs, new, ci) == 200
    assert https(port, certs, new, ops) == 401

    renewed = test_certs.make(tmp_path_factory.mktemp("renewed"))
    write_config(config, {"ops": "ops-secret"}, renewed, "v1.1.0")
    p.proc.send_signal(signal.SIGHUP)
    p.wait_line(r"reload complete" if workers > 1 else r"reload: certificate, credentials and 1 module rule")
    for _ in range(4):  # new connections, whichever worker takes them
        assert https(port, renewed, old, ops) == 200
        assert https(port, renewed, new, ops) == 403
        assert https(port, renewed, new, ci) == 401
    with pytest.raises(ssl.SSLCertVerificationError):
        https(port, certs, old, ops)

    # A reload whose certificate cannot be used is refused; what runs keeps running.
    config.write_text(config.read_text().replace(str(renewed.key), str(tmp_path / "nokey")))
    p.proc.send_signal(signal.SIGHUP)
    p.wait_line(r"reload: TLS key \S+nokey: No such file or directory; (the workers )?keep")
    assert https(port, renewed, old, ops) == 200
    assert p.proc.poll() is None


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "goproxy.py"), "-host", "127.0.0.1", "-port", "0",
                           "-progress", "off", *args], capture_output=True, text=True, timeout=60,
                          env=env, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_unusable_certificate_stops_the_start_naming_the_file(certs: Certs, tmp_path: Path,
                                                                 workers: str) -> None:
    out = run("-cache", str(tmp_path / "c"), "-workers", workers, "-tls-cert", str(tmp_path / "missing.pem"),
              "-tls-key", str(certs.key))
    assert out.returncode == 1
    assert f"TLS certificate {tmp_path / 'missing.pem'}: No such file or directory" in out.stderr


def test_a_missing_auth_file_stops_the_start_naming_it(tmp_path: Path) -> None:
    out = run("-cache", str(tmp_path / "c"), "-workers", "2", "-auth-file", str(tmp_path / "clients"))
    assert out.returncode == 1
    assert f"{tmp_path / 'clients'}: No such file or directory" in out.stderr


@pytest.mark.parametrize("args,message", [
    (["-tls-cert", "c.pem"], "-tls-cert and -tls-key (TLS_CERT, TLS_KEY) go together"),
    (["-tls-key", "k.pem"], "-tls-cert and -tls-key (TLS_CERT, TLS_KEY) go together"),
    (["-metrics-auth", "maybe"], "flag -metrics-auth: invalid setting 'maybe' (want on or off)"),
], ids=["cert-alone", "key-alone", "metrics-auth"])
def test_access_option_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    out = run("-cache", str(tmp_path / "c"), *args)
    assert out.returncode == 2
    assert message in out.stderr


def test_credentials_on_plain_http_warn_at_start_and_are_still_required(
        procs: list[Proc], upstream: Upstream, tmp_path: Path) -> None:
    clients = tmp_path / "clients"
    clients.write_text(f"ci:{hash_secret('s', iterations=1000)}\n")
    p = Proc(["-host", "127.0.0.1", "-port", "0", "-cache", str(tmp_path / "c"), "-upstream", upstream.url,
              "-workers", "1", "-progress", "off", "-auth-file", str(clients), "-metrics-auth", "off"])
    procs.append(p)
    port = int(p.wait_line(r"Set GOPROXY=http://localhost:(\d+),direct").group(1))
    assert "WARNING -auth-file without -tls-cert: secrets would cross the network in clear text" in p.text()
    assert "every request but /health and /ready and /metrics needs one" in p.text()
    assert get(port, "/metrics")[0] == 200
    assert get(port, "/status.json")[0] == 401


def test_the_rules_are_logged_at_start(procs: list[Proc], upstream: Upstream, tmp_path: Path) -> None:
    config = tmp_path / "goproxy.json"
    rules: list[dict[str, Any]] = [{"pattern": M, "versions": [">=v1.2.0,<v1.2.4", "v1.3.0"], "action": "deny",
                                    "reason": "SEC-123"}, {"pattern": "*", "action": "offline"}]
    config.write_text(json.dumps({"rules": rules}))
    p = Proc(["-config", str(config), "-host", "127.0.0.1", "-port", "0", "-cache", str(tmp_path / "c"),
              "-upstream", upstream.url, "-workers", "1", "-progress", "off"])
    procs.append(p)
    p.wait_line(r"Set GOPROXY=")
    assert f"module rule 1: deny {M} >=v1.2.0,<v1.2.4 or v1.3.0 (SEC-123)" in p.text()
    assert "module rule 2: offline *" in p.text()


def test_help_lists_the_access_flags() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "goproxy.py"), "-h"], capture_output=True, text=True,
                         timeout=60)
    for flag in ("-auth-file", "-tls-cert", "-tls-key", "-metrics-auth"):
        assert f"  {flag} " in out.stdout
    assert "(env METRICS_AUTH) (default on)" in out.stdout
