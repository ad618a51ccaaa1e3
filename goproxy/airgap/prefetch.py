"""Prefetch: fill the cache with what go.sum, go.mod or a module list names, checked against go.sum."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import ProxyError
from ..request import Artifact
from ..service import Reply, Service
from ..storage.base import Storage
from ..sumdb import dirhash
from .gosum import GoSumMismatch, Want, expect

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What prefetching one module version did: the files fetched, those already cached, the error."""

    want: Want
    fetched: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    error: str = ""


def _cached_hash(reply: Reply, kind: str, want: Want) -> str:
    """Return the h1 hash of a cached zip or go.mod that reply opened; raise GoSumMismatch if unreadable."""
    blob = reply.blob
    try:
        if kind == "mod":
            return dirhash.hash_gomod(blob.read())
        f = blob.file if blob.file is not None else io.BytesIO(blob.body or b"")
        return dirhash.hash_zip(f, f"{want.module}@{want.version}/")
    except ValueError as exc:
        raise GoSumMismatch(f"{want.name}: the cached zip is not a valid module zip: {exc}") from None


class Prefetcher:
    """A fetcher of module versions into the cache through the service, several versions at once.

    The service fetches, verifies and commits, one fetch per key. Files the service fetches are
    checked against go.sum before they are committed (the service's verifier is a GoSumVerifier);
    files already cached are checked here. A version that fails (a hash mismatch, say) keeps nothing
    this run fetched for it.
    """

    def __init__(self, service: Service, storage: Storage, workers: int = 8) -> None:
        self.service = service
        self.storage = storage
        self.workers = max(1, workers)

    def run(self, wants: Iterable[Want]) -> list[Outcome]:
        """Prefetch every want, in parallel; return one Outcome each, in the order given."""
        items = list(wants)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="prefetch") as pool:
            return list(pool.map(self.fetch, items))

    def fetch(self, want: Want) -> Outcome:
        """Fetch want's files (zip, then go.mod, then .info); return what happened."""
        out = Outcome(want)
        for kind in want.kinds:
            art = Artifact(kind, want.module, want.version)
            try:
                reply = self.service.serve(art)
                try:
                    if reply.source == "hit" and kind in ("zip", "mod"):
                        expect(want, kind, _cached_hash(reply, kind, want))
                finally:
                    reply.close()
            except ProxyError as exc:
                out.error = str(exc)
                self._forget(out)
                log.error("prefetch %s: %s", want.name, exc)
                return out
            (out.fetched if reply.source != "hit" else out.cached).append(art.key)
        return out

    def _forget(self, out: Outcome) -> None:
        """Remove what this run fetched for a version that failed."""
        for key in out.fetched:
            self.storage.delete(key)
            log.info("removed %s: %s failed", key, out.want.name)
        out.fetched.clear()


def summary(outcomes: list[Outcome]) -> str:
    """Return the one-line summary of a prefetch."""
    failed = sum(1 for o in outcomes if o.error)
    fetched = sum(len(o.fetched) for o in outcomes)
    cached = sum(len(o.cached) for o in outcomes)
    return (f"{len(outcomes)} module versions: {len(outcomes) - failed} ready, {failed} failed; "
            f"{fetched} files fetched, {cached} already cached")
