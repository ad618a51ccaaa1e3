"""Counting the cache for the status page: in the background, at most every few minutes, while someone looks."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from ..storage.base import Storage
from ..storage.cleanup import scan
from ..storage.usage import Pair
from .model import CacheCount

log = logging.getLogger(__name__)

# How old, in seconds, a count may get before a look at the page starts a new one (walking a
# cache of 100,000 files takes one to two seconds of CPU).
COUNT_INTERVAL = 300.0
# How long the first look waits for the first count before showing none.
FIRST_WAIT = 1.0


class CacheCounter:
    """Count modules, versions, bytes and the oldest last use of a cache.

    latest() never walks the cache itself: it returns the newest count and, when that is older
    than interval (or missing), starts one recount in a daemon thread. last_used gives the
    usage database's times; a version it does not know counts from its files' mtime. others
    gives the counts other processes of the server made (a newer one of theirs is as good as
    one of this process's); on_count is called after each count this process makes.
    """

    def __init__(self, storage: Storage, last_used: Callable[[], Mapping[Pair, float]],
                 clock: Callable[[], float] = time.time, interval: float = COUNT_INTERVAL,
                 first_wait: float = FIRST_WAIT, others: Callable[[], Sequence[CacheCount]] = tuple,
                 on_count: Callable[[], None] | None = None) -> None:
        self.storage = storage
        self.last_used = last_used
        self.clock = clock
        self.interval = interval
        self.first_wait = first_wait
        self.others = others
        self.on_count = on_count
        self._latest: CacheCount | None = None
        self._lock = threading.Lock()
        self._running: threading.Thread | None = None
        self._failing = False
        self._first = True  # no call has waited for a count yet

    def count(self) -> CacheCount:
        """Count the cache now, in this thread, and keep the result as the latest.

        Raises OSError or sqlite3.Error when the cache or the usage database cannot be read.
        """
        started = self.clock()
        t0 = time.monotonic()
        found = scan(self.storage, started)
        known = self.last_used()
        live = {p: e for p, e in found.entries.items() if e.files}
        uses = [(known.get(p, e.mtime), e.name) for p, e in live.items() if p[1]]
        oldest, name = min(uses) if uses else (None, "")
        result = CacheCount(
            counted_at=started, seconds=time.monotonic() - t0, modules=len({m for m, _ in live}),
            versions=sum(1 for _, v in live if v), bytes=sum(e.size for e in live.values()),
            oldest_use=oldest, oldest_name=name, sumdb_files=found.sumdb_files, sumdb_bytes=found.sumdb_bytes)
        with self._lock:
            self._latest = result
        if self.on_count is not None:
            self.on_count()
        return result

    def mine(self) -> CacheCount | None:
        """Return the newest count this process made, None before the first."""
        with self._lock:
            return self._latest

    def latest(self) -> CacheCount | None:
        """Return the newest count (this process's or another's); start a recount when it is due.

        The recount runs in the background. The very first call waits up to first_wait for its count
        (later ones never wait); None while there is none.
        """
        theirs = max(self.others(), key=lambda c: c.counted_at, default=None)
        with self._lock:
            latest = self._latest
            if theirs is not None and (latest is None or theirs.counted_at > latest.counted_at):
                latest = theirs
            due = latest is None or self.clock() - latest.counted_at >= self.interval
            if due and self._running is None:
                self._running = threading.Thread(target=self._recount, name="goproxy-cache-count", daemon=True)
                self._running.start()
            running = self._running
            wait, self._first = self._first and latest is None, False
        if wait and running is not None:
            running.join(self.first_wait)
            with self._lock:
                latest = self._latest
        return latest

    def _recount(self) -> None:
        try:
            self.count()
        except (OSError, sqlite3.Error) as exc:
            if not self._failing:
                log.warning("cannot count the cache for the status page: %s", exc)
            self._failing = True
        else:
            self._failing = False
        finally:
            with self._lock:
                self._running = None
