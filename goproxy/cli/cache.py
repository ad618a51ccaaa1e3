"""Admin subcommands on the cache (a directory or a shared bucket): cache stats, gc, verify, rm.

Each is safe while servers run on the cache.
"""

from __future__ import annotations

import io
import os
import sqlite3
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..app import App, build
from ..errors import ConfigError, ProxyError, StartupError
from ..fetch import check_content
from ..modpath import escape_path, escape_version, is_canonical
from ..request import Artifact, SumdbRequest, parse_request
from ..storage.base import PARTIAL_SUFFIXES, Blob, Stat, Storage
from ..storage.cleanup import scan
from ..validate import check_zip
from ..values import parse_bool
from .common import load_command_config, parse_flags

USAGE = """Usage: goproxy cache stats [flags]     modules, versions, bytes and oldest last use
       goproxy cache gc [-dry-run] [flags] remove what -max-cache-age and -max-cache-size say
       goproxy cache verify [-fix] [flags] check every cached file can be what its name says
                                           (-fix removes those that cannot); exit 1 if any fails
       goproxy cache rm [-dry-run] [flags] MODULE[@VERSION]...
                                           remove those versions (a whole module without @VERSION:
                                           every version, its list and @latest); -dry-run lists
                                           them; exit 1 if one is not in the cache

Flags are the server's (-cache, -storage, -lock, -config, -max-cache-age, -max-cache-size; and their
environment variables), so the commands see the cache and limits the server is configured with.
With -storage s3://…, they work on the bucket (and with -lock, on the replicas' shared last-used
times, taking the cleanup lock for gc).
"""


def cache_command(args: list[str], environ: Mapping[str, str]) -> int:
    """Run `goproxy cache stats|gc|verify|rm [flags]`; return the exit status.

    Returns 0 on success, 1 for a cache error (or a failure the subcommand reports), 2 for bad
    usage.
    """
    if not args or args[0] in ("-h", "-help", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0 if args else 2
    what, rest = args[0], args[1:]
    if what not in ("stats", "gc", "verify", "rm"):
        print(f"goproxy cache: unknown command {what!r}\n{USAGE}", file=sys.stderr, end="")
        return 2
    try:
        flags, extra = parse_flags(rest, booleans=frozenset({"dry-run", "fix", "h", "help"}))
        if {"h", "help"} & flags.keys():
            sys.stdout.write(USAGE)
            return 0
        dry_run = parse_bool(flags.pop("dry-run", "false"))
        if dry_run and what not in ("gc", "rm"):
            raise ConfigError("flag -dry-run: only cache gc and cache rm take it")
        fix = parse_bool(flags.pop("fix", "false"))
        if fix and what != "verify":
            raise ConfigError("flag -fix: only cache verify takes it")
        targets = [parse_target(a) for a in extra] if what == "rm" else []
        if what == "rm" and not targets:
            raise ConfigError("name at least one MODULE or MODULE@VERSION to remove")
        if extra and what != "rm":
            raise ConfigError(f"unexpected argument {extra[0]!r}")
    except (ConfigError, ValueError, ProxyError) as exc:
        print(f"goproxy cache {what}: {exc}", file=sys.stderr)
        return 2
    config = load_command_config(flags, environ, f"goproxy cache {what}")
    if config is None:
        return 2
    if not config.storage and not os.path.isdir(config.cache_dir):
        print(f"goproxy cache {what}: no cache directory at {os.path.abspath(config.cache_dir)}",
              file=sys.stderr)
        return 1
    try:
        app = build(config)
    except StartupError as exc:
        print(f"goproxy cache {what}: {exc}", file=sys.stderr)
        return 1
    try:
        try:
            if what == "verify":
                return verify(app.storage, fix)
            if what == "rm":
                return rm(app, targets, dry_run)
            return stats(app) if what == "stats" else gc(app, dry_run)
        finally:
            app.usage.close()
    except (OSError, sqlite3.Error, ProxyError) as exc:
        print(f"goproxy cache {what}: {exc}", file=sys.stderr)
        return 1


def stats(app: App) -> int:
    """Print modules, versions, bytes and the oldest last use of the cache; return 0."""
    found = scan(app.storage, time.time())
    known = app.usage.last_used()
    live = {p: e for p, e in found.entries.items() if e.files}
    modules = {m for m, _ in live}
    versions = sum(1 for _, v in live if v)
    size = sum(e.size for e in live.values())
    print(f"cache: {app.config.storage or app.local.root}")
    print(f"modules: {len(modules)}")
    print(f"versions: {versions}")
    print(f"bytes: {size} ({human_size(size)})")
    uses = [(known.get(p, e.mtime), e.name) for p, e in live.items() if p[1]]
    if uses:
        when, name = min(uses)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
        print(f"oldest last use: {stamp} ({ago(time.time() - when)} ago, {name})")
    else:
        print("oldest last use: none")
    print(f"checksum database files: {found.sumdb_files}, {found.sumdb_bytes} bytes "
          "(under sumdb/; never removed by cleanup)")
    return 0


def gc(app: App, dry_run: bool) -> int:
    """Make one cleanup pass with the configured limits and print what it removed.

    With dry_run, print what would go and remove nothing. Returns 0, or 1 when another replica
    holds the cleanup lock.
    """
    config = app.config
    if not config.max_cache_age and not app.cleaner.max_size:
        print("no -max-cache-age or -max-cache-size set: nothing is due for removal")
    report = app.cleaner.run(dry_run=dry_run)
    if report.elsewhere:
        print("another replica is cleaning the shared store now; try again later", file=sys.stderr)
        return 1
    verb = "would remove" if dry_run else "removed"
    now = time.time()
    for r in report.removed:
        print(f"{verb} {r.name}: {r.size} bytes, last used {ago(now - r.last_used)} ago ({r.reason})")
    print(f"{verb} {sum(1 for r in report.removed if r.version)} versions, {report.freed} bytes "
          f"({human_size(report.freed)}); {report.skipped} skipped while in use; "
          f"{report.kept_bytes} bytes ({human_size(report.kept_bytes)}) left")
    return 0


def verify(storage: Storage, fix: bool) -> int:
    """Check every cached artifact by the rules answers are checked by before they are cached.

    Prints each that fails ("BAD key: why") and, with fix, removes it (unless it was replaced
    meanwhile) so the next request fetches it again; needs no network. Returns 1 when any
    failed, else 0. Files that are no artifact (partial downloads, the verified tree head) are
    left alone.
    """
    checked = failed = removed = 0
    for st in sorted(storage.scan(), key=lambda st: st.key):
        if st.key.endswith(PARTIAL_SUFFIXES):
            continue
        try:
            req = parse_request("/" + st.key)
        except ProxyError:
            continue  # not an artifact's name
        blob = storage.open(st.key)
        if blob is None:
            continue  # removed since the scan
        try:
            problem = _check_stored(req, blob)
        finally:
            blob.close()
        checked += 1
        if problem is None:
            continue
        failed += 1
        print(f"BAD {st.key}: {problem}")
        if fix and storage.delete(st.key, expect=st):
            removed += 1
            print(f"removed {st.key}")
    summary = f"{checked} checked, {failed} failed"
    print(summary + (f", {removed} removed" if fix else ""))
    return 1 if failed else 0


# How long cache rm waits for a fetch of a key under way (it removes what that fetch committed).
RM_LOCK_TIMEOUT = 120.0
# Order rm removes a version's files in: the zip first (a half-done removal leaves small files).
_RM_ORDER = {"zip": 0, "mod": 1, "info": 2, "list": 3, "@latest": 4}


@dataclass(frozen=True)
class Target:
    """One argument of cache rm: a module path and a version ("" for the whole module), as typed."""

    module: str
    version: str

    @property
    def name(self) -> str:
        """Return "module@version", or the module path for a whole module."""
        return f"{self.module}@{self.version}" if self.version else self.module


def parse_target(arg: str) -> Target:
    """Return the Target of a MODULE[@VERSION] argument; raise BadRequest naming a bad path or version."""
    module, at, version = arg.rpartition("@") if "@" in arg else (arg, "", "")
    escape_path(module)
    if at:
        escape_version(version)
    return Target(module, version)


@dataclass
class Found:
    """What cache rm finds of a target: each (escaped module, escaped version) and its stored files."""

    target: Target
    versions: dict[tuple[str, str], dict[str, Stat]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Return the bytes of every file found."""
        return sum(st.size for files in self.versions.values() for st in files.values())


def find(stores: list[Storage], target: Target) -> Found:
    """Return the files of target in stores (the bucket, then the local tier).

    For a version: its .info, .mod and .zip; for a whole module, every version's, its list and
    its @latest.
    """
    module = escape_path(target.module)
    found = Found(target)
    for store in stores:
        if target.version:
            version = escape_version(target.version)
            for ext in ("info", "mod", "zip"):
                key = f"{module}/@v/{version}.{ext}"
                st = store.stat(key)
                if st is not None:
                    found.versions.setdefault((module, version), {})[key] = st
            continue
        for (m, v), entry in scan(store, time.time()).entries.items():
            if m == module:
                files = {k: st for k, st in entry.files.items() if not k.endswith(PARTIAL_SUFFIXES)}
                if files:
                    found.versions.setdefault((m, v), {}).update(files)
    return found


def rm(app: App, targets: list[Target], dry_run: bool) -> int:
    """Remove the cached files of targets and their last-used rows, printing each version removed.

    Safe while servers run on the cache: each key is removed under its fetch lock (a fetch
    under way finishes first, and what it committed goes too), by Storage.delete, so readers
    keep an open file and every process's in-memory copies are dropped (the generation file).
    With a bucket, the bucket's copy and this host's local tier go. A dry run prints what would
    go and removes nothing. Returns 1 when a target is not in the cache, else 0.
    """
    stores: list[Storage] = [app.storage] if app.storage is app.local else [app.storage, app.local]
    verb = "would remove" if dry_run else "removed"
    missing = removed_versions = removed_files = freed = 0
    for target in targets:
        found = find(stores, target)
        if not found.versions:
            print(f"goproxy cache rm: {target.name}: not in the cache", file=sys.stderr)
            missing += 1
            continue
        for (module, version), files in sorted(found.versions.items()):
            keys = sorted(files, key=_order)
            if not dry_run:
                for key in keys:
                    _remove(app, stores, key)
                for usage in app.coordination.usages:
                    usage.forget([(module, version)], before=time.time() + 1)
            size = sum(st.size for st in files.values())
            what = f"{target.module}@{version}" if version else f"{target.module} (list and @latest)"
            names = ", ".join(k.rpartition("/")[2] for k in keys)
            print(f"{verb} {what}: {names} ({size} bytes)")
            removed_versions += 1
            removed_files += len(keys)
            freed += size
        if not dry_run:
            app.storage.prune(f"{escape_path(target.module)}/@v")
    print(f"{verb} {removed_versions} entries, {removed_files} files, {freed} bytes ({human_size(freed)})")
    return 1 if missing else 0


def _remove(app: App, stores: list[Storage], key: str) -> None:
    """Remove key from every store under its fetch lock (raise LockTimeout after RM_LOCK_TIMEOUT)."""
    with app.coordination.locks.hold(key, RM_LOCK_TIMEOUT):
        for store in stores:
            store.delete(key)


def _order(key: str) -> tuple[int, str]:
    name = key.rpartition("/")[2]
    return _RM_ORDER.get(name if name in ("list", "@latest") else name.rpartition(".")[2], 9), key


def _check_stored(req: Artifact | SumdbRequest, blob: Blob) -> str | None:
    """Return why a stored artifact cannot be what req names, or None when it can."""
    try:
        if isinstance(req, Artifact) and req.kind == "zip":
            if is_canonical(req.version):
                f = blob.file if blob.file is not None and blob.file.seekable() else io.BytesIO(blob.read())
                check_zip(f, req.module, req.version)
            return None
        check_content(req, blob.read())
    except (ValueError, ProxyError) as exc:
        return str(exc)
    return None


def human_size(n: int) -> str:
    """Return n bytes in decimal units: "1.5 MB"."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def ago(seconds: float) -> str:
    """Return a duration of seconds coarsely: "3d4h", "5h2m", "40s"."""
    s = max(0, int(seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d{h}h"
    if h:
        return f"{h}h{m}m"
    if m:
        return f"{m}m{s}s"
    return f"{s}s"
