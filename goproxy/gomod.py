"""The go.mod check: the grammar and directive rules of the go command's parser for dependencies."""

from __future__ import annotations

import re
from collections.abc import Callable

from . import modpath
from .validate import InvalidContent, looks_like_html, shown

# go.mod tokens (x/mod/modfile's lexer): spaces, comments, punctuation, strings, identifiers.
_MOD_TOKEN = re.compile(r"""
    (?P<space>[ \t\r]+)
  | (?P<comment>//[^\n]*\n?)
  | (?P<punct>[\n()\[\]{},])
  | (?P<string>"(?:[^"\\\n]|\\[\s\S])*"|`[^`\n]*`)
  | (?P<ident>(?:[^ \t\r\n()\[\]{},/"`\x00-\x1f\x7f]|/(?![/*]))(?:[^ \t\r\n()\[\]{},/\x00-\x1f\x7f]|/(?![/*]))*)
""", re.VERBOSE)
_EOF, _COMMENT, _EOL_COMMENT = "EOF", "COMMENT", "EOLCOMMENT"
_EOL = (_EOF, _EOL_COMMENT, "\n")
_GO_VERSION = re.compile(r"([1-9][0-9]*)\.(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))?([a-z]+[0-9]+)?")
_LAX_GO_VERSION = re.compile(r"v?(([1-9][0-9]*)\.(0|[1-9][0-9]*))([^0-9].*)")
_BLOCK_VERBS = ("module", "godebug", "require", "exclude", "replace", "retract", "tool", "ignore")
_GO_STRING_PART = re.compile(r'([^\\"\n]+)|\\([abfnrtv\\"])|\\x([0-9a-fA-F]{2})|\\([0-3][0-7]{2})'
                             r"|\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})")
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"'}


def check_gomod(data: bytes, module: str) -> None:
    """Check that data is a go.mod file the go command reads for a dependency module.

    The rules are modfile.ParseLax's (the go command's parser for dependencies' go.mod):
    the lexical grammar (// comments, "interpreted" and `raw` strings, verb lines and
    "verb (" blocks closed by ")"), and the checks of the directives it keeps (go, module,
    require, retract, ignore); other directives are ignored. Beyond ParseLax, an HTML page
    and any NUL byte are refused. A module directive must name module (it may be quoted);
    a file without one is accepted. Raises InvalidContent naming the first problem.
    """
    if looks_like_html("", data[:512]):
        raise InvalidContent(f"not a go.mod file (starts with {shown(data.lstrip())})")
    if b"\0" in data:
        raise InvalidContent(f"not a go.mod file (NUL byte at offset {data.index(0)})")
    have_go = have_module = False
    for words, block in _parse_gomod(data.decode("utf-8", "replace")):
        if block is None:
            lines = [(words[0], words[1:])]
        elif len(words) == 1 and words[0] in _BLOCK_VERBS:
            lines = [(words[0], line) for line in block]
        else:
            continue  # a block ParseLax ignores
        for verb, args in lines:
            if verb == "go":
                if have_go or len(args) != 1:
                    raise InvalidContent("go.mod: repeated go directive, or not exactly one argument")
                if not (_GO_VERSION.fullmatch(args[0]) or _LAX_GO_VERSION.fullmatch(args[0])):
                    raise InvalidContent(f"go.mod: invalid go version {args[0]!r}")
                have_go = True
            elif verb == "module":
                if have_module or len(args) != 1:
                    raise InvalidContent("go.mod: repeated module directive, or not exactly one argument")
                have_module = True
                path = _mod_string(args[0])
                if path != module:
                    raise InvalidContent(f"go.mod names module {path!r}, not {module!r}")
            elif verb == "require":
                if len(args) != 2:
                    raise InvalidContent("go.mod: usage: require module/path v1.2.3")
                path, version = _mod_string(args[0]), _mod_string(args[1])
                _, path_major, ok = modpath.split_path_version(path)
                if not ok or not modpath.is_valid_version(version):
                    raise InvalidContent(f"go.mod: invalid requirement {path} {version}")
                if not modpath.match_path_major(version, path_major):
                    raise InvalidContent(f"go.mod: requirement {path} {version}: major version does not match")
            elif verb == "ignore":
                if len(args) != 1:
                    raise InvalidContent("go.mod: ignore directive expects exactly one argument")
                _mod_string(args[0])
            # retract: ParseLax drops a retraction it cannot read; other verbs it ignores.


def _mod_string(token: str) -> str:
    """Return the value of a go.mod argument: a Go "string" unquoted, other tokens as they are."""
    if token.startswith('"'):
        value = _go_unquote(token[1:-1])
        if value is None:
            raise InvalidContent(f"go.mod: invalid quoted string {token}")
        return value
    if any(q in token for q in "\"'`"):
        raise InvalidContent(f"go.mod: unquoted string cannot contain quote: {token}")
    return token


def _go_unquote(body: str) -> str | None:
    """Return the value of a Go interpreted string literal's body, or None if it is malformed."""
    out, pos = bytearray(), 0
    while pos < len(body):
        m = _GO_STRING_PART.match(body, pos)
        if m is None:
            return None
        text, escape, hex2, octal, hex4, hex8 = m.groups()
        if text or escape:
            out += (text or _ESCAPES[escape]).encode("utf-8", "surrogateescape")
        elif hex2 or octal:
            out.append(int(hex2, 16) if hex2 else int(octal, 8))  # an octal escape is at most 377
        else:
            rune = int(hex4 or hex8, 16)
            if rune > 0x10FFFF or 0xD800 <= rune <= 0xDFFF:
                return None
            out += chr(rune).encode()
        pos = m.end()
    return out.decode("utf-8", "surrogateescape")


def _lex_gomod(text: str) -> list[tuple[str, str]]:
    """Split go.mod text into (kind, text) tokens, ending with EOF; raise InvalidContent on bad input."""
    tokens: list[tuple[str, str]] = []
    pos, line = 0, 1
    while pos < len(text):
        m = _MOD_TOKEN.match(text, pos)
        if m is None or (m.lastgroup == "ident" and not m.group().isprintable()):
            bad = text[pos] if m is None else next(c for c in m.group() if not c.isprintable())
            what = "/* comment" if text.startswith("/*", pos) else f"character {bad!r}"
            raise InvalidContent(f"not a go.mod file (line {line}: unexpected {what})")
        kind, value = m.lastgroup or "", m.group()
        if kind == "comment":
            before = text[text.rfind("\n", 0, pos) + 1:pos]
            kind = _EOL_COMMENT if before.strip() else _COMMENT
        elif kind == "punct":
            kind = value
        if kind != "space":
            tokens.append((kind, value))
        line += value.count("\n")
        pos = m.end()
    tokens.append((_EOF, ""))
    return tokens


def _parse_gomod(text: str) -> list[tuple[list[str], list[list[str]] | None]]:
    """Parse go.mod text into statements: (words, None) for a line, (words, lines) for a block.

    Follows modfile's parser: a line whose last token is "(" opens a block that ends at a
    line holding only ")"; "( )" at the end of a line is an empty block.
    """
    tokens = _lex_gomod(text)
    i = 0

    def lex() -> tuple[str, str]:
        nonlocal i
        tok = tokens[i]
        i += tok[0] != _EOF
        return tok

    stmts: list[tuple[list[str], list[list[str]] | None]] = []
    while tokens[i][0] != _EOF:
        if tokens[i][0] in ("\n", _COMMENT):
            lex()
            continue
        words = [lex()[1]]
        while True:
            kind, value = lex()
            if kind in _EOL:
                stmts.append((words, None))
                break
            if kind == "(" and tokens[i][0] in _EOL:
                stmts.append((words, _parse_block(lex)))
                break
            if kind == "(" and tokens[i][0] == ")" and tokens[i + 1][0] in _EOL:
                lex(), lex()
                stmts.append((words, []))
                break
            words.append(value)
    return stmts


def _parse_block(lex: Callable[[], tuple[str, str]]) -> list[list[str]]:
    """Return the lines of a block whose "(" was just read, through its closing ")"."""
    lines: list[list[str]] = []
    while True:
        kind, value = lex()
        if kind in (_EOL_COMMENT, "\n", _COMMENT):
            continue
        if kind == _EOF:
            raise InvalidContent("not a go.mod file (unterminated block)")
        if kind == ")":
            if lex()[0] not in _EOL:
                raise InvalidContent("not a go.mod file (expected newline after closing paren)")
            return lines
        words = [value]
        while (tok := lex())[0] not in _EOL:
            words.append(tok[1])
        lines.append(words)
