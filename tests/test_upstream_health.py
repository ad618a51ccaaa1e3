"""Upstreams with Health: silent upstreams are left for the next one, skipped when down, probed back."""

from __future__ import annotations

import socket

import pytest

from goproxy.errors import UpstreamError
from goproxy.health import Health
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
