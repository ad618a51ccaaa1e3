"""One client connection: its received bytes, its state in the server loop, and sending its answer.

Sending is non-blocking: bytes, then a file by sendfile or a stream read in chunks; over TLS, a
file read in pieces.
"""

from __future__ import annotations

import os
import socket
import ssl

from .http1 import HeadError, Request, find_head_end, parse_head
from .respond import Answer

# States; the loop owns a connection in every state but BUSY (a handler thread has it).
IDLE = 0  # waiting for the first byte of a request (a new or a keep-alive connection)
HEAD = 1  # part of a request head has arrived
BUSY = 2  # a request is being answered, or a stream is being read for it, in a handler thread
WRITE = 3  # an answer is being sent as the client takes it
LINGER = 4  # the write side is shut: discarding what the client still sends, then closing
CLOSED = 5
HANDSHAKE = 6  # a TLS connection whose handshake is under way (within -header-timeout of the accept)

# push() results.
DONE, BLOCKED, REFILL = 0, 1, 2

# A streamed body (not a local file) is read in pieces of this size.
CHUNK = 256 << 10
# Over TLS a local file is read in pieces of this size by the loop (sendfile cannot encrypt).
TLS_CHUNK = 64 << 10
_SENDFILE = hasattr(os, "sendfile")
# What a non-blocking send or receive raises when it must wait (on a TLS socket, for either direction).
WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class ShortBody(ConnectionError):
    """The stored artifact ended before its announced size: the answer cannot be completed."""


class Conn:
    """A client connection and the answer being sent on it.

    The loop thread and a handler thread take turns: only the one that owns the connection
    (see the states) touches it. Sockets are non-blocking throughout.
    """

    __slots__ = ("sock", "client", "tls", "buf", "searched", "state", "events", "deadline", "fresh", "answer",
                 "out", "sent", "file_fd", "pos", "end", "stream_left", "pushed", "after")

    def __init__(self, sock: socket.socket, client: str) -> None:
        self.sock = sock
        self.client = client
        self.tls = isinstance(sock, ssl.SSLSocket)  # no sendfile: files go out in pieces read here
        self.buf = b""  # received and not yet parsed (the start of the next request)
        self.searched = 0  # how much of buf find_head_end has already looked at
        self.state = IDLE
        self.events = 0  # the selector events registered (0: not registered)
        self.deadline = 0.0
        self.fresh = True  # no request yet: the header timeout runs from the accept
        self.answer: Answer | None = None
        self.out: memoryview | bytes = b""
        self.sent = 0
        self.file_fd = -1
        self.pos = 0
        self.end = 0
        self.stream_left = 0
        self.pushed = 0  # bytes of the current answer sent, head included
        self.after = IDLE  # the state a handler thread hands the connection back in

    def load(self, answer: Answer) -> None:
        """Make answer the one to send: its bytes, then its blob (sendfile for a local file)."""
        self.answer = answer
        self.out, self.sent, self.pushed = answer.data, 0, 0
        self.file_fd, self.stream_left = -1, 0
        blob = answer.blob
        if blob is None or blob.file is None:
            return
        if blob.sendfile and (_SENDFILE or self.tls):
            self.file_fd, self.pos, self.end = blob.file.fileno(), 0, answer.size
        else:
            self.stream_left = answer.size

    def push(self) -> int:
        """Send what the socket takes now, and say why it stopped.

        Return DONE when the answer is all out, BLOCKED when the socket is full, REFILL when a
        streamed body needs its next piece read. Raise OSError when the client is gone,
        ShortBody when a file ends early.

        Over TLS a local file is read here, a piece at a time (reads of the page cache are
        quick; encrypting is the socket's work), and a blocked send is retried with the same
        bytes, as OpenSSL requires.
        """
        sock = self.sock
        out = self.out
        while True:
            while self.sent < len(out):
                try:
                    n = sock.send(out[self.sent:] if self.sent else out)
                except WOULD_BLOCK:
                    return BLOCKED
                self.sent += n
                self.pushed += n
            if not self.tls or self.file_fd < 0 or self.pos >= self.end:
                break
            data = os.pread(self.file_fd, min(TLS_CHUNK, self.end - self.pos), self.pos)
            if not data:
                raise ShortBody(f"the file ended {self.end - self.pos} bytes short")
            self.pos += len(data)
            self.out = out = memoryview(data)
            self.sent = 0
        if self.file_fd >= 0 and not self.tls:
            while self.pos < self.end:
                try:
                    n = os.sendfile(sock.fileno(), self.file_fd, self.pos, self.end - self.pos)
                except BlockingIOError:
                    return BLOCKED
                if n == 0:
                    raise ShortBody(f"the file ended {self.end - self.pos} bytes short")
                self.pos += n
                self.pushed += n
        if self.stream_left > 0:
            return REFILL
        return DONE

    def refill(self) -> None:
        """Read the next piece of a streamed body (may block: call it in a handler thread).

        Raises ShortBody when the stream ends early, OSError when it fails.
        """
        answer = self.answer
        assert answer is not None and answer.blob is not None and answer.blob.file is not None
        data = answer.blob.file.read(min(CHUNK, self.stream_left))
        if not data:
            raise ShortBody(f"the stored stream ended {self.stream_left} bytes short")
        self.stream_left -= len(data)
        self.out, self.sent = memoryview(data), 0

    def tls_pending(self, size: int) -> bytes:
        """Return what the TLS layer decrypted and holds beyond the last recv, read size bytes at a time.

        The selector cannot see these bytes.
        """
        sock = self.sock
        assert isinstance(sock, ssl.SSLSocket)
        more = b""
        while sock.pending():
            try:
                more += sock.recv(size)
            except WOULD_BLOCK:
                break
        return more

    def next_request(self) -> Request | HeadError | None:
        """Return the next complete request already received, its HeadError, or None."""
        if not self.buf:
            return None
        try:
            end = find_head_end(self.buf, 0)
            if end < 0:
                return None
            req = parse_head(self.buf[:end])
        except HeadError as err:
            self.buf = b""
            return err
        self.buf = self.buf[end:]
        return req

    def body_sent(self) -> int:
        """Return the body bytes of the current answer sent so far."""
        answer = self.answer
        return 0 if answer is None else max(0, self.pushed - answer.head_len)

    def release(self) -> None:
        """Close the current answer's blob, if any (idempotent)."""
        answer = self.answer
        if answer is not None and answer.blob is not None:
            answer.blob.close()
        self.file_fd = -1
        self.stream_left = 0

    def close(self) -> None:
        """Release the answer and close the socket."""
        self.release()
        self.state = CLOSED
        try:
            self.sock.close()
        except OSError:
            pass

