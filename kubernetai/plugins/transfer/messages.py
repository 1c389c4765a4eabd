"""A transfer's records as DNS messages, as CoreDNS 1.14.7's *transfer* cuts and writes them.

Records are encoded without name compression, each exactly as many bytes as miekg's
``dns.Len`` counts. Before a record joins a message that already holds some, the message
is sent if the records' bytes would pass :data:`LIMIT` (63,000; the header, question and
OPT record come on top, so a message stays within 64 KiB). Each message is
``SetReply(request)`` with AA set: the request's ID, RD and CD, the question as asked,
NOERROR, the records in the answer section, nothing in the others, and the request's OPT
record echoed as for any reply.

One exception, CoreDNS's "noop" IXFR: a transfer of a single record, the SOA (an IXFR
whose serial is the current one), is one message without AA.

The messages are made lazily, one per ``next()``: the server asks for the next one when
the connection has taken the last, so a zone of any size costs one message of memory.
"""

from __future__ import annotations

import struct
from io import BytesIO
from typing import Any, Callable, Iterable, Iterator

from kubernetai.core.request import Request

__all__ = ["LIMIT", "messages"]

#: The bytes of records one message holds at most (CoreDNS 1.14.7; before 1.14.3 it cut
#: after more than 500 records instead).
LIMIT = 63000

_HEADER = struct.Struct("!HBBHHHH")
_SOA = 6

#: Told when the series ends (not when it is abandoned): records sent, the serial of the
#: first record if it is a SOA, and whether it was the "noop" IXFR answer.
Sent = Callable[[int, "int | None", bool], None]


def message(request: Request, aa: bool, count: int, body: bytes) -> bytes:
    """One response to ``request`` carrying ``count`` encoded records (``body``) in its
    answer section."""
    b3 = (0x84 if aa else 0x80) | request.rd
    opt = request.opt
    return b"".join((_HEADER.pack(request.id, b3, request.cd, 1, count, 0, 1 if opt else 0),
                     request.question, body, opt))


def _serial(rr: Any) -> int | None:
    if rr.type != _SOA:
        return None
    numbers = getattr(rr, "numbers", None)   # answerwire's SoaRR
    if numbers is not None:
        return int(numbers[0])
    return int(rr.payload.serial)


def messages(request: Request, records: Iterable[Any], sent: Sent | None = None
             ) -> Iterator[bytes]:
    """The messages carrying ``records`` (Twisted ``RRHeader`` s or records that encode
    like them), in order; see the module docstring."""
    buffer = BytesIO()
    count = 0
    total = 0
    any_sent = False
    soa: int | None = None
    first = True
    for rr in records:
        if first:
            first = False
            soa = _serial(rr)
        start = buffer.tell()
        rr.encode(buffer, None)
        end = buffer.tell()
        if count and end > LIMIT:
            data = buffer.getvalue()
            yield message(request, True, count, data[:start])
            any_sent = True
            total += count
            buffer = BytesIO()
            buffer.write(data[start:end])
            count = 0
        count += 1
    if not any_sent and count == 1 and soa is not None:
        yield message(request, False, 1, buffer.getvalue())
        if sent is not None:
            sent(1, soa, True)
        return
    if count:
        yield message(request, True, count, buffer.getvalue())
        total += count
    if sent is not None:
        sent(total, soa, False)
