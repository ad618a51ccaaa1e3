"""The page's figures shared between processes: boards in the shared region, postings, and how the
page merges every process's downloads, warnings, upstream health and history."""

from __future__ import annotations

import os
import threading

import pytest

from goproxy.health import Report
from goproxy.progress import Transfer
from goproxy.shm import BOARD_SIZE, DORMANT, LIVE, SLOT_SIZE, Region
from goproxy.status.board import (
    Board,
    Posting,
    decode,
    encode,
    merge_downloads,
    merge_health,
    merge_history,
    merge_warnings,
)
from goproxy.status.model import CacheCount, LogEntry, Minute
from tests.support.helpers import wait_for


def entry(t: float, message: str = "", level: str = "WARNING") -> LogEntry:
    return LogEntry(t, level, "goproxy.test", message or f"at {t}")


def minute(end: float, requests: int, hits: int = 0, lookups: int = 0) -> Minute:
    return Minute(end, requests, hits, lookups, hits / lookups if lookups else None)


POSTING = Posting(
    1000.0, 42,
    downloads=(Transfer('example.com/<b>"x"@v1.0.0', 500, 1000, 2.0, 250.0),),
    warnings=(entry(999.0, "upstream ünïcode failed"), entry(990.0)),
    upstreams={"https://a": Report("down", 900.0, "timed out", 995.0, (0.1, 0.3)),
               "https://b": Report("up", None, "", None)},
    history=(minute(960.0, 5, 3, 4), minute(1020.0, 0)),
    count=CacheCount(980.0, 0.5, 3, 7, 12345, 100.0, "example.com/a@v1.0.0", 2, 300))


def test_a_posting_survives_encoding() -> None:
    assert decode(encode(POSTING)) == POSTING


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b'{"at": 1}', b'{"at":1,"pid":2,"downloads":[[1]],'
                                  b'"warnings":[],"upstreams":{},"history":[]}'],
                         ids=["empty", "truncated", "not-an-object", "missing-fields", "short-download"])
def test_decode_refuses_what_is_no_posting(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode(data)


def test_a_board_holds_the_last_document_posted_and_nothing_before_a_post() -> None:
    region = Region(3)
    assert region.board(1) is None
    assert region.post(1, b"first")
    assert region.post(1, b"second, longer")
    assert region.post(2, b"other")
    assert region.board(1) == b"second, longer"
    assert region.board(2) == b"other"


def test_a_board_refuses_a_document_too_big_and_keeps_the_last() -> None:
    region = Region(2)
    assert region.post(1, b"kept")
    assert not region.post(1, b"x" * BOARD_SIZE)
    assert region.board(1) == b"kept"


def test_a_board_caught_half_written_reads_as_nothing() -> None:
    region = Region(2)
    assert region.post(1, b"a whole document")
    at = region.slots * SLOT_SIZE + BOARD_SIZE + 8  # board 1's first document byte, past its header
    region._mem[at:at + 1] = b"A"  # what a reader sees while a new post is being copied in
    assert region.board(1) is None


def test_boards_are_shared_with_a_forked_process() -> None:
    region = Region(2)
    pid = os.fork()
    if pid == 0:
        region.post(1, encode(POSTING))
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    data = region.board(1)
    assert data is not None
    assert decode(data) == POSTING


def board_with(region: Region, index: int, posting: Posting) -> Board:
    board = Board(region, index, lambda: posting)
    board.post()
    return board


def test_others_are_every_live_or_ended_process_but_this_one() -> None:
    region = Region(4)
    for i in (1, 2, 3):
        region.set_state(i, LIVE)
    mine = board_with(region, 1, Posting(1.0, 1))
    board_with(region, 2, Posting(2.0, 2))
    board_with(region, 3, Posting(3.0, 3))
    region.set_state(3, DORMANT)
    # slot 0 (the parent) is live and has posted nothing: left out
    assert sorted((p.pid, live) for p, live in mine.others()) == [(2, True), (3, False)]


def test_left_is_what_the_process_before_posted_on_this_slot() -> None:
    region = Region(2)
    board_with(region, 1, POSTING)
    region.set_state(1, DORMANT)
    successor = Board(region, 1, lambda: Posting(2000.0, 43))
    assert successor.left() == POSTING


def test_a_posting_that_does_not_fit_loses_downloads_first_then_the_oldest_warnings() -> None:
    region = Region(2)
    big = "x" * 400
    downloads = tuple(Transfer(f"example.com/{big}{i}@v1.0.0", i, 0, 1.0, 1.0) for i in range(1000))
    warnings = tuple(entry(5000.0 - i, big * 2) for i in range(20))
    Board(region, 1, lambda: Posting(1.0, 1, downloads=downloads, warnings=warnings)).post()
    data = region.board(1)
    assert data is not None
    got = decode(data)
    assert 0 < len(got.downloads) < len(downloads)
    assert got.downloads == downloads[: len(got.downloads)]
    assert got.warnings == warnings  # they fitted once the downloads were cut

    Board(region, 1, lambda: Posting(1.0, 1, warnings=tuple(entry(9000.0 - i, big * 300) for i in range(20)))).post()
    data = region.board(1)
    assert data is not None
    kept = decode(data).warnings
    assert 0 < len(kept) < 20
    assert kept[0].time == 9000.0  # the newest stay


def test_the_posting_thread_starts_at_the_first_change_and_posts_only_after_changes() -> None:
    region = Region(2)
    reads: list[int] = []
    posted = threading.Event()

    def gather() -> Posting:
        reads.append(1)
        posted.set()
        return Posting(float(len(reads)), 1)

    board = Board(region, 1, gather, interval=0.01)
    try:
        assert not any(t.name == "goproxy-board" for t in threading.enumerate())
        board.changed()
        assert posted.wait(10)
        wait_for(lambda: region.board(1) is not None)
        posted.clear()
        assert not posted.wait(0.2)  # a process whose figures stand still reads nothing
        assert len(reads) == 1
        board.changed()
        wait_for(lambda: len(reads) == 2)
    finally:
        board.stop()
    assert not any(t.name == "goproxy-board" for t in threading.enumerate())


def test_downloads_of_running_processes_are_brought_to_now_oldest_first() -> None:
    own = [Transfer("mine@v1", 10, 100, 1.0, 10.0)]
    other = Posting(100.0, 2, downloads=(Transfer("theirs@v1", 400, 1000, 4.0, 100.0),))
    ended = Posting(100.0, 3, downloads=(Transfer("dead@v1", 1, 10, 9.0, 1.0),))
    got = merge_downloads(104.0, own, [(other, True), (ended, False)])
    assert [d.name for d in got] == ["theirs@v1", "mine@v1"]
    assert got[0] == Transfer("theirs@v1", 400, 1000, 8.0, 50.0)  # 4 s later, nothing more arrived


def test_warnings_of_every_process_ended_ones_too_newest_first_twenty_at_most() -> None:
    own = [entry(50.0 + i) for i in range(10)][::-1]
    parent = Posting(0.0, 1, warnings=tuple(entry(100.0 + i, "worker 1 died") for i in range(5))[::-1])
    ended = Posting(0.0, 2, warnings=tuple(entry(10.0 + i) for i in range(10))[::-1])
    got = merge_warnings(own, [(parent, True), (ended, False)])
    assert len(got) == 20
    assert [w.time for w in got] == sorted((w.time for w in got), reverse=True)
    assert got[0] == entry(104.0, "worker 1 died")
    assert got[-1].time == 15.0


def test_health_is_down_when_any_running_process_has_it_down_with_the_latest_figures() -> None:
    own = {"https://a": Report("up", 100.0, "old failure", 50.0, (0.1, 0.2)),
           "https://b": Report("up", 10.0, "", None, (0.5,))}
    other = Posting(0.0, 2, upstreams={"https://a": Report("down", 90.0, "timed out", 120.0, (0.3, 0.4, 0.5)),
                                       "https://c": Report("up", 5.0, "", None)})
    ended = Posting(0.0, 3, upstreams={"https://b": Report("down", 500.0, "gone", 500.0, (9.0,))})
    got = merge_health(own, [(other, True), (ended, False)])
    assert got["https://a"] == Report("down", 100.0, "timed out", 120.0, (0.1, 0.2, 0.3, 0.4, 0.5))
    assert got["https://a"].median_latency == 0.3
    assert got["https://b"] == own["https://b"]  # an ended process's view is no longer true
    assert got["https://c"].state == "up"


def test_history_from_several_processes_counts_each_minute_once() -> None:
    # Every process samples the whole server's totals: the same minute from two is one minute.
    w1 = [minute(60.0, 10, 4, 5), minute(120.0, 7, 1, 2)]
    w2 = (minute(60.0, 10, 4, 5), minute(120.0, 7, 1, 2), minute(180.0, 3))
    restarted = (minute(120.2, 2, 0, 1), minute(180.1, 3))  # started within minute 120: saw part of it
    got = merge_history(w1, [(Posting(0.0, 2, history=w2), True), (Posting(0.0, 3, history=restarted), True)])
    assert [(m.end, m.requests) for m in got] == [(60.0, 10), (120.0, 7), (180.0, 3)]
    assert sum(m.requests for m in got) == 20
