"""DiskStorage: small immutable files are served from memory until written or deleted through it."""

from __future__ import annotations

from pathlib import Path

import pytest

from goproxy.storage import disk
from goproxy.storage.disk import MEMO_MAX, DiskStorage


def body(s: DiskStorage, key: str) -> bytes | None:
    blob = s.open(key, immutable=True)
    if blob is None:
        return None
    try:
        return blob.read()
    finally:
        blob.close()


def test_small_immutable_files_are_kept_in_memory_until_written_or_deleted(tmp_path: Path) -> None:
    s = DiskStorage(str(tmp_path))
    key = "example.com/a/@v/v1.0.0.info"
    assert body(s, key) is None
    s.write(key, b"one")
    assert body(s, key) == b"one"
    Path(s.path(key)).write_bytes(b"changed behind the storage's back")
    assert body(s, key) == b"one"  # served from memory, the file is not reopened
    s.write(key, b"two")
    assert body(s, key) == b"two"
    assert s.delete(key)
    assert body(s, key) is None


def test_files_above_the_limit_are_opened_not_kept(tmp_path: Path) -> None:
    s = DiskStorage(str(tmp_path))
    key = "example.com/a/@v/v1.0.0.zip"
    s.write(key, b"z" * (MEMO_MAX + 1))
    blob = s.open(key, immutable=True)
    assert blob is not None
    assert blob.sendfile
    assert len(blob.read()) == MEMO_MAX + 1
    blob.close()
    assert body(s, key) is not None
    assert key not in s._memo


def test_memory_budget_drops_the_oldest_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(disk, "MEMO_BUDGET", 5)
    s = DiskStorage(str(tmp_path))
    for name in "abc":
        s.write(f"m/@v/{name}.mod", name.encode() * 4)
        assert body(s, f"m/@v/{name}.mod") == name.encode() * 4
    assert list(s._memo) == ["m/@v/c.mod"]
    assert s._memo_bytes == 4


def test_delete_with_expect_leaves_a_fresh_copy(tmp_path: Path) -> None:
    s = DiskStorage(str(tmp_path))
    key = "m/@v/v1.0.0.mod"
    s.write(key, b"old")
    seen = s.stat(key)
    assert seen is not None
    s.write(key, b"new")
    assert not s.delete(key, expect=seen)
    assert body(s, key) == b"new"
    fresh = s.stat(key)
    assert s.delete(key, expect=fresh)
    assert s.stat(key) is None


def test_scan_lists_artifacts_but_not_root_files(tmp_path: Path) -> None:
    s = DiskStorage(str(tmp_path))
    s.write("m/@v/v1.0.0.mod", b"x")
    s.write("m/@v/list", b"v1.0.0\n")
    (tmp_path / ".usage.db").write_bytes(b"")
    assert sorted(st.key for st in s.scan()) == ["m/@v/list", "m/@v/v1.0.0.mod"]


def test_keys_that_leave_the_root_are_refused(tmp_path: Path) -> None:
    s = DiskStorage(str(tmp_path))
    for key in ("../x", "/etc/passwd", "a/../../x", "", "a\\b"):
        with pytest.raises(Exception, match="invalid cache key|escapes"):
            s.path(key)


def test_open_kept_answers_from_memory_only_and_never_after_a_deletion_elsewhere(tmp_path: Path) -> None:
    s = DiskStorage(str(tmp_path))
    key = "example.com/a/@v/v1.0.0.mod"
    s.write(key, b"module example.com/a\n")
    assert s.open_kept(key) is None  # on disk, not read yet: only open() reads it
    assert body(s, key) == b"module example.com/a\n"
    kept = s.open_kept(key)
    assert kept is not None
    assert kept.read() == b"module example.com/a\n"
    other = DiskStorage(str(tmp_path))  # another process sharing the cache (cache gc, a worker)
    assert other.delete("example.com/b/@v/v1.0.0.mod") is False  # deleting nothing changes nothing
    assert s.open_kept(key) is not None
    other.write("example.com/b/@v/v1.0.0.mod", b"b")
    assert other.delete("example.com/b/@v/v1.0.0.mod")
    assert s.open_kept(key) is None  # a deletion anywhere: the copy is checked on disk by open() first
    assert body(s, key) == b"module example.com/a\n"
    assert s.open_kept(key) is not None
