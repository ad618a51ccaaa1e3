"""The proxy's decisions: hit, miss or stale; immutable vs mutable; what to fetch and keep."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .config import Config
from .download import Downloader
from .errors import NotFound, ProxyError, StorageError, TransientError, UpstreamError
from .locks import KeyLocks
from .modpath import Artifact, SumdbRequest, unescape_path
from .net.http import Response
from .singleflight import SingleFlight
from .storage.base import Blob, Storage
from .sumdb.verify import Verifier
from .upstream import Upstream, Upstreams

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
                 on_use: Callable[[str], None] | None = None, clock: Callable[[], float] = time.time) -> None:
        """Answer from storage, fetching misses through upstreams, one fetch per key (flights
        in this process, locks across the processes sharing storage).

        Zips are fetched by downloader; go.mod files are checked by verifier before they are
        kept. on_use, when given, is called with the cache key of every module artifact
        requested (before it is served); it must be cheap and never block.
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
        self._not_found: dict[str, tuple[float, NotFound]] = {}
        self._nf_lock = threading.Lock()
        self._prefetching = threading.BoundedSemaphore(MAX_PREFETCH)

    def serve(self, req: Artifact | SumdbRequest) -> Reply:
        """serve returns the reply for a parsed request; raises a ProxyError subclass on failure."""
        if isinstance(req, SumdbRequest):
            if req.name not in self.config.sumdbs and req.name != self.verifier.db_name:
                raise NotFound(f"checksum database {req.name} is not proxied here")
            if req.path == "supported":
                return Reply("text/plain; charset=utf-8", "no-cache", Blob(0, 0.0, body=b""), "local")
            if req.path.startswith("lookup/"):
                module = req.path[len("lookup/"):].rsplit("@", 1)[0]
                if self.upstreams.private_route(unescape_path(module)):
                    raise NotFound(f"{module} is a private module; it is not looked up in {req.name}")
            upstream_path = f"/sumdb/{req.name}/{req.path}"
        else:
            upstream_path = "/" + req.key
            if self.on_use is not None:
                self.on_use(req.key)
        if req.immutable:
            return self._serve_immutable(req, upstream_path)
        return self._serve_mutable(req, upstream_path)

    def _serve_immutable(self, req: Artifact | SumdbRequest, upstream_path: str) -> Reply:
        reply = self._open(req, IMMUTABLE_CACHE_CONTROL, "hit")
        if reply is not None:
            return reply
        self._check_not_found(req.key)
        if isinstance(req, Artifact) and req.kind == "info":
            self._prefetch_mod(req)
        for _ in range(3):  # cache cleanup may remove it between commit and open: fetch again
            self.flights.do(req.key, lambda: self._fetch(req, upstream_path), WAIT_TIMEOUT)
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

        def run() -> None:
            try:
                self.flights.do(key, lambda: self._fetch(mod, "/" + key), WAIT_TIMEOUT)
            except ProxyError as exc:
                log.debug("fetching %s beside its .info: %s", key, exc)
            except Exception:
                log.exception("fetching %s beside its .info", key)
            finally:
                self._prefetching.release()

        threading.Thread(target=run, name="goproxy-prefetch", daemon=True).start()

    def _serve_mutable(self, req: Artifact | SumdbRequest, upstream_path: str) -> Reply:
        ttl = self.config.list_ttl
        control = mutable_cache_control(ttl)
        st = self.storage.stat(req.key)
        if st is not None and self.clock() - st.mtime < ttl:
            reply = self._open(req, control, "hit")
            if reply is not None:
                return reply
        self._check_not_found(req.key)
        for _ in range(3):  # cache cleanup may remove it between commit and open: fetch again
            try:
                self.flights.do(req.key, lambda: self._fetch(req, upstream_path), WAIT_TIMEOUT)
            except (NotFound, StorageError):
                raise
            except ProxyError as exc:
                reply = self._open(req, control, "stale")
                if reply is None:
                    raise
                log.warning("serving stale %s: every upstream failed: %s", req.key, exc)
                return reply
            reply = self._open(req, control, "miss")
            if reply is not None:
                return reply
        raise UpstreamError(f"{req.key} vanished from the cache right after it was fetched")

    def _open(self, req: Artifact | SumdbRequest, cache_control: str, source: str) -> Reply | None:
        blob = self.storage.open(req.key, immutable=req.immutable)
        if blob is None:
            return None
        return Reply(req.content_type, cache_control, blob, source)

    def _check_not_found(self, key: str) -> None:
        now = self.clock()
        with self._nf_lock:
            entry = self._not_found.get(key)
            if entry is None:
                return
            if entry[0] > now:
                # A fresh exception each time: re-raising one object would grow its traceback.
                raise NotFound(str(entry[1]), status=entry[1].status)
            del self._not_found[key]

    def _remember_not_found(self, key: str, exc: NotFound) -> None:
        if self.config.not_found_ttl <= 0:
            return
        now = self.clock()
        with self._nf_lock:
            if len(self._not_found) > 10000:
                self._not_found = {k: v for k, v in self._not_found.items() if v[0] > now}
            self._not_found[key] = (now + self.config.not_found_ttl, exc)

    def _fetch(self, req: Artifact | SumdbRequest, upstream_path: str) -> bool:
        """Fill the cache for req from upstream; runs once per key at a time in this process.

        Across processes (or replicas) the key's lock makes it one fetch: a process that gets
        the lock after another committed what it came for fetches nothing.
        """
        asked = self.clock()
        with self.locks.hold(req.key, WAIT_TIMEOUT):
            st = self.storage.stat(req.key)
            if st is not None and (req.immutable or st.mtime >= asked):
                return True  # another process fetched it while this one waited for the lock
            return self._fetch_locked(req, upstream_path)

    def _fetch_locked(self, req: Artifact | SumdbRequest, upstream_path: str) -> bool:
        log.info("[CACHE MISS] %s", req.key)
        started = time.monotonic()
        try:
            module = req.module if isinstance(req, Artifact) else None
            if isinstance(req, Artifact) and req.kind == "zip":
                self.downloader.fetch(req, upstream_path)
            else:
                data = self.upstreams.fetch(upstream_path, self._read_verified(req), module)
                _validate(req, data)
                self.storage.write(req.key, data, mtime=self.clock())
        except NotFound as exc:
            self._remember_not_found(req.key, exc)
            log.info("not found upstream: %s (%d %s)", req.key, exc.status, exc)
            raise
        except ProxyError as exc:
            log.error("fetch %s failed: %s", req.key, exc)
            raise
        elapsed = time.monotonic() - started
        kind = req.kind if isinstance(req, Artifact) else "sumdb"
        self.upstreams.metrics.upstream_seconds.observe(elapsed, kind=kind)
        if not (isinstance(req, Artifact) and req.kind == "zip"):  # fetch_zip logs its own line
            log.info("fetched %s in %.3fs", req.key, elapsed)
        return True

    def _read_verified(self, req: Artifact | SumdbRequest) -> Callable[[Response, Upstream], bytes]:
        """Return a consumer reading a small answer; a go.mod is checked against the checksum database."""
        def consume(resp: Response, _up: Upstream) -> bytes:
            data = _read_small(resp)
            if isinstance(req, Artifact) and req.kind == "mod":
                self.verifier.check_mod(req.module, req.version, data)
            return data

        return consume


def _read_small(resp: Response) -> bytes:
    length = resp.header("Content-Length")
    data = resp.read_all(limit=MAX_SMALL_SIZE)
    if length.isdigit() and int(length) != len(data):
        raise TransientError(f"{resp.url}: got {len(data)} of {length} bytes")
    return data


def _validate(req: Artifact | SumdbRequest, data: bytes) -> None:
    """_validate rejects upstream answers that cannot be what was asked for; raises UpstreamError."""
    if not isinstance(req, Artifact) or req.kind not in ("info", "latest"):
        return
    try:
        info = json.loads(data)
    except ValueError:
        raise UpstreamError(f"upstream sent invalid JSON for {req.key}") from None
    if not isinstance(info, dict) or not isinstance(info.get("Version"), str) or not info["Version"]:
        raise UpstreamError(f"upstream sent {req.key} without a Version")
    if req.kind == "info" and req.immutable and info["Version"] != req.version:
        raise UpstreamError(f"upstream sent {req.key} for version {info['Version']!r}")
    if "Time" in info and not isinstance(info["Time"], str):
        raise UpstreamError(f"upstream sent {req.key} with a malformed Time")
