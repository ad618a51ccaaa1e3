"""Shared memory for metric values, and beside them each process's board of one posted document.

A region of slots, one per process, is inherited across fork; beside each slot is a board, where
its process posts one small document for the others to read.

A slot is a header and then entries, each a length-prefixed key and an 8-byte float value.
Only the process owning a slot writes it (under its own locks); any process reads every slot.
An entry becomes visible when its length is written, after its key and value, so a reader
never sees half of one; a float is one aligned 8-byte store.

A board holds the last document its process posted: a length, a CRC-32 and the bytes. Only
the slot's process posts; a reader that catches a post half-written sees a CRC that does not
match, and reads again.
"""

from __future__ import annotations

import logging
import mmap
import struct
import threading
import time
import zlib
from collections.abc import Iterator

log = logging.getLogger(__name__)

# Bytes per slot; a slot holds a few thousand samples.
SLOT_SIZE = 256 << 10
# Bytes per board: the largest document a process can post.
BOARD_SIZE = 128 << 10
# Slot states, in the header's first word.
FREE, LIVE, DORMANT = 0, 1, 2
# How many times a reader reads a board before giving up on catching it between posts (a post
# copies at most BOARD_SIZE bytes: about as long as one read).
_READ_TRIES = 5

_HEADER = 16  # state u32, bytes used u32, pid u32, spare u32
_U32 = struct.Struct("=I")
_F64 = struct.Struct("=d")
_BOARD_HEADER = struct.Struct("=II")  # length, CRC-32 of the document


def _align(n: int) -> int:
    return (n + 7) & ~7


class Region:
    """An anonymous shared mapping of slots and their boards.

    It takes slots × (SLOT_SIZE + BOARD_SIZE) bytes; untouched pages cost nothing. Created
    before fork, it is the same memory in the parent and every worker. A new region has its
    first slot live. created is when it was made (Unix time): the server's start, for every
    process that inherits it.
    """

    def __init__(self, slots: int) -> None:
        self.slots = max(1, slots)
        self.created = time.time()
        self._mem = mmap.mmap(-1, self.slots * (SLOT_SIZE + BOARD_SIZE))
        self._claim = threading.Lock()
        # One lock per board: a fork while another board's post is under way leaves the child's
        # own board free.
        self._post = [threading.Lock() for _ in range(self.slots)]
        self.set_state(0, LIVE)

    def slot(self, index: int) -> Slot:
        """Return slot index, for the process that writes it (it adopts the entries already there).

        Raises IndexError for an index outside the region.
        """
        if not 0 <= index < self.slots:
            raise IndexError(f"slot {index} outside a region of {self.slots}")
        return Slot(memoryview(self._mem)[index * SLOT_SIZE:(index + 1) * SLOT_SIZE], index)

    def _board(self, index: int) -> int:
        if not 0 <= index < self.slots:
            raise IndexError(f"board {index} outside a region of {self.slots}")
        return self.slots * SLOT_SIZE + index * BOARD_SIZE

    def post(self, index: int, document: bytes) -> bool:
        """Replace board index's document (only slot index's process may); False when it does not fit.

        Raises IndexError for an index outside the region.
        """
        if len(document) > BOARD_SIZE - _BOARD_HEADER.size:
            return False
        at = self._board(index)
        with self._post[index]:
            self._mem[at + _BOARD_HEADER.size:at + _BOARD_HEADER.size + len(document)] = document
            _BOARD_HEADER.pack_into(self._mem, at, len(document), zlib.crc32(document))
        return True

    def board(self, index: int) -> bytes | None:
        """Return board index's document, or None when there is none to read.

        None means nothing was posted there, or no whole copy could be read while its process
        kept posting. Raises IndexError for an index outside the region.
        """
        at = self._board(index)
        for _ in range(_READ_TRIES):
            length, crc = _BOARD_HEADER.unpack_from(self._mem, at)
            if length == 0:
                return None
            if length <= BOARD_SIZE - _BOARD_HEADER.size:
                document = self._mem[at + _BOARD_HEADER.size:at + _BOARD_HEADER.size + length]
                if zlib.crc32(document) == crc and _BOARD_HEADER.unpack_from(self._mem, at) == (length, crc):
                    return document
        return None

    def state(self, index: int) -> int:
        """Return slot index's state: FREE, LIVE or DORMANT."""
        return int(_U32.unpack_from(self._mem, index * SLOT_SIZE)[0])

    def set_state(self, index: int, state: int) -> None:
        """Mark slot index FREE, LIVE (a process writes it) or DORMANT (its process ended)."""
        _U32.pack_into(self._mem, index * SLOT_SIZE, state)

    def claim(self) -> int | None:
        """Mark a dormant slot live (its counters go on counting), else a free one; return its index.

        Return None when no slot is dormant or free (the region is full).
        """
        with self._claim:
            for wanted in (DORMANT, FREE):
                for i in range(1, self.slots):
                    if self.state(i) == wanted:
                        self.set_state(i, LIVE)
                        return i
        return None

    def entries(self) -> Iterator[tuple[str, float, bool]]:
        """Yield (key, value, live) for every entry of every slot in use."""
        for i in range(self.slots):
            state = self.state(i)
            if state == FREE:
                continue
            mem = memoryview(self._mem)[i * SLOT_SIZE:(i + 1) * SLOT_SIZE]
            for key, off in _walk(mem):
                yield key, _F64.unpack_from(mem, off)[0], state == LIVE


def _walk(mem: memoryview) -> Iterator[tuple[str, int]]:
    """Yield (key, value offset) of each complete entry in a slot."""
    pos = _HEADER
    size = len(mem)
    while pos + 4 <= size:
        length = _U32.unpack_from(mem, pos)[0]
        if length == 0 or pos + 4 + length + 8 > size:
            return
        key = bytes(mem[pos + 4:pos + 4 + length]).decode("utf-8", "replace")
        value_at = _align(pos + 4 + length)
        yield key, value_at
        pos = value_at + 8


class Slot:
    """One process's part of a region (the index-th).

    Keys are mapped to value offsets; values are added or set in place.
    """

    def __init__(self, mem: memoryview, index: int = 0) -> None:
        self.index = index
        self._mem = mem
        self._lock = threading.Lock()
        self._keys: dict[str, int] = {}
        self._end = _HEADER
        self._full = False
        self._spare = bytearray()  # private cells of keys that did not fit, past the slot's end
        self._base = len(mem)
        for key, off in _walk(mem):  # a slot taken over from an ended process keeps its entries
            self._keys[key] = off
            self._end = off + 8

    def offset(self, key: str) -> int:
        """Return the value offset of key, adding an entry (value 0) on first use.

        When the slot is full the value gets a private cell outside shared memory: get() still
        sees it, but no render does (logged once).
        """
        with self._lock:
            off = self._keys.get(key)
            if off is not None:
                return off
            raw = key.encode()
            value_at = _align(self._end + 4 + len(raw))
            if value_at + 8 > len(self._mem) or self._full:
                if not self._full:
                    log.warning("metrics slot is full; new samples (from %s) are not shared with other "
                                "processes", key.split("\0", 1)[0])
                    self._full = True
                off = self._keys[key] = self._private(key)
                return off
            start = self._end
            _F64.pack_into(self._mem, value_at, 0.0)
            self._mem[start + 4:start + 4 + len(raw)] = raw
            _U32.pack_into(self._mem, start, len(raw))  # the entry becomes visible here
            self._end = value_at + 8
            _U32.pack_into(self._mem, 4, self._end)
            self._keys[key] = value_at
            return value_at

    def _private(self, key: str) -> int:
        """Give key a cell in a private buffer past the slot's end; return its offset."""
        self._spare.extend(bytes(8))
        return self._base + len(self._spare) - 8

    def _view(self, off: int) -> tuple[memoryview | bytearray, int]:
        """Return the buffer holding the value at off, and its offset there."""
        if off < len(self._mem):
            return self._mem, off
        return self._spare, off - self._base

    def add(self, off: int, amount: float) -> None:
        """Add amount to the value at off (the caller serializes writers of one value)."""
        mem, off = self._view(off)
        _F64.pack_into(mem, off, _F64.unpack_from(mem, off)[0] + amount)

    def put(self, off: int, value: float) -> None:
        """Set the value at off."""
        mem, off = self._view(off)
        _F64.pack_into(mem, off, value)

    def get(self, off: int) -> float:
        """Return the value at off."""
        mem, off = self._view(off)
        return float(_F64.unpack_from(mem, off)[0])

    def zero(self, prefix: str) -> None:
        """Set every value whose key starts with prefix to 0 (gauges of a process that ended)."""
        with self._lock:
            for key, off in self._keys.items():
                if key.startswith(prefix) and off < len(self._mem):
                    _F64.pack_into(self._mem, off, 0.0)
