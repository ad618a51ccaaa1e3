"""goproxy as users start it: a subprocess whose stderr lines a test can wait for."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


class Proc:
    """Proc runs goproxy.py and collects its stderr lines as they come."""

    def __init__(self, args: list[str], python_flags: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 cwd: Path | None = None, program: list[str] | None = None) -> None:
        program = program or [sys.executable, *python_flags, str(ROOT / "goproxy.py")]
        self.proc = subprocess.Popen(
            [*program, *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env if env is not None else {"PATH": os.environ["PATH"]}, cwd=cwd)
        self.lines: list[str] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()
        with self.changed:
            self.lines.append("")  # EOF marker
            self.changed.notify_all()

    def wait_line(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        """wait_line blocks until a stderr line matches pattern; returns the match."""
        rx = re.compile(pattern)
        found: list[re.Match[str]] = []

        def seen() -> bool:
            found[:] = [m for m in (rx.search(line) for line in self.lines) if m][:1]
            return bool(found) or (bool(self.lines) and self.lines[-1] == "")

        with self.changed:
            self.changed.wait_for(seen, timeout)
        if not found:
            raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(self.lines)}")
        return found[0]

    def text(self) -> str:
        with self.changed:
            return "".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def start(procs: list[Proc], *args: str, python_flags: tuple[str, ...] = (), env: dict[str, str] | None = None,
          cwd: Path | None = None, program: list[str] | None = None) -> tuple[Proc, int]:
    p = Proc(list(args), python_flags, env, cwd, program)
    procs.append(p)
    port = int(p.wait_line(r"Set GOPROXY=http://localhost:(\d+),direct").group(1))
    return p, port
