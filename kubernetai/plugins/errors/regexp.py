"""`consolidate`'s REGEXP: Go's RE2 syntax, run by Python's ``re``.

CoreDNS compiles the pattern with Go's ``regexp`` (RE2) and matches it anywhere in the
error text. Python's ``re`` reads most RE2 patterns the same way; where the two differ, a
pattern CoreDNS accepts must mean the same here, and one it refuses should be refused:

* translated: ``\\z`` (end of text) becomes Python's ``\\Z``; ``\\Q...\\E`` (literal text)
  is escaped; ``(?<name>...)`` becomes ``(?P<name>...)``; the POSIX classes
  ``[[:alpha:]]`` ... become their ASCII ranges; ``\\d``, ``\\w``, ``\\s``, ``\\b`` are
  ASCII-only, as in RE2;
* refused as RE2 refuses them: lookahead and lookbehind, atomic groups, conditionals,
  comments (``(?#``), back-references (``\\1``, ``(?P=name)``), possessive repetition
  (``a*+``), flags RE2 lacks (``(?x)``, ...), ``\\Z``, repeat counts over 1000;
* refused here though RE2 accepts them: a flag group such as ``(?i)`` anywhere but at the
  start (write ``(?i:...)`` around the part instead), negated POSIX classes
  (``[[:^alpha:]]``), and what Python lacks (``\\pL``, ``\\p{Greek}``, ``\\x{263a}``, ``\\C``);
* left different: ``$`` (without ``(?m)``) also matches before a final newline in Python
  (plugin errors hold no newline); an escape of two or three digits (``\\12``) is octal
  in RE2 but a group reference in Python; and Python's matcher backtracks, so a pattern
  with nested repetition (``(a+)+$``) can take long on a long error text where RE2 runs in
  linear time: keep patterns simple, anchored with ``^`` or ``$`` as CoreDNS advises.
"""

from __future__ import annotations

import re

__all__ = ["MAX_LENGTH", "RegexpError", "compile_re2"]

#: CoreDNS's ``maxRegexpLen``.
MAX_LENGTH = 10000
_MAX_REPEAT = 1000

_POSIX = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7f", "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f", "digit": "0-9", "graph": "!-~", "lower": "a-z",
    "print": " -~", "punct": "!-/:-@\\[-`{-~", "space": "\\t\\n\\v\\f\\r ", "upper": "A-Z",
    "word": "0-9A-Za-z_", "xdigit": "0-9A-Fa-f",
}
_REPEAT = re.compile(r"\{(\d+)(?:,(\d*))?\}")
_OPEN_REPEAT = re.compile(r"\{,\d*\}")


class RegexpError(ValueError):
    """A pattern that cannot be used; str() is the message for the Corefile error."""


def compile_re2(source: str) -> re.Pattern[str]:
    """``source`` (RE2 syntax) compiled for ``re.search``; RegexpError if it cannot be."""
    if len(source) > MAX_LENGTH:
        raise RegexpError(f"regex pattern too long: {len(source)} > {MAX_LENGTH}")
    translated = _Translator(source).run()
    try:
        return re.compile(translated, re.ASCII)
    except re.error as error:
        raise RegexpError(f"error parsing regexp: {error}: `{source}`") from None


class _Translator:
    """One pass over the pattern, tracking escapes and character classes."""

    def __init__(self, source: str) -> None:
        self.s = source
        self.i = 0
        self.out: list[str] = []
        self.in_class = False
        self.at_start = True  # nothing but flag groups written so far

    def fail(self, code: str, what: str) -> RegexpError:
        return RegexpError(f"error parsing regexp: {code}: `{what}`")

    def run(self) -> str:
        s = self.s
        while self.i < len(s):
            char = s[self.i]
            if char == "\\":
                self.escape()
            elif self.in_class:
                self.class_char()
            elif char == "[":
                self.open_class()
            elif char == "(" and s.startswith("(?", self.i):
                self.group()
            else:
                self.plain(char)
        return "".join(self.out)

    def emit(self, text: str, *, flags: bool = False) -> None:
        self.out.append(text)
        if not flags:
            self.at_start = False

    def escape(self) -> None:
        s, i = self.s, self.i
        if i + 1 >= len(s):
            raise self.fail("trailing backslash at end of expression", "")
        code = s[i + 1]
        if code == "Q" and not self.in_class:
            end = s.find("\\E", i + 2)
            literal = s[i + 2:] if end < 0 else s[i + 2:end]
            self.emit(re.escape(literal))
            self.i = len(s) if end < 0 else end + 2
            return
        if code == "z" and not self.in_class:
            self.emit("\\Z")
        elif code == "Z" or (code in "123456789"
                             and not (i + 2 < len(s) and s[i + 2] in "01234567")):
            raise self.fail("invalid escape sequence", s[i:i + 2])
        else:
            self.emit(s[i:i + 2])
        self.i = i + 2

    def open_class(self) -> None:
        s = self.s
        self.emit("[")
        self.i += 1
        self.in_class = True
        if s.startswith("^", self.i):
            self.emit("^")
            self.i += 1
        if s.startswith("]", self.i):  # a ] first in a class is itself
            self.emit("\\]")
            self.i += 1

    def class_char(self) -> None:
        s, i = self.s, self.i
        if s.startswith("[:", i):
            end = s.find(":]", i + 2)
            name = s[i + 2:end] if end > 0 else ""
            if name.startswith("^") and name[1:] in _POSIX:
                raise self.fail("negated POSIX classes are not supported here",
                                s[i:end + 2])
            if name in _POSIX:
                self.emit(_POSIX[name])
                self.i = end + 2
                return
            if end > 0:
                raise self.fail("invalid character class range", s[i:end + 2])
        if s[i] in "[&~|":
            self.emit("\\" + s[i])  # literal in RE2; Python reads "[[", "&&" ... as set syntax
        else:
            if s[i] == "]":
                self.in_class = False
            self.emit(s[i])
        self.i = i + 1

    def group(self) -> None:
        s, i = self.s, self.i
        j = i + 2
        if s.startswith("P<", j):
            self.emit("(?P<")
            self.i = j + 2
            return
        if s.startswith("<", j) and not s.startswith(("<=", "<!"), j):
            self.emit("(?P<")
            self.i = j + 1
            return
        k = j
        while k < len(s) and s[k] in "ims-":
            k += 1
        if k < len(s) and s[k] in ":)" and (k > j or s[k] == ":"):
            flags_only = s[k] == ")"
            if flags_only and not self.at_start:
                raise self.fail("a flag group such as (?i) must start the pattern here "
                                "(write (?i:...) around the part instead)", s[i:k + 1])
            self.emit(s[i:k + 1], flags=flags_only)
            self.i = k + 1
            return
        raise self.fail("invalid or unsupported Perl syntax", s[i:min(k + 1, len(s))])

    def plain(self, char: str) -> None:
        s, i = self.s, self.i
        if char in "*+?" and s.startswith("+", i + 1):
            raise self.fail("invalid nested repetition operator", s[i:i + 2])
        if char == "{":
            repeat = _REPEAT.match(s, i)
            if repeat is not None:
                counts = [int(n) for n in repeat.groups() if n]
                if any(n > _MAX_REPEAT for n in counts):
                    raise self.fail("invalid repeat count", repeat.group(0))
            elif _OPEN_REPEAT.match(s, i):
                char = "\\{"  # "{,5}" is text in RE2, a repeat in Python
        self.emit(char)
        self.i = i + 1
