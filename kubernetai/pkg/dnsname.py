"""Domain names: presentation form for logs, and which zone a name is in.

Presentation form.  A query name is whatever bytes a client put on the wire: newlines, ESC
sequences, dots inside a label. Printed raw, such a name forges log lines or drives the
operator's terminal. miekg/dns (and so CoreDNS) prints a label byte outside ``!``..``~`` as
``\\DDD`` (three decimal digits) and prefixes the bytes that mean something in a zone file
(``.`` ``'`` ``@`` ``;`` ``(`` ``)`` ``"`` ``\\`` and space) with a backslash; every name
that reaches a log line goes through here.

Zones.  :func:`in_zone` is the one suffix test of the project ("is this name at or below
that zone, on a label boundary"), :func:`zone_of` picks the most specific zone the way
CoreDNS's ``plugin.Zones.Matches`` does, and :func:`is_reverse` is ``dnsutil.IsReverse``.
They compare text: both sides must already be in the same form, lower case and fully
qualified (see :func:`in_zone`).  Names written with backslash escapes (a Corefile zone, a
name in presentation form) go through :func:`plain_dots` first, so that an escaped dot is
not taken for a label boundary.
"""

from __future__ import annotations

import re
from typing import Iterable

__all__ = [
    "ascii_lower",
    "escape_label",
    "fqdn",
    "in_zone",
    "is_reverse",
    "plain_dots",
    "presentation",
    "presentation_dotted",
    "zone_of",
]

_SPECIAL = frozenset(b".'@;()\"\\ ")
# Bytes a label may hold unescaped; anything else needs the slow path.
_UNSAFE_LABEL = re.compile(rb"[^!-~]|[.'@;()\"\\]")
# The same for a dotted name whose labels are known to hold no dot.
_UNSAFE_DOTTED = re.compile(rb"[^!-~]|['@;()\"\\]")


def _escape_byte(b: int) -> str:
    if b in _SPECIAL:
        return "\\" + chr(b)
    if b < 0x21 or b > 0x7E:
        return f"\\{b:03d}"
    return chr(b)


_ESCAPED = tuple(_escape_byte(b) for b in range(256))


def escape_label(label: bytes) -> str:
    """One label in presentation form (``a\\010b`` for ``a``, newline, ``b``)."""
    if _UNSAFE_LABEL.search(label) is None:
        return label.decode("ascii")
    return "".join([_ESCAPED[b] for b in label])


def presentation(labels: Iterable[bytes]) -> str:
    """The fully qualified name in presentation form, trailing dot included."""
    text = ".".join([escape_label(label) for label in labels])
    return text + "." if text else "."


def presentation_dotted(name: bytes) -> str:
    """:func:`presentation` for a dotted name whose labels hold no ``.`` byte.

    The server keeps simple query names joined with dots; this avoids splitting them
    when, as nearly always, there is nothing to escape.
    """
    if not name:
        return "."
    if _UNSAFE_DOTTED.search(name) is None:
        return name.decode("ascii") + "."
    return presentation(name.split(b"."))


# --------------------------------------------------------------------------
# Zones

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_IP4ARPA = ".in-addr.arpa."
_IP6ARPA = ".ip6.arpa."


def ascii_lower(name: str) -> str:
    """DNS case folding: ASCII letters only (RFC 4343), other characters as they are."""
    return name.translate(_ASCII_LOWER)


def fqdn(name: str) -> str:
    """``name`` with a trailing dot (``"."`` stays ``"."``).

    A name in presentation form may end in an escaped dot (``a\\.``), which is part of its
    last label: pass such names through :func:`plain_dots` first.
    """
    return name if name.endswith(".") else name + "."


def plain_dots(name: str) -> str:
    """``name`` (presentation form) with ``\\.`` and ``\\\\`` written ``\\046`` and ``\\092``.

    In presentation form a dot after an odd run of backslashes belongs to its label
    (miekg/dns reads ``a\\.example.org.`` as two labels, ``a.example`` and ``org``).  With
    those two escapes rewritten as decimal ones, every dot left is a label boundary and
    :func:`in_zone` compares such names correctly; other escapes cannot hide a boundary and
    are kept as written.  A name without a backslash is returned unchanged.
    """
    if "\\" not in name:
        return name
    out: list[str] = []
    i = 0
    n = len(name)
    while i < n:
        char = name[i]
        if char == "\\" and i + 1 < n and name[i + 1] in ".\\":
            out.append("\\046" if name[i + 1] == "." else "\\092")
            i += 2
            continue
        out.append(char)
        if char == "\\" and i + 1 < n:
            out.append(name[i + 1])  # \X or the first digit of \DDD: no boundary
            i += 1
        i += 1
    return "".join(out)


def in_zone(name: str, zone: str) -> bool:
    """True when ``name`` is ``zone`` or below it, on a label boundary (miekg/dns ``IsSubDomain``).

    Both names lower case (as the caller folds them) and fully qualified (trailing dot);
    the root zone ``"."`` holds every name.  Every ``.`` counts as a label separator, which is
    right for query names as Twisted decodes them from the wire; names in presentation form
    go through :func:`plain_dots` first.  ``in_zone("a.example.org.", "example.org.")`` is
    true, ``in_zone("aexample.org.", "example.org.")`` is not.
    """
    if zone == "." or name == zone:
        return True
    cut = len(name) - len(zone) - 1
    return cut >= 0 and name[cut] == "." and name.endswith(zone)


def zone_of(name: str, zones: Iterable[str]) -> str | None:
    """The longest of ``zones`` that holds ``name`` (CoreDNS ``plugin.Zones.Matches``), or None.

    Same name form as :func:`in_zone`.  Two zones of the same length cannot both hold a name
    unless they are equal, so the order of ``zones`` does not matter.
    """
    best: str | None = None
    for zone in zones:
        if (best is None or len(zone) > len(best)) and in_zone(name, zone):
            best = zone
    return best


def is_reverse(name: str) -> bool:
    """True for names below ``in-addr.arpa.`` or ``ip6.arpa.`` (CoreDNS ``dnsutil.IsReverse``).

    The bare ``in-addr.arpa.`` and ``ip6.arpa.`` are not reverse by this test (CoreDNS
    compares with ``.in-addr.arpa.``), so a stanza for just those has them as primary zone.
    """
    return name.endswith(_IP4ARPA) or name.endswith(_IP6ARPA)
