"""A response's wire bytes read the way CoreDNS's cache reads a ``dns.Msg``.

The cache sees every answer as the bytes about to be sent (whoever made them: a stanza's
records rendered by the server, ``forward``'s relayed records, a reply already encoded).
:func:`scan` walks them once and notes what the cache needs: the rcode, TC, where each
record's TTL sits (so TTLs can be rewritten in place, on a miss and on every hit), where
each record ends (to truncate a hit for a small client), the OPT record's place, the
authority section's SOA and NS, the answer section's owners and CNAME targets, RRSIG
validity periods. :func:`typify` is ``response.Typify`` (with the cache's NODATA
reclassification) on that, and :func:`cacheable` its ``key`` test.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from kubernetai.core.wire import RR_FIXED, WireError, read_name, skip_name

__all__ = ["Scan", "scan", "typify", "cacheable", "minimal_ttl", "answers_question",
           "Malformed", "strip_opt", "NOERROR_T", "NAMEERROR", "SERVERERROR", "NODATA",
           "DELEGATION", "META", "UPDATE", "OTHERERROR", "TYPE_NAMES"]

# response.Type
NOERROR_T, NAMEERROR, SERVERERROR, NODATA, DELEGATION, META, UPDATE, OTHERERROR = range(8)
TYPE_NAMES = ("NOERROR", "NXDOMAIN", "SERVERERROR", "NODATA", "DELEGATION", "META",
              "UPDATE", "OTHERERROR")

_OPT, _SOA, _NS, _CNAME, _RRSIG, _ANY, _AXFR, _IXFR = 41, 6, 2, 5, 46, 255, 252, 251
_U16 = struct.Struct("!H")
_U16X2 = struct.Struct("!HH")
_COUNTS = struct.Struct("!HHHH")
_U32X2 = struct.Struct("!II")
#: miekg/dns's year68: RRSIG times are serial numbers modulo 2**32 (RFC 4034 3.1.5).
_YEAR68 = 1 << 31
#: dnsutil.MinimalDefaultTTL: a message without records is kept this long.
MINIMAL_DEFAULT_TTL = 5


#: The bytes are not a DNS message the cache can read.
Malformed = WireError


@dataclass(slots=True)
class Scan:
    rcode: int
    truncated: bool
    qtype: int
    qclass: int
    counts: tuple[int, int, int]        # answer, authority, additional (OPT included)
    qend: int = 12                      # where the question ends
    ttl_at: list[int] = field(default_factory=list)     # TTL offsets of non-OPT records
    ttls: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)       # end offsets of non-OPT records
    sections: list[int] = field(default_factory=list)   # each non-OPT record's section
    opt: tuple[int, int] | None = None                 # the OPT record's byte range
    soa: bool = False
    ns: int = 0
    # Answer records: (owner, type, class, CNAME target or b"").
    answer: list[tuple[bytes, int, int, bytes]] = field(default_factory=list)
    cname: bool = False                                 # a CNAME in the answer section
    rrsigs: list[tuple[int, int]] = field(default_factory=list)   # (expiration, inception)


def _name(wire: bytes, pos: int, n: int) -> tuple[bytes, int]:
    """The lower-case dotted name at ``pos`` (pointers followed), and the offset after it."""
    labels, end, _ = read_name(wire, pos, n)
    return b".".join(labels).lower(), end


def scan(wire: bytes) -> Scan:
    """What the cache needs to know of the response ``wire`` (one question)."""
    n = len(wire)
    if n < 12:
        raise Malformed("short header")
    qd, an, ns, ar = _COUNTS.unpack_from(wire, 4)
    pos = 12
    qtype = qclass = 0
    for _ in range(qd):
        pos = skip_name(wire, pos, n)
        if pos + 4 > n:
            raise Malformed("truncated question")
        qtype, qclass = _U16X2.unpack_from(wire, pos)
        pos += 4
    result = Scan(wire[3] & 0xF, bool(wire[2] & 0x02), qtype, qclass, (an, ns, ar), pos)
    # Answer owners that are one compression pointer (most: to the question), by target:
    # read once. A target already read from an earlier record lies before this one too.
    owners: dict[int, bytes] = {}
    ttl_at, ttls, ends, sections = result.ttl_at, result.ttls, result.ends, result.sections
    answer = result.answer
    unpack = RR_FIXED.unpack_from
    for section, count in enumerate((an, ns, ar)):
        for _ in range(count):
            start = pos
            if section == 0:
                if wire[pos] >= 0xC0 and pos + 1 < n:
                    target = ((wire[pos] & 0x3F) << 8) | wire[pos + 1]
                    owner = owners.get(target)
                    if owner is None:
                        owner, pos = _name(wire, pos, n)
                        owners[target] = owner
                    else:
                        pos += 2
                else:
                    owner, pos = _name(wire, pos, n)
            else:
                owner, pos = b"", skip_name(wire, pos, n)
            if pos + 10 > n:
                raise Malformed("truncated record")
            rtype, rclass, ttl, rdlen = unpack(wire, pos)
            rdata = pos + 10
            end = rdata + rdlen
            if end > n:
                raise Malformed("rdata overflows the message")
            if rtype == _OPT and section == 2:
                result.opt = (start, end)
                pos = end
                continue
            ttl_at.append(pos + 4)
            ttls.append(ttl)
            ends.append(end)
            sections.append(section)
            if section == 0:
                if rtype == _CNAME:
                    result.cname = True
                    answer.append((owner, rtype, rclass, _name(wire, rdata, n)[0]))
                else:
                    answer.append((owner, rtype, rclass, b""))
            elif section == 1:
                if rtype == _SOA:
                    result.soa = True
                elif rtype == _NS:
                    result.ns += 1
            if rtype == _RRSIG and rdlen >= 16:
                result.rrsigs.append(_U32X2.unpack_from(wire, rdata + 8))
            pos = end
    return result


def _quot(a: int, b: int) -> int:
    """Go's integer division (towards zero)."""
    q = abs(a) // b
    return q if a >= 0 else -q


def _valid(expiration: int, inception: int, now: int) -> bool:
    """miekg/dns ``RRSIG.ValidityPeriod``."""
    ti = inception + _quot(inception - now, _YEAR68) * _YEAR68
    te = expiration + _quot(expiration - now, _YEAR68) * _YEAR68
    return ti <= now <= te


def typify(s: Scan, qname: bytes, do: bool, now: float) -> int:
    """``cacheResponseType``: ``response.Typify``, and a NOERROR whose answer does not
    answer the question (a CNAME chain ending elsewhere) with an SOA is NODATA."""
    kind = _typify(s, do, now)
    if kind == NOERROR_T and s.soa and s.answer and not answers_question(s, qname):
        return NODATA
    return kind


def _typify(s: Scan, do: bool, now: float) -> int:
    if s.qtype in (_AXFR, _IXFR):
        return META
    if do and any(not _valid(exp, inc, int(now)) for exp, inc in s.rrsigs):
        return OTHERERROR
    an = s.counts[0]
    if an and s.rcode == 0:
        return NOERROR_T
    if an and s.rcode == 3:
        return OTHERERROR
    if s.soa and s.rcode == 0:
        return NODATA
    if s.rcode == 3:
        return NAMEERROR
    if s.rcode in (2, 4):
        return SERVERERROR
    if s.ns and s.rcode == 0:
        return DELEGATION
    if s.rcode == 0:
        return NOERROR_T
    return OTHERERROR


def _class_ok(rclass: int, qclass: int) -> bool:
    return qclass == _ANY or rclass == qclass


def _cname_target(s: Scan, owner: bytes, qclass: int) -> tuple[bytes, bool]:
    target = b""
    for name, rtype, rclass, to in s.answer:
        if rtype != _CNAME or not _class_ok(rclass, qclass) or name != owner:
            continue
        if target and target != to:
            return b"", False
        target = to
    return target, True


def answers_question(s: Scan, qname: bytes) -> bool:
    """Whether the answer section answers the question (``answersQuestion``): a record of
    the asked type at the end of the CNAME chain from the name asked."""
    if s.rcode != 0 or not s.answer:
        return False
    qtype, qclass = s.qtype, s.qclass
    if qtype == _ANY:
        return any(_class_ok(c, qclass) and o == qname for o, _, c, _ in s.answer)
    if qtype == _CNAME:
        target, ok = _cname_target(s, qname, qclass)
        return ok and bool(target)
    if not s.cname:                           # no chain: a record of the type at the name
        for owner, rtype, rclass, _ in s.answer:
            if rtype == qtype and owner == qname and (rclass == qclass or qclass == _ANY):
                return True
        return False
    seen = set()
    name = qname
    while True:
        if name in seen:
            return False                      # a CNAME loop
        seen.add(name)
        target, ok = _cname_target(s, name, qclass)
        if not ok:
            return False
        if not target:
            break
        name = target
    return any(t == qtype and _class_ok(c, qclass) and o == name for o, t, c, _ in s.answer)


def cacheable(s: Scan, kind: int, qname: bytes) -> bool:
    """CoreDNS's ``key`` test: what may be stored at all."""
    if s.truncated or kind in (OTHERERROR, META, UPDATE):
        return False
    if kind == NAMEERROR and not s.soa:
        return False
    if kind == NOERROR_T and not s.soa and s.answer and not answers_question(s, qname):
        return False                          # an SOA-less NODATA (RFC 2308 5)
    return True


def minimal_ttl(s: Scan, kind: int, maximum: int) -> int:
    """``dnsutil.MinimalTTLWithMaximum``: the smallest TTL of every record but OPT, at most
    ``maximum``; 5 s for other types than NOERROR, NXDOMAIN and NODATA and for a message
    without records."""
    if kind not in (NOERROR_T, NAMEERROR, NODATA) or not s.ttls:
        return MINIMAL_DEFAULT_TTL
    return min(maximum, min(s.ttls))


def strip_opt(wire: bytes, s: Scan) -> tuple[bytes, list[int], list[int]]:
    """``wire`` without its OPT record (ARCOUNT one less), with the TTL offsets and record
    ends moved to match."""
    if s.opt is None:
        return wire, list(s.ttl_at), list(s.ends)
    start, end = s.opt
    cut = end - start
    arcount = _U16.unpack_from(wire, 10)[0] - 1
    stripped = wire[:10] + _U16.pack(arcount) + wire[12:start] + wire[end:]
    return (stripped, [at - cut if at > start else at for at in s.ttl_at],
            [e - cut if e > start else e for e in s.ends])
