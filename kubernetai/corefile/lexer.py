"""Corefile text to tokens, as CoreDNS's Caddyfile lexer splits it.

Users bring the Corefile they run CoreDNS with, so the rules are the ones
``coredns/caddy``'s ``caddyfile/lexer.go`` follows, not a tidier grammar's:

* tokens are separated by white space (Go's ``unicode.IsSpace``); a ``\\r``
  is dropped without ending a word, so CRLF files read like LF files;
* a token that *starts* with ``"`` runs to the next unescaped ``"`` and may
  span lines; inside it only ``\\"`` is an escape, any other backslash is
  kept literally; a ``"`` in the middle of a word is an ordinary character;
* ``#`` outside quotes starts a comment up to the end of the line, even in
  the middle of a word (``foo#bar`` is the token ``foo``);
* there are no backtick strings and no line continuations;
* a leading byte-order mark is discarded;
* ``{`` and ``}`` are not special here: the parser compares token text.

Where CoreDNS would read on into nonsense (an unterminated quote, a binary
file) the lexer raises a located
:class:`~kubernetai.corefile.errors.CorefileError` instead, and it counts
every token against the reading's :class:`~kubernetai.corefile.limits.Budget`
as it goes, so a huge input stops at the limit rather than after it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass

import pyparsing as pp

from kubernetai.corefile.errors import CorefileError, describe_char
from kubernetai.corefile.limits import Budget

__all__ = ["Token", "new_origin", "tokenize"]

# Go's unicode.IsSpace: the Latin-1 spaces plus the Unicode White_Space
# property.  Python's \s differs (it includes \x1c-\x1f), hence the list.
_SPACE_CHARS = (
    "\t\n\v\f\r \x85\xa0\u1680"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
    + "\u2028\u2029\u202f\u205f\u3000"
)


def _char_class(chars: str) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in chars)


_SPACE = _char_class(_SPACE_CHARS)
_SPACE_BUT_CR = _char_class(_SPACE_CHARS.replace("\r", ""))


@dataclass(frozen=True, slots=True)
class _Lexeme:
    """A raw match from the lexer: what kind, where, and the source text."""

    kind: str  # "word", "quoted" or "unterminated"
    loc: int
    raw: str


def _lexeme(kind: str) -> Callable[[str, int, pp.ParseResults], _Lexeme]:
    def action(_s: str, loc: int, toks: pp.ParseResults) -> _Lexeme:
        return _Lexeme(kind, loc, toks[0])

    return action


def _build_lexer() -> pp.ParserElement:
    # White space is matched explicitly (and suppressed) rather than left to
    # pyparsing's skipping: CoreDNS's notion of white space is not
    # pyparsing's default, and \r is special (skipped, but it does not end a
    # word), and exact match locations give exact line numbers.
    # One match for a whole run of white space and comments, however many
    # lines: what costs time is the number of matches, and only tokens are
    # counted against the budget.
    gap = pp.Regex(f"(?:[{_SPACE}]+|#[^\n]*)+").suppress()
    # "..." with \-escapes; the unrolled form stays linear on long strings.
    quoted = pp.Regex(r'"[^"\\]*(?:\\.[^"\\]*)*"', flags=re.DOTALL)
    quoted.set_parse_action(_lexeme("quoted"))
    # A quote that the rule above could not close runs to end of file.
    unterminated = pp.Regex(r'"[^\n]{0,30}')
    unterminated.set_parse_action(_lexeme("unterminated"))
    # A word cannot start with a quote (that is a quoted token) and stops at
    # white space or a comment; a \r inside it is kept here, dropped later.
    word = pp.Regex(f'[^{_SPACE}"#][^{_SPACE_BUT_CR}#]*')
    word.set_parse_action(_lexeme("word"))
    # Every character starts one of these, so scanning for them yields the
    # whole text, one lexeme after the other; scanning (rather than parsing
    # the whole text at once) lets tokenize stop at its token budget.
    token = gap | quoted | unterminated | word
    token.leave_whitespace()
    # Locations must index the text as given (pyparsing expands tabs by
    # default), since line numbers are counted from them.
    token.parse_with_tabs()
    return token.streamline()


_LEXER = _build_lexer()


@dataclass(frozen=True, slots=True)
class Token:
    """A token with what the parser needs beyond its text.

    ``origin`` identifies one reading of one file (or one expansion of a
    snippet): two tokens are on the same line only if they share an origin,
    so spliced-in tokens never run on from the line before the ``import``.
    ``chain`` lists the files and snippets that were being imported when
    this token was read, for cycle detection and messages.
    """

    text: str
    file: str
    line: int
    end_line: int
    origin: int
    chain: tuple[str, ...]


_origins = itertools.count(1)


def new_origin() -> int:
    """A number no other reading of a file or expansion of a snippet has."""
    return next(_origins)


_ESCAPE_RE = re.compile(r'\\(.)', re.DOTALL)


def _unescape(body: str) -> str:
    # Only \" is an escape; any other backslash pair stays as written.  Pairs
    # are consumed left to right, so \\" is a backslash pair then a quote.
    return _ESCAPE_RE.sub(lambda m: m.group(1) if m.group(1) == '"' else m.group(0), body)


# C0 and C1 control characters other than the white space Go's lexer skips
# (tab, line feed, vertical tab, form feed, carriage return, NEL), and DEL.
_CONTROL_RE = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]")


def _refuse_control_characters(text: str, filename: str) -> None:
    """A control character can only mean this is not a Corefile (a binary
    file, ``/proc/self/environ``): refuse it without quoting any of it."""
    found = _CONTROL_RE.search(text)
    if found is not None:
        line = text.count("\n", 0, found.start()) + 1
        raise CorefileError(
            filename, line,
            f"control character {describe_char(found.group())} in the file: a Corefile is text "
            "(is this the right file?)")


def tokenize(text: str, filename: str, chain: tuple[str, ...], budget: Budget) -> list[Token]:
    """The tokens of one file's text, all with one new origin.

    ``chain`` is what was being imported when the file was read (ending
    with the file itself); each token is counted against ``budget``.
    """
    text = text.removeprefix("\ufeff")
    _refuse_control_characters(text, filename)
    origin = new_origin()
    tokens: list[Token] = []
    line, last = 1, 0
    for found, _loc, _end in _LEXER.scan_string(text):
        if not found:
            continue  # white space or a comment
        lx = found[0]
        line += text.count("\n", last, lx.loc)
        last = lx.loc
        if lx.kind == "unterminated":
            raise CorefileError(filename, line, f"unterminated quote: {lx.raw!r} is never closed",
                                lx.raw)
        if lx.kind == "quoted":
            value = _unescape(lx.raw[1:-1])
        else:
            value = lx.raw.replace("\r", "")
        budget.add_tokens(1, filename, line, value)
        tokens.append(Token(value, filename, line, line + lx.raw.count("\n"), origin, chain))
    return tokens
