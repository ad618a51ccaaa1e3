"""Cache: small immutable files are served from memory until written or deleted through the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from goproxy import cache as cachemod
from goproxy.cache import MEMO_MAX, Cache


def test_small_immutable_files_are_kept_in_memory_until_written_or_deleted(tmp_path: Path) -> None:
    c = Cache(str(tmp_path))
    key = "example.com/a/@v/v1.0.0.info"
    assert c.open_immutable(key) is None
    c.write(key, b"one")
    assert c.open_immutable(key) == b"one"
    Path(c.path(key)).write_bytes(b"changed behind the cache's back")
    assert c.open_immutable(key) == b"one"  # served from memory, the file is not reopened
    c.write(key, b"two")
    assert c.open_immutable(key) == b"two"
    assert c.delete(key)
    assert c.open_immutable(key) is None


def test_files_above_the_limit_are_opened_not_kept(tmp_path: Path) -> None:
    c = Cache(str(tmp_path))
    key = "example.com/a/@v/v1.0.0.zip"
    c.write(key, b"z" * (MEMO_MAX + 1))
    opened = c.open_immutable(key)
    assert isinstance(opened, tuple)
    with opened[0] as f:
        assert len(f.read()) == MEMO_MAX + 1
    assert key not in c._memo


def test_memory_budget_drops_the_oldest_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cachemod, "MEMO_BUDGET", 5)
    c = Cache(str(tmp_path))
    for name in "abc":
        c.write(f"m/@v/{name}.mod", name.encode() * 4)
        assert c.open_immutable(f"m/@v/{name}.mod") == name.encode() * 4
    assert list(c._memo) == ["m/@v/c.mod"]
    assert c._memo_bytes == 4
