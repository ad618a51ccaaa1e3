"""What the parts of the bench run on their own share: their row and wrk types, and running one alone."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

# (what, ours, theirs, ratio, goal, met)
Result = tuple[str, str, str, float, str, bool]
Figures = tuple[float, float, float, float]  # wrk's requests/s, bytes/s, p50 ms, p99 ms
Wrk = Callable[..., Figures]


def best_alternating(ours: Callable[[], Figures], theirs: Callable[[], Figures], rounds: int, key: int = 0
                     ) -> tuple[Figures, Figures]:
    """Run the two wrk measurements alternately rounds times; return the best of each by field key
    (short alternating runs, so a burst of load from elsewhere on the machine hits both sides alike)."""
    a, b = [], []
    for _ in range(rounds):
        a.append(ours())
        b.append(theirs())
    return max(a, key=lambda r: r[key]), max(b, key=lambda r: r[key])


def run_alone(name: str, measure: Callable[[Path, Wrk], list[Result]]) -> int:
    """Run one part's measure in a scratch directory and print its rows (`python bench/<name>.py`)."""
    from bench.run import wrk

    work = Path(tempfile.mkdtemp(prefix=f"goproxy-bench-{name}-"))
    try:
        rows = measure(work, wrk)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| figure | goproxy | reference | ratio | goal | met |\n|---|---|---|---|---|---|")
    for what, ours, theirs, ratio, goal, ok in rows:
        print(f"| {what} | {ours} | {theirs} | {ratio:.2f}× | {goal} | {'yes' if ok else 'NO'} |")
    return 0
