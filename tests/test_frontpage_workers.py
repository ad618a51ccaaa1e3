"""The front page of a server with worker processes, as users run it: whichever worker answers, it
shows the whole server (traffic, upstream health, warnings, workers, uptime, history), and a
worker's restart resets none of it."""

from __future__ import annotations

import functools
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.frontpage import from_every_worker, served, status
from tests.support.helpers import get, wait_for
from tests.support.proc import Proc, start
from tests.support.upstream import Upstream, generate

pytestmark = pytest.mark.timeout(180)


def proxy(procs: list[Proc], cache: Path, *args: str) -> tuple[Proc, int]:
    return start(procs, "-host", "127.0.0.1", "-port", "0", "-cache", str(cache), "-workers", "2",
                 "-progress", "off", *args)


def answered(p: Proc, path: str, times: int) -> bool:
    """Report whether the workers' access lines show path answered times times."""
    return sum(served(p, path).values()) == times


def worker_pid(p: Proc, index: int) -> int:
    return int(re.findall(rf"worker {index} started \(pid (\d+)\)", p.text())[-1])


def test_every_worker_shows_the_whole_server_and_a_restart_resets_none_of_it(
        procs: list[Proc], upstream: Upstream, tmp_path: Path) -> None:
    mods = [upstream.add(generate(f"example.com/m{i}", "v1.0.0")) for i in range(6)]
    p, port = proxy(procs, tmp_path / "cache", "-upstream", upstream.url, "-retry-attempts", "1")
    assert get(port, f"/{mods[0].path}/@v/v1.0.0.info")[0] == 200  # one worker asks the upstream, once

    def asked(data: dict[str, Any]) -> bool:
        up = data["upstreams"][0]
        return up["state"] == "up" and up["last_success"] is not None and up["median_latency"] is not None

    from_every_worker(p, port, asked)
    made = 1
    for m in mods:  # misses and hits, on whichever worker accepts each connection
        for _ in range(3):
            assert get(port, f"/{m.path}/@v/v1.0.0.mod")[0] == 200
            made += 1
            # A miss is answered while it is committed; a request before the commit would wait for it.
            wait_for((tmp_path / "cache" / m.path / "@v/v1.0.0.mod").exists)
    failing: list[str] = []
    while len({w for path in failing for w in served(p, path)}) < 2:  # a failure logged by each worker
        path = f"/example.com/fail{len(failing)}/@v/list"
        upstream.set(path, 403, b"forbidden")  # a failure that does not mark the upstream down
        assert get(port, path)[0] == 502
        failing.append(path)
        made += 1
        wait_for(lambda: bool(served(p, failing[-1])))  # its access line is written
        assert len(failing) < 60

    def whole(data: dict[str, Any]) -> bool:
        up = data["upstreams"][0]
        messages = " ".join(w["message"] for w in data["warnings"])
        return (data["workers"] == 2 and data["traffic"]["requests"] == made
                and data["traffic"]["hits"] == 13 and data["traffic"]["misses"] == 6  # m0's .mod came with its .info
                and up["state"] == "up" and up["last_success"] is not None and up["median_latency"] is not None
                and up["requests"] == 7 + len(failing) and "403" in (up["last_error"] or "")
                and all(path in messages for path in failing[-10:]))

    from_every_worker(p, port, whole)
    started = status(port)["started"]
    assert abs(started - time.time()) < 60
    assert {status(port)["started"] for _ in range(10)} == {started}

    # Worker 1 dies; the new worker 1 keeps the server's start, and what the old one logged.
    victim = worker_pid(p, 1)
    w1_failures = [path for path in failing if "w1" in served(p, path)]
    os.kill(victim, signal.SIGKILL)
    p.wait_line(rf"worker 1 \(pid {victim}\) was killed by SIGKILL; restarting it")
    wait_for(lambda: worker_pid(p, 1) != victim and f"worker 1 (pid {worker_pid(p, 1)}) serving" in p.text(),
             timeout=20)
    death = f"worker 1 (pid {victim}) was killed by SIGKILL"

    def after(data: dict[str, Any]) -> bool:
        messages = [w["message"] for w in data["warnings"]]
        return (data["started"] == started and data["uptime"] > 0 and data["workers"] == 2
                and any(death in m for m in messages)  # the parent's own error
                and all(any(path in m for m in messages) for path in w1_failures[-5:])
                and data["traffic"]["requests"] == made)

    from_every_worker(p, port, after)


@pytest.mark.slow
def test_the_history_of_two_workers_counts_every_request_once(procs: list[Proc], upstream: Upstream,
                                                              tmp_path: Path) -> None:
    m = upstream.add(generate("example.com/h", "v1.0.0"))
    p, port = proxy(procs, tmp_path / "cache", "-upstream", upstream.url)
    path = f"/{m.path}/@v/v1.0.0.info"
    made = 0
    while made < 30 or len(served(p, path)) < 2:  # both workers answered some
        assert get(port, path)[0] == 200
        made += 1
        wait_for(functools.partial(answered, p, path, made))  # its access line is written
        assert made < 300
    last = time.time()  # the requests may straddle a minute's end: wait for the minute of the last one
    wait_for(lambda: any(point["end"] >= last for point in status(port)["history"]), timeout=75, interval=0.5)

    def once(data: dict[str, Any]) -> bool:
        points = data["history"]
        totals = [sum(int(point[k]) for point in points) for k in ("requests", "hits", "lookups")]
        return totals == [made, made - 1, made]  # the first was the one miss

    from_every_worker(p, port, once)
