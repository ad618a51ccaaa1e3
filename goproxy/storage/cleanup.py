"""Cache cleanup: age and size eviction of module versions, the cleanup thread and its usage store.

A pass finds module versions in storage, drops those unused past -max-cache-age, then the least
recently used while over -max-cache-size.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from ..errors import ProxyError
from ..locks import Lease
from ..metrics import Metrics
from ..values import format_duration
from .base import PARTIAL_SUFFIXES, Stat, Storage
from .usage import Pair, Usage

# A lock on the cleanup itself: entering yields a Lease when this cleaner may run
# a pass now, None when another (a replica sharing the bucket) holds it.
Exclusive = Callable[[], AbstractContextManager["Lease | None"]]

log = logging.getLogger(__name__)

# The directory of checksum database answers and the verified tree head: never cleaned here.
SUMDB_DIR = "sumdb"
# Order files of a version are deleted in: the zip first, so a half-done removal leaves
# small files that are cheap to refetch.
_DELETE_ORDER = {"zip": 0, "mod": 1, "info": 2}
# The age in seconds after which a partial file is taken as left by a crash:
# it no longer protects its version, and goes with it.
STALE_PARTIAL = 86400.0
_PARTIAL_ARTIFACT = re.compile(r"(.*)\.(info|mod|zip)\.")


@dataclass
class Entry:
    """One module version on disk; version "" is the module's @v/list and @latest."""

    module: str
    version: str
    # Each cache key of the entry, mapped to its Stat as scanned.
    files: dict[str, Stat] = field(default_factory=dict)
    # True when a partial file of the entry exists: a download is under way.
    busy: bool = False

    @property
    def size(self) -> int:
        """Return the bytes of the entry's files."""
        return sum(f.size for f in self.files.values())

    @property
    def mtime(self) -> float:
        """Return the newest modification time of the entry's files (its use when unknown)."""
        return max((f.mtime for f in self.files.values()), default=0.0)

    @property
    def name(self) -> str:
        """Return "module@version", or "module (list)" for the list entry."""
        return f"{self.module}@{self.version}" if self.version else f"{self.module} (list)"

    def cache_keys(self) -> set[str]:
        """Return every cache key of the entry, on disk or not (a fetch may be creating one)."""
        if not self.version:
            return {f"{self.module}/@v/list", f"{self.module}/@latest", *self.files}
        return {f"{self.module}/@v/{self.version}.{ext}" for ext in _DELETE_ORDER} | set(self.files)


@dataclass
class Scan:
    """What is on disk: module entries, and checksum database files counted aside."""

    entries: dict[Pair, Entry] = field(default_factory=dict)
    # busy_modules have a partial file that names no version: none of their entries is touched.
    busy_modules: set[str] = field(default_factory=set)
    sumdb_files: int = 0
    sumdb_bytes: int = 0


def scan(storage: Storage, now: float) -> Scan:
    """Return what storage holds, grouped by module version.

    A partial file (PARTIAL_SUFFIXES) marks its entry busy, or, once older than STALE_PARTIAL
    at now, is one of its files; files under sumdb/ are only counted.
    """
    found = Scan()
    for st in storage.scan():
        key = st.key
        if key.startswith(SUMDB_DIR + "/"):
            found.sumdb_files += 1
            found.sumdb_bytes += st.size
            continue
        module, sep, name = key.partition("/@v/")
        if sep:
            if module and "/" not in name:
                _add(found, module, st, name, True, now)
        else:
            module, _, name = key.rpartition("/")
            if module and name.startswith("@latest"):
                _add(found, module, st, name, False, now)
    return found


def _add(found: Scan, module: str, st: Stat, name: str, in_v: bool, now: float) -> None:
    if name.endswith(PARTIAL_SUFFIXES):
        if not in_v or name.startswith("list."):
            version: str | None = ""
        else:
            m = _PARTIAL_ARTIFACT.match(name)
            version = m.group(1) if m else None
        fresh = st.mtime > now - STALE_PARTIAL
        if version is None:
            if fresh:
                found.busy_modules.add(module)
            return
        entry = found.entries.setdefault((module, version), Entry(module, version))
        if fresh:
            entry.busy = True
        else:
            entry.files[st.key] = st
        return
    if not in_v:
        if name != "@latest":
            return
        version = ""
    elif name == "list":
        version = ""
    else:
        base, dot, ext = name.rpartition(".")
        if not dot or not base or ext not in _DELETE_ORDER:
            return
        version = base
    entry = found.entries.setdefault((module, version), Entry(module, version))
    entry.files[st.key] = st


@dataclass
class Removed:
    """One entry a pass removed (or, in a dry run, would remove)."""

    module: str
    version: str
    size: int
    last_used: float
    reason: str  # "age", "size" or "no version left"

    @property
    def name(self) -> str:
        """Return "module@version", or "module (list)" for the list entry."""
        return f"{self.module}@{self.version}" if self.version else f"{self.module} (list)"


@dataclass
class Report:
    """The outcome of one cleanup pass."""

    removed: list[Removed] = field(default_factory=list)
    skipped: int = 0  # entries due for removal but in use or being downloaded
    adopted: int = 0  # entries found on disk that the usage database did not know
    kept_bytes: int = 0
    kept_files: int = 0
    elsewhere: bool = False  # no pass here: another replica holds the cleanup lock

    @property
    def freed(self) -> int:
        """Return the bytes of the removed entries."""
        return sum(r.size for r in self.removed)


def next_pass_at(now: float, interval: float) -> float:
    """Return when the pass after now of a cleanup running every interval seconds is due.

    Passes run at whole multiples of interval since the Unix epoch (every day at 00:00 UTC for
    24h), so any process knowing the interval knows when the next one is, whoever runs it.
    """
    return (now // interval + 1) * interval


def _sort_key(key: str) -> tuple[int, str]:
    return _DELETE_ORDER.get(key.rpartition(".")[2], 3), key


class Cleaner:
    """A cleaner that removes module versions unused for longer than max_age, then the least recently used.

    The least recently used go while the cache is bigger than max_size (0 disables either).

    It never removes an entry with a fetch in flight (in_flight(key)), a partial file, or a use
    recorded since the pass began; files go by Storage.delete, so readers keep their open file.
    With exclusive (replicas sharing a bucket), a pass runs only while this cleaner holds that
    lock, and stops removing once the lock is lost.
    """

    def __init__(self, storage: Storage, store: Usage, clock: Callable[[], float] = time.time,
                 max_age: float = 0.0, max_size: int = 0,
                 in_flight: Callable[[str], bool] = lambda key: False,
                 metrics: Metrics | None = None, exclusive: Exclusive | None = None) -> None:
        self.storage = storage
        self.store = store
        self.clock = clock
        self.max_age = max_age
        self.max_size = max_size
        self.in_flight = in_flight
        self.metrics = metrics
        self.exclusive = exclusive
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._interval: float | None = None  # while the thread runs

    def run(self, dry_run: bool = False) -> Report:
        """Make one pass (one at a time per Cleaner) and return what it did.

        A dry run decides the same way but deletes nothing and writes nothing. When another
        replica holds the cleanup lock, nothing is done (Report.elsewhere). Raises the usage
        store's errors (sqlite3.Error) when it cannot be read or written, StoreUnavailable when
        the shared store cannot be reached.
        """
        with self._lock:
            if self.exclusive is None:
                return self._pass(dry_run, None)
            with self.exclusive() as lease:
                if lease is None:
                    return Report(elsewhere=True)
                return self._pass(dry_run, lease)

    def _pass(self, dry_run: bool, lease: Lease | None) -> Report:
        started = self.clock()
        if not dry_run:
            self.store.flush()
        found = scan(self.storage, started)
        known = self.store.last_used()
        report = Report()
        new = [(m, v, e.mtime) for (m, v), e in found.entries.items() if (m, v) not in known and e.files]
        report.adopted = len(new)
        if not dry_run:
            self.store.adopt(new)
            self.store.forget([p for p in known if p not in found.entries], before=started)
        last = {p: known.get(p, e.mtime) for p, e in found.entries.items()}
        live = {p: e for p, e in found.entries.items() if e.files}
        versions_before: dict[str, int] = {}
        for m, v in live:
            if v:
                versions_before[m] = versions_before.get(m, 0) + 1
        touched: set[str] = set()

        def remove(pair: Pair, reason: str) -> bool:
            entry = live[pair]
            if self._stop.is_set() or (lease is not None and not lease.valid()) or self._busy(entry, found):
                report.skipped += 1
                return False
            if not dry_run and not self._delete(entry, started):
                report.skipped += 1
                return False
            del live[pair]
            touched.add(entry.module)
            report.removed.append(Removed(entry.module, entry.version, entry.size, last[pair], reason))
            return True

        if self.max_age > 0:
            cutoff = started - self.max_age
            for pair in sorted(p for p in live if last[p] < cutoff):
                remove(pair, "age")
        if self.max_size > 0:
            total = sum(e.size for e in live.values())
            for pair in sorted((p for p in live if p[1]), key=lambda p: (last[p], p)):
                if total <= self.max_size:
                    break
                size = live[pair].size
                if remove(pair, "size"):
                    total -= size
        for module in sorted(touched):
            left = sum(1 for m, v in live if m == module and v)
            if versions_before.get(module) and not left and (module, "") in live:
                remove((module, ""), "no version left")
            if not dry_run:
                self.storage.prune(f"{module}/@v")
        report.kept_bytes = sum(e.size for e in live.values())
        report.kept_files = sum(len(e.files) for e in live.values())
        if self.metrics is not None and not dry_run:
            self.metrics.cache_bytes.set(report.kept_bytes + found.sumdb_bytes)
            self.metrics.cache_entries.set(report.kept_files + found.sumdb_files)
        return report

    def _busy(self, entry: Entry, found: Scan) -> bool:
        """Report whether a download of the entry is under way, or it was used since the pass began."""
        if entry.busy or entry.module in found.busy_modules:
            return True
        return any(self.in_flight(k) or self.store.used_since_flush(k) for k in entry.cache_keys())

    def _delete(self, entry: Entry, started: float) -> bool:
        """Remove the entry's files unless one was replaced since the scan; return True if gone."""
        complete = True
        for key in sorted(entry.files, key=_sort_key):
            if self.in_flight(key):
                complete = False
                continue
            try:
                if not self.storage.delete(key, expect=entry.files[key]) and self.storage.stat(key) is not None:
                    complete = False  # a fresh copy arrived: it is in use, leave it
            except OSError as exc:
                log.warning("cache cleanup: cannot remove %s: %s", key, exc)
                complete = False
        if complete:
            self.store.forget([(entry.module, entry.version)], before=started)
        return complete

    def start(self, interval: float) -> Cleaner:
        """Run a pass now, then at each whole multiple of interval seconds, in a daemon thread.

        The multiples are by clock (see next_pass_at). Returns self.
        """
        self._interval = interval
        self._thread = threading.Thread(target=self._loop, args=(interval,), name="goproxy-cleanup",
                                        daemon=True)
        self._thread.start()
        return self

    def next_pass(self) -> float | None:
        """Return when the next pass of the cleanup thread is due (clock's time), None without one."""
        interval = self._interval
        return None if interval is None else next_pass_at(self.clock(), interval)

    def _loop(self, interval: float) -> None:
        while not self._stop.is_set():
            try:
                report = self.run()
            except (OSError, sqlite3.Error, ProxyError) as exc:
                log.error("cache cleanup failed: %s", exc)
            else:
                log_report(report, dry_run=False)
            log.debug("cache cleanup: pass finished")
            now = self.clock()
            due = next_pass_at(now, interval)
            while now < due:  # the clock decides, not the timer: a wait may end a little early
                if self._stop.wait(due - now):
                    return
                now = self.clock()

    def stop(self) -> None:
        """End the cleanup thread (a pass under way stops removing) and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._interval = None


def log_report(report: Report, dry_run: bool) -> None:
    """Log each removed entry and a summary line."""
    verb = "would remove" if dry_run else "removed"
    if report.elsewhere:
        log.debug("cache cleanup: another replica is cleaning the shared store")
        return
    for r in report.removed:
        log.info("cache cleanup: %s %s (%d bytes, %s)", verb, r.name, r.size, r.reason)
    if report.removed or report.skipped:
        log.info("cache cleanup: %s %d entries, %d bytes; skipped %d in use; %d bytes kept",
                 verb, len(report.removed), report.freed, report.skipped, report.kept_bytes)


class Housekeeping:
    """The runner of a server's usage stores and cleaners.

    start() runs their threads, stop() ends them with a final flush. With replicas there are
    two of each: the shared store's and the local tier's.
    """

    def __init__(self, store: Usage | Sequence[Usage], cleaner: Cleaner | Sequence[Cleaner],
                 interval: float) -> None:
        self.stores = [store] if isinstance(store, Usage) else list(store)
        self.cleaners = [cleaner] if isinstance(cleaner, Cleaner) else list(cleaner)
        self.store, self.cleaner = self.stores[0], self.cleaners[0]  # the first: the shared store's
        self.interval = interval

    def start(self) -> None:
        """Start the flush threads and the cleanup threads.

        A cleanup thread makes a pass now, then at each whole multiple of interval.
        """
        for store in self.stores:
            store.start()
        for c in self.cleaners:
            c.start(self.interval)
            age = format_duration(c.max_age) if c.max_age else "forever"
            size = f"{c.max_size} bytes" if c.max_size else "unlimited"
            log.info("cache cleanup every %s: keep unused versions %s; size limit %s",
                     format_duration(self.interval), age, size)

    def stop(self) -> None:
        """End the cleanup threads, then flush and close the usage stores."""
        for c in self.cleaners:
            c.stop()
        for store in self.stores:
            store.close()
