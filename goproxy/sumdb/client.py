"""Checksum database client: verified lookups, tile proofs, and the newest verified tree on disk."""

from __future__ import annotations

import logging
import threading

from ..errors import ChecksumError, NotFound, ProxyError, UpstreamError
from ..locks import KeyLocks, LocalOnly
from ..metrics import Metrics
from ..modpath import escape_path, escape_version
from ..net.http import Response
from ..storage.base import Storage
from ..upstream import Upstreams
from . import tlog
from .db import GoSumDB
from .note import NoteError, Verifier, open_note

log = logging.getLogger(__name__)
security = logging.getLogger("goproxy.security")

# How long a verification waits for another process's update of the verified tree head.
STATE_LOCK_TIMEOUT = 60.0
# The checksum database's tile height (sum.golang.org and the go command both use 8).
TILE_HEIGHT = 8
MAX_ANSWER = 1 << 20


def _read(resp: Response, _up: object = None) -> bytes:
    return resp.read_all(limit=MAX_ANSWER)


class SumDB:
    """SumDB verifies module hashes against one checksum database, as the go command does.

    Each lookup's signed tree head is checked with the database key, its record is proven to be
    in the newest tree seen, and every new tree is proven consistent with the newest verified
    one kept in the cache directory, so a database that forks its log is caught.
    """

    def __init__(self, db: GoSumDB, upstreams: Upstreams, direct: Upstreams, cache: Storage,
                 metrics: Metrics, locks: KeyLocks | None = None) -> None:
        """Verify against db, asked through upstreams' /sumdb/ passthrough or else direct.

        direct reaches the database itself (db.url, or https://<name>); answers and the newest
        verified tree head are kept in cache. locks (every process sharing cache holds them)
        makes each update of the verified tree head a read-compare-write no other process
        interleaves with, so two verifying at once never store an older tree over a newer one.
        """
        self._locks: KeyLocks = locks or LocalOnly()
        self.db = db
        self.verifier = Verifier(db.key)
        self.upstreams = upstreams
        self.cache = cache
        self.metrics = metrics
        self._direct = direct
        self._proxied: bool | None = None if not db.url else False
        self._lock = threading.Lock()
        self._latest: tlog.Tree | None = None
        self._state_key = f"sumdb/{db.name}/.verified-tree"

    # Fetching: through the upstream's /sumdb/ passthrough when it offers one, else directly.

    def _fetch(self, path: str) -> bytes:
        """_fetch GETs path ("lookup/...", "tile/...") from the database; raises ProxyError."""
        if self._proxied is None:
            try:
                self.upstreams.fetch(f"/sumdb/{self.db.name}/supported", _read)
                self._proxied = True
            except ProxyError:
                self._proxied = False
            log.info("checksum database %s: %s", self.db.name,
                     "through the upstream proxy" if self._proxied else f"directly at {self._direct.upstreams[0].name}")
        if self._proxied:
            return self.upstreams.fetch(f"/sumdb/{self.db.name}/{path}", _read)
        return self._direct.fetch(f"/{path}", _read)

    def _tile(self, tile: tlog.Tile) -> bytes:
        """_tile returns a tile's data, from the cache when a full tile is there."""
        full = tlog.Tile(tile.h, tile.l, tile.n, 1 << tile.h)
        cached = self.cache.read(f"sumdb/{self.db.name}/{full.path()}")
        if cached is not None and len(cached) == 32 * full.w:
            return cached[: 32 * tile.w]
        try:
            return self._fetch(tile.path())
        except NotFound:
            if tile.w == full.w:
                raise
            # The partial tile is gone once the tile is complete: read the full one.
            return self._fetch(full.path())[: 32 * tile.w]

    def _store_tiles(self, tiles: list[tlog.Tile], data: list[bytes]) -> None:
        for tile, d in zip(tiles, data):
            if tile.w == 1 << tile.h:
                key = f"sumdb/{self.db.name}/{tile.path()}"
                if self.cache.stat(key) is None:
                    self.cache.write(key, d)

    def _reader(self, tree: tlog.Tree) -> tlog.TileHashReader:
        return tlog.TileHashReader(tree, TILE_HEIGHT, self._tile, self._store_tiles)

    # Trees: signed heads, consistency with the newest verified one.

    def _open_tree(self, signed: bytes) -> tlog.Tree:
        try:
            return tlog.parse_tree(open_note(signed, self.verifier))
        except NoteError as exc:
            raise self._fail(f"signed tree head from {self.db.name} does not verify: {exc}") from None
        except tlog.TlogError as exc:
            raise self._fail(f"malformed tree head from {self.db.name}: {exc}") from None

    def _load_latest(self) -> tlog.Tree | None:
        data = self.cache.read(self._state_key)
        if data is None:
            return None
        try:
            return tlog.parse_tree(open_note(data, self.verifier))
        except (NoteError, tlog.TlogError):
            log.warning("ignoring unreadable verified tree head %s", self._state_key)
            return None

    def _merge(self, tree: tlog.Tree, signed: bytes) -> tlog.Tree:
        """_merge proves tree consistent with the newest verified tree; returns the newer of the two.

        The newest verified tree is read from the cache each time, under the state key's lock:
        another process may have stored a newer one since this one last looked.
        """
        with self._lock, self._locks.hold(self._state_key, STATE_LOCK_TIMEOUT):
            latest = self._load_latest() or self._latest
            if latest is None or latest == tree:
                newest = tree
            else:
                old, new = (latest, tree) if latest.n <= tree.n else (tree, latest)
                try:
                    proof = tlog.prove_tree(new.n, old.n, self._reader(new))
                    tlog.check_tree(proof, new.n, new.hash, old.n, old.hash)
                except tlog.TlogError as exc:
                    raise self._fail(f"{self.db.name} tree of size {old.n} is not a prefix of the tree of size "
                                     f"{new.n}: the checksum database has forked its log ({exc})") from None
                newest = new
            if newest is tree and newest != latest:
                self.cache.write(self._state_key, signed)
            self._latest = newest
            return newest

    def _fail(self, message: str) -> ChecksumError:
        security.error("SECURITY: %s", message)
        self.metrics.verifications.inc(result="failure")
        return ChecksumError(f"SECURITY ERROR: {message}")

    # Lookups.

    def lookup(self, module: str, version: str) -> list[str]:
        """lookup returns the database's go.sum lines for module@version, proven to be in the log.

        Raises ChecksumError (a SECURITY event) when anything fails to verify, and UpstreamError
        when the database cannot be reached or does not know the module.
        """
        path = f"lookup/{escape_path(module)}@{escape_version(version)}"
        try:
            data = self.cache.read(f"sumdb/{self.db.name}/{path}") or self._fetch(path)
        except NotFound as exc:
            self.metrics.verifications.inc(result="unavailable")
            raise UpstreamError(f"{module}@{version}: not found in checksum database {self.db.name}: {exc}") from None
        except ProxyError as exc:
            self.metrics.verifications.inc(result="unavailable")
            raise UpstreamError(f"checksum database {self.db.name} unreachable: {exc}") from None
        try:
            record_id, text, signed = tlog.parse_record(data)
        except tlog.TlogError as exc:
            raise self._fail(f"malformed lookup answer for {module}@{version}: {exc}") from None
        tree = self._merge(self._open_tree(signed), signed)
        try:
            if record_id < 0 or record_id >= tree.n:
                raise tlog.TlogError(f"record {record_id} outside a tree of size {tree.n}")
            proof = tlog.prove_record(tree.n, record_id, self._reader(tree))
            tlog.check_record(proof, tree.n, tree.hash, record_id, tlog.record_hash(text))
        except tlog.TlogError as exc:
            raise self._fail(f"{module}@{version}: record not proven in {self.db.name}'s log: {exc}") from None
        except ProxyError as exc:
            raise UpstreamError(f"checksum database {self.db.name}: reading tiles: {exc}") from None
        self.cache.write(f"sumdb/{self.db.name}/{path}", data)
        return text.decode().splitlines()

    def check(self, module: str, version: str, gomod: bool, got: str) -> None:
        """check verifies that got (an h1: hash) is the database's hash for the module's zip, or
        its go.mod when gomod; raises ChecksumError on a mismatch (logged as SECURITY)."""
        suffix = "/go.mod" if gomod else ""
        want = ""
        for line in self.lookup(module, version):
            fields = line.split()
            if len(fields) == 3 and fields[0] == module and fields[1] == version + suffix:
                want = fields[2]
        what = f"{module}@{version}{suffix}"
        if not want:
            raise self._fail(f"{what}: {self.db.name} has no hash for it")
        if want != got:
            raise self._fail(f"{what}: checksum mismatch: downloaded {got}, {self.db.name} has {want}")
        self.metrics.verifications.inc(result="ok")
        log.debug("verified %s %s against %s", what, got, self.db.name)


