"""Tests for goproxy.note: Go's documented example note, the test checksum DB key, malformed notes."""

from __future__ import annotations

import base64
import hashlib

import pytest

from goproxy.sumdb import note
from goproxy.sumdb.note import InvalidSignatureError, NoteError, UnverifiedNoteError, Verifier

# The test checksum database's keys, from $GOROOT/src/cmd/go/proxy_test.go.
SUMDB_VKEY = "localhost.localdev/sumdb+00000c67+AcTrnkbUA+TU4heY3hkjiSES/DSQniBqIeQ/YppAUtK6"
SUMDB_SKEY = "PRIVATE+KEY+localhost.localdev/sumdb+00000c67+AXu6+oaVaOYuQOFrf1V59JK1owcFlJcHwwXHDfDGxSPk"
# sum.golang.org's key, from $GOROOT/src/cmd/go/internal/modfetch/key.go.
SUM_GOLANG_ORG_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"

# The example in golang.org/x/mod/sumdb/note's package documentation.
PN_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PN_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PN_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PN_SIG = ("\u2014 PeterNeumann "
          "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n")
PN_MSG = (PN_TEXT + "\n" + PN_SIG).encode()
ENOCH_SIG = ("\u2014 EnochRoot "
             "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n")


# A tiny, slow Ed25519 signer (RFC 8032 section 5.1.6) in affine coordinates, written apart
# from goproxy.ed25519 so that the two check each other. For tests only.
_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_B = (15112221349535400772501151409588531511454012693041857206046113283949847762202,
      46316835694926478169428394003475163141307993866256225615783033603165251855960)


def _add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = a, b
    t = _D * x1 * x2 * y1 * y2 % _P
    return ((x1 * y2 + x2 * y1) * pow(1 + t, _P - 2, _P) % _P,
            (y1 * y2 + x1 * x2) * pow(1 - t, _P - 2, _P) % _P)


def _mul(k: int, pt: tuple[int, int]) -> tuple[int, int]:
    r = (0, 1)
    while k:
        if k & 1:
            r = _add(r, pt)
        pt, k = _add(pt, pt), k >> 1
    return r


def _enc(pt: tuple[int, int]) -> bytes:
    return (pt[1] | (pt[0] & 1) << 255).to_bytes(32, "little")


def ed25519_sign(seed: bytes, msg: bytes) -> tuple[bytes, bytes]:
    """ed25519_sign returns (public key, signature of msg) for the 32-byte private seed."""
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little") & ((1 << 254) - 8) | (1 << 254)
    pub = _enc(_mul(a, _B))
    r = int.from_bytes(hashlib.sha512(h[32:] + msg).digest(), "little") % _L
    big_r = _enc(_mul(r, _B))
    k = int.from_bytes(hashlib.sha512(big_r + pub + msg).digest(), "little") % _L
    return pub, big_r + ((r + k * a) % _L).to_bytes(32, "little")


def sign_note(text: str, skey: str) -> bytes:
    """sign_note signs text with a "PRIVATE+KEY+name+hash+key" signer key, as Go's note.Sign."""
    _, _, name, hash16, key64 = skey.split("+", 4)
    seed = base64.b64decode(key64)[1:]
    _, sig = ed25519_sign(seed, text.encode())
    b64 = base64.b64encode(bytes.fromhex(hash16) + sig).decode()
    return f"{text}\n\u2014 {name} {b64}\n".encode()


def signer_public_vkey(skey: str) -> str:
    _, _, name, hash16, key64 = skey.split("+", 4)
    pub, _ = ed25519_sign(base64.b64decode(key64)[1:], b"")
    return f"{name}+{hash16}+{base64.b64encode(bytes([1]) + pub).decode()}"


def test_test_signer_reproduces_go_docs_signature() -> None:
    assert sign_note(PN_TEXT, PN_SKEY) == PN_MSG
    assert signer_public_vkey(PN_SKEY) == PN_VKEY
    assert signer_public_vkey(SUMDB_SKEY) == SUMDB_VKEY


def test_verifier_parses_go_docs_key() -> None:
    v = Verifier(PN_VKEY)
    assert (v.name, v.key_hash, len(v.public_key)) == ("PeterNeumann", 0xC74F20A3, 32)


@pytest.mark.parametrize(("vkey", "name", "key_hash"), [
    (SUMDB_VKEY, "localhost.localdev/sumdb", 0x00000C67),
    (SUM_GOLANG_ORG_VKEY, "sum.golang.org", 0x033DE0AE),
])
def test_verifier_parses_checksum_db_keys(vkey: str, name: str, key_hash: int) -> None:
    v = Verifier(vkey)
    assert (v.name, v.key_hash) == (name, key_hash)
    assert note.key_hash(name, base64.b64decode(vkey.split("+", 2)[2])) == key_hash


def test_open_returns_text_of_go_docs_note() -> None:
    assert note.open_note(PN_MSG, Verifier(PN_VKEY)) == PN_TEXT


def test_open_ignores_signatures_by_other_keys() -> None:
    msg = (PN_TEXT + "\n" + ENOCH_SIG + PN_SIG + ENOCH_SIG).encode()
    assert note.open_note(msg, Verifier(PN_VKEY)) == PN_TEXT


def test_open_ignores_repeated_signature_by_trusted_key() -> None:
    msg = (PN_TEXT + "\n" + PN_SIG + PN_SIG).encode()
    assert note.open_note(msg, Verifier(PN_VKEY)) == PN_TEXT


def test_open_tree_note_signed_with_test_sumdb_key() -> None:
    text = "go.sum database tree\n5\nnND/nri/U0xuHUrYSy0HtMeal2vzD9V4k/BO79C+QeI=\n"
    assert note.open_note(sign_note(text, SUMDB_SKEY), Verifier(SUMDB_VKEY)) == text


def test_note_by_another_key_is_unverified() -> None:
    with pytest.raises(UnverifiedNoteError, match="no verifiable signatures"):
        note.open_note(PN_MSG, Verifier(SUMDB_VKEY))
    with pytest.raises(UnverifiedNoteError):
        note.open_note((PN_TEXT + "\n" + ENOCH_SIG).encode(), Verifier(PN_VKEY))


def test_same_name_with_another_key_hash_is_unverified() -> None:
    forged = PN_SIG.replace("x08go/", "AAAAA/")  # changes the 4-byte key hash prefix
    with pytest.raises(UnverifiedNoteError):
        note.open_note((PN_TEXT + "\n" + forged).encode(), Verifier(PN_VKEY))


def test_altered_text_is_invalid_signature() -> None:
    msg = PN_MSG.replace(b"cryptography", b"cryptographY")
    with pytest.raises(InvalidSignatureError, match=r"invalid signature for key PeterNeumann\+c74f20a3"):
        note.open_note(msg, Verifier(PN_VKEY))


def test_altered_signature_is_invalid_signature() -> None:
    msg = PN_MSG.replace(b"ZInNIuGUgYN1FF", b"ZInNIuGUgYN1FG")
    with pytest.raises(InvalidSignatureError):
        note.open_note(msg, Verifier(PN_VKEY))


def test_invalid_signature_is_an_error_even_beside_a_valid_one() -> None:
    bad = PN_SIG.replace("ZInNIuGUgYN1FF", "ZInNIuGUgYN1FG")
    with pytest.raises(InvalidSignatureError):
        note.open_note((PN_TEXT + "\n" + bad + PN_SIG).encode(), Verifier(PN_VKEY))


def test_errors_are_value_errors() -> None:
    assert issubclass(NoteError, ValueError)
    assert issubclass(UnverifiedNoteError, NoteError)
    assert issubclass(InvalidSignatureError, NoteError)


MALFORMED_NOTES = {
    "no-blank-line": (PN_TEXT + PN_SIG).encode(),
    "no-final-newline": (PN_TEXT + "\n" + PN_SIG).encode()[:-1],
    "empty-signature-block": (PN_TEXT + "\n").encode(),
    "hyphen-not-em-dash": (PN_TEXT + "\n" + PN_SIG.replace("\u2014", "-")).encode(),
    "no-space-after-name": (PN_TEXT + "\n" + PN_SIG.replace("PeterNeumann ", "PeterNeumann")).encode(),
    "bad-base64": (PN_TEXT + "\n" + PN_SIG.replace("x08go/", "x08go!")).encode(),
    "unpadded-base64": (PN_TEXT + "\n" + PN_SIG.replace("=\n", "\n")).encode(),
    "signature-only-key-hash": (PN_TEXT + "\n\u2014 PeterNeumann x08gow==\n").encode(),
    "plus-in-name": (PN_TEXT + "\n" + PN_SIG.replace("PeterNeumann", "Peter+Neumann")).encode(),
    "tab-in-text": PN_MSG.replace(b"If you", b"If\tyou"),
    "carriage-return": PN_MSG.replace(b"\n", b"\r\n"),
    "invalid-utf8": PN_MSG.replace(b"If", b"I\xff"),
    "too-many-signatures": (PN_TEXT + "\n" + ENOCH_SIG * 100 + PN_SIG).encode(),
}


@pytest.mark.parametrize("msg", MALFORMED_NOTES.values(), ids=MALFORMED_NOTES.keys())
def test_malformed_note_is_rejected(msg: bytes) -> None:
    with pytest.raises(NoteError, match="malformed note") as e:
        note.open_note(msg, Verifier(PN_VKEY))
    assert type(e.value) is NoteError


def test_one_hundred_signatures_are_allowed() -> None:
    msg = (PN_TEXT + "\n" + ENOCH_SIG * 99 + PN_SIG).encode()
    assert note.open_note(msg, Verifier(PN_VKEY)) == PN_TEXT


def test_last_blank_line_separates_signatures() -> None:
    text = "line one\n\nline three\n"  # a blank line inside the text is part of the text
    assert note.open_note(sign_note(text, SUMDB_SKEY), Verifier(SUMDB_VKEY)) == text


def _vkey(name: str, key: bytes, hash16: str | None = None) -> str:
    if hash16 is None:
        hash16 = f"{note.key_hash(name, key):08x}"
    return f"{name}+{hash16}+{base64.b64encode(key).decode()}"


ED_KEY = base64.b64decode(PN_VKEY.split("+")[2])
BAD_VKEYS = {
    "empty": ("", "malformed"),
    "name-only": ("PeterNeumann", "malformed"),
    "no-key": ("PeterNeumann+c74f20a3", "malformed"),
    "short-hash": (PN_VKEY.replace("+c74f20a3+", "+c74f20a+"), "malformed"),
    "0x-hash": (PN_VKEY.replace("+c74f20a3+", "+0xf20a3+"), "malformed"),
    "hex-not-hash": (PN_VKEY.replace("+c74f20a3+", "+c74f20a4+"), "does not match"),
    "bad-base64": (PN_VKEY + "!", "malformed"),
    "space-in-name": (_vkey("Peter Neumann", ED_KEY), "malformed"),
    "unknown-algorithm": (_vkey("PeterNeumann", b"\x02" + ED_KEY[1:]), "unknown verifier algorithm 2"),
    "short-ed25519-key": (_vkey("PeterNeumann", ED_KEY[:-1]), "32"),
    "long-ed25519-key": (_vkey("PeterNeumann", ED_KEY + b"\x00"), "32"),
}


@pytest.mark.parametrize(("vkey", "message"), BAD_VKEYS.values(), ids=BAD_VKEYS.keys())
def test_malformed_verifier_key_is_rejected(vkey: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        Verifier(vkey)


def test_signer_key_is_not_a_verifier_key() -> None:
    with pytest.raises(NoteError):
        Verifier(SUMDB_SKEY)


def test_upper_case_key_hash_is_accepted_like_go() -> None:
    assert Verifier(PN_VKEY.replace("c74f20a3", "C74F20A3")).key_hash == 0xC74F20A3


@pytest.mark.parametrize(("name", "valid"), [
    ("sum.golang.org", True), ("localhost.localdev/sumdb", True), ("", False), ("a+b", False),
    ("a b", False), ("a\u00a0b", False), ("a\u2003b", False), ("a\u2028b", False), ("a\x1cb", True),
])
def test_name_validity_follows_go_unicode_is_space(name: str, valid: bool) -> None:
    assert note.is_valid_name(name) is valid


def test_verifier_verify_checks_raw_signature() -> None:
    v = Verifier(PN_VKEY)
    sig = base64.b64decode(PN_SIG.split(" ")[2])[4:]
    assert v.verify(PN_TEXT.encode(), sig)
    assert not v.verify(PN_TEXT.encode() + b"x", sig)
