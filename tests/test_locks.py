"""FileLocks across real processes, and the shared metrics region across fork."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from goproxy.locks import FileLocks, LockTimeout
from goproxy.metrics import Metrics
from goproxy.shm import DORMANT, Region
from tests.support.helpers import wait_for


def test_a_key_held_by_another_process_waits_then_times_out(tmp_path: Path) -> None:
    locks = FileLocks(str(tmp_path))
    r, w = os.pipe()
    never, _keep = os.pipe()
    pid = os.fork()
    if pid == 0:  # the other process: hold the key until killed
        with locks.hold("m/@v/v1.0.0.zip", 10):
            os.write(w, b"held")
            os.read(never, 1)  # never written: the parent kills us
        os._exit(0)
    try:
        assert os.read(r, 4) == b"held"
        assert locks.busy("m/@v/v1.0.0.zip")
        started = time.monotonic()
        with pytest.raises(LockTimeout), locks.hold("m/@v/v1.0.0.zip", 0.2):
            pass
        assert time.monotonic() - started >= 0.2
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    # Its death released the lock.
    assert not locks.busy("m/@v/v1.0.0.zip")
    with locks.hold("m/@v/v1.0.0.zip", 1):
        pass


def test_a_thread_may_take_a_bucket_it_holds_again(tmp_path: Path) -> None:
    locks = FileLocks(str(tmp_path))
    with locks.hold("a", 1), locks.hold("a", 1):
        pass
    assert len(list((tmp_path / ".locks").iterdir())) == 1


def test_metrics_sum_every_process_and_counters_survive_a_restart() -> None:
    region = Region(4)
    slot = region.claim()
    assert slot is not None
    pid = os.fork()
    if pid == 0:
        m = Metrics(region, slot)
        m.requests.inc(5, endpoint="mod", status="200")
        m.downloads_active.set(3)
        os._exit(0)
    os.waitpid(pid, 0)
    mine = Metrics(region, 0)
    mine.requests.inc(2, endpoint="mod", status="200")
    text = mine.render().decode()
    assert 'goproxy_requests_total{endpoint="mod",status="200"} 7\n' in text
    assert "goproxy_downloads_in_flight 3\n" in text
    region.set_state(slot, DORMANT)  # the worker died: its gauges no longer count, its counters do
    text = mine.render().decode()
    assert 'goproxy_requests_total{endpoint="mod",status="200"} 7\n' in text
    assert "goproxy_downloads_in_flight 0\n" in text
    again = region.claim()
    assert again == slot
    successor = Metrics(region, again)  # a restarted worker takes the slot over and counts on
    successor.requests.inc(1, endpoint="mod", status="200")
    wait_for(lambda: 'status="200"} 8\n' in mine.render().decode())
    assert "goproxy_downloads_in_flight 0\n" in mine.render().decode()


def test_an_upstream_is_up_for_the_server_only_while_every_process_has_it_up() -> None:
    region = Region(3)
    slot = region.claim()
    assert slot is not None
    mine, theirs = Metrics(region, 0), Metrics(region, slot)
    mine.upstream_up.set(1, upstream="https://a")
    theirs.upstream_up.set(1, upstream="https://a")
    assert 'goproxy_upstream_up{upstream="https://a"} 1\n' in mine.render().decode()
    theirs.upstream_up.set(0, upstream="https://a")  # one worker found it down
    assert 'goproxy_upstream_up{upstream="https://a"} 0\n' in mine.render().decode()
