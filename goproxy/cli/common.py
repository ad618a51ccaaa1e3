"""What every subcommand shares: Go-style flags, loading the configuration, logging set-up."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from collections.abc import Mapping, Sequence
from queue import SimpleQueue

from .. import configload
from ..config import Config
from ..errors import ConfigError
from ..progress import Progress


def parse_flags(args: Sequence[str],
                booleans: frozenset[str] = frozenset()) -> tuple[dict[str, str], list[str]]:
    """Return (flags, remaining args) of Go-style flags: -port 3000, -port=3000, --port 3000.

    Flags stop at the first non-flag or "--". Flags named in booleans take no value. Raises
    ConfigError for a flag missing its value.
    """
    flags: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        name = arg.lstrip("-")
        if arg.startswith("---") or not name:
            raise ConfigError(f"bad flag syntax: {arg}")
        if "=" in name:
            name, value = name.split("=", 1)
        elif name in booleans:
            value = "true"
        elif i + 1 < len(args):
            i += 1
            value = args[i]
        else:
            raise ConfigError(f"flag -{name}: needs a value")
        flags[name] = value
        i += 1
    return flags, list(args[i:])


def load_command_config(flags: Mapping[str, str], environ: Mapping[str, str], command: str) -> Config | None:
    """Return the Config of flags and environ, or None after printing the error.

    The error is printed as `goproxy COMMAND: ...` (command names it); the caller exits 2.
    """
    try:
        return configload.load(flags, environ)
    except ConfigError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return None


def setup_logging(level: str, progress: Progress | None = None) -> logging.handlers.QueueListener:
    """Send log records to stderr with timestamps; the only place handlers are set.

    Request threads only enqueue records; one listener thread writes them, so no request waits
    on a lock around stderr. Stop the returned listener to flush what is queued. With a progress
    display in tty mode, lines are written above its block of bars.
    """
    handler = (progress.handler() if progress is not None and progress.mode == "tty"
               else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    queue: SimpleQueue[logging.LogRecord] = SimpleQueue()
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(logging.handlers.QueueHandler(queue))
    root.setLevel(getattr(logging, level.upper()))
    listener = logging.handlers.QueueListener(queue, handler)
    listener.start()
    return listener
