"""Checksum database names and verifier keys, in the forms GOSUMDB accepts."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..values import check_url
from .note import Verifier

# Checksum databases the go command knows by name (cmd/go/internal/modfetch/key.go).
KNOWN_SUMDB_KEYS = {
    "sum.golang.org": "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8",
}


@dataclass(frozen=True)
class GoSumDB:
    """The checksum database to verify against: its name, verifier key and URL.

    url "" means: through the first upstream that proxies /sumdb/<name>/, else https://<name>.
    """

    name: str
    key: str
    url: str = ""


def parse_gosumdb(text: str) -> GoSumDB | None:
    """Return the database GOSUMDB's text names: off (None), a known name, name+key, "name+key url".

    Raises ValueError (NoteError for a malformed key) saying what is wrong.
    """
    words = text.split()
    if not words or words == ["off"]:
        return None
    if len(words) > 2:
        raise ValueError(f"{text!r}: want off, sum.golang.org, name+key or \"name+key url\"")
    key, url = words[0], words[1] if len(words) == 2 else ""
    if key == "sum.golang.google.cn":
        key, url = KNOWN_SUMDB_KEYS["sum.golang.org"], url or "https://sum.golang.google.cn"
    key = KNOWN_SUMDB_KEYS.get(key, key)
    if not re.fullmatch(r"[^+\s]+\+[0-9a-f]{8}\+[A-Za-z0-9+/]+=*", key):
        raise ValueError(f"{words[0]!r} is not a known checksum database or a name+hash+key verifier key")
    if url:
        url = check_url(url)
    return GoSumDB(Verifier(key).name, key, url)
