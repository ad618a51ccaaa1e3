"""Go's "h1:" directory hashes (golang.org/x/mod/sumdb/dirhash) of module zips and go.mod files."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import zipfile
import zlib
from collections.abc import Callable, Iterable
from typing import IO

# How much of a file is read at a time while hashing; memory stays flat.
_CHUNK = 64 * 1024
# The zip general-purpose flag bit saying the file name is UTF-8.
_UTF8_FLAG = 0x800
# The compression methods Go's archive/zip can read (store, deflate).
_GO_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def hash1(files: Iterable[tuple[bytes, Callable[[], IO[bytes]]]]) -> str:
    r"""Return the "h1:" hash of (name, open) pairs, as Go's dirhash.Hash1.

    Each file is opened, read in chunks and closed in the byte order of its name; the
    summary line is "%x  %s\n" of its SHA-256 and name. Raises ValueError for a name
    containing a newline; errors raised by an opener pass through.
    """
    summary = hashlib.sha256()
    for name, open_file in sorted(files, key=lambda f: f[0]):
        if b"\n" in name:
            raise ValueError("dirhash: filenames with newlines are not supported")
        h = hashlib.sha256()
        with open_file() as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                h.update(chunk)
        summary.update(h.hexdigest().encode("ascii") + b"  " + name + b"\n")
    return "h1:" + base64.b64encode(summary.digest()).decode("ascii")


def hash_gomod(data: bytes) -> str:
    """Return the hash of a go.mod file, as go.sum records it after "/go.mod"."""
    return hash1([(b"go.mod", lambda: io.BytesIO(data))])


def _raw_name(info: zipfile.ZipInfo) -> bytes:
    """Return the file name bytes as stored in the zip (Go hashes them as-is)."""
    if info.flag_bits & _UTF8_FLAG:
        return info.orig_filename.encode("utf-8")
    return info.orig_filename.encode("cp437")


def hash_zip(path: str | IO[bytes], prefix: str = "") -> str:
    """Return the "h1:" hash of the module zip at path, as Go's dirhash.HashZip does.

    path is a file name or a seekable file. Every entry is hashed under its name exactly as
    stored, directories included.
    When prefix (such as "example.com/m@v1.0.0/") is not empty, every name must start
    with it, the check the go command makes before hashing a downloaded zip.
    Raises ValueError for a malformed or unreadable zip, a compression method Go cannot
    read, a bad CRC, a name outside prefix or a name with a newline; OSError if path
    cannot be opened.
    """
    with contextlib.ExitStack() as stack:
        f = stack.enter_context(open(path, "rb")) if isinstance(path, str) else path
        try:
            z = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as e:
            raise ValueError(f"{path}: malformed zip: {e}") from None
        with z:
            try:
                infos = z.infolist()
                names = [_raw_name(info) for info in infos]
            except UnicodeError as e:
                raise ValueError(f"{path}: malformed zip: file name is not valid: {e}") from None
            want = prefix.encode("utf-8")
            by_name: dict[bytes, zipfile.ZipInfo] = {}
            for name, info in zip(names, infos):
                if not name.startswith(want):
                    module = prefix[:-1] if prefix.endswith("/") else prefix
                    shown = name.decode("utf-8", "replace")
                    raise ValueError(f"zip for {module} has unexpected file {shown}")
                if info.compress_type not in _GO_METHODS:
                    raise ValueError(f"{path}: {name!r} uses unsupported compression method {info.compress_type}")
                by_name[name] = info  # like Go's map, a repeated name opens the last entry

            def opener(name: bytes) -> Callable[[], IO[bytes]]:
                return lambda: z.open(by_name[name])

            try:
                return hash1([(name, opener(name)) for name in names])
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
                raise ValueError(f"{path}: malformed zip: {e}") from None
