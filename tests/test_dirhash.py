"""Tests for goproxy.dirhash against go.sum lines the Go distribution's own tests rely on."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from goproxy.sumdb import dirhash

# Known-good go.sum hashes, copied from the go command's test scripts
# ($GOROOT/src/cmd/go/testdata/script/*.txt, e.g. mod_get_update_unrelated_sum.txt,
# mod_get_workspace_incomplete.txt, import_unix_tag.txt, mod_update_sum_readonly.txt,
# mod_vendor_replace.txt). Those scripts run against the test proxy, which serves modules
# built from the txtar archives in testdata/mod. (module, version) → (zip h1, go.mod h1).
GO_SUMS: dict[tuple[str, str], tuple[str, str]] = {
    ("rsc.io/quote", "v1.5.2"):
        ("h1:3fEykkD9k7lYzXqCYrwGAf7iNhbk4yCjHmKBN9td4L0=", "h1:LzX7hefJvL54yjefDEDHNONDjII0t9xZLPXsUe+TKr0="),
    ("rsc.io/quote", "v1.0.0"):
        ("h1:kQ3IZQzPTiDJxSZI98YaWgxFEhlNdYASHvh+MplbViw=", "h1:v83Ri/njykPcgJltBc/gEkJTmjTsNgtO1Y7vyIK1CQA="),
    ("rsc.io/sampler", "v1.3.0"):
        ("h1:HLGR/BgEtI3r0uymSP/nl2uPLsUnNJX8toRyhfpBTII=", "h1:T1hPZKmBbMNahiBKFy5HrXp6adAjACjK9JXDnKaTXpA="),
    ("rsc.io/sampler", "v1.99.99"):
        ("h1:iMG9lbEG/8MdeR4lgL+Q8IcwbLNw7ijW7fTiK8Miqts=", "h1:T1hPZKmBbMNahiBKFy5HrXp6adAjACjK9JXDnKaTXpA="),
    ("rsc.io/testonly", "v1.0.0"):
        ("h1:K/VWHdO+Jv7woUXG0GzVNx1czBXUt3Ib1deaMn+xk64=", "h1:OqmGbIFOcF+XrFReLOGZ6BhMM7uMBiQwZsyNmh74SzY="),
    ("golang.org/x/text", "v0.0.0-20170915032832-14c0d48ead0c"):
        ("h1:pvCbr/wm8HzDD3fVywevekufpn6tCGPY3spdHeZJEsw=", "h1:NqM8EUOU14njkJ3fqMW+pc6Ldnwhi/IjpwHt7yyuwOQ="),
    ("golang.org/x/text", "v0.3.0"):
        ("h1:ivTorhoiROmZ1mcs15mO2czVF0uy0tnezXpBVNzgrmA=", "h1:NqM8EUOU14njkJ3fqMW+pc6Ldnwhi/IjpwHt7yyuwOQ="),
    ("example.com/version", "v1.1.0"):
        ("h1:VdPnGmIF1NJrntStkxGrF3L/OfhaL567VzCjncGUgtM=", "h1:S7K9BnT4o5wT4PCczXPfWVzpjD4ud4e7AJMQJEgiu2Q="),
}
# Versions whose scripts record only the "/go.mod h1:" line.
GOMOD_ONLY_SUMS: dict[tuple[str, str], str] = {
    ("rsc.io/breaker", "v1.0.0"): "h1:s5yxDXvD88U1/ESC23I2FK3Lkv4YIKaB1ij/Hbm805g=",
    ("rsc.io/quote/v3", "v3.0.0"): "h1:yEA65RcK8LyAZtP9Kv3t0HmxON59tX3rD+tICJqUlj0=",
}
GOMOD_SUMS = {**{k: v[1] for k, v in GO_SUMS.items()}, **GOMOD_ONLY_SUMS}


def parse_txtar(data: bytes) -> list[tuple[str, bytes]]:
    """parse_txtar returns the files of a txtar archive, as Go's internal/txtar.Parse."""

    def fix_nl(b: bytes) -> bytes:
        return b if not b or b.endswith(b"\n") else b + b"\n"

    def marker(b: bytes) -> tuple[str, bytes]:
        if not b.startswith(b"-- "):
            return "", b""
        line, _, after = b.partition(b"\n")
        if not (line.endswith(b" --") and len(line) >= 6):
            return "", b""
        return line[3:-3].decode().strip(), after

    def find_marker(b: bytes) -> tuple[bytes, str, bytes]:
        i = 0
        while True:
            name, after = marker(b[i:])
            if name:
                return b[:i], name, after
            j = b.find(b"\n-- ", i)
            if j < 0:
                return fix_nl(b), "", b""
            i = j + 1

    files = []
    _, name, data = find_marker(data)
    while name:
        content, next_name, data = find_marker(data)
        files.append((name, content))
        name = next_name
    return files


def archive(goroot: Path, module: str, version: str) -> list[tuple[str, bytes]]:
    name = module.replace("/", "_") + "_" + version + ".txt"
    return parse_txtar((goroot / "src/cmd/go/testdata/mod" / name).read_bytes())


def build_zip(path: Path, module: str, version: str, files: list[tuple[str, bytes]]) -> Path:
    """build_zip writes the module zip exactly as cmd/go/proxy_test.go serves it."""
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files:
            if name in (".info", ".mod", ".zip"):
                continue
            zip_name = name[1:] if name.startswith("/") else f"{module}@{version}/{name}"
            z.writestr(zip_name, data)
    return path


@pytest.mark.parametrize(("module", "version"), list(GO_SUMS), ids=[f"{m}@{v}" for m, v in GO_SUMS])
def test_hash_zip_matches_go_sum(goroot: Path, tmp_path: Path, module: str, version: str) -> None:
    want, _ = GO_SUMS[(module, version)]
    z = build_zip(tmp_path / "m.zip", module, version, archive(goroot, module, version))
    assert dirhash.hash_zip(str(z), f"{module}@{version}/") == want
    assert dirhash.hash_zip(str(z)) == want


@pytest.mark.parametrize(("module", "version"), list(GOMOD_SUMS), ids=[f"{m}@{v}" for m, v in GOMOD_SUMS])
def test_hash_gomod_matches_go_sum(goroot: Path, module: str, version: str) -> None:
    want = GOMOD_SUMS[(module, version)]
    gomod = dict(archive(goroot, module, version))[".mod"]
    assert dirhash.hash_gomod(gomod) == want


def test_zip_with_file_outside_prefix_is_rejected_like_go(goroot: Path, tmp_path: Path) -> None:
    files = archive(goroot, "rsc.io/badzip", "v1.0.0")
    z = build_zip(tmp_path / "bad.zip", "rsc.io/badzip", "v1.0.0", files)
    # The go command's own message (testdata/script/mod_load_badzip.txt).
    with pytest.raises(ValueError, match="^zip for rsc.io/badzip@v1.0.0 has unexpected file rsc.io/badzip@v1.0.0.txt$"):
        dirhash.hash_zip(str(z), "rsc.io/badzip@v1.0.0/")
    assert dirhash.hash_zip(str(z)).startswith("h1:")  # no prefix: names are hashed as-is


def write_zip(path: Path, entries: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> str:
    with zipfile.ZipFile(path, "w", compression=method) as z:
        for name, data in entries:
            z.writestr(name, data)
    return str(path)


def summary_hash(lines: list[tuple[str, bytes]]) -> str:
    """summary_hash is `sha256sum $(find . -type f | sort) | sha256sum` spelled out, for files in order."""
    text = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in lines)
    return "h1:" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def test_hash_is_of_sorted_names_and_contents(tmp_path: Path) -> None:
    entries = [("m@v1/b.go", b"package b\n"), ("m@v1/a.go", b"package a\n"), ("m@v1/A.go", b"x")]
    want = summary_hash(sorted(entries))
    assert dirhash.hash_zip(write_zip(tmp_path / "1.zip", entries), "m@v1/") == want
    assert dirhash.hash_zip(write_zip(tmp_path / "2.zip", entries[::-1], zipfile.ZIP_STORED)) == want


def test_directory_entries_are_hashed_like_go(tmp_path: Path) -> None:
    entries = [("m@v1/sub/", b""), ("m@v1/sub/x.go", b"package x\n")]
    assert dirhash.hash_zip(write_zip(tmp_path / "d.zip", entries)) == summary_hash(entries)


def test_repeated_name_hashes_last_entry_twice_like_go(tmp_path: Path) -> None:
    path = tmp_path / "dup.zip"
    with pytest.warns(UserWarning, match="Duplicate name"):
        write_zip(path, [("m@v1/x", b"first"), ("m@v1/x", b"second")])
    assert dirhash.hash_zip(str(path)) == summary_hash([("m@v1/x", b"second"), ("m@v1/x", b"second")])


def raw_name_hash(name: bytes, data: bytes) -> str:
    line = hashlib.sha256(data).hexdigest().encode() + b"  " + name + b"\n"
    return "h1:" + base64.b64encode(hashlib.sha256(line).digest()).decode()


def test_utf8_flagged_name_is_hashed_as_its_utf8_bytes(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "utf8.zip", [("m@v1/\u00e9", b"x")])  # zipfile sets the UTF-8 flag
    assert dirhash.hash_zip(path) == raw_name_hash(b"m@v1/\xc3\xa9", b"x")


def test_unflagged_name_is_hashed_as_its_raw_bytes(tmp_path: Path) -> None:
    # Go hashes the stored name bytes; Python decodes unflagged names as cp437, which must be undone.
    path = tmp_path / "raw.zip"
    write_zip(path, [("m@v1/Q", b"x")])
    path.write_bytes(path.read_bytes().replace(b"m@v1/Q", b"m@v1/\x82"))
    assert dirhash.hash_zip(str(path), "m@v1/") == raw_name_hash(b"m@v1/\x82", b"x")


def test_hash1_rejects_newline_in_name() -> None:
    with pytest.raises(ValueError, match="newlines"):
        dirhash.hash1([(b"a\nb", lambda: io.BytesIO(b""))])


def test_zip_with_newline_in_name_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="newlines"):
        dirhash.hash_zip(write_zip(tmp_path / "nl.zip", [("m@v1/a\nb", b"")]))


def test_hash1_streams_each_file_in_chunks() -> None:
    class Reader(io.BytesIO):
        max_read = 0

        def read(self, size: int | None = -1) -> bytes:
            assert size is not None, "hash1 must not read a whole file at once"
            assert size > 0, "hash1 must not read a whole file at once"
            Reader.max_read = max(Reader.max_read, size)
            return super().read(size)

    data = b"z" * (1 << 20)
    assert dirhash.hash1([(b"f", lambda: Reader(data))]) == summary_hash([("f", data)])
    assert Reader.max_read < len(data)


def test_not_a_zip_is_value_error(tmp_path: Path) -> None:
    path = tmp_path / "x.zip"
    path.write_bytes(b"this is not a zip file")
    with pytest.raises(ValueError, match="malformed zip"):
        dirhash.hash_zip(str(path))


def test_truncated_zip_is_value_error(tmp_path: Path) -> None:
    path = tmp_path / "t.zip"
    write_zip(path, [("m@v1/a", b"a" * 1000)])
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(ValueError, match="malformed zip"):
        dirhash.hash_zip(str(path))


def test_corrupt_content_is_value_error(tmp_path: Path) -> None:
    path = tmp_path / "crc.zip"
    write_zip(path, [("m@v1/a", b"hello world " * 10)], zipfile.ZIP_STORED)
    raw = bytearray(path.read_bytes())
    at = raw.index(b"hello world")
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="malformed zip"):
        dirhash.hash_zip(str(path))


def test_compression_go_cannot_read_is_value_error(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "bz.zip", [("m@v1/a", b"a")], zipfile.ZIP_BZIP2)
    with pytest.raises(ValueError, match="unsupported compression"):
        dirhash.hash_zip(path)


def test_missing_file_is_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        dirhash.hash_zip(str(tmp_path / "missing.zip"))
