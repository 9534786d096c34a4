"""xl.cfg syntax: turn the text of a Xen domain configuration file into settings.

This module knows the *syntax* only; what the settings mean is decided in
:mod:`pyxen.toolstack.domain_config`.  It follows the grammar of Xen's libxlu
(``tools/libs/util/libxlu_cfg_l.l`` and ``libxlu_cfg_y.y``) so that files
written for ``xl create`` are read unchanged.

Grammar::

    file       := { statement? ( NEWLINE | ';' ) } statement?
    statement  := IDENT ( '=' | '+=' ) value
    value      := STRING | NUMBER | list
    list       := '[' NL* ( value NL* { ',' NL* value NL* } ( ',' NL* )? )? ']'

    IDENT      := [A-Za-z_][A-Za-z0-9_.]*
    NUMBER     := [0-9][0-9a-fx]*          (then read as a C long, see below)
    STRING     := "..." | '...'            (one line; escapes below)
    NEWLINE    := '\\n' | '#' comment-to-end-of-line
    blanks     := ' ' | '\\t' | '\\r'

Rules:

* Settings end at a newline or ``;``; the last one may end at end of file.
  A comment runs from ``#`` to the end of the line.  Inside ``[ ]`` newlines
  (and so comments) are allowed anywhere except in a string; a trailing comma
  is allowed; lists may be empty and may nest (``vnuma`` uses nested lists).
* Strings take the escapes ``\\" \\' \\\\ \\a \\b \\f \\n \\r \\t \\v``,
  ``\\xHH`` (exactly two hex digits) and ``\\ooo`` (one to three octal
  digits).  Any other escape is an error.
* A NUMBER token is read like C ``strtol(s, &end, 0)``: ``0x`` prefix is hex,
  a leading ``0`` is octal (``010`` is 8), otherwise decimal.  A valid one
  becomes an :class:`XlNumber` (an ``int`` that keeps its original text);
  a token that lexes as a number but is not one (``08``, ``1e``) stays a
  ``str``, exactly as libxlu keeps every atom as text until asked for a number.
  There are no negative numbers, units or expressions.
* ``key = value`` replaces any earlier setting of ``key`` (the last one wins).
  ``key += value`` appends: string to string is concatenation, list to list
  is list concatenation; mixing a list and a string is an error, and so is
  ``+=`` with a number (xl refuses numbers set with ``+=``).  With no earlier
  setting, ``+=`` acts as ``=``.
* Every setting remembers where it was made (:attr:`XlSetting.where`), so the
  layer above can say ``hello.cfg:4: memory must be ...``.

Deliberate differences from libxlu (all accept a superset of what xl
accepts): identifiers may contain upper case and start with ``_``; ``\\r`` is
a blank so DOS line endings work; a comment may end the file without a
newline; ``\\xHH`` and octal escapes produce the character they name (in
libxlu they are rejected or dropped).  Parsing stops at the first error.

Command-line overrides (``xl create hello.cfg memory=64 'name="x"'``) are
parsed with the same grammar by :func:`apply_overrides` and applied after
the file, one override at a time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

__all__ = [
    "XlCfgError",
    "XlConfig",
    "XlNumber",
    "XlSetting",
    "XlValue",
    "apply_overrides",
    "c_long",
    "parse_xl_cfg",
    "read_xl_cfg",
]

XlValue: TypeAlias = "str | int | list[XlValue]"


class XlCfgError(Exception):
    """A configuration file (or override) is malformed or means something invalid.

    ``str()`` is one line, ``WHERE: PROBLEM``, where WHERE is ``FILE:LINE``,
    ``FILE`` (when no single line is at fault) or ``command line: 'OVERRIDE'``.
    """

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(where, problem)
        self.where = where
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


class XlNumber(int):
    """An integer written in the file; ``text`` is how it was written (``0x10``)."""

    text: str

    def __new__(cls, text: str) -> XlNumber:
        value = c_long(text)
        if value is None:
            raise ValueError(f"not a C integer: {text!r}")
        number = super().__new__(cls, value)
        number.text = text
        return number

    def __repr__(self) -> str:
        return f"XlNumber({self.text!r})"


@dataclass(frozen=True)
class XlSetting:
    """The value of one key and where it was (last) set."""

    key: str
    value: XlValue
    source: str  # the file name, or "command line: 'OVERRIDE'"
    line: int | None  # 1-based line in ``source``; None for a command-line override

    @property
    def where(self) -> str:
        return self.source if self.line is None else f"{self.source}:{self.line}"


class XlConfig(Mapping[str, XlValue]):
    """Parsed settings: a read-only mapping from key to value.

    Keys iterate in the order they were first set; the value and location are
    those of the last setting.
    """

    def __init__(self, source: str, settings: Iterable[XlSetting] = ()) -> None:
        self.source = source
        self._settings: dict[str, XlSetting] = {s.key: s for s in settings}

    def __getitem__(self, key: str) -> XlValue:
        return self._settings[key].value

    def __iter__(self) -> Iterator[str]:
        return iter(self._settings)

    def __len__(self) -> int:
        return len(self._settings)

    def __repr__(self) -> str:
        return f"XlConfig({self.source!r}, {dict(self)!r})"

    def setting(self, key: str) -> XlSetting:
        """The full setting of ``key`` (raises KeyError when unset)."""
        return self._settings[key]

    def line(self, key: str) -> int | None:
        """Line where ``key`` was last set (None when set on the command line)."""
        return self._settings[key].line

    def where(self, key: str) -> str:
        """``FILE:LINE`` (or the override) that last set ``key``."""
        return self._settings[key].where


# --- numbers ---------------------------------------------------------------

_C_LONG = re.compile(r"[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")


def c_long(text: str) -> int | None:
    """Read ``text`` as C ``strtol(text, &end, 0)`` requiring ``*end == 0``.

    This is how xl turns any setting (quoted or not) into a number.  Returns
    None when the whole text is not a number.  No range check is made.
    """
    match = _C_LONG.fullmatch(text)
    if match is None:
        return None
    sign, digits = match.groups()
    if digits[:2] in ("0x", "0X"):
        value = int(digits[2:], 16)
    elif digits.startswith("0"):
        value = int(digits, 8)
    else:
        value = int(digits)
    return -value if sign == "-" else value


# --- lexer -----------------------------------------------------------------

# Token kinds: the punctuation itself, or one of these names.
_IDENT, _NUMBER, _STRING, _NEWLINE, _EOF = "ident", "number", "string", "newline", "eof"

_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_NUMBER_RE = re.compile(r"[0-9][0-9a-fx]*")
_NUMBER_TAIL_RE = re.compile(r"[A-Za-z0-9_.]*")
_IDENT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.")
_SIMPLE_ESCAPES = {
    '"': '"', "'": "'", "\\": "\\",
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
}  # fmt: skip
_HEX = frozenset("0123456789abcdefABCDEF")
_OCT = frozenset("01234567")
_PYTHONISH = frozenset("+-.():")  # libxlu flags these as "looks like Python"
_MAX_LIST_DEPTH = 32  # xl.cfg nests two deep (vnuma); this only stops runaway input


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str  # source text (for messages)
    line: int
    value: str | int | None = None
    pos: int = -1  # where the token starts in the text (identifiers: for hints)


def _show(ch: str) -> str:
    """A character for an error message, printable and on one line."""
    return repr(ch) if ch.isprintable() else repr(ch).replace("'", "")


class _Lexer:
    def __init__(self, text: str, source: str, with_lines: bool) -> None:
        self.text = text
        self.source = source
        self.with_lines = with_lines  # False: an override, reported without line numbers
        self.pos = 0
        self.line = 1

    def error(self, line: int, problem: str) -> XlCfgError:
        where = f"{self.source}:{line}" if self.with_lines else self.source
        return XlCfgError(where, problem)

    def tokens(self) -> Iterator[_Token]:
        text = self.text
        while True:
            while self.pos < len(text) and text[self.pos] in " \t\r":
                self.pos += 1
            if self.pos >= len(text):
                yield _Token(_EOF, "end of file", self.line)
                return
            ch = text[self.pos]
            line = self.line
            if ch == "\n" or ch == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end + 1
                self.line += 1
                yield _Token(_NEWLINE, "end of line", line)
            elif ch in "\"'":
                yield self._string(ch)
            elif ch.isascii() and ch.isdigit():
                yield self._number()
            elif match := _IDENT_RE.match(text, self.pos):
                self.pos = match.end()
                yield _Token(_IDENT, match.group(), line, match.group(), match.start())
            elif text.startswith("+=", self.pos):
                self.pos += 2
                yield _Token("+=", "+=", line)
            elif ch in "=,[];":
                self.pos += 1
                yield _Token(ch, ch, line)
            else:
                hint = ""
                if ch in _PYTHONISH:
                    hint = (
                        ' (xl.cfg is not Python: a value is a "string", a number'
                        " or a [list]; there are no expressions or negative numbers)"
                    )
                raise self.error(line, f"unexpected character {_show(ch)}{hint}")

    def _number(self) -> _Token:
        match = _NUMBER_RE.match(self.text, self.pos)
        assert match is not None  # called on a digit
        token = match.group()
        self.pos = match.end()
        if self.pos < len(self.text) and self.text[self.pos] in _IDENT_CHARS:
            tail = _NUMBER_TAIL_RE.match(self.text, self.pos)
            bad = token + (tail.group() if tail else "")
            raise self.error(
                self.line,
                f"invalid number {bad!r} (write decimal, 0x-prefixed lower-case hex or"
                " 0-prefixed octal, with no unit suffix; quote it if it is a string)",
            )
        value: str | int = XlNumber(token) if c_long(token) is not None else token
        return _Token(_NUMBER, token, self.line, value)

    def _string(self, quote: str) -> _Token:
        text, line, start = self.text, self.line, self.pos
        out: list[str] = []
        pos = start + 1
        while True:
            if pos >= len(text) or text[pos] == "\n":
                raise self.error(line, f"unterminated string (missing closing '{quote}')")
            ch = text[pos]
            if ch == quote:
                break
            if ch == "\0":
                raise self.error(line, "strings cannot contain NUL characters")
            if ch != "\\":
                out.append(ch)
                pos += 1
                continue
            pos += 1
            esc = text[pos] if pos < len(text) else ""
            if esc in _SIMPLE_ESCAPES:
                out.append(_SIMPLE_ESCAPES[esc])
                pos += 1
            elif esc == "x":
                digits = text[pos + 1 : pos + 3]
                if len(digits) != 2 or not set(digits) <= _HEX:
                    raise self.error(
                        line, "invalid escape in string: \\x must be followed by two hex digits"
                    )
                out.append(chr(int(digits, 16)))
                pos += 3
            elif esc in _OCT:
                end = pos
                while end < len(text) and end < pos + 3 and text[end] in _OCT:
                    end += 1
                code = int(text[pos:end], 8)
                if code > 0o377:
                    raise self.error(
                        line, f"invalid escape in string: \\{text[pos:end]} is above \\377"
                    )
                out.append(chr(code))
                pos = end
            elif esc in ("", "\n"):
                raise self.error(line, f"unterminated string (missing closing '{quote}')")
            else:
                shown = f"'\\{esc}'" if esc.isprintable() else repr("\\" + esc)
                raise self.error(
                    line, f"invalid escape {shown} in string (write \\\\ for a backslash)"
                )
            if out and out[-1] == "\0":
                raise self.error(line, "strings cannot contain NUL characters")
        self.pos = pos + 1
        return _Token(_STRING, text[start : self.pos], line, "".join(out))


# --- parser ----------------------------------------------------------------


def _quote(text: str) -> str:
    """``text`` for a one-line message: escapes anything unprintable."""
    return text if text.isprintable() else repr(text)[1:-1]


def _quote_hint(text: str) -> str:
    """``text`` as an xl.cfg double-quoted string, for an error message's hint."""
    return '"' + _quote(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


@dataclass(frozen=True)
class _Statement:
    key: str
    op: str  # "=" or "+="
    value: XlValue
    line: int


class _Parser:
    def __init__(self, lexer: _Lexer) -> None:
        self.lexer = lexer
        self.tokens = lexer.tokens()
        self.tok = next(self.tokens)
        self.depth = 0

    def advance(self) -> _Token:
        tok = self.tok
        if tok.kind != _EOF:
            self.tok = next(self.tokens)
        return tok

    def error(self, line: int, problem: str) -> XlCfgError:
        return self.lexer.error(line, problem)

    def statements(self) -> Iterator[_Statement]:
        while self.tok.kind != _EOF:
            if self.tok.kind in (_NEWLINE, ";"):
                self.advance()
                continue
            if self.tok.kind != _IDENT:
                raise self.error(
                    self.tok.line, f"expected a setting name, got {self._describe(self.tok)}"
                )
            key = self.advance()
            if self.tok.kind not in ("=", "+="):
                raise self.error(key.line, f"expected '=' after {key.text!r}")
            op = self.advance().kind
            value = self.value(key.text)
            yield _Statement(key.text, op, value, key.line)
            if self.tok.kind not in (_NEWLINE, ";", _EOF):
                raise self.error(
                    self.tok.line,
                    f"expected a new line or ';' after the value of {key.text!r},"
                    f" got {self._describe(self.tok)}",
                )

    def value(self, key: str) -> XlValue:
        tok = self.tok
        if tok.kind in (_STRING, _NUMBER):
            self.advance()
            assert tok.value is not None
            return tok.value
        if tok.kind == "[":
            if self.depth >= _MAX_LIST_DEPTH:
                raise self.error(tok.line, f"lists nested too deeply in {key!r}")
            self.depth += 1
            items = self.list(key)
            self.depth -= 1
            return items
        if tok.kind == _IDENT:
            bare = self._bare_value(tok)
            raise self.error(
                tok.line,
                f"the value of {key!r} must be a quoted string, a number or a list,"
                f" got {_quote(bare[:80])}; quote it: {_quote_hint(bare)}",
            )
        if tok.kind in (_NEWLINE, ";", _EOF):
            raise self.error(tok.line, f"missing value for {key!r}")
        raise self.error(tok.line, f"expected a value for {key!r}, got {self._describe(tok)}")

    def _bare_value(self, tok: _Token) -> str:
        """The unquoted value the user meant, from ``tok`` to the end of it.

        ``name=bar-a`` lexes as ``bar`` then an error at ``-``: the hint must
        quote all of ``bar-a``, i.e. the rest of the line up to a comment
        (and, inside a list, up to the next ``,`` or ``]``).
        """
        text = self.lexer.text
        stops = "\n#,]" if self.depth else "\n#"
        end = tok.pos
        while end < len(text) and text[end] not in stops:
            end += 1
        return text[tok.pos:end].rstrip() or tok.text

    def list(self, key: str) -> list[XlValue]:
        start = self.advance()
        items: list[XlValue] = []
        self.skip_newlines()
        while self.tok.kind != "]":
            if self.tok.kind == _EOF:
                raise self.error(start.line, "unterminated list started here (missing ']')")
            if self.tok.kind not in (_STRING, _NUMBER, "["):
                raise self.error(
                    self.tok.line,
                    f"expected a value or ']' in the list for {key!r} (started on line"
                    f" {start.line}), got {self._describe(self.tok)}",
                )
            items.append(self.value(key))
            self.skip_newlines()
            if self.tok.kind == ",":
                self.advance()
                self.skip_newlines()
            elif self.tok.kind == _EOF:
                raise self.error(start.line, "unterminated list started here (missing ']')")
            elif self.tok.kind != "]":
                raise self.error(
                    self.tok.line,
                    f"expected ',' or ']' in the list for {key!r} (started on line"
                    f" {start.line}), got {self._describe(self.tok)}",
                )
        self.advance()
        return items

    def skip_newlines(self) -> None:
        while self.tok.kind == _NEWLINE:
            self.advance()

    @staticmethod
    def _describe(tok: _Token) -> str:
        if tok.kind in (_NEWLINE, _EOF):
            return tok.text
        return repr(tok.text) if tok.kind != _STRING else tok.text


def _apply(settings: dict[str, XlSetting], stmt: _Statement, source: str, line: int | None) -> None:
    where = source if line is None else f"{source}:{line}"
    value = stmt.value
    if stmt.op == "+=":
        previous = settings.get(stmt.key)
        old = previous.value if previous is not None else None
        if isinstance(value, int) or isinstance(old, int):
            raise XlCfgError(where, f"'+=' cannot be used with numbers (key {stmt.key!r})")
        if isinstance(old, str):
            if not isinstance(value, str):
                raise XlCfgError(where, f"cannot add a list to the string {stmt.key!r}")
            value = old + value
        elif isinstance(old, list):
            if not isinstance(value, list):
                raise XlCfgError(where, f"cannot add a string to the list {stmt.key!r}")
            value = old + value
    settings[stmt.key] = XlSetting(stmt.key, value, source, line)


def parse_xl_cfg(text: str, filename: str) -> XlConfig:
    """Parse xl.cfg ``text``; ``filename`` is only used in error messages.

    Raises :class:`XlCfgError` (``FILE:LINE: problem``) on the first error.
    """
    settings: dict[str, XlSetting] = {}
    for stmt in _Parser(_Lexer(text, filename, with_lines=True)).statements():
        _apply(settings, stmt, filename, stmt.line)
    return XlConfig(filename, settings.values())


def read_xl_cfg(path: Path) -> XlConfig:
    """Read and parse the file at ``path`` (bytes that are not UTF-8 are kept,
    as ``os.fsdecode`` would, so any path written in the file still works)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise unreadable(path, err) from None
    return parse_xl_cfg(data.decode("utf-8", "surrogateescape"), str(path))


def unreadable(path: Path, err: OSError) -> XlCfgError:
    """The error for a configuration file that cannot be read."""
    return XlCfgError(str(path), f"cannot read configuration file: {err.strerror}")


def apply_overrides(cfg: XlConfig, overrides: Iterable[str]) -> XlConfig:
    """Return ``cfg`` with xl-style ``KEY=VALUE`` command-line overrides applied.

    Each override uses the file grammar (so ``name="x"``, ``memory=64``,
    ``extra+=" quiet"`` and ``disk=['...']`` all work) and is applied after
    the file, in order.  ``cfg`` itself is not changed.  Errors read
    ``command line: 'OVERRIDE': problem``.
    """
    settings = {key: cfg.setting(key) for key in cfg}
    for override in overrides:
        shown = f"'{override}'" if override.isprintable() else repr(override)
        source = f"command line: {shown}"
        lexer = _Lexer(override, source, with_lines=False)
        for stmt in _Parser(lexer).statements():
            _apply(settings, stmt, source, None)
    return XlConfig(cfg.source, settings.values())
