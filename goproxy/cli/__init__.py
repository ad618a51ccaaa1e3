"""The command line: the serving command, its -h and -version, and the subcommands."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .. import __version__, configload
from .. import config as cfg
from ..config import Config
from ..errors import ConfigError
from ..progress import Progress, choose_mode
from ..values import format_duration
from .common import parse_flags, setup_logging


def _auth(args: list[str], environ: Mapping[str, str]) -> int:
    from .auth import auth_command

    return auth_command(args, sys.stdin, sys.stdout, sys.stderr)


def _cache(args: list[str], environ: Mapping[str, str]) -> int:
    from .cache import cache_command

    return cache_command(args, environ)


def _verify_cache(args: list[str], environ: Mapping[str, str]) -> int:
    from .verify import verify_cache

    return verify_cache(args, environ)


def _prefetch(args: list[str], environ: Mapping[str, str]) -> int:
    from .prefetch import prefetch_command

    return prefetch_command(args, environ)


def _bundle(args: list[str], environ: Mapping[str, str]) -> int:
    from .bundle import bundle_command

    return bundle_command(args, environ)


def _check(args: list[str], environ: Mapping[str, str]) -> int:
    from .check import check_command

    return check_command(args, environ)


# Subcommands: name → function(args, environ) returning an exit status; each imports its module
# only when it runs.
SUBCOMMANDS: dict[str, Callable[[list[str], Mapping[str, str]], int]] = {
    "auth": _auth,
    "cache": _cache,
    "verify-cache": _verify_cache,
    "prefetch": _prefetch,
    "bundle": _bundle,
    "check": _check,
}


def _default_text(value: Any) -> str:
    if value is None:
        return "off"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return format_duration(value)
    return str(value)


def usage() -> str:
    """Return the -h text: every flag with its kind, environment variables and default, as Go prints it."""
    lines = ["Usage: goproxy [flags]", "       goproxy " + " | ".join(sorted(SUBCOMMANDS)) + " [flags]",
             "", "Flags:"]
    defaults = Config()
    for opt in cfg.OPTIONS:
        if not opt.flag:
            continue
        default = _default_text(getattr(defaults, opt.field))
        env = f" (env {', '.join(opt.env_names())})" if opt.env else ""
        shown = f" (default {default})" if default else ""
        lines.append(f"  -{opt.flag} {opt.kind}\n        {opt.help}{env}{shown}")
    lines.append(f"  -{configload.CONFIG_FLAG} file\n        YAML or JSON config file (env {configload.CONFIG_ENV})")
    lines.append("  -version\n        print the version and exit")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the program: a subcommand, -h, -version, or serving; return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if environ is None else environ
    if args and args[0] in SUBCOMMANDS:
        return SUBCOMMANDS[args[0]](args[1:], env)
    try:
        flags, rest = parse_flags(args, booleans=frozenset({"h", "help", "version"}))
        if {"h", "help"} & flags.keys():
            sys.stdout.write(usage())
            return 0
        if "version" in flags:
            print(f"goproxy {__version__}")
            return 0
        if rest:
            raise ConfigError(f"unexpected argument {rest[0]!r} (flags start with -; see -h)")
        config = configload.load(flags, env)
    except ConfigError as exc:
        print(f"goproxy: {exc}", file=sys.stderr)
        return 2
    from .serve import serve

    progress = Progress(choose_mode(config.progress, sys.stderr.isatty()), sys.stderr)
    listener = setup_logging(config.log_level, progress)
    try:
        return serve(config, env, progress)
    finally:
        listener.stop()
