"""The access log: one line per request, buffered by the request path and written in batches."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger("goproxy.access")

# How often buffered lines are written, in seconds.
FLUSH_INTERVAL = 0.05
# Batches are cut at line ends into writes of at most this many bytes: a write to a pipe of up
# to PIPE_BUF bytes is never interleaved with another process's (the other workers').
MAX_WRITE = 4096

Write = Callable[[str], None]


class AccessLog:
    """Collect access lines from request threads and write them from one thread in batches.

    line() costs a deque append; a writer thread started by start() turns the lines into text
    every FLUSH_INTERVAL. With write (a function taking finished text, such as a stream's
    write), each line is prefixed like the log formatter's records ("2006-01-02 15:04:05,000
    INFO ", then tag) and batches go out in few writes; without it, each line is a record of
    the "goproxy.access" logger. Nothing is collected when that logger does not log INFO.
    """

    def __init__(self, write: Write | None = None, tag: str = "") -> None:
        self.enabled = log.isEnabledFor(logging.INFO)
        self._write = write
        self._tag = tag
        self._lines: deque[tuple[float, str]] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._second = -1
        self._stamp = ""

    def line(self, text: str) -> None:
        """Buffer one access line (no newline); it is written within FLUSH_INTERVAL."""
        self._lines.append((time.time(), text))

    def start(self) -> AccessLog:
        """Start the writer thread (a daemon); return self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="goproxy-access-log", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL):
            self.flush()

    def flush(self) -> None:
        """Write every buffered line now."""
        if not self._lines:
            return
        pending = self._lines
        lines = [pending.popleft() for _ in range(len(pending))]  # appends meanwhile wait for the next flush
        if self._write is None:
            for _, text in lines:
                log.info("%s", text)
            return
        chunk: list[str] = []
        size = 0
        for when, text in lines:
            entry = f"{self._prefix(when)}{text}\n"
            if size + len(entry) > MAX_WRITE and chunk:
                self._emit("".join(chunk))
                chunk, size = [], 0
            chunk.append(entry)
            size += len(entry)
        if chunk:
            self._emit("".join(chunk))

    def _emit(self, text: str) -> None:
        assert self._write is not None
        try:
            self._write(text)
        except (OSError, ValueError):  # stderr closed or gone: nothing to report it to
            pass

    def _prefix(self, when: float) -> str:
        second = int(when)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._stamp},{int((when - second) * 1000):03d} INFO {self._tag}"

    def close(self) -> None:
        """Stop the writer thread and write what is left; idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()
