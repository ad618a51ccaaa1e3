"""On-disk cache: paths under the root, atomic writes, reads, deletes that never race a reader."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import threading
from collections.abc import Iterator
from typing import BinaryIO

from .errors import BadRequest, StorageError

# Suffixes of in-progress files; never served, never adopted as artifacts.
PARTIAL_SUFFIXES = (".part", ".tmp", ".state", ".lock", ".del")

# Immutable artifacts up to MEMO_MAX bytes are also kept in memory, MEMO_BUDGET bytes in all.
MEMO_MAX = 16 << 10
MEMO_BUDGET = 32 << 20

# errnos that mean the disk refused a write, as opposed to a failed upstream read.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO, errno.EACCES}


class Cache:
    """Cache stores artifacts under root at their escaped URL path ("mod/@v/v1.0.0.zip")."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self._memo: dict[str, bytes] = {}  # open_immutable's small files, oldest first
        self._memo_bytes = 0
        self._memo_lock = threading.Lock()

    def path(self, key: str) -> str:
        """path returns the absolute file path of key; raises BadRequest if it leaves the root."""
        if not key or "\x00" in key or key.startswith("/") or "\\" in key:
            raise BadRequest(f"invalid cache key {key!r}")
        full = os.path.normpath(os.path.join(self.root, key))
        if not full.startswith(self.root + os.sep):
            raise BadRequest(f"path {key!r} escapes the cache")
        return full

    def open(self, key: str) -> tuple[BinaryIO, os.stat_result] | None:
        """open returns the committed file for key with its stat, or None when absent."""
        try:
            f = open(self.path(key), "rb")  # noqa: SIM115 - the caller owns the file
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        return f, os.fstat(f.fileno())

    def open_immutable(self, key: str) -> bytes | tuple[BinaryIO, os.stat_result] | None:
        """open_immutable is open for a key whose bytes never change once written: a file of up to
        MEMO_MAX bytes comes back as its bytes, kept in memory (oldest out first) until the key is
        written or deleted here, so a hit costs no open/fstat/read/close, each of which hands the
        interpreter lock around."""
        body = self._memo.get(key)
        if body is not None:
            return body
        opened = self.open(key)
        if opened is None or opened[1].st_size > MEMO_MAX:
            return opened
        with opened[0] as f:
            body = f.read(MEMO_MAX + 1)
        with self._memo_lock:
            if key not in self._memo:
                self._memo[key] = body
                self._memo_bytes += len(body)
                while self._memo_bytes > MEMO_BUDGET:
                    self._memo_bytes -= len(self._memo.pop(next(iter(self._memo))))
        return body

    def _forget(self, key: str) -> None:
        with self._memo_lock:
            body = self._memo.pop(key, None)
            if body is not None:
                self._memo_bytes -= len(body)

    def stat(self, key: str) -> os.stat_result | None:
        """stat returns the committed file's stat for key, or None when absent."""
        try:
            return os.stat(self.path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def read(self, key: str) -> bytes | None:
        """read returns the whole committed file for key, or None when absent."""
        opened = self.open(key)
        if opened is None:
            return None
        with opened[0] as f:
            return f.read()

    @contextlib.contextmanager
    def writer(self, key: str, mtime: float | None = None) -> Iterator[BinaryIO]:
        """writer yields a temp file beside key; on clean exit it is fsynced and renamed into place.

        mtime, when given, is stamped on the committed file (the fetch time freshness is judged by).
        On an exception the temp file is removed and nothing appears under key. Raises StorageError
        when the disk refuses the write.
        """
        tmp = f"{self.path(key)}.{secrets.token_hex(4)}.part"
        f = self.create(key, tmp)
        try:
            try:
                yield f
                f.flush()
                os.fsync(f.fileno())
            finally:
                f.close()
            self.commit(tmp, key, mtime)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
                raise _storage_error(key, exc) from exc
            raise

    def commit(self, tmp: str, key: str, mtime: float | None = None) -> None:
        """commit renames tmp, a complete and fsynced file beside key, into place as key, stamped
        with mtime when given (the fetch time freshness is judged by)."""
        os.chmod(tmp, 0o644)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        os.replace(tmp, self.path(key))
        self._forget(key)

    def create(self, key: str, tmp: str) -> BinaryIO:
        """create opens tmp, a file beside key, for writing, making its directory (again, if
        cleanup pruned it meanwhile); raises StorageError."""
        for attempt in range(3):
            try:
                os.makedirs(os.path.dirname(tmp), mode=0o755, exist_ok=True)
                return open(tmp, "wb")  # noqa: SIM115 - the caller closes it
            except (FileNotFoundError, FileExistsError) as exc:  # makedirs raced an rmdir
                if attempt == 2:
                    raise _storage_error(key, exc) from exc
            except OSError as exc:
                raise _storage_error(key, exc) from exc
        raise AssertionError("unreachable")

    def write(self, key: str, data: bytes, mtime: float | None = None) -> None:
        """write atomically stores data under key; raises StorageError."""
        with self.writer(key, mtime) as f:
            f.write(data)

    def touch(self, key: str, mtime: float) -> None:
        """touch stamps mtime on key's file (a refresh that found the content unchanged)."""
        with contextlib.suppress(OSError):
            os.utime(self.path(key), (mtime, mtime))

    def delete(self, key: str) -> bool:
        """delete removes key by renaming it aside first, so open readers keep their file; True if removed."""
        final = self.path(key)
        aside = f"{final}.{secrets.token_hex(4)}.del"
        try:
            os.rename(final, aside)
        except FileNotFoundError:
            return False
        self._forget(key)
        os.unlink(aside)
        return True


def _storage_error(key: str, exc: OSError) -> StorageError:
    reason = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else exc.strerror
    return StorageError(f"cannot write {key} to the cache: {reason}")
