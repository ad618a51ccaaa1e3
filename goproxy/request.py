"""What a request path asks for: a module proxy Artifact or a checksum database SumdbRequest."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from functools import cached_property

from .errors import BadRequest, NotFound
from .modpath import check_query, check_version, escape_case, is_canonical, unescape_path, unescape_version

_MAX_PATH = 4096
_KIND_TYPES = {"info": "application/json", "latest": "application/json", "zip": "application/zip",
               "list": "text/plain; charset=utf-8", "mod": "text/plain; charset=utf-8"}


@dataclass(frozen=True)
class Artifact:
    """One module proxy resource: kind is list, latest, info, mod or zip."""

    kind: str
    module: str
    version: str = ""

    @property
    def escaped_module(self) -> str:
        """Return the module path in the go command's case-escaped form."""
        return escape_case(self.module)

    @property
    def escaped_version(self) -> str:
        """Return the version in case-escaped form ("" for list and latest)."""
        return escape_case(self.version)

    # key and immutable are asked several times per request and cost a regular expression or
    # two each; an Artifact is immutable, so each is computed once (parsed requests are reused).
    @cached_property
    def key(self) -> str:
        """Return the relative cache path: the escaped URL path without its leading slash."""
        if self.kind == "list":
            return f"{self.escaped_module}/@v/list"
        if self.kind == "latest":
            return f"{self.escaped_module}/@latest"
        return f"{self.escaped_module}/@v/{self.escaped_version}.{self.kind}"

    @cached_property
    def immutable(self) -> bool:
        """Report whether this is .info/.mod/.zip of a canonical version, cached forever."""
        return self.kind in ("info", "mod", "zip") and is_canonical(self.version)

    @property
    def content_type(self) -> str:
        """Return the Content-Type the artifact is served with."""
        return _KIND_TYPES[self.kind]


_TILE = re.compile(r"tile/([1-9][0-9]?)/(data|0|[1-9][0-9]*)/((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([1-9][0-9]*))?")
_NAME_ELEM = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class SumdbRequest:
    """A checksum database request: /sumdb/<name>/<path>."""

    name: str
    path: str

    @property
    def key(self) -> str:
        """Return the relative cache path "sumdb/<name>/<path>"."""
        return f"sumdb/{self.name}/{self.path}"

    @property
    def immutable(self) -> bool:
        """Report whether this is a lookup or a full tile; latest and partial tiles change."""
        return self.path.startswith("lookup/") or (self.path.startswith("tile/") and ".p/" not in self.path)

    @property
    def content_type(self) -> str:
        """Return text for lookup/latest/supported, octet-stream for tiles."""
        return "application/octet-stream" if self.path.startswith("tile/") else "text/plain; charset=utf-8"


def _parse_sumdb(rest: str) -> SumdbRequest:
    for suffix in ("/supported", "/latest"):
        if rest.endswith(suffix):
            return _sumdb(rest[: -len(suffix)], suffix[1:])
    i = rest.find("/lookup/")
    if i >= 0:
        target = rest[i + len("/lookup/"):]
        mod, at, ver = target.rpartition("@")
        if not at:
            raise BadRequest(f"invalid checksum database lookup {target!r}: want module@version")
        path, version = unescape_path(mod), unescape_version(ver)
        check_version(path, version)
        return _sumdb(rest[:i], f"lookup/{target}")
    i = rest.find("/tile/")
    if i >= 0:
        tile = rest[i + 1:]
        m = _TILE.fullmatch(tile)
        if not m or int(m.group(1)) > 30 or (m.group(4) and int(m.group(4)) >= 1 << int(m.group(1))):
            raise BadRequest(f"invalid checksum database tile path {tile!r}")
        return _sumdb(rest[:i], tile)
    raise NotFound(f"unknown checksum database request /sumdb/{rest}")


def _sumdb(name: str, path: str) -> SumdbRequest:
    elems = name.split("/")
    if not name or any(e in (".", "..") or not _NAME_ELEM.fullmatch(e) for e in elems):
        raise BadRequest(f"invalid checksum database name {name!r}")
    return SumdbRequest(name, path)


def parse_request(path: str) -> Artifact | SumdbRequest:
    """Map a request path to what it asks for.

    Raises BadRequest for anything malformed (double encoding, control bytes, traversal,
    invalid module path or version) and NotFound for paths outside the protocol.
    """
    if not path.startswith("/") or len(path) > _MAX_PATH:
        raise BadRequest("invalid request path: must start with / and be at most 4096 bytes")
    # The go command percent-encodes some characters ("!" as %21): decode exactly once, then
    # judge the decoded path. A "%" left after decoding (double encoding) is refused.
    try:
        path = urllib.parse.unquote(path, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("invalid request path: percent-escapes that are not UTF-8") from None
    if not path.isascii() or re.search(r"[%\\\x00-\x20\x7f]", path):
        raise BadRequest("invalid request path: non-ASCII, '%', backslash or control byte")
    if "//" in path or any(e in (".", "..") for e in path.split("/")):
        raise BadRequest("invalid request path: empty, '.' or '..' element")
    if path.startswith("/sumdb/"):
        return _parse_sumdb(path[len("/sumdb/"):])
    if path.endswith("/@latest"):
        return Artifact("latest", unescape_path(path[1: -len("/@latest")]))
    mod, sep, tail = path[1:].partition("/@v/")
    if not sep:
        raise NotFound(f"not found: {path}")
    if tail == "list":
        return Artifact("list", unescape_path(mod))
    base, dot, ext = tail.rpartition(".")
    if not dot or ext not in ("info", "mod", "zip") or not base:
        raise NotFound(f"not found: {path}")
    module, version = unescape_path(mod), unescape_version(base)
    if ext == "info" and not is_canonical(version):
        check_query(version)
    else:
        check_version(module, version)
    return Artifact(ext, module, version)


def stored_artifact(key: str) -> Artifact | None:
    """Return the module artifact stored under cache key key, or None when key names none.

    None for checksum database files, partial and lock files, and anything whose name is not the
    escaped form of a module path and version (what parse_request would refuse or name otherwise).
    """
    if key.startswith("sumdb/"):
        return None
    try:
        req = parse_request("/" + key)
    except (BadRequest, NotFound):
        return None
    return req if isinstance(req, Artifact) and req.key == key else None
