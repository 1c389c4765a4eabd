"""The request rules: what each rewrite line does to a query, and what it leaves for the
reply.

A rule's ``rewrite(state)`` returns None when it does not apply (CoreDNS's
``RewriteIgnored``), or the response rules it leaves behind (``RewriteDone``, perhaps
none). ``mode`` is ``stop`` (the default: no later rule is tried once this one applied)
or ``continue``.

Names are matched as CoreDNS matches them: against the question name in presentation
form, lower case, with its trailing dot, as the rules before have left it. A name rule's
result is lower case too (CoreDNS builds it from the lower-cased name and a normalized
replacement).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

from kubernetai.plugins.rewrite.matching import RemapRewriter, expand
from kubernetai.plugins.rewrite.response import (
    CnameTargetResponse,
    NameResponse,
    RcodeResponse,
    ResponseRule,
    TTLResponse,
    ValueResponse,
)
from kubernetai.plugins.rewrite.state import State

__all__ = ["EXACT", "PREFIX", "SUFFIX", "SUBSTRING", "REGEX", "KINDS", "NameRule",
           "TypeRule", "ClassRule", "TTLRule", "RcodeRule", "CnameRule", "matcher"]

EXACT, PREFIX, SUFFIX, SUBSTRING, REGEX = "exact", "prefix", "suffix", "substring", "regex"
KINDS = (EXACT, PREFIX, SUFFIX, SUBSTRING, REGEX)

def matcher(kind: str, source: "str | re.Pattern[str]") -> Callable[[str], bool]:
    """Whether a (lower-case) name matches ``source`` the way ``kind`` says."""
    if kind == REGEX:
        assert isinstance(source, re.Pattern)
        search = source.search
        return lambda name: search(name) is not None
    assert isinstance(source, str)
    if kind == PREFIX:
        return lambda name: name.startswith(source)
    if kind == SUFFIX:
        return lambda name: name.endswith(source)
    if kind == SUBSTRING:
        return lambda name: source in name
    return lambda name: name == source


class NameRule:
    """``name [exact|prefix|suffix|substring|regex] FROM TO [answer ...]``."""

    def __init__(self, mode: str, kind: str, source: "str | re.Pattern[str]",
                 replacement: str, auto: bool, static: Sequence[ResponseRule]) -> None:
        self.mode = mode
        self.kind = kind
        self.source = source
        self.replacement = replacement
        # exact rules always map the answer back; suffix rules do it with the fixed
        # suffix rewriters in ``static`` instead
        self.auto = auto
        self.static = list(static)

    def _rewritten(self, name: str) -> str | None:
        kind, source, replacement = self.kind, self.source, self.replacement
        if kind == REGEX:
            assert isinstance(source, re.Pattern)
            match = source.search(name)
            return None if match is None else expand(replacement, match)
        assert isinstance(source, str)
        if kind == EXACT:
            return replacement if name == source else None
        if kind == PREFIX:
            return replacement + name[len(source):] if name.startswith(source) else None
        if kind == SUFFIX:
            return name[:len(name) - len(source)] + replacement \
                if name.endswith(source) else None
        return name.replace(source, replacement) if source in name else None

    def rewrite(self, state: State) -> list[Any] | None:
        name = state.lname()
        new = self._rewritten(name)
        if new is None:
            return None
        state.rename(new)
        if not self.auto:
            return self.static
        back = RemapRewriter(new, name)
        return [NameResponse(back), ValueResponse(back), *self.static]


class _SwapRule:
    """A rule that swaps one number of the question (``field`` of the state) for another."""

    field = ""

    def __init__(self, mode: str, source: int, target: int) -> None:
        self.mode = mode
        self.source = source
        self.target = target

    def rewrite(self, state: State) -> list[Any] | None:
        if self.source and self.target and getattr(state, self.field) == self.source:
            setattr(state, self.field, self.target)
            return []
        return None


class TypeRule(_SwapRule):
    """``type FROM TO``: the question's type."""

    field = "qtype"


class ClassRule(_SwapRule):
    """``class FROM TO``: the question's class."""

    field = "qclass"


class TTLRule:
    """``ttl [KIND] NAME SECONDS|MIN-MAX``: the reply's TTLs clamped, for matching names."""

    def __init__(self, mode: str, matches: Callable[[str], bool], low: int, high: int) -> None:
        self.mode = mode
        self.matches = matches
        self.responses: list[Any] = [TTLResponse(low, high)]

    def rewrite(self, state: State) -> list[Any] | None:
        return self.responses if self.matches(state.lname()) else None


class RcodeRule:
    """``rcode [KIND] NAME FROM TO``: the reply's rcode, for matching names."""

    def __init__(self, mode: str, matches: Callable[[str], bool], old: int, new: int) -> None:
        self.mode = mode
        self.matches = matches
        self.responses: list[Any] = [RcodeResponse(old, new)]

    def rewrite(self, state: State) -> list[Any] | None:
        return self.responses if self.matches(state.lname()) else None


class CnameRule:
    """``cname [KIND] FROM TO``: a CNAME target in the reply, and what follows it.

    As in CoreDNS it applies to every query (the match is on the reply's CNAME targets),
    so with ``stop`` no rule after it is ever tried.
    """

    def __init__(self, mode: str, kind: str, source: str, target: str,
                 pattern: re.Pattern[str] | None) -> None:
        self.mode = mode
        self.kind = kind
        self.source = source
        self.target = target
        self.pattern = pattern
        self.responses: list[Any] = [CnameTargetResponse(self.targets)]

    def targets(self, cname: str) -> tuple[str, str]:
        """CoreDNS's ``getFromAndToTarget``: (the target it matches, its replacement),
        or ("", "") when it does not match."""
        kind, source, target = self.kind, self.source, self.target
        if kind == EXACT:
            return source, target
        if kind == PREFIX:
            if cname.startswith(source):
                return cname, target + cname[len(source):]
        elif kind == SUFFIX:
            if cname.endswith(source):
                return cname, cname[:len(cname) - len(source)] + target
        elif kind == SUBSTRING:
            if source in cname:
                return cname, cname.replace(source, target)
        else:
            assert self.pattern is not None
            match = self.pattern.search(cname)
            if match is not None:
                return cname, expand(target, match)
        return "", ""

    def rewrite(self, state: State) -> list[Any] | None:
        if self.kind and self.source and self.target:
            return self.responses
        return None
