"""Go's own test module proxy and checksum database (from the toolchain's cmd/go tests), as upstream."""

from __future__ import annotations

import os
import re
import subprocess
import threading
from pathlib import Path

BUILD_DIR = Path(__file__).resolve().parent.parent / ".build"

# The test checksum database's name and verifier key (cmd/go/proxy_test.go).
SUMDB_NAME = "localhost.localdev/sumdb"
SUMDB_KEY = "localhost.localdev/sumdb+00000c67+AcTrnkbUA+TU4heY3hkjiSES/DSQniBqIeQ/YppAUtK6"


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
