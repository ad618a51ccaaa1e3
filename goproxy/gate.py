"""Module rules applied to the service's answers.

Denied versions are refused, offline modules served from the cache alone, and denied versions
left out of lists and never the answer to @latest or a query.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from .errors import NotFound, ProxyError
from .modpath import compare_versions
from .request import Artifact
from .rules import Decision, Rules
from .storage.base import Blob


class Denied(ProxyError):
    """A module version the rules deny; status 403.

    403, not 410: the go command takes 404 and 410 as "not here" and tries the next GOPROXY
    entry (",direct" fetches the version straight from its origin), but stops at a 403.
    """

    status = 403


def is_release(version: str) -> bool:
    """Report whether version is a release (no pre-release part: "v1.2.3", "v2.0.0+incompatible")."""
    return "-" not in version.partition("+")[0]


def newest(versions: list[str]) -> str | None:
    """Return the version the go command takes as latest from a list.

    That is the highest release, else the highest pre-release; None for an empty list.
    """
    best: str | None = None
    for v in [v for v in versions if is_release(v)] or versions:
        if best is None or compare_versions(v, best) > 0:
            best = v
    return best


def list_versions(body: bytes) -> list[str]:
    """Return the versions of an @v/list body, one per line, blank lines dropped."""
    return [line.strip() for line in body.decode("utf-8", "replace").split("\n") if line.strip()]


def resolved_version(body: bytes) -> str | None:
    """Return the Version of an .info or @latest body, or None when it has none."""
    try:
        version = json.loads(body).get("Version")
    except (ValueError, AttributeError):
        return None
    return version if isinstance(version, str) else None


class Content(Protocol):
    """What the gate needs of a reply: its content, and a way to release it."""

    blob: Blob

    def close(self) -> None:
        """Release the content."""


Reply = TypeVar("Reply", bound=Content)


class RuleGate(Generic[Reply]):
    """Serve module artifacts under rules, with the service's serve (may fetch) and cached (never fetches).

    cached returns None when the artifact is not in the cache.
    """

    def __init__(self, serve: Callable[[Artifact], Reply], cached: Callable[[Artifact], Reply | None],
                 reply: Callable[[Reply, bytes], Reply]) -> None:
        """Gate serve and cached; reply(r, body) returns a copy of Reply r whose content is body."""
        self._serve = serve
        self._cached = cached
        self._reply = reply

    def serve(self, req: Artifact, rules: Rules) -> Reply:
        """Return the reply for req as rules allow.

        Raises Denied (403) for a version a deny rule covers, a module a deny rule covers
        wholly, and a query or @latest that resolves to a denied version when no allowed one is
        left; NotFound (404) for an artifact an offline rule covers that is not in the cache;
        otherwise what the service raises.
        """
        decision = rules.decide(req.module, req.version if req.immutable else None)
        if decision.action == "deny":
            raise Denied(f"{_name(req)}: {decision.reason}")
        reply = self._get(req, decision)
        if req.kind == "list":
            return self._filtered(req, reply, rules)
        if req.kind == "latest" or (req.kind == "info" and not req.immutable):
            return self._resolved(req, reply, rules)
        return reply

    def _get(self, req: Artifact, decision: Decision) -> Reply:
        if decision.action != "offline":
            return self._serve(req)
        reply = self._cached(req)
        if reply is None:
            why = f" ({decision.reason})" if decision.reason else ""
            raise NotFound(f"{_name(req)}: not in this proxy's cache, and its rules (entry {decision.index + 1}) "
                           f"serve {req.module} from the cache only{why}")
        return reply

    def _filtered(self, req: Artifact, reply: Reply, rules: Rules) -> Reply:
        """Return a copy of the @v/list reply without the versions rules deny."""
        body = _read(reply)
        versions = list_versions(body)
        allowed = rules.filter_versions(req.module, versions)
        if len(allowed) == len(versions):
            return self._reply(reply, body)
        return self._reply(reply, "".join(v + "\n" for v in allowed).encode())

    def _resolved(self, req: Artifact, reply: Reply, rules: Rules) -> Reply:
        """Return the @latest or query reply, or the newest allowed version's .info when it names a denied one.

        Raises Denied for a query (.info) that resolves to a denied version, and when no allowed
        version is left.
        """
        body = _read(reply)
        version = resolved_version(body)
        decision = rules.decide(req.module, version) if version is not None else None
        if decision is None or decision.action != "deny":
            return self._reply(reply, body)
        if req.kind == "info":
            raise Denied(f"{req.module}@{req.version} is {version}: {decision.reason}")
        try:
            versions = list_versions(_read(self.serve(Artifact("list", req.module), rules)))
        except NotFound:
            versions = []
        best = newest(versions)
        if best is None:
            raise Denied(f"{req.module}: the latest version, {version}, is denied ({decision.reason}) "
                         "and no other version is allowed")
        info = self.serve(Artifact("info", req.module, best), rules)
        return self._reply(reply, _read(info))


def _name(req: Artifact) -> str:
    return f"{req.module}@{req.version}" if req.version else req.module


def _read(reply: Content) -> bytes:
    """Return the whole content of reply (a list, .info or @latest: small) and release it."""
    try:
        return reply.blob.read()
    finally:
        reply.close()

