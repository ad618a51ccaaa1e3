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
from .errors import NotFound, ProxyError, StorageError, UpstreamError
from .fetch import WAIT_TIMEOUT, Fetcher, FetchTimeout, NotFoundMemory
from .gate import RuleGate
from .locks import KeyLocks
from .modpath import unescape_path
from .request import Artifact, SumdbRequest
from .rules import Rules
from .singleflight import SingleFlight
from .storage.base import Blob, Storage
from .sumdb.client import Sources
from .sumdb.verify import Verifier
from .upstream import Upstreams

log = logging.getLogger(__name__)

# The most go.mod fetches started alongside .info misses at once; more .info misses fetch none.
MAX_PREFETCH = 8

IMMUTABLE_CACHE_CONTROL = "public, max-age=31536000, immutable"


def mutable_cache_control(ttl: float) -> str:
    """Return the Cache-Control of list, @latest and query answers: public for ttl seconds."""
    return f"public, max-age={int(ttl)}"


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
    """The proxy's answers to protocol requests: from the cache, filling misses from the upstreams."""

    def __init__(self, config: Config, storage: Storage, upstreams: Upstreams, flights: SingleFlight[bool],
                 verifier: Verifier, downloader: Downloader, locks: KeyLocks,
                 on_use: Callable[[str], None] | None = None, clock: Callable[[], float] = time.time,
                 sumdbs: Callable[[str], Sources | None] = lambda name: None, control: Access | None = None,
                 early_answers: bool = False) -> None:
        """Answer from storage, fetching misses through upstreams, one fetch per key.

        One fetch per key means flights in this process, locks across the processes sharing storage
        (fetch.Fetcher runs them). Zips are fetched by downloader; go.mod files are checked by verifier
        before they are kept. on_use, when given, is called with the cache key of every module artifact
        requested (before it is served); it must be cheap and never block. sumdbs(name) says where
        checksum database name is read from when it is served under /sumdb/ (None: not served here).
        control holds the module rules in force (read per request, so a reload applies at once): they
        decide module artifacts, cached ones too (gate.RuleGate). With early_answers, a fetched
        immutable answer other than a zip is given to its client once checked, while it is being
        committed (the server's choice: its fsync is off the client's path; settle() waits for them).
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
        self.early_answers = early_answers
        self._not_found = NotFoundMemory(config, clock)
        self._fetches = Fetcher(config, storage, upstreams, flights, verifier, downloader, locks, clock, sumdbs,
                                self._not_found)
        self._prefetching = threading.BoundedSemaphore(MAX_PREFETCH)
        self.control = control or Access()
        self._gate: RuleGate[Reply] = RuleGate(self._serve_artifact, self._serve_cached, _with_body)

    def serve(self, req: Artifact | SumdbRequest) -> Reply:
        """Return the reply for a parsed request; raise a ProxyError subclass on failure."""
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

    def settle(self, timeout: float) -> bool:
        """Wait up to timeout for answers given before their commit to be committed; True when they are."""
        return self._fetches.settle(timeout)

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
        self._not_found.check(req.key)
        fetch = self._fetches.start(req, upstream_path, early=self.early_answers)
        if isinstance(req, Artifact) and req.kind == "info":
            self._prefetch_mod(req)  # after the .info's own fetch started: the client waits for that one
        for attempt in range(3):  # cache cleanup may remove it between commit and open: fetch again
            if attempt:
                fetch = self._fetches.start(req, upstream_path, early=self.early_answers)
            got = self._fetches.wait(req.key, fetch, deadline)
            if isinstance(got, bytes):  # checked, and being committed while the client gets it
                return Reply(req.content_type, IMMUTABLE_CACHE_CONTROL, Blob(len(got), self.clock(), body=got), "miss")
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
        self._fetches.start(mod, "/" + key).add_done_callback(lambda _fut: self._prefetching.release())

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
        self._not_found.check(req.key, lambda age: self._refresh(req, upstream_path, age))
        for _ in range(3):  # cache cleanup may remove it between commit and open: fetch again
            try:
                self._fetches.wait(req.key, self._fetches.start(req, upstream_path), deadline)
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

        def done(fut: concurrent.futures.Future[bool | bytes]) -> None:
            metric.inc(result="ok" if fut.exception() is None else "failed")

        self._fetches.start(req, upstream_path).add_done_callback(done)

    # The checksum database's "supported".

    def _supported(self, req: SumdbRequest, sources: Sources, deadline: float) -> Reply:
        """Answer 200 when the upstreams or the database itself can serve req.name, else 404."""
        ok = sources.known()
        if ok is None:
            try:
                ok = self._fetches.wait(req.key, self._fetches.spawn(req.key, sources.supported), deadline) is True
            except FetchTimeout:
                ok = False
        if not ok:
            raise NotFound(f"checksum database {req.name}: neither the upstreams nor {req.name} itself can be "
                           "reached from this proxy; ask it directly")
        return Reply("text/plain; charset=utf-8", "no-cache", Blob(0, 0.0, body=b""), "local")

    def _open(self, req: Artifact | SumdbRequest, cache_control: str, source: str) -> Reply | None:
        blob = self.storage.open(req.key, immutable=req.immutable)
        if blob is None:
            return None
        return Reply(req.content_type, cache_control, blob, source)


def _with_body(reply: Reply, body: bytes) -> Reply:
    """Return reply with body as its content (a filtered list, another version's .info)."""
    return Reply(reply.content_type, reply.cache_control, Blob(len(body), reply.blob.mtime, body=body), reply.source)

