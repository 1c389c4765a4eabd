"""Regular expressions and the string rewriters the rules share.

CoreDNS compiles patterns with Go's ``regexp`` (RE2) and substitutes match groups into a
template written with ``{0}``, ``{1}`` ... (each replaced in turn, so a group's text that
holds ``{2}`` is itself replaced by group 2, as ``strings.ReplaceAll`` in a loop does).
Patterns here are Python ``re`` patterns: the same for the usual syntax (groups,
classes, anchors, repetition); RE2's POSIX classes (``[[:alpha:]]``) and ``\\pL`` are
refused as invalid patterns.
"""

from __future__ import annotations

import re
from typing import Protocol

__all__ = ["MAX_REGEXP_LEN", "RegexError", "compile_pattern", "check_pattern", "expand",
           "StringRewriter", "RegexRewriter", "RemapRewriter", "SuffixRewriter"]

#: CoreDNS's ``maxRegexpLen``: longer patterns are refused.
MAX_REGEXP_LEN = 10000


class RegexError(ValueError):
    """A pattern CoreDNS would refuse; ``str()`` is its message."""


def compile_pattern(pattern: str) -> re.Pattern[str] | None:
    """The compiled pattern, or None if it does not compile."""
    try:
        return re.compile(pattern)
    except (re.error, RecursionError, OverflowError):
        return None


def _subexp_usage(template: str) -> int:
    """CoreDNS's ``getSubExprUsage``: how many of ``{0}`` .. ``{100}`` the template uses."""
    return sum(1 for i in range(101) if "{" + str(i) + "}" in template)


def check_pattern(source: str, template: str) -> re.Pattern[str]:
    """CoreDNS's ``isValidRegexPattern``: ``source`` compiled, refused if too long, not a
    pattern, or if ``template`` uses more groups than it has."""
    if len(source) > MAX_REGEXP_LEN:
        raise RegexError(f"regex pattern too long: {len(source)} > {MAX_REGEXP_LEN}")
    compiled = compile_pattern(source)
    if compiled is None:
        raise RegexError(f"invalid regex matching pattern: {source}")
    if _subexp_usage(template) > compiled.groups:
        raise RegexError(f"the rewrite regex pattern ({template}) uses more subexpressions "
                         f"than its corresponding matching regex pattern ({source})")
    return compiled


def expand(template: str, match: re.Match[str]) -> str:
    """``template`` with ``{N}`` replaced by group N (a group that did not take part is
    empty), group by group in order."""
    text = template
    for index in range(match.re.groups + 1):
        text = text.replace("{" + str(index) + "}", match.group(index) or "")
    return text


class StringRewriter(Protocol):
    def rewrite(self, text: str) -> str:
        """``text`` rewritten, or ``text`` itself when the rewriter does not apply."""


class RegexRewriter:
    """``answer name|value FROM TO``: the first match of FROM, TO with its groups."""

    __slots__ = ("pattern", "template")

    def __init__(self, pattern: re.Pattern[str], template: str) -> None:
        self.pattern = pattern
        self.template = template

    def rewrite(self, text: str) -> str:
        match = self.pattern.search(text)
        if match is None:
            return text
        return expand(self.template, match)


class RemapRewriter:
    """``answer auto`` after a name rule: the rewritten name, or a name below it, goes
    back to the name the client asked (on a label boundary)."""

    __slots__ = ("orig", "replacement")

    def __init__(self, orig: str, replacement: str) -> None:
        self.orig = orig
        self.replacement = replacement

    def rewrite(self, text: str) -> str:
        orig = self.orig
        if text == orig:
            return self.replacement
        cut = len(text) - len(orig)
        if cut > 0 and text[cut - 1] == "." and text.endswith(orig):
            return text[:cut] + self.replacement
        return text


class SuffixRewriter:
    """``answer auto`` after a suffix rule: the rule's suffixes exchanged."""

    __slots__ = ("suffix", "replacement")

    def __init__(self, suffix: str, replacement: str) -> None:
        self.suffix = suffix
        self.replacement = replacement

    def rewrite(self, text: str) -> str:
        if text.endswith(self.suffix):
            return text[:len(text) - len(self.suffix)] + self.replacement
        return text
