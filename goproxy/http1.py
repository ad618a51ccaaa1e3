"""HTTP/1.1 wire format without sockets: finding and strictly parsing request heads, formatting response heads."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .errors import ProxyError

# The longest request line accepted (without its CRLF); a longer one is answered 414.
MAX_REQUEST_LINE = 8 << 10
# The longest head accepted (request line, fields and the closing CRLF CRLF); longer is 431.
MAX_HEAD = 32 << 10
# The most header fields accepted in one head; more is 431.
MAX_FIELDS = 100

_CRLF = b"\r\n"
_END = b"\r\n\r\n"
_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Every byte that may appear in a head outside line ends: visible ASCII, SP, HT and obs-text.
_PLAIN = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
# Maps every control byte but HT to NUL, so one membership test finds any of them.
_CONTROLS_TO_NUL = bytes(0 if (b < 0x20 and b != 0x09) or b == 0x7F else b for b in range(256))
_VERSION_LIKE = re.compile(rb"HTTP/[0-9](?:\.[0-9])?")
# uri-host [ ":" port ]: an IP literal or a reg-name / IPv4 address (RFC 3986 3.2.2).
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]*)?")
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT",
                                    "TRACE")}
# Field names the go command and common clients send, in their usual spellings, to skip validation.
_NAMES = {spelling.encode(): name.lower()
          for name in ("Host", "User-Agent", "Accept-Encoding", "Accept", "Connection", "Authorization",
                       "Content-Length", "Transfer-Encoding", "Content-Type", "Cache-Control", "Range",
                       "If-None-Match", "If-Modified-Since", "Accept-Language", "Referer", "Cookie",
                       "X-Forwarded-For", "X-Forwarded-Proto", "X-Real-Ip", "Upgrade", "Expect")
          for spelling in (name, name.lower())}
# Fields whose repetition is refused rather than combined: two values would be ambiguous, and for
# Host and Content-Length, a door to request smuggling through a front end that picks the other one.
_SINGLETONS = frozenset({"host", "content-length", "authorization", "proxy-authorization", "content-type",
                         "range", "if-range", "if-modified-since", "if-unmodified-since"})
_NO_BODY = frozenset({"GET", "HEAD"})

# RFC 9110 section 15 reason phrases; any other status goes out with an empty reason.
REASONS = {
    100: "Continue", 101: "Switching Protocols",
    200: "OK", 201: "Created", 202: "Accepted", 203: "Non-Authoritative Information", 204: "No Content",
    205: "Reset Content", 206: "Partial Content",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Found", 303: "See Other", 304: "Not Modified",
    307: "Temporary Redirect", 308: "Permanent Redirect",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 408: "Request Timeout", 409: "Conflict", 410: "Gone", 411: "Length Required",
    412: "Precondition Failed", 413: "Content Too Large", 414: "URI Too Long", 415: "Unsupported Media Type",
    416: "Range Not Satisfiable", 417: "Expectation Failed", 421: "Misdirected Request",
    422: "Unprocessable Content", 426: "Upgrade Required", 428: "Precondition Required",
    429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout", 505: "HTTP Version Not Supported", 507: "Insufficient Storage",
}
_STATUS_LINES = {code: f"HTTP/1.1 {code} {reason}\r\n" for code, reason in REASONS.items()}


class HeadError(ProxyError):
    """A request head the server refuses; .status is 400, 414, 431, 501 or 505.

    .message is one line of fixed text (never raw client bytes), safe to send as the reply body.
    The connection cannot be trusted to carry another request after it: answer, then close.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, status)


class Request:
    """One parsed request head.

    method: the method token as sent (case-sensitive). target: the origin-form path and query
    with percent-escapes as sent, or "*" (OPTIONS only). version: "HTTP/1.0" or "HTTP/1.1".
    headers: lower-cased field name to value, repeated fields joined with ", ". authority: the
    authority of an absolute-form target, else the Host field ("" when neither). keep_alive:
    whether another request may follow on the connection after the reply (False when the client
    asked to close, or when the request announces a body the server will not read). has_body:
    the request announces a body (Content-Length above 0, or Transfer-Encoding: chunked).
    """

    __slots__ = ("method", "target", "version", "headers", "authority", "keep_alive", "has_body")

    def __init__(self, method: str, target: str, version: str, headers: dict[str, str], authority: str,
                 keep_alive: bool, has_body: bool) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.authority = authority
        self.keep_alive = keep_alive
        self.has_body = has_body

    def header(self, name: str, default: str = "") -> str:
        """Return the value of field name (any case), or default when the request lacks it."""
        return self.headers.get(name.lower(), default)

    def __repr__(self) -> str:
        return (f"Request({self.method!r}, {self.target!r}, {self.version!r}, {self.headers!r}, "
                f"authority={self.authority!r}, keep_alive={self.keep_alive}, has_body={self.has_body})")


def find_head_end(buf: bytes | bytearray, start: int = 0) -> int:
    """Return the index just past the CRLF CRLF that ends the request head in buf, or -1.

    buf holds the bytes received so far, starting at the first byte of the request. start is
    how much of buf an earlier call already searched (pass the previous len(buf)); the search
    resumes three bytes before it, so a CRLF CRLF split across reads is found. One empty line
    (CRLF) before the request line is ignored, as RFC 9112 section 2.2 asks; a second one
    ends an empty head, which parse_head refuses.

    Raises HeadError as soon as buf can no longer begin a head the server accepts, so a reader
    stops reading early: 414 for a request line over MAX_REQUEST_LINE, 431 for a head over
    MAX_HEAD or with more than MAX_FIELDS fields; and while the head is incomplete, 400 for a
    bare LF (a client ending lines with LF alone would otherwise wait for a timeout) or for a
    first word that is not a method (a TLS handshake on the plain port), 400 or 505 for a
    complete request line parse_head would refuse.
    """
    size = len(buf)
    start = min(max(start, 0), size)
    end = buf.find(_END, start - 3 if start > 3 else 0)
    line_start = 2 if buf.startswith(_CRLF) else 0
    # Searching for LF alone is several times faster than for CRLF; a bare LF is refused anyway.
    line_lf = buf.find(b"\n", line_start, line_start + MAX_REQUEST_LINE + 2)
    if line_lf < 0 and size >= line_start + MAX_REQUEST_LINE + 2:
        raise HeadError(414, "request line too long")
    if end >= 0:
        end += 4
        if end > MAX_HEAD:
            raise HeadError(431, "request head too large")
        if end > 2 * MAX_FIELDS and buf.count(b"\n", line_start, end - 2) - 1 > MAX_FIELDS:
            raise HeadError(431, "too many header fields")
        return end
    if size >= MAX_HEAD:
        raise HeadError(431, "request head too large")
    # Work that scans more than the new bytes runs only when they complete a line.
    if buf.find(b"\n", start) >= 0:
        if buf.count(b"\n", start) != buf.count(_CRLF, start - 1 if start else 0):
            raise HeadError(400, "bare LF in request head; lines must end with CRLF")
        if size > 2 * MAX_FIELDS and buf.count(b"\n", line_start) - 1 > MAX_FIELDS:
            raise HeadError(431, "too many header fields")
        if line_lf >= start:
            line = bytes(buf[line_start:line_lf - 1])
            if line.translate(None, _PLAIN):
                raise HeadError(400, "control byte in request line")
            _parse_request_line(line)
    if line_lf < 0:
        word = bytes(buf[line_start:line_start + 32]).split(b" ", 1)[0]
        if word.translate(None, _TCHAR) not in (b"", b"\r"):
            raise HeadError(400, "request does not begin with an HTTP method")
    return -1


def parse_head(data: bytes | bytearray) -> Request:
    """Return the Request that the head in data describes.

    data is the head exactly as find_head_end delimits it: from the first byte through the
    CRLF CRLF that ends it (one leading empty line is ignored).

    Raises HeadError: 414/431 for heads over the limits; 505 for a version other than HTTP/1.0
    and HTTP/1.1; 501 for a Transfer-Encoding other than exactly "chunked"; 400 for anything
    malformed or ambiguous: a request line other than METHOD SP target SP version, a target not
    in origin, absolute (http/https) or asterisk (OPTIONS only) form, control bytes but HT, bare
    CR or LF, obs-fold, a field name that is not a token or has whitespace before the colon, a
    missing (HTTP/1.1) or malformed Host, a repeated field from _SINGLETONS, and every body
    framing that could desynchronize the connection (Content-Length not 1*DIGIT, Content-Length
    with Transfer-Encoding, any body on GET or HEAD, Transfer-Encoding in HTTP/1.0).
    """
    if type(data) is not bytes:
        data = bytes(data)
    if len(data) > MAX_HEAD:
        raise HeadError(431, "request head too large")
    if not data.endswith(_END):
        raise HeadError(400, "request head does not end with an empty line")
    lines = (data[2:-4] if data[0] == 13 and data[1] == 10 else data[:-4]).split(_CRLF)
    # Once split on CRLF, no CR, LF or other control byte but HT may remain anywhere.
    text = b"".join(lines)
    if 0 in text.translate(_CONTROLS_TO_NUL):
        raise _control_error(text)
    if len(lines[0]) > MAX_REQUEST_LINE:
        raise HeadError(414, "request line too long")
    if len(lines) > MAX_FIELDS + 1:
        raise HeadError(431, "too many header fields")
    method, target, version, authority = _parse_request_line(lines[0])
    headers: dict[str, str] = {}
    for i in range(1, len(lines)):
        line = lines[i]
        name, colon, raw = line.partition(b":")
        key = _NAMES.get(name) if colon else None
        if key is None:
            key = _field_name(line, name, colon)
        value = raw.strip(b" \t").decode("latin-1")
        if key in headers:
            if key in _SINGLETONS:
                raise HeadError(400, f"more than one {key} field")
            headers[key] += ", " + value
        else:
            headers[key] = value
    host = headers.get("host")
    if host is None:
        if version == "HTTP/1.1":
            raise HeadError(400, "missing Host field (required in HTTP/1.1)")
        host = ""
    elif not _HOST.fullmatch(host):
        raise HeadError(400, "invalid Host field")
    has_body = False
    length = headers.get("content-length")
    coding = headers.get("transfer-encoding")
    if length is not None or coding is not None:
        has_body = _check_framing(method, version, length, coding)
    connection = headers.get("connection")
    if version == "HTTP/1.1":
        keep_alive = connection is None or not _has_token(connection, "close")
    else:
        keep_alive = connection is not None and _has_token(connection, "keep-alive")
    return Request(method, target, version, headers, host if authority is None else authority,
                   keep_alive and not has_body, has_body)


def format_head(status: int, headers: Sequence[tuple[str, str]], close: bool = False) -> bytes:
    """Return the response head "HTTP/1.1 status reason", the fields, and the closing empty line.

    close adds "Connection: close". The reason phrase comes from REASONS (empty for a status
    not in it). An HTTP/1.0 client that asked for keep-alive needs ("Connection", "keep-alive")
    in headers. Raises ValueError for a status outside 100-999, for CR, LF or NUL in any name
    or value (so a reply can never be split), and (UnicodeEncodeError) for text not in Latin-1.
    """
    line = _STATUS_LINES.get(status)
    if line is None:
        if type(status) is not int or not 100 <= status <= 999:
            raise ValueError(f"invalid status code {status!r}")
        line = f"HTTP/1.1 {status} \r\n"
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers])
    count = len(headers)
    if fields.count("\r") != count or fields.count("\n") != count or "\x00" in fields:
        bad = next(pair for pair in headers if any(c in pair[0] + pair[1] for c in "\r\n\x00"))
        raise ValueError(f"CR, LF or NUL in response header field {bad[0]!r}")
    return (line + fields + ("Connection: close\r\n\r\n" if close else "\r\n")).encode("latin-1")


def _parse_request_line(line: bytes) -> tuple[str, str, str, str | None]:
    """Return method, origin-form target, version, and the absolute-form authority (else None)."""
    parts = line.split(b" ")
    if len(parts) != 3:
        if not line:
            raise HeadError(400, "empty request line")
        if len(parts) == 2 and parts[1][:1] == b"/":
            raise HeadError(400, "HTTP/0.9 request lines are not supported")
        raise HeadError(400, "malformed request line; want METHOD SP target SP HTTP/1.1")
    raw_method, raw_target, raw_version = parts
    if raw_version == b"HTTP/1.1":
        version = "HTTP/1.1"
    elif raw_version == b"HTTP/1.0":
        version = "HTTP/1.0"
    elif _VERSION_LIKE.fullmatch(raw_version):
        raise HeadError(505, f"{raw_version.decode()} not supported; use HTTP/1.1")
    else:
        raise HeadError(400, "malformed HTTP version in request line")
    method = _METHODS.get(raw_method)
    if method is None:
        if not raw_method or raw_method.translate(None, _TCHAR):
            raise HeadError(400, "malformed method in request line")
        method = raw_method.decode("ascii")
    if not raw_target.isascii() or 9 in raw_target or 35 in raw_target:  # HT, "#"
        raise HeadError(400, "request target must be printable ASCII without '#'")
    target = raw_target.decode("ascii")
    if target[:1] == "/":
        return method, target, version, None
    if target == "*":
        if method != "OPTIONS":
            raise HeadError(400, "asterisk-form request target is only for OPTIONS")
        return method, target, version, None
    path, authority = _absolute_form(target)
    return method, path, version, authority


def _absolute_form(target: str) -> tuple[str, str]:
    """Return the origin-form path and query of an http(s) absolute-form target, and its authority."""
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise HeadError(400, "request target must start with '/' or be an absolute http URI")
    cut = len(rest)
    for mark in "/?":
        i = rest.find(mark)
        if 0 <= i < cut:
            cut = i
    authority, path = rest[:cut], rest[cut:]
    if not authority or not _HOST.fullmatch(authority):  # _HOST has no "@": userinfo is refused
        raise HeadError(400, "invalid authority in absolute-form request target")
    if path[:1] != "/":
        path = "/" + path
    return path, authority


def _field_name(line: bytes, name: bytes, colon: bytes) -> str:
    """Return the lower-cased name of a header field line not in _NAMES, or raise HeadError 400."""
    if colon and name and not name.translate(None, _TCHAR):
        return name.decode("ascii").lower()
    if line[:1] in (b" ", b"\t"):
        raise HeadError(400, "obsolete line folding in header field")
    if not line:
        raise HeadError(400, "empty line inside request head")
    if not colon:
        raise HeadError(400, "header field without a colon")
    if not name:
        raise HeadError(400, "empty header field name")
    if name[-1:] in (b" ", b"\t"):
        raise HeadError(400, "whitespace before the colon in a header field")
    raise HeadError(400, "invalid character in header field name")


def _control_error(text: bytes) -> HeadError:
    """Return the error for head text (line ends removed) that holds a control byte."""
    if 0 in text:
        return HeadError(400, "NUL byte in request head")
    if not text.translate(None, _PLAIN + b"\r\n"):
        return HeadError(400, "bare CR or LF in request head")
    return HeadError(400, "control byte in request head")


def _check_framing(method: str, version: str, length: str | None, coding: str | None) -> bool:
    """Return whether the request has a body, after refusing every ambiguous body framing.

    The server reads no request body: a body is refused on GET and HEAD (it would be read as the
    next request), and elsewhere flagged so the connection closes after the reply.
    """
    if coding is not None:
        if length is not None:
            raise HeadError(400, "both Transfer-Encoding and Content-Length")
        if method in _NO_BODY:
            raise HeadError(400, f"Transfer-Encoding on a {method} request")
        if version != "HTTP/1.1":
            raise HeadError(400, "Transfer-Encoding in an HTTP/1.0 request")
        codings = [c for c in (part.strip(" \t").lower() for part in coding.split(",")) if c]
        if codings != ["chunked"]:
            raise HeadError(501, "Transfer-Encoding other than chunked is not implemented")
        return True
    if length is None:
        return False
    if not (length.isascii() and length.isdigit()):
        raise HeadError(400, "Content-Length must be decimal digits")
    if length.strip("0") == "":
        return False
    if method in _NO_BODY:
        raise HeadError(400, f"{method} request with a body")
    return True


def _has_token(value: str, token: str) -> bool:
    """Return whether the comma-separated list value holds token (case-insensitive)."""
    value = value.lower()
    if value == token:
        return True
    return any(part.strip(" \t") == token for part in value.split(","))
