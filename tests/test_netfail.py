"""When the network hangs: stale answers at once, a dead upstream skipped, clients bounded by -upstream-timeout."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from goproxy.server import ProxyServer
from tests.support.helpers import FakeClock, get, wait_for
from tests.support.upstream import Upstream, generate

MOD = "example.com/stale"
LIST = f"/{MOD}/@v/list"


def timed(proxy: ProxyServer, path: str) -> tuple[float, int, bytes]:
    """Return (seconds, status, body) of one request."""
    started = time.monotonic()
    status, _, body = get(proxy, path)
    return time.monotonic() - started, status, body


def is_down(proxy: ProxyServer, up: Upstream) -> bool:
    health = proxy.service.upstreams.health
    assert health is not None
    return health.is_down(up.url)


def cached(proxy: ProxyServer, path: str) -> Path:
    return Path(proxy.config.cache_dir) / path.lstrip("/")


def test_stale_list_is_answered_at_once_while_one_refresh_waits_on_a_hanging_upstream(
        make_proxy: Callable[..., ProxyServer], upstream: Upstream, clock: FakeClock) -> None:
    upstream.add(generate(MOD, "v1.0.0"))
    proxy = make_proxy([upstream.url], upstream_timeout=5.0)
    assert get(proxy, LIST)[2] == b"v1.0.0\n"
    upstream.gate = threading.Event()  # accepts, never answers
    upstream.add(generate(MOD, "v1.1.0"))
    clock.advance(301)

    for _ in range(5):
        elapsed, status, body = timed(proxy, LIST)
        assert (status, body) == (200, b"v1.0.0\n")
        assert elapsed < 0.1, elapsed
    answers: list[tuple[int, bytes]] = []
    threads = [threading.Thread(target=lambda: answers.append(get(proxy, LIST)[::2])) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert answers == [(200, b"v1.0.0\n")] * 20
    wait_for(lambda: upstream.count(LIST) == 2)
    assert upstream.count(LIST) == 2  # one background refresh for 25 clients
    assert proxy.service.flights.in_flight(LIST.lstrip("/"))

    upstream.gate.set()  # the upstream comes back: the refresh completes
    wait_for(lambda: not proxy.service.flights.in_flight(LIST.lstrip("/")))
    assert get(proxy, LIST)[2] == b"v1.0.0\nv1.1.0\n"


def test_list_older_than_max_stale_waits_for_the_refresh_then_gets_the_stale_copy(
        make_proxy: Callable[..., ProxyServer], upstream: Upstream, clock: FakeClock) -> None:
    upstream.add(generate(MOD, "v1.0.0"))
    proxy = make_proxy([upstream.url], upstream_timeout=0.3, max_stale=3600.0)
    assert get(proxy, LIST)[2] == b"v1.0.0\n"
    upstream.gate = threading.Event()
    clock.advance(7200)
    elapsed, status, body = timed(proxy, LIST)
    assert (status, body) == (200, b"v1.0.0\n")
    assert 0.3 <= elapsed < 2.0, elapsed  # waited for the refresh, but only -upstream-timeout


def test_first_request_waits_only_upstream_timeout_and_the_cache_still_fills(
        make_proxy: Callable[..., ProxyServer], upstream: Upstream) -> None:
    m = upstream.add(generate("example.com/slow", "v1.0.0"))
    path = "/example.com/slow/@v/v1.0.0.mod"
    release = threading.Event()
    stalled: list[str] = []

    def stall_once(p: str, _h: BaseHTTPRequestHandler) -> bool:
        if p != path or stalled:
            return False
        stalled.append(p)
        release.wait(10)  # answers nothing: the connection is closed when this returns
        return True

    upstream.fault = stall_once
    proxy = make_proxy([upstream.url], upstream_timeout=0.5, retry_attempts=3)
    try:
        elapsed, status, body = timed(proxy, path)
    finally:
        release.set()
    assert status == 502
    assert b"no upstream answered within 0.5s" in body
    assert elapsed < 1.0, elapsed  # not 3 tries x 0.5s
    wait_for(lambda: cached(proxy, path).exists())  # the retry in the background filled the cache
    assert get(proxy, path)[::2] == (200, m.mod)
    assert upstream.count(path) == 2


def test_a_zip_that_has_started_to_arrive_is_waited_for_to_its_end(
        make_proxy: Callable[..., ProxyServer], upstream: Upstream) -> None:
    m = upstream.add(generate("example.com/big", "v1.0.0", size=150_000))
    upstream.rate = 150_000  # about a second for the whole zip
    proxy = make_proxy([upstream.url], upstream_timeout=0.4)
    elapsed, status, body = timed(proxy, "/example.com/big/@v/v1.0.0.zip")
    assert status == 200
    assert body == m.zip
    assert elapsed > 0.4, elapsed


def test_first_hanging_upstream_is_skipped_after_it_is_marked_down_then_used_again_when_back(
        make_proxy: Callable[..., ProxyServer], make_upstream: Callable[[], Upstream], clock: FakeClock) -> None:
    first, second = make_upstream(), make_upstream()
    for i in range(8):
        m = generate(f"example.com/fb{i}", "v1.0.0")
        first.add(m)
        second.add(m)
    first.gate = threading.Event()
    proxy = make_proxy([first.url, second.url], upstream_timeout=0.3, retry_attempts=3)

    elapsed, status, _ = timed(proxy, "/example.com/fb0/@v/v1.0.0.info")
    assert elapsed < 1.0, elapsed  # the first request waits, at most -upstream-timeout
    wait_for(lambda: is_down(proxy, first))  # its three tries found no answer
    wait_for(lambda: cached(proxy, "/example.com/fb0/@v/v1.0.0.info").exists())  # then the second served it

    for i in range(1, 6):
        path = f"/example.com/fb{i}/@v/v1.0.0.info"
        elapsed, status, _ = timed(proxy, path)
        assert status == 200
        assert elapsed < 0.25, elapsed  # straight to the second
        assert first.count(path) == 0

    first.gate.set()  # the first one recovers
    clock.advance(5)
    assert get(proxy, "/example.com/fb6/@v/v1.0.0.info")[0] == 200  # asking starts the probe
    wait_for(lambda: not is_down(proxy, first))
    path = "/example.com/fb7/@v/v1.0.0.info"
    assert get(proxy, path)[0] == 200
    assert first.count(path) == 1
    assert second.count(path) == 0


def test_a_miss_with_the_only_upstream_down_is_502_at_once(
        make_proxy: Callable[..., ProxyServer], upstream: Upstream) -> None:
    upstream.gate = threading.Event()
    proxy = make_proxy([upstream.url], upstream_timeout=0.3, retry_attempts=3)
    assert get(proxy, "/example.com/a/@v/v1.0.0.mod")[0] == 502
    wait_for(lambda: is_down(proxy, upstream))
    for kind in ("mod", "zip", "info"):
        path = f"/example.com/b/@v/v1.0.0.{kind}"
        elapsed, status, body = timed(proxy, path)
        assert status == 502
        assert b"every upstream is down" in body
        assert elapsed < 0.1, elapsed
        assert upstream.count(path) == 0


def test_state_changes_are_logged_once_and_exported(
        make_proxy: Callable[..., ProxyServer], upstream: Upstream, clock: FakeClock,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    upstream.add(generate("example.com/ok", "v1.0.0"))
    upstream.gate = threading.Event()
    proxy = make_proxy([upstream.url], upstream_timeout=0.2, retry_attempts=2)
    metric = f'goproxy_upstream_up{{upstream="{upstream.url}"}}'.encode()
    assert metric + b" 1\n" in get(proxy, "/metrics")[2]
    assert get(proxy, "/example.com/a/@v/v1.0.0.mod")[0] == 502
    wait_for(lambda: is_down(proxy, upstream))
    for i in range(10):
        assert get(proxy, f"/example.com/m{i}/@v/v1.0.0.mod")[0] == 502
    assert metric + b" 0\n" in get(proxy, "/metrics")[2]
    healthy, text = proxy.service.health()
    assert not healthy
    assert text.startswith(f"degraded: upstream down: {upstream.url} (")

    upstream.gate.set()
    clock.advance(5)
    get(proxy, "/metrics")  # a scrape starts the due probe
    wait_for(lambda: not is_down(proxy, upstream))
    assert metric + b" 1\n" in get(proxy, "/metrics")[2]
    assert proxy.service.health() == (True, "ok")
    for _ in range(5):
        assert get(proxy, "/example.com/ok/@v/v1.0.0.mod")[0] == 200
    messages = [r.getMessage() for r in caplog.records if r.name == "goproxy.health"]
    assert sum(f"upstream {upstream.url} is down" in m for m in messages) == 1, messages
    assert sum(f"upstream {upstream.url} is up again" in m for m in messages) == 1, messages


def test_5xx_marks_an_upstream_down_only_for_three_failed_requests_in_a_row(
        make_proxy: Callable[..., ProxyServer], upstream: Upstream) -> None:
    upstream.set("/example.com/broken/@v/v1.0.0.mod", 500, b"origin failed")
    proxy = make_proxy([upstream.url])
    for i in range(5):  # a 5xx for one module, between answers for others
        assert get(proxy, "/example.com/broken/@v/v1.0.0.mod")[0] == 502
        upstream.add(generate(f"example.com/fine{i}", "v1.0.0"))
        assert get(proxy, f"/example.com/fine{i}/@v/list")[0] == 200
    assert not is_down(proxy, upstream)
    for _ in range(3):  # three requests in a row that end in a 5xx
        assert get(proxy, "/example.com/broken/@v/v1.0.0.mod")[0] == 502
    assert is_down(proxy, upstream)


def test_a_remembered_not_found_for_a_list_is_answered_at_once_while_the_upstream_hangs(
        make_proxy: Callable[..., ProxyServer], upstream: Upstream, clock: FakeClock) -> None:
    path = "/example.com/nothing/@v/list"  # the go command asks for the lists of path prefixes, too
    upstream.set(path, 404, b"not found: example.com/nothing")
    proxy = make_proxy([upstream.url], upstream_timeout=5.0)
    assert get(proxy, path)[0] == 404
    upstream.gate = threading.Event()
    clock.advance(120)  # past -not-found-ttl
    elapsed, status, body = timed(proxy, path)
    assert (status, body) == (404, b"not found: example.com/nothing\n")
    assert elapsed < 0.1, elapsed
    wait_for(lambda: upstream.count(path) == 2)  # looked up again in the background
    upstream.gate.set()
    wait_for(lambda: not proxy.service.flights.in_flight(path.lstrip("/")))
    del upstream.routes[path]
    upstream.add(generate("example.com/nothing", "v1.0.0"))
    clock.advance(120)
    assert get(proxy, path)[0] == 404  # the stale not-found once more, while it is looked up
    wait_for(lambda: get(proxy, path)[:3:2] == (200, b"v1.0.0\n"))


@pytest.mark.parametrize("file_data,env,flags,want", [
    ({}, {}, {}, 86400.0),
    ({"max_stale": "2h"}, {}, {}, 7200.0),
    ({"max_stale": "2h"}, {"MAX_STALE": "30m"}, {}, 1800.0),
    ({}, {"MAX_STALE": "30m"}, {"max-stale": "0s"}, 0.0),
], ids=["default", "file", "env-over-file", "flag-over-env"])
def test_max_stale_is_read_from_every_layer(file_data: dict[str, str], env: dict[str, str],
                                            flags: dict[str, str], want: float) -> None:
    from goproxy.configload import build

    assert build(file_data, env, flags).max_stale == want
