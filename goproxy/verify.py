"""verify-cache: re-check every cached zip and go.mod against the checksum database."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Iterator, Mapping

from . import dirhash
from .cache import PARTIAL_SUFFIXES, Cache
from .config import KNOWN_SUMDB_KEYS, parse_gosumdb
from .errors import BadRequest, ChecksumError, ConfigError, ProxyError
from .metrics import Metrics
from .modpath import is_canonical, unescape_path, unescape_version
from .patterns import match_any
from .sumdb import SumDB

log = logging.getLogger(__name__)


def cached_artifacts(root: str) -> Iterator[tuple[str, str, str, str]]:
    """cached_artifacts yields (module, version, "zip" or "mod", file path) for every committed
    zip and go.mod of a canonical version under root (checksum database answers excluded)."""
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel == "sumdb" or rel.startswith("sumdb" + os.sep):
            dirnames[:] = []
            continue
        if os.path.basename(dirpath) != "@v":
            continue
        try:
            module = unescape_path(os.path.dirname(rel).replace(os.sep, "/"))
        except BadRequest:
            continue
        for name in sorted(filenames):
            base, _, ext = name.rpartition(".")
            if ext not in ("zip", "mod") or name.endswith(PARTIAL_SUFFIXES):
                continue
            try:
                version = unescape_version(base)
            except BadRequest:
                continue
            if is_canonical(version):
                yield module, version, ext, os.path.join(dirpath, name)


def main(args: list[str], environ: Mapping[str, str]) -> int:
    """main runs `goproxy verify-cache [flags]`: exit 0 when all verify, 1 on any failure, 2 on bad flags."""
    from .cli import build_upstreams, load_config, parse_flags, setup_logging

    try:
        flags, rest = parse_flags(args)
        if rest:
            raise ConfigError(f"verify-cache: unexpected argument {rest[0]!r}")
        config = load_config(flags, environ)
    except ConfigError as exc:
        print(f"goproxy: {exc}", file=sys.stderr)
        return 2
    if config.gosumdb is None:  # verification off for serving: check against sum.golang.org
        config = dataclasses.replace(config, gosumdb=parse_gosumdb(KNOWN_SUMDB_KEYS["sum.golang.org"]))
    assert config.gosumdb is not None
    listener = setup_logging(config.log_level)
    try:
        metrics = Metrics()
        upstreams = build_upstreams(config, metrics)
        db = SumDB(config.gosumdb, upstreams, Cache(config.cache_dir), metrics)
        checked = skipped = 0
        failures: list[str] = []
        for module, version, ext, path in cached_artifacts(config.cache_dir):
            what = f"{module}@{version}" + ("/go.mod" if ext == "mod" else "")
            if match_any(config.gonosumdb, module) or upstreams.private_route(module):
                skipped += 1
                continue
            try:
                if ext == "zip":
                    got = dirhash.hash_zip(path, f"{module}@{version}/")
                else:
                    with open(path, "rb") as f:
                        got = dirhash.hash_gomod(f.read())
                db.check(module, version, ext == "mod", got)
                checked += 1
            except (ChecksumError, ValueError) as exc:
                failures.append(f"MISMATCH {what}: {exc}")
            except ProxyError as exc:
                failures.append(f"UNVERIFIED {what}: {exc}")
        for line in failures:
            print(line)
        print(f"verify-cache: {checked} verified, {len(failures)} failed, {skipped} skipped "
              f"(GONOSUMDB or private) against {config.gosumdb.name}")
        return 1 if failures else 0
    finally:
        listener.stop()
