"""The numbers a rewrite rule is written with, read as CoreDNS reads them.

CoreDNS reads numbers with Go's ``strconv.ParseUint`` and quotes words with Go's ``%q``;
a rule CoreDNS accepts must mean the same here and one it refuses must be refused with
the same message, so the number grammar is Go's. (Type, class and rcode names are
miekg's maps, :mod:`kubernetai.pkg.dnscodes`, looked up after upper-casing the word.)
"""

from __future__ import annotations

__all__ = ["ParseUintError", "parse_uint", "go_quote"]

class ParseUintError(ValueError):
    """A number Go's ``strconv.ParseUint`` refuses; ``str()`` is Go's message."""


def go_quote(text: str) -> str:
    """Go's ``%q`` for the plain words a Corefile holds: double quotes, ``"`` and ``\\``
    escaped, other unprintable characters as ``\\xNN``/``\\uNNNN``."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(f"\\u{ord(char):04x}")
    return '"' + "".join(out) + '"'


def _underscore_ok(s: str) -> bool:
    """Go's ``underscoreOK``: underscores only between digits or after a base prefix."""
    saw = "^"
    i = 0
    hexadecimal = False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "box":
        i = 2
        saw = "0"
        hexadecimal = s[1].lower() == "x"
    for char in s[i:]:
        if char.isdigit() and char.isascii() or hexadecimal and char.lower() in "abcdef":
            saw = "0"
        elif char == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
    return saw != "_"


def parse_uint(s: str, base: int, bits: int) -> int:
    """Go's ``strconv.ParseUint(s, base, bits)`` for base 10 or 0 (0: ``0x``/``0o``/``0b``
    prefixes, a leading ``0`` for octal, underscores as Go allows them)."""
    def fail(why: str) -> ParseUintError:
        return ParseUintError(f"strconv.ParseUint: parsing {go_quote(s)}: {why}")
    if not s:
        raise fail("invalid syntax")
    digits = s
    underscores = False
    if base == 0:
        base = 10
        if s[0] == "0":
            if len(s) >= 3 and s[1].lower() in "box":
                base = {"b": 2, "o": 8, "x": 16}[s[1].lower()]
                digits = s[2:]
            else:
                base = 8
                digits = s[1:] or "0"
        underscores = True
    value = 0
    for char in digits:
        if char == "_" and underscores:
            continue
        lower = char.lower()
        if "0" <= lower <= "9":
            digit = ord(lower) - 48
        elif "a" <= lower <= "z":
            digit = ord(lower) - 87
        else:
            raise fail("invalid syntax")
        if digit >= base:
            raise fail("invalid syntax")
        value = value * base + digit
    if underscores and "_" in s and not _underscore_ok(s):
        raise fail("invalid syntax")
    if value >= 1 << bits:
        raise fail("value out of range")
    return value
