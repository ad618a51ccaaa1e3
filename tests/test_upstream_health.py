"""Upstreams with Health: silent upstreams are left for the next one, skipped when down, probed back."""

from __future__ import annotations

import contextlib
import socket

import pytest

from goproxy.errors import ProxyError, UpstreamError
from goproxy.health import LATENCY_WINDOW, Health, Report
from goproxy.metrics import Metrics
from goproxy.net.http import Response, Timeouts, Transport
from goproxy.upstream import PROBE_PATH, InvalidAnswer, Upstream, UpstreamDown, Upstreams
from tests.support.helpers import FakeClock, Sleeps, wait_for
from tests.support.rawserver import RawServer, response

OK = response(200, b"body")


def server(servers: list[RawServer], answer: bytes | None) -> RawServer:
    """A raw server answering every request with answer, or (None) accepting and never answering."""
    def script(sock: socket.socket, _req: bytes) -> None:
        if answer is None:
            s.release.wait(30)
            sock.close()
            return
        sock.sendall(answer)

    s = RawServer(script)
    servers.append(s)
    return s


def read(resp: Response, _up: object) -> bytes:
    return resp.read_all()


def make(urls: list[str], clock: FakeClock, attempts: int = 3) -> tuple[Upstreams, Health]:
    metrics = Metrics()
    health = Health(metrics, clock, no_answer_limit=attempts)
    ups = Upstreams([Upstream(u) for u in urls], Transport(timeouts=Timeouts(read=0.2)), attempts=attempts,
                    sleep=Sleeps(), metrics=metrics, health=health)
    return ups, health


def test_a_silent_upstream_is_asked_once_then_the_next_and_marked_down(servers: list[RawServer],
                                                                       clock: FakeClock) -> None:
    silent, good = server(servers, None), server(servers, OK)
    ups, health = make([silent.url, good.url], clock)
    assert ups.fetch("/p", read) == b"body"
    assert len(silent.requests) == 1
    assert health.is_down(silent.url)
    assert ups.fetch("/q", read) == b"body"
    assert len(silent.requests) == 1  # skipped without a request


def test_the_last_silent_upstream_is_retried_and_down_after_as_many_tries(servers: list[RawServer],
                                                                          clock: FakeClock) -> None:
    silent = server(servers, None)
    ups, health = make([silent.url], clock)
    with pytest.raises(UpstreamError, match="timed out"):
        ups.fetch("/p", read)
    wait_for(lambda: len(silent.requests) == 3)
    assert health.is_down(silent.url)
    with pytest.raises(UpstreamDown, match="every upstream is down"):
        ups.fetch("/q", read)
    assert len(silent.requests) == 3


def test_a_refused_connection_counts_as_no_answer(clock: FakeClock) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: refused
        ups, health = make([url], clock)
        with pytest.raises(UpstreamError):
            ups.fetch("/p", read)
    assert health.is_down(url)


def test_a_down_upstream_after_a_second_one_is_left_for_it(servers: list[RawServer], clock: FakeClock) -> None:
    good, silent = server(servers, OK), server(servers, None)
    ups, health = make([silent.url, good.url], clock)
    health.no_answer(good.url, "earlier", elsewhere=True)  # the second is down: the first is all there is
    with pytest.raises(UpstreamError):
        ups.fetch("/p", read)
    wait_for(lambda: len(silent.requests) == 3)


def test_the_probe_asks_a_cheap_path_and_any_answer_below_500_brings_it_back(servers: list[RawServer],
                                                                             clock: FakeClock) -> None:
    flaky = server(servers, response(404, b"no sumdb here"))
    ups, health = make([flaky.url], clock)
    health.no_answer(flaky.url, "timed out", elsewhere=True)
    assert not ups.available()
    clock.advance(5)
    assert not ups.available()  # starts the probe; the upstream stays skipped until it answers
    wait_for(lambda: not health.is_down(flaky.url))
    assert flaky.requests[-1].startswith(f"GET {PROBE_PATH} ".encode())
    assert ups.available()


def test_a_5xx_answer_to_the_probe_keeps_it_down(servers: list[RawServer], clock: FakeClock) -> None:
    broken = server(servers, response(503, b"backend down"))
    ups, health = make([broken.url], clock)
    health.no_answer(broken.url, "timed out", elsewhere=True)
    clock.advance(5)
    health.probe_due()
    wait_for(lambda: len(broken.requests) == 1)
    wait_for(lambda: health.down()[0].next_probe == clock() + 10)  # the probe failed: next in 10s
    assert health.is_down(broken.url)


def test_an_html_answer_is_refused_before_the_consumer_sees_it(servers: list[RawServer], clock: FakeClock) -> None:
    portal = server(servers, response(200, b"<html>log in</html>", {"Content-Type": "text/html"}))
    ups, health = make([portal.url], clock)
    seen: list[bytes] = []

    def consume(r: Response, _up: object) -> bytes:
        seen.append(r.read_all())
        return b""

    with pytest.raises(InvalidAnswer, match="an HTML page") as err:
        ups.fetch("/m/@v/list", consume)
    assert err.value.reason == "html"
    assert seen == []
    assert len(portal.requests) == 1  # not retried
    assert not health.is_down(portal.url)  # it answered: a block page is not an outage


# What the front page shows of each upstream.


def test_report_keeps_the_last_success_the_last_error_masked_and_a_window_of_latencies() -> None:
    clock = FakeClock(5000.0)
    health = Health(Metrics(), clock)
    health.register("https://a", lambda: True)
    assert health.report()["https://a"] == Report("up", None, "", None, ())
    for i in range(LATENCY_WINDOW + 5):
        health.finished("https://a", float(i))
    clock.advance(10)
    health.finished("https://a", None, "GET https://bob:hunter2@mirror/x: connection\n  refused")
    r = health.report()["https://a"]
    assert (r.state, r.last_success, r.last_error_at) == ("up", 5000.0, 5010.0)
    assert r.last_error == "GET https://bob:***@mirror/x: connection refused"
    assert r.latencies == tuple(float(i) for i in range(5, LATENCY_WINDOW + 5))
    assert r.median_latency == (5 + LATENCY_WINDOW + 4) / 2
    health.finished("https://unknown", 1.0)  # not tracked: ignored
    assert list(health.report()) == ["https://a"]


@pytest.mark.parametrize("answer,error", [
    (OK, ""),
    (response(404, b"no such module"), ""),
    (response(503, b"overloaded"), "503"),
    (response(403, b"forbidden"), "403"),
], ids=["served", "not-found", "server-error", "refused"])
def test_each_try_reports_its_time_to_headers_and_how_it_ended(servers: list[RawServer], clock: FakeClock,
                                                               answer: bytes, error: str) -> None:
    up = server(servers, answer)
    ups, health = make([up.url], clock, attempts=1)
    with contextlib.suppress(ProxyError):  # a failure or a not-found: what matters is the report
        ups.fetch("/example.com/m/@v/list", read)
    r = health.report()[up.url]
    assert len(r.latencies) == 1
    assert 0 < r.latencies[0] < 5
    if error:
        assert error in r.last_error
        assert (r.last_success, r.last_error_at) == (None, clock())
    else:
        assert (r.last_success, r.last_error, r.last_error_at) == (clock(), "", None)


def test_a_try_without_an_answer_is_an_error_without_a_latency(servers: list[RawServer], clock: FakeClock) -> None:
    silent = server(servers, None)
    ups, health = make([silent.url], clock, attempts=1)
    with pytest.raises(UpstreamError):
        ups.fetch("/p", read)
    r = health.report()[silent.url]
    assert r.latencies == ()
    assert "timed out" in r.last_error
    assert r.state == "down"


def test_watchers_hear_of_every_try_and_every_change_of_state(clock: FakeClock) -> None:
    health = Health(Metrics(), clock, no_answer_limit=1, spawn=lambda fn: None)
    health.register("https://a", lambda: True)
    told: list[int] = []
    health.watch(lambda: told.append(1))
    health.finished("https://a", 0.1)
    assert len(told) == 1
    health.no_answer("https://a", "timed out")  # down
    assert len(told) == 2
    health.answered("https://a")  # up again
    assert len(told) == 3
    health.answered("https://a")  # no change
    assert len(told) == 3
