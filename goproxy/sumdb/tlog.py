"""Transparency log math (golang.org/x/mod/sumdb/tlog): hashes, inclusion and consistency proofs.

Tiles, and reading a tree's hashes from them, are in tiles.py.
"""

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
    old = read_checked(reader, [stored_hash_index(i, (n >> i) - 1) for i in range(m - 1, -1, -1)])
    hashes = [h]
    for i in range(m):
        h = node_hash(old[m - 1 - i], h)
        hashes.append(h)
    return hashes


def read_checked(reader: HashReader, indexes: list[int]) -> list[bytes]:
    """Return reader's hashes at indexes, checked to be one HASH_SIZE hash per index.

    reader is not called for no indexes. Raises TlogError when reader returns another number of
    hashes or a hash of another size.
    """
    if not indexes:
        return []
    hashes = list(reader(indexes))
    if len(hashes) != len(indexes) or any(len(h) != HASH_SIZE for h in hashes):
        raise TlogError(f"hash reader returned {len(hashes)} hashes for {len(indexes)} indexes")
    return hashes


def sub_tree_index(lo: int, hi: int, need: list[int]) -> list[int]:
    """Append the stored indexes needed to hash the subtree of records [lo, hi) to need; return need."""
    while lo < hi:
        k, level = _maxpow2(hi - lo + 1)
        need.append(stored_hash_index(level, lo >> level))
        lo += k
    return need


def _sub_tree_hash(lo: int, hi: int, hashes: list[bytes]) -> tuple[bytes, list[bytes]]:
    """Hash records [lo, hi) from the hashes sub_tree_index asked for; return it and the leftovers."""
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
        sub_tree_index(lo, hi, need)
        return b""

    walk(plan)
    hashes = read_checked(reader, need)

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
