"""Last-used times of module versions, buffered in memory and written behind.

The Usage interface and its sqlite store (cache/.usage.db, WAL).
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

# The usage database's file name under the cache root.
DB_NAME = ".usage.db"
# How often, in seconds, buffered uses are written: what a crash can lose.
FLUSH_INTERVAL = 2.0
# How long a write waits for another process (cache gc) holding the database.
BUSY_TIMEOUT = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    module TEXT NOT NULL,      -- escaped module path, as on disk
    version TEXT NOT NULL,     -- escaped version; '' for the module's @v/list and @latest
    last_used REAL NOT NULL,   -- Unix time of the last request
    PRIMARY KEY (module, version)
) WITHOUT ROWID
"""

Pair = tuple[str, str]


def split_key(key: str) -> Pair | None:
    """Map a cache key to (module, version), or None for anything else (sumdb/...).

    "m/@v/v1.0.0.zip" → ("m", "v1.0.0"); "m/@v/list" and "m/@latest" → ("m", "").
    """
    if key.endswith("/@latest"):
        return key[: -len("/@latest")], ""
    module, sep, name = key.rpartition("/@v/")
    if not sep or not module:
        return None
    if name == "list":
        return module, ""
    base, dot, ext = name.rpartition(".")
    if not dot or not base or ext not in ("info", "mod", "zip"):
        return None
    return module, base


class Usage(abc.ABC):
    """A record of when each module version was last requested.

    record() only stores into a dict (no lock, no database), so the request path never waits
    on a store; flush() writes what was buffered in one batch, and a thread started by start()
    flushes every flush_interval seconds. A crash loses at most the uses since the last flush.
    Subclasses say where the times live (errors: what their failed writes raise; where: what
    to call the store in logs).
    """

    errors: tuple[type[Exception], ...] = ()
    where = "the usage store"

    def __init__(self, clock: Callable[[], float] = time.time, flush_interval: float = FLUSH_INTERVAL) -> None:
        self.clock = clock
        self.flush_interval = flush_interval
        self._pending: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def record(self, key: str, at: float | None = None) -> None:
        """Note that key was requested at (now when None); memory only, never blocks on the store.

        A later use already buffered is kept.
        """
        t = self.clock() if at is None else at
        if at is None or t > self._pending.get(key, float("-inf")):
            self._pending[key] = t

    def used_since_flush(self, key: str) -> bool:
        """Report whether a use of key is buffered and not yet flushed."""
        return key in self._pending

    def flush(self) -> int:
        """Write buffered uses (keeping the later time per version); return the rows written.

        A use recorded while flush runs stays buffered for the next one; none is lost.
        Raises one of errors when the store cannot be written (the uses are kept buffered).
        """
        pairs: dict[Pair, float] = {}
        taken: list[tuple[str, float]] = []
        for key in list(self._pending):  # list(dict) is one atomic C call under the GIL
            t = self._pending.pop(key, None)
            if t is None:
                continue
            taken.append((key, t))
            pair = split_key(key)
            if pair is not None and t > pairs.get(pair, float("-inf")):
                pairs[pair] = t
        if not pairs:
            return 0
        try:
            self.store_uses([(m, v, t) for (m, v), t in pairs.items()])
        except BaseException:
            for key, t in taken:  # put them back unless a newer use arrived meanwhile
                if self._pending.get(key, float("-inf")) < t:
                    self._pending[key] = t
            raise
        return len(pairs)

    @abc.abstractmethod
    def store_uses(self, rows: list[tuple[str, str, float]]) -> None:
        """Write (module, version, time) uses, never moving a stored time backwards; raise one of errors."""

    @abc.abstractmethod
    def last_used(self) -> dict[Pair, float]:
        """Return every (module, version) → last-used time in the store."""

    @abc.abstractmethod
    def adopt(self, rows: Iterable[tuple[str, str, float]]) -> None:
        """Insert (module, version, time) rows for versions the store does not know yet."""

    @abc.abstractmethod
    def forget(self, pairs: Iterable[Pair], before: float) -> None:
        """Delete the rows of pairs whose last use is earlier than before."""

    def start(self) -> Usage:
        """Run the flush thread (a daemon) every flush_interval seconds; return self."""
        self._thread = threading.Thread(target=self._run, name="goproxy-usage", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                self.flush()
            except self.errors as exc:
                if not self._failing:
                    log.warning("cannot write last-used times to %s (will retry): %s", self.where, exc)
                self._failing = True
            else:
                if self._failing:
                    log.info("writing last-used times to %s again", self.where)
                self._failing = False

    def close(self) -> None:
        """Stop the flush thread, flush what is buffered and release the store; idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            self.flush()
        except self.errors as exc:
            log.warning("lost the last-used times of %d artifact(s): %s", len(self._pending), exc)
        self.release()

    @abc.abstractmethod
    def release(self) -> None:
        """Release the store's connection, once the last flush is done."""


class UsageStore(Usage):
    """Last-used times kept in a sqlite database under root (name, WAL mode).

    Safe to share between threads and with other processes (WAL).
    """

    errors = (sqlite3.Error,)

    def __init__(self, root: str, clock: Callable[[], float] = time.time,
                 flush_interval: float = FLUSH_INTERVAL, name: str = DB_NAME) -> None:
        super().__init__(clock, flush_interval)
        self.path = os.path.join(root, name)
        self.where = self.path
        self._db_lock = threading.Lock()
        self._closed = False
        self._db: sqlite3.Connection | None = None  # opened on first use, so an idle cache gets no file

    def _conn(self) -> sqlite3.Connection:
        """Return the connection, opening it on first use; call with _db_lock held."""
        if self._closed:
            raise sqlite3.ProgrammingError(f"usage database {self.path} is closed")
        if self._db is None:
            self._db = self._open()
            _CONNECTED.add(self)
        return self._db

    def _drop_connection(self) -> None:
        """Close the connection (the next use opens a new one); call with _db_lock held."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def _open(self) -> sqlite3.Connection:
        """Connect and create the schema; a file that is not a database is moved aside."""
        try:
            return self._connect()
        except sqlite3.OperationalError:  # cannot open, locked: not the file's fault
            raise
        except sqlite3.DatabaseError as exc:
            aside = f"{self.path}.corrupt-{int(time.time())}"
            log.warning("usage database %s is unreadable (%s); moved to %s and starting afresh",
                        self.path, exc, aside)
            os.replace(self.path, aside)
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path + suffix)
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None,
                             check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
        except sqlite3.DatabaseError:
            db.close()
            raise
        with contextlib.suppress(OSError):
            os.chmod(self.path, 0o644)
        return db

    def last_used(self) -> dict[Pair, float]:
        """Return every (module, version) → last-used time in the database."""
        with self._db_lock:
            rows = self._conn().execute("SELECT module, version, last_used FROM usage").fetchall()
        return {(m, v): t for m, v, t in rows}

    def adopt(self, rows: Iterable[tuple[str, str, float]]) -> None:
        """Insert (module, version, time) rows for versions the database does not know yet."""
        self._write("INSERT OR IGNORE INTO usage (module, version, last_used) VALUES (?, ?, ?)", rows)

    def forget(self, pairs: Iterable[Pair], before: float) -> None:
        """Delete the rows of pairs whose last use is earlier than before."""
        self._write("DELETE FROM usage WHERE module = ? AND version = ? AND last_used < ?",
                    [(m, v, before) for m, v in pairs])

    def _write(self, sql: str, rows: Iterable[tuple[str, str, float]]) -> None:
        rows = list(rows)
        if not rows:
            return
        with self._db_lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(sql, rows)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def store_uses(self, rows: list[tuple[str, str, float]]) -> None:
        """Upsert rows, keeping the later time per version; raise sqlite3.Error."""
        self._write("INSERT INTO usage (module, version, last_used) VALUES (?, ?, ?) "
                    "ON CONFLICT (module, version) DO UPDATE "
                    "SET last_used = max(last_used, excluded.last_used)", rows)

    def close(self) -> None:
        """Stop the flush thread, flush what is buffered and close the database; idempotent."""
        if self._closed:
            return
        super().close()

    def release(self) -> None:
        """Close the database."""
        with self._db_lock:
            self._closed = True
            self._drop_connection()


# Usage stores with an open connection in this process. A connection must not cross a fork:
# sqlite's record of the locks this process holds would go with it, and the child's own
# connections would wait on them until "database is locked". So before a fork every one is
# closed (waiting for a write under way), and reopened on its next use.
_CONNECTED: weakref.WeakSet[UsageStore] = weakref.WeakSet()
_FORKING: list[UsageStore] = []


def _before_fork() -> None:
    for store in list(_CONNECTED):
        store._db_lock.acquire()
        _FORKING.append(store)
        store._drop_connection()


def _after_fork() -> None:
    while _FORKING:
        _FORKING.pop()._db_lock.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork)


class UsageForwarder:
    """Buffer a worker's uses in memory and send them to the process that owns the usage database.

    record() only stores into a dict, as UsageStore.record does; every interval seconds (and at
    close) the buffered uses go out as one message of "use <time> <key>" lines through send.
    A failed send keeps nothing: the uses of that interval are lost, as a crash would lose them.
    """

    def __init__(self, send: Callable[[str], None], clock: Callable[[], float] = time.time,
                 interval: float = FLUSH_INTERVAL) -> None:
        self.send = send
        self.clock = clock
        self.interval = interval
        self._pending: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, key: str) -> None:
        """Note that key was requested now; memory only."""
        self._pending[key] = self.clock()

    def flush(self) -> int:
        """Send the buffered uses now; return how many were sent."""
        taken = []
        for key in list(self._pending):
            t = self._pending.pop(key, None)
            if t is not None and "\n" not in key and " " not in key:
                taken.append(f"use {t!r} {key}")
        if taken:
            try:
                self.send("\n".join(taken))
            except OSError as exc:
                log.warning("cannot hand %d last-used time(s) to the parent process: %s", len(taken), exc)
                return 0
        return len(taken)

    def start(self) -> UsageForwarder:
        """Start the sending thread (a daemon); return self."""
        self._thread = threading.Thread(target=self._run, name="goproxy-usage-forward", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def close(self) -> None:
        """Stop the thread and send what is left; idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()


def parse_use(line: str) -> tuple[str, float] | None:
    """Return (key, time) of a "use <time> <key>" line from a worker, or None when malformed."""
    parts = line.split(" ")
    if len(parts) != 3 or parts[0] != "use":
        return None
    try:
        return parts[2], float(parts[1])
    except ValueError:
        return None
