"""The disk cache: artifacts under a root directory at their escaped URL path.

Commits are atomic, deletes never race a reader, and small immutable files are kept in memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import secrets
import struct
import threading
from collections.abc import Iterator
from typing import BinaryIO

from ..errors import BadRequest
from .base import DISK_ERRNOS, Blob, Fence, Stat, Storage, check_fence, storage_error

# Immutable artifacts up to MEMO_MAX bytes are also kept in memory, MEMO_BUDGET bytes in all.
MEMO_MAX = 16 << 10
MEMO_BUDGET = 32 << 20
# A root file holding 8 bytes that every deletion, in any process, changes.
GENERATION_NAME = ".generation"
_GEN = struct.Struct("=Q")

def _stat(key: str, st: os.stat_result) -> Stat:
    return Stat(key, st.st_size, st.st_mtime, f"{st.st_ino}:{st.st_mtime_ns}")


class DiskStorage(Storage):
    """Store artifacts under root at their escaped URL path ("mod/@v/v1.0.0.zip").

    A complete file only ever appears by renaming a fully written, fsynced temp file in the
    same directory; deletion renames aside first, so open readers keep their file.
    """

    def __init__(self, root: str) -> None:
        """Use the directory root (which must exist to keep anything in memory: see _map_generation)."""
        self.root = os.path.abspath(root)
        self._memo: dict[str, tuple[bytes, int]] = {}  # small immutable files and the generation read with them
        self._memo_bytes = 0
        self._memo_lock = threading.Lock()
        self._gen = self._map_generation()

    def _map_generation(self) -> mmap.mmap | None:
        """Map root/.generation, so reading it costs no system call; None (no memo) when it cannot be."""
        try:
            fd = os.open(os.path.join(self.root, GENERATION_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            return None
        try:
            if os.fstat(fd).st_size < _GEN.size:
                os.ftruncate(fd, _GEN.size)
            return mmap.mmap(fd, _GEN.size)
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)

    def generation(self) -> int:
        """Return the deletion generation: it changes whenever any process deletes from this cache."""
        return _GEN.unpack_from(self._gen)[0] if self._gen is not None else -1

    def _bump(self) -> None:
        """Change the generation after a deletion, to a random value no reader can have seen."""
        if self._gen is not None:
            _GEN.pack_into(self._gen, 0, int.from_bytes(os.urandom(8), "little"))

    def path(self, key: str) -> str:
        """Return the absolute file path of key; raise BadRequest if it would leave the root."""
        if not key or "\x00" in key or key.startswith("/") or "\\" in key:
            raise BadRequest(f"invalid cache key {key!r}")
        full = os.path.normpath(os.path.join(self.root, key))
        if not full.startswith(self.root + os.sep):
            raise BadRequest(f"path {key!r} escapes the cache")
        return full

    def open(self, key: str, immutable: bool = False) -> Blob | None:
        """Return the committed file under key, or None when absent.

        With immutable, a file of up to MEMO_MAX bytes comes back as its bytes and is kept in
        memory (oldest out first) until the key is written or deleted here, so a hit costs no
        open/fstat/read/close, each of which hands the interpreter lock around. A deletion by
        any process sharing the cache (cleanup, cache gc) changes the generation file: a kept
        copy read before it is checked against the disk again before it is served.
        """
        gen = self.generation()
        if immutable:
            kept = self._memo.get(key)
            if kept is not None:
                if kept[1] == gen:
                    return Blob(len(kept[0]), 0.0, body=kept[0])
                self._forget(key)
        try:
            f = open(self.path(key), "rb")  # noqa: SIM115 - the Blob owns the file
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        st = os.fstat(f.fileno())
        if not immutable or st.st_size > MEMO_MAX:
            return Blob(st.st_size, st.st_mtime, file=f, sendfile=True)
        with f:
            body = f.read(MEMO_MAX + 1)
        if self._gen is not None:
            with self._memo_lock:
                if key not in self._memo:
                    self._memo[key] = (body, gen)
                    self._memo_bytes += len(body)
                    while self._memo_bytes > MEMO_BUDGET:
                        self._memo_bytes -= len(self._memo.pop(next(iter(self._memo)))[0])
        return Blob(len(body), st.st_mtime, body=body)

    def open_kept(self, key: str) -> Blob | None:
        """Return the immutable artifact under key when open() keeps it in memory, else None.

        Never touches the disk, so it never waits: the server's loop answers such a hit itself.
        A copy read before any process's last deletion from the cache is not returned.
        """
        kept = self._memo.get(key)
        if kept is None or kept[1] != self.generation():
            return None
        return Blob(len(kept[0]), 0.0, body=kept[0])

    def _forget(self, key: str) -> None:
        with self._memo_lock:
            kept = self._memo.pop(key, None)
            if kept is not None:
                self._memo_bytes -= len(kept[0])

    def stat(self, key: str) -> Stat | None:
        """Return the committed file's Stat for key, or None when absent."""
        try:
            return _stat(key, os.stat(self.path(key)))
        except (FileNotFoundError, NotADirectoryError):
            return None

    @contextlib.contextmanager
    def writer(self, key: str, mtime: float | None = None, fence: Fence | None = None) -> Iterator[BinaryIO]:
        """Yield a temp file beside key; on a clean exit fsync it and rename it into place.

        mtime, when given, is stamped on the committed file; fence is asked before the rename
        (LeaseLost when it answers False). On an exception the temp file is removed and nothing
        appears under key. Raises StorageError when the disk refuses.
        """
        tmp = f"{self.path(key)}.{secrets.token_hex(4)}.part"
        try:
            with self.filled(key, tmp) as f:
                yield f
            self.commit(tmp, key, mtime, fence)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
                raise storage_error(key, exc) from exc
            raise

    def staging(self, key: str) -> str:
        """Return key's own path: its partial files live beside it."""
        return self.path(key)

    @contextlib.contextmanager
    def filled(self, key: str, path: str) -> Iterator[BinaryIO]:
        """Yield path, a new file beside key (create()); flush and fsync it on a clean exit, close it either way."""
        f = self.create(key, path)
        try:
            yield f
            f.flush()
            os.fsync(f.fileno())
        finally:
            f.close()

    def create(self, key: str, path: str) -> BinaryIO:
        """Open path, a file beside key, for writing, making its directory; raise StorageError.

        The directory is made again if cleanup pruned it meanwhile.
        """
        for attempt in range(3):
            try:
                os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
                return open(path, "wb")  # noqa: SIM115 - the caller closes it
            except (FileNotFoundError, FileExistsError) as exc:  # makedirs raced an rmdir
                if attempt == 2:
                    raise storage_error(key, exc) from exc
            except OSError as exc:
                raise storage_error(key, exc) from exc
        raise AssertionError("unreachable")

    def commit(self, path: str, key: str, mtime: float | None = None, fence: Fence | None = None) -> None:
        """Rename path, a complete and fsynced file beside key, into place as key.

        The file is stamped with mtime when given. Raises StorageError when the disk refuses,
        LeaseLost (path removed) when fence answers False.
        """
        try:
            check_fence(key, fence)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        try:
            os.chmod(path, 0o644)
            if mtime is not None:
                os.utime(path, (mtime, mtime))
            os.replace(path, self.path(key))
        except OSError as exc:
            raise storage_error(key, exc) from exc
        self._forget(key)

    def swap(self, key: str, data: bytes, expect: Stat | None) -> bool:
        """Replace key with data while it is still expect (absent when None); return True if replaced.

        The swap holds an flock on key's .lock file, so processes sharing the cache swap one at
        a time.
        """
        lock = self.create(key, self.path(key) + ".lock")
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            now = self.stat(key)
            if (now is None) != (expect is None) or (now is not None and expect is not None
                                                     and now.token != expect.token):
                return False
            self.write(key, data)
            return True
        finally:
            lock.close()

    def delete(self, key: str, expect: Stat | None = None) -> bool:
        """Remove key by renaming it aside first, so open readers keep their file.

        With expect, only while the file is still the one expect describes. Returns True if
        removed; raises OSError when the disk refuses.
        """
        final = self.path(key)
        if expect is not None:
            now = self.stat(key)
            if now is None or now.token != expect.token:
                return False
        aside = f"{final}.{secrets.token_hex(4)}.del"
        try:
            os.rename(final, aside)
        except FileNotFoundError:
            return False
        self._bump()
        self._forget(key)
        os.unlink(aside)
        return True

    def scan(self) -> Iterator[Stat]:
        """Yield every file under the root except the root's own and those of its dot directories.

        The root's own files are the usage database and the generation; its dot directories
        hold fetch locks.
        """
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel = os.path.relpath(dirpath, self.root)
            if rel == ".":
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                continue
            prefix = rel.replace(os.sep, "/") + "/"
            for name in filenames:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                yield _stat(prefix + name, st)

    def prune(self, prefix: str) -> None:
        """Remove the now empty directories of prefix and above it, up to the root."""
        path = self.path(prefix)
        while path.startswith(self.root + os.sep):
            try:
                os.rmdir(path)
            except OSError:
                if os.path.basename(path) != "@v":
                    break
            path = os.path.dirname(path)
