"""The program as users start it: python3 goproxy.py in a subprocess, signals, exit codes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.helpers import ROOT, get
from tests.support.proc import Proc, start
from tests.support.upstream import Upstream, generate


def test_starts_logs_config_serves_and_stops_gracefully_on_sigterm(
        procs: list[Proc], upstream: Upstream, tmp_path: Path) -> None:
    m = upstream.add(generate("example.com/cli", "v1.0.0"))
    p, port = start(procs, "-host", "127.0.0.1", "-port", "0", "-cache", str(tmp_path / "c"),
                    "--upstream", upstream.url)
    out = p.text()
    assert "upstreams: " + upstream.url in out
    assert str(tmp_path / "c") in out
    assert get(port, "/health")[0] == 200
    assert get(port, "/example.com/cli/@v/v1.0.0.zip")[2] == m.zip
    assert get(port, "/example.com/cli/@v/v1.0.0.zip")[2] == m.zip
    p.wait_line(r"\[CACHE HIT\] 127\.0\.0\.1 GET /example\.com/cli/@v/v1\.0\.0\.zip 200")
    p.wait_line(r"\[CACHE MISS\] 127\.0\.0\.1 GET /example\.com/cli/@v/v1\.0\.0\.zip 200 \d+B")
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(15) == 0
    p.wait_line("shutdown complete")


def test_sigint_also_stops_with_status_0(procs: list[Proc], tmp_path: Path) -> None:
    p, port = start(procs, "-host=127.0.0.1", "-port=0", f"-cache={tmp_path / 'c'}")
    p.proc.send_signal(signal.SIGINT)
    assert p.proc.wait(15) == 0


def test_runs_on_bare_python_without_site_packages(procs: list[Proc], upstream: Upstream, tmp_path: Path) -> None:
    # -S: no site-packages at all, as on a locked-down host with nothing installed.
    m = upstream.add(generate("example.com/bare", "v1.0.0"))
    p, port = start(procs, "-host", "127.0.0.1", "-port", "0", "-cache", str(tmp_path / "c"),
                    "-upstream", upstream.url, python_flags=("-S", "-E"), cwd=tmp_path)
    assert get(port, "/example.com/bare/@v/v1.0.0.mod")[2] == m.mod


def test_environment_and_config_file_layers(procs: list[Proc], upstream: Upstream, tmp_path: Path) -> None:
    conf = tmp_path / "goproxy.json"
    conf.write_text('{"port": 1, "cache_dir": "%s", "host": "127.0.0.1"}' % (tmp_path / "from-file"))
    env = {"PATH": os.environ["PATH"], "GOPROXY_CONFIG": str(conf), "PORT": "0", "UPSTREAM_PROXY": upstream.url}
    p, port = start(procs, env=env)
    assert str(tmp_path / "from-file") in p.text()


@pytest.mark.parametrize("args,words", [
    (["-port", "abc"], ["flag -port"]),
    (["-nosuch", "1"], ["-nosuch", "unknown"]),
    (["-upstream", "proxy.golang.org"], ["-upstream", "http"]),
    (["stray"], ["unexpected argument"]),
])
def test_bad_flags_exit_2_with_a_clear_message(args: list[str], words: list[str]) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "goproxy.py"), *args], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    for w in words:
        assert w in proc.stderr


def test_help_and_version() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "goproxy.py"), "-h"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0
    assert "-upstream" in out.stdout
    assert "UPSTREAM_PROXY" in out.stdout
    out = subprocess.run([sys.executable, "-m", "goproxy", "-version"], capture_output=True, text=True,
                         timeout=30, cwd=ROOT)
    assert out.returncode == 0
    assert out.stdout.startswith("goproxy ")


def test_port_in_use_is_a_clear_error(procs: list[Proc], tmp_path: Path) -> None:
    _, port = start(procs, "-host", "127.0.0.1", "-port", "0", "-cache", str(tmp_path / "a"))
    proc = subprocess.run([sys.executable, str(ROOT / "goproxy.py"), "-host", "127.0.0.1", "-port", str(port),
                           "-cache", str(tmp_path / "b")], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "cannot listen" in proc.stderr
