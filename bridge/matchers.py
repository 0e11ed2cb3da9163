"""Label matchers, with Alertmanager's semantics: the matcher language the config's
`matchers:` are written in. A leaf: it imports nothing from the bridge.

A matcher string is read the way Alertmanager reads `matchers:` in its default
"fallback" mode (matcher/compat FallbackMatchersParser): the classic parser
(matcher/oldparse) and the UTF-8 parser (matcher/parse) both try it; the classic
result wins whenever it parses (Alertmanager keeps it even when the two disagree),
otherwise the UTF-8 result; the input is rejected only when both fail.

Regexes are anchored as in `matcher.NewMatcher`: `^(?:` + value + `)$`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

OPERATORS = ("=", "!=", "=~", "!~")
_REGEX_OPS = ("=~", "!~")
_EXPECTED_OP = "expected one of =, !=, =~, !~"


class MatcherError(ValueError):
    """A matcher that cannot be parsed or compiled; the message has no key path."""


class _RegexError(MatcherError):
    """Raised for a syntactically sound matcher whose regex does not compile."""


# Go's RE2 sets global flags with a leading `(?i)`; Python 3.11 rejects global flags
# inside the `(?:...)` wrapper, so a leading flag group becomes a scoped one.
_LEADING_FLAGS = re.compile(r"\(\?((?:[ims]+(?:-[ims]+)?)|(?:-[ims]+))\)")
# POSIX classes ([[:digit:]]) are RE2 syntax that Python reads as a plain set: refuse
# them rather than match something else.
_POSIX_CLASS = re.compile(r"\[[^\]]*\[:\^?[a-z]+:\]")


def _compile(value: str) -> re.Pattern[str]:
    """`value` compiled as Go anchors it; `re.ASCII` because RE2's \\d \\w \\s \\b are ASCII."""
    if _POSIX_CLASS.search(value):
        raise _RegexError(f'invalid regex "{value}": POSIX classes like [[:digit:]] '
                          "are not supported; use a range such as [0-9]")
    body = value
    flags = _LEADING_FLAGS.match(value)
    if flags:
        body = f"(?{flags.group(1)}:{value[flags.end():]})"
    try:
        # Compiled alone first so that an error reads in terms of the user's regex
        # (the wrapper's ")" would otherwise show up in "bad character range a-)").
        re.compile(body, re.ASCII)
        return re.compile(f"^(?:{body})\\Z", re.ASCII)
    except re.error as exc:
        hint = ""
        if "global flags not at the start" in exc.msg:
            hint = " (inline flags such as (?i) are only supported at the start of the regex)"
        raise _RegexError(f'invalid regex "{value}": {exc.msg}{hint}') from None


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str          # one of OPERATORS
    value: str
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.op not in OPERATORS:
            raise MatcherError(f"unknown operator {self.op!r}: {_EXPECTED_OP}")
        if not self.name:
            raise MatcherError("empty label name")
        if self.op in _REGEX_OPS:
            object.__setattr__(self, "_regex", _compile(self.value))

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the alert's labels satisfy this matcher; an absent label is ""."""
        actual = labels.get(self.name, "")
        if self._regex is not None:
            return (self._regex.match(actual) is not None) == (self.op == "=~")
        return (actual == self.value) == (self.op == "=")

    def __str__(self) -> str:
        # As Alertmanager prints it: a name only the UTF-8 parser can read is quoted.
        if any(_is_reserved(ch) for ch in self.name):
            return f"{go_quote(self.name)}{self.op}{go_quote(self.value)}"
        return f"{self.name}{self.op}{quote_value(self.value)}"


def parse_matchers(text: str) -> list[Matcher]:
    """Every matcher in one config string: `a="1"`, `{a="1", b=~"2|3",}`, ..."""
    if not _go_trim(text):
        raise MatcherError("empty matcher string")
    try:
        matchers = _parse_classic(text)
    except MatcherError as classic_error:
        try:
            matchers = _parse_utf8(text)
        except MatcherError as utf8_error:
            # A bad regex is the real problem whichever parser saw it; otherwise the
            # UTF-8 parser knows where the input went wrong.
            raise (classic_error if isinstance(classic_error, _RegexError) else utf8_error) from None
    if not matchers:
        raise MatcherError(f"no matchers in `{text}`")
    return matchers


# --- the classic parser (matcher/oldparse/parse.go) ----------------------------------

_WS = "[\t\n\f\r ]"  # Go's \s
_CLASSIC = re.compile(
    rf"{_WS}*([a-zA-Z_:][a-zA-Z0-9_:]*){_WS}*(=~|=|!=|!~){_WS}*(.*?){_WS}*", re.DOTALL)


def _parse_classic(text: str) -> list[Matcher]:
    body = text.removeprefix("{").removesuffix("}")
    parts: list[str] = []
    current: list[str] = []
    inside_quotes = escaped = False
    for ch in body:
        if ch == "," and not inside_quotes:
            parts.append("".join(current))
            current = []
            continue
        if ch == '"':
            inside_quotes = inside_quotes if escaped else not inside_quotes
            escaped = False
        elif ch == "\\":
            escaped = not escaped
        else:
            escaped = False
        current.append(ch)
    last = _go_trim("".join(current))
    if last:
        parts.append(last)
    return [_classic_matcher(part) for part in parts]


def _classic_matcher(part: str) -> Matcher:
    found = _CLASSIC.fullmatch(part)
    if not found:
        raise MatcherError(f"bad matcher format: `{part}`")
    name, op, raw = found.groups()
    quoted = raw.startswith('"')
    raw = raw[1:] if quoted else raw
    value: list[str] = []
    escaped = False
    for i, ch in enumerate(raw):
        if escaped:
            escaped = False
            # A spurious escape (\d in a regex) stays a literal backslash.
            value.append({"n": "\n", '"': '"', "\\": "\\"}.get(ch, "\\" + ch))
        elif ch == "\\" and i < len(raw) - 1:
            escaped = True
        elif ch == '"':
            if not quoted or i < len(raw) - 1:
                raise MatcherError(f"value contains an unescaped double quote: `{part}`")
            quoted = False
        else:
            value.append(ch)
    if quoted:
        raise MatcherError(f"value misses its closing double quote: `{part}`")
    return Matcher(name, op, "".join(value))


# --- the UTF-8 parser (matcher/parse: lexer.go, parse.go, token.go) --------------------

_RESERVED = set('{}!=~,\\"\'`')
_NAME_KINDS = ("quoted", "unquoted")


def _is_space(ch: str) -> bool:
    # Go's unicode.IsSpace; Python also counts the separators \x1c-\x1f as space.
    return ch.isspace() and ch not in "\x1c\x1d\x1e\x1f"


def _go_trim(s: str) -> str:
    """strings.TrimSpace."""
    start, end = 0, len(s)
    while start < end and _is_space(s[start]):
        start += 1
    while end > start and _is_space(s[end - 1]):
        end -= 1
    return s[start:end]


def _is_reserved(ch: str) -> bool:
    return ch in _RESERVED or _is_space(ch)


@dataclass(frozen=True)
class _Token:
    kind: str        # "{", "}", ",", "op", "quoted", "unquoted", "eof" or "error"
    text: str        # the input it covers
    col: int         # 1-based column of its first character
    problem: str = ""  # for "error": what the lexer found wrong


def _lex(text: str) -> list[_Token]:
    """All tokens, ending with "eof", or with "error" where the lexer gave up."""
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        ch, col = text[i], i + 1
        end = i + 1
        if _is_space(ch):
            i = end
            continue
        if ch in "{},":
            kind = ch
        elif ch in "=!":
            kind = "op"
            end = i + 2 if text[i + 1:i + 2] in (("=", "~") if ch == "!" else ("~",)) else end
            if text[i:end] == "!":
                return [*tokens, _Token("error", "!", col, f"`!` at column {col} must be followed by = or ~")]
        elif ch == '"':
            kind, end = "quoted", _end_of_quoted(text, i)
            if end < 0:
                return [*tokens, _Token("error", text[i:], col,
                                        f"unterminated quoted string `{text[i:]}` at column {col}")]
        elif not _is_reserved(ch):
            kind = "unquoted"
            while end < len(text) and not _is_reserved(text[end]):
                end += 1
        else:
            return [*tokens, _Token("error", ch, col, f"unexpected `{ch}` at column {col}")]
        tokens.append(_Token(kind, text[i:end], col))
        i = end
    return [*tokens, _Token("eof", "", len(text) + 1)]


def _end_of_quoted(text: str, start: int) -> int:
    """Index just past the closing quote of the string opened at `start`, or -1."""
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i + 1
        i += 1
    return -1


def _parse_utf8(text: str) -> list[Matcher]:
    tokens = _lex(text)
    open_brace = tokens[0].kind == "{"
    pos = 1 if open_brace else 0
    matchers: list[Matcher] = []
    while True:
        token = tokens[pos]
        if token.kind in ("}", "eof"):
            break
        if token.kind == "op":
            raise MatcherError(f"missing label name before `{token.text}` at column {token.col}: `{text}`")
        if token.kind not in _NAME_KINDS:
            raise MatcherError(_unexpected(token, "a label name", text))
        matcher, pos = _utf8_matcher(text, tokens, pos)
        matchers.append(matcher)
        if tokens[pos].kind == ",":
            pos += 1
        elif tokens[pos].kind not in ("}", "eof"):
            raise MatcherError(_unexpected(tokens[pos], "`,` or `}` after a matcher", text))
    if tokens[pos].kind == "}":
        if not open_brace:
            raise MatcherError(f"`}}` at column {tokens[pos].col} has no opening `{{`: `{text}`")
        pos += 1
    elif open_brace:
        raise MatcherError(f"missing closing `}}`: `{text}`")
    if tokens[pos].kind != "eof":
        raise MatcherError(_unexpected(tokens[pos], "end of input", text))
    return matchers


def _utf8_matcher(text: str, tokens: list[_Token], pos: int) -> tuple[Matcher, int]:
    name_token, op, value_token = tokens[pos], tokens[pos + 1], tokens[min(pos + 2, len(tokens) - 1)]
    name = _unquote(name_token, "label name", text)
    if op.kind != "op":
        raise MatcherError(_bad_operator(op, name_token, text))
    if value_token.kind not in _NAME_KINDS:
        raise MatcherError(_unexpected(value_token, f"a value after `{name_token.text}{op.text}`", text))
    value = _unquote(value_token, "value", text)
    return Matcher(name, op.text, value), pos + 3


def _bad_operator(token: _Token, name: _Token, text: str) -> str:
    if token.kind == "eof":
        return f"missing operator after label name `{name.text}` ({_EXPECTED_OP}): `{text}`"
    if token.kind == "error" and token.text[0] in "!~":
        found = re.match(r"[=!~<>]+", text[token.col - 1:])
        return (f"unknown operator `{found.group() if found else token.text}` at column {token.col} "
                f"({_EXPECTED_OP}): `{text}`")
    return _unexpected(token, f"an operator (=, !=, =~, !~) after label name `{name.text}`", text)


def _unexpected(token: _Token, expected: str, text: str) -> str:
    if token.kind == "eof":
        return f"unexpected end of input, expected {expected}: `{text}`"
    if token.kind == "error":
        # "unexpected X" reads better with what was expected; other lexer errors stand alone.
        suffix = f", expected {expected}" if token.problem.startswith("unexpected") else ""
        return f"{token.problem}{suffix}: `{text}`"
    return f"unexpected `{token.text}` at column {token.col}, expected {expected}: `{text}`"


def _unquote(token: _Token, what: str, text: str) -> str:
    if token.kind == "unquoted":
        return token.text
    try:
        result = _go_unquote(token.text[1:-1])
    except ValueError as exc:
        raise MatcherError(f"{exc} in quoted {what} `{token.text}` at column {token.col}: `{text}`") from None
    if not result and what == "label name":
        raise MatcherError(f"empty label name at column {token.col}: `{text}`")
    return result


# --- Go string literals: strconv.Quote / strconv.Unquote, and Alertmanager's value quoting

_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                   "\\": "\\", '"': '"'}
_NUMERIC_ESCAPES = {"x": (2, 16), "u": (4, 16), "U": (8, 16)}   # width, base; octal is (3, 8)
_DIGITS = {8: "01234567", 16: "0123456789abcdefABCDEF"}


def _go_unquote(body: str) -> str:
    """The content of a Go double-quoted literal; ValueError names what is wrong."""
    if "\n" in body:
        raise ValueError("newline")
    out = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out += ch.encode("utf-8", "surrogatepass")
            i += 1
            continue
        i = _go_escape(body, i, out)
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("invalid UTF-8") from None


def _go_escape(body: str, i: int, out: bytearray) -> int:
    """Appends the escape starting at body[i] (a backslash); returns the index after it."""
    kind = body[i + 1:i + 2]
    if kind and kind in _SIMPLE_ESCAPES:
        out += _SIMPLE_ESCAPES[kind].encode()
        return i + 2
    if kind and kind in "01234567xuU":
        width, base = _NUMERIC_ESCAPES.get(kind, (3, 8))
        start = i + 1 if base == 8 else i + 2
        digits = body[start:start + width]
        if len(digits) == width and all(d in _DIGITS[base] for d in digits):
            code = int(digits, base)
            if kind not in "uU" and code <= 0xFF:        # \x and octal give raw bytes
                out.append(code)
                return start + width
            if kind in "uU" and code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF:
                out += chr(code).encode()
                return start + width
    raise ValueError(f"invalid escape sequence `{body[i:i + 2]}`")


def go_quote(s: str) -> str:
    """strconv.Quote: what the UTF-8 parser reads back as `s`."""
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(ch)])
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def quote_value(value: str) -> str:
    """A matcher value double-quoted as Alertmanager prints it (labels.Matcher.String's
    openMetricsEscape): only backslash, newline and double quote are escaped, which is
    what the classic parser undoes. Not strconv.Quote: a tab or a non-ASCII character
    stays as it is."""
    return '"' + value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"') + '"'
