"""Client authentication: PBKDF2-SHA256 secret hashes, the -auth-file, Basic/Bearer checks, `auth hash`."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from .singleflight import SingleFlight

log = logging.getLogger(__name__)

# OWASP Password Storage Cheat Sheet (since 2023): PBKDF2-HMAC-SHA256 with 600,000 iterations.
DEFAULT_ITERATIONS = 600_000
SALT_SIZE = 16
# The WWW-Authenticate value of every 401 answer.
CHALLENGE = 'Basic realm="goproxy"'

# passlib's pbkdf2_sha256 format: "$pbkdf2-sha256$ITERATIONS$SALT$HASH", SALT and HASH in
# passlib's adapted base64 (standard alphabet, "." for "+", no padding).
_PREFIX = "$pbkdf2-sha256$"
_HASH_RE = re.compile(r"\$pbkdf2-sha256\$([1-9][0-9]{0,9})\$([./A-Za-z0-9]+)\$([./A-Za-z0-9]{43})")
_MAX_ITERATIONS = (1 << 32) - 1
_MAX_SALT = 1024
_DIGEST_SIZE = 32
_MAX_HEADER = 4096  # longer Authorization values are refused before any work
_REMEMBER_HEADERS = 1024  # Authorization values remembered as good, forgotten all at once when full
_REMEMBER_FAILURES = 1024


class AuthFileError(ValueError):
    """A credentials file that cannot be used; the message names file:line and the problem."""


@dataclass(frozen=True)
class _Hash:
    iterations: int
    salt: bytes
    digest: bytes


def _ab64_encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=").replace("+", ".")


def _ab64_decode(text: str) -> bytes:
    if len(text) % 4 == 1:
        raise ValueError("bad base64 length")
    try:
        return base64.b64decode(text.replace(".", "+") + "=" * (-len(text) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"bad base64: {exc}") from None


def _parse_hash(hashed: str) -> _Hash:
    """Return the parts of a "$pbkdf2-sha256$..." string; raise ValueError saying what is wrong."""
    m = _HASH_RE.fullmatch(hashed)
    if m is None:
        if not hashed.startswith(_PREFIX):
            raise ValueError("unknown hash format (want $pbkdf2-sha256$ITERATIONS$SALT$HASH "
                             "as `goproxy auth hash` prints)")
        raise ValueError("malformed $pbkdf2-sha256$ hash")
    iterations = int(m.group(1))
    salt, digest = _ab64_decode(m.group(2)), _ab64_decode(m.group(3))
    if iterations > _MAX_ITERATIONS or len(salt) > _MAX_SALT or len(digest) != _DIGEST_SIZE:
        raise ValueError("malformed $pbkdf2-sha256$ hash: iterations, salt or hash out of range")
    return _Hash(iterations, salt, digest)


def _derive(secret: str, iterations: int, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", secret.encode("utf-8", "surrogatepass"), salt, iterations)


def hash_secret(secret: str, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None) -> str:
    """Return the salted PBKDF2-SHA256 hash of secret in passlib's "$pbkdf2-sha256$" format.

    salt defaults to 16 random bytes. Raises ValueError for iterations outside 1..2**32-1 or a
    salt that is empty or longer than 1024 bytes.
    """
    if salt is None:
        salt = secrets.token_bytes(SALT_SIZE)
    if not 1 <= iterations <= _MAX_ITERATIONS:
        raise ValueError(f"iterations must be 1 to {_MAX_ITERATIONS}, not {iterations}")
    if not 1 <= len(salt) <= _MAX_SALT:
        raise ValueError(f"salt must be 1 to {_MAX_SALT} bytes")
    digest = _derive(secret, iterations, salt)
    return f"{_PREFIX}{iterations}${_ab64_encode(salt)}${_ab64_encode(digest)}"


def verify_secret(secret: str, hashed: str) -> bool:
    """Report whether secret matches hashed, comparing the derived keys in constant time.

    Raises ValueError when hashed is not a well-formed "$pbkdf2-sha256$" string.
    """
    h = _parse_hash(hashed)
    return hmac.compare_digest(_derive(secret, h.iterations, h.salt), h.digest)


def check_name(name: str) -> str | None:
    """Return why name cannot be a credential name (empty, ':', white space, control, leading '#'), or None."""
    if not name:
        return "empty name"
    if ":" in name:
        return "name contains ':'"
    if any(c.isspace() or not c.isprintable() for c in name):
        return "name contains white space or a control character"
    if name.startswith("#"):
        return "name starts with '#' (a comment in the auth file)"
    return None


def parse_authorization(authorization: str | None) -> tuple[str, str] | None:
    """Return (name, secret) from an Authorization value, or None when there is none or it is malformed.

    Accepts "Basic base64(name:secret)" (RFC 7617, UTF-8) and "Bearer name:secret", the scheme
    in any case. The value is taken as http.server hands it over (ISO-8859-1 decoded), so the
    bytes of a Bearer token are read again as UTF-8. The name is what precedes the first ':'.
    """
    if not authorization or len(authorization) > _MAX_HEADER:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    scheme = scheme.lower()
    if scheme == "basic":
        try:
            text = base64.b64decode(token, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
    elif scheme == "bearer":
        try:
            text = token.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            text = token
    else:
        return None
    name, sep, secret = text.partition(":")
    if not sep or not name:
        return None
    return name, secret


def claimed_name(authorization: str | None) -> str | None:
    """Return the name an Authorization value claims, for logging a refusal; never the secret."""
    parsed = parse_authorization(authorization)
    return parsed[0] if parsed else None


class Credentials:
    """An immutable set of names and their secret hashes, with a memory of verified secrets.

    check() remembers each name's verified secret as a MAC under a per-instance random key
    (never the secret itself), so a repeated success costs microseconds; identical failures
    are remembered apart (bounded) so a client retrying a wrong secret does not cost PBKDF2
    each time. A new Credentials (a reloaded file) starts with empty memories.
    """

    def __init__(self, hashes: Mapping[str, str]) -> None:
        """Build from name → hash string; raise ValueError naming a bad name or hash."""
        parsed: dict[str, _Hash] = {}
        for name, hashed in hashes.items():
            why = check_name(name)
            if why:
                raise ValueError(f"{name!r}: {why}")
            try:
                parsed[name] = _parse_hash(hashed)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        self._hashes = parsed
        # Unknown names are checked against this, at the highest cost in the file, so the time
        # taken does not tell whether a name exists.
        cost = max((h.iterations for h in parsed.values()), default=DEFAULT_ITERATIONS)
        self._dummy = _Hash(cost, secrets.token_bytes(SALT_SIZE), secrets.token_bytes(_DIGEST_SIZE))
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, bytes] = {}  # name → MAC of "name:secret"; one per name at most
        # MAC of a whole Authorization value → its name: a hit's check is one keyed hash, no decoding.
        self._good_headers: dict[bytes, str] = {}
        self._failed: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()
        self._flights: SingleFlight[bool] = SingleFlight()

    @classmethod
    def load(cls, path: str) -> Credentials:
        """Read an auth file: "name:hash" lines, blank lines and "#" comments.

        Raises AuthFileError naming file:line for a malformed line, a bad name, a duplicate
        name or an unknown hash format, and naming the file when it is unreadable or empty.
        """
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise AuthFileError(f"{path}: {exc.strerror or exc}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            lineno = data[:exc.start].count(b"\n") + 1
            raise AuthFileError(f"{path}:{lineno}: not UTF-8 text") from None
        hashes: dict[str, str] = {}
        first: dict[str, int] = {}
        for n, raw in enumerate(text.split("\n"), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, hashed = line.partition(":")
            where = f"{path}:{n}"
            if not sep:
                raise AuthFileError(f"{where}: want name:hash")
            why = check_name(name)
            if why:
                raise AuthFileError(f"{where}: {why}")
            if name in first:
                raise AuthFileError(f"{where}: duplicate name {name!r} (first on line {first[name]})")
            try:
                _parse_hash(hashed)
            except ValueError as exc:
                raise AuthFileError(f"{where}: {name}: {exc}") from None
            hashes[name] = hashed
            first[name] = n
        if not hashes:
            raise AuthFileError(f"{path}: no credentials (want name:hash lines)")
        return cls(hashes)

    @property
    def names(self) -> frozenset[str]:
        """The names that can authenticate."""
        return frozenset(self._hashes)

    def __len__(self) -> int:
        return len(self._hashes)

    def check(self, authorization: str | None) -> str | None:
        """Return the authenticated name for an Authorization header value, or None.

        None for a missing or malformed value, an unknown name or a wrong secret. An unknown
        name costs the same PBKDF2 work as a known one; a remembered success costs one keyed hash.
        """
        known = self.remembered(authorization)
        if known is not False:
            return known  # a remembered success, or a value refused without hashing
        parsed = parse_authorization(authorization)
        assert parsed is not None  # remembered() said None for a malformed value
        name, secret = parsed
        mac = self._mac(name, secret)
        with self._lock:
            if mac in self._failed:
                self._failed.move_to_end(mac)
                return None
        # Concurrent first requests with the same credentials share one PBKDF2 run.
        ok, _ = self._flights.do(mac.hex(), lambda: self._verify(name, secret, mac))
        return self._remember_header(authorization, name) if ok else None

    def remembered(self, authorization: str | None) -> str | Literal[False] | None:
        """Answer at once what check() would, or False when only PBKDF2 could tell.

        Returns the name for a remembered success, None for a missing or malformed value (which
        check() refuses without hashing too), False otherwise. Never runs PBKDF2.
        """
        good = self._good_header(authorization)
        if good is not None:
            return good
        parsed = parse_authorization(authorization)
        if parsed is None:
            return None
        name, secret = parsed
        known = self._verified.get(name)
        if known is not None and hmac.compare_digest(known, self._mac(name, secret)):
            return self._remember_header(authorization, name)
        return False

    def _header_mac(self, authorization: str) -> bytes:
        return hashlib.blake2b(authorization.encode("utf-8", "surrogatepass"), key=self._key,
                               digest_size=32).digest()

    def _good_header(self, authorization: str | None) -> str | None:
        """Return the name of an Authorization value check() found good before, else None."""
        if not authorization or len(authorization) > _MAX_HEADER:
            return None
        return self._good_headers.get(self._header_mac(authorization))

    def _remember_header(self, authorization: str | None, name: str) -> str:
        """Remember authorization, which check() found good, as name's; return name."""
        if authorization:
            with self._lock:
                if len(self._good_headers) >= _REMEMBER_HEADERS:
                    self._good_headers.clear()
                self._good_headers[self._header_mac(authorization)] = name
        return name

    def _mac(self, name: str, secret: str) -> bytes:
        # Keyed BLAKE2b is a MAC (RFC 7693) at a third of HMAC-SHA256's cost for short inputs.
        return hashlib.blake2b(f"{name}:{secret}".encode("utf-8", "surrogatepass"), key=self._key,
                               digest_size=32).digest()

    def _verify(self, name: str, secret: str, mac: bytes) -> bool:
        known = self._hashes.get(name)
        h = known or self._dummy
        ok = hmac.compare_digest(_derive(secret, h.iterations, h.salt), h.digest) and known is not None
        if ok:
            self._verified[name] = mac
        else:
            with self._lock:
                self._failed[mac] = None
                if len(self._failed) > _REMEMBER_FAILURES:
                    self._failed.popitem(last=False)
        return ok


class AuthFile:
    """The live credentials of -auth-file: reloaded on demand (SIGHUP) or when the file changes.

    A file that fails to load on reload is logged with its reason and the previous
    credentials stay in force; a file that vanishes keeps them too.
    """

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic, interval: float = 1.0) -> None:
        """Load path; raise AuthFileError when it cannot be used.

        clock (monotonic seconds) and interval (seconds, default 1) pace maybe_reload().
        """
        self.path = path
        self._clock = clock
        self._interval = interval
        self._lock = threading.Lock()
        self._signature = self._stat()
        self._credentials = Credentials.load(path)
        self._next_check = clock() + interval

    def current(self) -> Credentials:
        """Return the credentials in force."""
        return self._credentials

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def reload(self) -> bool:
        """Read the file again now; return True when the new credentials are in force.

        On failure the reason is logged and the previous credentials stay.
        """
        with self._lock:
            return self._reload(self._stat())

    def _reload(self, signature: tuple[int, int, int] | None) -> bool:
        # The signature is taken before reading, so a change during the read is seen next time;
        # it is kept even on failure, so a broken file is reported once, not every interval.
        self._signature = signature
        try:
            credentials = Credentials.load(self.path)
        except AuthFileError as exc:
            log.error("auth file not reloaded: %s; keeping the %d credentials in force",
                      exc, len(self._credentials))
            return False
        self._credentials = credentials
        log.info("auth file %s reloaded: %d credentials", self.path, len(credentials))
        return True

    def maybe_reload(self) -> bool:
        """Reload when the file changed (mtime, size or inode), checking at most once per interval.

        Cheap enough for every request: between checks it costs one clock read. Returns True
        when it reloaded successfully.
        """
        now = self._clock()
        if now < self._next_check:
            return False
        if not self._lock.acquire(blocking=False):
            return False  # another thread is checking
        try:
            if now < self._next_check:
                return False
            self._next_check = now + self._interval
            signature = self._stat()
            if signature == self._signature:
                return False
            return self._reload(signature)
        finally:
            self._lock.release()
