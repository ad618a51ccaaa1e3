"""Single-flight: concurrent calls for one key share one execution and its result or error."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import UpstreamError

T = TypeVar("T")


class _Call(Generic[T]):
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None
        self.waiters = 0


class SingleFlight(Generic[T]):
    """One run of a function per key at a time; callers arriving meanwhile wait for that run.

    The first caller runs fn to completion whatever happens to its client (a hang-up is only
    seen when the response is written), and a waiter giving up never cancels it. Keys are
    removed as soon as their run ends, so a failure is never remembered as a success.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, _Call[T]] = {}

    def do(self, key: str, fn: Callable[[], T], timeout: float | None = None) -> tuple[T, bool]:
        """Run fn as key's one run, or wait for the run under way; return (result, shared).

        shared is True for a caller that only waited. Raises what fn raised, to every caller;
        raises UpstreamError when a waiter gives up after timeout seconds (None: waits forever).
        """
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if call is None:
                call = self._calls[key] = _Call()
            else:
                call.waiters += 1
        if leader:
            try:
                call.result = fn()
            except BaseException as exc:
                call.error = exc
            finally:
                with self._lock:
                    del self._calls[key]
                call.done.set()
        elif not call.done.wait(timeout):
            raise UpstreamError(f"timed out after {timeout:g}s waiting for the fetch of {key}")
        if call.error is not None:
            raise call.error
        return call.result, not leader  # type: ignore[return-value]

    def in_flight(self, key: str) -> bool:
        """Report whether a run for key is under way."""
        with self._lock:
            return key in self._calls

    def waiters(self, key: str) -> int:
        """Return how many callers wait on the run for key (0 when none is under way)."""
        with self._lock:
            call = self._calls.get(key)
            return call.waiters if call else 0
