"""Download progress: a live block of bars on a real pseudo-terminal, throttled lines elsewhere."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest

from goproxy.progress import LINE_INTERVAL, Progress, choose_mode
from tests.support.helpers import FakeClock, get, wait_for
from tests.support.proc import ROOT
from tests.support.upstream import Upstream, generate

pytestmark = pytest.mark.timeout(120)

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) \S")


def test_lines_mode_logs_at_most_one_line_per_interval_and_a_completion_line(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    progress = Progress("lines", None, clock)
    caplog.set_level(logging.INFO, logger="goproxy")
    bar = progress.start("example.com/m@v1.0.0")
    bar.total = 10_000_000
    for _ in range(100):  # 100 updates over 25 seconds
        clock.advance(0.25)
        bar.add(100_000)
    bar.close()
    progress.finished("example.com/m@v1.0.0", 10_000_000, 25.0)
    lines = [r.getMessage() for r in caplog.records]
    ticks = [line for line in lines if line.startswith("downloading ")]
    assert len(ticks) == int(25 / LINE_INTERVAL)
    assert "example.com/m@v1.0.0" in ticks[0]
    assert "%" in ticks[0]
    assert "ETA" in ticks[0]
    assert lines[-1] == "fetched example.com/m@v1.0.0.zip: 10.0 MB in 25.000s (400.0 KB/s)"


def test_off_mode_draws_nothing_but_still_logs_completion(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    progress = Progress("off", stream, FakeClock())
    caplog.set_level(logging.INFO, logger="goproxy")
    bar = progress.start("m@v1")
    bar.add(10)
    bar.close()
    progress.finished("m@v1", 10, 1.0)
    assert stream.getvalue() == ""
    assert [r.getMessage() for r in caplog.records] == ["fetched m@v1.zip: 10 B in 1.000s (10 B/s)"]


def test_auto_picks_tty_only_for_a_terminal() -> None:
    assert choose_mode("auto", True) == "tty"
    assert choose_mode("auto", False) == "lines"
    assert choose_mode("off", True) == "off"


def screen(raw: str) -> list[str]:
    """screen replays terminal output (text, CR, LF, cursor-previous-line, erase-below) into the
    lines left on the screen: what a user sees once it is all drawn."""
    lines, row, col, i = [""], 0, 0, 0
    while i < len(raw):
        c = raw[i]
        if c == "\x1b":
            m = re.match(r"\x1b\[(\d*)([A-Za-z])", raw[i:])
            assert m, f"unknown escape at {raw[i:i + 10]!r}"
            n = int(m.group(1) or 1)
            if m.group(2) == "F":
                row, col = max(0, row - n), 0
            elif m.group(2) == "J":
                del lines[row + 1:]
                lines[row] = lines[row][:col]
            else:
                raise AssertionError(f"unexpected escape {m.group(0)!r}")
            i += m.end()
            continue
        if c == "\r":
            col = 0
        elif c == "\n":
            row, col = row + 1, 0
            if row == len(lines):
                lines.append("")
        else:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + c + line[col + 1:]
            col += 1
        i += 1
    return lines


def test_tty_block_of_bars_with_logs_scrolling_above_on_a_real_pty(upstream: Upstream, tmp_path: Path) -> None:
    mods = [upstream.add(generate(f"example.com/tty{i}", "v1.0.0", size=1_500_000)) for i in range(2)]
    upstream.rate = 1 << 20  # about 1.5 s per zip: many redraws
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "goproxy.py"), "-host", "127.0.0.1", "-port", "0",
         "-cache", str(tmp_path / "cache"), "-upstream", upstream.url, "-download-connections", "1",
         "-workers", "1"],  # live bars are drawn by a single process only
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave, env={"PATH": os.environ["PATH"]})
    os.close(slave)
    out = bytearray()

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the process closed the terminal
                return
            if not data:
                return
            out.extend(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: b"Set GOPROXY=" in out, timeout=20)
        announced = re.search(rb"localhost:(\d+)", bytes(out))
        assert announced is not None, bytes(out)
        port = int(announced.group(1))
        clients = [threading.Thread(target=get, args=(port, f"/{m.path}/@v/v1.0.0.zip")) for m in mods]
        for t in clients:
            t.start()
        for t in clients:
            t.join(60)
        wait_for(lambda: bytes(out).count(b"fetched example.com/tty") == 2, timeout=20)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        reader.join(10)
        os.close(master)
    raw = bytes(out).decode()
    # While both downloaded, the block held one bar per zip, one under the other.
    two = r"tty{}@v1\.0\.0 \[[#.]+\] +\d+% .*/s ETA \d+s\r?\n(\x1b\[\d*[A-Z])*example\.com/tty{}@v1\.0\.0 \["
    assert re.search(two.format(0, 1), raw) or re.search(two.format(1, 0), raw)
    bars = [line for line in re.sub(r"\x1b\[\d*[A-Z]", "", raw).replace("\r", "").split("\n") if " ETA " in line]
    assert bars
    assert all(len(line) < 100 for line in bars), "bars fit the terminal width"
    # What is left on screen is the log alone, every line whole: the bars were erased, never torn.
    final = [line for line in screen(raw) if line.strip()]
    assert final
    assert all(LOG_LINE.match(line) for line in final), "\n".join(final)
    assert any("fetched example.com/tty0@v1.0.0.zip: 1.5 MB in" in line for line in final)
    assert any("goproxy stopped" in line for line in final)
