"""The parent of the worker processes, which also runs the housekeeping.

It forks the workers on the socket it bound, restarts the ones that die, replaces them one at a
time on reload, and drains them on stop.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .config import Config
from .errors import ConfigError
from .sdnotify import Notifier
from .shm import DORMANT, Region
from .status.board import Board, Posting
from .status.logring import WarningRing

log = logging.getLogger("goproxy")

# A worker that dies before it says ready this many times in a row stops the server.
START_FAILURES = 3
# Restart delays: the first, doubled for each death that follows within STABLE seconds, up to the last.
BACKOFF_FIRST, BACKOFF_MAX, STABLE = 0.1, 10.0, 30.0
# How long after -shutdown-timeout a draining worker still gets before it is killed.
KILL_GRACE = 5.0

# Runs worker index in a forked child: (index, config, control socket, slot) → exit status.
RunWorker = Callable[[int, Config, socket.socket, int], int]


def worker_count(setting: str) -> int:
    """Return the number of workers -workers asks for: "auto" is the CPUs this process may use."""
    if setting == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # no sched_getaffinity (macOS)
            return max(1, os.cpu_count() or 1)
    return max(1, int(setting))


@dataclass
class Worker:
    """One worker process as the parent sees it."""

    index: int
    pid: int
    slot: int
    control: socket.socket
    config: Config
    started: float
    ready: bool = False
    retiring: bool = False  # told to stop: its death is expected
    fatal: str = ""  # the reason it gave for failing to start
    inbox: bytes = b""
    successor: Worker | None = field(default=None, repr=False)


class Supervisor:
    """Keep count workers serving, through signals and worker deaths.

    It handles SIGTERM/SIGINT (drain all, exit 0), SIGHUP (reload the config and replace the
    workers one at a time) and worker deaths (restart with backoff; a worker that keeps dying at
    start stops the server with its reason, exit 1).

    on_use receives (key, time) of the uses the workers report; on_ready runs once when every
    first worker is serving; reload returns a fresh Config (raising ConfigError when invalid);
    on_config is told of a config taking effect after a reload. While it runs, this process's
    warnings and errors (its own, such as a worker's death, and the housekeeping's) are posted
    on the region's first board, where the front page of every worker finds them.
    """

    def __init__(self, config: Config, count: int, region: Region, run_worker: RunWorker,
                 reload: Callable[[], Config], notifier: Notifier, on_use: Callable[[str, float], None],
                 on_ready: Callable[[], None], on_config: Callable[[Config], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.count = count
        self.region = region
        self.run_worker = run_worker
        self.reload = reload
        self.notifier = notifier
        self.on_use = on_use
        self.on_ready = on_ready
        self.on_config = on_config
        self.clock = clock
        self.workers: dict[int, Worker] = {}  # by pid
        self._sel = selectors.DefaultSelector()
        self._signals: list[int] = []
        self._restart: dict[int, float] = {}  # index → when to start it again
        self._failures: dict[int, int] = {}  # index → deaths before ready in a row
        self._quick: dict[int, int] = {}  # index → deaths within STABLE of their start in a row
        self._announced = False
        self._stopping = False
        self._stop_deadline = 0.0
        self._exit = 0
        self._reloading: list[int] = []  # indexes still to replace
        self._pending_config: Config | None = None
        self.count_after = count
        self._wake: list[socket.socket] = []
        self._board = Board(region, 0, lambda: Posting(time.time(), os.getpid(), warnings=self._ring.entries()))
        self._ring = WarningRing(on_keep=self._board.changed)

    # Running.

    def run(self) -> int:
        """Start the workers and supervise them until stopped; return the exit status."""
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        self._wake = [wake_r, wake_w]
        self._sel.register(wake_r, selectors.EVENT_READ, None)
        old_wakeup = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        handlers = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)}
        logging.getLogger().addHandler(self._ring)
        try:
            for index in range(1, self.count + 1):
                self._spawn(index, self.config)
            while self.workers or self._restart:
                self._step(wake_r)
            return self._exit
        finally:
            logging.getLogger().removeHandler(self._ring)
            self._board.stop()
            for sig, old in handlers.items():
                signal.signal(sig, old)
            signal.set_wakeup_fd(old_wakeup)
            wake_r.close()
            wake_w.close()

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals.append(signum)

    def _step(self, wake_r: socket.socket) -> None:
        now = self.clock()
        timeout = min([1.0] + [max(0.0, t - now) for t in self._restart.values()])
        for key, _ in self._sel.select(timeout):
            if key.data is None:
                try:
                    wake_r.recv(4096)
                except OSError:
                    pass
            else:
                self._read(key.data)
        while self._signals:
            signum = self._signals.pop(0)
            if signum == signal.SIGCHLD:
                continue
            if signum == signal.SIGHUP:
                self._begin_reload()
            else:
                self.stop(f"received {signal.Signals(signum).name}; stopping every worker")
        self._reap()
        now = self.clock()
        for index, when in list(self._restart.items()):
            if when <= now and not self._stopping:
                del self._restart[index]
                self._spawn(index, self.config)
        if self._stopping:
            self._restart.clear()
            if now >= self._stop_deadline:
                for w in self.workers.values():
                    log.warning("worker %d (pid %d) did not stop in time; killing it", w.index, w.pid)
                    _kill(w.pid, signal.SIGKILL)
                self._stop_deadline = float("inf")

    def stop(self, reason: str, status: int = 0) -> None:
        """Drain every worker (SIGTERM) within -shutdown-timeout, then end with status."""
        if self._stopping:
            return
        log.info("%s", reason)
        self.notifier.notify("STOPPING=1")
        self._stopping = True
        self._exit = status
        self._stop_deadline = self.clock() + self.config.shutdown_timeout + KILL_GRACE
        for w in self.workers.values():
            w.retiring = True
            _kill(w.pid, signal.SIGTERM)

    # Workers.

    def _spawn(self, index: int, config: Config) -> Worker | None:
        slot = self.region.claim()
        if slot is None:
            log.error("no metrics slot left for worker %d; it is not started", index)
            return None
        parent_end, child_end = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the child
            status = 1
            try:
                self._forget_parent_state(parent_end)
                status = self.run_worker(index, config, child_end, slot)
            finally:
                os._exit(status)
        child_end.close()
        parent_end.setblocking(False)
        w = Worker(index, pid, slot, parent_end, config, self.clock())
        self.workers[pid] = w
        self._sel.register(parent_end, selectors.EVENT_READ, w)
        log.info("worker %d started (pid %d)", index, pid)
        return w

    def _forget_parent_state(self, parent_end: socket.socket) -> None:
        """Drop, in a new child, what it inherited of the parent's state.

        That is the parent's signal set-up and its ends of every control socket (a sibling
        holding one would hide the parent's death from that worker), and the capture of its
        warnings (the parent's board is not the worker's to post on).
        """
        logging.getLogger().removeHandler(self._ring)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        parent_end.close()
        for other in self.workers.values():
            other.control.close()
        for sock in self._wake:
            sock.close()
        self._sel.close()

    def _read(self, w: Worker) -> None:
        try:
            data = w.control.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._sel.unregister(w.control)
            return
        w.inbox += data
        *lines, w.inbox = w.inbox.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            if line.startswith("use "):
                self._use(line)
            elif line == "ready":
                self._ready(w)
            elif line.startswith("fatal "):
                w.fatal = line[6:]

    def _use(self, line: str) -> None:
        parts = line.split(" ")
        if len(parts) == 3:
            try:
                self.on_use(parts[2], float(parts[1]))
            except ValueError:
                pass

    def _ready(self, w: Worker) -> None:
        w.ready = True
        self._failures.pop(w.index, None)
        log.info("worker %d (pid %d) serving", w.index, w.pid)
        if not self._announced and sum(1 for x in self.workers.values() if x.ready) >= self.count:
            self._announced = True
            self.on_ready()
        if self._reloading and w.index == self._reloading[0] and w.config is self._pending_config:
            self._replaced(w)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            w = self.workers.pop(pid, None)
            if w is None:
                continue
            try:
                self._sel.unregister(w.control)
            except (KeyError, ValueError):
                pass
            w.control.close()
            self.region.set_state(w.slot, DORMANT)
            self._died(w, _describe(status))

    def _died(self, w: Worker, how: str) -> None:
        if w.retiring:
            log.info("worker %d (pid %d) stopped", w.index, w.pid)
            return
        reason = w.fatal or how
        if self._reloading and w.config is self._pending_config and not w.ready:
            self._abort_reload(f"a new worker failed to start: {reason}")
            return
        if not w.ready:
            failures = self._failures[w.index] = self._failures.get(w.index, 0) + 1
            if failures >= START_FAILURES:
                log.error("worker %d keeps failing at start (%d times): %s", w.index, failures, reason)
                self.stop(f"stopping: worker {w.index} cannot start: {reason}", status=1)
                return
        quick = self._quick[w.index] = self._quick.get(w.index, 0) + 1 if self.clock() - w.started < STABLE else 0
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, quick - 1))
        log.error("worker %d (pid %d) %s; restarting it in %.1fs", w.index, w.pid, reason, delay)
        if not self._stopping and w.index <= self.count:
            self._restart[w.index] = self.clock() + delay

    # Reload.

    def _begin_reload(self) -> None:
        if self._stopping:
            return
        if self._reloading:
            log.warning("reload already under way; ignoring SIGHUP")
            return
        self.notifier.notify("RELOADING=1", f"MONOTONIC_USEC={int(time.monotonic() * 1e6)}")
        try:
            config = self.reload()
        except ConfigError as exc:
            log.error("reload: %s; the workers keep the running configuration", exc)
            self.notifier.notify("READY=1")
            return
        if (config.host, config.port) != (self.config.host, self.config.port):
            log.warning("reload: host and port changes take effect only on a restart")
        log.info("reload: replacing the workers one at a time")
        self._pending_config = config
        self.count_after = worker_count_of(config)
        self._reloading = list(range(1, max(self.count, self.count_after) + 1))
        self._replace_next()

    def _replace_next(self) -> None:
        while self._reloading:
            index = self._reloading[0]
            if index > self.count_after:  # fewer workers now: retire this one
                self._retire(index)
                self._reloading.pop(0)
                continue
            assert self._pending_config is not None
            if self._spawn(index, self._pending_config) is None:
                self._abort_reload("no metrics slot for a new worker")
            return
        self._finish_reload()

    def _replaced(self, new: Worker) -> None:
        self._retire(new.index, keep=new.pid)
        self._reloading.pop(0)
        self._replace_next()

    def _retire(self, index: int, keep: int = 0) -> None:
        for w in list(self.workers.values()):
            if w.index == index and w.pid != keep and not w.retiring:
                w.retiring = True
                _kill(w.pid, signal.SIGTERM)
        self._restart.pop(index, None)

    def _finish_reload(self) -> None:
        assert self._pending_config is not None
        self.config = self._pending_config
        self.count = self.count_after
        self._pending_config = None
        self.on_config(self.config)
        log.info("reload complete: %d worker(s) serving the new configuration", self.count)
        self.notifier.notify("READY=1", f"STATUS=serving with {self.count} worker(s)")

    def _abort_reload(self, reason: str) -> None:
        log.error("reload aborted (%s); the other workers keep the running configuration", reason)
        self._reloading = []
        self._pending_config = None
        for w in self.workers.values():  # an old worker retired for this slot is restarted by _died
            if not w.ready and not w.retiring:
                w.retiring = True
                _kill(w.pid, signal.SIGTERM)
        for index in range(1, self.count + 1):
            if not any(w.index == index and not w.retiring for w in self.workers.values()):
                self._restart.setdefault(index, self.clock())
        self.notifier.notify("READY=1")


def worker_count_of(config: Config) -> int:
    """Return the number of workers config asks for."""
    return worker_count(config.workers)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _describe(status: int) -> str:
    """Return how a child ended, from its wait status: "exited with status 1", "was killed by SIGKILL"."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"was killed by {name}"
    return f"exited with status {os.WEXITSTATUS(status)}"

