"""Filling the cache: one fetch per key, detached from whoever waits, its answer checked before it is kept."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

from .config import Config
from .download import Downloader
from .errors import NotFound, ProxyError, TransientError, UpstreamError
from .gomod import check_gomod
from .locks import KeyLocks
from .net.http import Response
from .pool import Spawner
from .request import Artifact, SumdbRequest
from .singleflight import SingleFlight
from .storage.base import Fence, LeaseLost, Storage
from .sumdb.client import Sources, check_answer
from .sumdb.verify import Verifier
from .upstream import InvalidAnswer, Upstream, UpstreamDown, Upstreams
from .validate import InvalidContent, check_info, check_list, looks_like_html

log = logging.getLogger(__name__)

# Largest .info, .mod, list, @latest or checksum DB answer we keep.
MAX_SMALL_SIZE = 16 << 20
# How long a request waits for another request's fetch of the same artifact.
WAIT_TIMEOUT = 1800.0


class FetchTimeout(UpstreamError):
    """No upstream answered within -upstream-timeout for a waiting client; status 502.

    The fetch goes on in the background, so the cache still fills for the next request.
    """


class NotFoundMemory:
    """The upstream not-founds of recent fetches, by cache key, kept for -not-found-ttl.

    Nothing is remembered while -not-found-ttl is 0. Past 10,000 keys, those that expired more
    than -max-stale ago are dropped. Safe for many threads.
    """

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self._not_found: dict[str, tuple[float, NotFound]] = {}
        self._nf_lock = threading.Lock()

    def check(self, key: str, refresh: Callable[[float], None] | None = None) -> None:
        """Raise NotFound while an upstream not-found of key is remembered.

        With refresh (for lists, @latest and queries), a not-found past -not-found-ttl but at
        most -max-stale old is still answered, at once, while refresh(age) looks again.
        """
        now = self.clock()
        with self._nf_lock:
            entry = self._not_found.get(key)
            if entry is None:
                return
            expires, exc = entry
            age = now - (expires - self.config.not_found_ttl)
            if expires <= now and (refresh is None or age > self.config.max_stale):
                del self._not_found[key]
                return
        if expires <= now and refresh is not None:
            refresh(age)
        # A fresh exception each time: re-raising one object would grow its traceback.
        raise NotFound(str(exc), status=exc.status)

    def remember(self, key: str, exc: NotFound) -> None:
        """Remember that the upstreams said exc (not found) for key."""
        if self.config.not_found_ttl <= 0:
            return
        now = self.clock()
        with self._nf_lock:
            if len(self._not_found) > 10000:
                keep = now - self.config.max_stale
                self._not_found = {k: v for k, v in self._not_found.items() if v[0] > keep}
            self._not_found[key] = (now + self.config.not_found_ttl, exc)

    def forget(self, key: str) -> None:
        """Forget any not-found of key (it was found)."""
        with self._nf_lock:
            self._not_found.pop(key, None)


class Fetcher:
    """Fill the cache from the upstreams: one fetch per key, in threads of its own.

    A fetch joins the one under way for its key in this process (flights) and holds the key's
    lock across the processes or replicas sharing storage (locks). Zips are fetched by
    downloader; every other answer is checked (check_content), a go.mod against verifier too,
    before it is written. sumdbs(name) says where checksum database name is read from. The
    upstream not-founds it meets go into not_found.
    """

    def __init__(self, config: Config, storage: Storage, upstreams: Upstreams, flights: SingleFlight[bool],
                 verifier: Verifier, downloader: Downloader, locks: KeyLocks, clock: Callable[[], float],
                 sumdbs: Callable[[str], Sources | None], not_found: NotFoundMemory) -> None:
        self.config = config
        self.storage = storage
        self.upstreams = upstreams
        self.flights = flights
        self.verifier = verifier
        self.downloader = downloader
        self.locks = locks
        self.clock = clock
        self.sumdbs = sumdbs
        self.not_found = not_found
        # Where each fetch under way stands: ("queued", since) while it waits for another process's
        # or replica's fetch of the key (its lock), ("fetching", since) once it asks upstream
        # itself, ("answered", since) once a zip's upstream started sending.
        self._progress: dict[str, tuple[str, float]] = {}
        self._progress_lock = threading.Lock()
        # Fetches run on threads of their own, reused: starting a thread per fetch cost about a
        # third of a loopback miss's time in the thread waiting for it.
        self._fetchers = Spawner("goproxy-fetch")
        # Answers handed to their client before they were committed, still being committed.
        self._committing = 0
        self._committed = threading.Condition()

    def start(self, req: Artifact | SumdbRequest, upstream_path: str,
              early: bool = False) -> concurrent.futures.Future[bool | bytes]:
        """Start the fetch of req in a thread of its own (joining one under way); return its future.

        The fetch runs to its end whoever waits for it, so a client that gives up never stops
        the cache from filling. With early, an immutable answer other than a zip that this call's
        fetch gets is the future's result as soon as it has passed its checks, before it is
        committed to the cache (its fsync is off the client's path); otherwise the result is
        True once the artifact is in the cache.
        """
        fut: concurrent.futures.Future[bool | bytes] = concurrent.futures.Future()

        def answer(data: bytes) -> None:  # runs in the fetch's thread, as spawn's setting of fut does
            if not fut.done():  # a fetch that lost its lock and fetched again has answered already
                fut.set_result(data)

        early = early and req.immutable
        return self.spawn(req.key, lambda: self._fetch(req, upstream_path, answer if early else None), fut)

    def spawn(self, key: str, fn: Callable[[], bool],
              fut: concurrent.futures.Future[bool | bytes] | None = None) -> concurrent.futures.Future[bool | bytes]:
        """Run fn in a thread of its own as the single flight of key; return fut (a new future when None).

        fut gets fn's result (or a joined flight's) unless fn gave it one already.
        """
        if fut is None:
            fut = concurrent.futures.Future()
        done = fut

        def run() -> None:
            try:
                result = self.flights.do(key, fn, WAIT_TIMEOUT)[0]
            except BaseException as exc:  # handed to whoever waits on the future
                if not done.done():
                    done.set_exception(exc)
                elif not isinstance(exc, ProxyError):  # its client has the answer; the fetch logs ProxyErrors
                    log.exception("keeping %s failed after its answer was given", key)
                return
            if not done.done():
                done.set_result(result)

        self._fetchers.submit(run)
        return fut

    def wait(self, key: str, fut: concurrent.futures.Future[bool | bytes], deadline: float) -> bool | bytes:
        """Return the fetch's result, waiting until deadline.

        The upstreams get -upstream-timeout from the moment this process asks them: time spent
        waiting for another process's or replica's fetch of the key (which takes its result) does
        not count, and a zip download under way is waited for to its end. Raises what the fetch
        raised, or FetchTimeout.
        """
        limit = self.config.upstream_timeout if self.config.upstream_timeout > 0 else WAIT_TIMEOUT
        while True:
            try:
                return fut.result(timeout=max(0.0, deadline - time.monotonic()))
            except concurrent.futures.TimeoutError:
                pass
            with self._progress_lock:
                state, since = self._progress.get(key, ("fetching", 0.0))
            now = time.monotonic()
            if state == "answered":
                try:
                    return fut.result(timeout=WAIT_TIMEOUT)
                except concurrent.futures.TimeoutError:
                    raise UpstreamError(f"timed out after {WAIT_TIMEOUT:g}s waiting for the fetch of {key}") from None
            if state == "queued":
                deadline = now + max(limit, 0.05)
            elif since + limit > now:
                deadline = since + limit
            else:
                raise FetchTimeout(f"{key}: no upstream answered within {self.config.upstream_timeout:g}s "
                                   "(-upstream-timeout); the fetch goes on in the background")

    def _set_progress(self, key: str, state: str) -> None:
        with self._progress_lock:
            self._progress[key] = (state, time.monotonic())

    # The fetch itself: once per key, across processes too.

    def _fetch(self, req: Artifact | SumdbRequest, upstream_path: str,
               answer: Callable[[bytes], None] | None = None) -> bool:
        """Fill the cache for req from upstream; runs once per key at a time in this process.

        Across processes (or replicas) the key's lock makes it one fetch: a process that gets
        the lock after another committed what it came for fetches nothing. answer, when given,
        gets a small answer once it passed its checks, before it is committed.
        """
        try:
            return self._fetch_once(req, upstream_path, answer)
        finally:
            with self._progress_lock:
                self._progress.pop(req.key, None)

    def _fetch_once(self, req: Artifact | SumdbRequest, upstream_path: str,
                    answer: Callable[[bytes], None] | None) -> bool:
        asked = self.clock()
        for attempt in (1, 2):
            self._set_progress(req.key, "queued")
            with self.locks.hold(req.key, WAIT_TIMEOUT) as lease:
                self._set_progress(req.key, "fetching")
                st = self.storage.stat(req.key)
                if st is not None and (req.immutable or st.mtime >= asked):
                    return True  # another process fetched it while this one waited for the lock
                try:
                    return self._fetch_locked(req, upstream_path, st is not None, lease.valid, answer)
                except LeaseLost:
                    if attempt == 2:
                        raise
                    log.warning("lost the lock on %s while fetching it; waiting for the holder that took over",
                                req.key)
        raise AssertionError("unreachable")

    def _fetch_locked(self, req: Artifact | SumdbRequest, upstream_path: str, refresh: bool, fence: Fence,
                      answer: Callable[[bytes], None] | None) -> bool:
        # debug: the fetch's outcome is logged at info ("fetched", or why not) and the request's
        # access line says [CACHE MISS]; a record costs a wake-up of the log writer thread.
        log.debug("[CACHE %s] %s", "REFRESH" if refresh else "MISS", req.key)
        started = time.monotonic()
        zip_artifact = isinstance(req, Artifact) and req.kind == "zip"
        try:
            if isinstance(req, Artifact) and req.kind == "zip":
                self.downloader.fetch(req, upstream_path, fence,
                                     on_answer=lambda: self._set_progress(req.key, "answered"))
            else:
                data = self._fetch_small(req, upstream_path)
                with self._answered(answer, data):
                    self.storage.write(req.key, data, mtime=self.clock(), fence=fence)
                self.not_found.forget(req.key)
        except NotFound as exc:
            self.not_found.remember(req.key, exc)
            log.info("not found upstream: %s (%d %s)", req.key, exc.status, exc)
            raise
        except (UpstreamDown, InvalidAnswer) as exc:  # logged where it was found out
            log.debug("fetch %s failed: %s", req.key, exc)
            raise
        except ProxyError as exc:
            log.error("fetch %s failed: %s", req.key, exc)
            raise
        elapsed = time.monotonic() - started
        kind = req.kind if isinstance(req, Artifact) else "sumdb"
        self.upstreams.metrics.upstream_seconds.observe(elapsed, kind=kind)
        if not zip_artifact:  # the download logs its own line (Progress.finished)
            log.info("fetched %s in %.3fs", req.key, elapsed)
        return True

    @contextlib.contextmanager
    def _answered(self, answer: Callable[[bytes], None] | None, data: bytes) -> Iterator[None]:
        """Hand data to answer (when given) and count the commit that follows as one settle() waits for.

        Once the client has its answer, a failure to keep it is only logged.
        """
        if answer is None:
            yield
            return
        with self._committed:
            self._committing += 1
        try:
            answer(data)
            yield
        finally:
            with self._committed:
                self._committing -= 1
                self._committed.notify_all()

    def settle(self, timeout: float) -> bool:
        """Wait up to timeout for the answers already given to be committed; return True when they are."""
        with self._committed:
            return self._committed.wait_for(lambda: self._committing == 0, timeout)

    def _fetch_small(self, req: Artifact | SumdbRequest, upstream_path: str) -> bytes:
        """Return a checked small answer for req (any artifact but a zip).

        A module file comes from the upstreams, a checksum database file from wherever that
        database is served. The answer must pass check_content (else InvalidAnswer from its
        upstream); a go.mod is also checked against the checksum database.
        """
        def consume(resp: Response, up: Upstream) -> bytes:
            data = _read_small(resp)
            try:
                check_content(req, data)
            except ValueError as exc:
                reason = "html" if looks_like_html("", data[:512]) else "invalid"
                raise InvalidAnswer(up.name, resp.url, str(exc), reason) from None
            if isinstance(req, Artifact) and req.kind == "mod":
                self.verifier.check_mod(req.module, req.version, data)
            return data

        if isinstance(req, SumdbRequest):
            sources = self.sumdbs(req.name)
            assert sources is not None  # serve() only fetches databases it serves
            return sources.fetch(req.path, consume)
        return self.upstreams.fetch(upstream_path, consume, req.module)


def check_content(req: Artifact | SumdbRequest, data: bytes) -> None:
    """Check that data can be the content of req, any artifact but a zip (validate.check_zip).

    An HTML page is never content; a go.mod must parse and name req's module, a list hold
    versions, .info and @latest be version JSON (the requested version for a canonical .info),
    a checksum database file have its format (sumdb.client.check_answer). Raises ValueError
    (validate.InvalidContent, tlog.TlogError) naming the problem.
    """
    if looks_like_html("", data[:512]):
        raise InvalidContent(f"an HTML page (starts with {data[:15]!r})")
    if isinstance(req, SumdbRequest):
        check_answer(req.path, data)
    elif req.kind == "mod":
        check_gomod(data, req.module)
    elif req.kind == "list":
        check_list(data)
    elif req.kind in ("info", "latest"):
        check_info(data, req.version if req.kind == "info" and req.immutable else None)


def _read_small(resp: Response) -> bytes:
    length = resp.header("Content-Length")
    data = resp.read_all(limit=MAX_SMALL_SIZE)
    if length.isdigit() and int(length) != len(data):
        raise TransientError(f"{resp.url}: got {len(data)} of {length} bytes")
    return data
