"""What /health and /ready say: whether the shared store, the lock service and the upstreams answer."""

from __future__ import annotations

from collections.abc import Callable

from .errors import StoreUnavailable

TEXT = "text/plain; charset=utf-8"


class Readiness:
    """Answer /health and /ready from checks of the parts a replica needs.

    checks are (name, check) pairs; a check raises StoreUnavailable while its part cannot be
    reached. upstreams() returns (healthy, one line) about the upstreams: a down upstream makes
    the proxy degraded but still ready (it serves what it has and the other upstreams).
    """

    def __init__(self, checks: list[tuple[str, Callable[[], None]]],
                 upstreams: Callable[[], tuple[bool, str]] = lambda: (True, "ok")) -> None:
        self.checks = checks
        self.upstreams = upstreams

    def problems(self) -> list[str]:
        """Return one line per shared part that cannot be reached now."""
        found = []
        for name, check in self.checks:
            try:
                check()
            except StoreUnavailable as exc:
                found.append(f"{name}: {exc}")
        return found

    def health(self) -> tuple[str, bytes]:
        """Return /health's body: "ok", or "degraded" with the reasons (still 200: the process lives)."""
        problems = self.problems()
        healthy, text = self.upstreams()
        if not healthy:
            problems.append(text.removeprefix("degraded: "))
        body = "ok\n" if not problems else "degraded\n" + "".join(p + "\n" for p in problems)
        return TEXT, body.encode()

    def ready(self) -> tuple[str, bytes]:
        """Return /ready's body; raise StoreUnavailable (503) while a shared part is unreachable."""
        problems = self.problems()
        if problems:
            raise StoreUnavailable("not ready: " + "; ".join(problems))
        return TEXT, b"ready\n"
