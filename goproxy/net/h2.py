"""The part of HTTP/2 (RFC 9113) and HPACK (RFC 7541) one GET needs.

It serves DoH servers that speak nothing else (unbound, Knot Resolver): http.client has no
HTTP/2.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Mapping

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PING, _GOAWAY, _CONTINUATION = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x9
_END_STREAM, _ACK, _END_HEADERS, _PADDED, _PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
_MAX_FRAME = 16384  # SETTINGS_MAX_FRAME_SIZE: we keep the default, so no frame is larger
_STREAM = 1  # the one request's stream

# HPACK static table entries this client uses (RFC 7541 Appendix A): names it sends, and
# the :status and content-type entries it reads.
_NAME_INDEX = {":authority": 1, ":path": 4, "accept": 19, "user-agent": 58}
_STATIC = {8: (":status", "200"), 9: (":status", "204"), 10: (":status", "206"), 11: (":status", "304"),
           12: (":status", "400"), 13: (":status", "404"), 14: (":status", "500"), 31: ("content-type", None)}


def _frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def get(sock: socket.socket, authority: str, path: str, headers: Mapping[str, str], deadline: float,
        limit: int) -> tuple[int, str, bytes]:
    """Send GET https://authority/path on sock as stream 1; return (status, content type, body).

    sock is a TLS socket that negotiated h2; the result comes once the stream ends.

    status is 0 when the server sent a Huffman-coded status, which this client does not decode
    (never for 200: HPACK sends that as a static table index); content type is "" when unknown
    for the same reason. Raises OSError on network failures and time.monotonic() passing
    deadline, ValueError on a protocol error, a reset stream or a body over limit bytes.
    """
    block = b"\x82\x87" + _literal(":path", path) + _literal(":authority", authority)  # GET, https
    for name, value in headers.items():
        block += _literal(name.lower(), value)
    settings = struct.pack(">HI", 0x2, 0)  # SETTINGS_ENABLE_PUSH = 0
    sock.sendall(_PREFACE + _frame(_SETTINGS, 0, 0, settings)
                 + _frame(_HEADERS, _END_STREAM | _END_HEADERS, _STREAM, block))
    head, body = bytearray(), bytearray()
    status, content_type, headers_done, ended = 0, "", False, False
    while not (headers_done and ended):
        if time.monotonic() > deadline:
            raise socket.timeout("timed out")
        ftype, flags, stream, payload = _read_frame(sock)
        if ftype == _SETTINGS and not flags & _ACK:
            sock.sendall(_frame(_SETTINGS, _ACK, 0))
        elif ftype == _PING and not flags & _ACK:
            sock.sendall(_frame(_PING, _ACK, 0, payload))
        elif ftype == _GOAWAY:
            last, code = struct.unpack(">II", payload[:8])
            if (last & 0x7FFFFFFF) < _STREAM:
                raise ValueError(f"server refused the request (HTTP/2 GOAWAY, error {code})")
        elif stream != _STREAM:
            continue
        elif ftype == _RST_STREAM:
            raise ValueError(f"server reset the request (HTTP/2 error {struct.unpack('>I', payload[:4])[0]})")
        elif ftype in (_HEADERS, _CONTINUATION) and not headers_done:
            head += _unpad(flags, payload, ftype == _HEADERS)
            ended = ended or bool(flags & _END_STREAM)
            if flags & _END_HEADERS:
                status, content_type = _read_status(bytes(head))
                headers_done = True
        elif ftype == _HEADERS:  # trailers
            ended = ended or bool(flags & _END_STREAM)
        elif ftype == _DATA:
            body += _unpad(flags, payload, False)
            if len(body) > limit:
                raise ValueError(f"answer larger than {limit} bytes")
            ended = ended or bool(flags & _END_STREAM)
    return status, content_type, bytes(body)


def _read_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("server closed the connection")
        data += chunk
    return bytes(data)


def _read_frame(sock: socket.socket) -> tuple[int, int, int, bytes]:
    head = _read_exact(sock, 9)
    length = int.from_bytes(head[:3], "big")
    if length > _MAX_FRAME:
        raise ValueError(f"HTTP/2 frame of {length} bytes is larger than allowed")
    stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
    return head[3], head[4], stream, _read_exact(sock, length)


def _unpad(flags: int, payload: bytes, headers: bool) -> bytes:
    if flags & _PADDED:
        pad = payload[0]
        payload = payload[1:len(payload) - pad] if pad else payload[1:]
    if headers and flags & _PRIORITY:
        payload = payload[5:]
    return payload


# HPACK.

def _int(value: int, prefix: int, flags: int = 0) -> bytes:
    """Encode an HPACK integer with a prefix-bit first byte (RFC 7541 section 5.1)."""
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes([flags | value])
    out = bytearray([flags | limit])
    value -= limit
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode("latin-1")
    return _int(len(data), 7) + data  # not Huffman-coded


def _literal(name: str, value: str) -> bytes:
    """Encode a header field "without indexing", by static name index when there is one."""
    index = _NAME_INDEX.get(name)
    if index is not None:
        return _int(index, 4) + _string(value)
    return b"\x00" + _string(name) + _string(value)


def _read_int(data: bytes, pos: int, prefix: int) -> tuple[int, int]:
    limit = (1 << prefix) - 1
    value = data[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    while True:
        b = data[pos]
        pos += 1
        value += (b & 127) << shift
        shift += 7
        if not b & 128:
            return value, pos
        if shift > 28:
            raise ValueError("HPACK integer too large")


def _read_string(data: bytes, pos: int) -> tuple[str | None, int]:
    """Return a string literal and the position after it; None for a Huffman-coded one (not decoded)."""
    huffman = bool(data[pos] & 0x80)
    length, pos = _read_int(data, pos, 7)
    if pos + length > len(data):
        raise ValueError("HPACK string runs past the header block")
    text = None if huffman else data[pos:pos + length].decode("latin-1")
    return text, pos + length


def _read_status(block: bytes) -> tuple[int, str]:
    """Decode a response header block far enough to find :status and content-type.

    One response per connection means the dynamic table never fills, so no entry is ever
    evicted and sizes need not be tracked.
    """
    table: list[tuple[str | None, str | None]] = []  # dynamic table, newest first

    def entry(index: int) -> tuple[str | None, str | None]:
        if index > 61:
            if index - 62 >= len(table):
                raise ValueError(f"HPACK index {index} not in the table")
            return table[index - 62]
        if index < 1:
            raise ValueError("HPACK index 0")
        return _STATIC.get(index, (None, None))

    fields: dict[str, str | None] = {}
    pos = 0
    try:
        while pos < len(block):
            b = block[pos]
            if b & 0x80:  # indexed field
                index, pos = _read_int(block, pos, 7)
                name, value = entry(index)
            elif b & 0xE0 == 0x20:  # dynamic table size update
                _, pos = _read_int(block, pos, 5)
                continue
            else:  # literal: with incremental indexing (01), without or never indexed (000x)
                indexed = bool(b & 0x40)
                index, pos = _read_int(block, pos, 6 if indexed else 4)
                if index:
                    name = entry(index)[0]
                else:
                    name, pos = _read_string(block, pos)
                value, pos = _read_string(block, pos)
                if indexed:
                    table.insert(0, (name, value))
            if name is not None:
                fields.setdefault(name, value)
    except IndexError:
        raise ValueError("HPACK header block cut short") from None
    status = fields.get(":status") or ""
    return int(status) if status.isdigit() else 0, fields.get("content-type") or ""
