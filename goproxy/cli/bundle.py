"""The bundle export and bundle import commands: carry module files and checksum data across an air gap."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping

from .. import __version__
from ..airgap.export import Exporter, cached_wants
from ..airgap.importer import Importer
from ..airgap.manifest import BundleError, ExportError
from ..airgap.manifest import read as read_manifest
from ..app import build
from ..config import Config
from ..errors import ProxyError, StartupError
from ..patterns import match_any
from ..sumdb.db import KNOWN_SUMDB_KEYS
from .prefetch import parse_command, prefetch_into, read_wants, start, with_sumdb

USAGE = "usage: goproxy bundle export -o FILE [-since MANIFEST] [-all] [flags] [ARG...] | bundle import [flags] FILE"


def bundle_command(args: list[str], environ: Mapping[str, str]) -> int:
    """Run `goproxy bundle export|import ...`; exit 0 on success, 1 on failure, 2 on bad usage."""
    if args[:1] == ["export"]:
        return export_command(args[1:], environ)
    if args[:1] == ["import"]:
        return import_command(args[1:], environ)
    print(f"goproxy bundle: {USAGE}", file=sys.stderr)
    return 2


def created_time(environ: Mapping[str, str]) -> int:
    """Return the bundle's creation time: SOURCE_DATE_EPOCH when set, else now (Unix seconds)."""
    text = environ.get("SOURCE_DATE_EPOCH", "").strip()
    if text.isdigit():
        return int(text)
    return int(time.time())


def export_command(args: list[str], environ: Mapping[str, str]) -> int:
    """Run `goproxy bundle export -o FILE [-since MANIFEST] [-all] [flags] [ARG...]`."""
    cmd = parse_command("bundle export", args, environ, own=frozenset({"o", "since", "all"}),
                        booleans=frozenset({"all"}))
    if cmd is None:
        return 2
    out, every = cmd.own.get("o", ""), "all" in cmd.own
    if not out or (every == bool(cmd.args)):
        print(f"goproxy bundle export: {USAGE}", file=sys.stderr)
        return 2
    wants = None if every else read_wants("bundle export", cmd.args)
    if wants is None and not every:
        return 2
    try:
        since = read_manifest(cmd.own["since"]) if "since" in cmd.own else None
    except BundleError as exc:
        print(f"goproxy bundle export: -since: {exc}", file=sys.stderr)
        return 2
    config = with_sumdb(cmd.config)
    progress, listener = start(config)
    try:
        app = build(config, progress=progress, gosum=wants.by_version if wants else None)
        if wants is None:
            wants = cached_wants(app.storage)
        elif any(o.error for o in prefetch_into(app, wants)):
            print("goproxy bundle export: some module versions could not be fetched; no bundle written",
                  file=sys.stderr)
            return 1
        manifest = Exporter(app.storage, app.verifier, f"goproxy {__version__}").export(
            wants, out, created_time(environ), since)
        size = os.path.getsize(out)
        print(f"bundle export: {out}: {len(manifest.modules)} module versions, {len(manifest.members)} files, "
              f"{size} bytes; {manifest.sumdb_name} at tree size {manifest.tree_size}")
        return 0
    except (ExportError, StartupError, ProxyError, OSError) as exc:
        print(f"goproxy bundle export: {exc}", file=sys.stderr)
        return 1
    finally:
        listener.stop()


def trusted_keys(config: Config) -> dict[str, str]:
    """Return the checksum database keys an import trusts: the known ones and -gosumdb's."""
    keys = dict(KNOWN_SUMDB_KEYS)
    if config.gosumdb is not None:
        keys[config.gosumdb.name] = config.gosumdb.key
    return keys


def import_command(args: list[str], environ: Mapping[str, str]) -> int:
    """Run `goproxy bundle import [flags] FILE`.

    Exit 0 when imported (or nothing was new), 1 when the bundle is refused (nothing changed),
    2 on bad usage.
    """
    cmd = parse_command("bundle import", args, environ)
    if cmd is None:
        return 2
    if len(cmd.args) != 1:
        print(f"goproxy bundle import: {USAGE}", file=sys.stderr)
        return 2
    config = cmd.config
    _progress, listener = start(config)
    try:
        app = build(config)
        keys = trusted_keys(config)
        unverified = lambda module: (  # noqa: E731 - GONOSUMDB and private modules have no records
            match_any(config.gonosumdb, module) or app.upstreams.private_route(module) is not None)
        report = Importer(app.storage, keys.get, unverified).run(cmd.args[0])
        moved = (f"moved from {report.old_size} to {report.tree_size}" if report.tree_size != report.old_size
                 else f"stays at {report.tree_size}")
        print(f"bundle import: {len(report.committed)} files added, {report.unchanged} already there; "
              f"{report.db_name} tree size {moved}")
        return 0
    except BundleError as exc:
        print(f"goproxy bundle import: refused, nothing changed: {exc}", file=sys.stderr)
        return 1
    except (StartupError, ProxyError, OSError) as exc:
        print(f"goproxy bundle import: {exc}", file=sys.stderr)
        return 1
    finally:
        listener.stop()
