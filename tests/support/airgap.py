"""Helpers for the air-gap tests: goproxy commands in a subprocess, cache snapshots, bundle surgery,
and a listener that records every connection made to it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path

from tests.support.proc import ROOT


def goproxy(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python goproxy.py ARGS` to completion; return it with its output."""
    return subprocess.run([sys.executable, str(ROOT / "goproxy.py"), *args], capture_output=True, text=True,
                          timeout=300, env=env if env is not None else {"PATH": os.environ["PATH"]}, cwd=cwd)


def snapshot(root: Path) -> dict[str, str]:
    """Return every file under root (relative path → SHA-256) and every directory (→ "dir")."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            found[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            if os.path.relpath(p, root) == ".usage.db" or f.startswith(".usage.db"):
                continue
            with open(p, "rb") as fh:
                found[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return found


def _read(tf: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    f = tf.extractfile(member)
    assert f is not None, f"{member.name} is not a file"
    return f.read()


def read_bundle(path: Path) -> dict[str, bytes]:
    """Return a bundle's members in order, name → bytes."""
    with tarfile.open(path, "r:*") as tf:
        return {m.name: _read(tf, m) for m in tf.getmembers()}


def write_bundle(path: Path, members: dict[str, bytes], fix_manifest: bool = True) -> None:
    """Write members as a plain tar, re-listing sizes and SHA-256s in manifest.json when fix_manifest
    (as a forger would)."""
    if fix_manifest:
        doc = json.loads(members["manifest.json"])
        doc["members"] = [{"name": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
                          for n, d in sorted(members.items()) if n != "manifest.json"]
        members = {"manifest.json": json.dumps(doc).encode(), **{n: d for n, d in members.items()
                                                                if n != "manifest.json"}}
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def edit_bundle(src: Path, dst: Path, change: Callable[[dict[str, bytes]], None], fix_manifest: bool = True) -> None:
    """Copy the bundle src to dst with change applied to its members."""
    members = read_bundle(src)
    change(members)
    write_bundle(dst, members, fix_manifest)


class Recorder:
    """A TCP listener on 127.0.0.1 that counts the connections made to it (an outbound trap)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()
