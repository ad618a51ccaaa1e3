"""-upstream off: the proxy answers from its cache alone and never opens an outbound connection."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from goproxy.server import ProxyServer
from goproxy.storage.disk import DiskStorage
from goproxy.sumdb import tlog
from goproxy.sumdb.client import verified_tree_key
from tests.support.airgap import Recorder
from tests.support.helpers import get
from tests.support.sumdbserver import Signer
from tests.support.upstream import generate

DB = "sumdb.airgap.test"


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


@pytest.fixture
def offline(make_proxy: Callable[..., ProxyServer], tmp_path: Path, recorder: Recorder) -> ProxyServer:
    """An offline proxy whose cache holds example.com/m v1.0.0, v1.1.0, v1.2.0-pre (only a .mod of
    v0.9.0) and checksum data of DB; every outbound connection would go to recorder."""
    store = DiskStorage(str(tmp_path / "cache"))
    for v in ("v1.0.0", "v1.1.0", "v1.2.0-pre"):
        m = generate("example.com/m", v)
        store.write(f"example.com/m/@v/{v}.info", m.info)
        store.write(f"example.com/m/@v/{v}.mod", m.mod)
        store.write(f"example.com/m/@v/{v}.zip", m.zip)
    store.write("example.com/m/@v/v0.9.0.mod", b"module example.com/m\n")
    store.write("example.com/pre/@v/v0.1.0-rc.1.zip", generate("example.com/pre", "v0.1.0-rc.1").zip)
    signed = Signer(DB, b"k").sign(tlog.format_tree(tlog.Tree(256, b"\x01" * 32)))
    store.write(verified_tree_key(DB), signed)
    store.write(f"sumdb/{DB}/tile/8/0/000", bytes(range(256)) * 32)
    store.write(f"sumdb/{DB}/lookup/example.com/m@v1.0.0", b"0\nrecord\n\n" + signed)
    return make_proxy(["off"], proxy=f"http://127.0.0.1:{recorder.port}")


def test_list_and_latest_come_from_the_cached_zips(offline: ProxyServer) -> None:
    assert get(offline, "/example.com/m/@v/list")[2] == b"v1.0.0\nv1.1.0\nv1.2.0-pre\n"
    status, _, body = get(offline, "/example.com/m/@latest")
    assert status == 200
    assert json.loads(body)["Version"] == "v1.1.0"  # a release wins over a newer prerelease
    assert json.loads(get(offline, "/example.com/pre/@latest")[2]) == {"Version": "v0.1.0-rc.1"}


@pytest.mark.parametrize("path", ["/example.com/m/@v/v1.3.0.zip", "/example.com/m/@v/v1.3.0.info",
                                  "/example.com/m/@v/v0.9.0.zip", "/example.com/other/@v/list",
                                  "/example.com/other/@latest", "/example.com/m/@v/master.info"],
                         ids=["zip", "info", "zip-of-mod-only", "list", "latest", "query"])
def test_a_miss_is_404_not_in_the_offline_cache(offline: ProxyServer, recorder: Recorder, path: str) -> None:
    status, _, body = get(offline, path)
    assert status == 404
    assert b"not in the offline cache" in body
    assert recorder.connections == 0


def test_cached_files_are_served(offline: ProxyServer) -> None:
    assert get(offline, "/example.com/m/@v/v0.9.0.mod")[2] == b"module example.com/m\n"
    assert get(offline, "/example.com/m/@v/v1.0.0.zip")[0] == 200


def test_checksum_data_the_cache_holds_is_served(offline: ProxyServer, recorder: Recorder) -> None:
    assert get(offline, f"/sumdb/{DB}/supported")[0] == 200
    assert get(offline, f"/sumdb/{DB}/latest")[2].startswith(b"go.sum database tree\n256\n")
    assert get(offline, f"/sumdb/{DB}/lookup/example.com/m@v1.0.0")[2].startswith(b"0\nrecord\n")
    assert get(offline, f"/sumdb/{DB}/tile/8/0/000")[2] == bytes(range(256)) * 32
    # A partial tile is the prefix of the full one when only that is kept.
    assert get(offline, f"/sumdb/{DB}/tile/8/0/000.p/3")[2] == (bytes(range(256)) * 32)[:96]
    status, _, body = get(offline, f"/sumdb/{DB}/lookup/example.com/m@v1.1.0")
    assert status == 404
    assert b"not in the offline cache" in body
    assert get(offline, "/sumdb/other.example/supported")[0] == 404
    assert recorder.connections == 0


def test_the_trap_sees_the_connections_of_a_proxy_that_is_online(
        make_proxy: Callable[..., ProxyServer], recorder: Recorder) -> None:
    # The control for the tests above: the same trap does see an online proxy's outbound connection.
    online = make_proxy(["http://upstream.example"], proxy=f"http://127.0.0.1:{recorder.port}", retry_attempts=1)
    assert get(online, "/example.com/m/@v/v1.3.0.info")[0] == 502
    assert recorder.connections >= 1
