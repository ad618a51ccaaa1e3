"""Upstream health: each upstream is up or down; a down one is skipped and probed with backoff."""

from __future__ import annotations

import collections
import logging
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .metrics import Metrics
from .net.dial import mask

log = logging.getLogger(__name__)

# Requests in a row that gave up on an upstream after a 5xx on their last try (with no answer
# below 500 in between) that mark it down.
DOWN_AFTER = 3
# Tries in a row that got no answer at all (with no answer in between) that mark an upstream
# down, unless the owner says otherwise (as many as one request may make: -retry-attempts).
NO_ANSWER_LIMIT = 3
# The wait before the first probe of a down upstream; it doubles after each failed probe up to MAX_PROBE.
FIRST_PROBE = 5.0
MAX_PROBE = 300.0
# How many of an upstream's latest latencies (time to response headers) its median is taken over.
LATENCY_WINDOW = 32
# The longest last-error text kept, in characters.
ERROR_MAX = 300

# A probe asks one upstream whether it answers at all; True when it does.
Probe = Callable[[], bool]
# Spawn runs a function in the background (a daemon thread by default).
Spawn = Callable[[Callable[[], None]], None]


def _thread(fn: Callable[[], None]) -> None:
    threading.Thread(target=fn, name="goproxy-probe", daemon=True).start()


@dataclass
class _State:
    """What is known of one upstream."""

    probe: Probe
    silent: int = 0  # tries in a row that got no answer
    failures: int = 0  # requests in a row that gave up on it after a 5xx
    down: bool = False
    since: float = 0.0  # when it went down
    reason: str = ""  # the failure that marked it down
    next_probe: float = 0.0
    backoff: float = FIRST_PROBE  # the wait after the next failed probe
    probing: bool = False
    last_success: float | None = None
    last_error: str = ""
    last_error_at: float | None = None
    latencies: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=LATENCY_WINDOW))


@dataclass(frozen=True)
class Down:
    """A down upstream as /health and logs describe it."""

    name: str
    since: float
    reason: str
    next_probe: float


@dataclass(frozen=True)
class Report:
    """One upstream's health as the front page shows it (times by the Health's clock)."""

    state: str  # "up" or "down"
    last_success: float | None  # the last request it served (not-founds included)
    last_error: str  # the last failed request's reason, passwords masked; "" when none
    last_error_at: float | None
    latencies: tuple[float, ...] = ()  # the latest times to response headers, in seconds, oldest first

    @property
    def median_latency(self) -> float | None:
        """Return the median of latencies, None when there is none."""
        return statistics.median(self.latencies) if self.latencies else None


class Health:
    """Track whether each upstream is up; skip a down one and probe it until it answers again.

    An upstream goes down after no_answer_limit tries in a row got no answer at all (connect
    or header timeouts, refused or reset connections), whichever requests made them (after
    the first such try when another upstream could be asked instead), or after down_after
    requests in a row gave up on it after a 5xx; any answer below 500 in between starts both
    counts again. It comes back on its first answer (a request's or a probe's).

    While it is down, at most one probe at a time runs, the first first_probe seconds after it
    went down, then backing off (doubling) to max_probe. Probes start when something asks
    about the upstream (available, probe_due), in the background through spawn. Each change
    of state is logged once and exported as the gauge goproxy_upstream_up. clock is the time
    source (seconds); the times report() gives are its, so a wall clock (time.time) suits them.

    Requests report how each try ended (finished): the last success, the last error and the
    latest LATENCY_WINDOW latencies are kept. Functions given to watch() are told of each change.
    """

    def __init__(self, metrics: Metrics, clock: Callable[[], float] = time.monotonic,
                 no_answer_limit: int = NO_ANSWER_LIMIT, down_after: int = DOWN_AFTER,
                 first_probe: float = FIRST_PROBE, max_probe: float = MAX_PROBE, spawn: Spawn = _thread) -> None:
        self.metrics = metrics
        self.clock = clock
        self.no_answer_limit = max(1, no_answer_limit)
        self.down_after = max(1, down_after)
        self.first_probe, self.max_probe = first_probe, max(first_probe, max_probe)
        self._spawn = spawn
        self._states: dict[str, _State] = {}
        self._lock = threading.Lock()
        self._watchers: list[Callable[[], None]] = []

    def register(self, name: str, probe: Probe) -> None:
        """Start tracking upstream name (up), probed by probe while down; a second call is ignored."""
        with self._lock:
            if name in self._states:
                return
            self._states[name] = _State(probe)
        self.metrics.upstream_up.set(1, upstream=name)

    def available(self, name: str) -> bool:
        """Report whether requests may go to upstream name: it is up (or not tracked).

        Asking about a down upstream starts its probe when one is due.
        """
        with self._lock:
            st = self._states.get(name)
            if st is None or not st.down:
                return True
        self._probe_if_due(name)
        return False

    def answered(self, name: str) -> None:
        """Record that upstream name answered (any status below 500); a down upstream is up again."""
        with self._lock:
            st = self._states.get(name)
            if st is None:
                return
            st.silent = st.failures = 0
            if not st.down:
                return
            st.down = False
            downtime = self.clock() - st.since
        log.warning("upstream %s is up again (down for %.0fs)", name, downtime)
        self.metrics.upstream_up.set(1, upstream=name)
        self._notify()

    def finished(self, name: str, latency: float | None, error: str = "") -> None:
        """Record how one try at upstream name ended.

        latency is the seconds to its response headers (None when it gave no answer); error is
        "" when it served the request (or said not found), else the failure's one-line
        description (passwords are masked here).
        """
        with self._lock:
            st = self._states.get(name)
            if st is None:
                return
            if latency is not None:
                st.latencies.append(latency)
            if error:
                text = mask(" ".join(error.split()))
                st.last_error = text if len(text) <= ERROR_MAX else text[:ERROR_MAX - 1] + "…"
                st.last_error_at = self.clock()
            else:
                st.last_success = self.clock()
        self._notify()

    def report(self) -> dict[str, Report]:
        """Return each tracked upstream's health now, in registration order."""
        with self._lock:
            return {n: Report("down" if s.down else "up", s.last_success, s.last_error, s.last_error_at,
                              tuple(s.latencies)) for n, s in self._states.items()}

    def watch(self, changed: Callable[[], None]) -> None:
        """Call changed (without arguments, quickly) after each try is recorded and each change of state."""
        self._watchers.append(changed)

    def _notify(self) -> None:
        for changed in self._watchers:
            changed()

    def no_answer(self, name: str, reason: str, elsewhere: bool = False) -> None:
        """Record a try that got no answer from upstream name; enough in a row mark it down.

        The no_answer_limit-th in a row marks it down, and so does the first when another
        upstream could be asked instead (elsewhere): then a wrong guess costs little (the others
        serve, a probe brings it back) while a right one saves every later request a whole
        timeout.
        """
        with self._lock:
            st = self._states.get(name)
            if st is None:
                return
            st.silent += 1
            why = (f"no answer while another upstream could serve: {reason}" if elsewhere else
                   f"{st.silent} tries in a row without an answer; last: {reason}")
            changed = (elsewhere or st.silent >= self.no_answer_limit) and self._go_down(st, why)
        if changed:
            self._log_down(name, why)

    def failed(self, name: str, reason: str) -> None:
        """Record a request that gave up on upstream name (a 5xx on its last try).

        The down_after-th in a row marks it down.
        """
        with self._lock:
            st = self._states.get(name)
            if st is None:
                return
            st.failures += 1
            why = f"{st.failures} requests in a row failed; last: {reason}"
            changed = st.failures >= self.down_after and self._go_down(st, why)
        if changed:
            self._log_down(name, why)

    def _go_down(self, st: _State, reason: str) -> bool:
        """Mark st down (the lock is held); return False when it already was."""
        if st.down:
            return False
        now = self.clock()
        st.down, st.since, st.reason = True, now, reason
        st.next_probe = now + self.first_probe
        st.backoff = min(self.first_probe * 2, self.max_probe)
        return True

    def _log_down(self, name: str, reason: str) -> None:
        log.warning("upstream %s is down (%s); skipping it, probing it after %gs, backing off to %gs",
                    name, reason, self.first_probe, self.max_probe)
        self.metrics.upstream_up.set(0, upstream=name)
        self._notify()

    def down(self) -> list[Down]:
        """Return the upstreams that are down now, in registration order."""
        with self._lock:
            return [Down(n, s.since, s.reason, s.next_probe) for n, s in self._states.items() if s.down]

    def is_down(self, name: str) -> bool:
        """Report whether upstream name is down, starting nothing."""
        with self._lock:
            st = self._states.get(name)
            return st is not None and st.down

    def probe_due(self) -> None:
        """Start the probes that are due, for every down upstream."""
        with self._lock:
            names = [n for n, s in self._states.items() if s.down]
        for name in names:
            self._probe_if_due(name)

    def _probe_if_due(self, name: str) -> None:
        with self._lock:
            st = self._states[name]
            if not st.down or st.probing or self.clock() < st.next_probe:
                return
            st.probing = True
        self._spawn(lambda: self._run_probe(name, st))

    def _run_probe(self, name: str, st: _State) -> None:
        ok = False
        try:
            ok = st.probe()
        finally:  # even a probe that raised leaves the next one possible
            with self._lock:
                st.probing = False
                if not ok and st.down:
                    st.next_probe = self.clock() + st.backoff
                    st.backoff = min(st.backoff * 2, self.max_probe)
        if ok:
            self.answered(name)
        else:
            log.debug("upstream %s still down; next probe in %gs", name, st.next_probe - self.clock())
