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
    """Ask /status.json until every worker has answered since this call and every answer since
    the first that passed check passed it too (a worker may lag its siblings by one posting)."""
    names = [f"w{i}" for i in range(1, workers + 1)]
    before = served(p, "/status.json")
    passed = [False]

    def everyone() -> bool:
        data = status(port)
        if not check(data):
            assert not passed[0], json.dumps(data, indent=1)[:3000]
            return False
        passed[0] = True
        now = served(p, "/status.json")
        return all(now.get(w, 0) > before.get(w, 0) for w in names)

    wait_for(everyone, timeout=timeout, interval=0.02)
