"""Transparency log tiles (golang.org/x/mod/sumdb/tlog): paths, the hashes in them, reading a tree from them.

TileHashReader authenticates every tile against the tree's hash before it returns any hash
from it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence

from .tlog import (
    HASH_SIZE,
    HashReader,
    TlogError,
    Tree,
    node_hash,
    read_checked,
    split_stored_hash_index,
    stored_hash_index,
    sub_tree_index,
)


@dataclasses.dataclass(frozen=True)
class Tile:
    """Tile n of height h at level l (-1: record data), holding w hashes (2**h when complete)."""

    h: int
    l: int  # noqa: E741 - Go's field name, matching the tile path
    n: int
    w: int

    def path(self) -> str:
        """Return the tile's coordinate path, "tile/H/L/NNN[.p/W]", NNN split as x001/x234/067."""
        n = self.n
        n_str = f"{n % 1000:03d}"
        while n >= 1000:
            n //= 1000
            n_str = f"x{n % 1000:03d}/{n_str}"
        p_str = f".p/{self.w}" if self.w != 1 << self.h else ""
        level = "data" if self.l == -1 else str(self.l)
        return f"tile/{self.h}/{level}/{n_str}{p_str}"


_TILE_PATH = re.compile(r"tile/([0-9]{1,2})/(data|[0-9]{1,2})/((?:x[0-9]{3}/){0,6}[0-9]{3})(?:\.p/([0-9]{1,10}))?")


def parse_tile_path(path: str) -> Tile:
    """Parse a canonical tile path as Go's tlog.ParseTilePath; raise TlogError otherwise."""
    m = _TILE_PATH.fullmatch(path)
    if m:
        h, partial = int(m[1]), m[4] is not None
        w = int(m[4]) if partial else 1 << h
        if 1 <= h <= 30 and 0 < w <= 1 << h:
            n = int(m[3].replace("x", "").replace("/", ""))
            t = Tile(h, -1 if m[2] == "data" else int(m[2]), n, w)
            if t.path() == path:
                return t
    raise TlogError(f"malformed tile path {path!r}")


def _tile_for_index(h: int, index: int) -> tuple[Tile, int, int]:
    """Return the least tile of height h holding index, and the byte span to hash."""
    level, n = split_stored_hash_index(index)
    tl = level // h
    level -= tl * h  # level within the tile
    tn = n << level >> h
    n -= tn << h >> level  # n within the tile at that level
    return Tile(h, tl, tn, (n + 1) << level), (n << level) * HASH_SIZE, ((n + 1) << level) * HASH_SIZE


def tile_for_index(h: int, index: int) -> Tile:
    """Return the tile of height h >= 1 and least width that stores hash index."""
    if h <= 0:
        raise TlogError(f"invalid tile height {h}")
    return _tile_for_index(h, index)[0]


def _tile_hash(data: bytes) -> bytes:
    """Hash the 2**k hashes in data up to their subtree root."""
    if len(data) == HASH_SIZE:
        return data
    half = len(data) // 2
    return node_hash(_tile_hash(data[:half]), _tile_hash(data[half:]))


def hash_from_tile(tile: Tile, data: bytes, index: int) -> bytes:
    """Return the hash at index from tile's data; raise TlogError if tile does not hold it."""
    if not (1 <= tile.h <= 30 and 0 <= tile.l < 64 and 1 <= tile.w <= 1 << tile.h):
        raise TlogError(f"invalid tile {tile.path()}")
    if len(data) < tile.w * HASH_SIZE:
        raise TlogError(f"data len {len(data)} too short for tile {tile.path()}")
    t1, start, end = _tile_for_index(tile.h, index)
    if tile.l != t1.l or tile.n != t1.n or tile.w < t1.w:
        raise TlogError(f"index {index} is in {t1.path()} not {tile.path()}")
    return _tile_hash(data[start:end])


def read_tile_data(tile: Tile, reader: HashReader) -> bytes:
    """Return tile's data (its hashes, concatenated) from a log's stored hashes."""
    start = tile.n << tile.h
    indexes = [stored_hash_index(tile.h * tile.l, start + i) for i in range(tile.w)]
    return b"".join(read_checked(reader, indexes))


def _tile_parent(t: Tile, k: int, n: int) -> Tile | None:
    """Return t's k'th parent among the tiles of a tree of size n, or None."""
    level, num, w = t.l + k, t.n >> (k * t.h), 1 << t.h
    limit = n >> (level * t.h)
    if (num << t.h) + w >= limit:
        if num << t.h >= limit:
            return None
        w = limit - (num << t.h)
    return Tile(t.h, level, num, w)


class TileHashReader:
    """A reader of tree's hashes from tiles of height tile_height, as Go's tlog.TileHashReader.

    fetch_tile(tile) returns tile's data (exactly tile.w * 32 bytes; caching is the caller's).
    Every tile is authenticated against tree.hash before any hash from it is returned, and
    on_verified(tiles, data), if given, is then told which tiles are safe to keep.
    An instance is a HashReader.
    """

    def __init__(self, tree: Tree, tile_height: int, fetch_tile: Callable[[Tile], bytes],
                 on_verified: Callable[[list[Tile], list[bytes]], None] | None = None) -> None:
        if not 1 <= tile_height <= 30:
            raise TlogError(f"invalid tile height {tile_height}")
        self.tree, self.height, self.fetch_tile, self.on_verified = tree, tile_height, fetch_tile, on_verified

    def __call__(self, indexes: Sequence[int]) -> list[bytes]:
        """Return read_hashes(indexes), which makes an instance a HashReader."""
        return self.read_hashes(indexes)

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        """Return the hashes at indexes, proven in the tree; raise TlogError if they cannot be."""
        if not indexes:
            return []
        h, size = self.height, self.tree.n
        order: dict[Tile, int] = {}
        tiles: list[Tile] = []

        def want(tile: Tile | None) -> int:
            if tile is None:
                raise TlogError(f"bad math in TileHashReader for tree size {size}")
            if tile not in order:
                order[tile] = len(tiles)
                tiles.append(tile)
            return order[tile]

        # First the tiles that recompute the tree hash: when it matches, they are authentic.
        stx = sub_tree_index(0, size, [])
        stx_order = [want(_tile_parent(_tile_for_index(h, x)[0], 0, size)) for x in stx]
        # Then each index's tile, after any parent tiles needed to authenticate it.
        index_order = []
        for x in indexes:
            if not 0 <= x < stored_hash_index(0, size):
                raise TlogError(f"index {x} not in tree of size {size}")
            tile = _tile_for_index(h, x)[0]
            k = 0
            while (p := _tile_parent(tile, k, size)) not in order:
                if p is None:
                    raise TlogError(f"bad math in TileHashReader: no parent for {tile.path()}")
                k += 1
            for j in range(k - 1, -1, -1):
                p = _tile_parent(tile, j, size)
                if p is None or p.w != 1 << h:  # only full tiles have parents
                    raise TlogError(f"bad math in TileHashReader: tree {size}, index {x}, tile {p}")
                want(p)
            index_order.append(want(_tile_parent(tile, 0, size)))

        data = [self.fetch_tile(t) for t in tiles]
        for t, d in zip(tiles, data):
            if len(d) != t.w * HASH_SIZE:
                raise TlogError(f"tile {t.path()} has {len(d)} bytes, want {t.w * HASH_SIZE}")
        th = b""
        for i in range(len(stx) - 1, -1, -1):
            sh = hash_from_tile(tiles[stx_order[i]], data[stx_order[i]], stx[i])
            th = sh if i == len(stx) - 1 else node_hash(sh, th)
        if th != self.tree.hash:
            raise TlogError(f"downloaded inconsistent tile: tiles do not hash to tree {size}")
        for i in range(stx_order[-1] + 1, len(tiles)):
            parent = _tile_parent(tiles[i], 1, size)
            if parent is None or order.get(parent, i) >= i:
                raise TlogError(f"bad math in TileHashReader: lost parent of {tiles[i].path()}")
            j = order[parent]
            if hash_from_tile(parent, data[j], stored_hash_index(parent.l * h, tiles[i].n)) != _tile_hash(data[i]):
                raise TlogError(f"downloaded inconsistent tile {tiles[i].path()}")
        if self.on_verified is not None:
            self.on_verified(tiles, data)
        return [hash_from_tile(tiles[j], data[j], x) for j, x in zip(index_order, indexes)]
