"""The check command: say which module versions a project needs are in the cache, and which are missing."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from ..airgap.check import Checker, summary
from ..app import build
from ..errors import StartupError
from .prefetch import parse_command, read_wants, start, with_sumdb


def check_command(args: list[str], environ: Mapping[str, str]) -> int:
    """Run `goproxy check [flags] ARG...`.

    Exit 0 when everything is present, 1 when anything is missing, 2 on bad input.

    Offline (-upstream off) a version also needs its checksum database record (of -gosumdb, or
    sum.golang.org); online, each missing one is looked up upstream.
    """
    cmd = parse_command("check", args, environ)
    if cmd is None:
        return 2
    wants = read_wants("check", cmd.args)
    if wants is None:
        return 2
    config = with_sumdb(cmd.config) if cmd.config.offline else cmd.config
    _progress, listener = start(config)
    try:
        app = build(config)
        offline = config.offline
        db = config.gosumdb.name if offline and config.gosumdb is not None else ""
        statuses = Checker(app.storage, None if offline else app.upstreams, db, app.verifier.needs).run(list(wants))
        for s in statuses:
            print(s.line())
        print(f"check: {summary(statuses)}")
        return 0 if all(s.present for s in statuses) else 1
    except StartupError as exc:
        print(f"goproxy check: {exc}", file=sys.stderr)
        return 1
    finally:
        listener.stop()
