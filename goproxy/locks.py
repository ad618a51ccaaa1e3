"""Locks on one cache key held across processes or replicas while its fetch runs.

SingleFlight de-duplicates fetches inside one process; a KeyLocks implementation extends that
to every process sharing the cache (an flock under the cache directory) or every replica
sharing a bucket (a lease in Redis). The holder of a key's lock fetches and commits; the
others wait for the lock, then find the committed artifact.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol

from .errors import UpstreamError

log = logging.getLogger(__name__)


class LockTimeout(UpstreamError):
    """Waiting for another process's or replica's fetch of a key took longer than allowed; status 502."""


class Lease(Protocol):
    """A held lock on one key."""

    def valid(self) -> bool:
        """Report whether the lock is still this holder's.

        A lease may expire while a holder stalls: check it right before committing, so a stale
        holder never commits over a newer one.
        """
        ...


class KeyLocks(Protocol):
    """Exclusive locks on cache keys shared by every process (or replica) using one store."""

    def hold(self, key: str, timeout: float) -> contextlib.AbstractContextManager[Lease]:
        """Return a context manager that holds key's lock while it is entered.

        Entering waits up to timeout seconds for another holder, then raises LockTimeout.
        A holder that dies releases the lock (by the kernel closing its file, or its lease
        running out).
        """
        ...


class _Always:
    def valid(self) -> bool:
        return True


class LocalOnly:
    """KeyLocks for a store used by one process alone: holding never waits."""

    @contextlib.contextmanager
    def hold(self, key: str, timeout: float) -> Iterator[Lease]:
        """Hold nothing: the process's SingleFlight already makes its fetches one per key."""
        yield _Always()


class _Held:
    def valid(self) -> bool:
        return True  # an flock is the holder's until it closes the file or dies


class FileLocks:
    """KeyLocks for processes sharing one cache directory: flock on a lock file per key bucket.

    Keys hash into BUCKETS files under root/.locks (created on first use, left in place: a
    bounded number of empty files). Two keys in one bucket share its lock, so at worst one
    fetch waits for an unrelated one; a thread already holding a bucket may take it again (a
    go.mod fetch verifying against the checksum database takes the tree head's lock inside
    its own). A holder that dies releases its lock with its file. Waiting polls, backing off
    to POLL_MAX seconds between tries.
    """

    BUCKETS = 4096
    POLL_MAX = 0.05

    def __init__(self, root: str, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.dir = os.path.join(root, ".locks")
        self.sleep = sleep
        self.clock = clock
        self._mine = threading.local()  # .held: the bucket paths this thread holds, with counts

    def path(self, key: str) -> str:
        """Return the lock file of key's bucket."""
        bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % self.BUCKETS
        return os.path.join(self.dir, f"{bucket:04x}")

    def _open(self, key: str) -> int:
        path = self.path(key)
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            os.makedirs(self.dir, mode=0o755, exist_ok=True)
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    @contextlib.contextmanager
    def hold(self, key: str, timeout: float) -> Iterator[Lease]:
        """Hold key's lock while the context is entered; wait up to timeout seconds for it.

        Raises LockTimeout after timeout, OSError when the lock file cannot be opened.
        """
        held: dict[str, int] = self._mine.__dict__.setdefault("held", {})
        path = self.path(key)
        if path in held:
            held[path] += 1
            try:
                yield _Held()
            finally:
                held[path] -= 1
            return
        fd = self._open(key)
        try:
            if not self._try(fd):
                log.info("waiting for another process's fetch of %s", key)
                deadline = self.clock() + timeout
                delay = 0.001
                while not self._try(fd):
                    if self.clock() >= deadline:
                        raise LockTimeout(f"timed out after {timeout:g}s waiting for another process's fetch of "
                                          f"{key}")
                    self.sleep(delay)
                    delay = min(delay * 2, self.POLL_MAX)
            held[path] = 1
            try:
                yield _Held()
            finally:
                del held[path]
        finally:
            os.close(fd)  # closing the file releases the lock

    def busy(self, key: str) -> bool:
        """Report whether a process holds key's lock now (a fetch of it, or of a key sharing its bucket)."""
        try:
            fd = self._open(key)
        except OSError:
            return False
        try:
            if self._try(fd):
                fcntl.flock(fd, fcntl.LOCK_UN)
                return False
            return True
        finally:
            os.close(fd)

    @staticmethod
    def _try(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
