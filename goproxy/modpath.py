"""Module paths and versions: "!" case escaping, golang.org/x/mod/module and semver rules."""

from __future__ import annotations

import re

from .errors import BadRequest, NotFound

_BAD_WINDOWS = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                *(f"lpt{i}" for i in range(1, 10))}
# Characters allowed in path elements, by kind of path (module.CheckPath, CheckImportPath,
# CheckFilePath); a file path also allows any non-ASCII letter.
_ELEM_CHARS = {"module": re.compile(r"[A-Za-z0-9._~-]*"), "import": re.compile(r"[A-Za-z0-9._~+-]*"),
               "file": re.compile(r"[A-Za-z0-9!#$%&()+,\-.=@\[\]^_{}~ ]*")}
_FIRST_CHARS = re.compile(r"[a-z0-9.-]*")
_TILDE_DIGITS = re.compile(r"~[0-9]+$")
_SURROGATE = re.compile("[\ud800-\udfff]")
_DIGITS = "0123456789"

_NUM = r"0|[1-9][0-9]*"
_IDENT = r"[0-9A-Za-z-]+"
_SEMVER = re.compile(
    rf"v(?P<major>{_NUM})(?:\.(?P<minor>{_NUM})(?:\.(?P<patch>{_NUM})"
    rf"(?:-(?P<pre>{_IDENT}(?:\.{_IDENT})*))?(?:\+(?P<build>{_IDENT}(?:\.{_IDENT})*))?)?)?"
)


def _bad(what: str, value: str, why: str) -> BadRequest:
    return BadRequest(f"invalid {what} {value!r}: {why}")


def _elem_problem(elem: str, kind: str) -> str | None:
    """Return why elem is not a valid element of a path of kind (module, import, file), or None."""
    if not elem:
        return "empty path element"
    if elem.count(".") == len(elem):
        return f"invalid path element {elem!r}"
    if elem[0] == "." and kind == "module":
        return "leading dot in path element"
    if elem[-1] == ".":
        return "trailing dot in path element"
    if not _ELEM_CHARS[kind].fullmatch(elem):
        for c in elem:
            if not (_ELEM_CHARS[kind].fullmatch(c) or (kind == "file" and not c.isascii() and c.isalpha())):
                return f"invalid char {c!r}"
    short = elem.split(".", 1)[0]
    if short.lower() in _BAD_WINDOWS:
        return f"{short!r} disallowed as path element component on Windows"
    if kind != "file" and _TILDE_DIGITS.search(short):
        return "trailing tilde and digits in path element"
    return None


def _path_problem(path: str, kind: str) -> str | None:
    """Return why path is not a valid path of kind (x/mod's checkPath), or None."""
    if _SURROGATE.search(path):
        return "invalid UTF-8"
    if not path:
        return "empty string"
    if path[0] == "-" and kind != "file":
        return "leading dash"
    if "//" in path:
        return "double slash"
    if path[-1] == "/":
        return "trailing slash"
    for elem in path.split("/"):
        why = _elem_problem(elem, kind)
        if why:
            return why
    return None


def split_path_version(path: str) -> tuple[str, str, bool]:
    """Split a module path into its prefix and major-version suffix (module.SplitPathVersion).

    Return (prefix, suffix, ok): "a.com/m/v2" gives ("a.com/m", "/v2", True), "gopkg.in/yaml.v2"
    gives ("gopkg.in/yaml", ".v2", True), a path without a suffix gives (path, "", True).
    ok is False for a malformed suffix ("/v1", "/v0", "/v2.0", "gopkg.in/x" with no ".vN").
    """
    if path.startswith("gopkg.in/"):
        i = len(path) - (len("-unstable") if path.endswith("-unstable") else 0)
        while i > 0 and path[i - 1] in _DIGITS:
            i -= 1
        if i <= 1 or path[i - 1] != "v" or path[i - 2] != ".":
            return path, "", False
        major = path[i - 2:]
        if len(major) <= 2 or (major[2] == "0" and major != ".v0"):
            return path, "", False
        return path[:i - 2], major, True
    i = len(path)
    dot = False
    while i > 0 and path[i - 1] in _DIGITS + ".":
        dot = dot or path[i - 1] == "."
        i -= 1
    if i <= 1 or i == len(path) or path[i - 1] != "v" or path[i - 2] != "/":
        return path, "", True
    major = path[i - 2:]
    if dot or len(major) <= 2 or major[2] == "0" or major == "/v1":
        return path, "", False
    return path[:i - 2], major, True


def check_path(path: str) -> None:
    """Check a module path by module.CheckPath's rules.

    Raises BadRequest naming the problem: an empty or non-ASCII path, a bad element, no dot
    in the first element, upper case or '_' in the first element, a malformed /vN suffix.
    """
    why = _path_problem(path, "module")
    if not why:
        first = path.split("/", 1)[0]
        if "." not in first:
            why = "missing dot in first path element"
        elif not _FIRST_CHARS.fullmatch(first):
            why = f"invalid char {next(c for c in first if not _FIRST_CHARS.fullmatch(c))!r} in first path element"
        elif not split_path_version(path)[2]:
            why = "invalid version suffix"
    if why:
        raise _bad("module path", path, why)


def check_import_path(path: str) -> None:
    """Check an import path by module.CheckImportPath's rules ('+' allowed); raise BadRequest."""
    why = _path_problem(path, "import")
    if why:
        raise _bad("import path", path, why)


def check_file_path(path: str) -> None:
    """Check a slash-separated file path inside a module by module.CheckFilePath's rules.

    Leading dots, a leading '-', more punctuation and non-ASCII letters are allowed;
    empty, '.' and '..' elements, reserved Windows names and invalid UTF-8 (a lone surrogate,
    as surrogateescape decoding leaves it) are not. Raises BadRequest.
    """
    why = _path_problem(path, "file")
    if why:
        raise _bad("file path", path, why)


def escape_case(s: str) -> str:
    """Return s with each upper-case letter written as "!" and its lower case; s is not checked."""
    return re.sub(r"[A-Z]", lambda m: "!" + m.group(0).lower(), s)


def _unescape(s: str) -> str | None:
    if not s.isascii() or re.search(r"[A-Z]|![^a-z]|!$", s):
        return None
    return re.sub(r"!([a-z])", lambda m: m.group(1).upper(), s)


def escape_path(path: str) -> str:
    """Return the case-escaped form of a module path ("github.com/!azure/x"); raise BadRequest."""
    check_path(path)
    return escape_case(path)


def unescape_path(escaped: str) -> str:
    """Decode the case-escaped form of a module path and check the result.

    Raises BadRequest for upper case, a '!' not before a lower-case letter, or an invalid path.
    """
    path = _unescape(escaped)
    if path is None:
        raise _bad("escaped module path", escaped, "upper case or misplaced '!'")
    check_path(path)
    return path


def _check_version_elem(v: str) -> None:
    why = _elem_problem(v, "file") or ("non-ASCII character" if not v.isascii() else None)
    if why or "!" in v:
        raise _bad("version", v, why or "disallowed version string")


def escape_version(v: str) -> str:
    """Return the case-escaped form of a version ("v1.0.0-!r!c1"); raise BadRequest if invalid.

    A version must be a valid ASCII file name without '!' (module.EscapeVersion).
    """
    _check_version_elem(v)
    return escape_case(v)


def unescape_version(escaped: str) -> str:
    """Decode an escaped version; raise BadRequest for upper case, a stray '!' or an invalid name."""
    v = _unescape(escaped)
    if v is None:
        raise _bad("escaped version", escaped, "upper case or misplaced '!'")
    _check_version_elem(v)
    return v


def _pre_ok(pre: str | None) -> bool:
    # Numeric prerelease identifiers must not have leading zeros.
    return pre is None or all(not (p.isdigit() and len(p) > 1 and p[0] == "0") for p in pre.split("."))


def is_canonical(version: str) -> bool:
    """Report whether version is a full semantic version (v1.2.3, v1.2.3-pre, v2.0.0+incompatible).

    This is module.CanonicalVersion(v) == v: no "v1"/"v1.2" shorthand, no build metadata
    except "+incompatible".
    """
    m = _SEMVER.fullmatch(version)
    if not m or m.group("patch") is None or not _pre_ok(m.group("pre")):
        return False
    return m.group("build") in (None, "incompatible")


def _semver_key(version: str) -> tuple[int, int, int, int, tuple[tuple[int, int, str], ...]] | None:
    """Return a sort key for a valid semantic version, or None for an invalid one.

    "v1" and "v1.2" are shorthands for v1.0.0 and v1.2.0; build metadata is ignored; a version
    without a prerelease sorts after every prerelease of it, as semver.Compare has it.
    """
    m = _SEMVER.fullmatch(version)
    if not m or not _pre_ok(m.group("pre")):
        return None
    pre = m.group("pre")
    fields = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")) if pre else ()
    return (int(m.group("major")), int(m.group("minor") or 0), int(m.group("patch") or 0),
            0 if pre else 1, fields)


def is_valid_version(version: str) -> bool:
    """Report whether version is a valid semantic version (semver.IsValid; "v1" and "v1.2" count)."""
    return _semver_key(version) is not None


def compare_versions(a: str, b: str) -> int:
    """Return -1, 0 or 1 as version a sorts before, equal to or after b (semver.Compare).

    An invalid version sorts before every valid one, and two invalid versions are equal.
    """
    ka, kb = _semver_key(a), _semver_key(b)
    if ka is None or kb is None:
        return (ka is not None) - (kb is not None)
    return (ka > kb) - (ka < kb)


def _path_major_problem(version: str, path_major: str) -> str | None:
    """Return why version cannot belong to a path with suffix path_major, or None."""
    if path_major.startswith(".v") and path_major.endswith("-unstable"):
        path_major = path_major[:-len("-unstable")]
    if version.startswith("v0.0.0-") and path_major == ".v1":
        return None  # old v0 pseudo-versions of gopkg.in/x.v1 stay acceptable
    m = _SEMVER.fullmatch(version)
    major = "v" + m.group("major") if m and _pre_ok(m.group("pre")) else ""
    if not path_major:
        if major in ("v0", "v1") or (major and m and m.group("build") == "incompatible"):
            return None
        want = "v0 or v1"
    elif path_major[0] not in "/.":
        want = path_major  # a suffix without its separator matches nothing
    else:
        want = path_major[1:]
        if major == want:
            return None
    return f"should be {want}, not {major}"


def check_path_major(version: str, path_major: str) -> None:
    """Check that version suits a module whose path ends in path_major (module.CheckPathMajor).

    path_major is a suffix as split_path_version returns it: "", "/v2", ".v1", ".v1-unstable".
    No suffix takes v0, v1 and +incompatible versions; "/vN" and ".vN" take vN only, except
    that ".v1" also takes v0.0.0- pseudo-versions. Raises NotFound ("should be v2, not v1").
    """
    why = _path_major_problem(version, path_major)
    if why:
        raise NotFound(f"invalid version {version!r}: {why}")


def match_path_major(version: str, path_major: str) -> bool:
    """Report whether check_path_major accepts version for path_major (module.MatchPathMajor)."""
    return _path_major_problem(version, path_major) is None


def check_version(path: str, version: str) -> None:
    """Check that version is a canonical version module path can have.

    Raises BadRequest for a version that is not canonical, and NotFound (so the go command
    moves on to its next GOPROXY entry, as proxy.golang.org answers) for a well-formed version
    that disagrees with the path's major-version suffix or a misplaced +incompatible.
    """
    if not is_canonical(version):
        raise _bad("version", version, "not a canonical semantic version (want e.g. v1.2.3)")
    _, path_major, _ = split_path_version(path)
    if version.endswith("+incompatible") and (path_major or version.startswith(("v0.", "v1."))):
        raise NotFound(f"{path}@{version}: invalid version: +incompatible only applies to v2+ "
                       "of a module without a /vN suffix")
    why = _path_major_problem(version, path_major)
    if why:
        raise NotFound(f"{path}@{version}: invalid version: {why}")


def check_query(query: str) -> None:
    """Check a version query (branch, "v1", commit hash) as an .info request may carry it.

    Raises BadRequest unless it is 1 to 255 characters of [A-Za-z0-9._+~-], not starting
    with '-' or '.', without "..".
    """
    if not 1 <= len(query) <= 255:
        raise _bad("version query", query, "must be 1 to 255 bytes")
    if query[0] in "-." or ".." in query:
        raise _bad("version query", query, "leading '-' or '.', or '..'")
    if not re.fullmatch(r"[A-Za-z0-9._+~-]+", query):
        raise _bad("version query", query, "invalid character")
