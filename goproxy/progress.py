"""Download progress: a live block of bars at the bottom of a TTY, or throttled plain lines."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

# A download reports at most one line per this many seconds when stderr is not a terminal.
LINE_INTERVAL = 5.0
# The TTY block is redrawn at most this often.
REDRAW_INTERVAL = 0.1
_BAR_WIDTH = 24


def human(n: float) -> str:
    """Return a byte count for people: "512 B", "12.3 MB" (decimal units, up to GB)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


@dataclass(frozen=True)
class Transfer:
    """One download in progress, as read at one moment (for the status page)."""

    name: str  # "module@version"
    done: int  # bytes on disk
    total: int  # the zip's size; 0 until known
    elapsed: float  # seconds since the download started
    speed: float  # bytes per second fetched in this run (bytes resumed from disk not counted)


class Bar:
    """One download's progress; total is 0 until the size is known."""

    def __init__(self, owner: Progress, name: str, now: float) -> None:
        self.owner, self.name = owner, name
        self.total = 0
        self.done = 0
        self._base = 0  # bytes already on disk when this run started (not counted in the speed)
        self.started = now
        self.last_line = now
        self._lock = threading.Lock()

    def set(self, n: int) -> None:
        """Record that n bytes are on disk (a resumed download starts above zero)."""
        with self._lock:
            self.done = n
            self._base = n
        self.owner._changed(self)

    def add(self, n: int) -> None:
        """Record n more bytes."""
        with self._lock:
            self.done += n
        self.owner._changed(self)

    def close(self) -> None:
        """Remove the bar."""
        self.owner._remove(self)

    def snapshot(self, now: float) -> Transfer:
        """Return the bar's figures at now (a monotonic time from the owner's clock)."""
        with self._lock:
            done, total, base = self.done, self.total, self._base
        elapsed = max(now - self.started, 0.0)
        return Transfer(self.name, done, total, elapsed, (done - base) / max(elapsed, 1e-6))

    def render(self, now: float) -> str:
        """Return the bar's one-line text: name, percent, bytes, speed, ETA."""
        with self._lock:
            done, total, base = self.done, self.total, self._base
        elapsed = max(now - self.started, 1e-6)
        speed = (done - base) / elapsed
        if total:
            pct = min(done / total, 1.0)
            filled = int(pct * _BAR_WIDTH)
            eta = (total - done) / speed if speed > 0 else 0
            return (f"{self.name} [{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {pct * 100:3.0f}% "
                    f"{human(done)}/{human(total)} {human(speed)}/s ETA {eta:.0f}s")
        return f"{self.name} {human(done)} {human(speed)}/s"


class Progress:
    """The downloads under way, shown on stream: mode "tty" (live block), "lines", or "off".

    In tty mode, log records must go through handler() so they print above the block. Functions
    given to watch() are told of every change: a download started, moved or ended.
    """

    def __init__(self, mode: str, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.mode, self.stream, self.clock = mode, stream, clock
        self._bars: list[Bar] = []
        self._lock = threading.RLock()
        self._drawn = 0  # lines of the block currently on screen
        self._last_draw = 0.0
        self.log = logging.getLogger("goproxy.progress")
        self._watchers: list[Callable[[], None]] = []

    def watch(self, changed: Callable[[], None]) -> None:
        """Call changed (without arguments, quickly: it runs on the download's thread) after every change."""
        self._watchers.append(changed)

    def start(self, name: str) -> Bar:
        """Add and return a bar for a download of name."""
        bar = Bar(self, name, self.clock())
        with self._lock:
            self._bars.append(bar)
        for changed in self._watchers:
            changed()
        return bar

    def snapshot(self) -> list[Transfer]:
        """Return every download under way, oldest first; reads only, in every mode."""
        now = self.clock()
        with self._lock:
            bars = list(self._bars)
        return [b.snapshot(now) for b in bars]

    def finished(self, name: str, size: int, seconds: float) -> None:
        """Log the download's completion line: size, duration and speed (in every mode)."""
        self.log.info("fetched %s.zip: %s in %.3fs (%s/s)", name, human(size), seconds, human(size / seconds))

    def _remove(self, bar: Bar) -> None:
        with self._lock:
            if bar in self._bars:
                self._bars.remove(bar)
            if self.mode == "tty":
                self._redraw(force=True)
        for changed in self._watchers:
            changed()

    def _changed(self, bar: Bar) -> None:
        for changed in self._watchers:
            changed()
        now = self.clock()
        if self.mode == "lines":
            if now - bar.last_line >= LINE_INTERVAL:
                bar.last_line = now
                self.log.info("downloading %s", bar.render(now))
        elif self.mode == "tty" and now - self._last_draw >= REDRAW_INTERVAL:
            with self._lock:
                self._redraw()

    def _clear(self) -> str:
        # Move up over the block and erase it: cursor up N, then erase to the end of the screen.
        return f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""

    def _redraw(self, force: bool = False) -> None:
        """Repaint the block in one write (caller holds the lock)."""
        if self.stream is None:
            return
        now = self.clock()
        if not force and now - self._last_draw < REDRAW_INTERVAL:
            return
        self._last_draw = now
        lines = self._block(now)
        self.stream.write(self._clear() + "".join(line + "\n" for line in lines))
        self.stream.flush()
        self._drawn = len(lines)

    def _block(self, now: float) -> list[str]:
        """Return the bars' lines, each cut to the terminal's width so none wraps.

        A wrapped line would throw off the cursor-up count that erases the block.
        """
        if self.mode != "tty":
            return []
        try:
            width = os.get_terminal_size(self.stream.fileno()).columns if self.stream else 0
        except (OSError, ValueError, AttributeError):
            width = 0
        width = width - 1 if width > 10 else 200
        return [b.render(now)[:width] for b in self._bars]

    def write_above(self, text: str) -> None:
        """Print text (ending in a newline) above the block, which is then redrawn."""
        if self.stream is None:
            return
        with self._lock:
            lines = self._block(self.clock())
            self.stream.write(self._clear() + text + "".join(line + "\n" for line in lines))
            self.stream.flush()
            self._drawn = len(lines)

    def handler(self) -> logging.Handler:
        """Return a logging handler that writes records above the block without tearing it."""
        return _AboveHandler(self)


class _AboveHandler(logging.Handler):
    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.progress.write_above(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def choose_mode(setting: str, isatty: bool) -> str:
    """Resolve -progress auto to tty or lines by whether stderr is a terminal; return other settings as given."""
    if setting == "auto":
        return "tty" if isatty else "lines"
    return setting
