"""S3 storage against a real SeaweedFS: complete-or-absent commits, the local tier, conditional
writes (compare-and-swap), conditional deletes, start-up errors, and -proxy for the store."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from goproxy.app.stores import build_storage
from goproxy.config import Config
from goproxy.errors import StartupError
from goproxy.server import ProxyServer
from goproxy.storage.base import LeaseLost, Storage
from goproxy.storage.bucket import make_client, parse_storage_url, split_storage_url
from goproxy.storage.disk import DiskStorage
from goproxy.storage.s3 import S3Storage
from tests.support import daemons
from tests.support.helpers import ROOT, get
from tests.support.seaweed import Seaweed
from tests.support.upstream import Upstream, generate

pytestmark = pytest.mark.timeout(120)

KEY = "example.com/m/@v/v1.0.0.zip"


@pytest.mark.parametrize("text,want", [
    ("", ""),
    ("disk", ""),
    ("s3://my-bucket", "s3://my-bucket"),
    ("s3://my-bucket/", "s3://my-bucket"),
    ("s3://my.bucket-1/team/goproxy/", "s3://my.bucket-1/team/goproxy"),
], ids=["empty", "disk", "bucket", "trailing-slash", "prefix"])
def test_storage_url_forms(text: str, want: str) -> None:
    assert parse_storage_url(text) == want


@pytest.mark.parametrize("text,problem", [
    ("gs://bucket", "want s3://"),
    ("s3://", "invalid bucket"),
    ("s3://Upper", "invalid bucket"),
    ("s3://ab", "invalid bucket"),
    ("s3://a..b", "invalid bucket"),
    ("s3://bucket/a//b", "invalid key prefix"),
    ("s3://bucket/../x", "invalid key prefix"),
], ids=["scheme", "no-bucket", "upper-case", "too-short", "double-dot", "empty-segment", "dot-dot"])
def test_bad_storage_urls_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_storage_url(text)


def test_split_storage_url_gives_a_slash_ended_prefix() -> None:
    assert split_storage_url("s3://b-1/team/x") == ("b-1", "team/x/")
    assert split_storage_url("s3://b-1") == ("b-1", "")


def s3_storage(seaweed: Seaweed, url: str, local: Path, **kw: Any) -> S3Storage:
    bucket, prefix = split_storage_url(url)
    return S3Storage(bucket, prefix, seaweed.client(), DiskStorage(str(local)), **kw)


def staged(store: Storage, key: str, data: bytes) -> str:
    path = store.staging(key) + ".part"
    with store.create(key, path) as f:
        f.write(data)
    return path


def uploads(seaweed: Seaweed, url: str) -> list[Any]:
    bucket, prefix = split_storage_url(url)
    return [u for u in seaweed.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            if u["Key"].startswith(prefix)]


def test_big_commit_goes_up_in_parts_and_appears_whole_with_a_local_copy(
        seaweed: Seaweed, s3_url: str, tmp_path: Path) -> None:
    store = s3_storage(seaweed, s3_url, tmp_path / "a", multipart_min=5 << 20, part_size=5 << 20)
    data = os.urandom(12 << 20)
    store.commit(staged(store, KEY, data), KEY, mtime=1234.5)
    assert seaweed.objects(*split_storage_url(s3_url)) == {KEY: len(data)}
    assert uploads(seaweed, s3_url) == []
    st = store.stat(KEY)
    assert st is not None
    assert (st.size, st.mtime) == (len(data), 1234.5)
    assert Path(store.local.path(KEY)).read_bytes() == data
    blob = store.open(KEY, immutable=True)
    assert blob is not None
    assert blob.sendfile  # a local-tier hit
    blob.close()


@pytest.mark.parametrize("size", [100, 11 << 20], ids=["single-put", "multipart"])
def test_commit_after_the_lease_was_lost_leaves_nothing_under_the_key(
        seaweed: Seaweed, s3_url: str, tmp_path: Path, size: int) -> None:
    store = s3_storage(seaweed, s3_url, tmp_path / "a", multipart_min=5 << 20, part_size=5 << 20)
    path = staged(store, KEY, os.urandom(size))
    with pytest.raises(LeaseLost):
        store.commit(path, KEY, fence=lambda: False)
    assert seaweed.objects(*split_storage_url(s3_url)) == {}
    assert uploads(seaweed, s3_url) == []  # the parts sent were thrown away
    assert not os.path.exists(path)
    assert store.stat(KEY) is None


def test_the_first_commit_of_an_artifact_wins(seaweed: Seaweed, s3_url: str, tmp_path: Path) -> None:
    a = s3_storage(seaweed, s3_url, tmp_path / "a")
    b = s3_storage(seaweed, s3_url, tmp_path / "b")
    a.commit(staged(a, KEY, b"first"), KEY)
    b.commit(staged(b, KEY, b"second, from a holder that lost its lock"), KEY)
    assert not os.path.exists(b.local.path(KEY))  # b keeps no copy of what it did not commit
    assert b.read(KEY) == b"first"


def test_a_miss_streams_from_the_bucket_and_fills_the_local_tier(
        seaweed: Seaweed, s3_url: str, tmp_path: Path) -> None:
    a = s3_storage(seaweed, s3_url, tmp_path / "a")
    b = s3_storage(seaweed, s3_url, tmp_path / "b")
    data = os.urandom(3 << 20)  # more than one read ahead
    a.commit(staged(a, KEY, data), KEY, mtime=99.0)
    partial = b.open(KEY, immutable=True)
    assert partial is not None
    assert partial.file is not None
    partial.file.read(1000)
    partial.close()  # a client that hung up early: no local copy, no partial file left behind
    assert not os.path.exists(b.local.path(KEY))
    assert os.listdir(os.path.dirname(b.local.path(KEY))) == []
    blob = b.open(KEY, immutable=True)
    assert blob is not None
    assert not blob.sendfile
    assert (blob.size, blob.mtime) == (len(data), 99.0)
    assert blob.read() == data
    blob.close()
    assert Path(b.local.path(KEY)).read_bytes() == data
    again = b.open(KEY, immutable=True)
    assert again is not None
    assert again.sendfile
    again.close()


def test_mutable_artifacts_are_read_from_the_bucket_not_a_stale_local_copy(
        seaweed: Seaweed, s3_url: str, tmp_path: Path) -> None:
    a = s3_storage(seaweed, s3_url, tmp_path / "a")
    b = s3_storage(seaweed, s3_url, tmp_path / "b")
    key = "example.com/m/@v/list"
    a.write(key, b"v1.0.0\n", mtime=10.0)
    assert b.read(key) == b"v1.0.0\n"
    a.write(key, b"v1.0.0\nv1.1.0\n", mtime=20.0)
    assert b.read(key) == b"v1.0.0\nv1.1.0\n"
    st = b.stat(key)
    assert st is not None
    assert st.mtime == 20.0


@pytest.fixture(params=["disk", "s3"])
def any_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "disk":
        return DiskStorage(str(tmp_path / "disk"))
    seaweed = request.getfixturevalue("seaweed")
    return s3_storage(seaweed, request.getfixturevalue("s3_url"), tmp_path / "local")


def test_swap_replaces_only_what_the_caller_saw(any_storage: Storage) -> None:
    key = "sumdb/sum.example/.verified-tree"
    assert any_storage.swap(key, b"one", None)
    assert not any_storage.swap(key, b"two", None)  # "only if absent" no longer holds
    seen = any_storage.stat(key)
    assert seen is not None
    assert any_storage.swap(key, b"three", seen)
    assert not any_storage.swap(key, b"four", seen)  # replaced since it was seen
    assert any_storage.read(key) == b"three"


def test_delete_with_expect_spares_a_copy_written_since(seaweed: Seaweed, s3_url: str, tmp_path: Path) -> None:
    store = s3_storage(seaweed, s3_url, tmp_path / "a")
    store.write(KEY, b"old")
    seen = store.stat(KEY)
    assert seen is not None
    store.write(KEY, b"new")
    assert not store.delete(KEY, expect=seen)
    assert store.read(KEY) == b"new"
    fresh = store.stat(KEY)
    assert fresh is not None
    assert store.delete(KEY, expect=fresh)
    assert store.stat(KEY) is None
    assert not os.path.exists(store.local.path(KEY))
    assert not store.delete(KEY)


def test_scan_lists_every_object_under_the_prefix(seaweed: Seaweed, s3_url: str, tmp_path: Path) -> None:
    store = s3_storage(seaweed, s3_url, tmp_path / "a")
    other = s3_storage(seaweed, s3_url + "-other", tmp_path / "b")
    store.write(KEY, b"zip")
    store.write("example.com/m/@v/list", b"v1.0.0\n")
    other.write(KEY, b"not ours")
    found = {st.key: st for st in store.scan()}
    assert set(found) == {KEY, "example.com/m/@v/list"}
    st = store.stat(KEY)
    assert st is not None
    assert found[KEY].token == st.token


def config_for(seaweed: Seaweed, url: str, tmp_path: Path, **kw: Any) -> Config:
    return dataclasses.replace(Config(), storage=url, s3_endpoint=seaweed.endpoint, cache_dir=str(tmp_path / "c"),
                               **kw)


@pytest.mark.usefixtures("s3_creds")
def test_start_fails_clearly_on_a_missing_bucket(seaweed: Seaweed, s3_bucket: str, tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="bucket 'no-such-bucket' does not exist"):
        build_storage(config_for(seaweed, "s3://no-such-bucket", tmp_path))


def test_start_fails_clearly_on_wrong_credentials(seaweed: Seaweed, s3_url: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(StartupError, match="denied: check the credentials") as err:
        build_storage(config_for(seaweed, s3_url, tmp_path))
    assert "not-the-secret" not in str(err.value)


@pytest.mark.usefixtures("s3_creds")
def test_start_fails_clearly_when_the_store_is_unreachable(s3_url: str, tmp_path: Path) -> None:
    config = dataclasses.replace(Config(), storage=s3_url, s3_endpoint="http://127.0.0.1:9",
                                 cache_dir=str(tmp_path / "c"))
    with pytest.raises(StartupError, match="unavailable"):
        build_storage(config)


def test_without_boto3_the_start_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 raises ImportError
    with pytest.raises(StartupError, match=r"pip install 'goproxy\[s3\]'"):
        make_client("", "us-east-1", {}, "")


@pytest.mark.usefixtures("s3_creds")
def test_outbound_proxy_carries_the_store_traffic_unless_no_proxy_names_it(
        seaweed: Seaweed, s3_url: str, tmp_path: Path) -> None:
    d, port = daemons.tinyproxy(tmp_path)
    try:
        config = config_for(seaweed, s3_url, tmp_path, proxy=f"http://127.0.0.1:{port}")
        storage, _ = build_storage(config)
        storage.write(KEY, b"through the proxy")
        assert f"127.0.0.1:{seaweed.s3}" in d.log_text()
        before = d.log_text().count(f"127.0.0.1:{seaweed.s3}")
        bypass = dataclasses.replace(config, no_proxy=("127.0.0.1",))
        storage, _ = build_storage(bypass)
        assert storage.read(KEY) == b"through the proxy"
        assert d.log_text().count(f"127.0.0.1:{seaweed.s3}") == before
    finally:
        d.stop()


def test_a_socks_proxy_is_refused_for_the_store_at_start(tmp_path: Path) -> None:
    pytest.importorskip("socks")
    from goproxy.app.stores import s3_proxies

    config = dataclasses.replace(Config(), storage="s3://bucket", s3_endpoint="http://store.example:8333",
                                 proxy="socks5://127.0.0.1:1080")
    with pytest.raises(StartupError, match="SOCKS"):
        s3_proxies(config)
    assert s3_proxies(dataclasses.replace(config, no_proxy=("store.example",))) == {}




@pytest.mark.usefixtures("s3_creds")
def test_cache_stats_and_gc_work_on_the_bucket(seaweed: Seaweed, s3_url: str, tmp_path: Path, upstream: Upstream,
                                              make_proxy: Callable[..., ProxyServer]) -> None:
    mods = [upstream.add(generate(f"example.com/m{i}", "v1.0.0")) for i in range(3)]
    proxy = make_proxy([upstream.url], storage=s3_url, s3_endpoint=seaweed.endpoint, cache_dir=str(tmp_path / "a"))
    for m in mods:
        for ext in ("info", "mod", "zip"):
            assert get(proxy, f"/{m.path}/@v/{m.version}.{ext}")[0] == 200
    flags = ["-storage", s3_url, "-s3-endpoint", seaweed.endpoint, "-cache", str(tmp_path / "admin")]

    def cache(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(ROOT / "goproxy.py"), "cache", *args, *flags], env=dict(os.environ),
                              capture_output=True, text=True, timeout=120)

    stats = cache("stats")
    assert stats.returncode == 0, stats.stderr
    assert f"cache: {s3_url}" in stats.stdout
    assert "versions: 3" in stats.stdout
    dry = cache("gc", "-dry-run", "-max-cache-age", "1ms")
    assert dry.returncode == 0, dry.stderr
    assert "would remove 3 versions" in dry.stdout
    bucket, prefix = split_storage_url(s3_url)
    assert len(seaweed.objects(bucket, prefix)) == 9
    gc = cache("gc", "-max-cache-age", "1ms")
    assert gc.returncode == 0, gc.stderr
    assert "removed 3 versions" in gc.stdout
    assert seaweed.objects(bucket, prefix) == {}
