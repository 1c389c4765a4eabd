"""What kind of response a reply is: CoreDNS's ``response.Typify``, for `minimal`.

A reply reaches `minimal` either as records (a ``Reply`` from a plugin here) or already
encoded (``Reply.wire``: a relayed upstream answer, a cache's bytes). :func:`of_records`
types the first, :func:`read_wire` reads what typing needs from the second (and where its
answer section ends), without decoding any record.

``Typify`` checks, in order: an AXFR/IXFR question is META; with the DO bit in the
message's OPT record, an RRSIG outside its validity period makes it OTHERERROR; then
answers with NOERROR are NOERROR, answers with NXDOMAIN OTHERERROR; a SOA in the authority
section with NOERROR is NODATA; NXDOMAIN is NXDOMAIN; SERVFAIL and NOTIMP are SERVERERROR;
NS records in the authority section with NOERROR are a DELEGATION; NOERROR is NOERROR;
anything else OTHERERROR. A reply made here as records carries no OPT record yet (the
server adds the client's when it encodes it, as CoreDNS's server does), so its DO bit is
never set and its signatures are not checked, as in CoreDNS.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Sequence

from twisted.names import dns

from kubernetai.core.wire import RR_FIXED, WireError, skip_name

__all__ = ["NOERROR", "NXDOMAIN", "SERVERERROR", "NODATA", "DELEGATION", "META",
           "OTHERERROR", "WireShape", "typify", "of_records", "read_wire",
           "rrsig_valid"]

NOERROR, NXDOMAIN, SERVERERROR, NODATA = "NOERROR", "NXDOMAIN", "SERVERERROR", "NODATA"
DELEGATION, META, OTHERERROR = "DELEGATION", "META", "OTHERERROR"

_R_NOERROR, _R_SERVFAIL, _R_NXDOMAIN, _R_NOTIMP = 0, 2, 3, 4
_T_NS, _T_SOA, _T_OPT, _T_RRSIG, _T_IXFR, _T_AXFR = 2, 6, 41, 46, 251, 252
_YEAR68 = 1 << 31
_HEADER = struct.Struct("!HBBHHHH")
_U32X2 = struct.Struct("!II")


def typify(qtype: int | None, rcode: int, answers: int, soa: bool, ns: int,
           expired: bool = False) -> str:
    """``response.Typify`` from what it looks at (the opcode is always QUERY here)."""
    if qtype in (_T_AXFR, _T_IXFR):
        return META
    if expired:
        return OTHERERROR
    if answers and rcode == _R_NOERROR:
        return NOERROR
    if answers and rcode == _R_NXDOMAIN:
        return OTHERERROR
    if soa and rcode == _R_NOERROR:
        return NODATA
    if rcode == _R_NXDOMAIN:
        return NXDOMAIN
    if rcode in (_R_SERVFAIL, _R_NOTIMP):
        return SERVERERROR
    if ns and rcode == _R_NOERROR:
        return DELEGATION
    if rcode == _R_NOERROR:
        return NOERROR
    return OTHERERROR


def of_records(qtype: int, rcode: int, answers: Sequence[dns.RRHeader],
               authority: Sequence[dns.RRHeader]) -> str:
    types = [rr.type for rr in authority]
    return typify(qtype, rcode, len(answers), _T_SOA in types, types.count(_T_NS))


def rrsig_valid(inception: int, expiration: int, now: int) -> bool:
    """miekg's ``RRSIG.ValidityPeriod``, as written there (Go's truncating division, and
    the period count added)."""
    def shifted(value: int) -> int:
        offset = value - now
        cycles = abs(offset) // _YEAR68 * (1 if offset >= 0 else -1)
        return value + cycles * _YEAR68
    return shifted(inception) <= now <= shifted(expiration)


@dataclass(frozen=True, slots=True)
class WireShape:
    """What typing needs of an encoded reply, and where its answer section ends."""

    kind: str
    answer_end: int


def read_wire(wire: bytes, now: int | None = None) -> WireShape | None:
    """The kind of an encoded reply and its answer section's end; None if it does not
    parse (it is then passed on as it is)."""
    try:
        return _read(wire, int(time.time()) if now is None else now)
    except (WireError, struct.error):
        return None


def _read(wire: bytes, now: int) -> WireShape:
    _, _, b3, qd, an, ns, ar = _HEADER.unpack_from(wire)
    rcode = b3 & 0x0F
    pos = 12
    qtype = None
    n = len(wire)
    for index in range(qd):
        pos = skip_name(wire, pos, n)
        if index == 0:
            qtype = struct.unpack_from("!H", wire, pos)[0]
        pos += 4
    if pos > n:
        raise WireError("truncated question")
    soa = False
    nscount = 0
    signatures: list[tuple[int, int]] = []
    do = False
    answer_end = pos
    for index in range(an + ns + ar):
        pos = skip_name(wire, pos, n)
        rtype, _, ttl, rdlength = RR_FIXED.unpack_from(wire, pos)
        rdata = pos + RR_FIXED.size
        pos = rdata + rdlength
        if pos > n:
            raise WireError("rdata overflows the message")
        if index < an:
            answer_end = pos
        elif index < an + ns:
            soa = soa or rtype == _T_SOA
            nscount += rtype == _T_NS
        elif rtype == _T_OPT:
            do = bool(ttl & 0x8000)
        if rtype == _T_RRSIG and rdlength >= 16:
            expiration, inception = _U32X2.unpack_from(wire, rdata + 8)
            signatures.append((inception, expiration))
    expired = do and any(not rrsig_valid(i, e, now) for i, e in signatures)
    return WireShape(typify(qtype, rcode, an, soa, nscount, expired), answer_end)
