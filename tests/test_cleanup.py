"""Cache cleanup: age and LRU size eviction on an injected clock, what is never removed, and
cleanup racing 20 clients through a real proxy."""

from __future__ import annotations

import http.client
import math
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from goproxy.configload import build
from goproxy.errors import ConfigError
from goproxy.server import ProxyServer
from goproxy.storage.cleanup import Cleaner, Housekeeping, Report, next_pass_at
from goproxy.storage.disk import DiskStorage
from goproxy.storage.usage import DB_NAME, UsageStore
from tests.support.helpers import FakeClock, background_job, get, wait_for
from tests.support.upstream import Module, Upstream, generate


def fetch(proxy: ProxyServer, m: Module, exts: tuple[str, ...] = ("info", "mod", "zip")) -> None:
    for ext in exts:
        status, _, body = get(proxy, f"/{m.path}/@v/{m.version}.{ext}")
        assert status == 200
        assert body == getattr(m, ext)


def names(report: Report) -> list[str]:
    return [r.name for r in report.removed]


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def test_versions_unused_past_the_age_go_newer_stay_used_ones_are_refreshed(
        make_proxy: Callable[..., ProxyServer], upstream: Upstream, clock: FakeClock) -> None:
    a = upstream.add(generate("example.com/a", "v1.0.0"))
    b = upstream.add(generate("example.com/b", "v1.0.0"))
    proxy = make_proxy([upstream.url], max_cache_age=3600.0)
    cleaner = background_job(proxy, Housekeeping).cleaner
    root = Path(proxy.config.cache_dir)
    fetch(proxy, a)
    assert get(proxy, "/example.com/a/@v/list")[0] == 200
    clock.advance(1800)
    fetch(proxy, b)
    clock.advance(1801)  # a unused for 3601s, b for 1801s
    report = cleaner.run()
    assert sorted(names(report)) == ["example.com/a (list)", "example.com/a@v1.0.0"]
    assert {r.reason for r in report.removed} == {"age"}
    assert not (root / "example.com" / "a").exists()  # emptied directories are pruned
    assert sorted(p.name for p in (root / "example.com/b/@v").iterdir()) == ["v1.0.0.info", "v1.0.0.mod",
                                                                              "v1.0.0.zip"]
    assert get(proxy, "/example.com/b/@v/v1.0.0.zip")[2] == b.zip  # a use refreshes the version
    clock.advance(3000)  # b last used 3000s ago (4801s after its fetch)
    assert names(cleaner.run()) == []
    assert (root / "example.com/b/@v/v1.0.0.zip").exists()
    clock.advance(601)
    assert names(cleaner.run()) == ["example.com/b@v1.0.0"]
    assert not (root / "example.com").exists()
    assert background_job(proxy, Housekeeping).store.last_used() == {}
    # A removed version is a clean miss: fetched again, same bytes.
    assert get(proxy, "/example.com/a/@v/v1.0.0.zip")[2] == a.zip
    assert upstream.count("/example.com/a/@v/v1.0.0.zip") == 2


def test_size_limit_evicts_least_recently_used_first(make_proxy: Callable[..., ProxyServer], upstream: Upstream,
                                                     clock: FakeClock) -> None:
    mods = [upstream.add(generate(f"example.com/m{i}", "v1.0.0", size=20_000)) for i in range(4)]
    proxy = make_proxy([upstream.url], max_cache_size=10 << 30)
    cleaner = background_job(proxy, Housekeeping).cleaner
    root = Path(proxy.config.cache_dir)
    for m in mods:
        fetch(proxy, m)
        clock.advance(10)
    fetch(proxy, mods[0], ("zip",))  # m0 becomes the most recently used
    clock.advance(10)
    assert names(cleaner.run()) == []  # under the limit: nothing goes
    order: list[str] = []
    for _ in range(2):
        cleaner.max_size = disk_bytes(root) - 1
        report = cleaner.run()
        assert [r.reason for r in report.removed] == ["size"]
        order += names(report)
        assert disk_bytes(root) <= cleaner.max_size
    cleaner.max_size = 1
    order += names(cleaner.run())
    assert order == ["example.com/m1@v1.0.0", "example.com/m2@v1.0.0", "example.com/m3@v1.0.0",
                     "example.com/m0@v1.0.0"]
    assert disk_bytes(root) == 0


def test_a_module_list_goes_with_its_last_version(make_proxy: Callable[..., ProxyServer], upstream: Upstream,
                                                  clock: FakeClock) -> None:
    m = upstream.add(generate("example.com/l", "v1.0.0", size=10_000))
    proxy = make_proxy([upstream.url], max_cache_size=1000)
    root = Path(proxy.config.cache_dir)
    fetch(proxy, m)
    clock.advance(60)
    assert get(proxy, "/example.com/l/@v/list")[0] == 200
    assert get(proxy, "/example.com/l/@latest")[0] == 200
    clock.advance(1)
    report = background_job(proxy, Housekeeping).cleaner.run()
    assert [(r.name, r.reason) for r in report.removed] == [("example.com/l@v1.0.0", "size"),
                                                           ("example.com/l (list)", "no version left")]
    assert not (root / "example.com").exists()


def test_files_missing_from_the_database_are_adopted_with_their_mtime(make_proxy: Callable[..., ProxyServer],
                                                                      upstream: Upstream, clock: FakeClock) -> None:
    proxy = make_proxy([upstream.url], max_cache_age=3600.0)
    root = Path(proxy.config.cache_dir)
    for mod, age in (("old", 7200), ("new", 600)):
        d = root / "example.com" / mod / "@v"
        d.mkdir(parents=True)
        for ext in ("info", "mod", "zip"):
            (d / f"v1.0.0.{ext}").write_bytes(b"x")
            os.utime(d / f"v1.0.0.{ext}", (clock.now - age, clock.now - age))
    store = background_job(proxy, Housekeeping).store
    report = background_job(proxy, Housekeeping).cleaner.run()
    assert report.adopted == 2
    assert names(report) == ["example.com/old@v1.0.0"]
    assert store.last_used() == {("example.com/new", "v1.0.0"): clock.now - 600}


def test_versions_being_downloaded_or_with_fresh_partial_files_are_skipped(
        make_proxy: Callable[..., ProxyServer], upstream: Upstream, clock: FakeClock) -> None:
    a = upstream.add(generate("example.com/a", "v1.0.0"))
    b = upstream.add(generate("example.com/b", "v1.0.0"))
    proxy = make_proxy([upstream.url], max_cache_age=3600.0)
    hk = background_job(proxy, Housekeeping)
    root = Path(proxy.config.cache_dir)
    fetch(proxy, a, ("info",))
    fetch(proxy, b, ("info",))
    clock.advance(7200)
    # a: its zip is being fetched right now (a flight under way); b: a download left a fresh .part.
    release = threading.Event()
    flight = threading.Thread(target=proxy.service.flights.do,
                              args=("example.com/a/@v/v1.0.0.zip", lambda: release.wait(30)))
    flight.start()
    wait_for(lambda: proxy.service.flights.in_flight("example.com/a/@v/v1.0.0.zip"))
    part = root / "example.com/b/@v/v1.0.0.zip.0123abcd.part"
    part.write_bytes(b"partial")  # written now, by the real clock: fresh
    try:
        report = hk.cleaner.run()
    finally:
        release.set()
        flight.join()
    assert names(report) == []
    assert report.skipped == 2
    assert (root / "example.com/a/@v/v1.0.0.info").exists()
    assert part.exists()
    # Once the flight is over and the partial file is a day old (a crash left it), both go.
    os.utime(part, (clock.now - 2 * 86400, clock.now - 2 * 86400))
    assert sorted(names(hk.cleaner.run())) == ["example.com/a@v1.0.0", "example.com/b@v1.0.0"]
    assert not (root / "example.com").exists()


def test_sumdb_answers_are_never_removed(make_proxy: Callable[..., ProxyServer], upstream: Upstream,
                                         clock: FakeClock) -> None:
    proxy = make_proxy([upstream.url], max_cache_age=1.0, max_cache_size=1)
    root = Path(proxy.config.cache_dir)
    tile = root / "sumdb/sum.golang.org/tile/8/0/000"
    tile.parent.mkdir(parents=True)
    tile.write_bytes(b"t" * 8192)
    os.utime(tile, (0, 0))
    clock.advance(86400)
    report = background_job(proxy, Housekeeping).cleaner.run()
    assert report.removed == []
    assert tile.exists()
    metrics = get(proxy, "/metrics")[2].decode()
    assert "goproxy_cache_bytes 8192" in metrics
    assert "goproxy_cache_entries 1" in metrics


def test_cleanup_racing_20_clients_never_truncates_or_corrupts_a_response(
        make_proxy: Callable[..., ProxyServer], upstream: Upstream, clock: FakeClock) -> None:
    # Many versions, so that between two passes some are not asked for and really go.
    mods = [upstream.add(generate(f"example.com/s{i}", "v1.0.0", size=70_000 + 1_000 * i)) for i in range(20)]
    expected = {f"/{m.path}/@v/{m.version}.{ext}": getattr(m, ext) for m in mods for ext in ("info", "mod", "zip")}
    expected.update({f"/{m.path}/@v/list": b"v1.0.0\n" for m in mods})
    paths = sorted(expected)
    proxy = make_proxy([upstream.url], max_cache_age=60.0, max_cache_size=2_000_000)
    cleaner = background_job(proxy, Housekeeping).cleaner
    errors: list[str] = []
    served = [0] * 20
    stop = threading.Event()
    # Rounds: every client makes one request while a cleanup pass runs, so passes race requests,
    # and each round leaves versions nobody asked for, which the next pass removes.
    rounds = threading.Barrier(21, timeout=60)

    def client(n: int) -> None:
        r = random.Random(n)
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
        while True:
            rounds.wait()
            if stop.is_set():
                break
            path = r.choice(paths)
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                errors.append(f"{path}: {exc!r}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
            else:
                if resp.status != 200 or body != expected[path]:
                    errors.append(f"{path}: {resp.status} {len(body)} bytes {body[:100]!r}")
                served[n] += 1
            rounds.wait()
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(20)]
    for t in threads:
        t.start()
    passes = removed = 0
    while passes < 60 or min(served) < 30 or removed < 200:
        assert passes < 1000, (removed, served)
        rounds.wait()  # the clients' requests go out now...
        removed += len(cleaner.run().removed)  # ...while this pass runs
        passes += 1
        rounds.wait()
        clock.advance(61)  # everything not used in this round is now past the age
    stop.set()
    rounds.wait()
    for t in threads:
        t.join(30)
    assert errors == []
    # Removed versions came back as clean misses: fetched from upstream again.
    assert max(upstream.count(f"/{m.path}/@v/{m.version}.zip") for m in mods) >= 2
    root = Path(proxy.config.cache_dir)
    assert not [p for p in root.rglob("*") if p.name.endswith((".del", ".part"))]
    for f in root.rglob("*"):
        if f.is_file() and not f.relative_to(root).parts[0].startswith("."):
            assert f.read_bytes() == expected["/" + f.relative_to(root).as_posix()], f


@pytest.mark.parametrize("env,field,want", [
    ({"MAX_CACHE_SIZE": "20GB"}, "max_cache_size", 20 * 1000**3),
    ({"MAX_CACHE_SIZE": "512MiB"}, "max_cache_size", 512 << 20),
    ({"MAX_CACHE_AGE": "720h"}, "max_cache_age", 720 * 3600.0),
    ({"CLEANUP_INTERVAL": "1h"}, "cleanup_interval", 3600.0),
    ({}, "max_cache_age", 0.0),
    ({}, "max_cache_size", 0),
    ({}, "cleanup_interval", 86400.0),
])
def test_cache_lifecycle_options(env: dict[str, str], field: str, want: float) -> None:
    assert getattr(build({}, env, {}), field) == want


def test_a_zero_cleanup_interval_is_refused() -> None:
    with pytest.raises(ConfigError, match="cleanup-interval"):
        build({}, {}, {"cleanup-interval": "0s"})
    with pytest.raises(ConfigError, match="max_cache_size"):
        build({"max_cache_size": "lots"}, {}, {})


def test_no_usage_database_appears_before_a_use(make_proxy: Callable[..., ProxyServer], upstream: Upstream) -> None:
    proxy = make_proxy([upstream.url])
    background_job(proxy, Housekeeping).store.close()
    assert not (Path(proxy.config.cache_dir) / DB_NAME).exists()


@pytest.mark.parametrize("now,interval,want", [
    (0.0, 60.0, 60.0),
    (59.9, 60.0, 60.0),
    (60.0, 60.0, 120.0),
    (1_700_000_123.0, 86400.0, 1_700_006_400.0),  # the next 00:00 UTC
], ids=["start", "just-before", "on-a-pass", "daily"])
def test_passes_are_due_at_whole_multiples_of_the_interval(now: float, interval: float, want: float) -> None:
    assert next_pass_at(now, interval) == want


class Recording(Cleaner):
    """A cleaner whose passes only record when they began."""

    def __init__(self, root: Path, clock: Callable[[], float]) -> None:
        self.began: list[float] = []
        self.second = threading.Event()
        super().__init__(DiskStorage(str(root)), UsageStore(str(root), clock), clock)

    def run(self, dry_run: bool = False) -> Report:
        self.began.append(self.clock())
        if len(self.began) == 2:
            self.second.set()
        return Report()


def test_after_the_pass_at_start_the_next_runs_on_the_grid_and_next_pass_says_when(tmp_path: Path) -> None:
    base = time.time()
    offset = math.floor(base) + 0.8 - base  # the clock reads 0.8 s into a second: the grid point is 0.2 s away

    def clock() -> float:
        return time.time() + offset

    cleaner = Recording(tmp_path, clock)
    assert cleaner.next_pass() is None  # no thread: no pass is due
    cleaner.start(1.0)
    try:
        grid = math.floor(clock()) + 1.0
        assert cleaner.next_pass() == grid
        assert cleaner.second.wait(10)
    finally:
        cleaner.stop()
        cleaner.store.close()
    assert cleaner.next_pass() is None
    assert grid <= cleaner.began[1] < grid + 0.5  # not a whole interval after the first pass
