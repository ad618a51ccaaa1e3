"""The limit on zip downloads at once (-max-concurrent-downloads): the rest wait their turn in arrival order."""

from __future__ import annotations

import logging
import threading
from collections import deque

from .metrics import Metrics

log = logging.getLogger(__name__)


class Slots:
    """Admit at most limit downloads at once (0: unlimited), the rest in arrival order."""

    def __init__(self, limit: int, metrics: Metrics) -> None:
        self.limit, self.metrics = limit, metrics
        self._cond = threading.Condition()
        self._active = 0
        self._queue: deque[object] = deque()

    def acquire(self, name: str) -> None:
        """Wait for a slot for the download of name (logged when it must queue), then take it.

        Updates the downloads_active and downloads_queued gauges.
        """
        with self._cond:
            if self.limit <= 0 or (self._active < self.limit and not self._queue):
                self._active += 1
                self.metrics.downloads_active.set(self._active)
                return
            ticket = object()
            self._queue.append(ticket)
            self.metrics.downloads_queued.set(len(self._queue))
            log.info("queued download of %s: %d running, %d waiting", name, self._active, len(self._queue))
            while self._queue[0] is not ticket or self._active >= self.limit:
                self._cond.wait()
            self._queue.popleft()
            self._active += 1
            self.metrics.downloads_queued.set(len(self._queue))
            self.metrics.downloads_active.set(self._active)
            self._cond.notify_all()

    def release(self) -> None:
        """Give back a slot taken by acquire, so the first download in line may take it."""
        with self._cond:
            self._active -= 1
            self.metrics.downloads_active.set(self._active)
            self._cond.notify_all()
