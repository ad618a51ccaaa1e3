"""Module rules from the config file: deny, allow or serve offline by module pattern and version range."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .modpath import compare_versions, is_canonical, is_valid_version
from .patterns import compile_pattern, match

ACTIONS = ("deny", "allow", "offline")
_KEYS = ("pattern", "versions", "action", "reason")
_COMPARATOR = re.compile(r"\s*(>=|<=|>|<|=)?\s*(\S*)\s*")
_CACHE_SIZE = 8192

# (operator, version): operator is one of >=, >, <=, <, =.
Comparator = tuple[str, str]
# Comparators that must all hold (a comma-separated range, or one exact version as "=").
VersionRange = tuple[Comparator, ...]

_TESTS = {
    ">=": lambda c: c >= 0, ">": lambda c: c > 0, "<=": lambda c: c <= 0,
    "<": lambda c: c < 0, "=": lambda c: c == 0,
}


@dataclass(frozen=True)
class Decision:
    """What to do with a request: action "allow", "deny" or "offline", why, and which rule said so.

    index is the rule's 0-based position in the list, -1 when no rule matched (allow).
    """

    action: str
    reason: str = ""
    index: int = -1


ALLOW = Decision("allow")


def range_contains(versions: VersionRange, version: str) -> bool:
    """Report whether version satisfies every comparator of versions (semver order)."""
    return all(_TESTS[op](compare_versions(version, bound)) for op, bound in versions)


@dataclass(frozen=True)
class Rule:
    """One entry of the rules list.

    versions is None for a rule about every version (and version-less requests); otherwise
    the ranges it covers, any of which may match.
    """

    pattern: str
    action: str
    versions: tuple[VersionRange, ...] | None
    reason: str
    index: int
    decision: Decision = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "decision", Decision(self.action, self.reason, self.index))

    def covers(self, version: str | None) -> bool:
        """Report whether the rule applies to version (None: a request naming no version)."""
        if self.versions is None:
            return True
        if version is None:
            return False
        return any(range_contains(r, version) for r in self.versions)

    def describe(self) -> str:
        """Return the rule as one line for logs: "deny github.com/evil/lib >=v1.2.0,<v1.2.4"."""
        return f"{self.action} {self.pattern}" + (f" {format_versions(self.versions)}" if self.versions else "")


def format_versions(versions: Iterable[VersionRange]) -> str:
    """Return ranges as text: an exact version bare, comparators joined by ",", ranges by " or "."""
    def one(r: VersionRange) -> str:
        if len(r) == 1 and r[0][0] == "=" and is_canonical(r[0][1]):
            return r[0][1]
        return ",".join(op + v for op, v in r)

    return " or ".join(one(r) for r in versions)


K = TypeVar("K")
V = TypeVar("V")


class _BoundedCache(Generic[K, V]):
    """A dict read without locking, written under a lock, forgetting its oldest entry when full."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: dict[K, V] = {}
        self._lock = threading.Lock()
        self.get = self._data.get

    def put(self, key: K, value: V) -> None:
        with self._lock:
            if key not in self._data and len(self._data) >= self._size:
                del self._data[next(iter(self._data))]
            self._data[key] = value

    def __len__(self) -> int:
        return len(self._data)


class Rules:
    """An ordered rule list: the first rule that matches decides; no match allows.

    Decisions are remembered per (module, version) and the rules that can apply per module,
    each in a bounded cache, so a repeated decide() costs a dict lookup.
    """

    def __init__(self, rules: Sequence[Rule] = (), cache_size: int = _CACHE_SIZE) -> None:
        self.rules = tuple(rules)
        self._by_module: _BoundedCache[str, tuple[Rule, ...]] = _BoundedCache(cache_size)
        self._decisions: _BoundedCache[tuple[str, str | None], Decision] = _BoundedCache(cache_size)

    @property
    def empty(self) -> bool:
        """True when there are no rules: callers can skip all rule work."""
        return not self.rules

    def __bool__(self) -> bool:
        return bool(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def _applicable(self, module: str) -> tuple[Rule, ...]:
        """Return the rules whose pattern matches module, up to the first one about every version."""
        found = self._by_module.get(module)
        if found is None:
            out = []
            for rule in self.rules:
                if match(rule.pattern, module):
                    out.append(rule)
                    if rule.versions is None:
                        break  # it always decides: nothing after it is ever reached
            found = tuple(out)
            self._by_module.put(module, found)
        return found

    def decide(self, module: str, version: str | None = None) -> Decision:
        """Return the decision for module at version.

        version None means a request that names no version (@v/list, @latest, a query .info):
        only rules without versions apply. A version that is not canonical (a query such as
        "master" or "v1.2") is treated the same way.
        """
        if not self.rules:
            return ALLOW
        key = (module, version)
        decision = self._decisions.get(key)
        if decision is None:
            v = version if version is not None and is_canonical(version) else None
            decision = next((r.decision for r in self._applicable(module) if r.covers(v)), ALLOW)
            self._decisions.put(key, decision)
        return decision

    def filter_versions(self, module: str, versions: Iterable[str]) -> list[str]:
        """Return versions without those a deny rule matches, in their order (for @v/list and @latest)."""
        if not self.rules:
            return list(versions)
        applicable = self._applicable(module)
        if all(r.versions is None for r in applicable):
            # Every version gets the same decision: the first applicable rule's, or allow.
            return [] if applicable and applicable[0].action == "deny" else list(versions)
        return [v for v in versions if self.decide(module, v).action != "deny"]


def _parse_range(text: str) -> VersionRange:
    """Return one versions string as comparators; raise ValueError naming the bad part."""
    parts = text.split(",")
    if len(parts) == 1 and not text.lstrip().startswith(("<", ">", "=")):
        v = text.strip()
        if not is_canonical(v):
            raise ValueError(f"version {v!r} is not a canonical version (want e.g. v1.2.3, "
                             "or a range such as >=v1.2.0,<v1.3.0)")
        return (("=", v),)
    out: list[Comparator] = []
    for part in parts:
        m = _COMPARATOR.fullmatch(part)
        if m is None:
            raise ValueError(f"range {text!r}: {part.strip()!r} is not one comparator; "
                             "separate comparators with commas")
        op, v = m.group(1), m.group(2)
        if not op:
            raise ValueError(f"range {text!r}: {part.strip()!r} needs a comparator (>=, >, <=, <, =); "
                             "list separate versions as a YAML list")
        if not is_valid_version(v):
            raise ValueError(f"range {text!r}: {v!r} is not a valid semantic version")
        out.append((op, v))
    _check_satisfiable(text, out)
    return tuple(out)


def _check_satisfiable(text: str, comparators: list[Comparator]) -> None:
    """Raise ValueError when the bounds exclude each other (>=v2.0.0,<v1.0.0)."""
    lows = [(v, op == ">") for op, v in comparators if op in (">=", ">", "=")]
    highs = [(v, op == "<") for op, v in comparators if op in ("<=", "<", "=")]
    for lo, lo_open in lows:
        for hi, hi_open in highs:
            c = compare_versions(lo, hi)
            if c > 0 or (c == 0 and (lo_open or hi_open)):
                raise ValueError(f"range {text!r} matches no version")


def _parse_versions(value: Any) -> tuple[VersionRange, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError("versions is an empty list (leave it out to cover every version)")
    ranges = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"versions: want a version or range string, not {item!r}")
        ranges.append(_parse_range(item))
    return tuple(ranges)


def parse_rules(value: Any) -> Rules:
    """Return the Rules for the config file's rules: value (a list of mappings; None for none).

    Raises ValueError naming the entry: "entry 2 (github.com/evil/lib): unknown action 'block'
    (want deny, allow or offline)".
    """
    if value is None:
        return Rules()
    if not isinstance(value, list):
        raise ValueError("want a list of rules, each a mapping with pattern, action and optional versions, reason")
    rules = []
    for i, entry in enumerate(value):
        where = f"entry {i + 1}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: want a mapping with pattern, action and optional versions, reason")
        pattern = entry.get("pattern")
        if not isinstance(pattern, str):
            raise ValueError(f"{where}: pattern is required (a string)")
        where = f"entry {i + 1} ({pattern})"
        unknown = sorted(str(k) for k in set(entry) - set(_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(_KEYS)})")
        action, reason = entry.get("action"), entry.get("reason", "")
        try:
            compile_pattern(pattern)
            if action not in ACTIONS:
                raise ValueError(f"unknown action {action!r} (want deny, allow or offline)" if action is not None
                                 else "action is required (deny, allow or offline)")
            versions = _parse_versions(entry["versions"]) if "versions" in entry else None
            if not isinstance(reason, str):
                raise ValueError(f"reason must be a string, not {reason!r}")
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        reason = " ".join(reason.split())
        if not reason and action == "deny":
            what = pattern + (f" {format_versions(versions)}" if versions else "")
            reason = f"denied by rules entry {i + 1} ({what})"
        rules.append(Rule(pattern, action, versions, reason, i))
    return Rules(rules)
