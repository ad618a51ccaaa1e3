"""Offline serving (-upstream off): an upstream list that never leaves the machine and answers from the cache alone."""

from __future__ import annotations

import functools
import json
import logging
import socket
import threading
import time
from collections.abc import Callable

from ..errors import BadRequest, NotFound
from ..metrics import Metrics
from ..modpath import compare_versions, is_canonical
from ..net.http import Response, Transport
from ..request import Artifact, SumdbRequest, parse_request, stored_artifact
from ..storage.base import Storage
from ..sumdb.client import verified_tree_key
from ..sumdb.tiles import Tile, parse_tile_path
from ..upstream import Consume, T, Upstream, Upstreams

log = logging.getLogger(__name__)

# The upstream an offline answer says it came from.
OFFLINE = Upstream("offline:")


class OfflineConnectError(OSError):
    """An outbound connection attempted while the proxy is offline (-upstream off)."""


def refuse_connect(host: str, port: int, timeout: float) -> socket.socket:
    """Refuse every outbound connection: the connector of the offline transport."""
    raise OfflineConnectError(f"offline (-upstream off): no connection to {host}:{port}")


def offline_transport() -> Transport:
    """Return a transport that cannot connect anywhere, for the parts that hold one offline."""
    return Transport(connector=refuse_connect)


class BytesResponse(Response):
    """An answer made here from bytes, shaped as an upstream Response for the consumers."""

    def __init__(self, url: str, body: bytes) -> None:  # no connection: the base's pool is not used
        self.url = url
        self.status = 200
        self.reason = "OK"
        self.headers = {"Content-Length": str(len(body))}  # type: ignore[assignment]
        self.bytes_read = 0
        self._body = body

    def header(self, name: str, default: str = "") -> str:
        """Return one header's value, or default."""
        return self.headers.get(name, default)

    def read(self, n: int = 1 << 16) -> bytes:
        """Return up to n more bytes of the body, b"" at the end."""
        data = self._body[self.bytes_read:self.bytes_read + max(n, 0)]
        self.bytes_read += len(data)
        return data

    def release(self) -> None:
        """Do nothing: there is nothing to give back."""

    def close(self) -> None:
        """Do nothing: there is nothing to close."""


def _is_release(version: str) -> bool:
    return "-" not in version.partition("+")[0]


class OfflineUpstreams(Upstreams):
    """The upstreams of an offline proxy: what is in storage, and a not-found for the rest.

    Module files, lookups and full tiles come from storage (the service only asks on a miss, so
    those are "not in the offline cache"); @v/list and @latest are made from the versions whose
    zip is cached; /sumdb/NAME/latest is the newest verified tree head kept for NAME; a partial
    tile is cut from the full tile when only that is kept. No connection is ever opened.
    """

    def __init__(self, storage: Storage, metrics: Metrics, clock: Callable[[], float] = time.time,
                 index_ttl: float = 300.0, private: list[tuple[str, Upstream]] | None = None) -> None:
        """Answer from storage; the versions found by a scan of storage are kept index_ttl seconds.

        private keeps the private routes' patterns, so private modules stay private offline.
        The base class's upstream list, transport and retries are not used.
        """
        self.upstreams: list[Upstream] = []
        self.private = private or []
        self.metrics = metrics
        self.transport = offline_transport()
        self.attempts = 1
        self.health = None  # nothing to be down: every answer is local
        self.storage = storage
        self.clock = clock
        self.index_ttl = index_ttl
        self._index: dict[str, set[str]] = {}
        self._index_time: float | None = None
        self._lock = threading.Lock()

    def fetch(self, path: str, consume: Consume[T], module: str | None = None,
              headers: Callable[[], dict[str, str]] | None = None) -> T:
        """Return consume(answer) for path ("/mod/@v/list", "/sumdb/NAME/latest") from storage.

        Raises NotFound ("… is not in the offline cache") for anything storage cannot answer.
        """
        return consume(BytesResponse("offline:" + path, self.answer(path)), OFFLINE)

    def fetch_from(self, up: Upstream, path: str, consume: Consume[T],
                   headers: Callable[[], dict[str, str]] | None = None, retry_silence: bool = True) -> T:
        """Answer as fetch does, whichever upstream is named."""
        return self.fetch(path, consume, None, headers)

    def answer(self, path: str) -> bytes:
        """Return the body an upstream would send for path, made from storage; raise NotFound."""
        try:
            req = parse_request(path)
        except BadRequest as exc:
            raise NotFound(f"{exc} (offline)") from None
        if isinstance(req, SumdbRequest):
            return self._sumdb(req)
        if req.kind == "list":
            versions = self.versions(req.module)
            if not versions:
                raise NotFound(f"{req.module} is not in the offline cache")
            return "".join(v + "\n" for v in versions).encode()
        if req.kind == "latest":
            return self._latest(req.module)
        if req.kind != "zip" and is_canonical(req.version):
            data = self.storage.read(req.key)
            if data is not None:
                return data
        raise NotFound(f"{req.module}@{req.version} is not in the offline cache (no .{req.kind})")

    def _sumdb(self, req: SumdbRequest) -> bytes:
        if req.path == "supported":
            return b""
        if req.path == "latest":
            data = self.storage.read(verified_tree_key(req.name))
            if data is None:
                raise NotFound(f"checksum database {req.name} is not in the offline cache")
            return data
        data = self.storage.read(req.key)
        if data is not None:
            return data
        if req.path.startswith("tile/"):
            tile = parse_tile_path(req.path)
            full = Tile(tile.h, tile.l, tile.n, 1 << tile.h)
            data = self.storage.read(f"sumdb/{req.name}/{full.path()}")
            if data is not None and len(data) == 32 * full.w:
                return data[:32 * tile.w]
        what = req.path[len("lookup/"):] if req.path.startswith("lookup/") else req.path
        raise NotFound(f"{what}: checksum database {req.name} data is not in the offline cache")

    def _latest(self, module: str) -> bytes:
        versions = self.versions(module)
        if not versions:
            raise NotFound(f"{module} is not in the offline cache")
        releases = [v for v in versions if _is_release(v)]
        best = (releases or versions)[-1]
        info = self.storage.read(Artifact("info", module, best).key)
        return info if info is not None else json.dumps({"Version": best}).encode()

    def versions(self, module: str) -> list[str]:
        """Return module's versions whose zip is in storage, in semantic version order."""
        with self._lock:
            now = self.clock()
            if self._index_time is None or now - self._index_time >= self.index_ttl:
                self._index = self._scan()
                self._index_time = now
            found = self._index.get(module, set())
        return sorted(found, key=functools.cmp_to_key(compare_versions))

    def _scan(self) -> dict[str, set[str]]:
        index: dict[str, set[str]] = {}
        for st in self.storage.scan():
            art = stored_artifact(st.key)
            if art is not None and art.kind == "zip" and art.immutable:
                index.setdefault(art.module, set()).add(art.version)
        log.debug("offline index: %d modules", len(index))
        return index
