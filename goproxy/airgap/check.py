"""The check of a project's needs: which module versions are in the cache, and (online) which can be fetched."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import NotFound, ProxyError
from ..modpath import escape_path, escape_version
from ..net.http import Response
from ..request import Artifact
from ..storage.base import Storage
from ..upstream import Upstream, Upstreams
from .gosum import Want

# What the upstreams said of a missing version: fetchable, not found, unreachable ("" offline).
FETCHABLE, NOT_FOUND, UNREACHABLE = "fetchable", "not found upstream", "upstream unreachable"


@dataclass
class Status:
    """Where one module version stands: what of it is missing, and what the upstreams said."""

    want: Want
    missing: list[str] = field(default_factory=list)  # ".zip", ".mod", ".info", "<db> record"
    upstream: str = ""  # FETCHABLE, NOT_FOUND or UNREACHABLE; "" when not asked
    error: str = ""  # the upstream error when UNREACHABLE

    @property
    def present(self) -> bool:
        """Report whether nothing is missing."""
        return not self.missing

    def line(self) -> str:
        """Return the line printed for it: "present  m@v" or "missing  m@v  (no .zip; fetchable)"."""
        if self.present:
            return f"present  {self.want.name}"
        detail = "no " + ", ".join(self.missing)
        if self.upstream:
            detail += f"; {self.upstream}" + (f": {self.error}" if self.error else "")
        return f"missing  {self.want.name}  ({detail})"


def _small(resp: Response, _up: Upstream) -> bytes:
    return resp.read_all(limit=16 << 20)


class Checker:
    """A checker of module versions against storage.

    With upstreams (None offline), it asks whether a missing one can be fetched. sumdb_name and
    needs_record, when given, make a version without its lookup record in the cache missing too
    (offline, the go command has nowhere else to verify it).
    """

    def __init__(self, storage: Storage, upstreams: Upstreams | None, sumdb_name: str = "",
                 needs_record: Callable[[str], bool] = lambda module: False, workers: int = 8) -> None:
        self.storage = storage
        self.upstreams = upstreams
        self.sumdb_name = sumdb_name
        self.needs_record = needs_record
        self.workers = max(1, workers)

    def run(self, wants: list[Want]) -> list[Status]:
        """Return the status of every want, in the order given."""
        with ThreadPoolExecutor(self.workers, thread_name_prefix="check") as pool:
            return list(pool.map(self.check, wants))

    def check(self, want: Want) -> Status:
        """Return want's status."""
        missing = [f".{k}" for k in want.kinds if self.storage.stat(Artifact(k, want.module, want.version).key) is None]
        if self.sumdb_name and self.needs_record(want.module):
            key = f"sumdb/{self.sumdb_name}/lookup/{escape_path(want.module)}@{escape_version(want.version)}"
            if self.storage.stat(key) is None:
                missing.append(f"{self.sumdb_name} record")
        status = Status(want, missing)
        if missing and self.upstreams is not None:
            kind = "info" if want.zip else "mod"
            try:
                self.upstreams.fetch("/" + Artifact(kind, want.module, want.version).key, _small, want.module)
                status.upstream = FETCHABLE
            except NotFound:
                status.upstream = NOT_FOUND
            except ProxyError as exc:
                status.upstream, status.error = UNREACHABLE, str(exc)
        return status


def summary(statuses: list[Status]) -> str:
    """Return the one-line summary of a check."""
    missing = [s for s in statuses if not s.present]
    text = f"{len(statuses)} module versions: {len(statuses) - len(missing)} present, {len(missing)} missing"
    counts = [(n, sum(1 for s in missing if s.upstream == n)) for n in (FETCHABLE, NOT_FOUND, UNREACHABLE)]
    shown = ", ".join(f"{c} {n}" for n, c in counts if c)
    return f"{text} ({shown})" if shown else text
