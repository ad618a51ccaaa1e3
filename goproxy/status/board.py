"""The page's per-process figures, shared between the server's processes through the shared region.

Each process posts its downloads, warnings, upstream health, history and cache count on its
board of the region; any one reads them all.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..health import Report
from ..progress import Transfer
from ..shm import DORMANT, LIVE, Region
from .logring import RING_SIZE
from .model import CacheCount, LogEntry, Minute
from .traffic import merge_minutes

log = logging.getLogger(__name__)

# The least time, in seconds, between two posts of one process: downloads move many times a
# second, the page is read every few seconds.
POST_INTERVAL = 0.25


@dataclass(frozen=True)
class Posting:
    """What one process posted: its own figures, read at one moment (at, Unix time)."""

    at: float
    pid: int
    downloads: tuple[Transfer, ...] = ()
    warnings: tuple[LogEntry, ...] = ()  # newest first
    upstreams: Mapping[str, Report] = field(default_factory=dict)
    history: tuple[Minute, ...] = ()
    count: CacheCount | None = None  # the newest count of the cache it made


def encode(p: Posting) -> bytes:
    """Return p as the compact JSON document a board holds."""
    return json.dumps({
        "at": p.at, "pid": p.pid,
        "downloads": [dataclasses.astuple(d) for d in p.downloads],
        "warnings": [dataclasses.astuple(w) for w in p.warnings],
        "upstreams": {n: dataclasses.astuple(r) for n, r in p.upstreams.items()},
        "history": [[m.end, m.requests, m.hits, m.lookups] for m in p.history],
        "count": None if p.count is None else dataclasses.astuple(p.count),
    }, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def decode(data: bytes) -> Posting:
    """Return the Posting in a board's document; raise ValueError when it is none."""
    try:
        d = json.loads(data)
        return Posting(
            float(d["at"]), int(d["pid"]),
            tuple(Transfer(str(n), int(done), int(total), float(e), float(s))
                  for n, done, total, e, s in d["downloads"]),
            tuple(LogEntry(float(t), str(lv), str(lg), str(m)) for t, lv, lg, m in d["warnings"]),
            {str(n): Report(str(st), ok, str(err), err_at, tuple(float(x) for x in lat))
             for n, (st, ok, err, err_at, lat) in d["upstreams"].items()},
            tuple(Minute(float(e), int(r), int(h), int(lk), h / lk if lk else None) for e, r, h, lk in d["history"]),
            None if d["count"] is None else CacheCount(*d["count"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"not a posting: {exc}") from None


class Board:
    """Post this process's figures on board index of region, for the others to read.

    gather reads the figures now. changed() asks for a post: the first call starts a daemon
    thread that posts at most every interval seconds, and only after a change, so a process
    whose downloads, warnings, health and history stand still costs nothing. A posting that
    does not fit loses downloads, then its oldest warnings and history points, until it does.
    """

    def __init__(self, region: Region, index: int, gather: Callable[[], Posting],
                 interval: float = POST_INTERVAL) -> None:
        self.region = region
        self.index = index
        self.gather = gather
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def changed(self) -> None:
        """Ask for a post of the figures (within interval); cheap enough for every change."""
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stop.is_set():
                    self._thread = threading.Thread(target=self._run, name="goproxy-board", daemon=True)
                    self._thread.start()
        self._wake.set()

    def post(self) -> None:
        """Post the figures now."""
        p = self.gather()
        while not self.region.post(self.index, encode(p)):
            if p.downloads:
                p = dataclasses.replace(p, downloads=p.downloads[: len(p.downloads) // 2])
            elif p.warnings or p.history:
                p = dataclasses.replace(p, warnings=p.warnings[:-1], history=p.history[1:])
            else:
                log.warning("the page's figures of this process do not fit its board")
                return

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.post()
            except Exception:  # the page's figures must never take a worker down
                log.exception("cannot post the page's figures")
            self._stop.wait(self.interval)

    def stop(self) -> None:
        """End the posting thread, if one started, and wait for it."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    def left(self) -> Posting | None:
        """Return what is on this process's own board: what the process before it in the slot posted."""
        return self._read(self.index)

    def others(self) -> list[tuple[Posting, bool]]:
        """Return the other processes' postings, each with whether its process still runs."""
        found = []
        for i in range(self.region.slots):
            state = self.region.state(i)
            if i != self.index and state in (LIVE, DORMANT):
                p = self._read(i)
                if p is not None:
                    found.append((p, state == LIVE))
        return found

    def _read(self, index: int) -> Posting | None:
        data = self.region.board(index)
        if data is None:
            return None
        try:
            return decode(data)
        except ValueError as exc:
            log.debug("board %d: %s", index, exc)
            return None


def merge_downloads(now: float, own: Sequence[Transfer], others: Sequence[tuple[Posting, bool]]
                    ) -> tuple[Transfer, ...]:
    """Return every running process's downloads, oldest first, the others' brought to now.

    A download that posted nothing since has been running longer, at a lower average speed.
    """
    found = list(own)
    for p, live in others:
        if not live:
            continue
        late = max(now - p.at, 0.0)
        for d in p.downloads:
            elapsed = d.elapsed + late
            speed = d.speed * d.elapsed / elapsed if elapsed else 0.0
            found.append(dataclasses.replace(d, elapsed=elapsed, speed=speed))
    return tuple(sorted(found, key=lambda d: -d.elapsed))


def merge_warnings(own: Sequence[LogEntry], others: Sequence[tuple[Posting, bool]], size: int = RING_SIZE
                   ) -> tuple[LogEntry, ...]:
    """Return the newest size warnings of every process, those that ended too, newest first."""
    every = [*own, *(w for p, _ in others for w in p.warnings)]
    return tuple(sorted(every, key=lambda w: -w.time)[:size])


def merge_health(own: Mapping[str, Report], others: Sequence[tuple[Posting, bool]]) -> dict[str, Report]:
    """Return each upstream's health across the running processes.

    An upstream is down when any has it down; it keeps the latest success and error of any,
    and the latencies of all.
    """
    merged = dict(own)
    for p, live in others:
        if not live:
            continue
        for name, r in p.upstreams.items():
            have = merged.get(name)
            if have is None:
                merged[name] = r
                continue
            error = r if (r.last_error_at or 0.0) > (have.last_error_at or 0.0) else have
            merged[name] = Report("down" if "down" in (have.state, r.state) else "up",
                                  max((t for t in (have.last_success, r.last_success) if t is not None), default=None),
                                  error.last_error, error.last_error_at, have.latencies + r.latencies)
    return merged


def merge_history(own: Sequence[Minute], others: Sequence[tuple[Posting, bool]]) -> tuple[Minute, ...]:
    """Return the per-minute history from this process's and the others' (ended ones too)."""
    return merge_minutes(own, *(p.history for p, _ in others))


def gather(clock: Callable[[], float], downloads: Callable[[], Sequence[Transfer]],
           warnings: Callable[[], Sequence[LogEntry]], upstreams: Callable[[], Mapping[str, Report]],
           history: Callable[[], Sequence[Minute]], count: Callable[[], CacheCount | None]) -> Callable[[], Posting]:
    """Return a function reading this process's figures as a Posting."""
    def read() -> Posting:
        return Posting(clock(), os.getpid(), tuple(downloads()), tuple(warnings()), dict(upstreams()),
                       tuple(history()), count())

    return read
