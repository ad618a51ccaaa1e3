"""The last warnings and errors of the log, secrets masked, kept for the status page."""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Iterable

from ..net.dial import mask
from .model import LogEntry

# How many warnings and errors are kept, and how many characters of each.
RING_SIZE = 20
MESSAGE_MAX = 500


class WarningRing(logging.Handler):
    """A logging handler keeping the last size records of level WARNING and above.

    Each is kept as one line: URL passwords masked, an exception's type and text appended,
    cut to MESSAGE_MAX characters. Attaching it to a logger is the wiring's job. on_keep, when
    given, is called after each record is kept.
    """

    def __init__(self, size: int = RING_SIZE, level: int = logging.WARNING,
                 on_keep: Callable[[], None] | None = None) -> None:
        super().__init__(level)
        self._ring: collections.deque[LogEntry] = collections.deque(maxlen=size)
        self._ring_lock = threading.Lock()
        self._on_keep = on_keep

    def adopt(self, entries: Iterable[LogEntry]) -> None:
        """Keep entries (newest first, as entries() gives them) as if logged before everything kept."""
        with self._ring_lock:
            kept = list(self._ring)
            self._ring.clear()
            self._ring.extend([*reversed(list(entries)), *kept])

    def emit(self, record: logging.LogRecord) -> None:
        """Keep record as a LogEntry, dropping the oldest when the ring is full."""
        try:
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                text += f" ({type(exc).__name__}: {exc})"
            text = mask(" ".join(text.split()))
            if len(text) > MESSAGE_MAX:
                text = text[: MESSAGE_MAX - 1] + "…"
            entry = LogEntry(record.created, record.levelname, record.name, text)
        except Exception:
            self.handleError(record)
            return
        with self._ring_lock:
            self._ring.append(entry)
        if self._on_keep is not None:
            self._on_keep()

    def entries(self) -> tuple[LogEntry, ...]:
        """Return the kept records, newest first."""
        with self._ring_lock:
            return tuple(reversed(self._ring))
