"""Bundle import: verify everything a bundle carries, then commit it to the cache all-or-nothing."""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import logging
import os
import secrets
import tarfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from ..errors import BadRequest, NotFound
from ..gomod import check_gomod
from ..modpath import compare_versions, unescape_path, unescape_version
from ..request import Artifact, SumdbRequest, parse_request
from ..storage.base import Storage, storage_error
from ..sumdb import dirhash, tlog
from ..sumdb.client import TILE_HEIGHT, verified_tree_key
from ..sumdb.note import NoteError, Verifier, open_note
from ..sumdb.tiles import parse_tile_path
from ..validate import InvalidContent, check_info, check_list, check_zip
from .manifest import MAX_SIZE, NAME, BundleError, Manifest, ModuleEntry, load
from .proofs import MissingTile, Tiles, lookup_data, record_hashes

log = logging.getLogger(__name__)

_READ = 1 << 20
# Commit order: module files, lists, tiles, records, and the tree head last.
_ORDER = {"zip": 0, "mod": 0, "info": 0, "list": 1, "tile": 2, "record": 3, "head": 4}


@dataclass
class ImportReport:
    """What an import did.

    The keys it wrote, how many members were already there, and the checksum database's tree size
    in the cache before and after.
    """

    db_name: str
    committed: list[str] = field(default_factory=list)
    unchanged: int = 0
    old_size: int = 0
    tree_size: int = 0


def _kind(name: str, db: str) -> tuple[str, Artifact | SumdbRequest]:
    """Return the kind of member name (zip, mod, info, list, head, record or tile); raise BundleError."""
    try:
        req = parse_request("/" + name)
    except (BadRequest, NotFound):
        req = None
    if isinstance(req, SumdbRequest) and req.name == db and req.key == name:
        if req.path == "latest":
            return "head", req
        if req.path.startswith("lookup/"):
            return "record", req
        if req.path.startswith("tile/"):
            tile = parse_tile_path(req.path)
            if tile.h == TILE_HEIGHT and tile.l >= 0:
                return "tile", req
    if isinstance(req, Artifact) and req.key == name and (req.kind == "list" or req.immutable):
        return req.kind, req
    raise BundleError(f"{name}: not a file a bundle of {db} may carry")


def _lookup_target(req: SumdbRequest) -> tuple[str, str]:
    module, _, version = req.path[len("lookup/"):].rpartition("@")
    return unescape_path(module), unescape_version(version)


class Importer:
    """The importer of bundles into storage.

    trusted_key(name) is the verifier key this proxy trusts for checksum database name (None:
    not trusted); unverified(module) says a module may come without a lookup record (GONOSUMDB).
    """

    def __init__(self, storage: Storage, trusted_key: Callable[[str], str | None],
                 unverified: Callable[[str], bool], clock: Callable[[], float] = time.time) -> None:
        self.storage = storage
        self.trusted_key = trusted_key
        self.unverified = unverified
        self.clock = clock
        self._staged: dict[str, str] = {}  # member name → staging file
        self._kinds: dict[str, tuple[str, Artifact | SumdbRequest]] = {}
        self._sha: dict[str, str] = {}

    def run(self, path: str) -> ImportReport:
        """Verify the bundle at path, then commit it; raise BundleError (nothing changed) or StorageError."""
        try:
            manifest = self._read(path)
            plan, report = self._verify(manifest)
            self._commit(plan, report)
            return report
        finally:
            self._discard()

    # Reading: every member into a staging file beside its key, checked against the manifest.

    def _read(self, path: str) -> Manifest:
        try:
            tf = tarfile.open(path, mode="r|*")  # noqa: SIM115 - closed below, after the checks
        except OSError as exc:
            raise BundleError(f"{path}: {exc.strerror or exc}") from None
        except tarfile.TarError as exc:
            raise BundleError(f"{path}: not a bundle (a tar file): {exc}") from None
        manifest: Manifest | None = None
        expected: dict[str, int] = {}
        current = NAME
        try:
            with tf:
                for info in tf:
                    current = info.name
                    if manifest is None:
                        if info.name != NAME or not info.isreg() or info.size > MAX_SIZE:
                            raise BundleError(f"{info.name}: a bundle starts with {NAME}")
                        manifest = self._manifest(self._extract(tf, info).read())
                        expected = {m.name: m.size for m in manifest.members}
                        self._sha = {m.name: m.sha256 for m in manifest.members}
                        continue
                    if info.name not in expected:
                        raise BundleError(f"{info.name}: not listed in {NAME}")
                    if info.name in self._staged or not info.isreg():
                        raise BundleError(f"{info.name}: repeated, or not a regular file")
                    if info.size != expected[info.name]:
                        raise BundleError(f"{info.name}: {info.size} bytes, but {NAME} says {expected[info.name]}")
                    self._stage(info.name, self._extract(tf, info))
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise BundleError(f"{current}: the bundle is truncated or corrupt ({exc})") from None
        except OSError as exc:  # gzip.BadGzipFile and kin; write errors are StorageError
            raise BundleError(f"{current}: the bundle is truncated or corrupt ({exc})") from None
        if manifest is None:
            raise BundleError(f"{path}: no {NAME} (an empty or foreign tar)")
        for name in sorted(expected):
            if name not in self._staged:
                raise BundleError(f"{name}: listed in {NAME} but not in the bundle")
        return manifest

    @staticmethod
    def _extract(tf: tarfile.TarFile, info: tarfile.TarInfo) -> IO[bytes]:
        f = tf.extractfile(info)
        if f is None:
            raise BundleError(f"{info.name}: not a regular file")
        return f

    def _manifest(self, data: bytes) -> Manifest:
        m = load(data)
        trusted = self.trusted_key(m.sumdb_name)
        if trusted is None:
            raise BundleError(f"{NAME}: checksum database {m.sumdb_name} is not trusted here "
                              "(give its key with -gosumdb name+key)")
        if trusted != m.sumdb_key:
            raise BundleError(f"{NAME}: its key for {m.sumdb_name} is {m.sumdb_key}, not the trusted {trusted}")
        for member in m.members:
            if member.name in self._kinds or member.name == NAME:
                raise BundleError(f"{NAME}: lists {member.name} twice")
            self._kinds[member.name] = _kind(member.name, m.sumdb_name)
        return m

    def _key(self, name: str) -> str:
        kind, req = self._kinds[name]
        return verified_tree_key(req.name) if isinstance(req, SumdbRequest) and kind == "head" else name

    def _stage(self, name: str, src: IO[bytes]) -> None:
        key = self._key(name)
        path = f"{self.storage.staging(key)}.{secrets.token_hex(4)}.part"
        h = hashlib.sha256()
        f = self.storage.create(key, path)
        self._staged[name] = path
        with f:
            for chunk in iter(lambda: src.read(_READ), b""):
                h.update(chunk)
                try:
                    f.write(chunk)
                except OSError as exc:
                    raise storage_error(key, exc) from exc
        if h.hexdigest() != self._sha[name]:
            raise BundleError(f"{name}: its SHA-256 differs from the one in {NAME}")

    def _data(self, name: str) -> bytes:
        with open(self._staged[name], "rb") as f:
            return f.read()

    def _bundle_tile(self, key: str) -> bytes | None:
        return self._data(key) if key in self._staged and self._kinds[key][0] == "tile" else None

    def _discard(self) -> None:
        for name, path in self._staged.items():
            with contextlib.suppress(OSError):
                os.unlink(path)
            with contextlib.suppress(BadRequest, OSError):
                self.storage.prune(self._key(name).rpartition("/")[0])
        self._staged.clear()

    # Verifying: signatures, proofs, hashes and consistency with the cache, before any commit.

    def _verify(self, m: Manifest) -> tuple[list[tuple[str, str, str | bytes]], ImportReport]:
        db = m.sumdb_name
        verifier = Verifier(m.sumdb_key)
        report = ImportReport(db)
        by_kind: dict[str, list[str]] = {}
        for name in sorted(self._staged):
            by_kind.setdefault(self._kinds[name][0], []).append(name)
        head_name = f"sumdb/{db}/latest"
        tree, signed = tlog.Tree(0, tlog.EMPTY_HASH), b""
        if head_name in self._staged:
            signed = self._data(head_name)
            tree = self._open_tree(head_name, signed, verifier)
            if tree.n != m.tree_size or base64.b64encode(tree.hash).decode() != m.tree_hash:
                raise BundleError(f"{head_name}: not the tree head {NAME} names")
        tiles = Tiles(db, self.storage, extra=self._bundle_tile)
        records: dict[tuple[str, str], tuple[str, int, bytes]] = {}
        for name in by_kind.get("record", []):
            rid, text, note = self._record(name, self._data(name))
            if not signed or note != signed:
                raise BundleError(f"{name}: does not carry the bundle's tree head")
            try:
                tiles.prove_record(tree, rid, text)
            except tlog.TlogError as exc:
                raise BundleError(f"{name}: not proven in the bundle's tree head (size {tree.n}): {exc}") from None
            req = self._kinds[name][1]
            assert isinstance(req, SumdbRequest)
            records[_lookup_target(req)] = (name, rid, text)
        self._check_modules(m, by_kind, records, db)
        for name in by_kind.get("tile", []):
            self._check_tile(name, tiles, tree)
        # Consistency with the cache's tree head; the newer of the two is the one to serve.
        old_signed = self.storage.read(verified_tree_key(db))
        newest, newest_signed = tree, signed
        if old_signed is not None:
            old = self._open_tree(verified_tree_key(db), old_signed, verifier)
            report.old_size = old.n
            if old.n > tree.n or not signed:
                newest, newest_signed = old, old_signed
            self._consistent(head_name, tiles, newest, tree if newest is old else old)
        report.tree_size = newest.n
        writes: list[tuple[str, str, str | bytes]] = []
        for name, rid, text in records.values():
            if newest_signed == signed:
                writes.append(("record", name, self._staged[name]))
                continue
            self._prove(tiles, newest, rid, text, name, "the cache's newer tree head")
            writes.append(("record", name, lookup_data(rid, text, newest_signed)))
        if signed and signed == old_signed:
            report.unchanged += 1
        elif newest_signed == signed and signed:
            writes += self._follow(db, tiles, newest, signed, {n for n, _, _ in records.values()})
            writes.append(("head", head_name, self._staged[head_name]))
        for kind in ("zip", "mod", "info", "list", "tile"):
            for name in by_kind.get(kind, []):
                writes.append((kind, name, self._staged[name]))
        writes.sort(key=lambda w: (_ORDER[w[0]], w[1]))
        return writes, report

    def _open_tree(self, name: str, signed: bytes, verifier: Verifier) -> tlog.Tree:
        try:
            return tlog.parse_tree(open_note(signed, verifier))
        except NoteError as exc:
            raise BundleError(f"{name}: the signed tree head does not verify with {verifier.vkey}: {exc}") from None
        except tlog.TlogError as exc:
            raise BundleError(f"{name}: malformed tree head: {exc}") from None

    @staticmethod
    def _record(name: str, data: bytes) -> tuple[int, bytes, bytes]:
        try:
            return tlog.parse_record(data)
        except tlog.TlogError as exc:
            raise BundleError(f"{name}: malformed lookup record: {exc}") from None

    @staticmethod
    def _prove(tiles: Tiles, tree: tlog.Tree, rid: int, text: bytes, name: str, what: str) -> None:
        try:
            tiles.prove_record(tree, rid, text)
        except tlog.TlogError as exc:
            raise BundleError(f"{name}: cannot be proven in {what} (size {tree.n}): {exc} (export the bundle "
                              "with -since a manifest of this cache)") from None

    def _consistent(self, head_name: str, tiles: Tiles, newer: tlog.Tree, older: tlog.Tree) -> None:
        try:
            tiles.prove_prefix(newer, older)
        except MissingTile as exc:
            raise BundleError(f"{head_name}: cannot prove the trees of size {older.n} and {newer.n} (the cache's "
                              f"and the bundle's) consistent: {exc} (export with -since a manifest of this "
                              "cache)") from None
        except tlog.TlogError:
            raise BundleError(f"{head_name}: SECURITY: the bundle's and the cache's tree heads (sizes {older.n}, "
                              f"{newer.n}) are inconsistent: the checksum database forked its log, or the "
                              "bundle is forged") from None

    def _follow(self, db: str, tiles: Tiles, tree: tlog.Tree, signed: bytes,
                skip: set[str]) -> list[tuple[str, str, str | bytes]]:
        """Return the rewrites that make every cached record of db carry the new tree head."""
        writes: list[tuple[str, str, str | bytes]] = []
        for st in self.storage.scan():
            key = st.key
            if not key.startswith(f"sumdb/{db}/lookup/") or key in skip or key.endswith(".part"):
                continue
            data = self.storage.read(key)
            if data is None:
                continue
            rid, text, note = self._record(key, data)
            if note != signed:
                self._prove(tiles, tree, rid, text, f"{key} (in the cache)", "the bundle's tree head")
                writes.append(("record", key, lookup_data(rid, text, signed)))
        return writes

    def _check_modules(self, m: Manifest, by_kind: dict[str, list[str]],
                       records: dict[tuple[str, str], tuple[str, int, bytes]], db: str) -> None:
        entries = {(e.module, e.version): e for e in m.modules}
        for kind in ("zip", "mod", "info", "list"):
            for name in by_kind.get(kind, []):
                art = self._kinds[name][1]
                assert isinstance(art, Artifact)
                try:
                    if kind == "list":
                        check_list(self._data(name))
                    elif kind == "info":
                        check_info(self._data(name), art.version)
                    else:
                        self._check_hash(name, art, entries, records, db)
                except InvalidContent as exc:
                    raise BundleError(f"{name}: {exc}") from None

    def _check_hash(self, name: str, art: Artifact, entries: dict[tuple[str, str], ModuleEntry],
                    records: dict[tuple[str, str], tuple[str, int, bytes]], db: str) -> None:
        entry = entries.get((art.module, art.version))
        if entry is None:
            raise BundleError(f"{name}: {art.module}@{art.version} is not among {NAME}'s modules")
        try:
            got = (dirhash.hash_zip(self._staged[name], f"{art.module}@{art.version}/") if art.kind == "zip"
                   else dirhash.hash_gomod(self._data(name)))
        except ValueError as exc:
            raise BundleError(f"{name}: not a valid module zip: {exc}") from None
        listed = getattr(entry, art.kind)
        if got != listed:
            raise BundleError(f"{name}: its h1 hash {got} is not the {listed} {NAME} lists")
        text = records[(art.module, art.version)][2] if (art.module, art.version) in records else None
        if text is None:
            cached = self.storage.read(f"sumdb/{db}/lookup/{name.split('/@v/')[0]}@{art.escaped_version}")
            text = self._record(name, cached)[1] if cached is not None else None
        if text is not None:
            want = record_hashes(text, art.module, art.version)[0 if art.kind == "zip" else 1]
            if got != want:
                raise BundleError(f"{name}: checksum mismatch: {got}, but {db} has {want or 'no hash'}")
        elif not self.unverified(art.module):
            raise BundleError(f"{name}: no lookup record for {art.module}@{art.version} in the bundle "
                              "(only modules matching -gonosumdb may come without one)")
        elif art.kind == "zip":
            check_zip(self._staged[name], art.module, art.version)
        else:
            check_gomod(self._data(name), art.module)

    def _check_tile(self, name: str, tiles: Tiles, tree: tlog.Tree) -> None:
        if name not in tiles.verified:
            req = self._kinds[name][1]
            assert isinstance(req, SumdbRequest)
            tile = parse_tile_path(req.path)
            index = tlog.stored_hash_index(tile.l * tile.h, (tile.n << tile.h) + tile.w - 1)
            try:
                if index < tlog.stored_hash_index(0, tree.n):
                    tiles.reader(tree).read_hashes([index])
            except tlog.TlogError as exc:
                raise BundleError(f"{name}: does not check out against the bundle's tree head: {exc}") from None
        if name not in tiles.verified:
            raise BundleError(f"{name}: not a tile of the bundle's tree head (size {tree.n})")

    # Committing: module files first, the tree head last; what is already there is left alone.

    def _commit(self, plan: list[tuple[str, str, str | bytes]], report: ImportReport) -> None:
        now = self.clock()
        for kind, name, src in plan:
            key = self._key(name) if name in self._kinds else name
            if isinstance(src, str):
                sha = self._sha[name]
                if kind == "list":
                    src = self._merged_list(key, self._data(name))
            if kind == "info" and self.storage.stat(key) is not None:
                report.unchanged += 1  # a cached .info is kept: it is not hashed, and either is right
                continue
            if isinstance(src, bytes):
                if self.storage.read(key) == src:
                    report.unchanged += 1
                    continue
                self.storage.write(key, src, mtime=now)
            else:
                if self._cached_sha(key) == sha:
                    report.unchanged += 1
                    continue
                self.storage.commit(src, key, mtime=now)
                del self._staged[name]
            report.committed.append(key)
            log.info("imported %s", key)

    def _merged_list(self, key: str, data: bytes) -> bytes:
        old = (self.storage.read(key) or b"").decode("utf-8", "replace").split()
        versions = sorted(set(data.decode().split()) | set(old), key=functools.cmp_to_key(compare_versions))
        return "".join(v + "\n" for v in versions).encode()

    def _cached_sha(self, key: str) -> str:
        """Return the SHA-256 of the committed file under key ("" when absent)."""
        blob = self.storage.open(key)
        if blob is None:
            return ""
        h = hashlib.sha256()
        try:
            if blob.body is not None:
                h.update(blob.body)
            elif blob.file is not None:
                for chunk in iter(lambda: blob.file.read(_READ) if blob.file else b"", b""):
                    h.update(chunk)
        finally:
            blob.close()
        return h.hexdigest()
