"""Hits held in memory are answered by the server's loop itself, never waiting for a handler thread."""

from __future__ import annotations

import dataclasses
import http.client
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from goproxy.app import build
from goproxy.config import Config
from goproxy.errors import StorageError
from goproxy.request import parse_request
from goproxy.server import ProxyServer
from tests.support.helpers import get, wait_for
from tests.support.upstream import Upstream, generate

A_INFO = "/example.com/a/@v/v1.0.0.info"
B_MOD = "/example.com/b/@v/v1.0.0.mod"


def test_a_hit_held_in_memory_is_answered_while_the_only_handler_thread_waits_on_an_upstream(
        make_proxy: Callable[..., ProxyServer], upstream: Upstream) -> None:
    upstream.add(generate("example.com/a", "v1.0.0"))
    b = upstream.add(generate("example.com/b", "v1.0.0"))
    proxy = make_proxy([upstream.url], handler_threads=1)
    assert get(proxy, B_MOD)[2] == b.mod
    assert proxy.service.settle(10)  # committed
    assert get(proxy, B_MOD)[2] == b.mod  # now held in memory
    upstream.gate = threading.Event()  # every upstream answer waits
    stuck: list[int] = []
    miss = threading.Thread(target=lambda: stuck.append(get(proxy, A_INFO)[0]), daemon=True)
    miss.start()
    try:
        wait_for(lambda: upstream.total() > 2)  # the miss reached the upstream: the one handler thread waits
        started = time.monotonic()
        status, headers, body = get(proxy, B_MOD)
        assert time.monotonic() - started < 1.0
        assert (status, body) == (200, b.mod)
        assert headers["cache-control"] == "public, max-age=31536000, immutable"
        assert not stuck  # the miss is still waiting
    finally:
        upstream.gate.set()
        miss.join(10)
    assert stuck == [200]


def test_the_loops_answer_is_the_handler_threads_answer_counted_and_logged(
        make_proxy: Callable[..., ProxyServer], upstream: Upstream, caplog: pytest.LogCaptureFixture) -> None:
    b = upstream.add(generate("example.com/b", "v1.0.0"))
    caplog.set_level(logging.INFO)
    proxy = make_proxy([upstream.url])
    answers = []
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    for method in ("GET", "GET", "GET", "HEAD"):  # a miss, a hit read from disk, then two from memory
        conn.request(method, B_MOD)
        resp = conn.getresponse()
        answers.append((resp.status, sorted(resp.getheaders()), resp.read()))
        assert proxy.service.settle(10)  # the miss's answer came before its commit
    conn.close()
    assert answers[0][2] == b.mod
    assert answers[1] == answers[0]
    assert answers[2] == answers[0]
    assert answers[3] == (200, answers[0][1], b"")
    wait_for(lambda: proxy.metrics.cache.get(result="hit") == 3)  # counted once sent, last of each exchange's counts
    assert proxy.metrics.requests.get(endpoint="mod", status="200") == 4

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "goproxy.access"]

    wait_for(lambda: len(lines()) == 4)
    assert [line.split(" ")[0:2] for line in lines()] == [["[CACHE", "MISS]"]] + [["[CACHE", "HIT]"]] * 3


def test_errors_found_before_any_lookup_are_answered_as_before(make_proxy: Callable[..., ProxyServer],
                                                               upstream: Upstream) -> None:
    proxy = make_proxy([upstream.url])
    assert get(proxy, "/example.com/%2561/@v/v1.0.0.info")[0] == 400
    status, headers, _ = get(proxy, B_MOD, method="POST")
    assert status == 405
    assert headers["allow"] == "GET, HEAD"
    assert get(proxy, "/health")[2] == b"ok\n"
    assert get(proxy, "/metrics")[0] == 200  # a route: answered by a handler thread


def service_with_uses(tmp_path: Path, upstream: Upstream, uses: list[str]) -> Any:
    config = dataclasses.replace(Config(), cache_dir=str(tmp_path / "cache"), upstreams=(upstream.url,))
    return build(config, on_use=uses.append).service


def test_serve_kept_answers_only_immutable_artifacts_held_in_memory_and_records_their_use(
        tmp_path: Path, upstream: Upstream) -> None:
    b = upstream.add(generate("example.com/b", "v1.0.0"))
    uses: list[str] = []
    service = service_with_uses(tmp_path, upstream, uses)
    mod = parse_request(B_MOD)
    assert service.serve_kept(mod) is None  # not fetched yet: only serve() can answer
    assert uses == []
    service.serve(mod).close()
    reply = service.serve_kept(mod)
    assert reply is not None
    assert (reply.blob.read(), reply.source, reply.content_type) == (b.mod, "hit", "text/plain; charset=utf-8")
    assert uses == ["example.com/b/@v/v1.0.0.mod", "example.com/b/@v/v1.0.0.mod"]
    listing = parse_request("/example.com/b/@v/list")
    service.serve(listing).close()
    assert service.serve_kept(listing) is None  # mutable: its age decides, on disk
    assert service.serve_kept(parse_request("/sumdb/sum.golang.org/supported")) is None


def test_a_fetched_mod_is_answered_while_it_is_committed_and_stop_waits_for_the_commit(
        make_proxy: Callable[..., ProxyServer], upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    b = upstream.add(generate("example.com/b", "v1.0.0"))
    proxy = make_proxy([upstream.url])
    storage = proxy.service.storage
    key = B_MOD.lstrip("/")
    committing, release, real = threading.Event(), threading.Event(), storage.write

    def held(k: str, data: bytes, mtime: float | None = None, fence: Any = None) -> None:
        committing.set()
        assert release.wait(30)
        real(k, data, mtime, fence)

    monkeypatch.setattr(storage, "write", held)
    assert get(proxy, B_MOD)[2] == b.mod  # answered while its commit is held
    assert committing.is_set()
    assert storage.stat(key) is None
    assert not proxy.service.settle(0)
    stopper = threading.Thread(target=proxy.stop, daemon=True)
    stopper.start()
    wait_for(lambda: proxy._done.is_set())  # the loop has finished; stop() now waits for the commit
    assert stopper.is_alive()
    release.set()
    stopper.join(10)
    assert not stopper.is_alive()
    st = storage.stat(key)
    assert st is not None
    assert st.size == len(b.mod)


def test_a_fetch_that_cannot_be_kept_still_answers_its_client(
        make_proxy: Callable[..., ProxyServer], upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    b = upstream.add(generate("example.com/b", "v1.0.0"))
    proxy = make_proxy([upstream.url])
    storage = proxy.service.storage

    def full(k: str, data: bytes, mtime: float | None = None, fence: Any = None) -> None:
        raise StorageError(f"cannot write {k} to the cache: No space left on device")

    monkeypatch.setattr(storage, "write", full)
    assert get(proxy, B_MOD)[2] == b.mod
    assert proxy.service.settle(10)
    assert storage.stat(B_MOD.lstrip("/")) is None
    monkeypatch.undo()
    assert get(proxy, B_MOD)[2] == b.mod  # fetched again, and kept this time
    assert proxy.service.settle(10)
    assert storage.stat(B_MOD.lstrip("/")) is not None


def test_an_unexpected_failure_to_keep_an_answer_already_given_is_logged(
        make_proxy: Callable[..., ProxyServer], upstream: Upstream, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    b = upstream.add(generate("example.com/b", "v1.0.0"))
    proxy = make_proxy([upstream.url])

    def broken(k: str, data: bytes, mtime: float | None = None, fence: Any = None) -> None:
        raise RuntimeError("storage bug")

    monkeypatch.setattr(proxy.service.storage, "write", broken)
    assert get(proxy, B_MOD)[2] == b.mod
    assert proxy.service.settle(10)
    wait_for(lambda: any("keeping example.com/b/@v/v1.0.0.mod failed" in r.getMessage() for r in caplog.records))
