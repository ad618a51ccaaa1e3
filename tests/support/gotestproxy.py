"""Go's own test module proxy and checksum database (from the toolchain's cmd/go tests), as upstream."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

BUILD_DIR = Path(__file__).resolve().parent.parent / ".build"

# The test checksum database's name and verifier key (cmd/go/proxy_test.go).
SUMDB_NAME = "localhost.localdev/sumdb"
SUMDB_KEY = "localhost.localdev/sumdb+00000c67+AcTrnkbUA+TU4heY3hkjiSES/DSQniBqIeQ/YppAUtK6"

# Module versions the test proxy serves, for downloads of a realistic set.
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


def build(go: str, goroot: Path) -> Path:
    """build compiles cmd/go's test binary once per toolchain version and returns its path."""
    version = subprocess.run([go, "env", "GOVERSION"], check=True, capture_output=True,
                             text=True).stdout.strip()
    binary = BUILD_DIR / f"gotestproxy-{version}"
    if binary.exists():
        return binary
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_suffix(f".{os.getpid()}.tmp")
    env = dict(os.environ, GOFLAGS="-mod=mod", CGO_ENABLED="0")
    subprocess.run([go, "test", "-c", "-o", str(tmp), "cmd/go"], cwd=goroot / "src" / "cmd" / "go",
                   check=True, env=env, timeout=900)
    os.replace(tmp, binary)
    return binary


class GoTestProxy:
    """GoTestProxy runs the test proxy on 127.0.0.1; url is its GOPROXY base (".../mod")."""

    def __init__(self, binary: Path, goroot: Path) -> None:
        self.proc = subprocess.Popen(
            [str(binary), "-proxy=127.0.0.1:0"], cwd=goroot / "src" / "cmd" / "go",
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        self.url = ""
        for line in self.proc.stderr:
            m = re.search(r"GOPROXY=(http://\S+)", line)
            if m:
                self.url = m.group(1)
                break
        if not self.url:
            self.proc.kill()
            raise RuntimeError("Go test proxy did not start")
        # Keep draining stderr so the proxy never blocks on a full pipe.
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()

    def stop(self) -> None:
        """stop kills the proxy and waits for it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


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
