"""Tests for goproxy.tlog: index math, RFC 6962 proofs, tile paths, tile authentication, real test DB."""

from __future__ import annotations

import base64
import hashlib
import urllib.request
from collections.abc import Sequence

import pytest

from goproxy.sumdb import note, tlog
from goproxy.sumdb.tiles import Tile, TileHashReader, hash_from_tile, parse_tile_path, read_tile_data, tile_for_index
from goproxy.sumdb.tlog import TlogError, Tree
from tests.support.gotestproxy import GoTestProxy


class Log:
    """Log is an in-memory transparency log built with tlog.stored_hashes, the way a server writes one."""

    def __init__(self, n: int = 0) -> None:
        self.records: list[bytes] = []
        self.hashes: list[bytes] = []
        for i in range(n):
            self.append(f"record {i}\n".encode())

    def read(self, indexes: Sequence[int]) -> list[bytes]:
        return [self.hashes[i] for i in indexes]

    def append(self, data: bytes) -> None:
        n = len(self.records)
        assert len(self.hashes) == tlog.stored_hash_index(0, n)
        self.hashes.extend(tlog.stored_hashes(n, data, self.read))
        self.records.append(data)

    def tree(self, n: int | None = None) -> Tree:
        n = len(self.records) if n is None else n
        return Tree(n, tlog.tree_hash(n, self.read))

    def tile(self, tile: Tile) -> bytes:
        return read_tile_data(tile, self.read)


# Independent oracles: RFC 6962 section 2.1 definitions, written recursively over leaf hashes.
def mth(leaves: Sequence[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return tlog.node_hash(mth(leaves[:k]), mth(leaves[k:]))


def rfc_path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return [*rfc_path(m, leaves[:k]), mth(leaves[k:])]
    return [*rfc_path(m - k, leaves[k:]), mth(leaves[:k])]


def rfc_proof(m: int, leaves: Sequence[bytes], complete: bool = True) -> list[bytes]:
    if m == len(leaves):
        return [] if complete else [mth(leaves)]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m <= k:
        return [*rfc_proof(m, leaves[:k], complete), mth(leaves[k:])]
    return [*rfc_proof(m - k, leaves[k:], False), mth(leaves[:k])]


def leaves(log: Log) -> list[bytes]:
    return [tlog.record_hash(r) for r in log.records]


def test_record_and_node_hash_follow_rfc6962() -> None:
    assert tlog.record_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert tlog.node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()


@pytest.mark.parametrize(("level", "n", "index"), [
    (0, 0, 0), (0, 1, 1), (1, 0, 2), (0, 2, 3), (0, 3, 4), (1, 1, 5), (2, 0, 6), (0, 4, 7), (0, 8, 15), (3, 0, 14),
])
def test_stored_hash_index_known_values(level: int, n: int, index: int) -> None:
    assert tlog.stored_hash_index(level, n) == index
    assert tlog.split_stored_hash_index(index) == (level, n)


def test_split_stored_hash_index_inverts_every_index() -> None:
    seen = set()
    for index in range(5000):
        level, n = tlog.split_stored_hash_index(index)
        assert tlog.stored_hash_index(level, n) == index
        seen.add((level, n))
    assert len(seen) == 5000


def test_negative_coordinates_are_errors() -> None:
    with pytest.raises(TlogError):
        tlog.stored_hash_index(0, -1)
    with pytest.raises(TlogError):
        tlog.split_stored_hash_index(-1)


def test_tree_hash_matches_rfc6962_for_every_size() -> None:
    log = Log(70)
    for n in range(71):
        assert tlog.tree_hash(n, log.read) == mth(leaves(log)[:n]), n
    assert tlog.tree_hash(0, log.read) == tlog.EMPTY_HASH


def test_reader_returning_wrong_count_is_an_error() -> None:
    with pytest.raises(TlogError, match="hashes"):
        tlog.tree_hash(3, lambda idx: [b"\x00" * 32])


def test_record_proofs_match_rfc6962_and_check() -> None:
    log = Log(33)
    for t in range(1, 34):
        tree = log.tree(t)
        for n in range(t):
            proof = tlog.prove_record(t, n, log.read)
            assert proof == rfc_path(n, leaves(log)[:t])
            tlog.check_record(proof, t, tree.hash, n, tlog.record_hash(log.records[n]))


def test_tampered_record_proof_is_rejected() -> None:
    log = Log(21)
    tree = log.tree()
    for n in (0, 7, 16, 20):
        proof = tlog.prove_record(tree.n, n, log.read)
        leaf = tlog.record_hash(log.records[n])
        for i in range(len(proof)):
            bad = list(proof)
            bad[i] = bytes([proof[i][0] ^ 1]) + proof[i][1:]
            with pytest.raises(TlogError, match="invalid transparency proof"):
                tlog.check_record(bad, tree.n, tree.hash, n, leaf)
        for bad in (proof[:-1], [*proof, proof[0]]):
            with pytest.raises(TlogError):
                tlog.check_record(bad, tree.n, tree.hash, n, leaf)
        with pytest.raises(TlogError):
            tlog.check_record(proof, tree.n, tree.hash, n, tlog.record_hash(b"forged\n"))
        with pytest.raises(TlogError):
            tlog.check_record(proof, tree.n, tlog.record_hash(b"other root"), n, leaf)


def test_tree_proofs_match_rfc6962_and_check() -> None:
    log = Log(33)
    for t in range(1, 34):
        new = log.tree(t)
        for n in range(1, t + 1):
            proof = tlog.prove_tree(t, n, log.read)
            assert proof == rfc_proof(n, leaves(log)[:t])
            tlog.check_tree(proof, t, new.hash, n, log.tree(n).hash)


def test_tampered_tree_proof_is_rejected() -> None:
    log = Log(30)
    new = log.tree()
    for n in (1, 5, 16, 29):
        old = log.tree(n)
        proof = tlog.prove_tree(new.n, n, log.read)
        for i in range(len(proof)):
            bad = list(proof)
            bad[i] = bytes([proof[i][0] ^ 1]) + proof[i][1:]
            with pytest.raises(TlogError):
                tlog.check_tree(bad, new.n, new.hash, n, old.hash)
        with pytest.raises(TlogError):
            tlog.check_tree([*proof, proof[0]], new.n, new.hash, n, old.hash)
        with pytest.raises(TlogError):
            tlog.check_tree(proof, new.n, new.hash, n, tlog.record_hash(b"forked tree"))


def test_proofs_reject_invalid_sizes() -> None:
    log = Log(4)
    for call in (lambda: tlog.prove_record(4, 4, log.read), lambda: tlog.prove_record(4, -1, log.read),
                 lambda: tlog.prove_tree(4, 0, log.read), lambda: tlog.prove_tree(4, 5, log.read),
                 lambda: tlog.check_record([], 0, b"", 0, b""), lambda: tlog.check_tree([], 3, b"", 4, b""),
                 lambda: tlog.tree_hash(-1, log.read)):
        with pytest.raises(TlogError, match="invalid"):
            call()


TREE_TEXT = "go.sum database tree\n2\nnND/nri/U0xuHUrYSy0HtMeal2vzD9V4k/BO79C+QeI=\n"


def test_parse_tree_reads_size_and_hash() -> None:
    tree = tlog.parse_tree(TREE_TEXT)
    assert tree == Tree(2, base64.b64decode("nND/nri/U0xuHUrYSy0HtMeal2vzD9V4k/BO79C+QeI="))
    assert tlog.format_tree(tree) == TREE_TEXT
    assert tlog.parse_tree(TREE_TEXT + "future line\n") == tree


@pytest.mark.parametrize("text", [
    "", "go.sum database tree\n2\n", "go.sum database tree v2\n2\nnND/nri/U0xuHUrYSy0HtMeal2vzD9V4k/BO79C+QeI=\n",
    TREE_TEXT.replace("\n2\n", "\n02\n"), TREE_TEXT.replace("\n2\n", "\n+2\n"), TREE_TEXT.replace("\n2\n", "\n-2\n"),
    TREE_TEXT.replace("\n2\n", "\n\n"), TREE_TEXT.replace("\n2\n", "\n9223372036854775808\n"),
    TREE_TEXT.replace("QeI=", "QeI"), TREE_TEXT.replace("nND/", ""), TREE_TEXT.replace("nND/", "nND!"),
    TREE_TEXT.rstrip("\n"),
])
def test_parse_tree_rejects_malformed_text(text: str) -> None:
    with pytest.raises(TlogError, match="malformed tree note"):
        tlog.parse_tree(text)


def test_parse_record_splits_lookup_response() -> None:
    msg = b"5\nrsc.io/quote v1.5.2 h1:x\nrsc.io/quote v1.5.2/go.mod h1:y\n\n" + TREE_TEXT.encode() + b"\n- sig\n"
    rid, text, rest = tlog.parse_record(msg)
    assert (rid, text) == (5, b"rsc.io/quote v1.5.2 h1:x\nrsc.io/quote v1.5.2/go.mod h1:y\n")
    assert rest == TREE_TEXT.encode() + b"\n- sig\n"


@pytest.mark.parametrize("msg", [b"", b"5", b"x\ntext\n\n", b"-1\ntext\n\n", b"5\ntext\n", b"5\nte\txt\n\n",
                                 b"5\n\xff\n\n"])
def test_parse_record_rejects_malformed_data(msg: bytes) -> None:
    with pytest.raises(TlogError, match="malformed record"):
        tlog.parse_record(msg)


TILE_PATHS = [
    (Tile(3, 4, 1234067, 1), "tile/3/4/x001/x234/067.p/1"),  # the examples in Go's tlog.Tile docs
    (Tile(3, 4, 1234067, 8), "tile/3/4/x001/x234/067"),
    (Tile(8, 0, 0, 256), "tile/8/0/000"),
    (Tile(8, 0, 0, 5), "tile/8/0/000.p/5"),
    (Tile(8, 2, 1000, 256), "tile/8/2/x001/000"),
    (Tile(8, -1, 0, 5), "tile/8/data/000.p/5"),
    (Tile(8, -1, 12, 256), "tile/8/data/012"),
    (Tile(30, 63, 999, 1 << 30), "tile/30/63/999"),
]


@pytest.mark.parametrize(("tile", "path"), TILE_PATHS, ids=[p for _, p in TILE_PATHS])
def test_tile_path_round_trips(tile: Tile, path: str) -> None:
    assert tile.path() == path
    assert parse_tile_path(path) == tile


@pytest.mark.parametrize("path", [
    "", "tile/8/0", "tiles/8/0/000", "tile/8/0/00", "tile/8/0/0000", "tile/8/0/x000/000", "tile/8/0/1x00",
    "tile/8/0/000/", "tile/08/0/000", "tile/8/00/000", "tile/0/0/000", "tile/31/0/000", "tile/8/-1/000",
    "tile/8/0/000.p/0", "tile/8/0/000.p/256", "tile/8/0/000.p/05", "tile/8/0/000.p/", "tile/8/0/000.p",
    "tile/+8/0/000", "tile/8/0/\u0661\u0662\u0663", "tile/8/data.p/5", "/tile/8/0/000", "tile/8/0/x001/x002/x003/"
    "x004/x005/x006/x007/008",
])
def test_parse_tile_path_rejects_non_canonical_paths(path: str) -> None:
    with pytest.raises(TlogError, match="malformed tile path"):
        parse_tile_path(path)


@pytest.mark.parametrize("height", [1, 2, 3, 8])
def test_hash_from_tile_finds_every_stored_hash(height: int) -> None:
    log = Log(40)
    for index in range(len(log.hashes)):
        tile = tile_for_index(height, index)
        assert hash_from_tile(tile, log.tile(tile), index) == log.hashes[index]
        full = Tile(tile.h, tile.l, tile.n, 1 << tile.h)
        if len(log.hashes) > tlog.stored_hash_index(full.l * full.h, ((full.n + 1) << full.h) - 1):
            assert hash_from_tile(full, log.tile(full), index) == log.hashes[index]


def test_hash_from_tile_rejects_wrong_tile_and_short_data() -> None:
    log = Log(16)
    tile = tile_for_index(2, 9)
    with pytest.raises(TlogError, match="too short"):
        hash_from_tile(tile, log.tile(tile)[:-1], 9)
    other = Tile(2, 0, tile.n + 1, 4)
    with pytest.raises(TlogError, match="is in"):
        hash_from_tile(other, log.tile(other), 9)
    with pytest.raises(TlogError, match="invalid tile"):
        hash_from_tile(Tile(2, 0, 0, 5), b"\x00" * 5 * 32, 0)


class TileServer:
    """TileServer serves a Log's tiles, recording fetches, optionally corrupting one tile slot."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.fetched: list[str] = []
        self.corrupt: tuple[str, int] | None = None

    def __call__(self, tile: Tile) -> bytes:
        self.fetched.append(tile.path())
        data = bytearray(self.log.tile(tile))
        if self.corrupt and self.corrupt[0] == tile.path():
            data[self.corrupt[1] * 32] ^= 1
        return bytes(data)


def test_tile_reader_fetches_the_tiles_go_does() -> None:
    # The worked example in tile.go: h = 2, N = 15, reading hash (0, 1).
    server = TileServer(Log(15))
    reader = TileHashReader(server.log.tree(), 2, server)
    assert reader.read_hashes([tlog.stored_hash_index(0, 1)]) == [server.log.hashes[1]]
    assert server.fetched == ["tile/2/1/000.p/3", "tile/2/0/003.p/3", "tile/2/0/000"]


@pytest.mark.parametrize(("size", "height"), [(1, 2), (15, 2), (16, 2), (64, 2), (70, 2), (70, 3), (300, 8), (33, 1)])
def test_tile_reader_returns_every_hash_of_the_tree(size: int, height: int) -> None:
    log = Log(size)
    verified: list[list[Tile]] = []
    reader = TileHashReader(log.tree(), height, TileServer(log), lambda tiles, data: verified.append(tiles))
    indexes = list(range(tlog.stored_hash_index(0, size)))
    assert reader(indexes) == log.hashes[: len(indexes)]
    assert len(verified) == 1
    for n in range(1, size + 1):
        assert tlog.tree_hash(n, reader) == log.tree(n).hash
    tlog.check_record(tlog.prove_record(size, size - 1, reader), size, log.tree().hash, size - 1,
                      tlog.record_hash(log.records[-1]))


def test_tile_reader_never_returns_a_corrupted_hash() -> None:
    log = Log(70)
    server = TileServer(log)
    reader = TileHashReader(log.tree(), 2, server)
    targets = [tlog.stored_hash_index(0, n) for n in (0, 5, 37, 69)] + [tlog.stored_hash_index(2, 3)]
    for target in targets:
        server.fetched, server.corrupt = [], None
        assert reader.read_hashes([target]) == [log.hashes[target]]
        tiles = list(server.fetched)
        for path in tiles:
            for slot in range(parse_tile_path(path).w):
                server.corrupt = (path, slot)
                try:
                    got = reader.read_hashes([target])
                except TlogError as e:
                    assert "inconsistent tile" in str(e)
                else:
                    assert got == [log.hashes[target]], (path, slot)
        level, n = tlog.split_stored_hash_index(target)
        if level == 0:  # corrupting the slot that holds the requested leaf itself is always caught
            leaf_tile = next(p for p in tiles if p.startswith(f"tile/2/0/{n >> 2:03d}"))
            server.corrupt = (leaf_tile, n % 4)
            with pytest.raises(TlogError, match="inconsistent tile"):
                reader.read_hashes([target])


def test_tile_reader_rejects_tiles_for_another_tree() -> None:
    log = Log(40)
    forged = Tree(40, tlog.record_hash(b"not the root"))
    with pytest.raises(TlogError, match="inconsistent tile"):
        TileHashReader(forged, 2, TileServer(log)).read_hashes([0])


def test_tile_reader_rejects_index_outside_tree() -> None:
    log = Log(10)
    reader = TileHashReader(log.tree(), 2, TileServer(log))
    with pytest.raises(TlogError, match="not in tree"):
        reader.read_hashes([tlog.stored_hash_index(0, 10)])
    with pytest.raises(TlogError, match="not in tree"):
        reader.read_hashes([-1])


def test_tile_reader_rejects_tile_of_wrong_length() -> None:
    log = Log(10)
    reader = TileHashReader(log.tree(), 2, lambda tile: log.tile(tile) + b"\x00" * 32)
    with pytest.raises(TlogError, match="bytes, want"):
        reader.read_hashes([0])


def test_tile_reader_detects_fork_against_older_tree() -> None:
    # What a client does with a newer signed tree head: recompute its old tree's hash from the new tiles.
    log = Log(50)
    old = log.tree(30)
    forked = Log()
    for i in range(50):
        forked.append(b"evil record\n" if i == 29 else log.records[i])
    reader = TileHashReader(forked.tree(), 2, TileServer(forked))
    assert tlog.tree_hash(30, reader) != old.hash
    assert tlog.tree_hash(30, TileHashReader(log.tree(), 2, TileServer(log))) == old.hash


# Integration: Go's own checksum database test server (cmd/go's test binary run with -proxy).

SUMDB_VKEY = "localhost.localdev/sumdb+00000c67+AcTrnkbUA+TU4heY3hkjiSES/DSQniBqIeQ/YppAUtK6"
@pytest.fixture
def sumdb_url(testproxy: GoTestProxy) -> str:
    """sumdb_url is the base URL of the checksum database of Go's test module proxy."""
    return testproxy.url + "/sumdb-direct"


def fetch(url: str) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=30) as resp:
        data: bytes = resp.read()
        return data


def test_real_checksum_db_record_is_proven_in_signed_tree(sumdb_url: str) -> None:
    verifier = note.Verifier(SUMDB_VKEY)
    # The server may still be adding its modules, so the lookup's tree can be newer than /latest's.
    older = tlog.parse_tree(note.open_note(fetch(sumdb_url + "/latest"), verifier))
    rid, text, tree_note = tlog.parse_record(fetch(sumdb_url + "/lookup/rsc.io/quote@v1.5.2"))
    assert text == (b"rsc.io/quote v1.5.2 h1:3fEykkD9k7lYzXqCYrwGAf7iNhbk4yCjHmKBN9td4L0=\n"
                    b"rsc.io/quote v1.5.2/go.mod h1:LzX7hefJvL54yjefDEDHNONDjII0t9xZLPXsUe+TKr0=\n")
    tree = tlog.parse_tree(note.open_note(tree_note, verifier))
    assert older.n <= tree.n
    assert 0 <= rid < tree.n
    for height in (8, 2):
        reader = TileHashReader(tree, height, lambda t: fetch(f"{sumdb_url}/{t.path()}"))
        assert reader.read_hashes([tlog.stored_hash_index(0, rid)]) == [tlog.record_hash(text)]
        proof = tlog.prove_record(tree.n, rid, reader)
        tlog.check_record(proof, tree.n, tree.hash, rid, tlog.record_hash(text))
        # The older signed head is on the newer one's timeline, shown both ways a client can.
        assert tlog.tree_hash(older.n, reader) == older.hash
        if older.n > 0:
            tlog.check_tree(tlog.prove_tree(tree.n, older.n, reader), tree.n, tree.hash, older.n, older.hash)


def latest_nonempty(sumdb_url: str) -> tlog.Tree:
    """Return the test database's signed tree head after one lookup (it adds records as they are
    looked up, so before any lookup its tree may be empty)."""
    fetch(sumdb_url + "/lookup/rsc.io/quote@v1.5.2")
    tree = tlog.parse_tree(note.open_note(fetch(sumdb_url + "/latest"), note.Verifier(SUMDB_VKEY)))
    assert tree.n > 0
    return tree


def test_real_checksum_db_data_tile_matches_leaf_hashes(sumdb_url: str) -> None:
    tree = latest_nonempty(sumdb_url)
    w = min(tree.n, 256)
    data_tile = Tile(8, -1, 0, w)
    records = fetch(f"{sumdb_url}/{data_tile.path()}").split(b"\n\n")
    assert records[-1] == b""
    assert len(records) == w + 1
    reader = TileHashReader(tree, 8, lambda t: fetch(f"{sumdb_url}/{t.path()}"))
    leaves = reader.read_hashes([tlog.stored_hash_index(0, i) for i in range(w)])
    assert leaves == [tlog.record_hash(r + b"\n") for r in records[:-1]]


def test_real_checksum_db_tampered_tile_is_rejected(sumdb_url: str) -> None:
    tree = latest_nonempty(sumdb_url)

    def tampered(t: Tile) -> bytes:
        data = bytearray(fetch(f"{sumdb_url}/{t.path()}"))
        data[-1] ^= 0x80
        return bytes(data)

    with pytest.raises(TlogError, match="inconsistent tile"):
        TileHashReader(tree, 8, tampered).read_hashes([tlog.stored_hash_index(0, tree.n - 1)])
