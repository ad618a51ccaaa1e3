"""Signed notes (golang.org/x/mod/sumdb/note): verifier keys and checking a note's signatures."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata

from . import ed25519

# The algorithm byte that starts an Ed25519 verifier key.
ALG_ED25519 = 1
# How many signature lines a note may carry before it is rejected.
MAX_SIGNATURES = 100

_SIG_PREFIX = "\u2014 ".encode()  # em dash, space
_HASH_RE = re.compile(r"[0-9a-fA-F]{8}")
_GO_SPACES = frozenset("\t\n\v\f\r \x85\xa0")


class NoteError(ValueError):
    """A malformed verifier key or note, or a note that does not verify."""


class UnverifiedNoteError(NoteError):
    """A well-formed note with no signature by the trusted key."""


class InvalidSignatureError(NoteError):
    """A signature that names the trusted key but does not verify.

    Unlike an unsigned note, this is evidence of tampering or of a misbehaving server.
    """


def is_valid_name(name: str) -> bool:
    """Report whether name may name a key: non-empty UTF-8, no Unicode spaces, no "+"."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return bool(name) and "+" not in name and not any(_is_go_space(c) for c in name)


def _is_go_space(c: str) -> bool:
    """Report whether c is a space by Go's unicode.IsSpace (unlike str.isspace, not U+001C..U+001F)."""
    return c in _GO_SPACES or unicodedata.category(c) in ("Zs", "Zl", "Zp")


def key_hash(name: str, key: bytes) -> int:
    """Return the 32-bit hash identifying key (algorithm byte + key) under name."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8") + b"\n" + key).digest()[:4], "big")


def _b64decode(text: str) -> bytes:
    """Decode padded standard base64, raising NoteError on anything else."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeError, ValueError):
        raise NoteError(f"malformed base64 {text!r}") from None


class Verifier:
    """A checker of signatures by one server key, parsed from a "<name>+<hash>+<keydata>" key.

    name is the server name, key_hash the 32-bit key hash, public_key the raw Ed25519 key
    and vkey the key text it was parsed from.
    """

    def __init__(self, vkey: str) -> None:
        """Parse vkey.

        Raises NoteError if it is malformed, its hash does not match the key, or its algorithm
        is not Ed25519.
        """
        name, _, rest = vkey.partition("+")
        hash16, _, key64 = rest.partition("+")
        try:
            key = _b64decode(key64)
        except NoteError:
            key = b""
        if not _HASH_RE.fullmatch(hash16) or not is_valid_name(name) or not key:
            raise NoteError(f"malformed verifier key {vkey!r}")
        self.name = name
        self.key_hash = int(hash16, 16)
        self.vkey = vkey
        if self.key_hash != key_hash(name, key):
            raise NoteError(f"invalid verifier key {vkey!r}: hash {hash16} does not match the key")
        if key[0] != ALG_ED25519:
            raise NoteError(f"unknown verifier algorithm {key[0]} in key {vkey!r}")
        if len(key) != 1 + ed25519.PUBLIC_KEY_SIZE:
            raise NoteError(f"malformed verifier key {vkey!r}: Ed25519 key is {len(key) - 1} bytes, want 32")
        self.public_key = key[1:]

    def verify(self, msg: bytes, sig: bytes) -> bool:
        """Report whether sig (without the 4-byte key hash) is this key's signature of msg."""
        return ed25519.verify(self.public_key, msg, sig)

    def __repr__(self) -> str:
        return f"Verifier({self.vkey!r})"


def open_note(msg: bytes, verifier: Verifier) -> str:
    """Return the text of the signed note msg once a signature by verifier checks out.

    The text ends in a newline; signatures by other keys are ignored, as Go's note.Open does.
    Raises NoteError if msg is malformed (bad UTF-8, control characters, no signature block,
    a malformed signature line, too many signatures), UnverifiedNoteError if no signature is
    by verifier's key, and InvalidSignatureError if one is by that key but does not verify.
    """
    try:
        decoded = msg.decode("utf-8")
    except UnicodeDecodeError:
        raise NoteError("malformed note: not valid UTF-8") from None
    if any(c < " " and c != "\n" for c in decoded):
        raise NoteError("malformed note: contains control characters")
    split = msg.rfind(b"\n\n")
    if split < 0:
        raise NoteError("malformed note: no blank line before the signatures")
    text, sigs = msg[: split + 1], msg[split + 2 :]
    if not sigs.endswith(b"\n"):
        raise NoteError("malformed note: signature block is empty or does not end in a newline")

    lines = sigs[:-1].split(b"\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"malformed note: more than {MAX_SIGNATURES} signatures")
    verified = False
    for line in lines:
        if not line.startswith(_SIG_PREFIX):
            raise NoteError(f"malformed note: bad signature line {line.decode()!r}")
        name, _, b64 = line[len(_SIG_PREFIX) :].decode().partition(" ")
        try:
            sig = _b64decode(b64)
        except NoteError:
            sig = b""
        if not is_valid_name(name) or len(sig) < 5:
            raise NoteError(f"malformed note: bad signature line {line.decode()!r}")
        if name != verifier.name or int.from_bytes(sig[:4], "big") != verifier.key_hash:
            continue
        if verified:
            continue  # Go ignores repeated signatures by one key
        if not verifier.verify(text, sig[4:]):
            raise InvalidSignatureError(f"invalid signature for key {name}+{verifier.key_hash:08x}")
        verified = True
    if not verified:
        raise UnverifiedNoteError(f"note has no verifiable signatures (want key {verifier.name}+"
                                  f"{verifier.key_hash:08x})")
    return text.decode("utf-8")
