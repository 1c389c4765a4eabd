"""The frozen data a Corefile becomes: server blocks, their keys, their lines.

This is all the layers above ever see of a Corefile, so it is plain,
immutable and hashable where that means something (two equal
:class:`ZoneAddress` keys are the same server).  It says nothing about
what a directive means; every name and argument is kept as text, with the
file and line it came from so that later errors can still point at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Directive", "ServerBlock", "ZoneAddress"]


@dataclass(frozen=True, slots=True)
class Directive:
    """One line of a server block, with the block it opens if any.

    CoreDNS hands each plugin a flat token stream and lets it find lines and
    blocks itself; we give the layers above the same information already
    grouped, which is what every plugin's setup code reconstructs anyway.
    Nested lines are Directives too (their ``name`` is the line's first
    token), so options such as ``fallthrough`` or ``pods`` inside a plugin's
    block are read the same way as plugins.  File and line numbers are kept
    for every token so errors found later can still point at the source,
    including lines that came from an imported file or a snippet.
    """

    name: str
    args: tuple[str, ...]
    block: tuple[Directive, ...]
    filename: str
    line: int
    arg_lines: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ZoneAddress:
    """A normalised server block key: what CoreDNS calls a ``zoneAddr``.

    Two keys are the same server when scheme, zone and port are equal, so
    only those take part in equality and hashing; ``key`` (the text as
    written, for messages) and ``port_given`` (whether the port was written
    or defaulted, which matters to anything emulating CoreDNS's
    ``-dns.port`` flag) do not.
    """

    scheme: str
    zone: str
    port: int
    key: str = field(default="", compare=False)
    port_given: bool = field(default=False, compare=False)

    def __str__(self) -> str:
        # The form CoreDNS prints in its own messages, e.g. "dns://.:53".
        return f"{self.scheme}://{self.zone}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServerBlock:
    """One server block: the zones it serves and its directives, in order.

    A single written key can expand to several :class:`ZoneAddress` entries
    (a CIDR that is not on an octet/nibble boundary), so ``keys`` is the
    expanded list, in the order CoreDNS would configure them.
    """

    keys: tuple[ZoneAddress, ...]
    directives: tuple[Directive, ...]
    filename: str
    line: int
