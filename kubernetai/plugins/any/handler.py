"""The `any` step: an ANY question gets CoreDNS's RFC 8482 answer; others pass on.

The answer is NOERROR, not authoritative, with one record: HINFO ``"ANY obsoleted"``
``"See RFC 8482"``, TTL 8482, class IN, owned by the query name exactly as the client
wrote it (its case, any escaped byte): the record's owner is a pointer to the question.

`any` stands before the answer cache, so a cache hit passes :meth:`AnyHandler.filter_early`:
an ANY question goes the whole way (here it is answered); any other keeps its hit.
"""

from __future__ import annotations

import struct
from io import BytesIO
from typing import IO, Any

from twisted.names import dns

from kubernetai.core.codec import NOERROR
from kubernetai.core.plugin import Next, Result
from kubernetai.core.request import Reply, Request

__all__ = ["AnyHandler", "CPU", "OS", "TTL"]

CPU = b"ANY obsoleted"
OS = b"See RFC 8482"
TTL = 8482
_ANY = 255
_POINTER_TO_QUESTION = b"\xc0\x0c"   # the question's name starts right after the header
_FIXED = struct.Struct("!HHIH")


class _QuestionOwned(dns.RRHeader):
    """A record whose owner is written as a pointer to the question's name."""

    def encode(self, strio: IO[bytes], compDict: Any = None) -> None:
        rdata = _rdata(self.payload)
        strio.write(_POINTER_TO_QUESTION + _FIXED.pack(self.type, self.cls, self.ttl,
                                                       len(rdata)) + rdata)


def _rdata(payload: Any) -> bytes:
    out = BytesIO()
    payload.encode(out, None)
    return out.getvalue()


def hinfo(request: Request) -> dns.RRHeader:
    """CoreDNS's answer record for ``request``."""
    return _QuestionOwned(request.qname, dns.HINFO, dns.IN, TTL,
                          dns.Record_HINFO(CPU, OS, TTL))  # type: ignore[arg-type]


class AnyHandler:
    name = "any"

    def serve(self, request: Request, next: Next) -> Result:
        if request.qtype != _ANY:
            return next(request)
        return Reply(NOERROR, False, (hinfo(request),), plugin="any")

    def filter_early(self, request: Request, wire: bytes) -> bytes | None:
        """A cache hit as it is, unless the question is ANY (then :meth:`serve`)."""
        return None if request.qtype == _ANY else wire
