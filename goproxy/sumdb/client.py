"""Checksum database client: where its files come from, verified lookups and tile proofs.

It also keeps the newest verified tree in shared storage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from ..errors import ChecksumError, NotFound, ProxyError, UpstreamError
from ..metrics import Metrics
from ..modpath import escape_path, escape_version
from ..net.http import Response
from ..storage.base import Stat, Storage
from ..upstream import Consume, Upstreams
from . import tlog
from .db import GoSumDB
from .note import NoteError, Verifier, open_note
from .tiles import Tile, TileHashReader, parse_tile_path

log = logging.getLogger(__name__)
security = logging.getLogger("goproxy.security")

# The checksum database's tile height (sum.golang.org and the go command both use 8).
TILE_HEIGHT = 8
MAX_ANSWER = 1 << 20
# How long Sources remembers whether the upstreams, or the database itself, can serve a database.
REMEMBER = 600.0

T = TypeVar("T")


def _read(resp: Response, _up: object = None) -> bytes:
    return resp.read_all(limit=MAX_ANSWER)


def verified_tree_key(name: str) -> str:
    """Return the cache key of the newest verified signed tree head of checksum database name."""
    return f"sumdb/{name}/.verified-tree"


def check_answer(path: str, data: bytes) -> None:
    """Check that data can be the database's answer for path ("lookup/…", "tile/…", "latest").

    A lookup must be a record followed by a tree note, a hash tile exactly 32 bytes per hash,
    a data tile non-empty, latest a tree note. Raises tlog.TlogError (a ValueError) otherwise;
    signatures and proofs are the Verifier's business.
    """
    if path.startswith("lookup/"):
        _, _, note = tlog.parse_record(data)
        tlog.parse_tree(note.decode("utf-8", "replace"))
    elif path.startswith("tile/"):
        tile = parse_tile_path(path)
        if tile.l >= 0 and len(data) != 32 * tile.w:
            raise tlog.TlogError(f"a tile of {tile.w} hashes is {32 * tile.w} bytes, not {len(data)}")
        if tile.l < 0 and not data:
            raise tlog.TlogError("empty data tile")
    elif path == "latest":
        tlog.parse_tree(data.decode("utf-8", "replace"))


class Sources:
    """Where one checksum database's files come from.

    They come from the upstreams' /sumdb/ passthrough, else from the database itself.

    upstream_first False goes to the database alone (a database URL given in -gosumdb is where
    the operator wants it read); direct None means there is no database to ask (offline: the
    upstreams answer from the cache). Whether the upstreams pass the database through, and
    whether the database answers directly, are each found out once and remembered for
    remember seconds.
    """

    def __init__(self, name: str, upstreams: Upstreams, direct: Upstreams | None, upstream_first: bool = True,
                 clock: Callable[[], float] = time.monotonic, remember: float = REMEMBER) -> None:
        self.name = name
        self.upstreams = upstreams
        self.direct = direct
        self.upstream_first = upstream_first
        self.clock = clock
        self.remember = remember
        self._known: dict[str, tuple[float, bool]] = {}  # "upstreams" / "direct" → (until, answer)
        self._lock = threading.Lock()

    def fetch(self, path: str, consume: Consume[T]) -> T:
        """Return consume(answer) for path ("lookup/…", "tile/…", "latest") of the database.

        Asks the upstreams first when they pass this database through, then the database.
        Raises NotFound when the last one asked has no such file, else UpstreamError.
        """
        if self.direct is None:
            return self.upstreams.fetch(f"/sumdb/{self.name}/{path}", consume)
        if self.upstream_first and self._upstreams_serve():
            try:
                return self.upstreams.fetch(f"/sumdb/{self.name}/{path}", consume)
            except ProxyError as exc:
                log.info("checksum database %s: %s from the upstreams: %s; asking %s directly", self.name, path,
                         exc, self._where())
        return self.direct.fetch(f"/{path}", consume)

    def supported(self) -> bool:
        """Report whether this proxy can serve the database: through an upstream, or directly.

        May take as long as asking both; the answer is remembered.
        """
        if (self.upstream_first or self.direct is None) and self._upstreams_serve():
            return True
        direct = self.direct
        return direct is not None and self._ask("direct", lambda: self._answers(direct, "/latest"))

    def known(self) -> bool | None:
        """Return what supported() would answer now without asking anyone, or None when it must ask."""
        now = self.clock()
        with self._lock:
            up, direct = self._fresh("upstreams", now), self._fresh("direct", now)
        if self.upstream_first:
            if up is None:
                return None
            if up:
                return True
        return direct

    def _fresh(self, what: str, now: float) -> bool | None:
        entry = self._known.get(what)
        return entry[1] if entry is not None and entry[0] > now else None

    def _upstreams_serve(self) -> bool:
        return self._ask("upstreams", lambda: self._answers(self.upstreams, f"/sumdb/{self.name}/supported"))

    def _ask(self, what: str, probe: Callable[[], bool]) -> bool:
        with self._lock:
            known = self._fresh(what, self.clock())
        if known is not None:
            return known
        answer = probe()
        with self._lock:
            self._known[what] = (self.clock() + self.remember, answer)
        where = "through the upstreams" if what == "upstreams" else f"directly at {self._where()}"
        log.info("checksum database %s: %s %s", self.name, "reachable" if answer else "not reachable", where)
        return answer

    def _where(self) -> str:
        return self.direct.upstreams[0].name if self.direct is not None and self.direct.upstreams else "nowhere"

    @staticmethod
    def _answers(upstreams: Upstreams, path: str) -> bool:
        try:
            upstreams.fetch(path, _read)
        except ProxyError:
            return False
        return True


class SumDB:
    """A verifier of module hashes against one checksum database, as the go command does.

    Each lookup's signed tree head is checked with the database key, its record is proven to be
    in the newest tree seen, and every new tree is proven consistent with the newest verified
    one kept in storage (shared by every replica), so a database that forks its log is caught.
    """

    def __init__(self, db: GoSumDB, sources: Sources, cache: Storage, metrics: Metrics) -> None:
        """Verify against db, reading from sources.

        sources are the upstreams' /sumdb/ passthrough, else the database itself; answers and
        the newest verified tree head are kept in cache.
        """
        self.db = db
        self.verifier = Verifier(db.key)
        self.sources = sources
        self.cache = cache
        self.metrics = metrics
        self._lock = threading.Lock()
        self._latest: tlog.Tree | None = None
        self._state_key = verified_tree_key(db.name)
        self._stored: tuple[str, int | None] = ("", None)  # the kept head's Stat token and its tree size

    def _fetch(self, path: str) -> bytes:
        """Return the database's answer for path ("lookup/...", "tile/..."); raises ProxyError."""
        return self.sources.fetch(path, _read)

    def fetch_tile(self, tile: Tile) -> bytes:
        """Return tile's data (not yet authenticated), from the cache when the full tile is there.

        Raises ProxyError when the database cannot serve it.
        """
        return self._tile(tile)

    def _tile(self, tile: Tile) -> bytes:
        """Return a tile's data, from the cache when a full tile is there."""
        full = Tile(tile.h, tile.l, tile.n, 1 << tile.h)
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

    def _store_tiles(self, tiles: list[Tile], data: list[bytes]) -> None:
        for tile, d in zip(tiles, data):
            if tile.w == 1 << tile.h:
                key = f"sumdb/{self.db.name}/{tile.path()}"
                if self.cache.stat(key) is None:
                    self.cache.write(key, d)

    def _reader(self, tree: tlog.Tree) -> TileHashReader:
        return TileHashReader(tree, TILE_HEIGHT, self._tile, self._store_tiles)

    # Trees: signed heads, consistency with the newest verified one.

    def _open_tree(self, signed: bytes) -> tlog.Tree:
        try:
            return tlog.parse_tree(open_note(signed, self.verifier))
        except NoteError as exc:
            raise self._fail(f"signed tree head from {self.db.name} does not verify: {exc}") from None
        except tlog.TlogError as exc:
            raise self._fail(f"malformed tree head from {self.db.name}: {exc}") from None

    def _load_latest(self) -> tuple[tlog.Tree | None, Stat | None]:
        """Return the shared newest verified tree and the Stat it was read under (for the swap)."""
        st = self.cache.stat(self._state_key)  # stat before read: a newer head read makes the swap fail
        data = self.cache.read(self._state_key) if st is not None else None
        if data is None:
            return None, None
        try:
            return tlog.parse_tree(open_note(data, self.verifier)), st
        except (NoteError, tlog.TlogError):
            log.warning("replacing unreadable verified tree head %s", self._state_key)
            return None, st

    def _prove(self, a: tlog.Tree, b: tlog.Tree) -> tlog.Tree:
        """Prove a and b are one log (the smaller a prefix of the larger); return the larger."""
        if a == b:
            return a
        old, new = (a, b) if a.n <= b.n else (b, a)
        try:
            proof = tlog.prove_tree(new.n, old.n, self._reader(new))
            tlog.check_tree(proof, new.n, new.hash, old.n, old.hash)
        except tlog.TlogError as exc:
            raise self._fail(f"{self.db.name} tree of size {old.n} is not a prefix of the tree of size "
                             f"{new.n}: the checksum database has forked its log ({exc})") from None
        return new

    def _merge(self, tree: tlog.Tree, signed: bytes) -> tlog.Tree:
        """Prove tree consistent with the newest verified trees; return the newest.

        The newest verified trees are this process's and the one in shared storage. The shared
        head is replaced only by a compare-and-swap, so a replica never overwrites a head it has
        not proven tree against.
        """
        with self._lock:
            if self._latest is not None:
                self._prove(self._latest, tree)
            for _ in range(8):
                stored, st = self._load_latest()
                newest = tree if stored is None else self._prove(stored, tree)
                if newest is tree and tree != stored and not self.cache.swap(self._state_key, signed, st):
                    continue  # another replica replaced it meanwhile: prove against that one
                if self._latest is None or newest.n >= self._latest.n:
                    self._latest = newest
                return self._latest
            raise UpstreamError(f"checksum database {self.db.name}: the shared verified tree head keeps changing")

    def _fail(self, message: str) -> ChecksumError:
        security.error("SECURITY: %s", message)
        self.metrics.verifications.inc(result="failure")
        return ChecksumError(f"SECURITY ERROR: {message}")

    def verified_tree_size(self) -> int | None:
        """Return the size of the newest verified tree, None while there is none.

        The tree is this process's, or the one kept in storage (verified by any process or
        replica) when that is newer.

        Costs one stat of the kept head; it is read and its signature checked only when it changed.
        """
        with self._lock:
            latest = self._latest.n if self._latest is not None else None
        st = self.cache.stat(self._state_key)
        token, size = self._stored
        if st is not None and st.token != token:
            found = self.newest()
            size = found[0].n if found is not None else None
            self._stored = (st.token, size)
        if st is None or size is None:
            return latest
        return size if latest is None else max(size, latest)

    # Lookups.

    def newest(self) -> tuple[tlog.Tree, bytes] | None:
        """Return the newest verified tree head kept in the cache and its signed note, or None."""
        data = self.cache.read(self._state_key)
        if data is None:
            return None
        try:
            return tlog.parse_tree(open_note(data, self.verifier)), data
        except (NoteError, tlog.TlogError):
            log.warning("ignoring unreadable verified tree head %s", self._state_key)
            return None

    def lookup(self, module: str, version: str) -> list[str]:
        """Return the database's go.sum lines for module@version, proven to be in the log.

        Raises ChecksumError (a SECURITY event) when anything fails to verify, and UpstreamError
        when the database cannot be reached or does not know the module.
        """
        return self.record(module, version)[1].decode().splitlines()

    def record(self, module: str, version: str) -> tuple[int, bytes]:
        """Return module@version's record in the log, (record id, text), proven to be in the log.

        The lookup answer is read from the cache or fetched (and then kept). Raises as lookup.
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
        return record_id, text

    def check(self, module: str, version: str, gomod: bool, got: str) -> None:
        """Verify that got (an h1: hash) is the database's hash for the module's zip, or its go.mod.

        The go.mod's hash is checked when gomod. Raises ChecksumError on a mismatch (logged as
        SECURITY).
        """
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


