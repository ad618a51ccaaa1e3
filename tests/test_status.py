"""The status data: counters from metrics, the per-minute history, the cache count, the warnings
ring, download snapshots and the collector, read with a hand-moved clock."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from goproxy.metrics import Metrics
from goproxy.progress import Progress, Transfer
from goproxy.shm import Region
from goproxy.status.cachecount import CacheCounter
from goproxy.status.logring import MESSAGE_MAX, WarningRing
from goproxy.status.model import CacheCount, CacheStatus, ChecksumStatus, Counters, Minute, to_json
from goproxy.status.source import CacheReport, ChecksumReport, StatusSource, UpstreamTable
from goproxy.status.traffic import History, merge_minutes, read_counters, read_totals, read_upstream_counts
from goproxy.storage.base import Stat
from goproxy.storage.disk import DiskStorage
from goproxy.storage.usage import UsageStore
from tests.support.helpers import FakeClock, wait_for


@pytest.mark.parametrize("hits,misses,stale,want", [
    (0, 0, 0, None),
    (3, 1, 0, 0.75),
    (0, 2, 0, 0.0),
    (1, 0, 1, 0.5),
], ids=["nothing", "three-of-four", "all-misses", "stale-is-not-a-hit"])
def test_hit_ratio_is_hits_over_artifact_requests(hits: int, misses: int, stale: int, want: float | None) -> None:
    assert Counters(hits=hits, misses=misses, stale=stale).hit_ratio == want


def test_counters_since_subtract_field_by_field_and_never_go_below_zero() -> None:
    later = Counters(requests=10, hits=4, misses=1, bytes_served=500, upstream_errors=2)
    earlier = Counters(requests=7, hits=1, misses=1, bytes_served=600)
    d = later.since(earlier)
    assert (d.requests, d.hits, d.misses, d.upstream_errors) == (3, 3, 0, 2)
    assert d.bytes_served == 0
    assert d.hit_ratio == 1.0


def test_read_counters_leaves_probes_scrapes_and_the_page_out_of_requests() -> None:
    m = Metrics()
    for endpoint in ("zip", "list", "sumdb", "other", "health", "metrics", "page", "status.json"):
        m.requests.inc(endpoint=endpoint, status="200")
    m.cache.inc(result="hit")
    m.cache.inc(2, result="miss")
    m.upstream_requests.inc(3, upstream="http://a")
    m.upstream_requests.inc(upstream="http://b")
    m.upstream_errors.inc(upstream="http://a", kind="transient")
    m.upstream_errors.inc(upstream="http://b", kind="other")
    m.bytes_served.inc(1234)
    c = read_counters(m)
    assert c.requests == 4
    assert (c.hits, c.misses, c.stale) == (1, 2, 0)
    assert (c.upstream_requests, c.upstream_errors, c.bytes_served) == (4, 2, 1234)


def two_workers() -> tuple[Metrics, Metrics]:
    """Return the metrics of two processes sharing one region, as two forked workers have."""
    region = Region(3)
    region.set_state(1, 1)
    region.set_state(2, 1)
    return Metrics(region, 1), Metrics(region, 2)


def test_read_counters_sums_every_process_of_the_server() -> None:
    w1, w2 = two_workers()
    for m, hits in ((w1, 3), (w2, 4)):
        m.requests.inc(hits, endpoint="zip", status="200")
        m.requests.inc(endpoint="page", status="200")
        m.cache.inc(hits, result="hit")
        m.bytes_served.inc(100 * hits)
        m.upstream_requests.inc(upstream="https://a")
        m.upstream_errors.inc(upstream="https://a", kind="transient")
    for m in (w1, w2):  # either process reads the same whole-server figures
        c = read_counters(m)
        assert (c.requests, c.hits, c.bytes_served) == (7, 7, 700)
        assert (c.upstream_requests, c.upstream_errors) == (2, 2)
        assert read_upstream_counts(m) == {"https://a": (2, 2)}


def test_read_totals_gives_label_values_as_they_were_set() -> None:
    m = Metrics()
    odd = 'https://u/a"b\\c\nd'
    m.upstream_requests.inc(2, upstream=odd)
    assert read_totals(m, frozenset({"goproxy_upstream_requests_total"})) == {
        "goproxy_upstream_requests_total": [({"upstream": odd}, 2.0)]}


def test_histories_of_two_workers_see_the_same_totals_and_merge_without_double_counting() -> None:
    w1, w2 = two_workers()
    clock = FakeClock(6000.0)
    h1, h2 = History(lambda: read_counters(w1), clock), History(lambda: read_counters(w2), clock)
    h1.sample()
    h2.sample()
    w1.requests.inc(5, endpoint="mod", status="200")
    w1.cache.inc(5, result="hit")
    w2.requests.inc(3, endpoint="mod", status="200")
    w2.cache.inc(3, result="miss")
    clock.advance(60)
    h1.sample()
    h2.sample()
    assert h1.minutes() == h2.minutes() == (Minute(6060.0, 8, 5, 8, 0.625),)
    assert merge_minutes(h1.minutes(), h2.minutes()) == (Minute(6060.0, 8, 5, 8, 0.625),)


def test_history_tells_of_each_point_stored() -> None:
    told: list[int] = []
    history = History(lambda: Counters(), FakeClock(), on_sample=lambda: told.append(1))
    history.sample()  # the baseline: no point
    assert told == []
    history.sample()
    history.sample()
    assert len(told) == 2


def test_history_first_sample_is_only_the_baseline_then_each_sample_stores_the_minute_since() -> None:
    clock = FakeClock(6000.0)
    totals = [Counters()]
    history = History(lambda: totals[0], clock)
    history.sample()
    assert history.minutes() == ()
    totals[0] = Counters(requests=5, hits=3, misses=1)
    clock.advance(60)
    history.sample()
    totals[0] = Counters(requests=6, hits=3, misses=1)
    clock.advance(60)
    history.sample()
    assert history.minutes() == (Minute(6060.0, 5, 3, 4, 0.75), Minute(6120.0, 1, 0, 0, None))


def test_history_keeps_the_last_hour_only() -> None:
    clock = FakeClock(0.0)
    n = [0]
    history = History(lambda: Counters(requests=n[0]), clock)
    history.sample()
    for i in range(90):
        n[0] += i
        clock.advance(60)
        history.sample()
    points = history.minutes()
    assert len(points) == 60
    assert points[0].end == 31 * 60.0
    assert points[-1] == Minute(90 * 60.0, 89, 0, 0, None)


def test_history_thread_samples_at_each_whole_interval_until_stopped() -> None:
    calls: list[int] = []
    counted = threading.Event()

    def read() -> Counters:
        calls.append(1)
        if len(calls) >= 3:
            counted.set()
        return Counters(requests=len(calls))

    history = History(read, interval=0.02)
    history.start()
    try:
        assert counted.wait(10)
    finally:
        history.stop()
    after = len(calls)
    assert len(history.minutes()) == after - 1
    assert not _running("goproxy-history")


def _running(name: str) -> bool:
    return any(t.name == name for t in threading.enumerate())


def _put(root: Path, key: str, size: int, mtime: float) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (mtime, mtime))


class CountingDisk(DiskStorage):
    """A disk cache that counts its full scans."""

    scans = 0

    def scan(self) -> Iterator[Stat]:
        self.scans += 1
        yield from super().scan()


def test_cache_count_finds_modules_versions_bytes_and_the_oldest_use(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    _put(root, "example.com/a/@v/v1.0.0.zip", 100, 1000)
    _put(root, "example.com/a/@v/v1.0.0.mod", 10, 1000)
    _put(root, "example.com/a/@v/v1.1.0.info", 5, 5000)
    _put(root, "example.com/a/@v/list", 7, 5000)
    _put(root, "example.com/b/@v/v0.1.0.mod", 20, 3000)
    _put(root, "sumdb/sum.golang.org/lookup/x@v1", 50, 1000)
    store = UsageStore(str(root), FakeClock(9000))
    store.adopt([("example.com/a", "v1.0.0", 8000.0)])  # used since its files were written
    try:
        count = CacheCounter(DiskStorage(str(root)), store.last_used, FakeClock(9000)).count()
    finally:
        store.close()
    assert (count.modules, count.versions, count.bytes) == (2, 3, 142)
    assert (count.oldest_use, count.oldest_name) == (3000.0, "example.com/b@v0.1.0")
    assert (count.sumdb_files, count.sumdb_bytes) == (1, 50)
    assert count.counted_at == 9000


def test_cache_count_runs_in_the_background_at_most_once_per_interval(tmp_path: Path) -> None:
    clock = FakeClock()
    _put(tmp_path, "example.com/a/@v/v1.0.0.mod", 10, clock.now)
    disk = CountingDisk(str(tmp_path))
    counter = CacheCounter(disk, dict, clock, interval=300, first_wait=10)
    first = counter.latest()
    assert first is not None
    assert first.versions == 1
    for _ in range(5):
        clock.advance(50)
        assert counter.latest() is first
    assert disk.scans == 1
    clock.advance(60)  # 310 s after the count: due again
    counter.latest()
    wait_for(lambda: counter.latest() is not first)
    assert disk.scans == 2


def test_a_newer_count_by_another_process_is_used_instead_of_counting_again(tmp_path: Path) -> None:
    clock = FakeClock()
    disk = CountingDisk(str(tmp_path))
    theirs: list[CacheCount] = []
    counted: list[int] = []
    counter = CacheCounter(disk, dict, clock, interval=300, first_wait=10, others=lambda: theirs,
                           on_count=lambda: counted.append(1))
    mine = counter.latest()
    assert mine is not None
    assert counter.mine() is mine
    assert (disk.scans, len(counted)) == (1, 1)
    clock.advance(200)
    theirs.append(dataclasses.replace(mine, counted_at=clock(), modules=42))  # another worker counted since
    clock.advance(200)  # 400 s after this process's count, 200 s after theirs: not due
    latest = counter.latest()
    assert latest is not None
    assert latest.modules == 42
    assert disk.scans == 1
    assert counter.mine() is mine


def test_cache_count_is_none_while_the_first_count_is_still_running(tmp_path: Path) -> None:
    gate = threading.Event()

    def slow_last_used() -> dict[tuple[str, str], float]:
        gate.wait(10)
        return {}

    counter = CacheCounter(DiskStorage(str(tmp_path)), slow_last_used, FakeClock(), first_wait=0)
    assert counter.latest() is None
    gate.set()
    wait_for(lambda: counter.latest() is not None)


def test_cache_count_failure_keeps_the_last_figures_and_logs_once(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    broken = [False]

    def last_used() -> dict[tuple[str, str], float]:
        if broken[0]:
            raise OSError("disk gone")
        return {}

    counter = CacheCounter(DiskStorage(str(tmp_path)), last_used, clock, interval=1, first_wait=10)
    first = counter.latest()
    broken[0] = True
    for _ in range(2):
        clock.advance(5)
        counter.latest()
        wait_for(lambda: not _running("goproxy-cache-count"))
    assert counter.latest() is first
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "cannot count the cache for the status page: disk gone"]


def test_only_the_first_look_waits_for_a_count(tmp_path: Path) -> None:
    gate = threading.Event()

    def stuck() -> dict[tuple[str, str], float]:  # a usage database that keeps the count waiting
        gate.wait(30)
        return {}

    counter = CacheCounter(DiskStorage(str(tmp_path)), stuck, FakeClock(), first_wait=30)
    first = threading.Thread(target=counter.latest, daemon=True)
    first.start()
    try:
        wait_for(lambda: _running("goproxy-cache-count"))
        assert counter.latest() is None  # at once: it does not wait again
        assert first.is_alive()
    finally:
        gate.set()
        first.join(10)


def _record(level: int, msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord("goproxy.upstream", level, __file__, 1, msg, args, info)


def test_warning_ring_keeps_the_last_twenty_warnings_and_errors_newest_first() -> None:
    ring = WarningRing()
    logger = logging.getLogger("test.status.ring")
    logger.addHandler(ring)
    try:
        logger.info("not kept")
        for i in range(25):
            logger.warning("warning %d", i)
        logger.error("the last one")
    finally:
        logger.removeHandler(ring)
    entries = ring.entries()
    assert len(entries) == 20
    assert [e.message for e in entries[:2]] == ["the last one", "warning 24"]
    assert entries[-1].message == "warning 6"
    assert {e.level for e in entries} == {"WARNING", "ERROR"}


def test_warning_ring_masks_passwords_and_keeps_one_line() -> None:
    ring = WarningRing()
    ring.handle(_record(logging.WARNING, "upstream %s failed:\n  %s", "https://bob:hunter2@proxy.corp:8443/x",
                        "retrying"))
    ring.handle(_record(logging.ERROR, "fetch failed", exc=ValueError("via http://u:s3cret@h/ boom")))
    got = [e.message for e in ring.entries()]
    assert got == ["fetch failed (ValueError: via http://u:***@h/ boom)",
                   "upstream https://bob:***@proxy.corp:8443/x failed: retrying"]
    assert "hunter2" not in json.dumps(got)


def test_warning_ring_cuts_long_messages() -> None:
    ring = WarningRing()
    ring.handle(_record(logging.WARNING, "x" * 5000))
    assert len(ring.entries()[0].message) == MESSAGE_MAX


def test_warning_ring_adopts_entries_as_older_than_its_own_and_tells_of_each_kept() -> None:
    told: list[int] = []
    ring = WarningRing(size=3, on_keep=lambda: told.append(1))
    ring.handle(_record(logging.WARNING, "mine"))
    assert len(told) == 1
    left = WarningRing()
    for text in ("a", "b", "c"):
        left.handle(_record(logging.ERROR, text))
    older = list(left.entries())  # c, b, a
    ring.adopt(older)
    assert [e.message for e in ring.entries()] == ["mine", "c", "b"]


def test_progress_tells_its_watchers_of_every_change() -> None:
    progress = Progress("off", None, FakeClock())
    told: list[int] = []
    progress.watch(lambda: told.append(1))
    bar = progress.start("example.com/a@v1.0.0")
    bar.set(10)
    bar.add(5)
    bar.close()
    assert len(told) == 4


def test_progress_snapshot_reads_each_bar_without_changing_it() -> None:
    clock = FakeClock(100.0)
    progress = Progress("off", None, clock)
    resumed = progress.start("example.com/a@v1.0.0")
    resumed.total = 1000
    resumed.set(400)  # already on disk: not part of the speed
    clock.advance(2)
    resumed.add(200)
    fresh = progress.start("example.com/b@v2.0.0")
    assert progress.snapshot() == [Transfer("example.com/a@v1.0.0", 600, 1000, 2.0, 100.0),
                                   Transfer("example.com/b@v2.0.0", 0, 0, 0.0, 0.0)]
    fresh.close()
    assert [t.name for t in progress.snapshot()] == ["example.com/a@v1.0.0"]
    assert resumed.done == 600


@dataclasses.dataclass
class Health:
    state: str
    last_success: float | None
    last_error: str
    last_error_at: float | None
    median_latency: float | None


def test_upstream_table_shows_health_as_not_available_until_a_source_gives_it() -> None:
    m = Metrics()
    m.upstream_requests.inc(4, upstream="https://a")
    m.upstream_errors.inc(upstream="https://a", kind="transient")
    names = [("https://a", ""), ("https://private", "corp.example.com")]
    plain = UpstreamTable(names, m)()
    assert [(u.name, u.route, u.requests, u.errors, u.state) for u in plain] == [
        ("https://a", "", 4, 1, None), ("https://private", "corp.example.com", 0, 0, None)]
    health = {"https://a": Health("down", 10.0, "timed out", 20.0, 0.25)}
    rows = UpstreamTable(names, m, lambda: health)()
    assert (rows[0].state, rows[0].last_success, rows[0].last_error, rows[0].last_error_at,
            rows[0].median_latency) == ("down", 10.0, "timed out", 20.0, 0.25)
    assert rows[1].state is None


def test_checksum_report_counts_verifications_and_says_when_verification_is_off() -> None:
    m, w2 = two_workers()
    m.verifications.inc(2, result="ok")
    w2.verifications.inc(result="ok")  # another worker's count is the server's too
    m.verifications.inc(result="failure")
    on = ChecksumReport("sum.golang.org", ["sum.golang.org"], m, lambda: 4242)()
    assert on == ChecksumStatus(True, "sum.golang.org", 4242, 3, 1, 0, ("sum.golang.org",))
    off = ChecksumReport("", [], m, lambda: 4242)()
    assert (off.verifying, off.tree_size) == (False, None)
    assert ChecksumReport("sum.golang.org", [], m)().tree_size is None


def _source(clock: FakeClock, ring: WarningRing, progress: Progress, tmp_path: Path) -> StatusSource:
    m = Metrics()
    m.requests.inc(endpoint="zip", status="200")
    m.cache.inc(result="hit")
    counter = CacheCounter(DiskStorage(str(tmp_path)), dict, clock)
    return StatusSource(version="9.9.9", started=clock() - 90, workers=None, clock=clock,
                        upstreams=UpstreamTable([("https://a", "")], m),
                        checksum=ChecksumReport("", ["sum.golang.org"], m),
                        cache=CacheReport(counter, 10 << 30, 0.0, 86400.0, lambda: clock() + 600),
                        traffic=lambda: read_counters(m), history=lambda: [Minute(clock(), 1, 1, 1, 1.0)],
                        downloads=progress.snapshot, warnings=ring.entries)


def test_status_source_collects_every_piece_and_serialises_to_json(tmp_path: Path) -> None:
    clock = FakeClock()
    ring = WarningRing()
    ring.handle(_record(logging.WARNING, "careful"))
    progress = Progress("off", None, clock)
    progress.start("example.com/a@v1.0.0")
    status = _source(clock, ring, progress, tmp_path).collect()
    assert (status.version, status.uptime, status.workers) == ("9.9.9", 90.0, None)
    assert isinstance(status.cache, CacheStatus)
    assert status.cache.next_cleanup == clock() + 600
    data = json.loads(to_json(status))
    assert set(data) == {"version", "now", "started", "uptime", "workers", "upstreams", "checksum", "cache",
                         "traffic", "history", "downloads", "warnings"}
    assert data["traffic"]["hit_ratio"] == 1.0
    assert data["downloads"][0]["name"] == "example.com/a@v1.0.0"
    assert data["warnings"][0]["message"] == "careful"
    assert data["upstreams"][0]["state"] is None
    assert data["cache"]["count"]["modules"] == 0
