"""prefetch, bundle export and import, and check, as commands against a growing test checksum DB."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from goproxy.sumdb import dirhash
from goproxy.sumdb.client import verified_tree_key
from tests.support.airgap import edit_bundle, goproxy, read_bundle, snapshot
from tests.support.sumdbserver import Signer, SumDBServer
from tests.support.upstream import Module, Upstream, generate

DB = "sumdb.airgap.test"
EPOCH = "1700000000"


@dataclass
class World:
    """A module proxy with its growing checksum DB, a source cache and a destination cache."""

    upstream: Upstream
    db: SumDBServer
    tmp: Path
    mods: dict[str, Module]

    @property
    def src(self) -> str:
        return str(self.tmp / "src")

    @property
    def dst(self) -> Path:
        return self.tmp / "dst"

    def online(self) -> list[str]:
        return ["-cache", self.src, "-upstream", self.upstream.url, "-gosumdb", self.db.vkey, "-progress", "off"]

    def add(self, path: str, version: str = "v1.0.0") -> Module:
        m = self.db.add(generate(path, version))
        self.mods[f"{path}@{version}"] = m
        return m

    def export(self, out: Path, *args: str, check: bool = True) -> str:
        env = {"PATH": os.environ["PATH"], "SOURCE_DATE_EPOCH": EPOCH}
        p = goproxy("bundle", "export", "-o", str(out), *self.online(), *args, env=env)
        assert not check or p.returncode == 0, p.stderr
        return p.stdout + p.stderr

    def import_(self, bundle: Path, expect: int = 0) -> str:
        p = goproxy("bundle", "import", "-cache", str(self.dst), "-upstream", "off", "-gosumdb", self.db.vkey,
                    "-progress", "off", str(bundle))
        assert p.returncode == expect, p.stdout + p.stderr
        return p.stdout + p.stderr


@pytest.fixture
def world(upstream: Upstream, tmp_path: Path) -> Iterator[World]:
    db = SumDBServer(upstream, DB)
    w = World(upstream, db, tmp_path, {})
    db.filler(250)
    for i in range(3):
        w.add(f"example.com/m{i}")
    db.filler(20)
    yield w


def zip_h1(m: Module) -> str:
    return dirhash.hash_zip(io.BytesIO(m.zip), f"{m.path}@{m.version}/")


def gosum(mods: list[Module]) -> str:
    lines = []
    for m in mods:
        lines.append(f"{m.path} {m.version} {zip_h1(m)}")
        lines.append(f"{m.path} {m.version}/go.mod {dirhash.hash_gomod(m.mod)}")
    return "\n".join(lines) + "\n"


def test_export_is_byte_identical_for_the_same_inputs_with_a_full_manifest(world: World) -> None:
    world.export(world.tmp / "a.tgz", "example.com/m0@v1.0.0", "example.com/m1@v1.0.0")
    world.export(world.tmp / "b.tgz", "example.com/m1@v1.0.0", "example.com/m0@v1.0.0")
    data = (world.tmp / "a.tgz").read_bytes()
    assert data == (world.tmp / "b.tgz").read_bytes()
    assert int.from_bytes(data[4:8], "little") == int(EPOCH)  # gzip header time
    members = read_bundle(world.tmp / "a.tgz")
    names = list(members)
    assert names[0] == "manifest.json"
    assert names[1:] == sorted(names[1:])
    doc = json.loads(members["manifest.json"])
    assert doc["format"] == "goproxy-bundle/1"
    assert doc["tool"].startswith("goproxy ")
    assert doc["created"] == "2023-11-14T22:13:20Z"
    assert doc["sumdb"]["name"] == DB
    assert doc["sumdb"]["key"] == world.db.vkey
    assert doc["sumdb"]["tree_size"] == world.db.size
    m0 = world.mods["example.com/m0@v1.0.0"]
    assert doc["modules"][0] == {"path": "example.com/m0", "version": "v1.0.0", "zip": zip_h1(m0),
                                 "mod": dirhash.hash_gomod(m0.mod), "record": 250}
    listed = {m["name"]: (m["size"], m["sha256"]) for m in doc["members"]}
    assert listed == {n: (len(d), hashlib.sha256(d).hexdigest()) for n, d in members.items() if n != "manifest.json"}
    assert members["example.com/m0/@v/v1.0.0.zip"] == m0.zip
    assert members["example.com/m0/@v/list"] == b"v1.0.0\n"
    assert members[f"sumdb/{DB}/latest"] == world.db.signed
    assert members[f"sumdb/{DB}/lookup/example.com/m1@v1.0.0"].endswith(world.db.signed)
    assert any("/tile/8/1/" in n for n in names)  # a tree past one tile needs a level-1 tile


def test_import_commits_everything_and_a_second_import_is_a_no_op(world: World) -> None:
    world.export(world.tmp / "b.tar", "example.com/m0@v1.0.0", "example.com/m1@v1.0.0")
    out = world.import_(world.tmp / "b.tar")
    assert "moved from 0 to 273" in out
    assert (world.dst / "example.com/m1/@v/v1.0.0.zip").read_bytes() == world.mods["example.com/m1@v1.0.0"].zip
    assert (world.dst / verified_tree_key(DB)).read_bytes() == world.db.signed
    before = snapshot(world.dst)
    times = {p: p.stat().st_mtime_ns for p in world.dst.rglob("*") if p.is_file()}
    out = world.import_(world.tmp / "b.tar")
    assert "0 files added" in out
    assert snapshot(world.dst) == before
    assert {p: p.stat().st_mtime_ns for p in world.dst.rglob("*") if p.is_file()} == times


def _flip(members: dict[str, bytes], name: str) -> None:
    data = bytearray(members[name])
    data[len(data) // 2] ^= 0x01
    members[name] = bytes(data)


def _change_record(members: dict[str, bytes]) -> None:
    name = f"sumdb/{DB}/lookup/example.com/m1@v1.0.0"
    first, rest = members[name].split(b"\n", 1)
    members[name] = first + b"\n" + rest.replace(b"h1:", b"h1:X", 1)


def _remove_tile(members: dict[str, bytes]) -> None:
    del members[next(n for n in members if "/tile/8/0/" in n)]


def _other_key(members: dict[str, bytes]) -> None:
    old = members[f"sumdb/{DB}/latest"]
    text = old[:old.index(b"\n\n") + 1].decode()
    forged = Signer(DB, b"another key").sign(text)
    for name in list(members):
        if name.startswith(f"sumdb/{DB}/"):
            members[name] = members[name].replace(old, forged)


TAMPERING = {
    "zip-byte-flipped": (lambda m: _flip(m, "example.com/m1/@v/v1.0.0.zip"), True, "example.com/m1/@v/v1.0.0.zip"),
    "zip-byte-flipped-manifest-not-updated": (lambda m: _flip(m, "example.com/m1/@v/v1.0.0.zip"), False,
                                              "example.com/m1/@v/v1.0.0.zip: its SHA-256 differs"),
    "lookup-record-changed": (_change_record, True, f"sumdb/{DB}/lookup/example.com/m1@v1.0.0: not proven"),
    "tile-removed": (_remove_tile, True, "is missing"),
    "tree-head-signed-by-another-key": (_other_key, True, f"sumdb/{DB}/latest: the signed tree head does not verify"),
    "tile-corrupted": (lambda m: _flip(m, next(n for n in m if "/tile/8/1/" in n)), True, "downloaded inconsistent"),
    "tile-added-that-the-tree-has-not": (lambda m: m.update({f"sumdb/{DB}/tile/8/0/000.p/7": b"\0" * 224}), True,
                                         f"sumdb/{DB}/tile/8/0/000.p/7: not a tile of the bundle's tree head"),
    "member-listed-but-absent": (lambda m: m.pop("example.com/m2/@v/v1.0.0.mod"), False,
                                 "example.com/m2/@v/v1.0.0.mod: listed in manifest.json but not in the bundle"),
}


@pytest.mark.parametrize("case", sorted(TAMPERING) + ["truncated-tar"])
def test_a_tampered_bundle_is_refused_naming_the_bad_member_and_nothing_changes(world: World, case: str) -> None:
    world.export(world.tmp / "base.tgz", "example.com/m0@v1.0.0")
    world.import_(world.tmp / "base.tgz")
    world.db.filler(300)
    world.add("example.com/m3")
    world.export(world.tmp / "next.tgz", "-since", str(world.tmp / "base.tgz"), "example.com/m1@v1.0.0",
                 "example.com/m2@v1.0.0", "example.com/m3@v1.0.0")
    bad = world.tmp / "bad.tar"
    if case == "truncated-tar":
        data = (world.tmp / "next.tgz").read_bytes()
        bad.write_bytes(data[:len(data) // 2])
        expect = "truncated"
    else:
        change, fix, expect = TAMPERING[case]
        edit_bundle(world.tmp / "next.tgz", bad, change, fix)
    before = snapshot(world.dst)
    out = world.import_(bad, expect=1)
    assert "refused, nothing changed" in out
    assert expect in out
    assert out.strip().count("\n") == 0 or "Traceback" not in out
    assert snapshot(world.dst) == before
    world.import_(world.tmp / "next.tgz")  # the untampered bundle goes in
    assert (world.dst / "example.com/m3/@v/v1.0.0.zip").exists()


def test_an_older_bundle_never_replaces_a_newer_tree_head(world: World) -> None:
    world.export(world.tmp / "old.tgz", "example.com/m0@v1.0.0")
    world.add("example.com/m3")
    world.export(world.tmp / "new.tgz", "example.com/m0@v1.0.0", "example.com/m3@v1.0.0")
    world.import_(world.tmp / "new.tgz")
    head = (world.dst / verified_tree_key(DB)).read_bytes()
    out = world.import_(world.tmp / "old.tgz")
    assert "stays at 274" in out
    assert (world.dst / verified_tree_key(DB)).read_bytes() == head
    assert (world.dst / f"sumdb/{DB}/lookup/example.com/m0@v1.0.0").read_bytes().endswith(head)


def test_a_bundle_of_an_untrusted_database_is_refused(world: World) -> None:
    world.export(world.tmp / "b.tgz", "example.com/m0@v1.0.0")
    p = goproxy("bundle", "import", "-cache", str(world.dst), "-upstream", "off", str(world.tmp / "b.tgz"))
    assert p.returncode == 1
    assert f"checksum database {DB} is not trusted here" in p.stderr
    assert not world.dst.joinpath("example.com").exists()


def test_prefetch_with_a_wrong_gosum_hash_fails_that_module_and_caches_the_rest(world: World) -> None:
    mods = [world.mods[f"example.com/m{i}@v1.0.0"] for i in range(3)]
    wrong = "h1:" + base64.b64encode(b"\0" * 32).decode()
    text = gosum(mods).replace(zip_h1(mods[1]), wrong).replace(dirhash.hash_gomod(mods[2].mod), wrong)
    (world.tmp / "go.sum").write_text(text)
    p = goproxy("prefetch", *world.online(), str(world.tmp / "go.sum"))
    assert p.returncode == 1
    assert "FAILED example.com/m1@v1.0.0: example.com/m1@v1.0.0: checksum mismatch" in p.stdout
    assert "FAILED example.com/m2@v1.0.0: example.com/m2@v1.0.0/go.mod: checksum mismatch" in p.stdout
    assert "3 module versions: 1 ready, 2 failed" in p.stdout
    src = Path(world.src)
    for ext in ("info", "mod", "zip"):
        assert (src / f"example.com/m0/@v/v1.0.0.{ext}").exists()
    for bad in ("m1", "m2"):  # not even the zip of m2, which matched, stays
        assert not [p for p in (src / f"example.com/{bad}").rglob("*") if p.is_file()]


def test_prefetch_checks_files_already_cached_against_gosum(world: World) -> None:
    m = world.mods["example.com/m0@v1.0.0"]
    assert goproxy("prefetch", *world.online(), "example.com/m0@v1.0.0").returncode == 0
    (world.tmp / "go.sum").write_text(f"{m.path} {m.version} h1:{base64.b64encode(b'1' * 32).decode()}\n")
    p = goproxy("prefetch", *world.online(), str(world.tmp / "go.sum"))
    assert p.returncode == 1
    assert "go.sum has" in p.stdout


def test_check_says_present_missing_fetchable_and_not_found(world: World) -> None:
    assert goproxy("prefetch", *world.online(), "example.com/m0@v1.0.0").returncode == 0
    p = goproxy("check", *world.online(), "example.com/m0@v1.0.0", "example.com/m1@v1.0.0", "example.com/no@v1.0.0")
    assert p.returncode == 1
    assert p.stdout.splitlines() == [
        "present  example.com/m0@v1.0.0",
        "missing  example.com/m1@v1.0.0  (no .zip, .mod, .info; fetchable)",
        "missing  example.com/no@v1.0.0  (no .zip, .mod, .info; not found upstream)",
        "check: 3 module versions: 1 present, 2 missing (1 fetchable, 1 not found upstream)"]
    assert goproxy("check", *world.online(), "example.com/m0@v1.0.0").returncode == 0


def test_check_offline_also_wants_the_checksum_record(world: World) -> None:
    world.export(world.tmp / "b.tgz", "example.com/m0@v1.0.0")
    world.import_(world.tmp / "b.tgz")
    (world.dst / "example.com/m2/@v").mkdir(parents=True)
    for ext in ("info", "mod", "zip"):
        (world.dst / f"example.com/m2/@v/v1.0.0.{ext}").write_bytes(b"x")
    offline = ["-cache", str(world.dst), "-upstream", "off", "-gosumdb", world.db.vkey]
    p = goproxy("check", *offline, "example.com/m0@v1.0.0", "example.com/m2@v1.0.0")
    assert p.returncode == 1
    assert f"missing  example.com/m2@v1.0.0  (no {DB} record)" in p.stdout
    assert "present  example.com/m0@v1.0.0" in p.stdout
    assert goproxy("check", *offline, "example.com/m0@v1.0.0").returncode == 0


def test_a_new_tree_head_that_cannot_be_proven_consistent_with_the_cache_is_refused(world: World) -> None:
    world.export(world.tmp / "base.tgz", "example.com/m0@v1.0.0")
    world.import_(world.tmp / "base.tgz")
    world.db.filler(300)
    world.export(world.tmp / "full.tgz", "example.com/m1@v1.0.0")  # made without -since
    before = snapshot(world.dst)
    out = world.import_(world.tmp / "full.tgz", expect=1)
    assert f"sumdb/{DB}/latest: cannot prove the trees of size 273 and 573" in out
    assert "-since" in out
    assert snapshot(world.dst) == before


def test_export_all_carries_every_cached_version(world: World) -> None:
    (world.tmp / "list.txt").write_text("example.com/m0@v1.0.0\nexample.com/m2@v1.0.0\n")
    assert goproxy("prefetch", *world.online(), str(world.tmp / "list.txt")).returncode == 0
    world.export(world.tmp / "all.tgz", "-all")
    doc = json.loads(read_bundle(world.tmp / "all.tgz")["manifest.json"])
    assert [m["path"] for m in doc["modules"]] == ["example.com/m0", "example.com/m2"]
    out = world.import_(world.tmp / "all.tgz")
    assert "moved from 0" in out
