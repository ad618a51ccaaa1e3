"""Module rules in the service: denied versions (403 with the reason), filtered lists, @latest and queries
that move off denied versions, allow-lists, offline modules, and reloads; the in-process proxy."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from goproxy.access import Access
from goproxy.configload import load
from goproxy.errors import ConfigError
from goproxy.gate import is_release, newest
from goproxy.rules import parse_rules
from goproxy.server import ProxyServer
from tests.support.helpers import FakeClock, get
from tests.support.upstream import Upstream, generate

M = "example.com/lib"
REASON = "compromised release, see SEC-123"


def deny(versions: Any = None, pattern: str = M, reason: str = REASON) -> dict[str, Any]:
    rule: dict[str, Any] = {"pattern": pattern, "action": "deny", "reason": reason}
    if versions is not None:
        rule["versions"] = versions
    return rule


def path(kind: str, version: str = "", module: str = M) -> str:
    if kind == "list":
        return f"/{module}/@v/list"
    if kind == "latest":
        return f"/{module}/@latest"
    return f"/{module}/@v/{version}.{kind}"


@pytest.fixture
def lib(upstream: Upstream) -> Upstream:
    """An upstream with M at v1.0.0, v1.1.0-rc.1, v1.1.0 and v1.2.0 (its @latest)."""
    for v in ("v1.0.0", "v1.1.0-rc.1", "v1.1.0", "v1.2.0"):
        upstream.add(generate(M, v))
    return upstream


@pytest.fixture
def ruled(make_proxy: Callable[..., ProxyServer], lib: Upstream) -> Callable[..., ProxyServer]:
    """ruled(*rules, **config) is a proxy in front of lib with those rules."""
    def make(*rules: dict[str, Any], **overrides: Any) -> ProxyServer:
        return make_proxy([lib.url], rules=parse_rules(list(rules)), **overrides)
    return make


@pytest.mark.parametrize("kind", ["info", "mod", "zip"])
def test_a_denied_version_is_403_with_the_reason_and_never_fetched(ruled: Callable[..., ProxyServer], lib: Upstream,
                                                                   kind: str) -> None:
    server = ruled(deny(">=v1.2.0,<v1.2.4"))
    status, headers, body = get(server, path(kind, "v1.2.0"))
    assert status == 403
    assert body == f"{M}@v1.2.0: {REASON}\n".encode()
    assert headers["cache-control"] == "no-store"
    assert lib.total() == 0
    assert get(server, path(kind, "v1.1.0"))[0] == 200  # an allowed version of the same module


def test_a_rule_without_a_reason_names_its_entry(ruled: Callable[..., ProxyServer]) -> None:
    server = ruled({"pattern": "x.test/*", "action": "allow"}, {"pattern": M, "versions": "v1.2.0", "action": "deny"})
    assert get(server, path("zip", "v1.2.0"))[2] == f"{M}@v1.2.0: denied by rules entry 2 ({M} v1.2.0)\n".encode()


def test_rules_apply_to_what_is_cached_and_a_reload_applies_at_once(ruled: Callable[..., ProxyServer],
                                                                    lib: Upstream) -> None:
    server = ruled()
    for kind in ("info", "mod", "zip"):
        assert get(server, path(kind, "v1.2.0"))[0] == 200
    fetched = lib.total()
    server.control.update(Access(rules=parse_rules([deny("v1.2.0")])))
    for kind in ("info", "mod", "zip"):
        assert get(server, path(kind, "v1.2.0"))[0] == 403
    server.control.update(Access())
    assert get(server, path("zip", "v1.2.0"))[0] == 200
    assert lib.total() == fetched  # every answer came from the cache


@pytest.mark.parametrize("cached", [False, True], ids=["fetched", "cached"])
def test_denied_versions_disappear_from_the_list(ruled: Callable[..., ProxyServer], lib: Upstream,
                                                 cached: bool) -> None:
    server = ruled()
    if cached:
        assert get(server, path("list"))[0] == 200
    server.control.update(Access(rules=parse_rules([deny(["v1.1.0-rc.1", "v1.2.0"])])))
    status, headers, body = get(server, path("list"))
    assert status == 200
    assert body == b"v1.0.0\nv1.1.0\n"
    assert headers["content-length"] == str(len(body))
    assert lib.count(path("list")) == 1


def test_latest_moves_to_the_newest_allowed_release(ruled: Callable[..., ProxyServer]) -> None:
    server = ruled(deny(">=v1.1.0"))  # v1.1.0 and v1.2.0; v1.1.0-rc.1 is below v1.1.0
    status, headers, body = get(server, path("latest"))
    assert status == 200
    assert json.loads(body)["Version"] == "v1.0.0"  # a release before the newer pre-release
    assert headers["cache-control"].startswith("public, max-age=")
    assert "immutable" not in headers["cache-control"]


def test_latest_takes_a_pre_release_when_no_release_is_allowed(ruled: Callable[..., ProxyServer]) -> None:
    server = ruled(deny(["v1.0.0", "v1.1.0", "v1.2.0"]))
    assert json.loads(get(server, path("latest"))[2])["Version"] == "v1.1.0-rc.1"


def test_latest_is_denied_when_no_version_is_left(ruled: Callable[..., ProxyServer]) -> None:
    server = ruled(deny(">=v0.0.0-0"))
    status, _, body = get(server, path("latest"))
    assert status == 403
    assert body == (f"{M}: the latest version, v1.2.0, is denied ({REASON}) and no other version is "
                    "allowed\n").encode()
    assert get(server, path("list"))[2] == b""


def test_an_allowed_latest_is_served_as_the_upstream_says(ruled: Callable[..., ProxyServer], lib: Upstream) -> None:
    server = ruled(deny("v1.0.0"))
    assert get(server, path("latest"))[2] == lib.routes[path("latest")].body


def test_a_query_resolving_to_a_denied_version_is_denied(ruled: Callable[..., ProxyServer], lib: Upstream) -> None:
    lib.set(path("info", "master"), body=b'{"Version":"v1.2.0","Time":"2024-01-02T03:04:05Z"}')
    lib.set(path("info", "v1"), body=b'{"Version":"v1.1.0","Time":"2024-01-02T03:04:05Z"}')
    server = ruled(deny("v1.2.0"))
    status, _, body = get(server, path("info", "master"))
    assert status == 403
    assert body == f"{M}@master is v1.2.0: {REASON}\n".encode()
    assert json.loads(get(server, path("info", "v1"))[2])["Version"] == "v1.1.0"


def test_a_rule_without_versions_denies_the_whole_module(ruled: Callable[..., ProxyServer], lib: Upstream) -> None:
    server = ruled(deny())
    for p in (path("list"), path("latest"), path("info", "v1.0.0"), path("info", "master"), path("zip", "v1.0.0")):
        status, _, body = get(server, p)
        assert status == 403, p
        assert REASON.encode() in body
    assert lib.total() == 0


def test_an_allow_list_serves_only_the_listed_modules(ruled: Callable[..., ProxyServer], lib: Upstream) -> None:
    lib.add(generate("example.com/other", "v1.0.0"))
    server = ruled({"pattern": "example.com/lib", "action": "allow"},
                   {"pattern": "*", "action": "deny", "reason": "not on the allow-list"})
    assert get(server, path("zip", "v1.0.0"))[0] == 200
    status, _, body = get(server, path("zip", "v1.0.0", "example.com/other"))
    assert status == 403
    assert body == b"example.com/other@v1.0.0: not on the allow-list\n"
    assert lib.count(path("zip", "v1.0.0", "example.com/other")) == 0


def test_allow_stops_the_search(ruled: Callable[..., ProxyServer]) -> None:
    server = ruled({"pattern": M, "versions": "v1.2.0", "action": "allow"}, deny(pattern="example.com"))
    assert get(server, path("zip", "v1.2.0"))[0] == 200
    assert get(server, path("zip", "v1.1.0"))[0] == 403


def test_offline_serves_the_cache_whatever_its_age_and_never_fetches(
        ruled: Callable[..., ProxyServer], lib: Upstream, clock: FakeClock) -> None:
    server = ruled()
    for p in (path("list"), path("latest"), path("zip", "v1.0.0")):
        assert get(server, p)[0] == 200
    fetched = lib.total()
    server.control.update(Access(rules=parse_rules([{"pattern": M, "action": "offline"}])))
    clock.advance(10 * 86400)  # far past -list-ttl and -max-stale
    for p in (path("list"), path("latest"), path("zip", "v1.0.0")):
        assert get(server, p)[0] == 200, p
    status, _, body = get(server, path("zip", "v1.1.0"))
    assert status == 404
    assert body == (f"{M}@v1.1.0: not in this proxy's cache, and its rules (entry 1) serve {M} from the "
                    "cache only\n").encode()
    assert lib.total() == fetched


def test_checksum_database_requests_are_not_subject_to_rules(ruled: Callable[..., ProxyServer],
                                                             lib: Upstream) -> None:
    lib.set("/sumdb/sum.golang.org/supported")
    server = ruled({"pattern": "*", "action": "deny"})
    assert get(server, "/sumdb/sum.golang.org/supported")[0] == 200


def test_twenty_rules_decide_a_hit_from_memory(ruled: Callable[..., ProxyServer],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from goproxy import patterns

    rules = [deny(f"v0.{i}.0", pattern=f"example.com/x{i}") for i in range(19)] + [{"pattern": "*", "action": "allow"}]
    server = ruled(*rules)
    assert get(server, path("info", "v1.0.0"))[0] == 200
    calls: list[str] = []
    real = patterns.match

    def counted(pattern: str, module: str) -> bool:
        calls.append(pattern)
        return real(pattern, module)

    monkeypatch.setattr("goproxy.rules.match", counted)
    for _ in range(10):
        assert get(server, path("info", "v1.0.0"))[0] == 200
    assert calls == []


@pytest.mark.parametrize("versions,want", [
    (["v1.0.0", "v1.2.0", "v1.10.0"], "v1.10.0"),
    (["v1.0.0", "v2.0.0-rc.1"], "v1.0.0"),
    (["v1.0.0-alpha", "v1.0.0-beta"], "v1.0.0-beta"),
    (["v2.0.0+incompatible", "v1.9.0"], "v2.0.0+incompatible"),
    ([], None),
], ids=["semver-order", "release-first", "pre-releases-only", "incompatible", "empty"])
def test_newest_picks_as_the_go_command_does(versions: list[str], want: str | None) -> None:
    assert newest(versions) == want


def test_is_release() -> None:
    assert is_release("v1.0.0+incompatible")
    assert not is_release("v1.0.0-rc.1+meta")


def test_a_bad_rule_in_the_config_file_names_the_entry_and_the_file(tmp_path: Path) -> None:
    config = tmp_path / "goproxy.json"
    config.write_text(json.dumps({"rules": [{"pattern": "rsc.io", "action": "allow"},
                                            {"pattern": M, "action": "block"}]}))
    with pytest.raises(ConfigError) as err:
        load({"config": str(config)}, {})
    assert str(err.value) == (f"config file {config}: key rules: entry 2 ({M}): unknown action 'block' "
                              "(want deny, allow or offline)")


def test_rules_are_read_from_a_yaml_config_file(tmp_path: Path) -> None:
    config = tmp_path / "goproxy.yaml"
    config.write_text(f"rules:\n  - pattern: {M}\n    versions: \">=v1.2.0,<v1.2.4\"\n    action: deny\n"
                      f"    reason: \"{REASON}\"\n")
    rules = load({"config": str(config)}, {}).rules
    assert rules.decide(M, "v1.2.3").reason == REASON
    assert rules.decide(M, "v1.2.4").action == "allow"


@pytest.mark.parametrize("text,want", [("metrics_auth: off", "off"), ("metrics_auth: on", "on"),
                                       ('metrics_auth: "off"', "off")], ids=["bare-off", "bare-on", "quoted"])
def test_metrics_auth_reads_yaml_booleans(tmp_path: Path, text: str, want: str) -> None:
    config = tmp_path / "goproxy.yaml"
    config.write_text(text + "\n")
    assert load({"config": str(config)}, {}).metrics_auth == want
