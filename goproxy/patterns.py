"""GOPRIVATE-style module path patterns: Go path.Match globs matched against leading path elements."""

from __future__ import annotations

import re
from functools import lru_cache


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a Go path.Match pattern into a regex; raise ValueError for a malformed one."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\":
            i += 1
            if i == n:
                raise ValueError(f"pattern {pattern!r}: trailing backslash")
            out.append(re.escape(pattern[i]))
        elif c == "[":
            i, cls = _char_class(pattern, i + 1)
            out.append(cls)
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


def _char_class(pattern: str, i: int) -> tuple[int, str]:
    """Parse a character class such as "[^a-z]" starting after "[".

    Return (index after "]", regex class); raise ValueError for a malformed class.
    """
    n = len(pattern)
    negate = i < n and pattern[i] == "^"
    if negate:
        i += 1
    parts: list[str] = []
    first = True
    while True:
        if i >= n:
            raise ValueError(f"pattern {pattern!r}: unterminated character class")
        if pattern[i] == "]" and not first:
            i += 1
            break
        first = False
        lo, i = _class_char(pattern, i)
        if i < n and pattern[i] == "-":
            hi, i = _class_char(pattern, i + 1)
            if hi < lo:
                raise ValueError(f"pattern {pattern!r}: bad range {lo}-{hi}")
            parts.append(f"{re.escape(lo)}-{re.escape(hi)}")
        else:
            parts.append(re.escape(lo))
    body = "".join(parts)
    return i, f"[^/{body}]" if negate else f"[{body}]"


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    n = len(pattern)
    if i >= n or pattern[i] in "-]":
        raise ValueError(f"pattern {pattern!r}: malformed character class")
    if pattern[i] == "\\":
        i += 1
        if i >= n:
            raise ValueError(f"pattern {pattern!r}: trailing backslash")
    return pattern[i], i + 1


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Check a module pattern and compile it; raise ValueError naming the problem."""
    if not pattern:
        raise ValueError("empty pattern")
    if pattern.startswith("/") or "//" in pattern or pattern.endswith("/"):
        raise ValueError(f"pattern {pattern!r} can never match a module path")
    if any(c.isspace() for c in pattern):
        raise ValueError(f"pattern {pattern!r} contains white space")
    return _glob_regex(pattern)


def match(pattern: str, module: str) -> bool:
    """Report whether pattern matches module or one of its path prefixes, as GOPRIVATE does.

    "github.com/org/*" matches "github.com/org/repo/sub". Raises ValueError for a bad pattern.
    """
    regex = compile_pattern(pattern)
    elems = pattern.count("/") + 1
    parts = module.split("/")
    if len(parts) < elems:
        return False
    return regex.fullmatch("/".join(parts[:elems])) is not None


def match_any(patterns: tuple[str, ...] | list[str], module: str) -> bool:
    """Report whether any of patterns matches module."""
    return any(match(p, module) for p in patterns)
