"""Environment references in tokens: ``{$NAME}`` and ``{%NAME%}``.

CoreDNS (``caddyfile/parse.go``, ``replaceEnvVars``) replaces them token by
token after lexing, so a value holding spaces stays one token and can never
open a block or start a directive; this module does the same.  It is apart
from the lexer because the parser decides when a token is substituted (a
key, a directive, an import pattern), and only then can a failure be
reported against that token.
"""

from __future__ import annotations

from collections.abc import Mapping

from kubernetai.corefile.limits import MAX_TOKEN_CHARS

__all__ = ["substitute"]

# Rounds of replacement one token may take: a value that refers to itself
# would otherwise be replaced forever.
_MAX_SUBSTITUTIONS = 1000


def substitute(text: str, environ: Mapping[str, str]) -> str:
    """Replace ``{%NAME%}`` then ``{$NAME}`` references in one token.

    Like CoreDNS: an unset variable is the empty string, every occurrence
    of the same reference is replaced at once, scanning restarts from the
    beginning (so a value may itself contain references), an unclosed
    reference is left alone, and an empty name (``{$}``) stops the scan.
    Unlike CoreDNS we stop with an error instead of looping forever when a
    value refers to itself, or growing without end when it refers to itself
    twice (the token would double at every round).

    Raises ValueError saying which of the two happened.
    """
    for start, end in (("{%", "%}"), ("{$", "}")):
        if start not in text:
            continue
        rounds = 0
        index = text.find(start)
        while index != -1:
            stop = text.find(end, index)
            if stop == -1 or stop <= index + len(start):
                break
            ref = text[index : stop + len(end)]
            value = environ.get(ref[len(start) : -len(end)], "")
            # Measured before replacing: one round may multiply the length.
            if len(text) + text.count(ref) * (len(value) - len(ref)) > MAX_TOKEN_CHARS:
                raise ValueError(f"environment variable substitution makes a token longer than "
                                 f"{MAX_TOKEN_CHARS:,} characters")
            text = text.replace(ref, value)
            rounds += 1
            if rounds > _MAX_SUBSTITUTIONS:
                raise ValueError("environment variable substitution does not terminate")
            index = text.find(start)
    return text
