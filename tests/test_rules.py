"""Module rules: parsing the rules: list, first-match decisions, version ranges, list filtering."""

from __future__ import annotations

import operator
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from goproxy.modpath import compare_versions
from goproxy.patterns import match
from goproxy.rules import ALLOW, Decision, Rules, parse_rules

EVIL = {"pattern": "github.com/evil/lib", "versions": ">=v1.2.0,<v1.2.4", "action": "deny",
        "reason": "compromised release, see SEC-123"}

# Each row: rules value, the error message it must raise (a prefix when it ends with "...").
PARSE_ERRORS = [
    pytest.param({"pattern": "x.com/m", "action": "deny"}, "want a list of rules", id="not-a-list"),
    pytest.param("deny everything", "want a list of rules", id="string"),
    pytest.param(["x.com/m"], "entry 1: want a mapping", id="entry-not-mapping"),
    pytest.param([{"action": "deny"}], "entry 1: pattern is required (a string)", id="no-pattern"),
    pytest.param([{"pattern": 3, "action": "deny"}], "entry 1: pattern is required (a string)", id="pattern-int"),
    pytest.param([{"pattern": "rsc.io/*", "action": "allow"}, {"pattern": "github.com/evil/lib", "action": "block"}],
                 "entry 2 (github.com/evil/lib): unknown action 'block' (want deny, allow or offline)",
                 id="unknown-action"),
    pytest.param([{"pattern": "x.com/m", "action": "Deny"}], "entry 1 (x.com/m): unknown action 'Deny'",
                 id="action-case"),
    pytest.param([{"pattern": "x.com/m"}], "entry 1 (x.com/m): action is required (deny, allow or offline)",
                 id="no-action"),
    pytest.param([{"pattern": "x.com/m", "action": "deny", "version": "v1.0.0"}],
                 "entry 1 (x.com/m): unknown key 'version' (known: pattern, versions, action, reason)",
                 id="unknown-key"),
    pytest.param([{"pattern": "/x.com", "action": "deny"}], "entry 1 (/x.com): pattern '/x.com' can never match",
                 id="pattern-leading-slash"),
    pytest.param([{"pattern": "x.com/[a", "action": "deny"}], "entry 1 (x.com/[a): pattern 'x.com/[a': unterminated",
                 id="pattern-bad-class"),
    pytest.param([{"pattern": "", "action": "deny"}], "entry 1 (): empty pattern", id="pattern-empty"),
    pytest.param([{"pattern": "x.com/m", "action": "deny", "versions": []}],
                 "entry 1 (x.com/m): versions is an empty list", id="versions-empty-list"),
    pytest.param([{"pattern": "x.com/m", "action": "deny", "versions": 1.2}],
                 "entry 1 (x.com/m): versions: want a version or range string, not 1.2", id="versions-float"),
    pytest.param([{"pattern": "x.com/m", "action": "deny", "versions": ["v1.0.0", ""]}],
                 "entry 1 (x.com/m): versions: want a version or range string, not ''", id="versions-empty-item"),
    pytest.param([{"pattern": "x.com/m", "action": "deny", "versions": "v1.2"}],
                 "entry 1 (x.com/m): version 'v1.2' is not a canonical version", id="exact-not-canonical"),
    pytest.param([{"pattern": "x.com/m", "action": "deny", "versions": "1.2.3"}],
                 "entry 1 (x.com/m): version '1.2.3' is not a canonical version", id="exact-no-v"),
    pytest.param([{"pattern": "x.com/m", "action": "deny", "versions": ">=1.2.0"}],
                 "entry 1 (x.com/m): range '>=1.2.0': '1.2.0' is not a valid semantic version", id="range-no-v"),
    pytest.param([{"pattern": "x.com/m", "action": "deny", "versions": ">="}],
                 "entry 1 (x.com/m): range '>=': '' is not a valid semantic version", id="range-no-version"),
    pytest.param([{"pattern": "x.com/m", "action": "deny", "versions": "v1.2.3,v1.2.4"}],
                 "entry 1 (x.com/m): range 'v1.2.3,v1.2.4': 'v1.2.3' needs a comparator", id="comma-list"),
    pytest.param([{"pattern": "x.com/m", "action": "deny", "versions": ">=v1.0.0 <v2.0.0"}],
                 "entry 1 (x.com/m): range '>=v1.0.0 <v2.0.0': '>=v1.0.0 <v2.0.0' is not one comparator",
                 id="space-separated"),
    pytest.param([{"pattern": "x.com/m", "action": "deny", "versions": "=>v1.0.0"}],
                 "entry 1 (x.com/m): range '=>v1.0.0': '>v1.0.0' is not a valid", id="arrow-operator"),
    pytest.param([{"pattern": "x.com/m", "action": "deny", "versions": ">=v2.0.0,<v1.0.0"}],
                 "entry 1 (x.com/m): range '>=v2.0.0,<v1.0.0' matches no version", id="range-inverted"),
    pytest.param([{"pattern": "x.com/m", "action": "deny", "versions": ">v1.0.0,<=v1.0.0"}],
                 "entry 1 (x.com/m): range '>v1.0.0,<=v1.0.0' matches no version", id="range-open-low"),
    pytest.param([{"pattern": "x.com/m", "action": "deny", "versions": ">=v1.0.0,<v1.0.0"}],
                 "entry 1 (x.com/m): range '>=v1.0.0,<v1.0.0' matches no version", id="range-open-high"),
    pytest.param([{"pattern": "x.com/m", "action": "deny", "versions": "=v1.0.0,=v1.0.1"}],
                 "entry 1 (x.com/m): range '=v1.0.0,=v1.0.1' matches no version", id="two-exacts"),
    pytest.param([{"pattern": "x.com/m", "action": "deny", "reason": 7}],
                 "entry 1 (x.com/m): reason must be a string, not 7", id="reason-int"),
]


@pytest.mark.parametrize("value,message", PARSE_ERRORS)
def test_parse_rules_refuses_with_a_message_naming_the_entry(value: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_rules(value)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("value", [None, []], ids=["null", "empty-list"])
def test_no_rules_is_empty_and_allows_everything(value: Any) -> None:
    rules = parse_rules(value)
    assert rules.empty
    assert not rules
    assert rules.decide("github.com/evil/lib", "v1.2.3") is ALLOW


def test_rules_with_entries_are_not_empty() -> None:
    rules = parse_rules([EVIL])
    assert not rules.empty
    assert rules
    assert len(rules) == 1


@pytest.mark.parametrize("versions", [">=v1.0.0,<=v1.0.0", "=v1.0.0", " >= v1.0.0 , < v2 ", "<v2.0.0+incompatible"])
def test_satisfiable_ranges_are_accepted(versions: str) -> None:
    assert len(parse_rules([{"pattern": "x.com/m", "versions": versions, "action": "deny"}])) == 1


def test_deny_without_reason_gets_one_naming_the_rule() -> None:
    rules = parse_rules([{"pattern": "rsc.io/*", "action": "allow"},
                         {"pattern": "github.com/evil/lib", "versions": [">=v1.2.0,<v1.2.4", "v1.5.0"],
                          "action": "deny"}])
    assert rules.decide("github.com/evil/lib", "v1.5.0").reason == \
        "denied by rules entry 2 (github.com/evil/lib >=v1.2.0,<v1.2.4 or v1.5.0)"


def test_reason_is_kept_on_one_line() -> None:
    rules = parse_rules([{"pattern": "x.com/m", "action": "deny", "reason": "  bad\nrelease  "}])
    assert rules.decide("x.com/m", "v1.0.0").reason == "bad release"


def test_describe_is_one_line_for_logs() -> None:
    rules = parse_rules([EVIL, {"pattern": "*", "action": "offline"}])
    assert [r.describe() for r in rules] == ["deny github.com/evil/lib >=v1.2.0,<v1.2.4", "offline *"]


ALLOW_LIST = [
    {"pattern": "github.com/evil/lib", "versions": ">=v1.2.0,<v1.2.4", "action": "deny", "reason": "SEC-123"},
    {"pattern": "rsc.io/*", "action": "allow"},
    {"pattern": "golang.org/x", "action": "offline"},
    {"pattern": "*", "action": "deny", "reason": "not on the allow-list"},
]
RANGES = [
    {"pattern": "x.com/incl", "versions": ">=v1.2.0,<=v1.2.4", "action": "deny"},
    {"pattern": "x.com/excl", "versions": ">v1.2.0,<v1.2.4", "action": "deny"},
    {"pattern": "x.com/list", "versions": ["v1.0.0", ">=v2.0.0,<v2.1.0"], "action": "deny"},
    {"pattern": "x.com/exact", "versions": "v1.2.3", "action": "deny"},
    {"pattern": "x.com/inc", "versions": "v2.0.0+incompatible", "action": "deny"},
    {"pattern": "x.com/short", "versions": ">=v1,<v1.3", "action": "deny"},
    {"pattern": "x.com/ver", "versions": "<v1.0.0", "action": "deny"},
    {"pattern": "x.com/ver", "action": "offline"},
]

# Each row: rules, module, version, expected (action, index).
DECISIONS = [
    # First match wins; allow stops the search; no match allows.
    (ALLOW_LIST, "github.com/evil/lib", "v1.2.3", ("deny", 0), "versioned-deny-first"),
    (ALLOW_LIST, "github.com/evil/lib", "v1.2.4", ("deny", 3), "falls-through-to-catch-all"),
    (ALLOW_LIST, "rsc.io/quote", "v1.5.2", ("allow", 1), "allow-stops-search"),
    (ALLOW_LIST, "rsc.io/quote/v3", "v3.1.0", ("allow", 1), "glob-matches-path-prefix"),
    (ALLOW_LIST, "rsc.io", "v1.0.0", ("deny", 3), "glob-needs-its-elements"),
    (ALLOW_LIST, "golang.org/x/text", "v0.3.0", ("offline", 2), "literal-matches-prefix"),
    (ALLOW_LIST, "golang.org/xerrors", "v0.1.0", ("deny", 3), "literal-matches-whole-elements"),
    (ALLOW_LIST, "example.com/m", None, ("deny", 3), "catch-all-for-list"),
    (None, "example.com/m", "v1.0.0", ("allow", -1), "no-rules"),
    ([EVIL], "example.com/m", "v1.0.0", ("allow", -1), "no-match"),
    ([EVIL], "github.com/evil/lib/v2", "v2.0.0", ("allow", -1), "range-applies-to-prefix-too-but-v2-outside"),
    ([EVIL], "github.com/evil/lib/sub", "v1.2.1", ("deny", 0), "pattern-matches-nested-module"),
    ([EVIL], "github.com/evil/library", "v1.2.1", ("allow", -1), "pattern-is-not-a-string-prefix"),
    # Version None and non-canonical queries: only rules without versions apply.
    (ALLOW_LIST, "github.com/evil/lib", None, ("deny", 3), "list-skips-versioned-rule"),
    ([EVIL], "github.com/evil/lib", None, ("allow", -1), "list-not-denied-by-range"),
    ([EVIL], "github.com/evil/lib", "master", ("allow", -1), "query-treated-as-none"),
    ([EVIL], "github.com/evil/lib", "v1.2", ("allow", -1), "short-query-treated-as-none"),
    (RANGES, "x.com/ver", None, ("offline", 7), "versionless-rule-after-versioned"),
    (RANGES, "x.com/ver", "v0.9.0", ("deny", 6), "versioned-before-versionless"),
    (RANGES, "x.com/ver", "v1.0.0", ("offline", 7), "versionless-catches-rest"),
    # Inclusive and exclusive bounds.
    (RANGES, "x.com/incl", "v1.2.0", ("deny", 0), "ge-includes-bound"),
    (RANGES, "x.com/incl", "v1.2.4", ("deny", 0), "le-includes-bound"),
    (RANGES, "x.com/incl", "v1.1.9", ("allow", -1), "below-range"),
    (RANGES, "x.com/incl", "v1.2.5", ("allow", -1), "above-range"),
    (RANGES, "x.com/excl", "v1.2.0", ("allow", -1), "gt-excludes-bound"),
    (RANGES, "x.com/excl", "v1.2.4", ("allow", -1), "lt-excludes-bound"),
    (RANGES, "x.com/excl", "v1.2.1", ("deny", 1), "inside-open-range"),
    # Pre-releases sort before their release (semver order): pseudo-versions included.
    (RANGES, "x.com/incl", "v1.2.0-rc.1", ("allow", -1), "prerelease-below-lower-bound"),
    (RANGES, "x.com/excl", "v1.2.4-rc.1", ("deny", 1), "prerelease-of-upper-bound-inside"),
    (RANGES, "x.com/excl", "v1.2.4-0.20240101000000-abcdefabcdef", ("deny", 1), "pseudo-version-inside"),
    (RANGES, "x.com/excl", "v1.2.1-0.20240101000000-abcdefabcdef", ("deny", 1), "pseudo-version-after-open-bound"),
    (RANGES, "x.com/incl", "v1.2.0-0.20240101000000-abcdefabcdef", ("allow", -1), "pseudo-before-lower"),
    # Lists are OR; exact versions match only themselves.
    (RANGES, "x.com/list", "v1.0.0", ("deny", 2), "list-exact"),
    (RANGES, "x.com/list", "v1.0.1", ("allow", -1), "list-gap"),
    (RANGES, "x.com/list", "v2.0.9", ("deny", 2), "list-range"),
    (RANGES, "x.com/exact", "v1.2.3", ("deny", 3), "exact"),
    (RANGES, "x.com/exact", "v1.2.3-rc.1", ("allow", -1), "exact-not-prerelease"),
    (RANGES, "x.com/exact", "v1.2.4", ("allow", -1), "exact-not-next"),
    (RANGES, "x.com/inc", "v2.0.0+incompatible", ("deny", 4), "incompatible-exact"),
    (RANGES, "x.com/short", "v1.0.0", ("deny", 5), "shorthand-lower"),
    (RANGES, "x.com/short", "v1.2.9", ("deny", 5), "shorthand-upper-open"),
    (RANGES, "x.com/short", "v1.3.0", ("allow", -1), "shorthand-upper-is-v1.3.0"),
]


@pytest.mark.parametrize("value,module,version,expected", [pytest.param(*row[:4], id=row[4]) for row in DECISIONS])
def test_decide(value: Any, module: str, version: str | None, expected: tuple[str, int]) -> None:
    decision = parse_rules(value).decide(module, version)
    assert (decision.action, decision.index) == expected


def test_decision_carries_the_rule_reason() -> None:
    rules = parse_rules(ALLOW_LIST)
    assert rules.decide("github.com/evil/lib", "v1.2.3") == Decision("deny", "SEC-123", 0)


def test_repeated_decisions_are_the_same() -> None:
    rules = parse_rules(ALLOW_LIST)
    first = [rules.decide(m, v) for m, v in [("github.com/evil/lib", "v1.2.3"), ("rsc.io/quote", None)]]
    again = [rules.decide(m, v) for m, v in [("github.com/evil/lib", "v1.2.3"), ("rsc.io/quote", None)]]
    assert first == again


def test_decisions_stay_right_when_the_caches_are_tiny() -> None:
    rules = Rules(parse_rules(ALLOW_LIST).rules, cache_size=2)
    for _ in range(3):
        for i in range(20):
            assert rules.decide(f"rsc.io/m{i}", "v1.0.0").action == "allow"
            assert rules.decide(f"x{i}.com/m", "v1.0.0").action == "deny"
            assert rules.decide("github.com/evil/lib", f"v1.2.{i}").action == "deny"
    assert len(rules._decisions) <= 2
    assert len(rules._by_module) <= 2


VERSIONS = ["v1.0.0", "v1.2.0-rc.1", "v1.2.0", "v1.2.3", "v1.2.4", "v1.3.0"]


@pytest.mark.parametrize("value,module,expected", [
    pytest.param([EVIL], "github.com/evil/lib", ["v1.0.0", "v1.2.0-rc.1", "v1.2.4", "v1.3.0"], id="drops-range"),
    pytest.param([EVIL], "rsc.io/quote", VERSIONS, id="other-module-untouched"),
    pytest.param([{"pattern": "github.com/evil", "action": "allow"}, EVIL], "github.com/evil/lib", VERSIONS,
                 id="earlier-allow-protects"),
    pytest.param(ALLOW_LIST, "example.com/m", [], id="versionless-deny-drops-all"),
    pytest.param(ALLOW_LIST, "golang.org/x/text", VERSIONS, id="offline-keeps-all"),
    pytest.param([{"pattern": "x.com/m", "versions": "v1.2.3", "action": "allow"},
                  {"pattern": "x.com/m", "versions": ">=v1.2.0", "action": "deny"}],
                 "x.com/m", ["v1.0.0", "v1.2.0-rc.1", "v1.2.3"], id="allowed-version-kept"),
])
def test_filter_versions(value: Any, module: str, expected: list[str]) -> None:
    assert parse_rules(value).filter_versions(module, VERSIONS) == expected


def test_filter_versions_without_rules_returns_a_copy() -> None:
    versions = list(VERSIONS)
    out = Rules().filter_versions("x.com/m", versions)
    assert out == versions
    assert out is not versions


# Brute-force references: the rule semantics stated directly, with no caches or shortcuts.
OPS: dict[str, Callable[[int, int], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "=": operator.eq}


def brute_in_range(version: str, comparators: list[tuple[str, str]]) -> bool:
    return all(OPS[op](compare_versions(version, bound), 0) for op, bound in comparators)


CORES = ["v0.0.0", "v0.1.0", "v1.0.0", "v1.2.0", "v1.2.3", "v1.2.4", "v1.10.0", "v2.0.0"]
PRES = ["", "-rc.1", "-rc.2", "-alpha", "-0.20240101000000-abcdefabcdef", "-0", "-1.a"]
UNIVERSE = [c + p for c in CORES for p in PRES]
versions = st.builds(operator.add, st.sampled_from(CORES), st.sampled_from(["", *PRES]))
bounds = st.one_of(versions, st.sampled_from(["v1", "v1.2", "v2", "v0"]))
comparators = st.lists(st.tuples(st.sampled_from(list(OPS)), bounds), min_size=1, max_size=3)


@settings(max_examples=400, deadline=None)
@given(st.lists(comparators, min_size=1, max_size=3), versions)
def test_range_decisions_agree_with_brute_force(ranges: list[list[tuple[str, str]]], version: str) -> None:
    texts = [",".join(op + v for op, v in r) for r in ranges]
    want = any(brute_in_range(version, r) for r in ranges)
    try:
        rules = parse_rules([{"pattern": "x.com/m", "versions": texts, "action": "deny"}])
    except ValueError as exc:
        # Refused only as unsatisfiable, and then indeed nothing matches the refused range.
        assert "matches no version" in str(exc)
        bad = next(r for r, t in zip(ranges, texts) if f"range {t!r} matches no version" in str(exc))
        assert not any(brute_in_range(v, bad) for v in UNIVERSE)
        return
    assert (rules.decide("x.com/m", version).action == "deny") == want
    assert (version in rules.filter_versions("x.com/m", [version])) == (not want)


patterns = st.sampled_from(["*", "x.com/*", "x.com/m", "x.com/m/v2", "y.org", "*/m", "x.com/[mn]"])
modules = st.sampled_from(["x.com/m", "x.com/m/v2", "x.com/n", "y.org/m", "y.org", "z.net/q/m"])
rule_specs = st.lists(st.tuples(patterns, st.one_of(st.none(), comparators), st.sampled_from(["deny", "allow",
                                                                                              "offline"])),
                      max_size=8)


@settings(max_examples=300, deadline=None)
@given(rule_specs, modules, st.one_of(st.none(), versions), st.integers(1, 4))
def test_decide_agrees_with_brute_force_first_match(specs: list[tuple[str, list[tuple[str, str]] | None, str]],
                                                    module: str, version: str | None, cache_size: int) -> None:
    value = [{"pattern": p, "action": a, **({"versions": ",".join(o + v for o, v in c)} if c else {})}
             for p, c, a in specs]
    try:
        rules = Rules(parse_rules(value).rules, cache_size=cache_size)
    except ValueError:
        return  # an unsatisfiable range: covered by the test above
    want = ("allow", -1)
    for i, (p, c, a) in enumerate(specs):
        if match(p, module) and (c is None or (version is not None and brute_in_range(version, c))):
            want = (a, i)
            break
    for _ in range(2):  # computed, then from the cache
        got = rules.decide(module, version)
        assert (got.action, got.index) == want
