"""The front page of a server with worker processes: which worker answered, and asking until both have."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from tests.support.helpers import get, wait_for
from tests.support.proc import Proc


def served(p: Proc, path: str) -> dict[str, int]:
    """Return how many times each worker (w1, w2, ...) answered path, from p's access lines."""
    counts: dict[str, int] = {}
    for w in re.findall(r"\[(w\d+)\] (?:\[CACHE \w+\] )?127\.0\.0\.1 GET " + re.escape(path) + " ", p.text()):
        counts[w] = counts.get(w, 0) + 1
    return counts


def status(port: int) -> dict[str, Any]:
    """Return the server's /status.json."""
    code, _, body = get(port, "/status.json")
    assert code == 200
    return dict(json.loads(body))


def from_every_worker(p: Proc, port: int, check: Callable[[dict[str, Any]], bool], workers: int = 2,
                      timeout: float = 30) -> None:
    """Ask /status.json until an answer of every worker passed check, and fail when a worker's
    answer fails it after one of that worker's passed (a worker may lag its siblings' figures
    by one posting, never lose them). Each answer's worker is told by its access line."""
    names = [f"w{i}" for i in range(1, workers + 1)]
    passed: set[str] = set()
    seen = served(p, "/status.json")

    def everyone() -> bool:
        nonlocal seen
        data = status(port)
        wait_for(lambda: sum(served(p, "/status.json").values()) > sum(seen.values()))
        now = served(p, "/status.json")
        worker = next(w for w in now if now[w] > seen.get(w, 0))
        seen = now
        if check(data):
            passed.add(worker)
        else:
            assert worker not in passed, f"{worker}: " + json.dumps(data, indent=1)[:3000]
        return passed >= set(names)

    wait_for(everyone, timeout=timeout, interval=0.0)
