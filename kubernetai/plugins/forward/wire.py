"""The upstream exchange on the wire: the query forward sends, and how a reply is read.

CoreDNS forwards the client's message itself with a fresh ID: the question as the client
wrote it (case kept), RD and CD as the client set them, and the client's OPT record (UDP
size, DO, every option). :func:`build_query` writes that from the request.

A reply is read strictly (:func:`parse_reply`): the header, every record's bounds, then
each record decoded with Twisted Names' record classes so that later plugins (cache,
loadbalance, rewrite, minimal) get ``RRHeader`` objects. Twisted's own ``Message.decode``
silently drops what it cannot read, which would turn a broken reply into an empty
NOERROR; here a broken reply is an error, as miekg/dns's ``Unpack`` makes it. A reply cut
short (the counts promise more than the bytes hold) is told apart, because CoreDNS answers
that case over UDP with an empty truncated reply instead of an error.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from twisted.names import dns

from kubernetai.core.request import Request
from kubernetai.core.wire import RR_FIXED, encode_name
from kubernetai.pkg.dnscodes import RCODE_TO_STRING

__all__ = ["Answer", "MalformedReply", "build_query", "parse_reply", "question_wire",
           "matches", "asked", "probe_query", "rcode_name", "truncated_answer", "header_id"]

_HEADER = struct.Struct("!HBBHHHH")
_U16 = struct.Struct("!H")
_MESSAGE = dns.Message()      # for its table of record classes
_OPT = 41
_TC = 0x02
_QR = 0x80

def rcode_name(rcode: int) -> str:
    """The rcode as CoreDNS labels it (the ``rcode`` label of the request duration
    histogram): miekg's ``RcodeToString`` name, or the number."""
    return RCODE_TO_STRING.get(rcode) or str(rcode)


class MalformedReply(Exception):
    """The upstream's bytes are not a DNS message. ``cut`` is true when they end before
    what the header promises (miekg's "overflow" errors). ``question`` is the reply's
    question when it was read before the fault (as miekg hands back the part of the
    message it could unpack): a cut UDP reply becomes an empty truncated one that still
    matches the query."""

    def __init__(self, message: str, cut: bool = False) -> None:
        super().__init__(message)
        self.cut = cut
        self.question: tuple[bytes, int, int] | None = None


@dataclass(slots=True)
class Answer:
    """An upstream's reply, decoded. ``question`` is (lower-case name labels, type,
    class) of its first question, or None when it has none (or more than one)."""

    id: int
    flags3: int             # header byte 3: QR, opcode, AA, TC, RD
    flags4: int             # header byte 4: RA, Z, AD, CD, rcode
    question: tuple[bytes, int, int] | None
    answers: list[dns.RRHeader]
    authority: list[dns.RRHeader]
    additional: list[dns.RRHeader]
    size: int

    @property
    def rcode(self) -> int:
        return self.flags4 & 0x0F

    @property
    def truncated(self) -> bool:
        return bool(self.flags3 & _TC)

    @property
    def response(self) -> bool:
        return bool(self.flags3 & _QR)


def truncated_answer(id_: int, flags3: int, flags4: int,
                     question: tuple[bytes, int, int] | None = None) -> Answer:
    """CoreDNS's answer to a UDP reply too large for its buffer (or cut short): the
    header and the question, TC set, every other section empty (``truncateResponse``).
    Without a readable question it fails ``matches`` (FORMERR), as in CoreDNS."""
    return Answer(id_, flags3 | _TC, flags4, question, [], [], [], 12)


def header_id(data: bytes) -> int:
    return int(_U16.unpack_from(data)[0])


# ---------------------------------------------------------------------------------------
# The query


def question_wire(request: Request) -> bytes:
    """The question section to send: the client's bytes when they are the request's
    question, else written from the request's (possibly rewritten) name."""
    if getattr(request, "simple", False):
        return request.question
    labels = getattr(request, "labels", None)
    qname = request.qname
    if labels is None or b".".join([label.replace(b".", b"\0") for label in labels]) != qname:
        labels = qname.split(b".") if qname else []
    return encode_name(labels) + struct.pack("!HH", request.qtype, request.qclass)


def build_query(request: Request, qid: int, question: bytes) -> bytes:
    """The message sent upstream for ``request`` under ID ``qid``."""
    b3 = request.rd & 0x01
    b4 = request.cd & 0x10
    if request.edns:
        options = request.options
        ttl = 0x8000 if request.do else 0
        opt = b"\0" + RR_FIXED.pack(_OPT, request.bufsize, ttl, len(options)) + options
        return _HEADER.pack(qid, b3, b4, 1, 0, 0, 1) + question + opt
    return _HEADER.pack(qid, b3, b4, 1, 0, 0, 0) + question


def probe_query(qid: int, domain: bytes, recursion: bool) -> bytes:
    """A health check: ``DOMAIN IN NS`` (``.`` by default), RD unless ``no_rec``."""
    labels = [label for label in domain.split(b".") if label]
    return (_HEADER.pack(qid, 0x01 if recursion else 0, 0, 1, 0, 0, 0) + encode_name(labels)
            + struct.pack("!HH", dns.NS, dns.IN))


# ---------------------------------------------------------------------------------------
# The reply


#: The compression pointers one reply may make us follow in all: this many per question
#: and record, plus a constant. Real compressors need one or two per name; a hostile
#: reply of 65,535 bytes whose thousands of records each name a long chain of pointers
#: would otherwise cost hundreds of thousands of jumps on the reactor.
JUMPS_PER_RECORD = 8
JUMPS_BASE = 512
#: The fewest bytes a question (root name, type, class) and a record (root name, type,
#: class, TTL, rdlength) take: counts promising more than the bytes can hold are a cut
#: message, known before anything is decoded.
_MIN_QUESTION = 5
_MIN_RECORD = 11
_TOO_MANY_POINTERS = "dns: too many compression pointers"


class _Budget:
    """What is left of one reply's pointer jumps (ours and Twisted's, see
    :class:`_CountingIO`)."""

    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise MalformedReply(_TOO_MANY_POINTERS)


class _CountingIO(BytesIO):
    """The reply for Twisted's record decoders: every ``seek`` is a pointer followed in a
    name of the rdata (Twisted seeks once per jump, once more at the end of a compressed
    name), charged to the reply's budget."""

    def __init__(self, data: bytes, budget: _Budget) -> None:
        super().__init__(data)
        self.budget = budget

    def seek(self, offset: int, whence: int = 0) -> int:
        self.budget.spend()
        return super().seek(offset, whence)


def _skip_name(data: bytes, pos: int, n: int, budget: _Budget | None = None
               ) -> tuple[list[bytes], int]:
    """The labels of the name at ``pos`` (case kept) and the offset after it.

    This is miekg's ``UnpackDomainName``, looser than the core's reader
    (:func:`kubernetai.core.wire.read_name`): an upstream's pointer may lead forwards (126
    in a row at most), and each fault carries miekg's error text, which CoreDNS logs.
    Each pointer followed is charged to ``budget``."""
    labels: list[bytes] = []
    end = -1
    jumps = 0
    total = 1
    while True:
        if pos >= n:
            raise MalformedReply("dns: overflow unpacking domain name", cut=True)
        length = data[pos]
        if length == 0:
            pos += 1
            break
        kind = length & 0xC0
        if kind == 0xC0:
            if pos + 1 >= n:
                raise MalformedReply("dns: overflow unpacking domain name", cut=True)
            if end < 0:
                end = pos + 2
            jumps += 1
            if jumps > 126:
                raise MalformedReply(_TOO_MANY_POINTERS)
            if budget is not None:
                budget.spend()
            pos = ((length & 0x3F) << 8) | data[pos + 1]
            continue
        if kind:
            raise MalformedReply("dns: bad rdata")
        stop = pos + 1 + length
        if stop > n:
            raise MalformedReply("dns: overflow unpacking domain name", cut=True)
        total += length + 1
        if total > 255:
            raise MalformedReply("dns: domain name exceeded 255 wire-format octets")
        labels.append(data[pos + 1:stop])
        pos = stop
    return labels, (end if end >= 0 else pos)


def parse_reply(data: bytes) -> Answer:
    """The upstream's message, every record decoded; MalformedReply if it is not one
    (carrying the question when that much could be read)."""
    n = len(data)
    if n < 12:
        raise MalformedReply("dns: overflow unpacking uint16", cut=True)
    id_, b3, b4, qd, an, ns, ar = _HEADER.unpack_from(data)
    if n == 12:
        # miekg returns a bare header as it is (9.9.9.9 sends such REFUSEDs): no
        # question, so it matches no query.
        return Answer(id_, b3, b4, None, [], [], [], n)
    records = an + ns + ar
    budget = _Budget(JUMPS_BASE + JUMPS_PER_RECORD * min(qd + records, n // _MIN_QUESTION))
    questions: list[tuple[bytes, int, int]] = []
    pos = 12
    try:
        for _ in range(qd):
            labels, pos = _skip_name(data, pos, n, budget)
            if pos + 4 > n:
                raise MalformedReply("dns: overflow unpacking uint16", cut=True)
            qtype, qclass = struct.unpack_from("!HH", data, pos)
            questions.append((b".".join(labels).lower(), qtype, qclass))
            pos += 4
        if pos + _MIN_RECORD * records > n:
            raise MalformedReply("dns: overflow unpacking domain name", cut=True)
        sections = _read_records(data, pos, (an, ns, ar), bool(b3 & 0x04), budget)
    except MalformedReply as exc:
        exc.question = questions[0] if len(questions) == 1 else None
        raise
    question = questions[0] if len(questions) == 1 else None
    return Answer(id_, b3, b4, question, sections[0], sections[1], sections[2], n)


def _read_records(data: bytes, pos: int, counts: tuple[int, int, int], auth: bool,
                  budget: _Budget) -> list[list[dns.RRHeader]]:
    """The answer, authority and additional sections (OPT records left out)."""
    n = len(data)
    strio = _CountingIO(data, budget)
    sections: list[list[dns.RRHeader]] = [[], [], []]
    for section, count in zip(sections, counts):
        for _ in range(count):
            labels, fixed = _skip_name(data, pos, n, budget)
            if fixed + 10 > n:
                raise MalformedReply("dns: overflow unpacking uint16", cut=True)
            rtype, rclass, ttl, rdlength = RR_FIXED.unpack_from(data, fixed)
            stop = fixed + 10 + rdlength
            if stop > n:
                raise MalformedReply("dns: overflow unpacking rdata", cut=True)
            if rtype != _OPT:
                header = dns.RRHeader(b".".join(labels), rtype, rclass, ttl, auth=auth)
                header.rdlength = rdlength
                section.append(_decode_record(strio, header, fixed + 10, stop))
            pos = stop
    return sections


def _decode_record(strio: _CountingIO, header: dns.RRHeader, start: int, stop: int
                   ) -> dns.RRHeader:
    """One record's rdata, decoded with Twisted's class for its type (which must read
    exactly its rdata: a record whose rdata its type cannot hold is a broken message)."""
    BytesIO.seek(strio, start)                  # not a pointer: not charged
    try:
        kind = _MESSAGE.lookupRecordType(header.type)
        payload: Any = kind(ttl=header.ttl)
        payload.decode(strio, header.rdlength)
    except (EOFError, struct.error, ValueError, IndexError, UnicodeError) as error:
        raise MalformedReply(f"dns: bad rdata: {error}") from None
    if strio.tell() != stop:
        raise MalformedReply("dns: bad rdata")
    header.payload = payload
    return header


def asked(question: bytes) -> tuple[bytes, int, int]:
    """What a reply's question must be for ``question`` (the bytes sent): the lower-case
    name, the type and the class."""
    labels, pos = _skip_name(question, 0, len(question))
    qtype, qclass = struct.unpack_from("!HH", question, pos)
    return b".".join(labels).lower(), qtype, qclass


def matches(answer: Answer, wanted: tuple[bytes, int, int]) -> bool:
    """``request.Match``: one question, QR set, the name (any case), type and class."""
    return answer.response and answer.question == wanted
