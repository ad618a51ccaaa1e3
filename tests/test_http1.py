"""Tests for goproxy.http1: finding and parsing request heads strictly, formatting response heads."""

from __future__ import annotations

from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from goproxy.errors import ProxyError
from goproxy.http1 import (
    MAX_FIELDS,
    MAX_HEAD,
    MAX_REQUEST_LINE,
    HeadError,
    Request,
    find_head_end,
    format_head,
    parse_head,
)

GO_REQUEST = (b"GET /github.com/x/y/@v/v1.2.3.mod HTTP/1.1\r\nHost: proxy.example:8080\r\n"
              b"User-Agent: Go-http-client/1.1\r\nAccept-Encoding: gzip\r\n\r\n")


def head(line: str, *fields: str) -> bytes:
    """Return a request head from a request line and field lines, CRLF-terminated."""
    return "".join(f"{part}\r\n" for part in (line, *fields)).encode("latin-1") + b"\r\n"


def read(raw: bytes | bytearray) -> Request:
    """Return the request in raw the way the server reads it: find the head's end, then parse it."""
    end = find_head_end(raw)
    assert end == len(raw), "find_head_end did not find the end of a complete head"
    return parse_head(raw[:end])


def refusal(raw: bytes) -> int:
    """Return the status of the HeadError that reading raw raises (from either function)."""
    with pytest.raises(HeadError) as info:
        end = find_head_end(raw)
        assert end > 0, "find_head_end saw no complete head"
        parse_head(raw[:end])
    return info.value.status


MANY_FIELDS = [f"X-Field-{i}: v{i}" for i in range(MAX_FIELDS - 1)]

# (id, raw head, expected attributes of the Request)
VALID: list[tuple[str, bytes, dict[str, Any]]] = [
    ("go-command", GO_REQUEST,
     dict(method="GET", target="/github.com/x/y/@v/v1.2.3.mod", version="HTTP/1.1", keep_alive=True,
          has_body=False, authority="proxy.example:8080",
          headers={"host": "proxy.example:8080", "user-agent": "Go-http-client/1.1", "accept-encoding": "gzip"})),
    ("minimal-1.1", head("GET / HTTP/1.1", "Host: x"),
     dict(method="GET", target="/", version="HTTP/1.1", headers={"host": "x"}, keep_alive=True, authority="x")),
    ("minimal-1.0-no-host", head("GET / HTTP/1.0"),
     dict(version="HTTP/1.0", headers={}, keep_alive=False, authority="")),
    ("1.0-keep-alive", head("GET / HTTP/1.0", "Connection: Keep-Alive"),
     dict(version="HTTP/1.0", keep_alive=True)),
    ("1.0-keep-alive-in-a-list", head("HEAD /a HTTP/1.0", "Connection: Upgrade,\tkeep-alive"),
     dict(method="HEAD", keep_alive=True)),
    ("1.0-connection-close", head("GET / HTTP/1.0", "Connection: close"), dict(keep_alive=False)),
    ("1.1-connection-close", head("GET / HTTP/1.1", "Host: x", "Connection: close"), dict(keep_alive=False)),
    ("1.1-close-among-tokens", head("GET / HTTP/1.1", "Host: x", "Connection: keep-alive, CLOSE"),
     dict(keep_alive=False)),
    ("many-headers", head("GET / HTTP/1.1", "Host: x", *MANY_FIELDS),
     dict(headers={"host": "x", **{f"x-field-{i}": f"v{i}" for i in range(MAX_FIELDS - 1)}})),
    ("absolute-form", head("GET http://Proxy.Example:8080/github.com/x/y/@v/list?x=1 HTTP/1.1", "Host: other"),
     dict(target="/github.com/x/y/@v/list?x=1", authority="Proxy.Example:8080", headers={"host": "other"})),
    ("absolute-form-https-upper-scheme", head("GET HTTPS://h/p HTTP/1.1", "Host: h"),
     dict(target="/p", authority="h")),
    ("absolute-form-no-path", head("GET http://h HTTP/1.1", "Host: h"), dict(target="/", authority="h")),
    ("absolute-form-query-only", head("GET http://h:80?q HTTP/1.1", "Host: h"),
     dict(target="/?q", authority="h:80")),
    ("absolute-form-ipv6", head("GET http://[::1]:8080/a HTTP/1.1", "Host: [::1]:8080"),
     dict(target="/a", authority="[::1]:8080")),
    ("repeated-headers-combined", head("GET / HTTP/1.1", "Host: x", "Accept: a", "X-B: 1", "accept: b"),
     dict(headers={"host": "x", "accept": "a, b", "x-b": "1"})),
    ("case-insensitive-names", head("GET / HTTP/1.1", "hOsT: x", "USER-AGENT: u", "x-Mixed-Case: m"),
     dict(headers={"host": "x", "user-agent": "u", "x-mixed-case": "m"})),
    ("tabs-and-spaces-in-ows", head("GET / HTTP/1.1", "Host:\t x \t", "X-A:\tinner\tspace kept\t"),
     dict(headers={"host": "x", "x-a": "inner\tspace kept"})),
    ("empty-header-value", head("GET / HTTP/1.1", "Host: x", "X-Empty:", "X-Blank: \t "),
     dict(headers={"host": "x", "x-empty": "", "x-blank": ""})),
    ("empty-host", head("GET / HTTP/1.1", "Host:"), dict(authority="")),
    ("obs-text-in-value", b"GET / HTTP/1.1\r\nHost: x\r\nX-Name: caf\xe9\r\n\r\n",
     dict(headers={"host": "x", "x-name": "caf\xe9"})),
    ("percent-escapes-left-alone", head("GET /a%2Fb/%2e%2e/%00?q=%20 HTTP/1.1", "Host: x"),
     dict(target="/a%2Fb/%2e%2e/%00?q=%20")),
    ("unknown-method-token", head("BREW /pot HTTP/1.1", "Host: x"), dict(method="BREW")),
    ("method-case-kept", head("get / HTTP/1.1", "Host: x"), dict(method="get")),
    ("options-asterisk", head("OPTIONS * HTTP/1.1", "Host: x"), dict(method="OPTIONS", target="*")),
    ("one-leading-empty-line-ignored", b"\r\n" + head("GET /a HTTP/1.1", "Host: x"), dict(target="/a")),
    ("content-length-zero-on-get", head("GET / HTTP/1.1", "Host: x", "Content-Length: 000"),
     dict(has_body=False, keep_alive=True)),
    ("post-with-body-closes", head("POST /x HTTP/1.1", "Host: x", "Content-Length: 5"),
     dict(method="POST", has_body=True, keep_alive=False)),
    ("post-chunked-closes", head("POST /x HTTP/1.1", "Host: x", "Transfer-Encoding: Chunked"),
     dict(has_body=True, keep_alive=False)),
    ("post-empty-body-keeps-alive", head("POST /x HTTP/1.1", "Host: x", "Content-Length: 0"),
     dict(has_body=False, keep_alive=True)),
]


@pytest.mark.parametrize(("raw", "expected"), [(raw, exp) for _, raw, exp in VALID], ids=[v[0] for v in VALID])
def test_valid_request_parses(raw: bytes, expected: dict[str, Any]) -> None:
    req = read(raw)
    for name, value in expected.items():
        assert getattr(req, name) == value, name


def test_bytearray_buffer_parses_like_bytes() -> None:
    req = read(bytearray(GO_REQUEST))
    assert req.target == "/github.com/x/y/@v/v1.2.3.mod"
    assert req.headers["user-agent"] == "Go-http-client/1.1"


def test_header_accessor_ignores_case_and_has_a_default() -> None:
    req = read(GO_REQUEST)
    assert req.header("User-Agent") == "Go-http-client/1.1"
    assert req.header("ACCEPT-ENCODING") == "gzip"
    assert req.header("Authorization") == ""
    assert req.header("Authorization", "none") == "none"


def line_of(length: int) -> str:
    """Return a GET request line exactly length characters long."""
    return "GET /" + "a" * (length - len("GET / HTTP/1.1")) + " HTTP/1.1"


def fields_in(size: int) -> list[str]:
    """Return field lines that make head("GET / HTTP/1.1", "Host: x", *fields) exactly size bytes."""
    base = len(head("GET / HTTP/1.1", "Host: x"))
    return ["X-Pad: " + "p" * (size - base - len("X-Pad: \r\n"))]


def test_limits_are_inclusive() -> None:
    assert read(head(line_of(MAX_REQUEST_LINE), "Host: x")).version == "HTTP/1.1"
    assert len(read(head("GET / HTTP/1.1", "Host: x", *MANY_FIELDS)).headers) == MAX_FIELDS
    assert read(head("GET / HTTP/1.1", "Host: x", *fields_in(MAX_HEAD))).method == "GET"


# (id, raw head, status); every one is refused whole, with that status.
HOSTILE: list[tuple[str, bytes, int]] = [
    ("cl-and-te", head("POST / HTTP/1.1", "Host: x", "Content-Length: 5", "Transfer-Encoding: chunked"), 400),
    ("te-and-cl", head("POST / HTTP/1.1", "Host: x", "Transfer-Encoding: chunked", "Content-Length: 0"), 400),
    ("te-on-get", head("GET / HTTP/1.1", "Host: x", "Transfer-Encoding: chunked"), 400),
    ("te-on-head", head("HEAD / HTTP/1.1", "Host: x", "Transfer-Encoding: chunked"), 400),
    ("te-on-http-1.0", head("POST / HTTP/1.0", "Transfer-Encoding: chunked"), 400),
    ("te-chunked-then-identity", head("POST / HTTP/1.1", "Host: x", "Transfer-Encoding: chunked , identity"), 501),
    ("te-xchunked", head("POST / HTTP/1.1", "Host: x", "Transfer-Encoding: xchunked"), 501),
    ("te-gzip-chunked", head("POST / HTTP/1.1", "Host: x", "Transfer-Encoding: gzip, chunked"), 501),
    ("te-chunked-twice", head("POST / HTTP/1.1", "Host: x", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"),
     501),
    ("te-chunked-in-get-list", head("GET / HTTP/1.1", "Host: x", "Transfer-Encoding: chunked , identity"), 400),
    ("duplicate-cl-equal", head("POST / HTTP/1.1", "Host: x", "Content-Length: 5", "Content-Length: 5"), 400),
    ("duplicate-cl-different", head("POST / HTTP/1.1", "Host: x", "Content-Length: 5", "Content-Length: 6"), 400),
    ("cl-list-in-one-field", head("POST / HTTP/1.1", "Host: x", "Content-Length: 5, 5"), 400),
    ("cl-plus-sign", head("POST / HTTP/1.1", "Host: x", "Content-Length: +5"), 400),
    ("cl-minus-sign", head("POST / HTTP/1.1", "Host: x", "Content-Length: -1"), 400),
    ("cl-space-inside", head("POST / HTTP/1.1", "Host: x", "Content-Length: 1 0"), 400),
    ("cl-hex", head("POST / HTTP/1.1", "Host: x", "Content-Length: 0x10"), 400),
    ("cl-empty", head("POST / HTTP/1.1", "Host: x", "Content-Length:"), 400),
    ("cl-unicode-digit", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\n", 400),
    ("cl-on-get", head("GET / HTTP/1.1", "Host: x", "Content-Length: 5"), 400),
    ("cl-on-head", head("HEAD / HTTP/1.1", "Host: x", "Content-Length: 1"), 400),
    ("obs-fold", head("GET / HTTP/1.1", "Host: x", "X-A: a", " folded"), 400),
    ("obs-fold-tab", head("GET / HTTP/1.1", "Host: x", "X-A: a", "\tfolded"), 400),
    ("fold-as-first-field", head("GET / HTTP/1.1", " Host: x"), 400),
    ("space-before-colon", head("GET / HTTP/1.1", "Host : x"), 400),
    ("tab-before-colon", head("GET / HTTP/1.1", "Host\t: x"), 400),
    ("empty-header-name", head("GET / HTTP/1.1", "Host: x", ": v"), 400),
    ("field-without-colon", head("GET / HTTP/1.1", "Host: x", "X-No-Colon"), 400),
    ("known-name-without-colon", head("GET / HTTP/1.1", "Host: x", "Accept"), 400),
    ("bad-char-in-name", head("GET / HTTP/1.1", "Host: x", "X(A): v"), 400),
    ("non-ascii-name", b"GET / HTTP/1.1\r\nHost: x\r\nX\xe9: v\r\n\r\n", 400),
    ("bare-lf-in-field", b"GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n", 400),
    ("bare-lf-after-request-line", b"GET / HTTP/1.1\nHost: x\r\n\r\n", 400),
    ("bare-cr-in-field", b"GET / HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n", 400),
    ("bare-cr-before-crlf", b"GET / HTTP/1.1\r\r\nHost: x\r\n\r\n", 400),
    ("bare-cr-in-target", b"GET /a\rb HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("nul-in-value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400),
    ("nul-in-target", b"GET /a\x00 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("control-in-value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", 400),
    ("del-in-value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n", 400),
    ("over-long-request-line", head(line_of(MAX_REQUEST_LINE + 1), "Host: x"), 414),
    ("too-many-headers", head("GET / HTTP/1.1", "Host: x", *MANY_FIELDS, "X-Last: v"), 431),
    ("oversized-head", head("GET / HTTP/1.1", "Host: x", *fields_in(MAX_HEAD + 1)), 431),
    ("http-0.9", b"GET /\r\n\r\n", 400),
    ("one-word", b"GET\r\n\r\n", 400),
    ("empty-head", b"\r\n\r\n", 400),
    ("two-leading-empty-lines", b"\r\n\r\n" + head("GET / HTTP/1.1", "Host: x"), 400),
    ("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    ("http-1.2", head("GET / HTTP/1.2", "Host: x"), 505),
    ("http-2", head("GET / HTTP/2", "Host: x"), 505),
    ("http-0.9-explicit", head("GET / HTTP/0.9"), 505),
    ("lower-case-version", head("GET / http/1.1", "Host: x"), 400),
    ("version-with-trailing-junk", head("GET / HTTP/1.1x", "Host: x"), 400),
    ("two-spaces-after-method", head("GET  / HTTP/1.1", "Host: x"), 400),
    ("trailing-space", head("GET / HTTP/1.1 ", "Host: x"), 400),
    ("target-with-space", head("GET /a b HTTP/1.1", "Host: x"), 400),
    ("target-with-tab", head("GET /a\tb HTTP/1.1", "Host: x"), 400),
    ("target-with-fragment", head("GET /a#b HTTP/1.1", "Host: x"), 400),
    ("target-non-ascii", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("target-not-starting-with-slash", head("GET example.com/m/@v/list HTTP/1.1", "Host: x"), 400),
    ("authority-form", head("CONNECT example.com:443 HTTP/1.1", "Host: example.com:443"), 400),
    ("asterisk-with-get", head("GET * HTTP/1.1", "Host: x"), 400),
    ("absolute-form-ftp", head("GET ftp://h/p HTTP/1.1", "Host: h"), 400),
    ("absolute-form-no-host", head("GET http:///p HTTP/1.1", "Host: h"), 400),
    ("absolute-form-userinfo", head("GET http://user:pw@h/p HTTP/1.1", "Host: h"), 400),
    ("bad-method-char", head("GE(T / HTTP/1.1", "Host: x"), 400),
    ("empty-method", head(" / HTTP/1.1", "Host: x"), 400),
    ("missing-host-1.1", head("GET / HTTP/1.1", "Accept: */*"), 400),
    ("two-host-fields", head("GET / HTTP/1.1", "Host: a", "Host: b"), 400),
    ("two-equal-host-fields", head("GET / HTTP/1.1", "Host: a", "host: a"), 400),
    ("host-with-space", head("GET / HTTP/1.1", "Host: a b"), 400),
    ("host-with-slash", head("GET / HTTP/1.1", "Host: a/b"), 400),
    ("two-authorization-fields", head("GET / HTTP/1.1", "Host: x", "Authorization: a", "Authorization: b"), 400),
]


@pytest.mark.parametrize(("raw", "status"), [(raw, s) for _, raw, s in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_head_is_refused_with_status(raw: bytes, status: int) -> None:
    assert refusal(raw) == status


SINGLE_HEAD = [case for case in HOSTILE if case[1].count(b"\r\n\r\n") == 1]


@pytest.mark.parametrize(("raw", "status"), [(raw, s) for _, raw, s in SINGLE_HEAD], ids=[h[0] for h in SINGLE_HEAD])
def test_parse_head_alone_refuses_hostile_head(raw: bytes, status: int) -> None:
    with pytest.raises(HeadError) as info:
        parse_head(raw)
    assert info.value.status == status


def test_parse_head_refuses_an_empty_line_inside_the_head() -> None:
    with pytest.raises(HeadError) as info:
        parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nX-A: b\r\n\r\n")
    assert info.value.status == 400


def test_head_error_is_a_proxy_error_with_a_one_line_message() -> None:
    with pytest.raises(ProxyError) as info:
        parse_head(head("GET / HTTP/1.1"))
    assert isinstance(info.value, HeadError)
    assert info.value.status == 400
    assert info.value.message == "missing Host field (required in HTTP/1.1)"


def test_parse_head_refuses_data_without_the_closing_empty_line() -> None:
    with pytest.raises(HeadError) as info:
        parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert info.value.status == 400


# find_head_end: incomplete heads, resuming, and early refusal.

def test_find_head_end_returns_minus_one_until_the_head_is_complete() -> None:
    for cut in range(len(GO_REQUEST)):
        assert find_head_end(GO_REQUEST[:cut]) == -1, cut
    assert find_head_end(GO_REQUEST) == len(GO_REQUEST)


def test_find_head_end_stops_at_the_first_head_of_a_pipeline() -> None:
    second = head("GET /second HTTP/1.1", "Host: x")
    assert find_head_end(GO_REQUEST + second + b"body") == len(GO_REQUEST)


@pytest.mark.parametrize("cut", range(1, len(GO_REQUEST)))
def test_find_head_end_resumes_across_a_split_read(cut: int) -> None:
    buf = bytearray(GO_REQUEST[:cut])
    assert find_head_end(buf) == -1
    seen = len(buf)
    buf += GO_REQUEST[cut:]
    assert find_head_end(buf, seen) == len(GO_REQUEST)


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_find_head_end_finds_crlf_crlf_straddling_two_calls(cut: int) -> None:
    raw = head("GET / HTTP/1.1", "Host: x")
    first = raw[:len(raw) - 4 + cut]  # the CRLF CRLF is cut after its first `cut` bytes
    assert find_head_end(first) == -1
    assert find_head_end(raw, len(first)) == len(raw)


def test_find_head_end_resumes_one_byte_at_a_time() -> None:
    buf = bytearray()
    for i, byte in enumerate(GO_REQUEST):
        seen = len(buf)
        buf.append(byte)
        end = find_head_end(buf, seen)
        assert end == (len(GO_REQUEST) if i == len(GO_REQUEST) - 1 else -1), i


def test_find_head_end_refuses_an_over_long_request_line_before_it_ends() -> None:
    partial = b"GET /" + b"a" * MAX_REQUEST_LINE
    with pytest.raises(HeadError) as info:
        find_head_end(partial)
    assert info.value.status == 414


def test_find_head_end_waits_on_a_request_line_at_the_limit() -> None:
    line = line_of(MAX_REQUEST_LINE).encode()
    assert find_head_end(line) == -1
    assert find_head_end(line + b"\r") == -1
    assert find_head_end(line + b"\r\nHost: x\r\n") == -1


def test_find_head_end_refuses_an_oversized_head_before_it_ends() -> None:
    partial = head("GET / HTTP/1.1", "Host: x")[:-2] + b"X-Big: " + b"b" * MAX_HEAD
    with pytest.raises(HeadError) as info:
        find_head_end(partial)
    assert info.value.status == 431


def test_find_head_end_refuses_too_many_fields_before_the_head_ends() -> None:
    partial = head("GET / HTTP/1.1", "Host: x", *MANY_FIELDS, "X-Last: v")[:-2]
    with pytest.raises(HeadError) as info:
        find_head_end(partial)
    assert info.value.status == 431


@pytest.mark.parametrize(("partial", "status"), [
    (b"GET / HTTP/1.1\nHost: x\n", 400),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
    (b"SSH-2.0-OpenSSH_9.6\r\n", 400),
    (b"GET / HTTP/1.2\r\nHost", 505),
    (b"GET /a b HTTP/1.1\r\n", 400),
    (b"GET /\x00 HTTP/1.1\r\n", 400),
], ids=["lf-only-lines", "tls-client-hello", "ssh-banner", "bad-version", "target-with-space", "nul-in-line"])
def test_find_head_end_refuses_an_incomplete_head_that_cannot_become_valid(partial: bytes, status: int) -> None:
    with pytest.raises(HeadError) as info:
        find_head_end(partial)
    assert info.value.status == status


def test_find_head_end_sees_a_bare_lf_only_in_new_bytes_when_resuming() -> None:
    buf = b"GET / HTTP/1.1\r"
    assert find_head_end(buf) == -1
    assert find_head_end(buf + b"\nHost: x\r\n", len(buf)) == -1
    with pytest.raises(HeadError):
        find_head_end(buf + b"\nHost: x\n", len(buf))


def test_find_head_end_accepts_one_leading_empty_line() -> None:
    assert find_head_end(b"\r\n") == -1
    assert find_head_end(b"\r\nGET / HT") == -1
    raw = b"\r\n" + GO_REQUEST
    assert find_head_end(raw) == len(raw)


# format_head

FORMATS: list[tuple[str, int, list[tuple[str, str]], bool, bytes]] = [
    ("ok", 200, [("Content-Type", "text/plain"), ("Content-Length", "3")], False,
     b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\n"),
    ("close", 404, [("Content-Length", "0")], True,
     b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    ("no-fields", 204, [], False, b"HTTP/1.1 204 No Content\r\n\r\n"),
    ("431", 431, [], True, b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n"),
    ("unknown-status-empty-reason", 599, [], False, b"HTTP/1.1 599 \r\n\r\n"),
    ("latin-1-value", 200, [("X-A", "caf\xe9")], False, b"HTTP/1.1 200 OK\r\nX-A: caf\xe9\r\n\r\n"),
]


@pytest.mark.parametrize(("status", "headers", "close", "expected"), [f[1:] for f in FORMATS],
                         ids=[f[0] for f in FORMATS])
def test_format_head_writes_status_line_fields_and_end(status: int, headers: list[tuple[str, str]], close: bool,
                                                        expected: bytes) -> None:
    assert format_head(status, headers, close) == expected


@pytest.mark.parametrize(("status", "headers"), [
    (200, [("X-A", "a\r\nSet-Cookie: evil")]),
    (200, [("X-A", "a\nb")]),
    (200, [("X-A", "a\rb")]),
    (200, [("X-A", "a\x00b")]),
    (200, [("X-A\r\nX-B", "v")]),
    (200, [("Content-Length", "1"), ("X-A", "ok"), ("X-B", "a\r\n")]),
    (200, [("X-A", "snow \u2603")]),
    (99, []),
    (1000, []),
], ids=["crlf-value", "lf-value", "cr-value", "nul-value", "crlf-name", "crlf-in-last", "not-latin-1",
        "status-99", "status-1000"])
def test_format_head_refuses_anything_that_could_split_the_reply(status: int, headers: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError):
        format_head(status, headers, False)


def test_format_head_round_trips_through_the_stdlib_client_parser() -> None:
    import http.client
    import io
    import socket

    raw = format_head(405, [("Allow", "GET, HEAD"), ("Content-Length", "0")], True)

    class Sock:
        def makefile(self, mode: str) -> io.BytesIO:
            return io.BytesIO(raw)

    resp = http.client.HTTPResponse(cast(socket.socket, Sock()))  # it only calls makefile
    resp.begin()
    assert resp.status == 405
    assert resp.reason == "Method Not Allowed"
    assert resp.getheader("Allow") == "GET, HEAD"
    assert resp.will_close


# Property-based: only HeadError ever escapes, and valid requests round-trip.

def only_head_errors(raw: bytes) -> Request | None:
    """Return the request read from raw, or None when refused; fail on any other exception."""
    try:
        end = find_head_end(raw)
        req = parse_head(raw[:end] if end > 0 else raw)
    except HeadError as exc:
        assert exc.status in (400, 414, 431, 501, 505)
        assert exc.message.isprintable(), exc.message
        assert exc.message.isascii(), exc.message
        return None
    assert "\x00" not in req.target
    for name, value in req.headers.items():
        assert name == name.lower()
        assert "\r" not in value
        assert "\n" not in value
        assert "\x00" not in value
    return req


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_head_error(raw: bytes) -> None:
    only_head_errors(raw)
    only_head_errors(raw + b"\r\n\r\n")


@settings(max_examples=500, deadline=None)
@given(st.integers(0, len(GO_REQUEST) - 1), st.binary(min_size=1, max_size=4), st.booleans())
def test_mutated_request_raises_only_head_error(at: int, junk: bytes, replace: bool) -> None:
    raw = GO_REQUEST[:at] + junk + GO_REQUEST[at + (len(junk) if replace else 0):]
    only_head_errors(raw)


TOKEN = st.text(alphabet="!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                min_size=1, max_size=12)
RESERVED = {"host", "content-length", "transfer-encoding", "connection", "authorization", "proxy-authorization",
            "content-type", "range", "if-range", "if-modified-since", "if-unmodified-since"}
FIELD_NAME = TOKEN.filter(lambda n: n.lower() not in RESERVED)
VCHAR = "".join(chr(c) for c in [*range(0x21, 0x7F), *range(0x80, 0x100)])
FIELD_VALUE = st.builds(lambda a, b: a + b, st.text(alphabet=VCHAR, min_size=1, max_size=1),
                        st.text(alphabet=VCHAR + " \t", max_size=20)).map(lambda v: v.rstrip(" \t")) | st.just("")
TARGET = st.text(alphabet="".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "#"), max_size=40).map(
    lambda t: "/" + t)
HOST = st.from_regex(r"[a-z0-9.-]{0,20}(:[0-9]{1,5})?", fullmatch=True)
OWS = st.sampled_from(["", " ", "\t", "  ", " \t"])


@settings(max_examples=300, deadline=None)
@given(TOKEN, TARGET, st.sampled_from(["HTTP/1.0", "HTTP/1.1"]), st.one_of(st.none(), HOST),
       st.lists(st.tuples(FIELD_NAME, OWS, FIELD_VALUE, OWS), max_size=20))
def test_request_from_valid_parts_round_trips(method: str, target: str, version: str, host: str | None,
                                              fields: list[tuple[str, str, str, str]]) -> None:
    if host is None and version == "HTTP/1.1":
        host = "h"
    lines = [f"{method} {target} {version}"]
    expected: dict[str, str] = {}
    if host is not None:
        lines.append(f"Host: {host}")
        expected["host"] = host
    for name, before, value, after in fields:
        lines.append(f"{name}:{before}{value}{after}")
        key = name.lower()
        expected[key] = expected[key] + ", " + value if key in expected else value
    raw = head(*lines)
    req = read(raw)
    assert req.method == method
    assert req.target == target
    assert req.version == version
    assert req.headers == expected
    assert req.authority == (host or "")
    assert req.keep_alive == (version == "HTTP/1.1")
    assert not req.has_body


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, len(GO_REQUEST)), max_size=10))
def test_find_head_end_finds_the_end_for_any_chunking(cuts: list[int]) -> None:
    buf = bytearray()
    last = 0
    end = -1
    for cut in [*sorted(set(cuts)), len(GO_REQUEST)]:
        seen = len(buf)
        buf += GO_REQUEST[last:cut]
        last = cut
        end = find_head_end(buf, seen)
        if end >= 0:
            break
    assert end == len(GO_REQUEST)
