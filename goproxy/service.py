"""The proxy's decisions: hit, miss or stale; immutable vs mutable; what to fetch and keep."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .access import Access
from .config import Config
from .download import Downloader
from .errors import NotFound, ProxyError, StorageError, TransientError, UpstreamError
from .gate import RuleGate
from .locks import KeyLocks
from .modpath import unescape_path
from .net.http import Response
from .pool import Spawner
from .request import Artifact, SumdbRequest
from .rules import Rules
from .singleflight import SingleFlight
from .storage.base import Blob, Fence, LeaseLost, Storage
from .sumdb.client import Sources, check_answer
from .sumdb.verify import Verifier
from .upstream import InvalidAnswer, Upstream, UpstreamDown, Upstreams
from .validate import InvalidContent, check_gomod, check_info, check_list, looks_like_html

log = logging.getLogger(__name__)

# Largest .info, .mod, list, @latest or checksum DB answer we keep.
MAX_SMALL_SIZE = 16 << 20
# How long a request waits for another request's fetch of the same artifact.
WAIT_TIMEOUT = 1800.0
# The most go.mod fetches started alongside .info misses at once; more .info misses fetch none.
MAX_PREFETCH = 8

IMMUTABLE_CACHE_CONTROL = "public, max-age=31536000, immutable"


def mutable_cache_control(ttl: float) -> str:
    """mutable_cache_control is the Cache-Control of list, @latest and query answers."""
    return f"public, max-age={int(ttl)}"


class FetchTimeout(UpstreamError):
    """No upstream answered within -upstream-timeout for a waiting client; status 502.

    The fetch goes on in the background, so the cache still fills for the next request.
    """


@dataclass
class Reply:
    """What to send: the content (a Blob), its headers, and where it came from."""

    content_type: str
    cache_control: str
    blob: Blob
    source: str  # "hit", "miss", "stale" or "local"

    def close(self) -> None:
        """Release the content's open file, if any."""
        self.blob.close()


class Service:
    """Service answers protocol requests from the cache, filling misses from the upstreams."""

    def __init__(self, config: Config, storage: Storage, upstreams: Upstreams, flights: SingleFlight[bool],
                 verifier: Verifier, downloader: Downloader, locks: KeyLocks,
                 on_use: Callable[[str], None] | None = None, clock: Callable[[], float] = time.time,
                 sumdbs: Callable[[str], Sources | None] = lambda name: None, control: Access | None = None
                 ) -> None:
        """Answer from storage, fetching misses through upstreams, one fetch per key (flights
        in this process, locks across the processes sharing storage).

        Zips are fetched by downloader; go.mod files are checked by verifier before they are
        kept. on_use, when given, is called with the cache key of every module artifact
        requested (before it is served); it must be cheap and never block. sumdbs(name) says
        where checksum database name is read from when it is served under /sumdb/ (None: not
        served here). control holds the module rules in force (read per request, so a reload
        applies at once): they decide module artifacts, cached ones too (gate.RuleGate).
        """
        self.config = config
        self.storage = storage
        self.upstreams = upstreams
        self.flights = flights
        self.verifier = verifier
        self.downloader = downloader
        self.locks = locks
        self.on_use = on_use
        self.clock = clock
        self.sumdbs = sumdbs
        self._not_found: dict[str, tuple[float, NotFound]] = {}
        self._nf_lock = threading.Lock()
        # Where each fetch under way stands: ("queued", since) while it waits for another process's
        # or replica's fetch of the key (its lock), ("fetching", since) once it asks upstream
        # itself, ("answered", since) once a zip's upstream started sending.
        self._progress: dict[str, tuple[str, float]] = {}
        self._progress_lock = threading.Lock()
        self._prefetching = threading.BoundedSemaphore(MAX_PREFETCH)
        self.control = control or Access()
        self._gate: RuleGate[Reply] = RuleGate(self._serve_artifact, self._serve_cached, _with_body)
        # Fetches run on threads of their own, reused: starting a thread per fetch cost about a
        # third of a loopback miss's time in the thread waiting for it.
        self._fetchers = Spawner("goproxy-fetch")

    def serve(self, req: Artifact | SumdbRequest) -> Reply:
        """serve returns the reply for a parsed request; raises a ProxyError subclass on failure."""
        deadline = self._deadline()
        if isinstance(req, SumdbRequest):
            sources = self.sumdbs(req.name)
            if sources is None:
                raise NotFound(f"checksum database {req.name} is not proxied here")
            if req.path == "supported":
                return self._supported(req, sources, deadline)
            if req.path.startswith("lookup/"):
                module = req.path[len("lookup/"):].rsplit("@", 1)[0]
                if self.upstreams.private_route(unescape_path(module)):
                    raise NotFound(f"{module} is a private module; it is not looked up in {req.name}")
            upstream_path = f"/sumdb/{req.name}/{req.path}"
            immutable = req.immutable
        else:
            immutable = req.immutable
            rules = self.ruled(req, immutable)
            if rules is not None:
                return self._gate.serve(req, rules)
            key = req.key
            upstream_path = "/" + key
            if self.on_use is not None:
                self.on_use(key)
        if immutable:
            return self._serve_immutable(req, upstream_path, deadline)
        return self._serve_mutable(req, upstream_path, deadline)

    def ruled(self, req: Artifact, immutable: bool) -> Rules | None:
        """Return the rules in force when they may change req's answer, else None.

        Anything but an allowed canonical version (immutable: req.immutable) may change: a
        denied or offline version, a list, @latest, a query. A path that answers without
        serve() (from memory) must ask this first and leave req to serve() unless it says None.
        """
        rules = self.control.rules
        if rules.rules and (not immutable or rules.decide(req.module, req.version).action != "allow"):
            return rules
        return None

    def _serve_artifact(self, req: Artifact) -> Reply:
        """Return the reply for a module artifact, fetching it when it is missing or stale (no rules)."""
        key = req.key
        if self.on_use is not None:
            self.on_use(key)
        deadline = self._deadline()
        if req.immutable:
            return self._serve_immutable(req, "/" + key, deadline)
        return self._serve_mutable(req, "/" + key, deadline)

    def _serve_cached(self, req: Artifact) -> Reply | None:
        """Return the cached reply for a module artifact, whatever its age, or None; never fetches."""
        if self.on_use is not None:
            self.on_use(req.key)
        control = IMMUTABLE_CACHE_CONTROL if req.immutable else mutable_cache_control(self.config.list_ttl)
        return self._open(req, control, "hit")

    def serve_kept(self, req: Artifact | SumdbRequest) -> Reply | None:
        """Return the reply for req when it is an immutable module artifact held in memory, else None.

        Never waits (no disk, lock or upstream), so the server's loop may call it; None means
        only serve() can answer req (the rules may change its answer, say). A reply here is the
        one serve() would give, its use recorded.
        """
        if not isinstance(req, Artifact) or not req.immutable or self.ruled(req, True) is not None:
            return None
        blob = self.storage.open_kept(req.key)
        if blob is None:
            return None
        if self.on_use is not None:
            self.on_use(req.key)
        return Reply(req.content_type, IMMUTABLE_CACHE_CONTROL, blob, "hit")

    def health(self) -> tuple[bool, str]:
        """Return (healthy, one-line text) for /health: degraded while an upstream is down.

        Asking starts the probes of down upstreams that are due.
        """
        health = self.upstreams.health
        if health is None:
            return True, "ok"
        health.probe_due()
        down = health.down()
        if not down:
            return True, "ok"
        now = self.clock()
        parts = [f"{d.name} (since {now - d.since:.0f}s: {d.reason}; next probe in {max(0.0, d.next_probe - now):.0f}s)"
                 for d in down]
        return False, "degraded: upstream down: " + "; ".join(parts)

    def _deadline(self) -> float:
        timeout = self.config.upstream_timeout
        return time.monotonic() + (timeout if timeout > 0 else WAIT_TIMEOUT)

    # Immutable artifacts: a hit, or wait (bounded) for the one fetch.

    def _serve_immutable(self, req: Artifact | SumdbRequest, upstream_path: str, deadline: float) -> Reply:
        reply = self._open(req, IMMUTABLE_CACHE_CONTROL, "hit")
        if reply is not None:
            return reply
        self._check_not_found(req.key)
        fetch = self._start(req, upstream_path)
        if isinstance(req, Artifact) and req.kind == "info":
            self._prefetch_mod(req)  # after the .info's own fetch started: the client waits for that one
        for attempt in range(3):  # cache cleanup may remove it between commit and open: fetch again
            if attempt:
                fetch = self._start(req, upstream_path)
            self._wait(req.key, fetch, deadline)
            reply = self._open(req, IMMUTABLE_CACHE_CONTROL, "miss")
            if reply is not None:
                return reply
        raise UpstreamError(f"{req.key} vanished from the cache right after it was fetched")

    def _prefetch_mod(self, info: Artifact) -> None:
        """Start fetching the go.mod of a canonical version whose .info missed, beside the .info.

        The go command asks for the .mod right after the .info; fetched at the same time, it is
        in the cache (or on its way, in the same single flight) when that request comes, which
        saves an upstream round trip per version. Failures are the .mod request's to report.
        """
        mod = Artifact("mod", info.module, info.version)
        key = mod.key
        if self.flights.in_flight(key) or self.storage.stat(key) is not None or not self._prefetching.acquire(False):
            return
        self._start(mod, "/" + key).add_done_callback(lambda _fut: self._prefetching.release())

    # Mutable artifacts: fresh hit; stale answered at once while it is refreshed; else wait.

    def _serve_mutable(self, req: Artifact | SumdbRequest, upstream_path: str, deadline: float) -> Reply:
        ttl = self.config.list_ttl
        control = mutable_cache_control(ttl)
        st = self.storage.stat(req.key)
        if st is not None:
            age = self.clock() - st.mtime
            if age < ttl:
                reply = self._open(req, control, "hit")
                if reply is not None:
                    return reply
            elif age <= self.config.max_stale:
                reply = self._open(req, control, "stale")
                if reply is not None:
                    self._refresh(req, upstream_path, age)
                    return reply
        self._check_not_found(req.key, lambda age: self._refresh(req, upstream_path, age))
        for _ in range(3):  # cache cleanup may remove it between commit and open: fetch again
            try:
                self._wait(req.key, self._start(req, upstream_path), deadline)
            except (NotFound, StorageError):
                raise
            except ProxyError as exc:
                reply = self._open(req, control, "stale")
                if reply is None:
                    raise
                log.warning("serving stale %s: %s", req.key, exc)
                return reply
            reply = self._open(req, control, "miss")
            if reply is not None:
                return reply
        raise UpstreamError(f"{req.key} vanished from the cache right after it was fetched")

    def _refresh(self, req: Artifact | SumdbRequest, upstream_path: str, age: float) -> None:
        """Start one background refresh of a stale answer, unless one runs or every upstream is down."""
        module = req.module if isinstance(req, Artifact) else None
        if self.flights.in_flight(req.key) or not self.upstreams.available(module):
            return
        log.debug("refreshing %s in the background (%.0fs old)", req.key, age)
        metric = self.upstreams.metrics.background_refreshes

        def done(fut: concurrent.futures.Future[bool]) -> None:
            metric.inc(result="ok" if fut.exception() is None else "failed")

        self._start(req, upstream_path).add_done_callback(done)

    # Fetching in the background, waited on with a deadline.

    def _start(self, req: Artifact | SumdbRequest, upstream_path: str) -> concurrent.futures.Future[bool]:
        """Start the fetch of req in a thread of its own (joining one under way); return its future.

        The fetch runs to its end whoever waits for it, so a client that gives up never stops
        the cache from filling.
        """
        return self._spawn(req.key, lambda: self._fetch(req, upstream_path))

    def _spawn(self, key: str, fn: Callable[[], bool]) -> concurrent.futures.Future[bool]:
        fut: concurrent.futures.Future[bool] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(self.flights.do(key, fn, WAIT_TIMEOUT)[0])
            except BaseException as exc:  # handed to whoever waits on the future
                fut.set_exception(exc)

        self._fetchers.submit(run)
        return fut

    def _wait(self, key: str, fut: concurrent.futures.Future[bool], deadline: float) -> bool:
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

    # The checksum database's "supported".

    def _supported(self, req: SumdbRequest, sources: Sources, deadline: float) -> Reply:
        """Answer 200 when the upstreams or the database itself can serve req.name, else 404."""
        ok = sources.known()
        if ok is None:
            try:
                ok = self._wait(req.key, self._spawn(req.key, sources.supported), deadline)
            except FetchTimeout:
                ok = False
        if not ok:
            raise NotFound(f"checksum database {req.name}: neither the upstreams nor {req.name} itself can be "
                           "reached from this proxy; ask it directly")
        return Reply("text/plain; charset=utf-8", "no-cache", Blob(0, 0.0, body=b""), "local")

    # Not-found memory.

    def _check_not_found(self, key: str, refresh: Callable[[float], None] | None = None) -> None:
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

    def _remember_not_found(self, key: str, exc: NotFound) -> None:
        if self.config.not_found_ttl <= 0:
            return
        now = self.clock()
        with self._nf_lock:
            if len(self._not_found) > 10000:
                keep = now - self.config.max_stale
                self._not_found = {k: v for k, v in self._not_found.items() if v[0] > keep}
            self._not_found[key] = (now + self.config.not_found_ttl, exc)

    def _forget_not_found(self, key: str) -> None:
        with self._nf_lock:
            self._not_found.pop(key, None)

    def _open(self, req: Artifact | SumdbRequest, cache_control: str, source: str) -> Reply | None:
        blob = self.storage.open(req.key, immutable=req.immutable)
        if blob is None:
            return None
        return Reply(req.content_type, cache_control, blob, source)

    # The fetch itself: once per key, across processes too.

    def _fetch(self, req: Artifact | SumdbRequest, upstream_path: str) -> bool:
        """Fill the cache for req from upstream; runs once per key at a time in this process.

        Across processes (or replicas) the key's lock makes it one fetch: a process that gets
        the lock after another committed what it came for fetches nothing.
        """
        try:
            return self._fetch_once(req, upstream_path)
        finally:
            with self._progress_lock:
                self._progress.pop(req.key, None)

    def _fetch_once(self, req: Artifact | SumdbRequest, upstream_path: str) -> bool:
        asked = self.clock()
        for attempt in (1, 2):
            self._set_progress(req.key, "queued")
            with self.locks.hold(req.key, WAIT_TIMEOUT) as lease:
                self._set_progress(req.key, "fetching")
                st = self.storage.stat(req.key)
                if st is not None and (req.immutable or st.mtime >= asked):
                    return True  # another process fetched it while this one waited for the lock
                try:
                    return self._fetch_locked(req, upstream_path, st is not None, lease.valid)
                except LeaseLost:
                    if attempt == 2:
                        raise
                    log.warning("lost the lock on %s while fetching it; waiting for the holder that took over",
                                req.key)
        raise AssertionError("unreachable")

    def _fetch_locked(self, req: Artifact | SumdbRequest, upstream_path: str, refresh: bool, fence: Fence) -> bool:
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
                self.storage.write(req.key, data, mtime=self.clock(), fence=fence)
                self._forget_not_found(req.key)
        except NotFound as exc:
            self._remember_not_found(req.key, exc)
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
        if not zip_artifact:  # fetch_zip logs its own line
            log.info("fetched %s in %.3fs", req.key, elapsed)
        return True

    def _fetch_small(self, req: Artifact | SumdbRequest, upstream_path: str) -> bytes:
        """Return a checked small answer for req: a module file from the upstreams, or a checksum
        database file from wherever that database is served; a go.mod is also checked against
        the checksum database."""
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


def _with_body(reply: Reply, body: bytes) -> Reply:
    """Return reply with body as its content (a filtered list, another version's .info)."""
    return Reply(reply.content_type, reply.cache_control, Blob(len(body), reply.blob.mtime, body=body), reply.source)


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
