"""Big zips: parallel Range downloads, one-stream fallbacks, the download queue, resume after kill -9."""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from goproxy.download import PARALLEL_MIN
from goproxy.progress import Bar
from goproxy.server import ProxyServer
from goproxy.sumdb import dirhash
from tests.support.helpers import get, wait_for
from tests.support.proc import Proc, start
from tests.support.upstream import Module, Upstream, generate

pytestmark = pytest.mark.timeout(120)

CHUNK = PARALLEL_MIN


def zip_path(m: Module) -> str:
    return f"/{m.path}/@v/{m.version}.zip"


def ranges(upstream: Upstream, path: str, since: int = 0) -> list[str | None]:
    """ranges lists the Range header of each request for path (None: no Range), in arrival order."""
    with upstream.lock:
        seen = upstream.seen_headers[since:]
    return [h.get("Range") for p, h in seen if p == path]


def chunk_ranges(size: int) -> set[str]:
    return {f"bytes={s}-{min(size, s + CHUNK) - 1}" for s in range(0, size, CHUNK)}


def test_big_zip_comes_in_parallel_chunks_over_several_connections(make_proxy: Callable[..., ProxyServer],
                                                                   upstream: Upstream) -> None:
    m = upstream.add(generate("example.com/big", "v1.0.0", size=3 * CHUNK + 1000))
    upstream.rate = 2 << 20  # per connection: parallel requests overlap, as on a slow link
    proxy = make_proxy([upstream.url], download_connections=4)
    status, _, body = get(proxy, zip_path(m))
    assert status == 200
    assert body == m.zip
    got = ranges(upstream, zip_path(m))
    assert got[0] == f"bytes=0-{CHUNK - 1}"
    assert len(got) == len(chunk_ranges(len(m.zip)))
    assert set(got) == chunk_ranges(len(m.zip))
    assert upstream.max_active >= 2
    later = [h for p, h in upstream.seen_headers if p == zip_path(m)][1:]
    assert all(h.get("If-Range") for h in later), "chunks ask with the upstream's validator"
    cache = Path(proxy.config.cache_dir)
    assert not list(cache.rglob("*.tmp"))
    assert not list(cache.rglob("*.state"))
    assert get(proxy, zip_path(m))[2] == m.zip
    assert upstream.count(zip_path(m)) == len(got)


def test_small_zip_is_one_ranged_request(make_proxy: Callable[..., ProxyServer], upstream: Upstream) -> None:
    m = upstream.add(generate("example.com/small", "v1.0.0"))
    proxy = make_proxy([upstream.url])
    assert get(proxy, zip_path(m))[2] == m.zip
    assert ranges(upstream, zip_path(m)) == [f"bytes=0-{CHUNK - 1}"]


def test_upstream_without_range_support_gets_one_stream(make_proxy: Callable[..., ProxyServer],
                                                        upstream: Upstream) -> None:
    m = upstream.add(generate("example.com/norange", "v1.0.0", size=2 * CHUNK))
    upstream.range_support = False
    proxy = make_proxy([upstream.url])
    assert get(proxy, zip_path(m))[2] == m.zip
    assert upstream.count(zip_path(m)) == 1


def test_one_connection_sends_no_range(make_proxy: Callable[..., ProxyServer], upstream: Upstream) -> None:
    m = upstream.add(generate("example.com/one", "v1.0.0", size=2 * CHUNK))
    proxy = make_proxy([upstream.url], download_connections=1)
    assert get(proxy, zip_path(m))[2] == m.zip
    assert ranges(upstream, zip_path(m)) == [None]


@pytest.mark.parametrize("content_range", ["bytes nonsense", "bytes 0-10/5", "", "bytes 0-524287/*"])
def test_malformed_content_range_falls_back_to_one_stream(make_proxy: Callable[..., ProxyServer], upstream: Upstream,
                                                          content_range: str) -> None:
    m = upstream.add(generate("example.com/badrange", "v1.0.0", size=2 * CHUNK))

    def bad_206(path: str, h: BaseHTTPRequestHandler) -> bool:
        if path != zip_path(m) or "Range" not in h.headers:
            return False
        part = m.zip[:CHUNK]
        h.send_response(206)
        if content_range:
            h.send_header("Content-Range", content_range)
        h.send_header("Content-Length", str(len(part)))
        h.end_headers()
        h.wfile.write(part)
        return True

    upstream.fault = bad_206
    proxy = make_proxy([upstream.url])
    assert get(proxy, zip_path(m))[2] == m.zip
    assert ranges(upstream, zip_path(m)) == [f"bytes=0-{CHUNK - 1}", None]


def test_a_chunk_cut_short_is_fetched_again_and_counted_once(make_proxy: Callable[..., ProxyServer],
                                                             upstream: Upstream,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    m = upstream.add(generate("example.com/cut", "v1.0.0", size=3 * CHUNK))
    path, cut = zip_path(m), threading.Event()

    def cut_chunk_1(p: str, h: BaseHTTPRequestHandler) -> bool:
        if p != path or h.headers.get("Range") != f"bytes={CHUNK}-{2 * CHUNK - 1}" or cut.is_set():
            return False
        cut.set()
        h.send_response(206)
        h.send_header("Content-Range", f"bytes {CHUNK}-{2 * CHUNK - 1}/{len(m.zip)}")
        h.send_header("Content-Length", str(CHUNK))
        h.end_headers()
        h.wfile.write(m.zip[CHUNK:CHUNK + CHUNK // 2])
        h.close_connection = True
        return True

    upstream.fault = cut_chunk_1
    proxy = make_proxy([upstream.url], download_connections=2)
    progress = proxy.service.downloader.progress
    bars: list[Bar] = []
    start = progress.start

    def recording_start(name: str) -> Bar:
        bars.append(start(name))
        return bars[-1]

    monkeypatch.setattr(progress, "start", recording_start)
    assert get(proxy, path)[2] == m.zip
    assert cut.is_set()
    assert ranges(upstream, path).count(f"bytes={CHUNK}-{2 * CHUNK - 1}") == 2
    assert [b.done for b in bars] == [len(m.zip)]


def test_zip_changed_upstream_mid_download_starts_over(make_proxy: Callable[..., ProxyServer], upstream: Upstream,
                                                       tmp_path: Path) -> None:
    old = generate("example.com/changed", "v1.0.0", size=2 * CHUNK)
    new = generate("example.com/changed", "v1.0.0", size=2 * CHUNK + 7)
    upstream.add(old)
    path = zip_path(old)
    first = threading.Event()

    def swap(p: str, h: BaseHTTPRequestHandler) -> bool:
        if p == path and not first.is_set():
            first.set()
            upstream.add(new)  # answered below from the old bytes; every later request sees new
            body = old.zip[:CHUNK]
            h.send_response(206)
            h.send_header("Content-Range", f"bytes 0-{CHUNK - 1}/{len(old.zip)}")
            h.send_header("ETag", '"old"')
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            return True
        return False

    upstream.fault = swap
    proxy = make_proxy([upstream.url])
    assert get(proxy, path)[2] == new.zip
    got = ranges(upstream, path)
    assert got[0] == f"bytes=0-{CHUNK - 1}", "a second start, from scratch"
    assert got.count(got[0]) == 2, "a second start, from scratch"


def test_downloads_beyond_the_limit_queue_in_arrival_order(make_proxy: Callable[..., ProxyServer], upstream: Upstream,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    mods = [upstream.add(generate(f"example.com/q{i}", "v1.0.0")) for i in range(3)]
    proxy = make_proxy([upstream.url], max_concurrent_downloads=1)
    upstream.gate = threading.Event()
    results: dict[int, bytes] = {}
    threads = []
    caplog.set_level(logging.INFO, logger="goproxy")
    for i, m in enumerate(mods):
        t = threading.Thread(target=lambda i=i, m=m: results.__setitem__(i, get(proxy, zip_path(m))[2]))
        t.start()
        threads.append(t)
        if i == 0:
            wait_for(lambda: upstream.count(zip_path(mods[0])) == 1)
        else:
            wait_for(lambda: proxy.metrics.downloads_queued.get() == i)  # noqa: B023 - wait_for calls it now
    assert proxy.metrics.downloads_active.get() == 1
    upstream.gate.set()
    for t in threads:
        t.join(30)
    assert [results[i] for i in range(3)] == [m.zip for m in mods]
    order = [p for p, _ in upstream.seen_headers if p.endswith(".zip")]
    assert order == [zip_path(m) for m in mods]
    assert sum("queued download of example.com/q" in r.getMessage() for r in caplog.records) == 2
    assert proxy.metrics.downloads_queued.get() == 0
    assert proxy.metrics.downloads_active.get() == 0


# Resume after the proxy is killed mid-download.


def _files(cache: Path, m: Module) -> Path:
    return cache / m.path / "@v" / f"{m.version}.zip"


def _proxy(procs: list[Proc], cache: Path, upstream: Upstream, *extra: str) -> tuple[Proc, int]:
    """Start a one-process proxy: a kill -9 of it stops its downloads where they are."""
    return start(procs, "-host", "127.0.0.1", "-port", "0", "-cache", str(cache), "-upstream", upstream.url,
                 "-progress", "off", "-workers", "1", *extra)


def _fetch_async(port: int, path: str) -> threading.Thread:
    def run() -> None:
        try:
            get(port, path)
        except OSError:
            pass  # the proxy is killed under it

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_two_processes_sharing_a_cache_download_a_zip_once(procs: list[Proc], upstream: Upstream,
                                                           tmp_path: Path) -> None:
    m = upstream.add(generate("example.com/shared", "v1.0.0", size=2 * CHUNK))
    cache = tmp_path / "cache"
    a, port_a = _proxy(procs, cache, upstream, "-download-connections", "1")
    b, port_b = _proxy(procs, cache, upstream, "-download-connections", "1")
    upstream.gate = threading.Event()
    got: dict[int, tuple[int, dict[str, str], bytes]] = {}

    def fetch(port: int) -> threading.Thread:
        t = threading.Thread(target=lambda: got.__setitem__(port, get(port, zip_path(m))), daemon=True)
        t.start()
        return t

    threads = [fetch(port_a)]
    wait_for(lambda: upstream.active == 1)  # a holds the zip's lock, its request held at the upstream
    threads.append(fetch(port_b))
    b.wait_line(r"waiting for another process('s fetch of| downloading) example\.com/shared(/@v/|@)v1\.0\.0")
    upstream.gate.set()
    for t in threads:
        t.join(30)
    assert got[port_a][2] == m.zip
    assert got[port_b][2] == m.zip
    assert upstream.count(zip_path(m)) == 1
    # b waited on the key's fetch lock and then found the zip committed: it fetched nothing.
    assert "fetched example.com/shared" not in b.text()
    assert sorted(p.name for p in _files(cache, m).parent.iterdir()) == ["v1.0.0.zip"]


def test_single_stream_resumes_from_its_part_after_kill_9(procs: list[Proc], upstream: Upstream,
                                                          tmp_path: Path) -> None:
    m = upstream.add(generate("example.com/resume1", "v1.0.0", size=6 * CHUNK))
    cache = tmp_path / "cache"
    final = _files(cache, m)
    part = final.with_name(final.name + ".part")
    upstream.rate = 1 << 20
    p, port = _proxy(procs, cache, upstream, "-download-connections", "1")
    _fetch_async(port, zip_path(m))
    wait_for(lambda: part.exists() and part.stat().st_size >= CHUNK, timeout=30)
    p.proc.send_signal(signal.SIGKILL)
    p.proc.wait(10)
    have = part.stat().st_size
    assert 0 < have < len(m.zip)
    assert not final.exists()
    upstream.rate = 0
    since = len(upstream.seen_headers)
    p, port = _proxy(procs, cache, upstream, "-download-connections", "1")
    assert get(port, zip_path(m))[2] == m.zip
    assert ranges(upstream, zip_path(m), since) == [f"bytes={have}-"]
    assert dirhash.hash_zip(str(final), f"{m.path}@{m.version}/") == _h1(m, tmp_path)
    assert not part.exists()


@pytest.mark.parametrize("extra", [0, 5])
def test_a_part_already_complete_is_committed_one_too_long_refetched(make_proxy: Callable[..., ProxyServer],
                                                                     upstream: Upstream, extra: int) -> None:
    m = upstream.add(generate(f"example.com/whole{extra}", "v1.0.0", size=CHUNK))
    proxy = make_proxy([upstream.url])
    final = _files(Path(proxy.config.cache_dir), m)
    final.parent.mkdir(parents=True)
    final.with_name(final.name + ".part").write_bytes(m.zip + b"x" * extra)  # killed just before the rename
    assert get(proxy, zip_path(m))[2] == m.zip
    have = len(m.zip) + extra
    got = ranges(upstream, zip_path(m))
    assert got == [f"bytes={have}-"] if not extra else got[:2] == [f"bytes={have}-", f"bytes=0-{CHUNK - 1}"]
    assert final.read_bytes() == m.zip


def test_parallel_download_resumes_missing_chunks_after_kill_9(procs: list[Proc], upstream: Upstream,
                                                               tmp_path: Path) -> None:
    m = upstream.add(generate("example.com/resume4", "v1.0.0", size=12 * CHUNK))
    cache = tmp_path / "cache"
    final = _files(cache, m)
    tmp, state_file = final.with_name(final.name + ".tmp"), final.with_name(final.name + ".state")
    upstream.rate = 1 << 20
    p, port = _proxy(procs, cache, upstream, "-download-connections", "2")

    def chunks_done() -> int:
        try:
            return len(json.loads(state_file.read_bytes())["done"])
        except (OSError, ValueError):
            return 0

    _fetch_async(port, zip_path(m))
    wait_for(lambda: chunks_done() >= 3, timeout=30)
    p.proc.send_signal(signal.SIGKILL)
    p.proc.wait(10)
    done = {int(i) for i in json.loads(state_file.read_bytes())["done"]}
    assert tmp.stat().st_size == len(m.zip)
    assert not final.exists()
    assert 3 <= len(done) < 12
    upstream.rate = 0
    since = len(upstream.seen_headers)
    p, port = _proxy(procs, cache, upstream, "-download-connections", "2")
    assert get(port, zip_path(m))[2] == m.zip
    spans = sorted(chunk_ranges(len(m.zip)), key=lambda r: int(r[6:].split("-")[0]))
    missing = [r for i, r in enumerate(spans) if i not in done]
    got = ranges(upstream, zip_path(m), since)
    assert sorted(got, key=str) == sorted(missing), "only the chunks the state file lacks are asked for"
    assert dirhash.hash_zip(str(final), f"{m.path}@{m.version}/") == _h1(m, tmp_path)
    assert not tmp.exists()
    assert not state_file.exists()


def _h1(m: Module, tmp_path: Path) -> str:
    """_h1 is the h1: hash of the upstream's true zip."""
    true = tmp_path / "true.zip"
    true.write_bytes(m.zip)
    return dirhash.hash_zip(str(true), f"{m.path}@{m.version}/")


def _plant(make_proxy: Callable[..., ProxyServer], upstream: Upstream, m: Module, state: object,
           tmp_bytes: bytes | None) -> tuple[Module, ProxyServer, Path]:
    upstream.add(m)
    proxy = make_proxy([upstream.url])
    final = _files(Path(proxy.config.cache_dir), m)
    final.parent.mkdir(parents=True, exist_ok=True)
    if tmp_bytes is not None:
        final.with_name(final.name + ".tmp").write_bytes(tmp_bytes)
    final.with_name(final.name + ".state").write_bytes(
        state if isinstance(state, bytes) else json.dumps(state).encode())
    return m, proxy, final


@pytest.mark.parametrize("case", ["wrong size", "garbage state", "chunk out of range", "no tmp"])
def test_mismatched_tmp_or_state_is_discarded(make_proxy: Callable[..., ProxyServer], upstream: Upstream, case: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    size = 2 * CHUNK + 1000  # the generated zip is a little bigger than its padding
    states: dict[str, tuple[object, bytes | None]] = {
        "wrong size": ({"size": 10, "chunk": CHUNK, "done": {}}, b"x" * 99),
        "garbage state": (b"\x00not json", b"x" * size),
        "chunk out of range": ({"size": 99, "chunk": 10, "done": {"50": "0" * 64}}, b"x" * 99),
        "no tmp": ({"size": 99, "chunk": 10, "done": {}}, None),
    }
    state, tmp_bytes = states[case]
    m = generate("example.com/bad" + case.replace(" ", ""), "v1.0.0", size=2 * CHUNK)
    m, proxy, final = _plant(make_proxy, upstream, m, state, tmp_bytes)
    assert get(proxy, zip_path(m))[2] == m.zip
    assert ranges(upstream, zip_path(m))[0] == f"bytes=0-{CHUNK - 1}", "started from scratch"
    assert final.read_bytes() == m.zip
    assert "discarding" in caplog.text or "no longer" in caplog.text


def test_damaged_chunk_in_tmp_is_fetched_again_never_committed(make_proxy: Callable[..., ProxyServer],
                                                               upstream: Upstream) -> None:
    m = generate("example.com/damaged", "v1.0.0", size=2 * CHUNK)
    size = len(m.zip)
    n = (size + CHUNK - 1) // CHUNK
    spans = [(i * CHUNK, min(size, (i + 1) * CHUNK)) for i in range(n)]
    done = {str(i): hashlib.sha256(m.zip[a:b]).hexdigest() for i, (a, b) in enumerate(spans)}
    tmp = bytearray(m.zip)
    tmp[CHUNK + 5] ^= 0xFF  # chunk 1 recorded as done, but its bytes on disk are damaged
    m, proxy, final = _plant(make_proxy, upstream, m, {"size": size, "chunk": CHUNK, "done": done},
                             bytes(tmp))
    assert get(proxy, zip_path(m))[2] == m.zip
    assert ranges(upstream, zip_path(m)) == [f"bytes={CHUNK}-{min(size, 2 * CHUNK) - 1}"]
