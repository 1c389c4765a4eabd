"""CorefileError, and the text helpers that make its message safe to print.

A message may quote what a file or an environment variable holds, and it
goes to a terminal or a log: so it must carry no control characters (a
forged log line, an escape sequence), no invisible ones (bidi overrides,
zero-width spaces) and never a file's whole contents.  Every error the
package raises goes through :class:`CorefileError`, which applies these
rules once, whoever built the message.  The helpers are public because
other layers quote configuration text in their own messages.
"""

from __future__ import annotations

import json
import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubernetai.corefile.model import Directive

__all__ = ["CorefileError", "arg_error", "no_options", "describe_char", "excerpt",
           "printable"]

# What an error message quotes of a token, at most; and of anything at all.
_EXCERPT_CHARS = 40
_MAX_MESSAGE_CHARS = 1000


def _escape_char(char: str) -> str:
    code = ord(char)
    if char in "\t\n\r":
        return {"\t": "\\t", "\n": "\\n", "\r": "\\r"}[char]
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` with every character Python calls unprintable escaped
    (``\\x1b``, ``\\u202e``): controls, format characters such as bidi
    overrides and zero-width spaces, separators other than the ASCII space.
    Other characters are kept as written."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape_char(c) for c in text)


def excerpt(text: str, limit: int = _EXCERPT_CHARS) -> str:
    """At most ``limit`` characters of ``text``, escaped by :func:`printable`,
    and how much was left out: what a message may quote of a token."""
    if len(text) <= limit:
        return printable(text)
    return f"{printable(text[:limit])}...({len(text) - limit:,} more characters)"


def describe_char(char: str) -> str:
    """``U+202E (RIGHT-TO-LEFT OVERRIDE)``: a character named unambiguously."""
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" ({name})" if name else "")


def _is_path(token: str) -> bool:
    return token.startswith(("/", "./", "../", "~/"))


def _safe_message(message: str, token: str | None) -> str:
    """The message with a long token cut to an excerpt, escaped and bounded.

    A token that is a path (it starts with ``/``, ``./``, ``../`` or ``~/``)
    is kept whole: the user needs it to find the file.
    """
    if token and len(token) > _EXCERPT_CHARS and not _is_path(token):
        short = excerpt(token)
        for quoted, replacement in ((repr(token), f"'{short}'"),
                                    (json.dumps(token, ensure_ascii=False), f'"{short}"'),
                                    (token, short)):
            message = message.replace(quoted, replacement)
    message = printable(message)
    if len(message) > _MAX_MESSAGE_CHARS:
        message = message[:_MAX_MESSAGE_CHARS] + "..."
    return message


class CorefileError(Exception):
    """A Corefile that CoreDNS would refuse (or that can only be a mistake).

    It carries the file and line so that the message points the user at the
    place to fix, and the offending token so that callers (and tests) need
    not parse the message.  ``str(e)`` is ``"<filename>:<line>: <message>"``,
    the form editors and terminals turn into a link.

    The message is made safe to print whoever wrote it: a token longer than
    a short excerpt is cut (unless it is a path), control and invisible
    characters are escaped (in the file name too), and the whole is bounded,
    so an error never replays a file's contents or a terminal escape into a
    log.  ``token`` keeps the offending token as it was.
    """

    filename: str
    line: int
    token: str | None
    message: str

    def __init__(self, filename: str, line: int, message: str, token: str | None = None) -> None:
        message = _safe_message(message, token)
        super().__init__(filename, line, message, token)
        self.filename = filename
        self.line = line
        self.token = token
        self.message = message

    def __str__(self) -> str:
        return f"{printable(self.filename)}:{self.line}: {self.message}"


def arg_error(filename: str, line: int, last: str, token: str | None,
              prefix: str = "") -> CorefileError:
    """caddy's ``ArgErr``, every directive's "too many or too few arguments": it names
    ``last``, the last token read (``prefix`` is a plugin name some plugins put first)."""
    return CorefileError(filename, line, f"{prefix}Wrong argument count or unexpected line "
                         f"ending after '{last}'", token)


def no_options(directive: Directive, *, block: bool = True) -> None:
    """The checks of a directive that takes nothing (``any``, ``whoami``, ``debug``...),
    with CoreDNS's messages: an argument is caddy's ``ArgErr`` naming it; with ``block``,
    a block is ``NAME: unknown property 'OPTION'`` at its first line (a plugin that treats
    a block otherwise passes ``block=False`` and checks it itself)."""
    if directive.args:
        first = directive.args[0]
        raise arg_error(directive.filename, directive.arg_lines[0], first, first)
    if block and directive.block:
        option = directive.block[0]
        raise CorefileError(option.filename, option.line,
                            f"{directive.name}: unknown property '{option.name}'", option.name)
