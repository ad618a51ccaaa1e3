"""A zip download's partial files: the lock that keeps other processes off them, the chunk record a resume trusts."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from .storage.base import Storage, storage_error
from .validate import MAX_ZIP_FILE

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass
class ChunkState:
    """What the .state file beside a parallel download's .tmp records.

    The zip's size, the chunk size, the upstream's validator (ETag or Last-Modified, for
    If-Range) and the SHA-256 of each finished chunk, so a resume can check them.
    """

    size: int
    chunk: int
    validator: str = ""
    done: dict[int, str] = field(default_factory=dict)

    def chunks(self) -> int:
        """Return the number of chunks."""
        return (self.size + self.chunk - 1) // self.chunk

    def span(self, i: int) -> tuple[int, int]:
        """Return chunk i's first and last byte offsets."""
        return i * self.chunk, min(self.size, (i + 1) * self.chunk) - 1

    def dump(self) -> bytes:
        """Return the state as the .state file's JSON."""
        return json.dumps({"size": self.size, "chunk": self.chunk, "validator": self.validator,
                           "done": {str(i): h for i, h in sorted(self.done.items())}}).encode()

    @classmethod
    def load(cls, data: bytes) -> ChunkState:
        """Parse a .state file; raise ValueError for anything malformed.

        The size must be positive and at most MAX_ZIP_FILE, the chunk size positive, and every
        finished chunk a chunk of the zip with a SHA-256 in lower-case hex.
        """
        d = json.loads(data)
        done = {int(i): str(h) for i, h in d["done"].items()}
        state = cls(int(d["size"]), int(d["chunk"]), str(d.get("validator", "")), done)
        if not 0 < state.size <= MAX_ZIP_FILE or state.chunk <= 0:
            raise ValueError("size or chunk out of range")
        if any(not 0 <= i < state.chunks() or not _SHA256.fullmatch(h) for i, h in done.items()):
            raise ValueError("malformed chunk list")
        return state


@contextlib.contextmanager
def exclusive(storage: Storage, key: str, path: str, name: str) -> Iterator[None]:
    """Hold an flock on path, a staging file beside key, while the context is entered.

    The file is created if absent and removed on exit, so that proxies in other processes
    sharing the cache do not write the same partial files. Waits, logging that it does, while
    another process holds it. Raises StorageError when the lock file cannot be made or locked.
    """
    for _ in range(3):
        f = storage.create(key, path)
        try:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("waiting for another process downloading %s", name)
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            held = os.fstat(f.fileno())
            try:
                now = os.stat(path)
            except FileNotFoundError:
                now = None
        except BaseException as exc:
            f.close()
            if isinstance(exc, OSError):
                raise storage_error(key, exc) from exc
            raise
        if now is None or (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
            f.close()  # the holder removed the file we waited on: lock the one there now
            continue
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            f.close()
        return
    raise storage_error(key, OSError(errno.EBUSY, "its lock file keeps being replaced"))


def load_state(state_path: str, tmp: str, name: str) -> ChunkState | None:
    """Return the usable chunk record of a parallel download of name, or None.

    A .tmp and .state (state_path) that do not match are discarded, and the chunks whose bytes
    in the .tmp no longer match their hash are forgotten.
    """
    try:
        with open(state_path, "rb") as f:
            state = ChunkState.load(f.read())
        if os.path.getsize(tmp) != state.size:
            raise ValueError(f"{tmp} is not {state.size} bytes")
        _check_chunks(tmp, state, name)
        log.info("resuming %s: %d of %d chunks already here", name, len(state.done), state.chunks())
        return state
    except FileNotFoundError as exc:
        if exc.filename == tmp:
            log.warning("discarding %s: no %s beside it", state_path, tmp)
        elif os.path.exists(tmp):
            log.warning("discarding %s: no state file beside it", tmp)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        log.warning("discarding partial download of %s: %s", name, exc)
    discard(tmp, state_path)
    return None


def _check_chunks(tmp: str, state: ChunkState, name: str) -> None:
    """Forget the finished chunks whose bytes in tmp no longer match their hash."""
    with open(tmp, "rb") as f:
        for i, digest in sorted(state.done.items()):
            start, end = state.span(i)
            f.seek(start)
            if hashlib.sha256(f.read(end + 1 - start)).hexdigest() != digest:
                log.warning("%s: chunk %d in %s is damaged; fetching it again", name, i, tmp)
                del state.done[i]


def save_state(state_path: str, state: ChunkState) -> None:
    """Replace the .state file at state_path with state, atomically."""
    tmp = state_path + ".new"
    with open(tmp, "wb") as f:
        f.write(state.dump())
    os.replace(tmp, state_path)


def discard(*paths: str) -> None:
    """Remove the files at paths; one that is already gone is no error."""
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
