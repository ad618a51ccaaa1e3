"""Tests for goproxy.modpath: the test vectors of golang.org/x/mod/module and semver, as data."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from goproxy.errors import BadRequest, NotFound
from goproxy.modpath import (
    check_file_path,
    check_import_path,
    check_path,
    check_path_major,
    check_version,
    compare_versions,
    escape_path,
    escape_version,
    is_canonical,
    is_valid_version,
    match_path_major,
    split_path_version,
    unescape_path,
    unescape_version,
)
from goproxy.request import Artifact, parse_request, stored_artifact

# module_test.go checkPathTests: (path, CheckPath ok, CheckImportPath ok, CheckFilePath ok).
# Go's "x.y/\xFFz" (invalid UTF-8) is written as the lone surrogate that surrogateescape
# decoding leaves for the byte 0xFF. Rows marked * follow the newer module.go vendored in the
# go toolchain (x/mod v0.36), which differs from the stored test file: import paths may have
# '+' and leading dots, and a file path may start with '-'.
CHECK_PATH = [
    ("x.y/z", True, True, True),
    ("x.y", True, True, True),
    ("", False, False, False),
    ("x.y/\udcffz", False, False, False),
    ("/x.y/z", False, False, False),
    ("x./z", False, False, False),
    (".x/z", False, True, True),  # *
    ("-x/z", False, False, True),  # *
    ("x..y/z", True, True, True),
    ("x.y/z/../../w", False, False, False),
    ("x.y//z", False, False, False),
    ("x.y/z//w", False, False, False),
    ("x.y/z/", False, False, False),
    ("x.y/z/v0", False, True, True),
    ("x.y/z/v1", False, True, True),
    ("x.y/z/v2", True, True, True),
    ("x.y/z/v2.0", False, True, True),
    ("X.y/z", False, True, True),
    ("!x.y/z", False, False, True),
    ("_x.y/z", False, True, True),
    ("x.y!/z", False, False, True),
    ('x.y"/z', False, False, False),
    ("x.y#/z", False, False, True),
    ("x.y$/z", False, False, True),
    ("x.y%/z", False, False, True),
    ("x.y&/z", False, False, True),
    ("x.y'/z", False, False, False),
    ("x.y(/z", False, False, True),
    ("x.y)/z", False, False, True),
    ("x.y*/z", False, False, False),
    ("x.y+/z", False, True, True),  # *
    ("x.y,/z", False, False, True),
    ("x.y-/z", True, True, True),
    ("x.y./zt", False, False, False),
    ("x.y:/z", False, False, False),
    ("x.y;/z", False, False, False),
    ("x.y</z", False, False, False),
    ("x.y=/z", False, False, True),
    ("x.y>/z", False, False, False),
    ("x.y?/z", False, False, False),
    ("x.y@/z", False, False, True),
    ("x.y[/z", False, False, True),
    ("x.y\\/z", False, False, False),
    ("x.y]/z", False, False, True),
    ("x.y^/z", False, False, True),
    ("x.y_/z", False, True, True),
    ("x.y`/z", False, False, False),
    ("x.y{/z", False, False, True),
    ("x.y}/z", False, False, True),
    ("x.y~/z", False, True, True),
    ("x.y/z!", False, False, True),
    ('x.y/z"', False, False, False),
    ("x.y/z#", False, False, True),
    ("x.y/z$", False, False, True),
    ("x.y/z%", False, False, True),
    ("x.y/z&", False, False, True),
    ("x.y/z'", False, False, False),
    ("x.y/z(", False, False, True),
    ("x.y/z)", False, False, True),
    ("x.y/z*", False, False, False),
    ("x.y/z+", False, True, True),  # *
    ("x.y/z,", False, False, True),
    ("x.y/z-", True, True, True),
    ("x.y/z.t", True, True, True),
    ("x.y/z/t", True, True, True),
    ("x.y/z:", False, False, False),
    ("x.y/z;", False, False, False),
    ("x.y/z<", False, False, False),
    ("x.y/z=", False, False, True),
    ("x.y/z>", False, False, False),
    ("x.y/z?", False, False, False),
    ("x.y/z@", False, False, True),
    ("x.y/z[", False, False, True),
    ("x.y/z\\", False, False, False),
    ("x.y/z]", False, False, True),
    ("x.y/z^", False, False, True),
    ("x.y/z_", True, True, True),
    ("x.y/z`", False, False, False),
    ("x.y/z{", False, False, True),
    ("x.y/z}", False, False, True),
    ("x.y/z~", True, True, True),
    ("x.y/x.foo", True, True, True),
    ("x.y/aux.foo", False, False, False),
    ("x.y/prn", False, False, False),
    ("x.y/prn2", True, True, True),
    ("x.y/com", True, True, True),
    ("x.y/com1", False, False, False),
    ("x.y/com1.txt", False, False, False),
    ("x.y/calm1", True, True, True),
    ("x.y/z~0", False, False, True),
    ("x.y/z~09", False, False, True),
    ("x.y/z09", True, True, True),
    ("x.y/z09~", True, True, True),
    ("x.y/z09~09z", True, True, True),
    ("x.y/z09~09z~09", False, False, True),
    ("github.com/!123/logrus", False, False, True),
    ("github.com/user/unicode/испытание", False, False, True),
    ("../x", False, False, False),
    ("./y", False, False, False),
    ("x:y", False, False, False),
    ("\\temp\\foo", False, False, False),
    (".gitignore", False, True, True),  # *
    (".github/ISSUE_TEMPLATE", False, True, True),  # *
    ("x☺y", False, False, False),
]
CHECK_PATH_IDS = [ascii(p) for p, *_ in CHECK_PATH]
INVALID_MODULE_PATHS = [p for p, ok, _, _ in CHECK_PATH if not ok]


@pytest.mark.parametrize(("path", "ok"), [(p, ok) for p, ok, _, _ in CHECK_PATH], ids=CHECK_PATH_IDS)
def test_check_path_accepts_exactly_what_x_mod_accepts(path: str, ok: bool) -> None:
    if ok:
        check_path(path)
    else:
        with pytest.raises(BadRequest, match="invalid module path"):
            check_path(path)


@pytest.mark.parametrize(("path", "ok"), [(p, ok) for p, _, ok, _ in CHECK_PATH], ids=CHECK_PATH_IDS)
def test_check_import_path_accepts_exactly_what_x_mod_accepts(path: str, ok: bool) -> None:
    if ok:
        check_import_path(path)
    else:
        with pytest.raises(BadRequest, match="invalid import path"):
            check_import_path(path)


@pytest.mark.parametrize(("path", "ok"), [(p, ok) for p, _, _, ok in CHECK_PATH], ids=CHECK_PATH_IDS)
def test_check_file_path_accepts_exactly_what_x_mod_accepts(path: str, ok: bool) -> None:
    if ok:
        check_file_path(path)
    else:
        with pytest.raises(BadRequest, match="invalid file path"):
            check_file_path(path)


@pytest.mark.parametrize(("path", "why"), [
    ("x.y/con", "disallowed as path element component on Windows"),
    ("x.y/z~1", "trailing tilde and digits"),
    ("x.y/.z", "leading dot"),
    ("x.y/z.", "trailing dot"),
    ("x.y/..", "invalid path element"),
    ("xy/z", "missing dot in first path element"),
    ("X.y/z", "invalid char 'X' in first path element"),
    ("x.y/z/v1", "invalid version suffix"),
    ("x.y/\udcffz", "invalid UTF-8"),
    ("x.y/z☺", "invalid char '☺'"),
], ids=ascii)
def test_check_path_message_names_the_problem(path: str, why: str) -> None:
    with pytest.raises(BadRequest) as e:
        check_path(path)
    assert why in str(e.value)
    assert "\n" not in str(e.value)


# module_test.go splitPathVersionTests: (prefix, major-version suffix).
SPLIT = [
    ("x.y/z", ""),
    ("x.y/z", "/v2"),
    ("x.y/z", "/v3"),
    ("x.y/v", ""),
    ("gopkg.in/yaml", ".v0"),
    ("gopkg.in/yaml", ".v1"),
    ("gopkg.in/yaml", ".v2"),
    ("gopkg.in/yaml", ".v3"),
]


@pytest.mark.parametrize(("prefix", "major"), SPLIT, ids=[p + m for p, m in SPLIT])
def test_split_path_version_splits_off_the_major_suffix(prefix: str, major: str) -> None:
    assert split_path_version(prefix + major) == (prefix, major, True)


@pytest.mark.parametrize("path", [p for p, *_ in CHECK_PATH], ids=CHECK_PATH_IDS)
def test_split_path_version_parts_add_up_to_the_path(path: str) -> None:
    prefix, major, _ = split_path_version(path)
    assert prefix + major == path


# The gopkg.in branch of SplitPathVersion (module.go's splitGopkgIn), case by case.
GOPKG_SPLIT = [
    ("gopkg.in/yaml.v2", ("gopkg.in/yaml", ".v2", True)),
    ("gopkg.in/yaml.v10", ("gopkg.in/yaml", ".v10", True)),
    ("gopkg.in/yaml.v1-unstable", ("gopkg.in/yaml", ".v1-unstable", True)),
    ("gopkg.in/go-yaml/yaml.v3", ("gopkg.in/go-yaml/yaml", ".v3", True)),
    ("gopkg.in/yaml", ("gopkg.in/yaml", "", False)),
    ("gopkg.in/yaml.v", ("gopkg.in/yaml.v", "", False)),
    ("gopkg.in/yaml.v01", ("gopkg.in/yaml.v01", "", False)),
    ("gopkg.in/yaml/v2", ("gopkg.in/yaml/v2", "", False)),
    ("gopkg.in/yaml.v2-beta", ("gopkg.in/yaml.v2-beta", "", False)),
    ("gopkg.in/yaml.v²", ("gopkg.in/yaml.v²", "", False)),
    ("x.y/z/v²", ("x.y/z/v²", "", True)),
]


@pytest.mark.parametrize(("path", "want"), GOPKG_SPLIT, ids=[p for p, _ in GOPKG_SPLIT])
def test_split_path_version_handles_gopkg_in_suffixes(path: str, want: tuple[str, str, bool]) -> None:
    assert split_path_version(path) == want


@pytest.mark.parametrize("path", ["gopkg.in/yaml", "gopkg.in/yaml/v2", "gopkg.in/yaml.v01"])
def test_check_path_rejects_gopkg_in_paths_without_a_dot_v_suffix(path: str) -> None:
    with pytest.raises(BadRequest, match="invalid version suffix"):
        check_path(path)


@pytest.mark.parametrize("path", ["gopkg.in/yaml.v2", "gopkg.in/yaml.v1-unstable", "gopkg.in/check.v1"])
def test_check_path_accepts_gopkg_in_paths(path: str) -> None:
    check_path(path)


# module_test.go escapeTests: (path, escaped form).
ESCAPE = [
    ("ascii.com/abcdefghijklmnopqrstuvwxyz.-/~_0123456789", "ascii.com/abcdefghijklmnopqrstuvwxyz.-/~_0123456789"),
    ("github.com/GoogleCloudPlatform/omega", "github.com/!google!cloud!platform/omega"),
]

# module_test.go badUnescape.
BAD_UNESCAPE = [
    "github.com/GoogleCloudPlatform/omega",
    "github.com/!google!cloud!platform!/omega",
    "github.com/!0google!cloud!platform/omega",
    "github.com/!_google!cloud!platform/omega",
    "github.com/!!google!cloud!platform/omega",
    "",
]


@pytest.mark.parametrize(("path", "escaped"), ESCAPE, ids=[p for p, _ in ESCAPE])
def test_escape_path_lowers_upper_case_behind_a_bang(path: str, escaped: str) -> None:
    assert escape_path(path) == escaped


@pytest.mark.parametrize(("path", "escaped"), ESCAPE, ids=[p for p, _ in ESCAPE])
def test_unescape_path_restores_the_path(path: str, escaped: str) -> None:
    assert unescape_path(escaped) == path


@pytest.mark.parametrize("path", INVALID_MODULE_PATHS, ids=ascii)
def test_escape_path_rejects_invalid_module_paths(path: str) -> None:
    with pytest.raises(BadRequest):
        escape_path(path)


@pytest.mark.parametrize("escaped", INVALID_MODULE_PATHS + BAD_UNESCAPE, ids=ascii)
def test_unescape_path_rejects_bad_escapes_and_invalid_paths(escaped: str) -> None:
    with pytest.raises(BadRequest):
        unescape_path(escaped)


# EscapeVersion/UnescapeVersion have no table in module_test.go; these follow module.go:
# a version must be one valid file-path element, ASCII, without '!'.
ESCAPE_VERSION = [
    ("v1.0.0", "v1.0.0"),
    ("v1.0.0-RC1", "v1.0.0-!r!c1"),
    ("v2.0.0+incompatible", "v2.0.0+incompatible"),
    ("v1.2.3-Beta.1+Meta", "v1.2.3-!beta.1+!meta"),
    ("master", "master"),
    ("Release_1", "!release_1"),
]
BAD_VERSIONS = ["", "v1.0.0!", "v1/0", "..", ".", "v1.0.", "con", "aux.v1", "v1:0", "v1*", "испытание", "v1\\0"]
BAD_ESCAPED_VERSIONS = ["v1.0.0-RC1", "v1.0.0-!!rc", "v1.0.0!", "v1.0.0-!1", "v1.0.0-!_", "vé"]


@pytest.mark.parametrize(("version", "escaped"), ESCAPE_VERSION, ids=[v for v, _ in ESCAPE_VERSION])
def test_escape_version_round_trips(version: str, escaped: str) -> None:
    assert escape_version(version) == escaped
    assert unescape_version(escaped) == version


@pytest.mark.parametrize("version", BAD_VERSIONS, ids=ascii)
def test_escape_version_rejects_what_is_no_file_name(version: str) -> None:
    with pytest.raises(BadRequest):
        escape_version(version)


@pytest.mark.parametrize("escaped", BAD_VERSIONS + BAD_ESCAPED_VERSIONS, ids=ascii)
def test_unescape_version_rejects_bad_escapes_and_bad_names(escaped: str) -> None:
    with pytest.raises(BadRequest):
        unescape_version(escaped)


# module_test.go checkTests: (path, version, ok) for module.Check; check_path plus
# check_version is the server's form of it (canonical versions only).
CHECK = [
    ("rsc.io/quote", "0.1.0", False),
    ("rsc io/quote", "v1.0.0", False),
    ("github.com/go-yaml/yaml", "v0.8.0", True),
    ("github.com/go-yaml/yaml", "v1.0.0", True),
    ("github.com/go-yaml/yaml", "v2.0.0", False),
    ("github.com/go-yaml/yaml", "v2.1.5", False),
    ("github.com/go-yaml/yaml", "v3.0.0", False),
    ("github.com/go-yaml/yaml/v2", "v1.0.0", False),
    ("github.com/go-yaml/yaml/v2", "v2.0.0", True),
    ("github.com/go-yaml/yaml/v2", "v2.1.5", True),
    ("github.com/go-yaml/yaml/v2", "v3.0.0", False),
    ("gopkg.in/yaml.v0", "v0.8.0", True),
    ("gopkg.in/yaml.v0", "v1.0.0", False),
    ("gopkg.in/yaml.v0", "v2.0.0", False),
    ("gopkg.in/yaml.v0", "v2.1.5", False),
    ("gopkg.in/yaml.v0", "v3.0.0", False),
    ("gopkg.in/yaml.v1", "v0.8.0", False),
    ("gopkg.in/yaml.v1", "v1.0.0", True),
    ("gopkg.in/yaml.v1", "v2.0.0", False),
    ("gopkg.in/yaml.v1", "v2.1.5", False),
    ("gopkg.in/yaml.v1", "v3.0.0", False),
    ("gopkg.in/check.v1", "v0.0.0", False),
    ("gopkg.in/check.v1", "v0.0.0-20160102150405-abcdef123456", True),
    ("gopkg.in/yaml.v2", "v1.0.0", False),
    ("gopkg.in/yaml.v2", "v2.0.0", True),
    ("gopkg.in/yaml.v2", "v2.1.5", True),
    ("gopkg.in/yaml.v2", "v3.0.0", False),
    ("rsc.io/quote", "v17.0.0", False),
    ("rsc.io/quote", "v17.0.0+incompatible", True),
]


@pytest.mark.parametrize(("path", "version", "ok"), CHECK, ids=[f"{p}@{v}" for p, v, _ in CHECK])
def test_check_path_and_version_accept_exactly_what_module_check_accepts(path: str, version: str, ok: bool) -> None:
    if ok:
        check_path(path)
        check_version(path, version)
    else:
        with pytest.raises((BadRequest, NotFound)):
            check_path(path)
            check_version(path, version)


@pytest.mark.parametrize(("path", "version"), [
    ("github.com/go-yaml/yaml", "v2.0.0"), ("github.com/go-yaml/yaml/v2", "v1.0.0"),
    ("gopkg.in/yaml.v2", "v3.0.0"), ("gopkg.in/yaml.v1", "v0.8.0"), ("gopkg.in/check.v1", "v0.0.0"),
    ("rsc.io/quote", "v17.0.0"),
])
def test_check_version_answers_not_found_for_a_major_version_mismatch(path: str, version: str) -> None:
    with pytest.raises(NotFound, match="should be"):
        check_version(path, version)


@pytest.mark.parametrize(("path", "version"), [
    ("rsc.io/quote", "v1.0.0+incompatible"),
    ("rsc.io/quote", "v0.1.0+incompatible"),
    ("rsc.io/quote/v2", "v2.0.0+incompatible"),
    ("gopkg.in/yaml.v2", "v2.0.0+incompatible"),
])
def test_check_version_refuses_incompatible_where_it_cannot_apply(path: str, version: str) -> None:
    with pytest.raises(NotFound, match=r"\+incompatible"):
        check_version(path, version)


@pytest.mark.parametrize("version", ["0.1.0", "v1", "v1.2", "v1.2.3+meta", "v1.02.3", "latest"])
def test_check_version_answers_bad_request_for_a_non_canonical_version(version: str) -> None:
    with pytest.raises(BadRequest, match="not a canonical"):
        check_version("rsc.io/quote", version)


# module_test.go TestMatchPathMajor: (version, path major suffix, match).
MATCH_PATH_MAJOR = [
    ("v0.0.0", "", True),
    ("v0.0.0", "/v2", False),
    ("v0.0.0", ".v0", True),
    ("v0.0.0-20190510104115-cbcb75029529", ".v1", True),
    ("v1.0.0", "/v2", False),
    ("v1.0.0", ".v1", True),
    ("v1.0.0", ".v1-unstable", True),
    ("v2.0.0+incompatible", "", True),
    ("v2.0.0", "", False),
    ("v2.0.0", "/v2", True),
    ("v2.0.0", ".v2", True),
]


@pytest.mark.parametrize(("version", "path_major", "want"), MATCH_PATH_MAJOR,
                         ids=[f"{v}{m or '-none'}" for v, m, _ in MATCH_PATH_MAJOR])
def test_match_path_major_follows_x_mod_table(version: str, path_major: str, want: bool) -> None:
    assert match_path_major(version, path_major) is want


@pytest.mark.parametrize(("version", "path_major", "want"), MATCH_PATH_MAJOR,
                         ids=[f"{v}{m or '-none'}" for v, m, _ in MATCH_PATH_MAJOR])
def test_check_path_major_raises_not_found_exactly_on_mismatch(version: str, path_major: str, want: bool) -> None:
    if want:
        check_path_major(version, path_major)
    else:
        with pytest.raises(NotFound, match=f"should be {path_major[1:] or 'v0 or v1'}, not v"):
            check_path_major(version, path_major)


@pytest.mark.parametrize(("path", "want"), [
    ("/gopkg.in/yaml.v2/@v/v2.4.0.info", Artifact("info", "gopkg.in/yaml.v2", "v2.4.0")),
    ("/gopkg.in/yaml.v2/@v/v2.4.0.zip", Artifact("zip", "gopkg.in/yaml.v2", "v2.4.0")),
    ("/gopkg.in/check.v1/@v/v0.0.0-20160102150405-abcdef123456.mod",
     Artifact("mod", "gopkg.in/check.v1", "v0.0.0-20160102150405-abcdef123456")),
    ("/gopkg.in/yaml.v1-unstable/@v/v1.0.0.mod", Artifact("mod", "gopkg.in/yaml.v1-unstable", "v1.0.0")),
    ("/gopkg.in/yaml.v2/@v/list", Artifact("list", "gopkg.in/yaml.v2")),
], ids=lambda x: x if isinstance(x, str) else "")
def test_parse_request_accepts_gopkg_in_modules(path: str, want: Artifact) -> None:
    assert parse_request(path) == want


@pytest.mark.parametrize(("path", "error"), [
    ("/gopkg.in/yaml.v2/@v/v3.0.0.zip", NotFound),
    ("/gopkg.in/yaml.v1/@v/v0.8.0.mod", NotFound),
    ("/gopkg.in/yaml/@v/list", BadRequest),
    ("/gopkg.in/yaml.v01/@v/list", BadRequest),
])
def test_parse_request_refuses_gopkg_in_mismatches(path: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_request(path)


# semver_test.go tests: (input, canonical form or "" when invalid), in ascending order.
SEMVER = [
    ("bad", ""),
    ("v1-alpha.beta.gamma", ""),
    ("v1-pre", ""),
    ("v1+meta", ""),
    ("v1-pre+meta", ""),
    ("v1.2-pre", ""),
    ("v1.2+meta", ""),
    ("v1.2-pre+meta", ""),
    ("v1.0.0-alpha", "v1.0.0-alpha"),
    ("v1.0.0-alpha.1", "v1.0.0-alpha.1"),
    ("v1.0.0-alpha.beta", "v1.0.0-alpha.beta"),
    ("v1.0.0-beta", "v1.0.0-beta"),
    ("v1.0.0-beta.2", "v1.0.0-beta.2"),
    ("v1.0.0-beta.11", "v1.0.0-beta.11"),
    ("v1.0.0-rc.1", "v1.0.0-rc.1"),
    ("v1", "v1.0.0"),
    ("v1.0", "v1.0.0"),
    ("v1.0.0", "v1.0.0"),
    ("v1.2", "v1.2.0"),
    ("v1.2.0", "v1.2.0"),
    ("v1.2.3-456", "v1.2.3-456"),
    ("v1.2.3-456.789", "v1.2.3-456.789"),
    ("v1.2.3-456-789", "v1.2.3-456-789"),
    ("v1.2.3-456a", "v1.2.3-456a"),
    ("v1.2.3-pre", "v1.2.3-pre"),
    ("v1.2.3-pre+meta", "v1.2.3-pre"),
    ("v1.2.3-pre.1", "v1.2.3-pre.1"),
    ("v1.2.3-zzz", "v1.2.3-zzz"),
    ("v1.2.3", "v1.2.3"),
    ("v1.2.3+meta", "v1.2.3"),
    ("v1.2.3+meta-pre", "v1.2.3"),
    ("v1.2.3+meta-pre.sha.256a", "v1.2.3"),
]


@pytest.mark.parametrize(("version", "canonical"), SEMVER, ids=[v for v, _ in SEMVER])
def test_is_valid_version_follows_semver_table(version: str, canonical: str) -> None:
    assert is_valid_version(version) is (canonical != "")


@pytest.mark.parametrize(("version", "canonical"), SEMVER, ids=[v for v, _ in SEMVER])
def test_is_canonical_holds_only_for_the_canonical_form(version: str, canonical: str) -> None:
    assert is_canonical(version) is (version == canonical)


@pytest.mark.parametrize("version", ["v2.0.0+incompatible", "v0.0.0-20160102150405-abcdef123456"])
def test_is_canonical_accepts_incompatible_and_pseudo_versions(version: str) -> None:
    assert is_canonical(version)


@pytest.mark.parametrize("version", ["v1.2.3-01", "v01.2.3", "v1.2.3-", "v1.2.3+", "V1.2.3", "v1.2.3-a..b"])
def test_is_valid_version_rejects_malformed_numbers_and_identifiers(version: str) -> None:
    assert not is_valid_version(version)


@pytest.mark.parametrize(("i", "a"), list(enumerate(SEMVER)), ids=[v for v, _ in SEMVER])
def test_compare_versions_orders_the_semver_table(i: int, a: tuple[str, str]) -> None:
    # semver_test.go TestCompare: equal canonical forms compare equal, else table order decides.
    for j, b in enumerate(SEMVER):
        want = 0 if a[1] == b[1] else (-1 if i < j else 1)
        assert compare_versions(a[0], b[0]) == want, (a[0], b[0])


@pytest.mark.parametrize(("a", "b", "want"), [
    ("v1", "v1", 0),
    ("v2", "v1", 1),
    ("v1", "v2", -1),
    ("v1.19", "v1.2", 1),
    ("v1.2", "v1.19", -1),
])
def test_compare_versions_compares_numbers_not_strings(a: str, b: str, want: int) -> None:
    assert compare_versions(a, b) == want


_ELEM = st.text(alphabet="abcXYZ019._~-", min_size=1, max_size=8)


@given(st.lists(_ELEM, min_size=1, max_size=4))
def test_escape_then_unescape_returns_every_valid_path(elems: list[str]) -> None:
    path = "example.com/" + "/".join(elems)
    try:
        check_path(path)
    except BadRequest:
        return
    escaped = escape_path(path)
    assert escaped == escaped.lower()
    assert unescape_path(escaped) == path


_VERSION = st.from_regex(r"v(0|[1-9][0-9]?)(\.(0|[1-9])(\.(0|[1-9])(-[0-9a-z]{1,3}(\.[0-9a-z]{1,3})?)?)?)?",
                         fullmatch=True)


@given(_VERSION, _VERSION)
def test_compare_versions_is_antisymmetric(a: str, b: str) -> None:
    assert compare_versions(a, b) == -compare_versions(b, a)


@pytest.mark.parametrize("key,want", [
    ("github.com/!azure/x/@v/v1.2.3.zip", ("zip", "github.com/Azure/x", "v1.2.3")),
    ("example.com/m/@v/v1.0.0.mod", ("mod", "example.com/m", "v1.0.0")),
    ("example.com/m/@v/list", ("list", "example.com/m", "")),
    ("example.com/m/@latest", ("latest", "example.com/m", "")),
    ("example.com/m/@v/master.info", ("info", "example.com/m", "master")),
    ("example.com/m/@v/v1.0.0.zip.part", None),
    ("example.com/m/@v/v1.0.0.zip.1a2b3c4d.part", None),
    ("example.com/m/@v/list.1a2b3c4d.part", None),
    ("sumdb/sum.golang.org/lookup/example.com/m@v1.0.0", None),
    ("github.com/Azure/x/@v/v1.2.3.zip", None),  # not the escaped form
    (".usage.db", None),
    (".locks/0a1b", None),
], ids=lambda v: str(v))
def test_stored_artifact_names_module_files_and_nothing_else(key: str, want: tuple[str, str, str] | None) -> None:
    art = stored_artifact(key)
    assert (None if art is None else (art.kind, art.module, art.version)) == want
