"""What a project needs, read from go.sum, go.mod require lines or module@version lists."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from ..errors import BadRequest, ChecksumError, NotFound
from ..modpath import check_path, check_version
from ..sumdb import dirhash
from ..sumdb.verify import Verifier

_H1 = re.compile(r"h1:[A-Za-z0-9+/]{43}=")
# A go.mod token: a quoted or raw string, a comment, punctuation or a bare word.
_GOMOD_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|`[^`]*`|//[^\n]*|[()]|\n|[^\s()"`]+|[^\S\n]+')


class InputError(ValueError):
    """A go.sum, go.mod or module list that cannot be read; the message names the file and line."""


class GoSumMismatch(ChecksumError):
    """A downloaded or cached file whose h1 hash differs from the one go.sum records."""


@dataclass
class Want:
    """One module version to carry: its go.mod always, its zip and .info when zip is True.

    zip_hash and mod_hash are the go.sum hashes of the zip and the go.mod ("" when unknown).
    """

    module: str
    version: str
    zip: bool = True
    zip_hash: str = ""
    mod_hash: str = ""

    @property
    def name(self) -> str:
        """Return "module@version"."""
        return f"{self.module}@{self.version}"

    @property
    def kinds(self) -> tuple[str, ...]:
        """Return the artifact kinds this version needs: ("mod",) or ("zip", "mod", "info")."""
        return ("zip", "mod", "info") if self.zip else ("mod",)


class Wants:
    """The module versions that inputs name, merged: one Want per module@version."""

    def __init__(self) -> None:
        self.by_version: dict[tuple[str, str], Want] = {}

    def add(self, module: str, version: str, zip: bool = True, zip_hash: str = "", mod_hash: str = "",
            where: str = "") -> None:
        """Add module@version; raise InputError (naming where) when a hash contradicts an earlier one."""
        want = self.by_version.setdefault((module, version), Want(module, version, zip=False))
        want.zip = want.zip or zip
        for attr, value in (("zip_hash", zip_hash), ("mod_hash", mod_hash)):
            old = getattr(want, attr)
            if value and old and value != old:
                raise InputError(f"{where}: {module}@{version} has two different hashes ({old}, {value})")
            if value:
                setattr(want, attr, value)

    def __iter__(self) -> Iterator[Want]:
        return iter(sorted(self.by_version.values(), key=lambda w: (w.module, w.version)))

    def __len__(self) -> int:
        return len(self.by_version)

    def get(self, module: str, version: str) -> Want | None:
        """Return the Want for module@version, or None."""
        return self.by_version.get((module, version))


def _checked(module: str, version: str, where: str) -> None:
    try:
        check_path(module)
        check_version(module, version)
    except (BadRequest, NotFound) as exc:
        raise InputError(f"{where}: {exc}") from None


def parse_gosum(text: str, wants: Wants, name: str = "go.sum") -> None:
    """Add every line of a go.sum ("M V h1:…" and "M V/go.mod h1:…") to wants; raise InputError."""
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{name}:{n}"
        if len(fields) != 3:
            raise InputError(f"{where}: malformed go.sum line (want module version hash)")
        module, version, h = fields
        gomod = version.endswith("/go.mod")
        version = version.removesuffix("/go.mod")
        _checked(module, version, where)
        if not _H1.fullmatch(h):
            raise InputError(f"{where}: {module}@{version}: unknown or malformed hash {h!r} (want h1:…)")
        if gomod:
            wants.add(module, version, zip=False, mod_hash=h, where=where)
        else:
            wants.add(module, version, zip=True, zip_hash=h, where=where)


def _unquote(token: str, where: str) -> str:
    if token.startswith("`"):
        return token[1:-1]
    if token.startswith('"'):
        body = token[1:-1]
        if "\\" in body:
            raise InputError(f"{where}: escapes in quoted strings are not supported: {token}")
        return body
    return token


def parse_gomod(text: str, wants: Wants, name: str = "go.mod") -> None:
    """Add the module versions of a go.mod's require directives (single lines and blocks) to wants.

    Other directives are skipped; replace targets are not followed. Raises InputError.
    """
    lines: list[tuple[int, list[str]]] = []
    words: list[str] = []
    n = 1
    for m in _GOMOD_TOKEN.finditer(text):
        tok = m.group(0)
        if tok == "\n":
            if words:
                lines.append((n, words))
            words, n = [], n + 1
        elif tok.startswith("//") or tok.isspace():
            continue
        else:
            words.append(tok)
    if words:
        lines.append((n, words))
    block = ""  # the verb of the block the line is in ("" outside any block)
    for n, words in lines:
        where = f"{name}:{n}"
        if block:
            if words == [")"]:
                block = ""
            elif block == "require":
                _add_require(words, wants, where)
            continue
        if len(words) == 2 and words[1] == "(":
            block = words[0]
        elif words[0] == "require":
            _add_require(words[1:], wants, where)


def _add_require(spec: list[str], wants: Wants, where: str) -> None:
    if len(spec) != 2:
        raise InputError(f"{where}: malformed require line (want module version)")
    module, version = (_unquote(w, where) for w in spec)
    _checked(module, version, where)
    wants.add(module, version, zip=True, where=where)


def parse_module_list(text: str, wants: Wants, name: str = "list") -> None:
    """Add each "module@version" line (blank lines and # or // comments skipped) to wants."""
    for n, line in enumerate(text.splitlines(), 1):
        line = re.split(r"\s(?:#|//)|^(?:#|//)", line, maxsplit=1)[0].strip()
        if line:
            add_module_version(line, wants, f"{name}:{n}")


def add_module_version(arg: str, wants: Wants, where: str = "") -> None:
    """Add one "module@version" to wants; raise InputError naming where when malformed."""
    module, at, version = arg.rpartition("@")
    if not at or not module or not version:
        raise InputError(f"{where or arg}: want module@version, not {arg!r}")
    _checked(module, version, where or arg)
    wants.add(module, version, zip=True, where=where or arg)


def read_inputs(args: Iterable[str]) -> Wants:
    """Return what the arguments name: each is a go.sum, a go.mod, a module list file or module@version.

    A file named go.sum or *.sum is a go.sum, go.mod or *.mod a go.mod, any other file a list.
    Raises InputError for an unreadable file or a malformed line.
    """
    wants = Wants()
    for arg in args:
        if not os.path.isfile(arg):
            if "@" in arg and not os.path.exists(arg):
                add_module_version(arg, wants)
                continue
            raise InputError(f"{arg}: no such file, and not module@version")
        try:
            with open(arg, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{arg}: {getattr(exc, 'strerror', None) or exc}") from None
        base = os.path.basename(arg)
        if base.endswith(".sum"):
            parse_gosum(text, wants, arg)
        elif base.endswith(".mod"):
            parse_gomod(text, wants, arg)
        else:
            parse_module_list(text, wants, arg)
    return wants


def file_hash(kind: str, module: str, version: str, data_or_path: bytes | str) -> str:
    """Return the h1 hash go.sum records for a zip (a path) or a go.mod (bytes); raise ValueError."""
    if kind == "zip":
        assert isinstance(data_or_path, str)
        return dirhash.hash_zip(data_or_path, f"{module}@{version}/")
    assert isinstance(data_or_path, bytes)
    return dirhash.hash_gomod(data_or_path)


class GoSumVerifier(Verifier):
    """A Verifier that also checks each zip and go.mod against the hashes go.sum records.

    The go.sum check comes first and applies to every module (GONOSUMDB or not); then inner's
    checksum database check runs as usual. A mismatch raises GoSumMismatch, so nothing is
    committed.
    """

    def __init__(self, inner: Verifier, wants: Mapping[tuple[str, str], Want]) -> None:
        super().__init__(inner.sumdb, inner.gonosumdb, inner.private)
        self.wants = wants

    def check_zip(self, module: str, version: str, path: str) -> None:
        """Check the zip at path against go.sum, then against the checksum database."""
        want = self.wants.get((module, version))
        if want is not None and want.zip_hash:
            try:
                got = file_hash("zip", module, version, path)
            except ValueError as exc:
                raise ChecksumError(f"{module}@{version}: invalid module zip: {exc}") from None
            expect(want, "zip", got)
        super().check_zip(module, version, path)

    def check_mod(self, module: str, version: str, data: bytes) -> None:
        """Check a go.mod against go.sum, then against the checksum database."""
        want = self.wants.get((module, version))
        if want is not None and want.mod_hash:
            expect(want, "mod", file_hash("mod", module, version, data))
        super().check_mod(module, version, data)


def expect(want: Want, kind: str, got: str) -> None:
    """Raise GoSumMismatch unless got is go.sum's hash of want's zip or go.mod (kind) (or go.sum has none)."""
    wanted = want.zip_hash if kind == "zip" else want.mod_hash
    if wanted and got != wanted:
        what = want.name + ("/go.mod" if kind == "mod" else "")
        raise GoSumMismatch(f"{what}: checksum mismatch: downloaded {got}, go.sum has {wanted}")
