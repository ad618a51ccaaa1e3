"""End to end: the real go command, stale lists and a hanging upstream: answers from the cache in seconds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from goproxy.server import ProxyServer
from tests.support.gotestproxy import go_env, run_go
from tests.support.helpers import FakeClock
from tests.support.upstream import Upstream, generate

pytestmark = pytest.mark.timeout(300)

MODULES = [f"example.com/stale/m{i:02d}" for i in range(20)]


def test_go_list_and_go_get_latest_answer_from_stale_lists_while_the_upstream_hangs(
        go: str, make_proxy: Callable[..., ProxyServer], upstream: Upstream, clock: FakeClock,
        tmp_path: Path) -> None:
    for m in MODULES:
        upstream.add(generate(m, "v1.0.0"))
        upstream.add(generate(m, "v1.1.0"))
    proxy = make_proxy([upstream.url])  # the default -upstream-timeout: 10s, 3 tries
    url = f"http://127.0.0.1:{proxy.port}"
    scratch = tmp_path / "work"
    scratch.mkdir()
    (scratch / "go.mod").write_text("module example.com/work\n\ngo 1.21\n")

    def go_commands(modcache: str) -> tuple[float, str]:
        env = go_env(tmp_path, url, modcache=modcache)
        started = time.monotonic()
        listed = run_go(go, ["list", "-m", "-versions", *MODULES], env, scratch)
        run_go(go, ["get", *(f"{m}@latest" for m in MODULES)], env, scratch)
        return time.monotonic() - started, listed

    _, warm = go_commands("warm-modcache")  # fills the proxy's cache
    assert warm.count("v1.0.0 v1.1.0") == 20

    upstream.gate = threading.Event()  # from now on the upstream accepts and never answers
    clock.advance(3600)  # every list is past -list-ttl
    (scratch / "go.mod").write_text("module example.com/work\n\ngo 1.21\n")
    elapsed, listed = go_commands("cold-modcache")
    assert elapsed < 8, elapsed  # seconds, not a wait of -upstream-timeout or more per list
    assert listed.count("v1.0.0 v1.1.0") == 20
    go_mod = (scratch / "go.mod").read_text()
    for m in MODULES:
        assert f"{m} v1.1.0" in go_mod
    assert 1 <= upstream.count(f"/{MODULES[0]}/@v/list") <= 2  # one refresh at most, in the background
