"""Content checks of upstream answers: nothing that cannot be what was asked for enters the cache."""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
import zipfile
from typing import BinaryIO

from . import modpath
from .errors import BadRequest

MAX_ZIP_FILE = 500 << 20  # x/mod/zip MaxZipFile: the zip file, and its total uncompressed size
MAX_GO_MOD = 16 << 20  # x/mod/zip MaxGoMod: the go.mod at the module root
MAX_LICENSE = 16 << 20  # x/mod/zip MaxLICENSE: the LICENSE at the module root

_ZIP_STARTS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; the end record of an empty zip
_GO_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # what Go's archive/zip can open
# Patterns of the WHATWG MIME sniffing algorithm for HTML (net/http.DetectContentType has them too).
_HTML_START = re.compile(rb"<(?:!doctype html|html|head|script|iframe|h1|div|font|table|a|style|title|b|body|br|p)"
                         rb"[ >]|<!--|<\?xml", re.IGNORECASE)
_GO_SPACE = re.compile("[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")
_RFC3339 = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{1,2}):([0-9]{2}):([0-9]{2})(?:[.,][0-9]+)?"
                      r"(?:Z|[+-]([0-9]{2}):([0-9]{2}))")
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class InvalidContent(ValueError):
    """An upstream answer that cannot be what was asked for; the message is one line naming why."""


def shown(head: bytes) -> str:
    """Return the first 15 bytes of head quoted as text, for a message naming what a body starts with."""
    return repr(head[:15].decode("ascii", "backslashreplace"))


def looks_like_html(content_type: str, head: bytes) -> bool:
    """Report whether an answer is an HTML (or XML) page, such as a captive portal's block page.

    True for a text/html or XHTML content type, or a body whose first bytes (after a byte
    order mark and whitespace) open an HTML document, a common HTML element, a comment or
    an XML declaration. No module zip, go.mod, list or JSON answer starts that way.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media in ("text/html", "application/xhtml+xml"):
        return True
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        head = head[2:].decode("utf-16-le" if head[0] == 0xFF else "utf-16-be", "ignore").encode("utf-8")
    return _HTML_START.match(head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\n\r\f")) is not None


def check_zip_start(head: bytes) -> None:
    """Check that the first bytes of a body can begin a zip file, as they stream in.

    Accepts a prefix of a zip's first four bytes (so it can be called on a short first chunk).
    Raises InvalidContent ("not a zip file (starts with '<!DOCTYPE html')") otherwise.
    """
    if not any(sig.startswith(head[:4]) for sig in _ZIP_STARTS):
        raise InvalidContent(f"not a zip file (starts with {shown(head)})")


def check_zip(file: str | BinaryIO, module: str, version: str, *, max_zip_file: int = MAX_ZIP_FILE,
              max_go_mod: int = MAX_GO_MOD, max_license: int = MAX_LICENSE) -> None:
    """Check a module zip by the rules golang.org/x/mod/zip's CheckZip and Unzip enforce.

    file is a path or a seekable binary file. Only the central directory is read: every
    name must be under "module@version/" and a valid file path (modpath.check_file_path),
    no two names may be equal or equal under case folding, no name may be both a file and
    a directory, go.mod may only be the lower-case one at the root, sizes keep to the limits
    (the zip file and the total uncompressed size max_zip_file, the root go.mod max_go_mod,
    the root LICENSE max_license), and files use a compression method Go can read.
    Raises InvalidContent for a zip that breaks a rule or is corrupt or truncated;
    BadRequest or NotFound if module@version itself is invalid (modpath.check_version).
    """
    modpath.check_path(module)
    modpath.check_version(module, version)
    with open(file, "rb") if isinstance(file, str) else contextlib.nullcontext(file) as f:
        _check_zip(f, f"{module}@{version}/", max_zip_file, max_go_mod, max_license)


def _check_zip(f: BinaryIO, prefix: str, max_zip_file: int, max_go_mod: int, max_license: int) -> None:
    size = f.seek(0, os.SEEK_END)
    if size > max_zip_file:
        raise InvalidContent(f"module zip file is too large ({size} bytes; limit is {max_zip_file} bytes)")
    f.seek(0)
    head = f.read(16)
    if head:  # an empty file is left to zipfile, which calls it no zip file
        check_zip_start(head)
    f.seek(0)
    try:
        with zipfile.ZipFile(f) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, struct.error, ValueError) as e:
        # UnicodeDecodeError (a ValueError) is a name flagged UTF-8 that is not.
        raise InvalidContent(f"corrupt zip file ({e})") from None
    seen: dict[str, tuple[str, bool]] = {}
    total = 0
    for info in infos:
        name = info.orig_filename
        if not info.flag_bits & 0x800:  # not flagged UTF-8: the raw bytes, decoded as Go reads them
            name = name.encode("cp437").decode("utf-8", "surrogateescape")
        if not name.startswith(prefix):
            raise InvalidContent(f"zip file {name!r} is not under {prefix!r}")
        rel = name[len(prefix):]
        if not rel:
            continue
        is_dir = rel.endswith("/")
        rel = rel[:-1] if is_dir else rel
        try:
            modpath.check_file_path(rel)
        except BadRequest as e:
            raise InvalidContent(f"zip file {name!r}: {e}") from None
        why = _collision(seen, rel, is_dir)
        if why:
            raise InvalidContent(f"zip file {name!r}: {why}")
        if is_dir:
            continue
        base = rel.rpartition("/")[2]
        if base.lower() == "go.mod" and rel != "go.mod":
            where = "not in module root directory" if base != rel else "must have a lowercase name"
            raise InvalidContent(f"zip file {name!r}: go.mod file {where}")
        total += info.file_size
        if total > max_zip_file:
            raise InvalidContent(f"total uncompressed size of module contents too large (max size is "
                                 f"{max_zip_file} bytes)")
        for special, limit in (("go.mod", max_go_mod), ("LICENSE", max_license)):
            if rel == special and info.file_size > limit:
                raise InvalidContent(f"{special} file too large ({info.file_size} bytes; max size is {limit})")
        if info.compress_type not in _GO_ZIP_METHODS:
            raise InvalidContent(f"zip file {name!r}: unsupported compression method {info.compress_type}")


def _collision(seen: dict[str, tuple[str, bool]], path: str, is_dir: bool) -> str | None:
    """Record path and its parent directories in seen; return why one clashes with an earlier entry."""
    while True:
        fold = _fold(path)
        other = seen.get(fold)
        if other is None:
            seen[fold] = (path, is_dir)
        elif other[0] != path:
            return f"case-insensitive file name collision: {other[0]!r} and {path!r}"
        elif other[1] != is_dir:
            return f"entry {path!r} is both a file and a directory"
        elif not is_dir:
            return f"multiple entries for file {path!r}"
        else:
            return None  # a directory seen before: its parents were recorded then
        path, _, _ = path.rpartition("/")
        if not path:
            return None
        is_dir = True


def _fold(s: str) -> str:
    """Return s case-folded so that two names equal under Unicode simple folding fold alike."""
    if s.isascii():
        return s.lower()
    return "".join(_fold_char(c) for c in s)


def _fold_char(c: str) -> str:
    # Simple case folding: lower case, then the fold of that when it is one character
    # (str.casefold() alone would fold "ß" to "ss", which simple folding leaves alone).
    low = c.lower() if len(c.lower()) == 1 else c
    return low.casefold() if len(low.casefold()) == 1 else low


def check_list(data: bytes) -> None:
    """Check an @v/list answer: each non-blank line starts with a valid semantic version.

    An empty list is valid; fields after the first (a time, for instance) are not judged.
    The go command skips lines it cannot use; a line of anything else means the answer is no
    list, so it is refused. Raises InvalidContent naming the first bad line.
    """
    for n, line in enumerate(data.decode("utf-8", "replace").split("\n"), 1):
        fields = [f for f in _GO_SPACE.split(line, 2) if f]
        if fields and not modpath.is_valid_version(fields[0]):
            raise InvalidContent(f"not a version list (line {n} starts with {shown(line.encode())})")


def check_info(data: bytes, version: str | None) -> None:
    """Check an .info or @latest answer as the go command decodes it into its RevInfo.

    It must be a JSON object with a non-empty string "Version", equal to version when one is
    given (the request was for that canonical version). "Time", when present and not null,
    must be an RFC 3339 time as Go's time.Time reads it; "Name" and "Short" must be strings,
    "Tags" a list of strings and "Origin" an object (each may be null, as Go allows).
    Raises InvalidContent naming the first problem.
    """
    try:
        info = json.loads(data.decode("utf-8", "replace"), parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise InvalidContent(f"not JSON ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if not isinstance(info, dict):
        raise InvalidContent("not a JSON object")
    got = info.get("Version")
    if not isinstance(got, str) or not got:
        raise InvalidContent("no Version in the JSON object")
    if version is not None and got != version:
        raise InvalidContent(f"Version is {got!r}, not {version!r}")
    for key, value in info.items():
        field = key.lower()  # encoding/json matches field names without regard to case
        if value is None or field not in ("version", "name", "short", "time", "tags", "origin"):
            continue
        if field == "tags":
            ok = isinstance(value, list) and all(t is None or isinstance(t, str) for t in value)
        elif field == "origin":
            ok = isinstance(value, dict)
        else:
            ok = isinstance(value, str) and (field != "time" or _is_rfc3339(value))
        if not ok:
            raise InvalidContent(f"malformed {key} in the JSON object: {json.dumps(value)[:40]}")


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _is_rfc3339(text: str) -> bool:
    """Report whether time.Parse(time.RFC3339, text) succeeds (Go's reading of a JSON time)."""
    m = _RFC3339.fullmatch(text)
    if not m:
        return False
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if not (1 <= month <= 12 and hour < 24 and minute < 60 and second < 60):
        return False
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)  # year 0 is a leap year to Go
    if not 1 <= day <= (29 if month == 2 and leap else _DAYS_IN_MONTH[month - 1]):
        return False
    return m.group(7) is None or (int(m.group(7)) <= 24 and int(m.group(8)) <= 60)
