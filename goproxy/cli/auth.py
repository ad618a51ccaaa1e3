"""The `goproxy auth hash` command: make the salted hash of a client secret for the -auth-file."""

from __future__ import annotations

import getpass
from typing import TextIO

from ..auth import DEFAULT_ITERATIONS, check_name, hash_secret
from ..errors import ConfigError
from .common import parse_flags

AUTH_USAGE = """Usage: goproxy auth hash [-name NAME]

Reads a secret from standard input (its first line) or, on a terminal, asks for it twice,
and prints its salted PBKDF2-SHA256 hash ($pbkdf2-sha256$ITERATIONS$SALT$HASH, passlib's
format). With -name it prints NAME:HASH, a line for the file named by -auth-file.
"""


def auth_command(args: list[str], stdin: TextIO, stdout: TextIO, stderr: TextIO,
                 iterations: int = DEFAULT_ITERATIONS) -> int:
    """Run `goproxy auth hash [-name NAME]`; return 0, 1 (no usable secret) or 2 (usage error)."""
    if not args or args[0] in ("-h", "-help", "--help", "help"):
        (stdout if args else stderr).write(AUTH_USAGE)
        return 0 if args else 2
    if args[0] != "hash":
        stderr.write(f"goproxy auth: unknown command {args[0]!r}\n{AUTH_USAGE}")
        return 2
    try:
        flags, rest = parse_flags(args[1:], booleans=frozenset({"h", "help"}))
    except ConfigError as exc:
        stderr.write(f"goproxy auth hash: {exc}\n")
        return 2
    if {"h", "help"} & flags.keys():
        stdout.write(AUTH_USAGE)
        return 0
    name = flags.pop("name", None)
    why = check_name(name) if name is not None else None
    problem = (f"unexpected argument {rest[0]!r}" if rest else
               f"unknown flag -{sorted(flags)[0]}" if flags else
               f"invalid -name {name!r}: {why}" if why else "")
    if problem:
        stderr.write(f"goproxy auth hash: {problem}\n")
        return 2
    secret = _read_secret(stdin, stderr)
    if secret is None:
        return 1
    hashed = hash_secret(secret, iterations)
    stdout.write(f"{name}:{hashed}\n" if name is not None else f"{hashed}\n")
    return 0


def _read_secret(stdin: TextIO, stderr: TextIO) -> str | None:
    """Return the secret from stdin (first line) or two terminal prompts; None after saying why."""
    try:
        if stdin.isatty():
            secret = getpass.getpass("Secret: ", stream=stderr)
            if secret and getpass.getpass("Again: ", stream=stderr) != secret:
                stderr.write("goproxy auth hash: the secrets do not match\n")
                return None
        else:
            secret = stdin.readline()
            secret = secret[:-1] if secret.endswith("\n") else secret
            secret = secret[:-1] if secret.endswith("\r") else secret
    except (EOFError, KeyboardInterrupt):
        stderr.write("\ngoproxy auth hash: no secret read\n")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        stderr.write(f"goproxy auth hash: cannot read the secret: {exc}\n")
        return None
    if not secret:
        stderr.write("goproxy auth hash: empty secret refused\n")
        return None
    return secret
