"""Shipping: the zipapp on a bare Python, pip install, the systemd unit and its notify protocol."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.gotestproxy import GoTestProxy, download
from tests.support.helpers import ROOT, get
from tests.support.proc import Proc, start

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="session")
def zipapp() -> Path:
    subprocess.run(["make", "-s", "zipapp"], cwd=ROOT, check=True, timeout=600,
                   env=dict(os.environ, MAKEFLAGS=""))
    return ROOT / "dist" / "goproxy.pyz"


@pytest.fixture
def bare_python(tmp_path: Path) -> str:
    """bare_python is a fresh venv's python with no packages at all (not even pip)."""
    venv = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    probe = subprocess.run([python, "-c", "import yaml"], capture_output=True)
    assert probe.returncode != 0, "the bare venv must not see PyYAML"
    return python


def test_zipapp_runs_on_bare_python_with_every_bundled_package(
        zipapp: Path, bare_python: str, procs: list[Proc], go: str, testproxy: GoTestProxy, tmp_path: Path) -> None:
    check = subprocess.run(
        [bare_python, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import yaml, socks, dns.resolver;"
         " print(yaml.__with_libyaml__)", str(zipapp)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "False"  # pure-Python YAML loader from inside the zip
    # A YAML config proves the bundled PyYAML works in the running program.
    conf = tmp_path / "goproxy.yaml"
    conf.write_text(f"host: 127.0.0.1\nport: 0\ncache_dir: {tmp_path / 'cache'}\nupstreams:\n  - {testproxy.url}\n")
    _, port = start(procs, "-config", str(conf), program=[bare_python, str(zipapp)], cwd=tmp_path)
    direct = download(go, tmp_path, testproxy.url, "direct")
    assert download(go, tmp_path, f"http://127.0.0.1:{port}", "via-zipapp") == direct


def test_pip_install_gives_a_goproxy_command(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(ROOT)], check=True, timeout=600,
                   cwd=tmp_path)
    out = subprocess.run([str(venv / "bin" / "goproxy"), "-version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert out.stdout.startswith("goproxy ")
    out = subprocess.run([str(venv / "bin" / "python"), "-m", "goproxy", "-h"], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 0
    assert "-upstream" in out.stdout


def test_package_version_matches_the_program() -> None:
    from goproxy import __version__

    assert f'version = "{__version__}"' in (ROOT / "pyproject.toml").read_text()


def test_systemd_unit_verifies_clean() -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is missing: apt-get install systemd (.ci/run installs it)")
    out = subprocess.run([analyze, "verify", str(ROOT / "deploy" / "goproxy.service")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "goproxy.service" not in out.stderr, out.stderr
    unit = (ROOT / "deploy" / "goproxy.service").read_text()
    for line in ["Type=notify", "DynamicUser=yes", "StateDirectory=goproxy", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "RestrictAddressFamilies=",
                 "EnvironmentFile=-/etc/default/goproxy", "Restart=on-failure", "ExecReload=/bin/kill -HUP $MAINPID",
                 "LimitNOFILE="]:
        assert line in unit


def test_notify_protocol_ready_and_stopping(tmp_path: Path, procs: list[Proc]) -> None:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(20)
    env = {"PATH": os.environ["PATH"], "NOTIFY_SOCKET": path}
    p, port = start(procs, "-host", "127.0.0.1", "-port", "0", "-cache", str(tmp_path / "c"), env=env)
    ready = sock.recv(4096).decode()
    assert "READY=1" in ready.split("\n")
    assert f"port {port}" in ready
    assert get(port, "/health")[0] == 200
    p.proc.send_signal(signal.SIGTERM)
    assert sock.recv(4096).decode() == "STOPPING=1"
    assert p.proc.wait(15) == 0
    sock.close()


def test_notify_abstract_socket(tmp_path: Path) -> None:
    from goproxy.sdnotify import Notifier

    name = f"goproxy-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    assert Notifier("@" + name).notify("READY=1")
    assert sock.recv(100) == b"READY=1"
    assert not Notifier(None).notify("READY=1")
    assert not Notifier(str(tmp_path / "missing.sock")).notify("READY=1")
    sock.close()


def test_dockerfile_and_compose_describe_the_service() -> None:
    docker = (ROOT / "Dockerfile").read_text()
    for word in ["FROM python:3", "USER goproxy", "VOLUME /app/cache", "EXPOSE 12345", "HEALTHCHECK", "/health"]:
        assert word in docker
    compose = (ROOT / "docker-compose.yml").read_text()
    for word in ["goproxy-cache:/app/cache", "healthcheck:", "restart: unless-stopped", "# UPSTREAM_PROXY"]:
        assert word in compose
    try:
        import yaml
    except ImportError:
        return
    data = yaml.safe_load(compose)
    assert data["services"]["goproxy"]["ports"] == ["12345:12345"]

