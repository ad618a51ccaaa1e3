"""Private modules: GOPRIVATE-style patterns, routing to private upstreams, credentials kept secret."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from goproxy.config import PrivateUpstream
from goproxy.configload import build
from goproxy.errors import ConfigError
from goproxy.patterns import match
from goproxy.server import ProxyServer
from tests.support.helpers import get
from tests.support.upstream import Upstream, generate

SECRET = "tok-9f8e7d6c5b4a"


@pytest.mark.parametrize("pattern,module,want", [
    ("github.com/myorg/*", "github.com/myorg/repo", True),
    ("github.com/myorg/*", "github.com/myorg/repo/sub/v2", True),
    ("github.com/myorg/*", "github.com/myorg", False),
    ("github.com/myorg/*", "github.com/other/repo", False),
    ("github.com/myorg", "github.com/myorg/repo", True),
    ("github.com/myorg", "github.com/myorgx/repo", False),
    ("*.corp.example", "git.corp.example/a/b", True),
    ("*.corp.example", "corp.example/a", False),
    ("git.corp.example/team-?", "git.corp.example/team-a/x", True),
    ("git.corp.example/team-[a-c]", "git.corp.example/team-b", True),
    ("git.corp.example/team-[a-c]", "git.corp.example/team-d", False),
    ("git.corp.example/team-[^a-c]", "git.corp.example/team-d", True),
    ("example.com/a\\*b", "example.com/a*b", True),
    ("example.com/a\\*b", "example.com/axb", False),
    ("*", "anything.example/x", True),
])
def test_patterns_match_like_goprivate(pattern: str, module: str, want: bool) -> None:
    assert match(pattern, module) is want


@pytest.mark.parametrize("pattern", ["", "/abs", "a.com//b", "a.com/", "a.com/[", "a.com/[]", "a.com/x\\",
                                     "a.com/[z-a]", "a b"])
def test_bad_patterns_are_errors(pattern: str) -> None:
    with pytest.raises(ValueError):
        match(pattern, "a.com/x")


@pytest.mark.parametrize("entries,words", [
    ([{"pattern": "a.com/*", "url": "https://p", "auth": {"type": "magic", "value": "x"}}],
     ["entry 1", "a.com/*", "unknown auth type"]),
    ([{"pattern": "a.com/[", "url": "https://p"}], ["entry 1", "a.com/["]),
    ([{"pattern": "a.com/", "url": "https://p"}], ["can never match"]),
    ([{"pattern": "a.com", "url": "p.example"}], ["entry 1", "http"]),
    ([{"pattern": "a.com", "url": "https://p", "auth": {"type": "basic", "value": "nocolon"}}],
     ["user:password"]),
    ([{"pattern": "a.com", "url": "https://p", "auth": {"type": "header", "value": "v"}}], ["name"]),
    ([{"pattern": "a.com", "url": "https://p", "extra": 1}], ["unknown key"]),
    ([{"url": "https://p"}], ["pattern"]),
    ("a.com", ["list"]),
])
def test_bad_private_upstreams_fail_naming_the_entry(entries: object, words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        build({"private_upstreams": entries}, {}, {})
    for w in words:
        assert w in str(err.value)
    assert "private_upstreams" in str(err.value)


def test_private_upstream_headers() -> None:
    assert PrivateUpstream("a", "http://x", "basic", "u:p").headers() == {"Authorization": "Basic dTpw"}
    assert PrivateUpstream("a", "http://x", "bearer", "t").headers() == {"Authorization": "Bearer t"}
    assert PrivateUpstream("a", "http://x", "header", "v", "X-Key").headers() == {"X-Key": "v"}


def private_config(url: str, auth: dict[str, str]) -> tuple[PrivateUpstream, ...]:
    config = build({"private_upstreams": [{"pattern": "corp.example/*", "url": url, "auth": auth}]}, {}, {})
    return config.private_upstreams


@pytest.mark.parametrize("auth,header,value", [
    ({"type": "bearer", "value": SECRET}, "Authorization", f"Bearer {SECRET}"),
    ({"type": "header", "name": "X-Api-Key", "value": SECRET}, "X-Api-Key", SECRET),
])
def test_only_the_private_upstream_sees_credentials(make_proxy: Callable[..., ProxyServer],
                                                    make_upstream: Callable[[], Upstream],
                                                    caplog: pytest.LogCaptureFixture, auth: dict[str, str], header: str,
                                                    value: str) -> None:
    public, private = make_upstream(), make_upstream()
    pub = public.add(generate("example.com/pub", "v1.0.0"))
    priv = private.add(generate("corp.example/team/lib", "v1.0.0"))
    public.add(generate("corp.example/team/lib", "v1.0.0", extra=b"// impostor\n"))
    caplog.set_level(logging.DEBUG)
    proxy = make_proxy([public.url], private_upstreams=private_config(private.url, auth))
    assert get(proxy, "/corp.example/team/lib/@v/v1.0.0.zip")[2] == priv.zip
    assert get(proxy, "/corp.example/team/lib/@v/list")[0] == 200
    assert get(proxy, "/example.com/pub/@v/v1.0.0.zip")[2] == pub.zip
    # The private module never went to the public upstream; the public one never saw a secret.
    assert not [p for p, _ in public.seen_headers if p.startswith("/corp.example")]
    assert all(SECRET not in str(h) for _, h in public.seen_headers)
    assert private.seen_headers
    assert all(h.get(header) == value for _, h in private.seen_headers)
    assert SECRET not in caplog.text
    for f in Path(proxy.config.cache_dir).rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes()


def test_private_module_missing_upstream_never_falls_back_to_public(make_proxy: Callable[..., ProxyServer],
                                                                    make_upstream: Callable[[], Upstream]) -> None:
    public, private = make_upstream(), make_upstream()
    public.add(generate("corp.example/team/lib", "v1.0.0"))
    private.set("/corp.example/team/lib/@v/v1.0.0.mod", 500, b"private down")
    proxy = make_proxy([public.url], private_upstreams=private_config(private.url, {}))
    status, _, body = get(proxy, "/corp.example/team/lib/@v/v1.0.0.mod")
    assert status == 502
    assert b"private down" in body
    assert public.total() == 0


def test_private_module_is_not_looked_up_in_public_checksum_db(make_proxy: Callable[..., ProxyServer],
                                                               make_upstream: Callable[[], Upstream]) -> None:
    public, private = make_upstream(), make_upstream()
    proxy = make_proxy([public.url], private_upstreams=private_config(private.url, {}))
    status, _, _ = get(proxy, "/sumdb/sum.golang.org/lookup/corp.example/team/lib@v1.0.0")
    assert status == 404
    assert public.total() == 0
    assert private.total() == 0


def test_redirect_to_another_host_arrives_without_credentials(make_proxy: Callable[..., ProxyServer],
                                                              make_upstream: Callable[[], Upstream]) -> None:
    private, cdn = make_upstream(), make_upstream()
    m = cdn.add(generate("corp.example/team/lib", "v1.0.0"))
    cdn_url = cdn.url.replace("127.0.0.1", "localhost")
    private.set("/corp.example/team/lib/@v/v1.0.0.zip", 302, b"",
                Location=f"{cdn_url}/corp.example/team/lib/@v/v1.0.0.zip")
    proxy = make_proxy([private.url], private_upstreams=private_config(
        private.url, {"type": "basic", "value": f"user:{SECRET}"}))
    assert get(proxy, "/corp.example/team/lib/@v/v1.0.0.zip")[2] == m.zip
    assert private.seen_headers[0][1]["Authorization"].startswith("Basic ")
    assert cdn.seen_headers
    assert all("Authorization" not in h for _, h in cdn.seen_headers)


def test_secrets_in_upstream_urls_are_masked_in_logs_and_errors(make_proxy: Callable[..., ProxyServer],
                                                                upstream: Upstream,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = upstream.url.replace("http://", f"http://user:{SECRET}@")
    upstream.set("/example.com/x/@v/v1.0.0.mod", 500, b"broken")
    proxy = make_proxy([url])
    status, _, body = get(proxy, "/example.com/x/@v/v1.0.0.mod")
    assert status == 502
    assert SECRET.encode() not in body
    assert SECRET not in caplog.text
