"""Checksum database proofs for bundles: where tiles come from, and which tiles a proof used."""

from __future__ import annotations

from collections.abc import Callable

from ..storage.base import Storage
from ..sumdb import tlog
from ..sumdb.client import TILE_HEIGHT
from ..sumdb.tiles import Tile, TileHashReader


class MissingTile(tlog.TlogError):
    """A tile a proof needs that neither the bundle nor the cache (nor the database) has."""

    def __init__(self, path: str) -> None:
        super().__init__(f"tile {path} is missing")
        self.path = path


class Tiles:
    """Tile data of one checksum database, looked for in layers.

    First extra (a bundle's tiles by cache key), then storage, each by exact path then as a
    prefix of the full tile, then fetch.

    Every tile a reader authenticated against its tree is kept in verified (cache key → data).
    """

    def __init__(self, db_name: str, storage: Storage, extra: Callable[[str], bytes | None] = lambda key: None,
                 fetch: Callable[[Tile], bytes] | None = None) -> None:
        self.db_name = db_name
        self.storage = storage
        self.extra = extra
        self.fetch = fetch
        self.verified: dict[str, bytes] = {}
        self._memo: dict[str, bytes] = {}

    def key(self, tile: Tile) -> str:
        """Return the cache key (and bundle member name) of tile."""
        return f"sumdb/{self.db_name}/{tile.path()}"

    def get(self, tile: Tile) -> bytes:
        """Return tile's data, not yet authenticated; raise MissingTile when nothing has it."""
        key = self.key(tile)
        data = self._memo.get(key)
        if data is not None:
            return data
        full = Tile(tile.h, tile.l, tile.n, 1 << tile.h)
        for k, width in ((key, tile.w), (self.key(full), full.w)):
            for source in (self.extra, self.storage.read):
                found = source(k)
                if found is not None and len(found) == 32 * width:
                    self._memo[key] = found[:32 * tile.w]
                    return self._memo[key]
        if self.fetch is None:
            raise MissingTile(key)
        self._memo[key] = self.fetch(tile)
        return self._memo[key]

    def reader(self, tree: tlog.Tree) -> TileHashReader:
        """Return a hash reader of tree over these tiles, recording the tiles it authenticates."""
        return TileHashReader(tree, TILE_HEIGHT, self.get, self._verified)

    def _verified(self, tiles: list[Tile], data: list[bytes]) -> None:
        for tile, d in zip(tiles, data):
            self.verified[self.key(tile)] = d

    def prove_record(self, tree: tlog.Tree, record_id: int, text: bytes) -> None:
        """Check that tree holds record record_id with text, as the go command checks a lookup.

        Raises TlogError (MissingTile when a tile is not to be had).
        """
        if not 0 <= record_id < tree.n:
            raise tlog.TlogError(f"record {record_id} is outside the tree of size {tree.n}")
        got = self.reader(tree).read_hashes([tlog.stored_hash_index(0, record_id)])[0]
        if got != tlog.record_hash(text):
            raise tlog.TlogError(f"record {record_id} is not the one in the tree of size {tree.n}")

    def prove_prefix(self, tree: tlog.Tree, old: tlog.Tree) -> None:
        """Check that old is a prefix of tree, as the go command checks a newer tree head.

        Raises TlogError: MissingTile, or a plain TlogError when the trees are inconsistent.
        """
        if old.n == 0:
            return
        if old.n > tree.n or tlog.tree_hash(old.n, self.reader(tree)) != old.hash:
            raise tlog.TlogError(f"the tree of size {old.n} is not a prefix of the tree of size {tree.n}")


def record_hashes(text: bytes, module: str, version: str) -> tuple[str, str]:
    """Return the (zip, go.mod) h1 hashes a record's text gives module@version ("" when absent)."""
    zip_hash = mod_hash = ""
    for line in text.decode("utf-8", "replace").splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0] == module:
            if fields[1] == version:
                zip_hash = fields[2]
            elif fields[1] == version + "/go.mod":
                mod_hash = fields[2]
    return zip_hash, mod_hash


def lookup_data(record_id: int, text: bytes, signed_tree: bytes) -> bytes:
    """Return a lookup answer as the checksum database sends it: id, record text, signed tree head."""
    return f"{record_id}\n".encode() + text + b"\n" + signed_tree
