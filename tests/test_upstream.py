"""Upstreams: retries with backoff, Retry-After, the status table, ordered fallback."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence

import pytest

from goproxy.errors import NotFound, UpstreamError
from goproxy.net.http import Response, Timeouts, Transport
from goproxy.upstream import MAX_RETRY_AFTER, Upstream, Upstreams
from tests.support.helpers import Sleeps
from tests.support.rawserver import RawServer, response


def scripted(servers: list[RawServer], answers: Sequence[bytes | Callable[[socket.socket], object]]) -> RawServer:
    """scripted answers the n-th request with answers[n] (bytes, or a callable(sock))."""
    state = {"n": 0}

    def script(sock: socket.socket, req: bytes) -> None:
        i = min(state["n"], len(answers) - 1)
        state["n"] += 1
        a = answers[i]
        if callable(a):
            a(sock)
        else:
            sock.sendall(a)

    s = RawServer(script)
    servers.append(s)
    return s


def reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


def truncated(sock: socket.socket) -> None:
    sock.sendall(response(200, b"only part", length=1000))
    sock.close()


def read(resp: Response, _up: object) -> bytes:
    return resp.read_all()


def make(urls: list[str], sleeps: Sleeps, attempts: int = 3, rng: float = 1.0, read_timeout: float = 5) -> Upstreams:
    transport = Transport(timeouts=Timeouts(read=read_timeout))
    return Upstreams([Upstream(u) for u in urls], transport, attempts=attempts, backoff=0.1,
                     sleep=sleeps, rng=lambda: rng)


OK = response(200, b"body")


@pytest.mark.parametrize("failure", [
    response(500, b"x"), response(502, b"x"), response(503, b"x"), response(504, b"x"),
    response(429, b"slow down"), reset, truncated,
])
def test_transient_failures_are_retried_then_succeed(servers: list[RawServer], sleeps: Sleeps,
                                                     failure: bytes | Callable[[socket.socket], None]) -> None:
    s = scripted(servers, [failure, failure, OK])
    assert make([s.url], sleeps).fetch("/m/@v/list", read) == b"body"
    assert len(s.requests) == 3
    assert sleeps.calls == [pytest.approx(0.1), pytest.approx(0.2)]


def test_backoff_doubles_with_full_jitter(servers: list[RawServer], sleeps: Sleeps) -> None:
    s = scripted(servers, [response(500, b"")] * 5 + [OK])
    assert make([s.url], sleeps, attempts=6, rng=0.5).fetch("/p", read) == b"body"
    assert sleeps.calls == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8])


def test_stall_past_header_timeout_is_retried(servers: list[RawServer], sleeps: Sleeps) -> None:
    holder: list[RawServer] = []
    s = scripted(servers, [lambda sock: holder[0].release.wait(30), OK])
    holder.append(s)
    assert make([s.url], sleeps, read_timeout=0.3).fetch("/p", read) == b"body"


def test_retry_after_is_honoured_and_capped(servers: list[RawServer], sleeps: Sleeps) -> None:
    s = scripted(servers, [response(429, b"", {"Retry-After": "2"}),
                           response(503, b"", {"Retry-After": "3600"}), OK])
    assert make([s.url], sleeps).fetch("/p", read) == b"body"
    assert sleeps.calls == [2.0, MAX_RETRY_AFTER]


def test_retry_after_http_date(servers: list[RawServer], sleeps: Sleeps) -> None:
    s = scripted(servers, [response(503, b"", {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), OK])
    assert make([s.url], sleeps).fetch("/p", read) == b"body"
    assert sleeps.calls == [0.0]  # a date in the past means now


@pytest.mark.parametrize("status", [400, 401, 403, 405, 418, 451])
def test_other_4xx_are_not_retried(servers: list[RawServer], sleeps: Sleeps, status: int) -> None:
    s = scripted(servers, [response(status, b"denied"), OK])
    with pytest.raises(UpstreamError, match=str(status)):
        make([s.url], sleeps).fetch("/p", read)
    assert len(s.requests) == 1
    assert sleeps.calls == []


def test_not_found_is_not_retried_and_keeps_status_and_text(servers: list[RawServer], sleeps: Sleeps) -> None:
    s = scripted(servers, [response(410, b"gone: reason")])
    with pytest.raises(NotFound) as err:
        make([s.url], sleeps).fetch("/p", read)
    assert (err.value.status, str(err.value)) == (410, "gone: reason")
    assert len(s.requests) == 1


def test_fallback_order_and_attempts_per_upstream(servers: list[RawServer], sleeps: Sleeps) -> None:
    a = scripted(servers, [response(500, b"a down")])
    b = scripted(servers, [response(404, b"b has none")])
    c = scripted(servers, [OK])
    assert make([a.url, b.url, c.url], sleeps).fetch("/p", read) == b"body"
    assert (len(a.requests), len(b.requests), len(c.requests)) == (3, 1, 1)


def test_all_failing_gives_last_error(servers: list[RawServer], sleeps: Sleeps) -> None:
    a = scripted(servers, [response(404, b"a none")])
    b = scripted(servers, [response(503, b"b broken")])
    with pytest.raises(UpstreamError, match="b broken"):
        make([a.url, b.url], sleeps).fetch("/p", read)


def test_mixed_not_found_and_failure_is_not_a_not_found(servers: list[RawServer], sleeps: Sleeps) -> None:
    # One upstream failed: it may have had the module, so the answer is 502, not a cacheable 404.
    a = scripted(servers, [response(503, b"a broken")])
    b = scripted(servers, [response(404, b"b none")])
    with pytest.raises(UpstreamError) as err:
        make([a.url, b.url], sleeps).fetch("/p", read)
    assert not isinstance(err.value, NotFound)
