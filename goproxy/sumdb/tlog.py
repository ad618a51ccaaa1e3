"""Transparency log math (golang.org/x/mod/sumdb/tlog): hashes, tiles, inclusion and consistency proofs."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import re
from collections.abc import Callable, Sequence

HASH_SIZE = 32
# The hash of the empty tree (RFC 6962 section 2.1).
EMPTY_HASH = hashlib.sha256(b"").digest()

# A hash reader returns the stored hashes at the given stored hash indexes, one per index.
HashReader = Callable[[Sequence[int]], Sequence[bytes]]


class TlogError(ValueError):
    """Malformed log data, a proof that does not check out or an inconsistent tile."""


def record_hash(data: bytes) -> bytes:
    """Return the leaf hash of record data: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the hash of an interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


@dataclasses.dataclass(frozen=True)
class Tree:
    """A signed tree head: n records whose Merkle tree hash is hash."""

    n: int
    hash: bytes


_TREE_PREFIX = "go.sum database tree\n"
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def format_tree(tree: Tree) -> str:
    """Return the note text for tree, as the checksum database signs it."""
    return f"{_TREE_PREFIX}{tree.n}\n{base64.b64encode(tree.hash).decode()}\n"


def parse_tree(text: str) -> Tree:
    r"""Parse "go.sum database tree\nN\nhash\n", ignoring later lines; raise TlogError otherwise."""
    if not text.startswith(_TREE_PREFIX) or text.count("\n") < 3 or len(text) > 1_000_000:
        raise TlogError("malformed tree note")
    lines = text.split("\n", 3)
    if not _DECIMAL.fullmatch(lines[1]) or int(lines[1]) >= 1 << 63:
        raise TlogError(f"malformed tree note: bad size {lines[1]!r}")
    try:
        h = base64.b64decode(lines[2].encode("ascii"), validate=True)
    except (binascii.Error, UnicodeError, ValueError):
        h = b""
    if len(h) != HASH_SIZE:
        raise TlogError(f"malformed tree note: bad hash {lines[2]!r}")
    return Tree(int(lines[1]), h)


def parse_record(msg: bytes) -> tuple[int, bytes, bytes]:
    """Split a lookup response into (id, text, tree note); raise TlogError if malformed."""
    first, nl, msg = msg.partition(b"\n")
    i = msg.find(b"\n\n")
    text, rest = msg[: i + 1], msg[i + 2 :]
    try:
        ok = bool(nl) and i >= 0 and bool(re.fullmatch(rb"[0-9]{1,18}", first))
        ok = ok and not any(c < " " and c != "\n" for c in text.decode("utf-8"))
    except UnicodeDecodeError:
        ok = False
    if not ok:
        raise TlogError("malformed record data")
    return int(first), text, rest


def _maxpow2(n: int) -> tuple[int, int]:
    """Return (k, l): k = 2**l is the largest power of two smaller than n (1 for n <= 2)."""
    level = max((n - 1).bit_length() - 1, 0)
    return 1 << level, level


def _trailing_zeros(n: int) -> int:
    return (n & -n).bit_length() - 1


def stored_hash_index(level: int, n: int) -> int:
    """Map tree coordinates (level, n) to the dense order hashes are stored in."""
    if level < 0 or n < 0:
        raise TlogError(f"invalid hash coordinates ({level}, {n})")
    n = ((n + 1) << level) - 1  # level L's n'th hash follows level L-1's (2n+1)'th hash
    return 2 * n - bin(n).count("1") + level  # n + n/2 + n/4 + ... + level


def split_stored_hash_index(index: int) -> tuple[int, int]:
    """Invert stored_hash_index: map index to (level, n)."""
    if index < 0:
        raise TlogError(f"invalid stored hash index {index}")
    n = index // 2
    index_n = stored_hash_index(0, n)
    while True:
        x = index_n + 1 + _trailing_zeros(n + 1)  # record n adds 1 + trailing zeros(n+1) hashes
        if x > index:
            break
        n, index_n = n + 1, x
    level = index - index_n
    return level, n >> level


def stored_hashes(n: int, data: bytes, reader: HashReader) -> list[bytes]:
    """Return the hashes to store from stored_hash_index(0, n) on when appending record n."""
    h = record_hash(data)
    m = _trailing_zeros(n + 1)
    old = _read(reader, [stored_hash_index(i, (n >> i) - 1) for i in range(m - 1, -1, -1)])
    hashes = [h]
    for i in range(m):
        h = node_hash(old[m - 1 - i], h)
        hashes.append(h)
    return hashes


def _read(reader: HashReader, indexes: list[int]) -> list[bytes]:
    if not indexes:
        return []
    hashes = list(reader(indexes))
    if len(hashes) != len(indexes) or any(len(h) != HASH_SIZE for h in hashes):
        raise TlogError(f"hash reader returned {len(hashes)} hashes for {len(indexes)} indexes")
    return hashes


def _sub_tree_index(lo: int, hi: int, need: list[int]) -> list[int]:
    """Append the stored indexes needed to hash the subtree of records [lo, hi) to need; return need."""
    while lo < hi:
        k, level = _maxpow2(hi - lo + 1)
        need.append(stored_hash_index(level, lo >> level))
        lo += k
    return need


def _sub_tree_hash(lo: int, hi: int, hashes: list[bytes]) -> tuple[bytes, list[bytes]]:
    """Hash records [lo, hi) from the hashes _sub_tree_index asked for; return it and the leftovers."""
    num = 0
    while lo < hi:
        k, _ = _maxpow2(hi - lo + 1)
        num, lo = num + 1, lo + k
    h = hashes[num - 1]
    for i in range(num - 2, -1, -1):
        h = node_hash(hashes[i], h)
    return h, hashes[num:]


# A walk visits the subtrees a proof needs, in order, asking sub(lo, hi) for each one's hash.
_Walk = Callable[[Callable[[int, int], bytes]], list[bytes]]


def _run_walk(reader: HashReader, walk: _Walk) -> list[bytes]:
    """Run walk twice: once to list the stored hashes it needs, once with them read."""
    need: list[int] = []

    def plan(lo: int, hi: int) -> bytes:
        _sub_tree_index(lo, hi, need)
        return b""

    walk(plan)
    hashes = _read(reader, need)

    def sub(lo: int, hi: int) -> bytes:
        nonlocal hashes
        h, hashes = _sub_tree_hash(lo, hi, hashes)
        return h

    return walk(sub)


def tree_hash(n: int, reader: HashReader) -> bytes:
    """Return the root hash of the first n records, reading at most 1 + log2(n) hashes."""
    if n < 0:
        raise TlogError(f"invalid tree size {n}")
    return _run_walk(reader, lambda sub: [sub(0, n)])[0] if n else EMPTY_HASH


def _leaf_proof(lo: int, hi: int, n: int, sub: Callable[[int, int], bytes]) -> list[bytes]:
    """Walk toward leaf n of [lo, hi), collecting the hash of each path not taken."""
    if lo + 1 == hi:
        return []
    k, _ = _maxpow2(hi - lo)
    if n < lo + k:
        p = _leaf_proof(lo, lo + k, n, sub)
        return [*p, sub(lo + k, hi)]
    th = sub(lo, lo + k)
    return [*_leaf_proof(lo + k, hi, n, sub), th]


def prove_record(t: int, n: int, reader: HashReader) -> list[bytes]:
    """Return the proof (RFC 6962 audit path) that the tree of size t contains record n."""
    if t < 0 or n < 0 or n >= t:
        raise TlogError(f"invalid inputs in prove_record({t}, {n})")
    return _run_walk(reader, lambda sub: _leaf_proof(0, t, n, sub))


def _run_record_proof(p: Sequence[bytes], lo: int, hi: int, n: int, leaf: bytes) -> bytes:
    if lo + 1 == hi:
        if p:
            raise TlogError("invalid transparency proof")
        return leaf
    if not p:
        raise TlogError("invalid transparency proof")
    k, _ = _maxpow2(hi - lo)
    if n < lo + k:
        return node_hash(_run_record_proof(p[:-1], lo, lo + k, n, leaf), p[-1])
    return node_hash(p[-1], _run_record_proof(p[:-1], lo + k, hi, n, leaf))


def check_record(proof: Sequence[bytes], t: int, th: bytes, n: int, h: bytes) -> None:
    """Raise TlogError unless proof shows tree (t, th) has record n with hash h."""
    if t < 0 or n < 0 or n >= t:
        raise TlogError(f"invalid inputs in check_record({t}, {n})")
    if _run_record_proof(proof, 0, t, n, h) != th:
        raise TlogError("invalid transparency proof")


def _tree_proof(lo: int, hi: int, n: int, sub: Callable[[int, int], bytes]) -> list[bytes]:
    """Walk [lo, hi) toward the old tree's right edge n, collecting the hashes needed."""
    if n == hi:
        return [] if lo == 0 else [sub(lo, hi)]
    k, _ = _maxpow2(hi - lo)
    if n <= lo + k:
        p = _tree_proof(lo, lo + k, n, sub)
        return [*p, sub(lo + k, hi)]
    th = sub(lo, lo + k)
    return [*_tree_proof(lo + k, hi, n, sub), th]


def prove_tree(t: int, n: int, reader: HashReader) -> list[bytes]:
    """Return the proof (RFC 6962 consistency proof) that the tree of size t extends size n."""
    if t < 1 or n < 1 or n > t:
        raise TlogError(f"invalid inputs in prove_tree({t}, {n})")
    return _run_walk(reader, lambda sub: _tree_proof(0, t, n, sub))


def _run_tree_proof(p: Sequence[bytes], lo: int, hi: int, n: int, old: bytes) -> tuple[bytes, bytes]:
    """Return the implied (old tree, new tree) hashes of the subtree [lo, hi)."""
    if n == hi:
        if lo == 0:
            if p:
                raise TlogError("invalid transparency proof")
            return old, old
        if len(p) != 1:
            raise TlogError("invalid transparency proof")
        return p[0], p[0]
    if not p:
        raise TlogError("invalid transparency proof")
    k, _ = _maxpow2(hi - lo)
    if n <= lo + k:
        oh, th = _run_tree_proof(p[:-1], lo, lo + k, n, old)
        return oh, node_hash(th, p[-1])
    oh, th = _run_tree_proof(p[:-1], lo + k, hi, n, old)
    return node_hash(p[-1], oh), node_hash(p[-1], th)


def check_tree(proof: Sequence[bytes], t: int, th: bytes, n: int, h: bytes) -> None:
    """Raise TlogError unless proof shows tree (t, th) extends the tree (n, h)."""
    if t < 1 or n < 1 or n > t:
        raise TlogError(f"invalid inputs in check_tree({t}, {n})")
    if _run_tree_proof(proof, 0, t, n, h) != (h, th):
        raise TlogError("invalid transparency proof")


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
    return b"".join(_read(reader, indexes))


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
        stx = _sub_tree_index(0, size, [])
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
