"""The DNS wire format of a query and its response, as CoreDNS (miekg/dns) reads and writes it.

Pure functions, no sockets: :func:`parse_request` turns a datagram into a
:class:`~kubernetai.core.request.Request` (or an immediate error reply, or nothing: drop),
:func:`render` writes a response, and :func:`strip_opt` / :func:`patch_cached` turn a
response into what the answer cache keeps and back.

* the question is echoed byte for byte (case kept), RD and CD copied, RA never set;
* EDNS0: the request's OPT record is echoed (version 0, flags other than DO and the high
  Z bits cleared, the client's UDP size, only the NSID/EXPIRE/COOKIE/TCP-KEEPALIVE/PADDING
  options) as ``request.Request.SizeAndDo`` does, except that what a client could use to
  bloat replies is bounded: each option once, a COOKIE reduced to its 8-byte client cookie
  (FORMERR for a COOKIE of no legal length, RFC 7873), the others empty; EDNS version > 0
  gets BADVERS as ``plugin/pkg/edns.Version`` builds it;
* truncation at whole-record boundaries to the client's UDP size (512 without OPT, 65535
  on TCP) with TC set, keeping the longest prefix of answer + authority + additional that
  fits, as miekg's ``Msg.Truncate`` does;
* malformed requests handled as miekg's ``Server.serveDNS`` does (drop if the header does
  not parse or QR is set; NOTIMP for other opcodes; FORMERR for bad counts or an
  unparseable body).

The request is parsed with ``struct``, never through ``dns.Message``; only the records a
plugin answers with are encoded (``RRHeader.encode``). ``bench/dnsserver_micro.py`` has
the figures.
"""

from __future__ import annotations

import struct
from io import BytesIO
from typing import Callable, Sequence

from twisted.names import dns

from kubernetai.core.request import Reply, Request
from kubernetai.core.wire import WireError, encode_name, read_name, skip_rr
from kubernetai.pkg.dnscodes import type_name as type_name  # what the server's lines print

# Response codes (RFC 1035, RFC 6891).
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16
RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
               5: "REFUSED", 16: "BADVERS"}

_TYPE_OPT = 41
_TYPE_DS = 43
_TYPE_SOA = 6
_TYPE_IXFR = 251
_CLASS_IN = 1
#: classes answered; others get REFUSED (CoreDNS without ``chaos``).
ALLOWED_CLASSES = frozenset({_CLASS_IN})

#: EDNS0 option codes CoreDNS echoes back from the request (``request.supportedOptions``):
#: NSID, EXPIRE, COOKIE, TCP-KEEPALIVE, PADDING.
ECHOED_EDNS_OPTIONS = frozenset({3, 9, 10, 11, 12})
_OPTION_COOKIE = 10

MIN_UDP_SIZE = 512          # dns.MinMsgSize
MAX_TCP_SIZE = 65535        # dns.MaxMsgSize
MAX_UDP_DATAGRAM = 65507    # what an IPv4 socket will send in one datagram

_HEADER = struct.Struct("!HBBHHHH")
_ID_FLAGS = struct.Struct("!HBB")
_U16 = struct.Struct("!H")
_U16X2 = struct.Struct("!HH")
_U32 = struct.Struct("!I")
_RR_FIXED = struct.Struct("!HHIH")      # type, class, ttl, rdlength
_OPT_FIXED = struct.Struct("!BHHIH")    # root name, type, class, ttl, rdlength

class _CompressionDict(dict[bytes, int]):
    """Twisted's name-compression dict, refusing offsets a pointer cannot hold.

    ``Name.encode`` registers every suffix at its offset and later writes
    ``0xC000 | offset``; past 0x3FFF that corrupts the pointer (or raises), which a
    large TCP answer (hundreds of SRV targets) reaches.
    """

    __slots__ = ()

    def __setitem__(self, key: bytes, offset: int) -> None:
        if offset < 0x4000:
            dict.__setitem__(self, key, offset)



def header(id_: int, b3: int, b4: int, qd: int = 0, an: int = 0, ns: int = 0,
            ar: int = 0) -> bytes:
    return _HEADER.pack(id_, b3, b4, qd, an, ns, ar)


def parse_request(data: bytes, udp: bool, bufsize: int | None = None,
                  classes: frozenset[int] = ALLOWED_CLASSES,
                  echoed: frozenset[int] = ECHOED_EDNS_OPTIONS,
                  on_malformed: Callable[[str], None] | None = None) -> Request | bytes | None:
    """A :class:`Request`; or the bytes of an immediate error reply; or None (drop).

    Follows miekg/dns ``Server.serveDNS`` + ``DefaultMsgAcceptFunc`` and the first
    checks of CoreDNS's ``Server.ServeDNS``.
    """
    n = len(data)
    if n < 12:
        return None                                  # header does not parse: drop
    id_, b3, b4, qd, an, ns, ar = _HEADER.unpack_from(data)
    if b3 & 0x80:
        return None                                  # a response: ignore
    if b3 & 0x78:                                    # opcode != QUERY → NOTIMP
        return header(id_, 0x80 | (b3 & 0x7B), (b4 & 0xB0) | NOTIMP)
    if qd != 1 or an > 1 or ns > 1 or ar > 2:
        return header(id_, 0x80 | (b3 & 0x03), (b4 & 0xB0) | FORMERR)
    if n == 12:
        # miekg unpacks a bare header as a message without a question; CoreDNS
        # answers that SERVFAIL (``len(r.Question) == 0``).
        return header(id_, 0x80 | (b3 & 0x01), (b4 & 0x10) | SERVFAIL)
    question = b""
    try:
        labels, pos, pointer = read_name(data, 12, n)
        if pos + 4 > n:
            raise WireError("truncated question")
        qtype, qclass = _U16X2.unpack_from(data, pos)
        pos += 4
        if pointer:
            # A pointer would point elsewhere in the reply (into its header, say):
            # write the name out again, as miekg's unpack and pack do.
            question = encode_name(labels) + data[pos - 4:pos]
        else:
            question = data[12:pos]
        # Answer and authority records of a query are skipped (but for an IXFR's SOA,
        # whose serial is read); the last OPT in the additional section is the one that
        # counts (miekg ``IsEdns0``).
        ixfr_serial = None
        for index in range(an + ns):
            if index == an and qtype == _TYPE_IXFR and ns == 1:
                ixfr_serial = soa_serial(data, pos, n)
            pos = skip_rr(data, pos, n)
        optrr = -1
        for _ in range(ar):
            rtype, fixed, pos = _record_at(data, pos, n)
            if rtype == _TYPE_OPT:
                optrr = fixed
        opt = b""
        rdata = b""
        advertised = 0
        edns = False
        do = False
        bad_version = False
        limit = MIN_UDP_SIZE if udp else MAX_TCP_SIZE
        if optrr >= 0:
            edns = True
            _, udpsize, ttl, rdlen = _RR_FIXED.unpack_from(data, optrr)
            bad_version = bool((ttl >> 16) & 0xFF)
            advertised = udpsize
            rdata = data[optrr + 10:optrr + 10 + rdlen]
            options = echoed_options(rdata, echoed) if rdlen else b""
            if bufsize is not None and udpsize > bufsize:
                udpsize = bufsize
            ttl &= 0xFF00
            do = bool(ttl & 0x8000)
            opt = _OPT_FIXED.pack(0, _TYPE_OPT, udpsize, ttl, len(options)) + options
            if udp:
                limit = min(max(udpsize, MIN_UDP_SIZE), MAX_UDP_DATAGRAM)
    except WireError as exc:
        if on_malformed is not None:
            on_malformed(str(exc))
        if question:
            return header(id_, 0x80 | (b3 & 0x03), (b4 & 0xB0) | FORMERR, 1) + question
        return header(id_, 0x80 | (b3 & 0x03), (b4 & 0xB0) | FORMERR)
    req = Request()
    req.id = id_
    req.rd = b3 & 0x01
    req.cd = b4 & 0x10
    req.ad = b4 & 0x20
    qname = b".".join(labels)
    inner_dot = bool(labels) and qname.count(b".") != len(labels) - 1
    if inner_dot:
        # A dot inside a label ("web\\.shared"): no zone or object name can hold one,
        # and joined with the others it would read as two labels (another name,
        # another zone). A NUL in its place keeps the name one label that matches
        # nothing, as CoreDNS, which splits names on unescaped dots only, finds
        # nothing for it: NXDOMAIN inside a zone, REFUSED outside every zone.
        qname = b".".join([label.replace(b".", b"\0") for label in labels])
    req.qname = qname
    req.lname = qname.lower()
    req.labels = labels
    req.qtype = qtype
    req.qclass = qclass
    req.question = question
    req.opt = opt
    req.edns = edns
    req.do = do
    req.limit = limit
    req.udp = udp
    req.size = n
    req.bufsize = advertised
    req.options = rdata
    # "simple": no compression pointer and no dot inside a label, so the dotted name
    # maps back to the question bytes (compression priming, cache patching).
    req.simple = not pointer and not inner_dot
    if qtype == _TYPE_IXFR:
        req.ixfr_serial = ixfr_serial
    # CoreDNS's order: class (REFUSED, OPT echoed), then the EDNS version.
    if qclass not in classes:
        return render(req, REFUSED)
    if bad_version:
        return badvers(id_, b3, b4, question)
    return req


def _record_at(data: bytes, pos: int, n: int) -> tuple[int, int, int]:
    """The record at ``pos``: its type, where its fixed part (after the owner) starts,
    and where the record ends; WireError if it runs past ``n``."""
    _, fixed, _ = read_name(data, pos, n)
    if fixed + 10 > n:
        raise WireError("truncated resource record")
    end = fixed + 10 + _U16.unpack_from(data, fixed + 8)[0]
    if end > n:
        raise WireError("rdata overflows the message")
    return _U16.unpack_from(data, fixed)[0], fixed, end


def soa_serial(data: bytes, pos: int, n: int) -> int | None:
    """The serial of the SOA record at ``pos`` (an IXFR request's authority section,
    RFC 1995), None for a record of another type; WireError if it does not parse."""
    rtype, fixed, end = _record_at(data, pos, n)
    if rtype != _TYPE_SOA:
        return None
    _, at, _ = read_name(data, fixed + 10, end)   # MNAME
    _, at, _ = read_name(data, at, end)           # RNAME
    if at + 20 > end:
        raise WireError("truncated SOA record")
    serial: int = _U32.unpack_from(data, at)[0]
    return serial


def echoed_options(rdata: bytes, echoed: frozenset[int] = ECHOED_EDNS_OPTIONS) -> bytes:
    """The EDNS0 options of the reply, from the request's (FORMERR if malformed).

    CoreDNS echoes the request's NSID, EXPIRE, COOKIE, TCP-KEEPALIVE and PADDING
    options as they came. Echoed verbatim, a client's 60 KB of padding or a thousand
    repeated options make every reply that large (past the size the client asked
    for) and every cache entry with it; a cookie of a bad length makes the reply
    unparseable. So each option is echoed once, with its presence kept but its
    content bounded: a COOKIE of a legal length (RFC 7873: 8, or 16 to 40 bytes)
    gives back the 8-byte client cookie, any other length is FORMERR; the other
    options, which carry nothing in a query, come back empty.
    """
    out = []
    seen: set[int] = set()
    pos = 0
    n = len(rdata)
    while pos < n:
        if pos + 4 > n:
            raise WireError("truncated EDNS0 option")
        code, length = _U16X2.unpack_from(rdata, pos)
        stop = pos + 4 + length
        if stop > n:
            raise WireError("EDNS0 option overflows the OPT record")
        if code == _OPTION_COOKIE and not (length == 8 or 16 <= length <= 40):
            raise WireError("malformed COOKIE option")
        if code in echoed and code not in seen:
            seen.add(code)
            if code == _OPTION_COOKIE:
                out.append(_U16X2.pack(code, 8) + rdata[pos + 4:pos + 12])
            else:
                out.append(_U16X2.pack(code, 0))
        pos = stop
    return b"".join(out)



def badvers(id_: int, b3: int, b4: int, question: bytes) -> bytes:
    """``plugin/pkg/edns.Version``: BADVERS in a fresh OPT (size 0, version 0)."""
    return (header(id_, 0x80 | (b3 & 0x01), b4 & 0x10, 1, 0, 0, 1) + question
            + _OPT_FIXED.pack(0, _TYPE_OPT, 0, (BADVERS >> 4) << 24, 0))



def render(req: Request, rcode: int, aa: bool = False,
           answers: Sequence[dns.RRHeader] = (),
           authority: Sequence[dns.RRHeader] = (),
           additional: Sequence[dns.RRHeader] = (), flags: int = 0) -> bytes:
    """The response to ``req``: header, the question as sent, records, OPT.

    ``flags`` are extra bits of the header's fourth byte (RA, AD of a relayed answer).

    Records that do not fit ``req.limit`` are dropped from the end (additional,
    then authority, then answers) and TC is set, as miekg's ``Msg.Truncate``.
    """
    b3 = 0x84 | req.rd if aa else 0x80 | req.rd
    b4 = req.cd | rcode | flags
    opt = req.opt
    nopt = 1 if opt else 0
    la = len(answers)
    lns = len(authority)
    total = la + lns + len(additional)
    if not total:
        return _HEADER.pack(req.id, b3, b4, 1, 0, 0, nopt) + req.question + opt
    fast = _render_wire(req, b3, b4, answers, authority, additional)
    if fast is not None:
        return fast
    strio = BytesIO()
    strio.write(req.question)
    comp = _CompressionDict()
    if req.simple:
        # Let records point at the question's name and its suffixes.
        # (dict.__setitem__: the offsets are all small.)
        name = req.qname
        offset = 12
        setitem = dict.__setitem__
        while name:
            setitem(comp, name, offset)
            dot = name.find(b".")
            if dot < 0:
                break
            offset += dot + 1
            name = name[dot + 1:]
    budget = req.limit - 12 - len(opt)
    kept = 0
    end = len(req.question)
    truncated = False
    for section in (answers, authority, additional):
        for rr in section:
            rr.encode(strio, comp)
            pos = strio.tell()
            if pos > budget:
                truncated = True
                break
            end = pos
            kept += 1
        if truncated:
            break
    if truncated:
        body = strio.getvalue()[:end]
        b3 |= 0x02
        na = kept if kept < la else la
        nns = kept - na if kept - na < lns else lns
        nad = kept - na - nns
    else:
        body = strio.getvalue()
        na, nns, nad = la, lns, total - la - lns
    return _HEADER.pack(req.id, b3, b4, 1, na, nns, nad + nopt) + body + opt


def _render_wire(req: Request, b3: int, b4: int, answers: Sequence[dns.RRHeader],
                 authority: Sequence[dns.RRHeader],
                 additional: Sequence[dns.RRHeader]) -> bytes | None:
    """:func:`render` for records that append themselves to a buffer (``wire_into(buf,
    comp)``: the pre-encoded records of the ``kubernetai`` stanzas), None as soon as one
    cannot (any other record: :func:`render` then encodes them all the Twisted way).

    The same bytes as the Twisted way: the same compression table (the question's
    suffixes first, then every name suffix written, case-sensitive, none at an offset
    a pointer cannot hold) and the same truncation at whole records.
    """
    question = req.question
    buf = bytearray(question)
    comp: dict[bytes, int] = {}
    if req.simple:
        # The question's name and its suffixes, at their offsets (as render's table).
        name = req.qname
        offset = 12
        for label in req.labels:
            comp[name] = offset
            offset += len(label) + 1
            name = name[len(label) + 1:]
    opt = req.opt
    budget = req.limit - 12 - len(opt)
    kept = 0
    end = len(question)
    truncated = False
    for section in (answers, authority, additional):
        for rr in section:
            into = getattr(rr, "wire_into", None)
            if into is None or not into(buf, comp):
                return None
            pos = len(buf)
            if pos > budget:
                truncated = True
                break
            end = pos
            kept += 1
        if truncated:
            break
    la = len(answers)
    lns = len(authority)
    if truncated:
        del buf[end:]
        b3 |= 0x02
        na = kept if kept < la else la
        nns = kept - na if kept - na < lns else lns
        nad = kept - na - nns
    else:
        na, nns, nad = la, lns, len(additional)
    return b"".join((_HEADER.pack(req.id, b3, b4, 1, na, nns, nad + (1 if opt else 0)), buf,
                     opt))


def render_reply(req: Request, reply: Reply) -> bytes:
    """``reply`` encoded for ``req`` (its bytes, if it has them already)."""
    wire = reply.wire
    if wire is None:
        wire = render(req, reply.rcode, reply.aa, reply.answers, reply.authority,
                      reply.additional, reply.flags)
    return wire


def strip_opt(wire: bytes, req: Request) -> bytes | None:
    """What the cache keeps of a response: the response without its OPT record.

    None for a truncated response: it only holds for sizes as small as this one's.
    """
    if wire[2] & 0x02:
        return None
    if not req.opt:
        return wire
    arcount = ((wire[10] << 8) | wire[11]) - 1
    return wire[:10] + _U16.pack(arcount) + wire[12:len(wire) - len(req.opt)]

def patch_cached(stored: bytes, req: Request) -> bytes | None:
    """A stored response made this request's: its ID, RD/CD flags and OPT record.

    None if it does not fit the size the request allows (then it is answered afresh,
    truncated). The question needs no patching: the key holds it byte for byte.
    """
    opt = req.opt
    if len(stored) + len(opt) > req.limit:
        return None
    head = _ID_FLAGS.pack(req.id, (stored[2] & 0xFE) | req.rd, (stored[3] & 0xEF) | req.cd)
    if not opt:
        return head + stored[4:]
    arcount = ((stored[10] << 8) | stored[11]) + 1
    return head + stored[4:10] + _U16.pack(arcount) + stored[12:] + opt
