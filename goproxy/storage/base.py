"""The Storage interface: what the service, downloader, usage and cleanup see of the cache."""

from __future__ import annotations

import abc
import contextlib
import errno
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import StorageError, StoreUnavailable

# Suffixes of in-progress files; never served, never adopted as artifacts.
PARTIAL_SUFFIXES = (".part", ".tmp", ".state", ".lock", ".del")

# errnos that mean the disk refused a write, as opposed to a failed upstream read.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO, errno.EACCES})


# A fence is asked right before a commit makes an artifact visible: False means the caller's
# lock on the key was lost (a newer holder may be committing), so nothing is committed.
Fence = Callable[[], bool]


class LeaseLost(StoreUnavailable):
    """The lock on a key ran out before its fetch could commit; nothing was committed; status 503.

    The holder stalled and another replica took over.
    """


def check_fence(key: str, fence: Fence | None) -> None:
    """Raise LeaseLost when fence says the caller no longer holds key's lock."""
    if fence is not None and not fence():
        raise LeaseLost(f"lost the lock on {key} before committing it; another holder took over")


def storage_error(key: str, exc: OSError) -> StorageError:
    """Return the StorageError for a write of key that the disk refused with exc."""
    reason = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else exc.strerror
    return StorageError(f"cannot write {key} to the cache: {reason}")


@dataclass(frozen=True)
class Stat:
    """What storage knows of one stored name (a committed artifact or a partial file).

    token changes whenever the object under key is replaced (inode and mtime on disk, the ETag
    in a bucket), so a caller can tell "the file I saw" from "a fresh copy".
    """

    key: str
    size: int
    mtime: float
    token: str


class Blob:
    """An opened, committed artifact: its bytes in memory, or a readable file or stream.

    sendfile is True when file is a local file the reply may hand to socket.sendfile; any
    other file is read in pieces. Close it when done (a Blob holding only bytes needs none).
    """

    __slots__ = ("size", "mtime", "body", "file", "sendfile")

    def __init__(self, size: int, mtime: float, body: bytes | None = None, file: BinaryIO | None = None,
                 sendfile: bool = False) -> None:
        self.size, self.mtime, self.body, self.file, self.sendfile = size, mtime, body, file, sendfile

    def read(self) -> bytes:
        """Return the whole content (the caller knows it is small enough)."""
        if self.body is not None:
            return self.body
        assert self.file is not None
        return self.file.read()

    def close(self) -> None:
        """Release the open file or stream, if any; idempotent."""
        if self.file is not None:
            self.file.close()
            self.file = None


class Storage(abc.ABC):
    """Where committed artifacts live, named by cache key ("mod/@v/v1.0.0.zip").

    A committed artifact is always complete: it appears whole (by an atomic rename or a
    finished upload) or not at all. Partial downloads live in local staging files beside the
    key's staging path, never under the key itself. Keys are validated: one that could escape
    the store raises BadRequest.
    """

    @abc.abstractmethod
    def open(self, key: str, immutable: bool = False) -> Blob | None:
        """Return the committed artifact under key opened for reading, or None when absent.

        immutable says the bytes under key never change once written, so a store may answer
        small ones from memory.
        """

    def open_kept(self, key: str) -> Blob | None:
        """Return the immutable artifact under key when it is held in memory, else None.

        Never waits on disk or network (the server's loop answers such a hit itself). None by
        default: a store that keeps nothing in memory leaves every request to open().
        """
        return None

    @abc.abstractmethod
    def stat(self, key: str) -> Stat | None:
        """Return what the store knows of key, or None when absent."""

    def read(self, key: str) -> bytes | None:
        """Return the whole committed artifact under key, or None when absent."""
        blob = self.open(key)
        if blob is None:
            return None
        try:
            return blob.read()
        finally:
            blob.close()

    @abc.abstractmethod
    @contextlib.contextmanager
    def writer(self, key: str, mtime: float | None = None, fence: Fence | None = None) -> Iterator[BinaryIO]:
        """Yield a file to write key's content to; commit it atomically on a clean exit.

        mtime, when given, is stamped as the artifact's time (freshness is judged by it).
        fence, when given, is asked right before the commit; when it answers False nothing is
        committed and LeaseLost is raised. On an exception nothing appears under key. Raises
        StorageError when the store refuses, StoreUnavailable when it cannot be reached.
        """

    def write(self, key: str, data: bytes, mtime: float | None = None, fence: Fence | None = None) -> None:
        """Store data under key atomically, as writer does; raise as writer does."""
        with self.writer(key, mtime, fence) as f:
            f.write(data)

    @abc.abstractmethod
    def swap(self, key: str, data: bytes, expect: Stat | None) -> bool:
        """Replace key with data only while key is still what expect describes; return True if done.

        expect None means "only if key is absent". A compare-and-swap across every process and
        replica sharing the store (an flock on disk, a conditional write in a bucket): False
        means another writer got there first; read key again and decide again. Raises
        StorageError or StoreUnavailable as writer does.
        """

    @abc.abstractmethod
    def staging(self, key: str) -> str:
        """Return the local path beside which a resumable download of key keeps its partial files.

        The download adds suffixes from PARTIAL_SUFFIXES to it; the files survive a restart
        so the download can resume.
        """

    @abc.abstractmethod
    def create(self, key: str, path: str) -> BinaryIO:
        """Open path, a staging file of key, for writing, making its directory; raise StorageError."""

    @abc.abstractmethod
    def commit(self, path: str, key: str, mtime: float | None = None, fence: Fence | None = None) -> None:
        """Commit path, a complete and fsynced staging file of key, as key (stamped with mtime).

        The staging file is consumed. fence is asked right before the artifact becomes visible
        (LeaseLost when it answers False). Raises StorageError when the store refuses,
        StoreUnavailable when it cannot be reached.
        """

    @abc.abstractmethod
    def delete(self, key: str, expect: Stat | None = None) -> bool:
        """Remove key; return True if something was removed.

        With expect, remove it only while it is still the object expect describes (same
        token): a fresh copy written since is left alone. Readers that have it open keep
        their copy.
        """

    @abc.abstractmethod
    def scan(self) -> Iterator[Stat]:
        """Yield every stored name in no particular order, staging files included.

        A staging file's key ends in one of PARTIAL_SUFFIXES. Names that vanish during the
        scan are skipped.
        """

    @abc.abstractmethod
    def prune(self, prefix: str) -> None:
        """Drop what holds no artifact any more under prefix (empty directories on disk)."""
