"""The size of the newest verified checksum tree, as the front page shows it: this process's, or
the one another process or replica verified and kept in the shared storage."""

from __future__ import annotations

from pathlib import Path

from goproxy.metrics import Metrics
from goproxy.net.http import Transport
from goproxy.storage.disk import DiskStorage
from goproxy.sumdb.client import Sources, SumDB
from goproxy.sumdb.db import parse_gosumdb
from goproxy.upstream import Upstream as UpstreamURL
from goproxy.upstream import Upstreams
from tests.support.helpers import Sleeps
from tests.support.sumdbserver import SumDBServer
from tests.support.upstream import Upstream, generate


class CountingDisk(DiskStorage):
    """A disk cache counting its reads."""

    reads = 0

    def read(self, key: str) -> bytes | None:
        self.reads += 1
        return super().read(key)


def client(db: SumDBServer, upstream: Upstream, storage: DiskStorage) -> SumDB:
    """Return a checksum database client of one process, reading db through upstream."""
    gosumdb = parse_gosumdb(db.vkey)
    assert gosumdb is not None
    ups = Upstreams([UpstreamURL(upstream.url)], Transport(), sleep=Sleeps())
    return SumDB(gosumdb, Sources(db.name, ups, None), storage, Metrics())


def test_tree_size_is_the_newest_verified_by_this_process_or_any_other_on_the_storage(
        upstream: Upstream, tmp_path: Path) -> None:
    db = SumDBServer(upstream)
    a = db.add(generate("example.com/a", "v1.0.0"))
    storage = CountingDisk(str(tmp_path))
    first, second = client(db, upstream, storage), client(db, upstream, storage)
    assert first.verified_tree_size() is None
    first.lookup(a.path, a.version)
    assert first.verified_tree_size() == 1
    assert second.verified_tree_size() == 1  # verified by the other process, kept in storage
    db.filler(300)
    b = db.add(generate("example.com/b", "v1.0.0"))
    second.lookup(b.path, b.version)
    assert second.verified_tree_size() == 302
    assert first.verified_tree_size() == 302
    reads = storage.reads
    for _ in range(5):  # the kept head did not change: it is not read again
        assert first.verified_tree_size() == 302
    assert storage.reads == reads
