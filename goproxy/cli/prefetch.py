"""The prefetch command: fill the cache with what go.sum, go.mod files and module lists name.

Also the helpers the air-gap commands share.
"""

from __future__ import annotations

import dataclasses
import logging.handlers
import sys
from collections.abc import Mapping

from ..airgap.gosum import InputError, Wants, read_inputs
from ..airgap.prefetch import Outcome, Prefetcher, summary
from ..app import App, build
from ..config import Config
from ..errors import ConfigError, StartupError
from ..progress import Progress, choose_mode
from ..sumdb.db import KNOWN_SUMDB_KEYS, parse_gosumdb
from .common import load_command_config, parse_flags, setup_logging


@dataclasses.dataclass
class Command:
    """A parsed air-gap command line: its own flags, its arguments and the proxy's configuration."""

    name: str
    own: dict[str, str]
    args: list[str]
    config: Config


def parse_command(name: str, args: list[str], environ: Mapping[str, str], own: frozenset[str] = frozenset(),
                  booleans: frozenset[str] = frozenset()) -> Command | None:
    """Return the command line of `goproxy NAME [flags] ARG...`, or None on bad flags.

    Flags in own are the command's, the rest configure the proxy as for serving; flags in
    booleans take no value. Prints the error before returning None.
    """
    try:
        flags, rest = parse_flags(args, booleans=booleans)
    except ConfigError as exc:
        print(f"goproxy {name}: {exc}", file=sys.stderr)
        return None
    mine = {k: flags.pop(k) for k in list(flags) if k in own}
    config = load_command_config(flags, environ, f"goproxy {name}")
    return None if config is None else Command(name, mine, rest, config)


def with_sumdb(config: Config) -> Config:
    """Return config with a checksum database: its -gosumdb, or sum.golang.org when that is off."""
    if config.gosumdb is not None:
        return config
    return dataclasses.replace(config, gosumdb=parse_gosumdb(KNOWN_SUMDB_KEYS["sum.golang.org"]))


def start(config: Config) -> tuple[Progress, logging.handlers.QueueListener]:
    """Set up the progress display and logging on stderr for a command."""
    progress = Progress(choose_mode(config.progress, sys.stderr.isatty()), sys.stderr)
    return progress, setup_logging(config.log_level, progress)


def read_wants(name: str, args: list[str]) -> Wants | None:
    """Return what the arguments name, or print why they cannot be read and return None."""
    if not args:
        print(f"goproxy {name}: name at least one go.sum, go.mod, module list or module@version",
              file=sys.stderr)
        return None
    try:
        return read_inputs(args)
    except InputError as exc:
        print(f"goproxy {name}: {exc}", file=sys.stderr)
        return None


def prefetch_into(app: App, wants: Wants) -> list[Outcome]:
    """Prefetch wants through app's service, printing each failure and the summary line."""
    outcomes = Prefetcher(app.service, app.storage, max(4, app.config.max_concurrent_downloads)).run(list(wants))
    for o in outcomes:
        if o.error:
            print(f"FAILED {o.want.name}: {o.error}")
    print(f"prefetch: {summary(outcomes)}")
    sys.stdout.flush()
    return outcomes


def prefetch_command(args: list[str], environ: Mapping[str, str]) -> int:
    """Run `goproxy prefetch [flags] ARG...`: exit 0 when all is cached, 1 on any failure, 2 on bad input."""
    cmd = parse_command("prefetch", args, environ)
    if cmd is None:
        return 2
    wants = read_wants("prefetch", cmd.args)
    if wants is None:
        return 2
    progress, listener = start(cmd.config)
    try:
        app = build(cmd.config, progress=progress, gosum=wants.by_version)
        outcomes = prefetch_into(app, wants)
        return 1 if any(o.error for o in outcomes) else 0
    except StartupError as exc:
        print(f"goproxy prefetch: {exc}", file=sys.stderr)
        return 1
    finally:
        listener.stop()
