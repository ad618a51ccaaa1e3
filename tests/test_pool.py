"""Spawner: every task runs at once, on a thread an earlier task left idle when there is one."""

from __future__ import annotations

import logging
import threading

import pytest

from goproxy.pool import Spawner
from tests.support.helpers import wait_for


def run_and_name(spawner: Spawner) -> str:
    """Run one task on spawner and return the name of the thread it ran on."""
    names: list[str] = []
    done = threading.Event()

    def task() -> None:
        names.append(threading.current_thread().name)
        done.set()

    spawner.submit(task)
    assert done.wait(10)
    return names[0]


def test_a_thread_left_idle_runs_the_next_task() -> None:
    spawner = Spawner("t-reuse")
    first = run_and_name(spawner)
    wait_for(lambda: spawner.idle_threads == 1)
    assert run_and_name(spawner) == first
    assert spawner.idle_threads == 1


def test_a_task_waiting_on_a_later_task_gets_a_thread_of_its_own() -> None:
    spawner = Spawner("t-wait")
    later_ran = threading.Event()
    first_done = threading.Event()

    def first() -> None:
        if later_ran.wait(10):
            first_done.set()

    spawner.submit(first)
    spawner.submit(later_ran.set)  # no thread is idle: a new one runs it now
    assert first_done.wait(10)


def test_threads_beyond_keep_end_and_an_idle_thread_ends_after_idle_seconds() -> None:
    spawner = Spawner("t-keep", keep=1, idle=0.05)
    release = threading.Event()
    started = threading.Semaphore(0)

    def task() -> None:
        started.release()
        release.wait(10)

    before = {t.name for t in threading.enumerate()}
    for _ in range(3):
        spawner.submit(task)
    for _ in range(3):
        assert started.acquire(timeout=10)

    def ours() -> set[str]:
        return {t.name for t in threading.enumerate() if t.name.startswith("t-keep")} - before

    assert len(ours()) == 3
    release.set()
    wait_for(lambda: len(ours()) <= 1)  # one stays idle (keep=1), the others end at once
    wait_for(lambda: not ours())  # and that one ends after idle seconds without a task
    assert spawner.idle_threads == 0


def test_a_task_that_raises_is_logged_and_its_thread_runs_the_next(caplog: pytest.LogCaptureFixture) -> None:
    spawner = Spawner("t-raise")

    def boom() -> None:
        raise RuntimeError("boom")

    spawner.submit(boom)
    wait_for(lambda: spawner.idle_threads == 1)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == ["unhandled error in t-raise-1"]
    assert errors[0].exc_info is not None
    assert run_and_name(spawner) == "t-raise-1"
