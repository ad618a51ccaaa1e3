"""Health: the up/down state machine of each upstream, its probes and backoff, with a hand-moved clock."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from goproxy.health import Health
from goproxy.metrics import Metrics
from tests.support.helpers import FakeClock

UP = "http://up.example"


class Probes:
    """A probe that answers as told, and a spawn that queues probes until the test runs them."""

    def __init__(self) -> None:
        self.answer = False
        self.calls = 0
        self.queued: list[Callable[[], None]] = []

    def probe(self) -> bool:
        self.calls += 1
        return self.answer

    def spawn(self, fn: Callable[[], None]) -> None:
        self.queued.append(fn)

    def run(self) -> None:
        """Run the queued probes, as their threads would."""
        queued, self.queued = self.queued, []
        for fn in queued:
            fn()


@pytest.fixture
def probes() -> Probes:
    return Probes()


def make(clock: FakeClock, probes: Probes, metrics: Metrics | None = None, limit: int = 3) -> Health:
    h = Health(metrics or Metrics(), clock, no_answer_limit=limit, spawn=probes.spawn)
    h.register(UP, probes.probe)
    return h


def test_tries_in_a_row_without_an_answer_mark_it_down(clock: FakeClock, probes: Probes) -> None:
    h = make(clock, probes)
    h.no_answer(UP, "timed out")
    h.no_answer(UP, "timed out")
    assert h.available(UP)
    h.no_answer(UP, "timed out")
    assert not h.available(UP)
    assert [d.name for d in h.down()] == [UP]
    assert "3 tries in a row without an answer; last: timed out" in h.down()[0].reason


def test_an_answer_in_between_starts_the_count_again(clock: FakeClock, probes: Probes) -> None:
    h = make(clock, probes)
    for _ in range(5):
        h.no_answer(UP, "reset")
        h.no_answer(UP, "reset")
        h.answered(UP)
    assert h.available(UP)


def test_requests_failing_with_5xx_mark_it_down_after_three(clock: FakeClock, probes: Probes) -> None:
    h = make(clock, probes, limit=1)
    h.failed(UP, "503")
    h.failed(UP, "503")
    assert h.available(UP)
    h.failed(UP, "503")
    assert not h.available(UP)


def test_unknown_upstreams_are_always_available(clock: FakeClock, probes: Probes) -> None:
    h = make(clock, probes)
    for _ in range(5):
        h.no_answer("http://other", "refused")
    assert h.available("http://other")
    assert h.down() == []


def test_probes_back_off_from_5s_doubling_to_5_minutes(clock: FakeClock, probes: Probes) -> None:
    h = make(clock, probes, limit=1)
    h.no_answer(UP, "timed out")
    waits = []
    for _ in range(9):
        waited = 0.0
        while True:
            h.available(UP)
            if probes.queued:
                break
            clock.advance(1)
            waited += 1
        waits.append(waited)
        probes.run()
    assert waits == [5, 10, 20, 40, 80, 160, 300, 300, 300]


def test_one_probe_at_a_time(clock: FakeClock, probes: Probes) -> None:
    h = make(clock, probes, limit=1)
    h.no_answer(UP, "timed out")
    clock.advance(5)
    for _ in range(10):
        assert not h.available(UP)
        h.probe_due()
        clock.advance(100)
    assert len(probes.queued) == 1


def test_a_probe_that_answers_brings_it_back(clock: FakeClock, probes: Probes) -> None:
    metrics = Metrics()
    h = make(clock, probes, metrics, limit=1)
    h.no_answer(UP, "timed out")
    assert metrics.upstream_up.get(upstream=UP) == 0
    clock.advance(5)
    h.probe_due()
    probes.answer = True
    probes.run()
    assert h.available(UP)
    assert metrics.upstream_up.get(upstream=UP) == 1
    # and it starts over: the next outage probes after 5s again
    h.no_answer(UP, "timed out")
    clock.advance(4.9)
    h.probe_due()
    assert probes.queued == []
    clock.advance(0.1)
    h.probe_due()
    assert len(probes.queued) == 1


def test_a_probe_that_raises_leaves_the_next_one_possible(clock: FakeClock, probes: Probes) -> None:
    h = make(clock, probes, limit=1)

    def broken() -> bool:
        raise RuntimeError("boom")

    h.register("http://broken", broken)
    h.no_answer("http://broken", "timed out")
    clock.advance(5)
    h.probe_due()
    with pytest.raises(RuntimeError):
        probes.run()
    clock.advance(10)
    h.probe_due()
    assert len(probes.queued) == 1


def test_state_changes_are_logged_once_each(clock: FakeClock, probes: Probes,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="goproxy.health")
    h = make(clock, probes, limit=1)
    for _ in range(20):
        h.no_answer(UP, "timed out")
        h.available(UP)
    clock.advance(5)
    h.probe_due()
    probes.run()  # still down: no new line
    for _ in range(20):
        h.answered(UP)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("is down" in line for line in lines) == 1, lines
    assert sum("is up again" in line for line in lines) == 1, lines
    assert len(lines) == 2, lines


def test_a_request_that_answers_brings_a_down_upstream_back(clock: FakeClock, probes: Probes) -> None:
    h = make(clock, probes, limit=1)
    h.no_answer(UP, "timed out")
    h.answered(UP)
    assert h.available(UP)
    assert probes.calls == 0


def test_one_try_without_an_answer_marks_it_down_when_another_upstream_could_serve(
        clock: FakeClock, probes: Probes) -> None:
    h = make(clock, probes)
    h.no_answer(UP, "timed out", elsewhere=True)
    assert not h.available(UP)
    assert "another upstream could serve" in h.down()[0].reason
