"""Zip downloads: one stream or parallel Range requests, resumed after a restart, checked before commit."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .errors import ProxyError, TransientError, UpstreamError
from .metrics import Metrics
from .modpath import is_canonical
from .net.http import Response
from .partial import ChunkState, discard, exclusive, load_state, save_state
from .progress import Progress
from .request import Artifact
from .slots import Slots
from .storage.base import Fence, Storage, storage_error
from .sumdb.verify import Verifier
from .upstream import InvalidAnswer, Upstream, Upstreams
from .validate import InvalidContent, check_zip, check_zip_start, looks_like_html

log = logging.getLogger(__name__)

# Zips at least this big are fetched with parallel Range requests.
PARALLEL_MIN = 512 << 10
# Largest zip the go command accepts (golang.org/x/mod/zip MaxZipFile).
MAX_ZIP_SIZE = 500 << 20
_READ = 256 << 10
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_UNSATISFIED = re.compile(r"bytes \*/(\d+)")


def _content_range(resp: Response) -> tuple[int, int, int] | None:
    """Return resp's Content-Range "bytes a-b/total" as (a, b, total); None when missing or malformed."""
    m = _CONTENT_RANGE.fullmatch(resp.header("Content-Range").strip())
    if not m:
        return None
    a, b, total = (int(x) for x in m.groups())
    return (a, b, total) if a <= b < total else None


def _validator(resp: Response) -> str:
    etag = resp.header("ETag")
    return etag if etag and not etag.startswith("W/") else resp.header("Last-Modified")


class _Changed(Exception):
    """A chunk answer does not fit the others (the zip changed upstream); start over.

    Not a ProxyError, so no retry or fallback loop swallows it on the way up to _Job.run.
    """


class _Refused(Exception):
    """The storage's refusal of a commit (StoreUnavailable, LeaseLost, StorageError), carried up.

    It passes the upstream retry and fallback loops, which would take any ProxyError raised
    while reading an answer for the upstream's fault; _Job._run raises the original.
    """

    def __init__(self, error: ProxyError) -> None:
        super().__init__(str(error))
        self.error = error


class Downloader:
    """Fetch module zips into storage: parallel Range chunks for big zips, else one resumable stream.

    Nothing that cannot be the module zip asked for is committed: the first bytes must start a
    zip (an HTML page is refused at once, not after the whole body), and the complete file must
    be a valid module zip for that module and version (validate.check_zip) and pass the
    verifier, before it is committed. A refused answer is an InvalidAnswer from its upstream.
    """

    def __init__(self, storage: Storage, upstreams: Upstreams, verifier: Verifier, progress: Progress,
                 metrics: Metrics, clock: Callable[[], float] = time.time, connections: int = 4,
                 max_concurrent: int = 4) -> None:
        self.storage, self.upstreams = storage, upstreams
        self.clock = clock  # stamps committed zips, as storage stamps every other artifact
        self.connections = max(1, connections)
        self.verifier = verifier
        self.progress = progress
        self.metrics = metrics
        self._slots = Slots(max_concurrent, self.metrics)

    def fetch(self, req: Artifact, upstream_path: str, fence: Fence | None = None,
              on_answer: Callable[[], None] | None = None) -> None:
        """Download req's zip and commit it; raise ProxyError.

        Partial work stays on disk for a later resume. fence, when given, is asked right before
        the commit (LeaseLost when the caller's lock on the key was lost meanwhile); on_answer,
        when given, is called when an upstream starts sending the zip.
        """
        name = f"{req.module}@{req.version}"
        self._slots.acquire(name)
        try:
            _Job(self, req, upstream_path, name, fence, on_answer or (lambda: None)).run()
        finally:
            self._slots.release()


class _Job:
    """One zip download with its files.

    They are <final>.part (one stream), <final>.tmp and .state (parallel chunks), and
    <final>.lock, held while it runs (partial.exclusive).
    """

    def __init__(self, d: Downloader, req: Artifact, path: str, name: str, fence: Fence | None,
                 on_answer: Callable[[], None]) -> None:
        self.d, self.req, self.path, self.name, self.fence = d, req, path, name, fence
        self.on_answer = on_answer
        self.source = ""  # the upstream the bytes come from, for errors
        self.final = d.storage.staging(req.key)
        self.size = 0  # of the committed zip
        self.part, self.tmp, self.state_path = self.final + ".part", self.final + ".tmp", self.final + ".state"
        self.bar = d.progress.start(name)
        self.lock = threading.Lock()

    def run(self) -> None:
        """Download and commit the zip, unless another process committed it while this one waited."""
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(exclusive(self.d.storage, self.req.key, self.final + ".lock", self.name))
            except ProxyError:  # StorageError: the disk refused the lock file
                self.bar.close()
                raise
            if self.d.storage.stat(self.req.key) is not None:
                self.bar.close()
                log.info("%s was downloaded by another process", self.name)
                return
            self._run()

    def _run(self) -> None:
        started = time.monotonic()
        try:
            for attempt in (1, 2):
                try:
                    state = load_state(self.state_path, self.tmp, self.name)
                    if state is not None:
                        self._parallel(state, None, None)
                    else:
                        self.d.upstreams.fetch(self.path, self._first, self.req.module, self._first_headers)
                    break
                except _Changed as exc:  # the zip changed upstream mid-download: once more from scratch
                    if attempt == 2:
                        raise UpstreamError(str(exc)) from None
                    log.warning("%s; starting %s over", exc, self.name)
        except _Refused as exc:
            raise exc.error from None
        except OSError as exc:
            # The disk refused a write: what is partial cannot grow now and only takes space.
            discard(self.part, self.tmp, self.state_path)
            raise storage_error(self.req.key, exc) from exc
        finally:
            self.bar.close()
        elapsed = max(time.monotonic() - started, 1e-6)
        self.d.progress.finished(self.name, self.size, elapsed)

    def _part_size(self) -> int:
        try:
            return os.path.getsize(self.part)
        except FileNotFoundError:
            return 0

    # The first request: learns size and Range support, or resumes a single stream.

    def _first_headers(self) -> dict[str, str]:
        have = self._part_size()
        if have:
            return {"Range": f"bytes={have}-"}
        if self.d.connections > 1:
            return {"Range": f"bytes=0-{PARALLEL_MIN - 1}"}
        return {}

    def _first(self, resp: Response, up: Upstream) -> None:
        self.on_answer()
        self.source = up.name
        have = self._part_size()
        if resp.status == 416:  # nothing after byte have: the .part is complete, or not this zip
            m = _UNSATISFIED.fullmatch(resp.header("Content-Range").strip())
            if have and m and int(m.group(1)) == have:
                log.info("%s: the partial download was already complete", self.name)
                self._commit(self.part, have)
                return
            discard(self.part)
            raise TransientError(f"{resp.url}: no bytes from {have} on ({resp.header('Content-Range')!r}); "
                                 "starting over")
        cr = _content_range(resp) if resp.status == 206 else None
        if resp.status == 206 and cr is None:
            log.info("%s: malformed Content-Range %r; downloading in one stream", self.name,
                     resp.header("Content-Range"))
            resp.close()
            self.d.upstreams.fetch_from(up, self.path, lambda r, _up: self._stream(r, 0))
            return
        if cr is None:  # 200: the whole file, from the start
            if have:
                log.info("%s: upstream ignored the Range request; starting over", self.name)
            self._stream(resp, 0)
            return
        start, end, total = cr
        if total > MAX_ZIP_SIZE:
            raise UpstreamError(f"{resp.url}: zip of {total} bytes is larger than {MAX_ZIP_SIZE}")
        self.bar.total = total
        if have and start == have:
            log.info("resuming %s from byte %d of %d", self.name, have, total)
            self._stream(resp, start)
            return
        if start != 0:
            raise TransientError(f"{resp.url}: asked for bytes from {have}, got {start}")
        if total > PARALLEL_MIN and self.d.connections > 1 and end + 1 == PARALLEL_MIN:
            state = ChunkState(total, PARALLEL_MIN, _validator(resp))
            with open(self.tmp, "wb") as f:
                f.truncate(total)
            save_state(self.state_path, state)
            self._parallel(state, resp, up)
            return
        if not self._stream(resp, 0):  # the first answer held only the start: stream the rest
            self.d.upstreams.fetch_from(up, self.path, lambda r, _up: self._stream(r, self._part_size()),
                                        lambda: {"Range": f"bytes={self._part_size()}-"})

    # Single stream into .part.

    def _stream(self, resp: Response, offset: int) -> bool:
        """Write resp's body into .part at offset (0 truncates); commit it when complete.

        Returns True once committed, False when more is to come.
        """
        if resp.status not in (200, 206):
            raise TransientError(f"{resp.url}: unexpected {resp.status} {resp.header('Content-Range')!r}")
        cr = _content_range(resp) if resp.status == 206 else None
        if resp.status == 206 and (cr is None or cr[0] != offset):
            raise TransientError(f"{resp.url}: unexpected Content-Range {resp.header('Content-Range')!r}")
        total = cr[2] if cr else (int(resp.header("Content-Length")) if resp.header("Content-Length").isdigit()
                                 else 0)
        if resp.status == 200:
            offset = 0
        self.bar.total = total or self.bar.total
        self.bar.set(offset)
        head = b""  # the first bytes, until there are enough to tell a zip
        if 0 < offset < 4:
            with open(self.part, "rb") as f:
                head = f.read(offset)
        with open(self.part, "r+b" if offset else "wb") as f:
            f.seek(offset)
            f.truncate()
            written = offset
            while True:
                data = resp.read(_READ)
                if not data:
                    break
                if written < 4:
                    head += data
                    try:
                        self._check_start(resp, head)
                    except InvalidAnswer:
                        discard(self.part)
                        raise
                written += len(data)
                if written > MAX_ZIP_SIZE:
                    raise UpstreamError(f"{resp.url}: zip larger than {MAX_ZIP_SIZE} bytes")
                f.write(data)
                self.bar.add(len(data))
        if cr is None or written >= cr[2]:
            self._commit(self.part, written)
            return True
        return False

    def _check_start(self, resp: Response, head: bytes) -> None:
        """Refuse a body whose first bytes (head) cannot start a zip, as soon as they arrive."""
        try:
            if looks_like_html(resp.header("Content-Type"), head[:512]):
                raise InvalidAnswer(self.source, self.path, f"an HTML page (starts with {head[:15]!r})", "html")
            check_zip_start(head)
        except InvalidContent as exc:
            raise InvalidAnswer(self.source, self.path, str(exc)) from None

    # Parallel chunks into .tmp.

    def _parallel(self, state: ChunkState, first: Response | None, up: Upstream | None) -> None:
        """Fetch the chunks state lacks, first (the answer for chunk 0) included, then commit the .tmp."""
        self.bar.total = state.size
        self.bar.set(sum(state.span(i)[1] + 1 - state.span(i)[0] for i in state.done))
        todo = [i for i in range(state.chunks()) if i not in state.done]
        if first is not None:
            self._write_chunk(first, 0, state)
            todo.remove(0)
        elif todo:  # resumed after a restart: the first missing chunk finds the upstream
            i = todo.pop(0)
            up = self.d.upstreams.fetch(self.path, lambda r, u: self._chunk_first(r, u, i, state), self.req.module,
                                        lambda: self._chunk_headers(i, state))

        def fetch(i: int) -> None:
            assert up is not None
            self.d.upstreams.fetch_from(up, self.path, lambda r, _up: self._write_chunk(r, i, state),
                                        lambda: self._chunk_headers(i, state))

        if todo:
            with ThreadPoolExecutor(max_workers=self.d.connections, thread_name_prefix="goproxy-chunk") as pool:
                futures = [pool.submit(fetch, i) for i in todo]
                try:
                    for fut in futures:
                        fut.result()
                except BaseException:
                    for fut in futures:  # the chunks finished stay recorded for a later resume
                        fut.cancel()
                    raise
        if len(state.done) != state.chunks():
            raise UpstreamError(f"{self.name}: {state.chunks() - len(state.done)} chunks missing")
        self._commit(self.tmp, state.size)
        os.unlink(self.state_path)

    def _chunk_headers(self, i: int, state: ChunkState) -> dict[str, str]:
        start, end = state.span(i)
        headers = {"Range": f"bytes={start}-{end}"}
        if state.validator:
            headers["If-Range"] = state.validator
        return headers

    def _chunk_first(self, resp: Response, up: Upstream, i: int, state: ChunkState) -> Upstream:
        self.on_answer()
        self.source = up.name
        self._write_chunk(resp, i, state)
        return up

    def _write_chunk(self, resp: Response, i: int, state: ChunkState) -> None:
        """Store chunk i from a 206 answer at its offset and record it as done."""
        start, end = state.span(i)
        cr = _content_range(resp)
        if resp.status != 206 or cr is None or cr[2] != state.size or cr[0] != start or cr[1] > end:
            # The file changed upstream (If-Range answered 200) or the answer is not what was asked:
            # the chunks on disk cannot be trusted to belong together any more.
            resp.close()
            discard(self.tmp, self.state_path)
            raise _Changed(f"{resp.url}: chunk {i} answered {resp.status} {resp.header('Content-Range')!r}")
        digest = hashlib.sha256()
        fd, pos = os.open(self.tmp, os.O_WRONLY), start
        head = b""  # chunk 0's first bytes, until there are enough to tell a zip
        try:
            while pos <= cr[1]:
                data = resp.read(min(_READ, cr[1] + 1 - pos))
                if not data:
                    raise TransientError(f"{resp.url}: chunk {i} cut short at byte {pos}")
                if pos < 4:
                    head += data
                    try:
                        self._check_start(resp, head)
                    except InvalidAnswer:
                        discard(self.tmp, self.state_path)
                        raise
                os.pwrite(fd, data, pos)
                digest.update(data)
                pos += len(data)
                self.bar.add(len(data))
            if cr[1] < end:  # a shorter answer than asked: fetch the rest of this chunk too
                raise TransientError(f"{resp.url}: chunk {i} ended at {cr[1]}, wanted {end}")
        except BaseException:
            self.bar.add(start - pos)  # the chunk is fetched again whole: do not count it twice
            raise
        finally:
            os.close(fd)
        with self.lock:
            state.done[i] = digest.hexdigest()
            save_state(self.state_path, state)

    # Commit.

    def _commit(self, path: str, size: int) -> None:
        """Check path's size, verify it, fsync it and commit it as the zip.

        On a failed check the partial file is removed (it can never become an artifact).
        """
        actual = os.path.getsize(path)
        try:
            if actual != size:
                raise TransientError(f"{self.name}: downloaded {actual} bytes, expected {size}")
            if is_canonical(self.req.version):
                try:
                    check_zip(path, self.req.module, self.req.version)
                except InvalidContent as exc:
                    raise InvalidAnswer(self.source or "(a resumed download)", self.path, str(exc)) from None
            self.d.verifier.check_zip(self.req.module, self.req.version, path)
        except ProxyError:
            discard(path, self.state_path if path == self.tmp else path)
            raise
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            self.d.storage.commit(path, self.req.key, self.d.clock(), self.fence)
        except ProxyError as exc:
            raise _Refused(exc) from None
        self.size = size

