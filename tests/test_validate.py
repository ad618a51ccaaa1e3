"""Tests for goproxy.validate: upstream answers that cannot be what was asked for are refused."""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path

import pytest

from goproxy.errors import BadRequest, NotFound
from goproxy.gomod import check_gomod
from goproxy.validate import (
    MAX_GO_MOD,
    MAX_LICENSE,
    MAX_ZIP_FILE,
    InvalidContent,
    check_info,
    check_list,
    check_zip,
    check_zip_start,
    looks_like_html,
)

BLOCK_PAGE = (b"<!DOCTYPE html>\n<html><head><title>Access denied</title></head>\n"
              b"<body><h1>Blocked by policy</h1><p>Contact your administrator.</p></body></html>\n")
M, V = "example.com/m", "v1.0.0"
P = f"{M}@{V}/"


def test_x_mod_limits_are_the_defaults() -> None:
    assert MAX_ZIP_FILE == 500 << 20
    assert MAX_GO_MOD == 16 << 20
    assert MAX_LICENSE == 16 << 20


# --- looks_like_html -------------------------------------------------------------------------

@pytest.mark.parametrize(("content_type", "head"), [
    ("text/html", b""),
    ("text/html; charset=utf-8", b"PK\x03\x04"),
    ("TEXT/HTML", b""),
    ("application/xhtml+xml", b""),
    ("", BLOCK_PAGE),
    ("application/zip", b"  \r\n\t<!doctype HTML><html>"),
    ("", b"\xef\xbb\xbf<html lang=en>"),
    ("", b"<HTML>"),
    ("", b"<head><title>x"),
    ("", b"<body>"),
    ("", b"<?xml version='1.0'?><html/>"),
    ("", b"<!-- portal -->"),
    ("", b"<p>blocked</p>"),
    ("", "<html>".encode("utf-16")),
], ids=["text-html", "text-html-params", "upper-case-type", "xhtml", "doctype", "doctype-after-space",
        "bom-html", "html-upper", "head", "body", "xml", "comment", "p", "utf16-html"])
def test_looks_like_html_spots_html_pages(content_type: str, head: bytes) -> None:
    assert looks_like_html(content_type, head)


@pytest.mark.parametrize(("content_type", "head"), [
    ("application/zip", b"PK\x03\x04\x14\x00"),
    ("text/plain; charset=utf-8", b"module example.com/m\n"),
    ("text/plain", b"v1.0.0\nv1.1.0\n"),
    ("application/json", b'{"Version":"v1.0.0"}'),
    ("", b""),
    ("", b"<htmlish"),
    ("application/octet-stream", b"\x00\x01<html>"),
], ids=["zip", "gomod", "list", "json", "empty", "not-a-tag", "tag-not-at-start"])
def test_looks_like_html_passes_proxy_answers(content_type: str, head: bytes) -> None:
    assert not looks_like_html(content_type, head)


# --- check_zip_start ---------------------------------------------------------------------------

@pytest.mark.parametrize("head", [b"PK\x03\x04\x14\x00\x08\x00", b"PK\x05\x06\x00\x00", b"PK\x03", b"P", b""],
                         ids=["local-header", "empty-zip", "short-3", "short-1", "nothing-yet"])
def test_check_zip_start_accepts_what_can_begin_a_zip(head: bytes) -> None:
    check_zip_start(head)


@pytest.mark.parametrize("head", [BLOCK_PAGE, b"PK\x01\x02", b"\x1f\x8b\x08\x00", b"Q", b"{}"],
                         ids=["html", "central-dir-first", "gzip", "one-wrong-byte", "json"])
def test_check_zip_start_refuses_other_bodies(head: bytes) -> None:
    with pytest.raises(InvalidContent, match="not a zip file"):
        check_zip_start(head)


def test_check_zip_start_message_shows_the_start_of_the_page() -> None:
    with pytest.raises(InvalidContent) as e:
        check_zip_start(BLOCK_PAGE)
    assert str(e.value) == "not a zip file (starts with '<!DOCTYPE html>')"


# --- check_zip ---------------------------------------------------------------------------------

GOOD_FILES = {
    "LICENSE": b"MIT License\n",
    "go.mod": b"module example.com/m\n\ngo 1.21\n",
    "m.go": b"package m\n",
    "internal/deep/er/x.go": b"package er\n",
    ".github/workflows/ci.yml": b"on: push\n",
    "testdata/-odd name (1).txt": b"x",
    "docs/é.md": b"unicode letters are fine in file names\n",
}


def make_zip(entries: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """Return a zip holding entries (name, data) in order, as Go's archive/zip would write them."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as z, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate names some tests need
        for name, data in entries:
            z.writestr(zipfile.ZipInfo(name, (2019, 1, 1, 0, 0, 0)), data, compress_type=method)
    return buf.getvalue()


def module_zip(files: dict[str, bytes], prefix: str = P) -> bytes:
    return make_zip([(prefix + name, data) for name, data in files.items()])


def raw_name_zip(raw: bytes) -> bytes:
    """Return a zip with one entry under P whose name ends in raw bytes, with no UTF-8 flag."""
    placeholder = "Q" * len(raw)
    data = module_zip({placeholder: b"x"})
    return data.replace((P + placeholder).encode(), P.encode() + raw)


VALID_ZIPS = {
    "go-mod-download-layout": module_zip(GOOD_FILES),
    "with-directory-entries": make_zip([(P, b""), (P + "a/", b""), (P + "a/b.go", b"package a\n"),
                                        (P + "a/c/", b"")]),
    "no-files": make_zip([]),
    "stored-not-deflated": make_zip([(P + "go.mod", b"module example.com/m\n")], method=zipfile.ZIP_STORED),
    "go-mod-at-limit": module_zip({"go.mod": b"m" * 64}),
}


@pytest.mark.parametrize("data", VALID_ZIPS.values(), ids=VALID_ZIPS.keys())
def test_check_zip_accepts_module_zips(data: bytes) -> None:
    check_zip(io.BytesIO(data), M, V, max_go_mod=64)


INVALID_ZIPS = {
    "html-block-page": (BLOCK_PAGE, "not a zip file (starts with '<!DOCTYPE html>')"),
    "another-module": (module_zip(GOOD_FILES, "example.com/other@v1.0.0/"), "is not under"),
    "another-version": (module_zip(GOOD_FILES, "example.com/m@v1.0.1/"), "is not under"),
    "prefix-without-slash": (make_zip([("example.com/m@v1.0.0", b"")]), "is not under"),
    "no-prefix": (make_zip([("go.mod", b"module example.com/m\n")]), "is not under"),
    "dot-dot": (module_zip({"../x": b"x"}), "invalid path element '..'"),
    "dot-dot-inside": (module_zip({"a/../../x": b"x"}), "invalid path element '..'"),
    "absolute": (module_zip({"/abs": b"x"}), "empty path element"),
    "absolute-without-prefix": (make_zip([("/abs", b"x")]), "is not under"),
    "dot-element": (module_zip({"./a.go": b"x"}), "invalid path element '.'"),
    "double-slash": (module_zip({"a//b.go": b"x"}), "double slash"),
    "duplicate-name": (make_zip([(P + "a.go", b"1"), (P + "a.go", b"2")]), "multiple entries for file 'a.go'"),
    "case-fold-duplicate": (module_zip({"README": b"1", "readme": b"2"}),
                            "case-insensitive file name collision: 'README' and 'readme'"),
    "case-fold-directories": (module_zip({"Dir/a.go": b"1", "dir/b.go": b"2"}), "case-insensitive"),
    "unicode-fold-duplicate": (module_zip({"k.go": b"1", "\u212a.go": b"2"}), "case-insensitive"),
    "file-and-directory": (module_zip({"a": b"1", "a/b.go": b"2"}), "both a file and a directory"),
    "colon-in-name": (module_zip({"a:b.go": b"x"}), "invalid char ':'"),
    "backslash-in-name": (module_zip({"a\\b.go": b"x"}), r"invalid char '\\'"),
    "windows-reserved-name": (module_zip({"con.go": b"x"}), "disallowed as path element component on Windows"),
    "invalid-utf8-name": (raw_name_zip(b"\xff.go"), "invalid UTF-8"),
    "nested-go-mod": (module_zip({"sub/go.mod": b"module example.com/m/sub\n"}), "not in module root directory"),
    "upper-case-go-mod": (module_zip({"GO.MOD": b"module example.com/m\n"}), "must have a lowercase name"),
    "go-mod-too-big": (module_zip({"go.mod": b"m" * 65}), "go.mod file too large"),
    "license-too-big": (module_zip({"LICENSE": b"l" * 65}), "LICENSE file too large"),
    "unsupported-compression": (make_zip([(P + "a.go", b"x")], method=zipfile.ZIP_BZIP2),
                                "unsupported compression method 12"),
    "empty-file": (b"", "corrupt zip file"),
}


@pytest.mark.parametrize(("data", "why"), INVALID_ZIPS.values(), ids=INVALID_ZIPS.keys())
def test_check_zip_refuses_what_x_mod_zip_refuses(data: bytes, why: str) -> None:
    with pytest.raises(InvalidContent) as e:
        check_zip(io.BytesIO(data), M, V, max_go_mod=64, max_license=64)
    assert why in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("cut", [0.5, 0.9], ids=["half", "most"])
def test_check_zip_refuses_a_truncated_zip(cut: float) -> None:
    data = module_zip(GOOD_FILES)
    with pytest.raises(InvalidContent, match="corrupt zip file"):
        check_zip(io.BytesIO(data[:int(len(data) * cut)]), M, V)


def test_check_zip_refuses_a_zip_whose_central_directory_is_cut() -> None:
    data = module_zip(GOOD_FILES)
    end = data.rindex(b"PK\x05\x06")
    with pytest.raises(InvalidContent, match="corrupt zip file"):
        check_zip(io.BytesIO(data[:end - 10] + data[end:]), M, V)


def test_check_zip_counts_uncompressed_size_against_the_zip_limit() -> None:
    data = module_zip({"zeros.bin": bytes(50_000)})  # deflates to well under 1 KiB
    assert len(data) < 5_000
    check_zip(io.BytesIO(data), M, V, max_zip_file=50_000)
    with pytest.raises(InvalidContent, match="total uncompressed size of module contents too large"):
        check_zip(io.BytesIO(data), M, V, max_zip_file=49_999)


def test_check_zip_refuses_a_zip_file_over_the_limit() -> None:
    data = module_zip(GOOD_FILES)
    check_zip(io.BytesIO(data), M, V, max_zip_file=len(data) + 1000)
    with pytest.raises(InvalidContent, match="module zip file is too large"):
        check_zip(io.BytesIO(data), M, V, max_zip_file=len(data) - 1)


def test_check_zip_reads_a_zip_from_a_path(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.zip", tmp_path / "bad.zip"
    good.write_bytes(module_zip(GOOD_FILES))
    bad.write_bytes(BLOCK_PAGE)
    check_zip(str(good), M, V)
    with pytest.raises(InvalidContent):
        check_zip(str(bad), M, V)


@pytest.mark.parametrize(("module", "version", "error"), [
    ("Example.com/m", V, BadRequest), (M, "v1.0", BadRequest), (M, "v2.0.0", NotFound)])
def test_check_zip_refuses_an_invalid_module_version(module: str, version: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        check_zip(io.BytesIO(module_zip(GOOD_FILES)), module, version)


def test_check_zip_accepts_gopkg_in_and_major_version_modules() -> None:
    check_zip(io.BytesIO(module_zip({"go.mod": b"x"}, "gopkg.in/yaml.v2@v2.4.0/")), "gopkg.in/yaml.v2", "v2.4.0")
    check_zip(io.BytesIO(module_zip({"a.go": b"x"}, "example.com/m/v3@v3.0.1/")), "example.com/m/v3", "v3.0.1")


# --- check_gomod -------------------------------------------------------------------------------

FULL_GOMOD = b"""// Package m does things.
// Deprecated: use example.com/m2.
module example.com/m // the module

go 1.21

toolchain go1.22.1

godebug (
	default=go1.21
	panicnil=1
)

require (
	golang.org/x/text v0.14.0 // indirect
	rsc.io/quote/v3 v3.1.0
	gopkg.in/yaml.v2 v2.4.0
	example.com/old v2.0.0+incompatible
)

require "example.com/quoted" v1.0.0

exclude example.com/bad v1.2.3

replace example.com/a => ../a

replace (
	example.com/b v1.0.0 => example.com/c v1.1.0
)

retract (
	// Published by mistake.
	v1.0.1
	[v1.1.0, v1.1.9] // broken builds
)

retract v0.9.0 // rationale on the line

tool example.com/m/cmd/gen

ignore ./node_modules
"""

VALID_GOMODS = {
    "all-verbs": FULL_GOMOD,
    "minimal": b"module example.com/m\n",
    "quoted-path": b'module "example.com/m"\n',
    "escaped-quoted-path": b'module "example.com/\\x6d"\n',
    "module-block": b"module (\n\texample.com/m\n)\n",
    "crlf": b"module example.com/m\r\n\r\ngo 1.21\r\n",
    "no-module-directive": b"go 1.21\n\nrequire rsc.io/quote v1.5.2\n",
    "comments-only": b"// nothing here\n",
    "empty": b"",
    "unknown-verb": b"module example.com/m\nfrobnicate x y z\n",
    "unknown-block": b"module example.com/m\nfuture (\n\ta b c\n)\n",
    "empty-block": b"module example.com/m\nrequire ( )\n",
    "lax-go-version": b"module example.com/m\ngo 1.21.x\n",
    "retract-malformed-interval": b"module example.com/m\nretract [v1.0.0\n",
    "unreadable-directive-ignored": b"module example.com/m\nexclude 'x' v1\nreplace nonsense\n",
    "no-final-newline": b"module example.com/m",
}


@pytest.mark.parametrize("data", VALID_GOMODS.values(), ids=VALID_GOMODS.keys())
def test_check_gomod_accepts_what_parse_lax_accepts(data: bytes) -> None:
    check_gomod(data, M)


INVALID_GOMODS = {
    "html-block-page": (BLOCK_PAGE, "not a go.mod file (starts with '<!DOCTYPE html>')"),
    "another-module": (b"module example.com/other\n\ngo 1.21\n", "names module 'example.com/other'"),
    "another-module-quoted": (b'module "example.com/other"\n', "names module"),
    "nul-byte": (b"module example.com/m\n// \x00\n", "NUL byte"),
    "control-character": (b"module example.com/m\n\x01\n", "unexpected character"),
    "non-breaking-space": ("module example.com/m\n\u00a0\n".encode(), "unexpected character"),
    "block-comment": (b"module example.com/m /* c */\n", "/* comment"),
    "unterminated-block": (b"module example.com/m\nrequire (\n\trsc.io/quote v1.5.2\n", "unterminated block"),
    "text-after-close-paren": (b"require (\n) x\n", "expected newline after closing paren"),
    "unterminated-string": (b'module "example.com/m\n', "unexpected character"),
    "unterminated-raw-string": (b"foo `raw\nstring`\n", "unexpected character"),
    "raw-string-module-path": (b"module `example.com/m`\n", "cannot contain quote"),
    "single-quoted-module-path": (b"module 'example.com/m'\n", "cannot contain quote"),
    "bad-escape": (b'module "example.com/m\\q"\n', "invalid quoted string"),
    "repeated-module": (b"module example.com/m\nmodule example.com/m\n", "repeated module"),
    "module-two-args": (b"module example.com/m extra\n", "not exactly one argument"),
    "repeated-go": (b"go 1.21\ngo 1.22\n", "repeated go"),
    "bad-go-version": (b"go 1\n", "invalid go version"),
    "require-arity": (b"require rsc.io/quote\n", "usage: require"),
    "require-not-semver": (b"require rsc.io/quote master\n", "invalid requirement"),
    "require-major-mismatch": (b"require rsc.io/quote v2.0.0\n", "major version does not match"),
    "require-bad-path-major": (b"require rsc.io/quote/v1 v1.0.0\n", "invalid requirement"),
    "ignore-without-path": (b"ignore\n", "exactly one argument"),
    "junk": (b"\x89PNG\r\n\x1a\n", "unexpected character"),
}


@pytest.mark.parametrize(("data", "why"), INVALID_GOMODS.values(), ids=INVALID_GOMODS.keys())
def test_check_gomod_refuses_what_is_no_go_mod_for_the_module(data: bytes, why: str) -> None:
    with pytest.raises(InvalidContent) as e:
        check_gomod(data, M)
    assert why in str(e.value)
    assert "\n" not in str(e.value)


# --- check_list --------------------------------------------------------------------------------

@pytest.mark.parametrize("data", [
    b"", b"\n", b"v1.0.0\n", b"v1.0.0\nv1.1.0-pre\nv2.0.0+incompatible\n",
    b"v1.0.0 2019-01-01T00:00:00Z\nv1.1.0\t2020-01-01T00:00:00Z\n", b"v1.0.0\r\nv1.1.0\r\n",
    b"\n  \nv1.0.0\n\n", b"v1.0.0", b"v1\nv1.2\n",
], ids=["empty", "blank", "one", "several", "with-times", "crlf", "blank-lines", "no-final-newline", "short-forms"])
def test_check_list_accepts_version_lists(data: bytes) -> None:
    check_list(data)


@pytest.mark.parametrize(("data", "line"), [
    (BLOCK_PAGE, 1), (b"v1.0.0\njunk\n", 2), (b"latest\n", 1), (b"1.0.0\n", 1), (b"v1.0.0\nv1.0.0\x00\n", 2),
    (b'{"Version":"v1.0.0"}', 1), (b"v1.0.0\n v01.0.0\n", 2),
], ids=["html", "junk-line", "word", "no-v", "nul", "json", "leading-zero"])
def test_check_list_refuses_lines_that_are_no_version(data: bytes, line: int) -> None:
    with pytest.raises(InvalidContent, match=f"not a version list \\(line {line} "):
        check_list(data)


# --- check_info --------------------------------------------------------------------------------

def info(**fields: object) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(("data", "version"), [
    (info(Version="v1.0.0", Time="2019-01-01T00:00:00Z"), "v1.0.0"),
    (info(Version="v1.0.0"), "v1.0.0"),
    (info(Version="v1.2.3-0.20190101000000-abcdefabcdef"), None),
    (info(Version="v1.0.0", Time=None), None),
    (info(Version="v1.0.0", Time="2019-01-01T10:20:30.123456789+05:30"), None),
    (info(Version="v1.0.0", Time="2019-01-01T10:20:30,5-08:00"), None),
    (info(Version="v1.0.0", Time="2019-01-01T1:02:03Z"), None),
    (info(Version="v1.0.0", Time="2020-02-29T00:00:00Z"), None),
    (info(Version="v1.0.0", Time="2000-02-29T00:00:00Z"), None),
    (info(Version="v1.0.0", Name="abcdef", Short="abc", Tags=["v1.0.0"], Origin={"VCS": "git"}), None),
    (info(Version="v1.0.0", Tags=None, Origin=None, Extra=[1, {"a": 2}]), None),
], ids=["canonical", "no-time", "latest-pseudo", "null-time", "offset-and-nanos", "comma-fraction",
        "one-digit-hour", "leap-day", "leap-day-2000", "all-fields", "nulls-and-unknown"])
def test_check_info_accepts_rev_info(data: bytes, version: str | None) -> None:
    check_info(data, version)


@pytest.mark.parametrize(("data", "version", "why"), [
    (BLOCK_PAGE, None, "not JSON"),
    (b'{"Version":"v1.0.0"', None, "not JSON"),
    (b'{"Version":"v1.0.0","X":NaN}', None, "not JSON"),
    (b"[" * 100_000, None, "not JSON"),
    (b'["v1.0.0"]', None, "not a JSON object"),
    (info(Time="2019-01-01T00:00:00Z"), None, "no Version"),
    (info(Version=""), None, "no Version"),
    (info(Version=1), None, "no Version"),
    (info(Version="v1.0.1"), "v1.0.0", "Version is 'v1.0.1', not 'v1.0.0'"),
    (info(Version="v1.0.0", Time=1546300800), None, "malformed Time"),
    (info(Version="v1.0.0", Time="yesterday"), None, "malformed Time"),
    (info(Version="v1.0.0", Time="2019-01-01 00:00:00Z"), None, "malformed Time"),
    (info(Version="v1.0.0", Time="2019-01-01T00:00:00"), None, "malformed Time"),
    (info(Version="v1.0.0", Time="2019-02-29T00:00:00Z"), None, "malformed Time"),
    (info(Version="v1.0.0", Time="1900-02-29T00:00:00Z"), None, "malformed Time"),
    (info(Version="v1.0.0", Time="2019-04-31T00:00:00Z"), None, "malformed Time"),
    (info(Version="v1.0.0", Time="2019-01-01T24:00:00Z"), None, "malformed Time"),
    (info(Version="v1.0.0", Time="2019-01-01T00:00:00+25:00"), None, "malformed Time"),
    (info(Version="v1.0.0", Time="2019-01-01T00:00:00z"), None, "malformed Time"),
    (info(Version="v1.0.0", time="x"), None, "malformed time"),
    (info(Version="v1.0.0", Name=5), None, "malformed Name"),
    (info(Version="v1.0.0", Tags="v1.0.0"), None, "malformed Tags"),
    (info(Version="v1.0.0", Origin="git"), None, "malformed Origin"),
], ids=["html", "truncated", "nan", "too-deep", "array", "missing-version", "empty-version", "number-version",
        "other-version", "number-time", "word-time", "space-separator", "no-zone", "feb-29-2019", "feb-29-1900",
        "april-31", "hour-24", "zone-25", "lower-z", "lower-case-key", "number-name", "string-tags", "string-origin"])
def test_check_info_refuses_what_go_cannot_read_as_rev_info(data: bytes, version: str | None, why: str) -> None:
    with pytest.raises(InvalidContent) as e:
        check_info(data, version)
    assert why in str(e.value)
    assert "\n" not in str(e.value)
