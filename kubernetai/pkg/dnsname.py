"""Domain names in presentation form, as CoreDNS writes them in its logs.

A query name is whatever bytes a client put on the wire: newlines, ESC sequences, dots
inside a label. Printed raw, such a name forges log lines or drives the operator's
terminal. miekg/dns (and so CoreDNS) prints a label byte outside ``!``..``~`` as ``\\DDD``
(three decimal digits) and prefixes the bytes that mean something in a zone file
(``.`` ``'`` ``@`` ``;`` ``(`` ``)`` ``"`` ``\\`` and space) with a backslash; every name
that reaches a log line goes through here.
"""

from __future__ import annotations

import re
from typing import Iterable

__all__ = ["escape_label", "presentation", "presentation_dotted"]

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
