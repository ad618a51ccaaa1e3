"""The verify-cache command: re-check every cached zip and go.mod against the checksum database."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator, Mapping

from ..app import build
from ..errors import ChecksumError, ConfigError, ProxyError
from ..request import stored_artifact
from ..storage.base import Storage
from ..sumdb import dirhash
from ..sumdb.db import KNOWN_SUMDB_KEYS, parse_gosumdb
from .common import load_command_config, parse_flags, setup_logging


def cached_artifacts(storage: Storage) -> Iterator[tuple[str, str, str, str]]:
    """Yield (module, version, "zip" or "mod", key) for every committed zip and go.mod.

    Only those of a canonical version, in key order; checksum database answers are excluded.
    """
    for key in sorted(st.key for st in storage.scan()):
        art = stored_artifact(key)
        if art is not None and art.kind in ("zip", "mod") and art.immutable:
            yield art.module, art.version, art.kind, key


def verify_cache(args: list[str], environ: Mapping[str, str]) -> int:
    """Run `goproxy verify-cache [flags]`: exit 0 when all verify, 1 on any failure, 2 on bad flags."""
    try:
        flags, rest = parse_flags(args)
        if rest:
            raise ConfigError(f"unexpected argument {rest[0]!r}")
    except ConfigError as exc:
        print(f"goproxy verify-cache: {exc}", file=sys.stderr)
        return 2
    config = load_command_config(flags, environ, "goproxy verify-cache")
    if config is None:
        return 2
    if config.gosumdb is None:  # verification off for serving: check against sum.golang.org
        config = dataclasses.replace(config, gosumdb=parse_gosumdb(KNOWN_SUMDB_KEYS["sum.golang.org"]))
    listener = setup_logging(config.log_level)
    try:
        app = build(config)
        sumdb = app.verifier.sumdb
        assert sumdb is not None
        checked = skipped = 0
        failures: list[str] = []
        for module, version, ext, key in cached_artifacts(app.storage):
            what = f"{module}@{version}" + ("/go.mod" if ext == "mod" else "")
            if not app.verifier.needs(module):
                skipped += 1
                continue
            blob = app.storage.open(key)
            if blob is None:
                continue
            try:
                if ext == "zip":
                    assert blob.file is not None
                    got = dirhash.hash_zip(blob.file, f"{module}@{version}/")
                else:
                    got = dirhash.hash_gomod(blob.read())
                sumdb.check(module, version, ext == "mod", got)
                checked += 1
            except (ChecksumError, ValueError) as exc:
                failures.append(f"MISMATCH {what}: {exc}")
            except ProxyError as exc:
                failures.append(f"UNVERIFIED {what}: {exc}")
            finally:
                blob.close()
        for line in failures:
            print(line)
        print(f"verify-cache: {checked} verified, {len(failures)} failed, {skipped} skipped "
              f"(GONOSUMDB or private) against {sumdb.db.name}")
        return 1 if failures else 0
    finally:
        listener.stop()
