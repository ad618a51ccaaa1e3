"""Locks on one cache key held across processes or replicas while its fetch runs.

SingleFlight de-duplicates fetches inside one process; a KeyLocks implementation extends that
to every process sharing the cache (an flock under the cache directory) or every replica
sharing a bucket (a lease in Redis). The holder of a key's lock fetches and commits; the
others wait for the lock, then find the committed artifact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol

from .errors import UpstreamError


class LockTimeout(UpstreamError):
    """Waiting for another process's or replica's fetch of a key took longer than allowed; status 502."""


class Lease(Protocol):
    """A held lock on one key."""

    def valid(self) -> bool:
        """Report whether the lock is still this holder's (a lease may expire while a holder
        stalls); check it right before committing, so a stale holder never commits over a
        newer one."""
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
