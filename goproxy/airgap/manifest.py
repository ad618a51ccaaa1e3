"""A bundle's manifest.json: its members, module versions and checksum database head.

Also what it tells a later export about the destination.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

FORMAT = "goproxy-bundle/1"
NAME = "manifest.json"
# The largest manifest.json accepted (a bundle of the whole of a big cache stays far below).
MAX_SIZE = 256 << 20

_SHA256 = re.compile(r"[0-9a-f]{64}")


class BundleError(Exception):
    """A bundle that is refused: malformed, truncated, tampered with or not provable.

    The message names the first bad member.
    """


class ExportError(Exception):
    """A bundle that cannot be made: a module version missing or failing its checks, stale checksum data."""


@dataclass(frozen=True)
class Member:
    """One file of the bundle: its name (a cache key), size and SHA-256 (hex)."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ModuleEntry:
    """One module version: its zip's and go.mod's h1 hashes and the id of its record.

    A hash is "" when not carried; the record is the version's in the checksum database's log
    (-1 when it has none, as under GONOSUMDB).
    """

    module: str
    version: str
    zip: str = ""
    mod: str = ""
    record: int = -1

    @property
    def name(self) -> str:
        """Return "module@version"."""
        return f"{self.module}@{self.version}"


@dataclass(frozen=True)
class Destination:
    """What a destination holds once it imported a bundle (and those before it).

    The checksum database's tree size and hash (base64), its module versions, and the tile paths
    it has.
    """

    tree_size: int = 0
    tree_hash: str = ""
    modules: tuple[ModuleEntry, ...] = ()
    tiles: tuple[str, ...] = ()


@dataclass
class Manifest:
    """The manifest of a bundle; since is what the destination held before (a -since export)."""

    tool: str
    created: str
    sumdb_name: str
    sumdb_key: str
    tree_size: int
    tree_hash: str
    modules: list[ModuleEntry] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)
    since: Destination | None = None

    def destination(self) -> Destination:
        """Return what a destination holds after importing this bundle over what since says it had."""
        base = self.since or Destination()
        modules = {m.name: m for m in base.modules}
        modules.update({m.name: m for m in self.modules})
        tiles = set(base.tiles) | {m.name for m in self.members if "/tile/" in m.name}
        if self.tree_size >= base.tree_size:
            size, digest = self.tree_size, self.tree_hash
        else:
            size, digest = base.tree_size, base.tree_hash
        return Destination(size, digest, tuple(sorted(modules.values(), key=lambda m: (m.module, m.version))),
                           tuple(sorted(tiles)))

    def dump(self) -> bytes:
        """Return the manifest as JSON: sorted keys and lists, so equal manifests are equal bytes."""
        doc: dict[str, Any] = {
            "format": FORMAT,
            "tool": self.tool,
            "created": self.created,
            "sumdb": {"name": self.sumdb_name, "key": self.sumdb_key, "tree_size": self.tree_size,
                      "tree_hash": self.tree_hash},
            "modules": [_module_doc(m) for m in sorted(self.modules, key=lambda m: (m.module, m.version))],
            "members": [{"name": m.name, "size": m.size, "sha256": m.sha256}
                        for m in sorted(self.members, key=lambda m: m.name)],
        }
        if self.since is not None:
            doc["since"] = {"tree_size": self.since.tree_size, "tree_hash": self.since.tree_hash,
                            "modules": [_module_doc(m) for m in self.since.modules],
                            "tiles": list(self.since.tiles)}
        return (json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _module_doc(m: ModuleEntry) -> dict[str, Any]:
    doc: dict[str, Any] = {"path": m.module, "version": m.version, "record": m.record}
    if m.zip:
        doc["zip"] = m.zip
    if m.mod:
        doc["mod"] = m.mod
    return doc


def _get(doc: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(doc, dict) or not isinstance(doc.get(key), kind) or isinstance(doc.get(key), bool):
        raise BundleError(f"{NAME}: {where}{key} is missing or not a {kind.__name__}")
    return doc[key]


def _modules(items: Any, where: str) -> list[ModuleEntry]:
    if not isinstance(items, list):
        raise BundleError(f"{NAME}: {where}modules is not a list")
    out = []
    for i, d in enumerate(items):
        at = f"{where}modules[{i}]."
        zip_hash = d.get("zip", "") if isinstance(d, dict) else ""
        mod_hash = d.get("mod", "") if isinstance(d, dict) else ""
        if not isinstance(zip_hash, str) or not isinstance(mod_hash, str):
            raise BundleError(f"{NAME}: {at}zip and mod must be h1: hashes")
        out.append(ModuleEntry(_get(d, "path", str, at), _get(d, "version", str, at), zip_hash, mod_hash,
                               _get(d, "record", int, at)))
    return out


def load(data: bytes) -> Manifest:
    """Parse manifest.json; raise BundleError naming what is malformed."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{NAME}: not JSON: {exc}") from None
    if _get(doc, "format", str, "") != FORMAT:
        raise BundleError(f"{NAME}: format {doc['format']!r} is not {FORMAT!r}")
    db = _get(doc, "sumdb", dict, "")
    members = []
    for i, d in enumerate(_get(doc, "members", list, "")):
        m = Member(_get(d, "name", str, f"members[{i}]."), _get(d, "size", int, f"members[{i}]."),
                   _get(d, "sha256", str, f"members[{i}]."))
        if m.size < 0 or not _SHA256.fullmatch(m.sha256):
            raise BundleError(f"{NAME}: member {m.name}: bad size or sha256")
        members.append(m)
    since = None
    if doc.get("since") is not None:
        s = _get(doc, "since", dict, "")
        tiles = _get(s, "tiles", list, "since.")
        if not all(isinstance(t, str) for t in tiles):
            raise BundleError(f"{NAME}: since.tiles must be tile paths")
        since = Destination(_get(s, "tree_size", int, "since."), _get(s, "tree_hash", str, "since."),
                            tuple(_modules(s.get("modules"), "since.")), tuple(tiles))
    return Manifest(_get(doc, "tool", str, ""), _get(doc, "created", str, ""), _get(db, "name", str, "sumdb."),
                    _get(db, "key", str, "sumdb."), _get(db, "tree_size", int, "sumdb."),
                    _get(db, "tree_hash", str, "sumdb."), _modules(doc.get("modules"), ""), members, since)


def read(path: str) -> Manifest:
    """Return the manifest in a file: a manifest.json, or a bundle whose first member is one.

    Raises BundleError saying what is wrong.
    """
    import tarfile

    try:
        if tarfile.is_tarfile(path):
            with tarfile.open(path, mode="r|*") as tf:
                info = tf.next()
                f = tf.extractfile(info) if info is not None and info.name == NAME else None
                if f is None or info is None or info.size > MAX_SIZE:
                    raise BundleError(f"{path}: a bundle starts with {NAME}")
                return load(f.read())
        with open(path, "rb") as g:
            return load(g.read(MAX_SIZE + 1))
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise BundleError(f"{path}: {getattr(exc, 'strerror', None) or exc}") from None
