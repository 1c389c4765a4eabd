"""Reordering the records of an encoded response: a cache hit, or an answer relayed as is.

The fast path moves byte ranges. Each section is contiguous and a permutation keeps its
length, so only the bytes of the records that move change place, and nothing outside them
does. That is correct when no compression pointer anywhere in the message leads into the
bytes that move: the usual case, where every owner name points at the question. The
message is scanned once: record boundaries, and for every name (owners, and the names in
the rdata of the types that may be compressed) the furthest byte its pointers lead to,
chains followed. If that is before the first record that moves, the ranges are permuted;
else (an MX target that the additional section's glue points into, say) the message is
decoded and encoded again with Twisted Names, and if that no longer fits the size the
client allows, it is sent unshuffled.
"""

from __future__ import annotations

import struct
from io import BytesIO
from typing import Sequence

from twisted.names import dns

from kubernetai.plugins.loadbalance.policy import Policy

__all__ = ["reorder", "Layout", "scan", "layout_of"]

_U16 = struct.Struct("!H")
_FIXED = struct.Struct("!HHIH")
_OPT, _TSIG = 41, 250
#: Where names sit in the rdata of the types that may carry compressed ones (RFC 3597 §4):
#: (offset of the first name, number of names in a row).
_NAMES: dict[int, tuple[int, int]] = {
    2: (0, 1), 3: (0, 1), 4: (0, 1), 5: (0, 1), 6: (0, 2), 7: (0, 1), 8: (0, 1), 9: (0, 1),
    12: (0, 1), 14: (0, 2), 15: (2, 1), 17: (0, 2), 18: (2, 1), 21: (2, 1), 26: (2, 2),
    33: (6, 1), 36: (2, 1), 39: (0, 1),
}
_NAPTR = 35
#: Types whose names are not at a fixed place (SIG, NXT): a message that has one is not
#: reordered if anything would move.
_OPAQUE = frozenset({24, 30})


class _Bad(Exception):
    pass


class Record:
    """One record of an encoded message, as a policy :class:`~.policy.View` sees it."""

    __slots__ = ("data", "start", "end", "type", "rdata")

    def __init__(self, data: bytes, start: int, end: int, type_: int, rdata: int) -> None:
        self.data, self.start, self.end, self.type, self.rdata = data, start, end, type_, rdata

    def address(self) -> bytes | None:
        if self.type in (1, 28):
            return self.data[self.rdata:self.end]
        return None

    def owner(self) -> str:
        labels: list[bytes] = []
        pos = self.start
        data = self.data
        for _ in range(128):
            length = data[pos]
            if length >= 0xC0:
                pos = ((length & 0x3F) << 8) | data[pos + 1]
                continue
            if length == 0:
                break
            labels.append(data[pos + 1:pos + 1 + length])
            pos += 1 + length
        return (b".".join(labels).decode("latin-1").lower() + ".") if labels else "."


class Layout:
    """Where the records of a message are, and how far its pointers reach."""

    __slots__ = ("sections", "reach", "opaque")

    def __init__(self) -> None:
        #: per section: (start, end of the section, records to order, fixed records after)
        self.sections: list[tuple[int, int, list[Record], list[Record]]] = []
        self.reach = 0          # one past the furthest byte a pointer leads to
        self.opaque = False     # a record whose names could not be looked at


def _name(data: bytes, pos: int, n: int, layout: Layout) -> int:
    """Offset after the name at ``pos``; pointers followed to note how far they reach."""
    end = -1
    hops = 0
    while True:
        if pos >= n:
            raise _Bad
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length >= 0xC0:
            if pos + 1 >= n:
                raise _Bad
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if end < 0:
                end = pos + 2
            hops += 1
            if target >= pos or hops > 64:
                raise _Bad
            pos = target
            continue
        if length > 63:
            raise _Bad
        pos += 1 + length
        if hops and pos > layout.reach:
            layout.reach = pos
    if hops and pos > layout.reach:
        layout.reach = pos
    return end if end >= 0 else pos


def scan(data: bytes) -> Layout | None:
    """The message's :class:`Layout`, or None if it does not parse."""
    n = len(data)
    if n < 12:
        return None
    qd, an, ns, ar = struct.unpack_from("!HHHH", data, 4)
    layout = Layout()
    try:
        pos = 12
        for _ in range(qd):
            pos = _name(data, pos, n, layout) + 4
        for count in (an, ns, ar):
            start = pos
            ordered: list[Record] = []
            fixed: list[Record] = []
            for _ in range(count):
                begin = pos
                pos = _name(data, pos, n, layout)
                if pos + 10 > n:
                    raise _Bad
                kind, _, _, rdlen = _FIXED.unpack_from(data, pos)
                rdata = pos + 10
                pos = rdata + rdlen
                if pos > n:
                    raise _Bad
                names = _NAMES.get(kind)
                if names is not None:
                    at = rdata + names[0]
                    for _ in range(names[1]):
                        at = _name(data, at, pos, layout)
                elif kind == _NAPTR:
                    at = rdata + 4
                    for _ in range(3):                  # flags, services, regexp
                        at += 1 + data[at]
                    _name(data, at, pos, layout)
                elif kind in _OPAQUE:
                    layout.opaque = True
                record = Record(data, begin, pos, kind, rdata)
                (fixed if kind == _OPT or kind == _TSIG else ordered).append(record)
            layout.sections.append((start, pos, ordered, fixed))
    except (_Bad, IndexError, struct.error):
        return None
    return layout


#: Layouts of recent messages, by their bytes past the ID and flags: a cache hit is the
#: same bytes every time (but for those, and the client's OPT), so it is scanned once.
_LAYOUTS: dict[bytes, Layout | None] = {}
MEMO_ENTRIES = 2048
MEMO_LARGEST = 2048             # larger messages (TCP) are scanned every time


def layout_of(data: bytes) -> Layout | None:
    """:func:`scan`, remembered for messages of at most :data:`MEMO_LARGEST` bytes.

    A remembered layout's records read their addresses and names from the message first
    scanned, which holds the same bytes at every offset they read."""
    if len(data) > MEMO_LARGEST:
        return scan(data)
    key = data[4:]
    try:
        return _LAYOUTS[key]
    except KeyError:
        pass
    layout = scan(data)
    if len(_LAYOUTS) >= MEMO_ENTRIES:
        _LAYOUTS.clear()
    _LAYOUTS[key] = layout
    return layout


def reorder(data: bytes, policy: Policy, qtype: int, limit: int = 65535) -> bytes:
    """``data`` with its records in the order ``policy`` gives (``data`` itself when
    nothing moves or it cannot be done)."""
    layout = layout_of(data)
    if layout is None:
        return data
    orders: list[list[int] | None] = []
    first = len(data)
    for section, (_, _, records, fixed) in enumerate(layout.sections):
        order = policy.order(section, records, qtype) if records else None
        if order is not None:
            moved = _first_moved(order)
            if moved < 0 and fixed and fixed[0].start < records[-1].start:
                moved = 0                          # an OPT amid the records goes last
            if moved < 0:
                order = None
            else:
                first = min(first, records[moved].start)
        orders.append(order)
    if first == len(data):
        return data
    if layout.reach <= first:
        return _moved(data, layout, orders)
    if layout.opaque:
        return data
    return _recoded(data, layout, orders, limit)


def _first_moved(order: Sequence[int]) -> int:
    for position, index in enumerate(order):
        if position != index:
            return position
    return -1


def _moved(data: bytes, layout: Layout, orders: list[list[int] | None]) -> bytes:
    parts = []
    done = 0
    for (start, end, records, fixed), order in zip(layout.sections, orders):
        if order is None:
            continue
        parts.append(data[done:start])
        parts += [data[records[i].start:records[i].end] for i in order]
        parts += [data[record.start:record.end] for record in fixed]
        done = end
    parts.append(data[done:])
    return b"".join(parts)


def _recoded(data: bytes, layout: Layout, orders: list[list[int] | None], limit: int) -> bytes:
    """The slow path: decode, put the records in order, encode with compression."""
    message = dns.Message()
    try:
        message.fromStr(data)
    except Exception:  # noqa: BLE001 - what Twisted cannot read is sent as it came
        return data
    question_end = layout.sections[0][0]
    body = BytesIO()
    body.write(data[12:question_end])
    compression: dict[bytes, int] = {}
    for section, order in zip((message.answers, message.authority, message.additional),
                              orders):
        kept = [rr for rr in section if rr.type not in (_OPT, _TSIG)]
        fixed = [rr for rr in section if rr.type in (_OPT, _TSIG)]
        if order is not None:
            kept = [kept[i] for i in order]
        for rr in kept + fixed:
            rr.encode(body, compression)
    wire = data[:12] + body.getvalue()
    if len(wire) > max(limit, len(data)):
        return data
    return wire
