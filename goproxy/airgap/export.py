"""Bundle export: module files and checksum data in one deterministic tar with a manifest.

The checksum data is the checksum database's signed tree head, records and tiles.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import os
import tarfile
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO

from ..errors import ProxyError
from ..modpath import escape_path, escape_version
from ..request import Artifact, stored_artifact
from ..storage.base import Storage
from ..sumdb import dirhash, tlog
from ..sumdb.verify import Verifier
from .gosum import Want, Wants
from .manifest import NAME, Destination, ExportError, Manifest, Member, ModuleEntry
from .proofs import Tiles, lookup_data, record_hashes

_READ = 1 << 20


def cached_wants(storage: Storage) -> Wants:
    """Return every canonical module version in storage: with its zip when cached, else its go.mod."""
    found: dict[tuple[str, str], bool] = {}
    for st in storage.scan():
        art = stored_artifact(st.key)
        if art is not None and art.kind in ("zip", "mod") and art.immutable:
            pair = (art.module, art.version)
            found[pair] = found.get(pair, False) or art.kind == "zip"
    wants = Wants()
    for (module, version), has_zip in found.items():
        wants.add(module, version, zip=has_zip)
    return wants


@contextlib.contextmanager
def _open(storage: Storage, key: str) -> Iterator[BinaryIO]:
    blob = storage.open(key)
    if blob is None:
        raise ExportError(f"{key} vanished from the cache")
    try:
        yield blob.file if blob.file is not None else io.BytesIO(blob.body or b"")
    finally:
        blob.close()


def _module_hashes(storage: Storage, want: Want) -> tuple[str, str]:
    """Return the h1 hashes of want's cached zip (when wanted) and go.mod; raise ExportError."""
    for kind in want.kinds:
        if storage.stat(Artifact(kind, want.module, want.version).key) is None:
            raise ExportError(f"{want.name}: its .{kind} is not in the cache (run prefetch, or see why it failed)")
    zip_hash = ""
    try:
        if want.zip:
            with _open(storage, Artifact("zip", want.module, want.version).key) as f:
                zip_hash = dirhash.hash_zip(f, f"{want.name}/")
        mod = storage.read(Artifact("mod", want.module, want.version).key) or b""
    except ValueError as exc:
        raise ExportError(f"{want.name}: the cached zip is not a valid module zip: {exc}") from None
    return zip_hash, dirhash.hash_gomod(mod)


class Exporter:
    """The maker of bundles from storage; the checksum database of verifier (which must have one) proves them."""

    def __init__(self, storage: Storage, verifier: Verifier, tool: str) -> None:
        if verifier.sumdb is None:
            raise ValueError("a bundle needs a checksum database")
        self.storage = storage
        self.verifier = verifier
        self.sumdb = verifier.sumdb
        self.tool = tool

    def export(self, wants: Wants, out: str, created: int, since: Manifest | None = None) -> Manifest:
        """Write the bundle of wants to out (gzip-compressed when it ends in .tar.gz or .tgz).

        With since (the manifest of what the destination holds), leave out what it has and add
        the tiles that prove the new tree head consistent with its own. created (Unix seconds)
        is the manifest's time and every member's. Raises ExportError.
        """
        name = self.sumdb.db.name
        dest = since.destination() if since is not None else None
        if since is not None and since.sumdb_name != name:
            raise ExportError(f"-since: that manifest is for checksum database {since.sumdb_name}, not {name}")
        have = {m.name for m in dest.modules} if dest else set()
        items: dict[str, str | bytes] = {}  # member name → storage key or content
        entries: list[ModuleEntry] = []
        records: list[tuple[str, int, bytes]] = []  # (member name, record id, text)
        lists: dict[str, list[str]] = {}
        for want in wants:
            if want.name in have:
                continue
            zip_hash, mod_hash = _module_hashes(self.storage, want)
            rid = -1
            if self.verifier.needs(want.module):
                try:
                    rid, text = self.sumdb.record(want.module, want.version)
                except ProxyError as exc:
                    raise ExportError(f"{want.name}: {exc}") from None
                rz, rm = record_hashes(text, want.module, want.version)
                if (want.zip and zip_hash != rz) or mod_hash != rm:
                    raise ExportError(f"{want.name}: the cached files do not match {name}'s hashes "
                                      "(run verify-cache)")
                records.append((f"sumdb/{name}/lookup/{escape_path(want.module)}@{escape_version(want.version)}",
                                rid, text))
            entries.append(ModuleEntry(want.module, want.version, zip_hash, mod_hash, rid))
            for kind in want.kinds:
                key = Artifact(kind, want.module, want.version).key
                items[key] = key
            if want.zip:
                lists.setdefault(want.module, []).append(want.version)
        for module, versions in lists.items():
            items[Artifact("list", module).key] = "".join(v + "\n" for v in sorted(versions)).encode()
        tree, signed = self._head(records, dest)
        for key, rid, text in records:  # each record carries the bundle's tree head
            items[key] = lookup_data(rid, text, signed)
        if signed:
            items[f"sumdb/{name}/latest"] = signed
            for key, data in self._tiles(tree, records, dest).items():
                items[key] = data
        manifest = Manifest(self.tool, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)), name,
                            self.sumdb.db.key, tree.n, base64.b64encode(tree.hash).decode() if signed else "",
                            entries, [], dest)
        manifest.members = [self._member(n, src) for n, src in sorted(items.items())]
        self._write(out, manifest, items, created)
        return manifest

    def _head(self, records: list[tuple[str, int, bytes]], dest: Destination | None) -> tuple[tlog.Tree, bytes]:
        """Return the newest verified tree head and its note (an empty tree when none is needed)."""
        newest = self.sumdb.newest()
        if newest is None:
            if records or (dest and dest.tree_size):
                raise ExportError(f"no verified tree head of {self.sumdb.db.name} in the cache")
            return tlog.Tree(0, tlog.EMPTY_HASH), b""
        tree, signed = newest
        if dest and dest.tree_size > tree.n:
            raise ExportError(f"the destination's {self.sumdb.db.name} tree (size {dest.tree_size}) is newer "
                              f"than this cache's (size {tree.n}): prefetch something to move it forward")
        return tree, signed

    def _tiles(self, tree: tlog.Tree, records: list[tuple[str, int, bytes]],
               dest: Destination | None) -> dict[str, bytes]:
        """Return the tiles a proof needs, less the tiles the destination has; keep them in storage.

        They are the tiles the go command needs to check records (and the destination's) against
        tree, and tree against the destination's.
        """
        tiles = Tiles(self.sumdb.db.name, self.storage, fetch=self.sumdb.fetch_tile)
        try:
            for _key, rid, text in records:
                tiles.prove_record(tree, rid, text)
            for m in dest.modules if dest else ():
                if m.record >= 0:
                    if m.record >= tree.n:
                        raise tlog.TlogError(f"the destination's {m.name} is record {m.record}, beyond the tree")
                    tiles.reader(tree).read_hashes([tlog.stored_hash_index(0, m.record)])
            if dest and dest.tree_size:
                old = tlog.Tree(dest.tree_size, base64.b64decode(dest.tree_hash))
                tiles.prove_prefix(tree, old)
        except tlog.TlogError as exc:
            raise ExportError(f"checksum database {self.sumdb.db.name}: {exc}") from None
        except (ProxyError, ValueError) as exc:
            raise ExportError(f"checksum database {self.sumdb.db.name}: reading tiles: {exc}") from None
        for key, data in tiles.verified.items():
            if self.storage.stat(key) is None:
                self.storage.write(key, data)
        skip = set(dest.tiles) if dest else set()
        return {k: d for k, d in tiles.verified.items() if k not in skip}

    def _member(self, name: str, src: str | bytes) -> Member:
        if isinstance(src, bytes):
            return Member(name, len(src), hashlib.sha256(src).hexdigest())
        h, size = hashlib.sha256(), 0
        with _open(self.storage, src) as f:
            for chunk in iter(lambda: f.read(_READ), b""):
                h.update(chunk)
                size += len(chunk)
        return Member(name, size, h.hexdigest())

    def _write(self, out: str, manifest: Manifest, items: dict[str, str | bytes], created: int) -> None:
        data = manifest.dump()
        entries: list[tuple[str, int, Callable[[], contextlib.AbstractContextManager[BinaryIO]]]] = [
            (NAME, len(data), lambda: contextlib.nullcontext(io.BytesIO(data)))]
        for m in manifest.members:
            src = items[m.name]
            opener = ((lambda b=src: contextlib.nullcontext(io.BytesIO(b))) if isinstance(src, bytes)
                      else (lambda k=src: _open(self.storage, k)))
            entries.append((m.name, m.size, opener))
        write_tar(out, entries, created)


def write_tar(out: str, entries: list[tuple[str, int, Callable[[], contextlib.AbstractContextManager[BinaryIO]]]],
              mtime: int) -> None:
    """Write entries (name, size, opener) to the tar out, in the order given, reproducibly.

    Every member has mtime, mode 0644, uid and gid 0 and no owner names; a .tar.gz or .tgz is
    gzip-compressed with mtime in its header and no file name. The file appears complete or not at all.
    """
    tmp = f"{out}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as raw:
            gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=mtime) if out.endswith(
                (".tar.gz", ".tgz")) else None
            with tarfile.open(fileobj=gz or raw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for name, size, opener in entries:
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime, info.mode = size, mtime, 0o644
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    with opener() as f:
                        tar.addfile(info, f)
            if gz is not None:
                gz.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
