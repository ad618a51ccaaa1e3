"""Thread pools of one process: the bounded handler pool, and the spawner of fetch threads.

The handler pool answers requests whose head has arrived (few runnable at once); the spawner
runs each fetch at once on a reused thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

# How many threads take tasks at once while none is stuck; more would only take turns at the
# interpreter lock (each turn costs a switch, and the switches make the latency tail long).
RUNNABLE = 2
# A task running longer than this is taken as waiting on something (an upstream fetch, a lock),
# so another thread is woken to keep RUNNABLE threads working.
STUCK = 0.004
# The shortest time between two "every thread is busy" warnings.
WARN_EVERY = 10.0

Task = Callable[[], None]


class _Thread:
    """One pool thread: its wake-up lock and when its current task started (0: idle, -1: woken)."""

    __slots__ = ("wake", "started")

    def __init__(self) -> None:
        self.wake = threading.Lock()
        self.wake.acquire()
        self.started = -1.0


class HandlerPool:
    """Run tasks in arrival order on at most size threads, keeping about runnable of them busy.

    submit() wakes a sleeping thread (the most recently used, so hot threads stay hot) or starts
    a new one only while fewer than runnable threads are awake. Threads whose task has run for
    longer than stuck seconds are waiting, not computing: check() wakes others for the tasks
    queued behind them, up to size threads in all. The owner calls check() about every stuck
    seconds while pending() is True. A task must handle its own errors; one that raises is
    logged with its traceback.
    """

    def __init__(self, size: int, runnable: int = RUNNABLE, stuck: float = STUCK, name: str = "goproxy-handler",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.size = max(1, size)
        self.runnable = max(1, min(runnable, self.size))
        self.stuck = stuck
        self.name = name
        self.clock = clock
        self._lock = threading.Lock()
        self._tasks: deque[Task] = deque()
        self._threads: list[_Thread] = []
        self._idle: list[_Thread] = []  # a stack: the last to fall idle is woken first
        self._awake = 0
        self._closed = False
        self._warned = float("-inf")

    def submit(self, task: Task) -> None:
        """Queue task; wake or start a thread for it when fewer than runnable are awake."""
        with self._lock:
            self._tasks.append(task)
            if self._awake < self.runnable:
                self._wake_one()

    def pending(self) -> bool:
        """Report whether tasks are waiting for a thread."""
        return bool(self._tasks)

    def check(self, now: float | None = None) -> None:
        """Wake threads for waiting tasks while fewer than runnable awake threads are making progress.

        A thread counts as making progress when woken or when its task started less than stuck
        seconds before now (the clock's time when None).
        """
        if not self._tasks:
            return
        now = self.clock() if now is None else now
        with self._lock:
            fresh = sum(1 for t in self._threads if t.started < 0 or (t.started > 0 and now - t.started < self.stuck))
            for _ in range(min(len(self._tasks), self.runnable - fresh)):
                if not self._wake_one():
                    break

    @property
    def threads(self) -> int:
        """The number of threads started so far (never more than size)."""
        return len(self._threads)

    def close(self) -> None:
        """Let every thread end once the queue is empty; tasks under way run to completion."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            for t in idle:
                t.started = -1.0
                self._awake += 1
                t.wake.release()

    def _wake_one(self) -> bool:
        """Wake an idle thread or start one; False when all size threads are awake. Lock held."""
        if self._idle:
            t = self._idle.pop()
            t.started = -1.0
            self._awake += 1
            t.wake.release()
            return True
        if len(self._threads) < self.size:
            t = _Thread()
            self._threads.append(t)
            self._awake += 1
            threading.Thread(target=self._run, args=(t,), name=f"{self.name}-{len(self._threads)}",
                             daemon=True).start()
            return True
        now = self.clock()
        if now - self._warned >= WARN_EVERY:
            self._warned = now
            log.warning("all %d handler threads are busy (waiting on upstreams or locks); %d request(s) "
                        "queued behind them", self.size, len(self._tasks))
        return False

    def _run(self, t: _Thread) -> None:
        lock, tasks, clock = self._lock, self._tasks, self.clock
        while True:
            with lock:
                if tasks:
                    task: Task | None = tasks.popleft()
                    t.started = clock()
                elif self._closed:
                    self._awake -= 1
                    self._threads.remove(t)
                    return
                else:
                    task = None
                    t.started = 0.0
                    self._awake -= 1
                    self._idle.append(t)
            if task is None:
                t.wake.acquire()
                continue
            try:
                task()
            except Exception:
                log.exception("unhandled error in a handler thread")


class Spawner:
    """Run each task at once on a thread of its own, reusing threads that earlier tasks left idle.

    Starting a thread costs a round trip between the starter and the new thread (threading's
    start() waits for it to run); waking an idle one costs a lock release. Nothing ever waits
    for a thread, so a task may wait on another task without deadlock. At most keep threads
    stay idle; one idle for idle seconds ends. A task must handle its own errors; one that
    raises is logged with its traceback.
    """

    def __init__(self, name: str, keep: int = 16, idle: float = 60.0) -> None:
        self.name = name
        self.keep = keep
        self.idle = idle
        self._lock = threading.Lock()
        self._idle: list[_Parked] = []  # a stack: the last to fall idle is woken first
        self._count = 0

    def submit(self, task: Task) -> None:
        """Run task now, on an idle thread or a new one."""
        with self._lock:
            if self._idle:
                parked = self._idle.pop()
                parked.task = task
                parked.wake.release()
                return
            self._count += 1
            n = self._count
        threading.Thread(target=self._run, args=(task,), name=f"{self.name}-{n}", daemon=True).start()

    @property
    def idle_threads(self) -> int:
        """The number of threads waiting for a task."""
        return len(self._idle)

    def _run(self, task: Task) -> None:
        parked = _Parked()
        while True:
            try:
                task()
            except Exception:
                log.exception("unhandled error in %s", threading.current_thread().name)
            task = _nothing  # hold no reference to the finished task while idle
            with self._lock:
                if len(self._idle) >= self.keep:
                    return
                parked.task = None
                self._idle.append(parked)
            if not parked.wake.acquire(timeout=self.idle):
                with self._lock:
                    if parked in self._idle:  # else submit() took it just now and releases wake
                        self._idle.remove(parked)
                        return
                parked.wake.acquire()
            assert parked.task is not None
            task = parked.task


def _nothing() -> None:
    pass


class _Parked:
    """An idle Spawner thread: the lock it waits on and the task it is handed."""

    __slots__ = ("wake", "task")

    def __init__(self) -> None:
        self.wake = threading.Lock()
        self.wake.acquire()
        self.task: Task | None = None
