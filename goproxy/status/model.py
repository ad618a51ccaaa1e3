"""The status data: one tree of frozen dataclasses, shown by the front page and sent as /status.json."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from ..progress import Transfer

# Times are Unix seconds (floats); durations are seconds; sizes are bytes. None means the
# figure is not available (its source is not wired, or has nothing yet).


def ratio(part: int, whole: int) -> float | None:
    """Return part / whole, or None when whole is 0 (no ratio to speak of)."""
    return part / whole if whole > 0 else None


@dataclass(frozen=True)
class Counters:
    """Traffic counted since the server started (or over one minute, as a difference)."""

    requests: int = 0  # proxy requests: module and checksum database paths (health, metrics and this page not counted)
    hits: int = 0  # artifact requests answered from the cache
    misses: int = 0  # artifact requests fetched from upstream
    stale: int = 0  # artifact requests answered from a stale copy
    bytes_served: int = 0
    bytes_fetched: int = 0  # body bytes fetched from upstreams
    upstream_requests: int = 0  # retries included
    upstream_errors: int = 0
    hit_ratio: float | None = field(init=False)  # hits / (hits + misses + stale); None before any

    def __post_init__(self) -> None:
        object.__setattr__(self, "hit_ratio", ratio(self.hits, self.lookups))

    @property
    def lookups(self) -> int:
        """Return the artifact requests: hits, misses and stale answers."""
        return self.hits + self.misses + self.stale

    def since(self, earlier: Counters) -> Counters:
        """Return what was counted between earlier and self (never below zero)."""
        names = [f.name for f in dataclasses.fields(self) if f.init]
        return Counters(**{n: max(0, getattr(self, n) - getattr(earlier, n)) for n in names})


@dataclass(frozen=True)
class Minute:
    """One point of the traffic history: what happened in the minute that ended at end."""

    end: float
    requests: int
    hits: int
    lookups: int  # artifact requests (hits, misses, stale)
    hit_ratio: float | None  # None when there was no artifact request


@dataclass(frozen=True)
class UpstreamStatus:
    """One upstream: its traffic since start and, once health tracking reports it, its health."""

    name: str  # base URL, password masked
    route: str = ""  # "" for the public upstream list; the module pattern of a private route
    requests: int = 0  # requests sent since start (retries included)
    errors: int = 0  # failed requests since start (not-founds not counted)
    state: str | None = None  # "up" or "down"
    last_success: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    median_latency: float | None = None  # seconds


@dataclass(frozen=True)
class ChecksumStatus:
    """The checksum database the proxy verifies against, and the ones it serves under /sumdb/."""

    verifying: bool  # False with -gosumdb off
    name: str  # "" when not verifying
    tree_size: int | None  # records in the newest verified tree
    verified: int  # verifications since start, by result
    failures: int
    unavailable: int
    proxied: tuple[str, ...]  # -sumdbs


@dataclass(frozen=True)
class CacheCount:
    """What one count of the cache directory found."""

    counted_at: float
    seconds: float  # how long the count took
    modules: int
    versions: int
    bytes: int  # module files (what -max-cache-size limits)
    oldest_use: float | None  # last use of the least recently used version
    oldest_name: str  # that version, "module@version"
    sumdb_files: int  # checksum database answers, never cleaned
    sumdb_bytes: int


@dataclass(frozen=True)
class CacheStatus:
    """The cache: the latest count and the cleanup limits."""

    count: CacheCount | None  # None until the first count finishes
    max_bytes: int  # -max-cache-size; 0: unlimited
    max_age: float  # -max-cache-age; 0: keep unused versions forever
    cleanup_interval: float
    next_cleanup: float | None


@dataclass(frozen=True)
class LogEntry:
    """One warning or error from the log, secrets masked."""

    time: float
    level: str  # "WARNING", "ERROR" or "CRITICAL"
    logger: str
    message: str


@dataclass(frozen=True)
class Status:
    """Everything the front page shows, read at one moment."""

    version: str
    now: float
    started: float
    uptime: float
    workers: int | None  # serving processes
    upstreams: tuple[UpstreamStatus, ...]
    checksum: ChecksumStatus
    cache: CacheStatus
    traffic: Counters
    history: tuple[Minute, ...]  # oldest first, at most the last hour
    downloads: tuple[Transfer, ...]  # oldest first
    warnings: tuple[LogEntry, ...]  # newest first


def to_json(status: Status) -> bytes:
    """Return status as the UTF-8 JSON document /status.json answers (field names as above)."""
    return (json.dumps(dataclasses.asdict(status), indent=1, allow_nan=False) + "\n").encode()
