"""The DNS server: one server block, answering like CoreDNS on UDP and TCP.

:class:`KubernetaiServerFactory` is a :class:`twisted.names.server.DNSServerFactory`
that routes each query to the resolver of the longest matching zone and puts on the
wire what CoreDNS (``core/dnsserver/server.go`` on miekg/dns) would.  Stock Twisted
Names falls short in several ways (reference §5.2); this module fixes them:

* AA when any answer *or authority* record is authoritative (NODATA + SOA gets AA),
  RD and CD echoed, RA never set, the question echoed byte for byte (case kept);
* NXDOMAIN with AA and the zone SOA (:class:`~kubernetai.core.negative.AuthoritativeNameError`),
  SERVFAIL / REFUSED from :mod:`kubernetai.core.negative`, REFUSED for names outside every
  zone and for classes other than IN, SERVFAIL + ``errors`` log line for a fall-through
  that reaches the top of the chain;
* EDNS0: the request's OPT record is echoed (version 0, flags other than DO and the
  high Z bits cleared, the client's UDP size, only the NSID/EXPIRE/COOKIE/TCP-KEEPALIVE/
  PADDING options) as ``request.Request.SizeAndDo`` does, except that what a client
  could use to bloat replies is bounded: each option once, a COOKIE reduced to its
  8-byte client cookie (FORMERR for a COOKIE of no legal length, RFC 7873), the others
  empty; EDNS version > 0 gets BADVERS as ``plugin/pkg/edns.Version`` builds it;
* truncation at whole-record boundaries to the client's UDP size (512 without OPT,
  65535 on TCP) with TC set, keeping the longest prefix of answer + authority +
  additional that fits, as miekg's ``Msg.Truncate`` does;
* malformed requests handled as miekg's ``Server.serveDNS`` does (drop if the header
  does not parse or QR is set; NOTIMP for other opcodes; FORMERR for bad counts or an
  unparseable body), with a rate-limited one-line log instead of a traceback;
* TCP: pipelined queries answered as each completes; CoreDNS's read (3 s) and idle
  (10 s) timeouts; connections capped in total and per client address, the longest
  idle one closed to make room;
* every query name that reaches a log line is escaped as miekg prints names
  (:mod:`kubernetai.pkg.dnsname`).

The request path avoids ``dns.Message`` entirely: the request is parsed with
``struct`` into a :class:`Request`, the question is copied from the request bytes and
only the resolver's records are encoded (with Twisted's ``RRHeader.encode``).  See
``bench/dnsserver_micro.py`` for the figures.
"""

from __future__ import annotations

import errno
import resource
import struct
import time
from collections import OrderedDict
from io import BytesIO
from typing import Any, Callable, Mapping, Sequence

from twisted.internet import defer, protocol
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IHalfCloseableProtocol, IListeningPort, IPushProducer
from twisted.logger import Logger
from twisted.names import dns
from twisted.names import error as dnserror
from twisted.names.server import DNSServerFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from kubernetai.pkg.dnsname import presentation, presentation_dotted
from kubernetai.core.negative import AuthoritativeNameError, FallThrough, Refused, ServerFailure

__all__ = [
    "KubernetaiServerFactory",
    "ZoneRouter",
    "Request",
    "QueryLog",
    "DNSDatagramServerProtocol",
    "DNSStreamServerProtocol",
    "listen",
    "normalize_zone",
]

_log = Logger(namespace="kubernetai.core.dnsserver")

# Response codes (RFC 1035, RFC 6891).
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16
RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
               5: "REFUSED", 16: "BADVERS"}

_TYPE_OPT = 41
_TYPE_DS = 43
_CLASS_IN = 1

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
_RR_FIXED = struct.Struct("!HHIH")      # type, class, ttl, rdlength
_OPT_FIXED = struct.Struct("!BHHIH")    # root name, type, class, ttl, rdlength

# Query type names as miekg/dns prints them, for log lines ({type}).
_TYPE_NAMES: dict[int, str] = {k: v for k, v in dns.QUERY_TYPES.items()}
_TYPE_NAMES.update({k: v for k, v in dns.EXT_QUERIES.items()})
_TYPE_NAMES.update({255: "ANY", 43: "DS", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY",
                    50: "NSEC3", 51: "NSEC3PARAM", 52: "TLSA", 59: "CDS", 60: "CDNSKEY",
                    64: "SVCB", 65: "HTTPS", 257: "CAA"})
_CLASS_NAMES = {1: "IN", 3: "CH", 4: "HS", 254: "NONE", 255: "ANY"}


def type_name(qtype: int) -> str:
    """The miekg/dns text form of a query type (``A``, ``HTTPS``, ``TYPE1234``)."""
    return _TYPE_NAMES.get(qtype) or f"TYPE{qtype}"


def normalize_zone(zone: str | bytes) -> bytes:
    """A zone as the router keys it: lower case, no trailing dot, the root as ``b""``."""
    if isinstance(zone, str):
        zone = zone.encode("idna") if zone.strip(".") else zone.encode("ascii")
    return zone.lower().strip(b".") if zone.strip(b".") else b""


# ---------------------------------------------------------------------------------------
# Routing


class ZoneRouter:
    """Longest-suffix zone match, case-insensitive, as ``Server.ServeDNS`` does it.

    ``route`` walks the query name's suffixes from the longest one, so
    ``a.b.cluster.local`` tries ``a.b.cluster.local``, ``b.cluster.local``,
    ``cluster.local``, ``local``, then the root zone ``.`` if one is configured.  DS
    queries keep walking and go to the *shortest* (parent-most) matching zone, like
    CoreDNS's ``dshandler``.

    It is also a minimal ``IResolver`` (``query`` only), used as the factory's
    ``resolver`` so code written against ``DNSServerFactory.resolver`` keeps working.
    """

    def __init__(self, zones: Mapping[str | bytes, Any]):
        self._zones: dict[bytes, Any] = {}
        for zone, resolver in zones.items():
            self._zones[normalize_zone(zone)] = resolver

    @property
    def zones(self) -> dict[bytes, Any]:
        """Normalized zone name → resolver (a copy)."""
        return dict(self._zones)

    def match(self, lname: bytes, qtype: int = dns.A) -> bytes | None:
        """The zone (normalized) that serves ``lname`` (lower case, no trailing dot)."""
        zones = self._zones
        name = lname
        found = None
        while True:
            if name in zones:
                if qtype != _TYPE_DS:
                    return name
                found = name
            dot = name.find(b".")
            if dot < 0:
                break
            name = name[dot + 1:]
        if found is not None:
            return found
        if b"" in zones:
            return b""
        return None

    def route(self, lname: bytes, qtype: int = dns.A) -> Any | None:
        """The resolver for ``lname`` (lower case, no trailing dot), or None → REFUSED."""
        zones = self._zones
        if qtype != _TYPE_DS:
            # Inlined fast path of match().
            name = lname
            while True:
                resolver = zones.get(name)
                if resolver is not None:
                    return resolver
                dot = name.find(b".")
                if dot < 0:
                    return zones.get(b"")
                name = name[dot + 1:]
        zone = self.match(lname, qtype)
        return None if zone is None else zones[zone]

    def query(self, query: dns.Query, timeout: Any = None) -> defer.Deferred:
        """``IResolver.query``: hand the query to its zone's resolver, or fail Refused."""
        resolver = self.route(query.name.name.lower().rstrip(b"."), query.type)
        if resolver is None:
            return defer.fail(Refused())
        return resolver.query(query, timeout)


# ---------------------------------------------------------------------------------------
# Parsed requests and log records


class Request:
    """One parsed query: the fields the server needs, and nothing decoded twice.

    ``qname`` is the name as sent (dotted, no trailing dot, case kept); ``lname`` is its
    lower-case form used for routing and caching; ``question`` is the question section's
    wire bytes, echoed verbatim in the response.  ``opt`` is the response OPT record's
    wire bytes (``b""`` without EDNS); ``limit`` is the size the response must fit.
    """

    __slots__ = ("id", "rd", "cd", "qname", "lname", "labels", "qtype", "qclass",
                 "question", "opt", "edns", "do", "limit", "udp", "size", "simple",
                 "received")

    id: int
    rd: int
    cd: int
    qname: bytes
    lname: bytes
    labels: list[bytes]
    qtype: int
    qclass: int
    question: bytes
    opt: bytes
    edns: bool
    do: bool
    limit: int
    udp: bool
    size: int
    simple: bool
    received: float

    def fqdn(self) -> str:
        """The lower-case query name as CoreDNS logs it: escaped, with its trailing dot.

        Everything that writes a query name to a log goes through here, so a name holding
        a newline or an ESC byte is printed as ``\\010`` / ``\\027``, never raw.
        """
        if self.simple:
            return presentation_dotted(self.lname)          # no dot inside a label
        return presentation([label.lower() for label in self.labels])


class QueryLog:
    """What the ``log`` plugin needs about one answered query."""

    __slots__ = ("remote", "port", "id", "qtype", "qclass", "name", "proto", "size",
                 "do", "bufsize", "rcode", "flags", "rsize", "duration", "answers")

    def __init__(self, remote: str, port: int, req: Request, wire: bytes, duration: float):
        self.remote = remote
        self.port = port
        self.id = req.id
        self.qtype = req.qtype
        self.qclass = req.qclass
        self.name = req.fqdn()
        self.proto = "udp" if req.udp else "tcp"
        self.size = req.size
        self.do = req.do
        self.bufsize = req.limit if req.udp else MAX_TCP_SIZE
        self.rcode = wire[3] & 0xF
        self.flags = (wire[2] << 8) | wire[3]
        self.rsize = len(wire)
        self.duration = duration
        self.answers = (wire[6] << 8) | wire[7]

    def rflags(self) -> str:
        """Response flags as CoreDNS's ``{>rflags}``: ``qr,aa,tc,rd,ra,z,ad,cd``."""
        f = self.flags
        names = (("qr", 0x8000), ("aa", 0x0400), ("tc", 0x0200), ("rd", 0x0100),
                 ("ra", 0x0080), ("z", 0x0040), ("ad", 0x0020), ("cd", 0x0010))
        return ",".join(n for n, bit in names if f & bit)

    def common(self) -> str:
        """The CoreDNS ``{common}`` log format."""
        remote = f"[{self.remote}]" if ":" in self.remote else self.remote
        duration = f"{self.duration:.9f}".rstrip("0").rstrip(".") + "s"
        return (f'{remote}:{self.port} - {self.id} "{type_name(self.qtype)} '
                f'{_CLASS_NAMES.get(self.qclass, f"CLASS{self.qclass}")} {self.name} '
                f'{self.proto} {self.size} {str(self.do).lower()} {self.bufsize}" '
                f'{RCODE_NAMES.get(self.rcode, str(self.rcode))} {self.rflags()} '
                f'{self.rsize} {duration}')


class _Malformed(Exception):
    """The request body does not parse; answer FORMERR (with the question if it parsed)."""


class _CompressionDict(dict):
    """Twisted's name-compression dict, refusing offsets a pointer cannot hold.

    ``Name.encode`` registers every suffix at its offset and later writes
    ``0xC000 | offset``; past 0x3FFF that corrupts the pointer (or raises), which a
    large TCP answer (hundreds of SRV targets) reaches.
    """

    __slots__ = ()

    def __setitem__(self, key: bytes, offset: int) -> None:
        if offset < 0x4000:
            dict.__setitem__(self, key, offset)


class _RateLimitedLog:
    """At most one log line per ``interval`` seconds, counting the suppressed ones."""

    def __init__(self, interval: float = 10.0):
        self.interval = interval
        self._last = -interval
        self.suppressed = 0

    def __call__(self, emit: Callable[..., None], fmt: str, **kw: Any) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self.suppressed += 1
            return
        self._last = now
        emit(fmt + " ({suppressed} similar messages suppressed)", suppressed=self.suppressed, **kw)
        self.suppressed = 0


class _RawMessage:
    """Encoded response bytes posing as a ``dns.Message`` for stock protocols' writeMessage."""

    __slots__ = ("wire",)

    def __init__(self, wire: bytes):
        self.wire = wire

    def toStr(self) -> bytes:
        return self.wire


class _StockProtocolAdapter:
    """Lets stock ``dns.DNSDatagramProtocol`` / ``dns.DNSProtocol`` drive this factory."""

    __slots__ = ("proto", "udp")

    def __init__(self, proto: Any, udp: bool):
        self.proto = proto
        self.udp = udp

    def sendWire(self, wire: bytes, addr: Any) -> None:
        if self.udp:
            self.proto.writeMessage(_RawMessage(wire), addr)
        else:
            self.proto.writeMessage(_RawMessage(wire))

    def peer(self, addr: Any) -> tuple[str, int]:
        if addr is not None:
            return addr[0], addr[1]
        p = self.proto.transport.getPeer()
        return getattr(p, "host", "?"), getattr(p, "port", 0)


# ---------------------------------------------------------------------------------------
# Request parsing helpers


def _read_name(data: bytes, pos: int, n: int) -> tuple[list[bytes], int, bool]:
    """Labels of the name at ``pos``, the offset after it, and whether a pointer was used."""
    labels: list[bytes] = []
    total = 1
    end = -1
    jumps = 0
    while True:
        if pos >= n:
            raise _Malformed("name overflows the message")
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length >= 0xC0:
            if pos + 1 >= n:
                raise _Malformed("truncated compression pointer")
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if end < 0:
                end = pos + 2
            jumps += 1
            if target >= pos or jumps > 64:
                raise _Malformed("bad compression pointer")
            pos = target
            continue
        if length > 63:
            raise _Malformed("bad label type")
        stop = pos + 1 + length
        if stop > n:
            raise _Malformed("label overflows the message")
        total += length + 1
        if total > 255:
            raise _Malformed("name longer than 255 octets")
        labels.append(data[pos + 1:stop])
        pos = stop
    return labels, (end if end >= 0 else pos), end >= 0


def _encode_labels(labels: list[bytes]) -> bytes:
    """A name in uncompressed wire form."""
    return b"".join([bytes((len(label),)) + label for label in labels]) + b"\0"


def _skip_rr(data: bytes, pos: int, n: int) -> int:
    """Offset after the resource record at ``pos``."""
    _, pos, _ = _read_name(data, pos, n)
    if pos + 10 > n:
        raise _Malformed("truncated resource record")
    rdlen = _U16.unpack_from(data, pos + 8)[0]
    pos += 10 + rdlen
    if pos > n:
        raise _Malformed("rdata overflows the message")
    return pos


def _consumed(failure: Failure) -> None:
    return None


def _header(id_: int, b3: int, b4: int, qd: int = 0, an: int = 0, ns: int = 0,
            ar: int = 0) -> bytes:
    return _HEADER.pack(id_, b3, b4, qd, an, ns, ar)


# ---------------------------------------------------------------------------------------
# TCP connection caps


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard one; return the soft limit.

    Go raises it at start-up, so CoreDNS can hold as many TCP connections as the hard
    limit allows; Python leaves it at the (often 1,024) soft default.
    """
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ValueError, OSError):
        return 1024
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # a seccomp filter without @resources: keep soft
            pass
    return int(soft)


def default_max_tcp_connections() -> int:
    """At most 10,000 connections, and never more than half the open-file limit.

    The other half is left for UDP sockets, API-server connections, log files and the
    accept() that finds the cap reached: a server out of descriptors cannot even close a
    connection politely, and every other client of it fails.
    """
    return max(16, min(10_000, raise_fd_limit() // 2))


class TCPConnections:
    """The open TCP connections of a server, in order of last activity.

    A connection past a cap (in total, or from one client address) is made room for by
    closing the connection that has been idle longest (no answer outstanding); only if
    none is idle is the new one refused. So a client holding thousands of idle
    connections cannot keep others out, and a busy connection is never cut.
    """

    #: how many of the least recently active connections to look at for an idle one.
    scan = 64

    def __init__(self, max_total: int | None = None, max_per_client: int = 256) -> None:
        self.max_total = default_max_tcp_connections() if max_total is None else max_total
        self.max_per_client = max_per_client
        self._all: OrderedDict[Any, None] = OrderedDict()
        self._byHost: dict[str, OrderedDict[Any, None]] = {}
        self.evicted = 0
        self.refused = 0
        self.rejectLog = _RateLimitedLog()

    def __len__(self) -> int:
        return len(self._all)

    def count(self, host: str) -> int:
        mine = self._byHost.get(host)
        return len(mine) if mine else 0

    def admit(self, host: str) -> bool:
        """Whether a new connection from ``host`` may be served (closing an idle one)."""
        mine = self._byHost.get(host)
        if mine is not None and len(mine) >= self.max_per_client and not self._evict(mine):
            self.refused += 1
            return False
        if len(self._all) >= self.max_total and not self._evict(self._all):
            self.refused += 1
            return False
        return True

    def _evict(self, connections: OrderedDict[Any, None]) -> bool:
        for proto, _ in zip(connections, range(self.scan)):
            if proto.idle():
                self.remove(proto)
                self.evicted += 1
                proto.evict()
                return True
        return False

    def add(self, proto: Any) -> None:
        self._all[proto] = None
        self._byHost.setdefault(proto.host, OrderedDict())[proto] = None

    def active(self, proto: Any) -> None:
        """``proto`` received a query: it is the most recently active now."""
        if proto in self._all:
            self._all.move_to_end(proto)
            self._byHost[proto.host].move_to_end(proto)

    def remove(self, proto: Any) -> None:
        if self._all.pop(proto, 0) is None:
            mine = self._byHost[proto.host]
            del mine[proto]
            if not mine:
                del self._byHost[proto.host]


# ---------------------------------------------------------------------------------------
# The factory


class KubernetaiServerFactory(DNSServerFactory):
    """A server block: routes each query to the resolver of its longest matching zone.

    :param zones: zone name → ``IResolver`` (or a ready :class:`ZoneRouter`).  Each
        resolver's ``query(dns.Query)`` fires with ``(answers, authority, additional)``
        or fails with an exception from :mod:`kubernetai.core.negative` (see there).  The
        ``Query`` carries the name as the client sent it (case kept).
    :param reactor: for the TCP idle timer (defaults to the global reactor).
    :param tcp_read_timeout: close a new TCP connection whose first query has not
        arrived whole after this many seconds (CoreDNS's read timeout: 3 s).
    :param tcp_idle_timeout: after that, close it once this many seconds pass with no
        complete query and no answer outstanding (CoreDNS: 10 s).
    :param max_tcp_connections: open TCP connections at most (see :class:`TCPConnections`).
    :param max_tcp_per_client: open TCP connections from one address at most.
    :param tcp_connections: caps shared with the other ports of the process (the limit on
        open files is the process's); by default this factory's own.
    :param log_queries: called with a :class:`QueryLog` for every query answered by a
        zone's resolver (the ``log`` plugin); None turns the bookkeeping off.
    :param on_error: called with one line per plugin error, formatted as CoreDNS's
        ``errors`` plugin (``"2 name. A: plugin/kubernetai: no next plugin found"``);
        by default it goes to the Twisted log at error level.
    :param bufsize: the ``bufsize`` plugin: clamp the client's advertised EDNS UDP size.
    """

    protocol = None  # set below, after the protocol classes are defined
    #: request classes answered; others get REFUSED (CoreDNS without ``chaos``).
    allowedClasses = frozenset({_CLASS_IN})
    #: EDNS0 option codes echoed back from the request.
    echoedOptions = ECHOED_EDNS_OPTIONS
    #: UDP receive buffer for the listening port (bytes); larger queries are cut.
    maxPacketSize = 8192

    def __init__(
        self,
        zones: Mapping[str | bytes, Any] | ZoneRouter,
        *,
        reactor: Any = None,
        tcp_idle_timeout: float = 10.0,
        tcp_read_timeout: float = 3.0,
        max_tcp_connections: int | None = None,
        max_tcp_per_client: int = 256,
        tcp_connections: TCPConnections | None = None,
        log_queries: Callable[[QueryLog], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        bufsize: int | None = None,
    ):
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self._reactor = reactor
        self.router = zones if isinstance(zones, ZoneRouter) else ZoneRouter(zones)
        self.resolver = self.router          # stock API: factory.resolver.query(...)
        self.canRecurse = False
        self.tcp_idle_timeout = tcp_idle_timeout
        self.tcp_read_timeout = tcp_read_timeout
        self.tcpConnections = tcp_connections or TCPConnections(max_tcp_connections,
                                                                max_tcp_per_client)
        self.log_queries = log_queries
        self.on_error = on_error
        self.bufsize = bufsize
        self._malformedLog = _RateLimitedLog()
        self._internalLog = _RateLimitedLog()
        self._wireCache = (type(self).lookupWireCache
                           is not KubernetaiServerFactory.lookupWireCache)

    def adopt(self, other: "KubernetaiServerFactory") -> None:
        """Take over another factory's routing and logging (a reload on open sockets)."""
        self.router = other.router
        self.resolver = other.resolver
        self.log_queries = other.log_queries
        self.on_error = other.on_error

    # -- hooks --------------------------------------------------------------------------

    def lookupWireCache(self, qname: bytes, qtype: int, qclass: int) -> bytes | None:
        """Hook for a wire-format answer cache: a stored answer (see :meth:`cacheable`).

        ``qname`` is the name as sent, case kept: answers echo the client's spelling in
        their owner names, so names differing in case are different entries. Nothing of
        the request's EDNS is part of the key: the stored answer has no OPT record and is
        untruncated, the server appends this request's OPT and uses the entry only if
        the whole fits the size this client allows (:meth:`fromCache`). Only consulted
        when a subclass overrides it; entries come from :meth:`storeWireCache`.
        """
        return None

    def storeWireCache(self, qname: bytes, qtype: int, qclass: int, stored: bytes,
                       result: tuple) -> None:
        """Hook: ``stored`` (see :meth:`cacheable`) answers this key (NOERROR, NODATA or
        NXDOMAIN only); ``result`` is the resolver's ``(answers, authority,
        additional)`` (for TTLs)."""

    @staticmethod
    def cacheable(wire: bytes, req: Request) -> bytes | None:
        """What the cache keeps of a response: the response without its OPT record.

        None for a truncated response: it only holds for sizes as small as this one's.
        """
        if wire[2] & 0x02:
            return None
        if not req.opt:
            return wire
        arcount = ((wire[10] << 8) | wire[11]) - 1
        return wire[:10] + _U16.pack(arcount) + wire[12:len(wire) - len(req.opt)]

    @staticmethod
    def fromCache(stored: bytes, req: Request) -> bytes | None:
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

    def reportError(self, line: str) -> None:
        """One ``errors`` plugin line."""
        if self.on_error is not None:
            try:
                self.on_error(line)
                return
            except Exception:
                _log.failure("on_error callback failed")
        _log.error("{line}", line=line)

    # -- request path -------------------------------------------------------------------

    def handleWire(self, data: bytes, proto: Any, addr: Any, udp: bool) -> bool:
        """Answer one request; False if it is dropped without any reply.

        ``proto`` has ``sendWire(bytes, addr)`` and ``peer(addr) -> (host, port)``.
        """
        try:
            req = self.parseRequest(data, udp)
        except Exception:
            self._internalLog(_log.failure, "request parser failed")
            return False
        if req is None:
            return False
        if req.__class__ is bytes:
            proto.sendWire(req, addr)
            return True
        resolver = self.router.route(req.lname, req.qtype)
        if resolver is None:
            proto.sendWire(self.render(req, REFUSED), addr)
            return True
        if self._wireCache and req.simple:
            try:
                stored = self.lookupWireCache(req.qname, req.qtype, req.qclass)
                wire = None if stored is None else self.fromCache(stored, req)
            except Exception:
                self._internalLog(_log.failure, "wire cache lookup failed")
                wire = None
            if wire is not None:
                proto.sendWire(wire, addr)
                if self.log_queries is not None:
                    self._logQuery(req, proto, addr, wire)
                return True
        if self.log_queries is not None:
            req.received = time.perf_counter()
        query = dns.Query.__new__(dns.Query)
        name = dns.Name.__new__(dns.Name)
        name.name = req.qname
        query.name = name
        query.type = req.qtype
        query.cls = req.qclass
        try:
            d = resolver.query(query)
        except Exception:
            d = defer.fail()
        if d.called and not d.paused:
            # Already fired (in-memory resolvers): skip the callback machinery.
            result = d.result
            if isinstance(result, Failure):
                d.addErrback(_consumed)          # handled here; no "Unhandled error"
                self._failed(result, req, proto, addr)
            else:
                self._resolved(result, req, proto, addr)
        else:
            d.addCallbacks(self._resolved, self._failed, (req, proto, addr), None,
                           (req, proto, addr), None)
        return True

    def parseRequest(self, data: bytes, udp: bool) -> Request | bytes | None:
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
            return _header(id_, 0x80 | (b3 & 0x7B), (b4 & 0xB0) | NOTIMP)
        if qd != 1 or an > 1 or ns > 1 or ar > 2:
            return _header(id_, 0x80 | (b3 & 0x03), (b4 & 0xB0) | FORMERR)
        if n == 12:
            # miekg unpacks a bare header as a message without a question; CoreDNS
            # answers that SERVFAIL (``len(r.Question) == 0``).
            return _header(id_, 0x80 | (b3 & 0x01), (b4 & 0x10) | SERVFAIL)
        question = b""
        try:
            labels, pos, pointer = _read_name(data, 12, n)
            if pos + 4 > n:
                raise _Malformed("truncated question")
            qtype, qclass = _U16X2.unpack_from(data, pos)
            pos += 4
            if pointer:
                # A pointer would point elsewhere in the reply (into its header, say):
                # write the name out again, as miekg's unpack and pack do.
                question = _encode_labels(labels) + data[pos - 4:pos]
            else:
                question = data[12:pos]
            # Answer and authority records of a query are skipped; the last OPT in
            # the additional section is the one that counts (miekg ``IsEdns0``).
            for _ in range(an + ns):
                pos = _skip_rr(data, pos, n)
            optrr = -1
            for _ in range(ar):
                _, fixed, _ = _read_name(data, pos, n)
                if fixed + 10 > n:
                    raise _Malformed("truncated resource record")
                rtype = _U16.unpack_from(data, fixed)[0]
                pos = fixed + 10 + _U16.unpack_from(data, fixed + 8)[0]
                if pos > n:
                    raise _Malformed("rdata overflows the message")
                if rtype == _TYPE_OPT:
                    optrr = fixed
            opt = b""
            edns = False
            do = False
            badvers = False
            limit = MIN_UDP_SIZE if udp else MAX_TCP_SIZE
            if optrr >= 0:
                edns = True
                _, udpsize, ttl, rdlen = _RR_FIXED.unpack_from(data, optrr)
                badvers = bool((ttl >> 16) & 0xFF)
                rdata = data[optrr + 10:optrr + 10 + rdlen]
                options = self._echoedOptions(rdata) if rdlen else b""
                if self.bufsize is not None and udpsize > self.bufsize:
                    udpsize = self.bufsize
                ttl &= 0xFF00
                do = bool(ttl & 0x8000)
                opt = _OPT_FIXED.pack(0, _TYPE_OPT, udpsize, ttl, len(options)) + options
                if udp:
                    limit = min(max(udpsize, MIN_UDP_SIZE), MAX_UDP_DATAGRAM)
        except _Malformed as exc:
            self._malformedLog(_log.info, "malformed DNS request ({reason})", reason=str(exc))
            if question:
                return _header(id_, 0x80 | (b3 & 0x03), (b4 & 0xB0) | FORMERR, 1) + question
            return _header(id_, 0x80 | (b3 & 0x03), (b4 & 0xB0) | FORMERR)
        req = Request()
        req.id = id_
        req.rd = b3 & 0x01
        req.cd = b4 & 0x10
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
        # "simple": no compression pointer and no dot inside a label, so the dotted name
        # maps back to the question bytes (compression priming, cache patching).
        req.simple = not pointer and not inner_dot
        # CoreDNS's order: class (REFUSED, OPT echoed), then the EDNS version.
        if qclass not in self.allowedClasses:
            return self.render(req, REFUSED)
        if badvers:
            return self._badvers(id_, b3, b4, question)
        return req

    def _echoedOptions(self, rdata: bytes) -> bytes:
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
        echoed = self.echoedOptions
        while pos < n:
            if pos + 4 > n:
                raise _Malformed("truncated EDNS0 option")
            code, length = _U16X2.unpack_from(rdata, pos)
            stop = pos + 4 + length
            if stop > n:
                raise _Malformed("EDNS0 option overflows the OPT record")
            if code == _OPTION_COOKIE and not (length == 8 or 16 <= length <= 40):
                raise _Malformed("malformed COOKIE option")
            if code in echoed and code not in seen:
                seen.add(code)
                if code == _OPTION_COOKIE:
                    out.append(_U16X2.pack(code, 8) + rdata[pos + 4:pos + 12])
                else:
                    out.append(_U16X2.pack(code, 0))
            pos = stop
        return b"".join(out)

    @staticmethod
    def _badvers(id_: int, b3: int, b4: int, question: bytes) -> bytes:
        """``plugin/pkg/edns.Version``: BADVERS in a fresh OPT (size 0, version 0)."""
        return (_header(id_, 0x80 | (b3 & 0x01), b4 & 0x10, 1, 0, 0, 1) + question
                + _OPT_FIXED.pack(0, _TYPE_OPT, 0, (BADVERS >> 4) << 24, 0))

    # -- responses ------------------------------------------------------------------------

    def render(self, req: Request, rcode: int, aa: bool = False,
               answers: Sequence[dns.RRHeader] = (),
               authority: Sequence[dns.RRHeader] = (),
               additional: Sequence[dns.RRHeader] = ()) -> bytes:
        """The response to ``req``: header, the question as sent, records, OPT.

        Records that do not fit ``req.limit`` are dropped from the end (additional,
        then authority, then answers) and TC is set, as miekg's ``Msg.Truncate``.
        """
        b3 = 0x84 | req.rd if aa else 0x80 | req.rd
        b4 = req.cd | rcode
        opt = req.opt
        nopt = 1 if opt else 0
        la = len(answers)
        lns = len(authority)
        total = la + lns + len(additional)
        if not total:
            return _HEADER.pack(req.id, b3, b4, 1, 0, 0, nopt) + req.question + opt
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

    def _resolved(self, result: tuple, req: Request, proto: Any, addr: Any) -> None:
        try:
            answers, authority, additional = result
            aa = False
            for rr in answers:
                if rr.auth:
                    aa = True
                    break
            else:
                for rr in authority:
                    if rr.auth:
                        aa = True
                        break
            wire = self.render(req, NOERROR, aa, answers, authority, additional)
        except Exception:
            self._unexpected(Failure(), req, proto, addr)
            return
        self._send(req, proto, addr, wire)
        if self._wireCache and req.simple:
            self._store(req, wire, result)

    def _failed(self, failure: Failure, req: Request, proto: Any, addr: Any) -> None:
        exc = failure.value
        try:
            if isinstance(exc, AuthoritativeNameError):
                wire = self.render(req, NXDOMAIN, True, (), exc.authority)
                self._send(req, proto, addr, wire)
                if self._wireCache and req.simple:
                    self._store(req, wire, ((), exc.authority, ()))
                return
            line = None
            if isinstance(exc, FallThrough):
                line = exc.message
                wire = self.render(req, SERVFAIL)
            elif isinstance(exc, ServerFailure):
                line = exc.message
                wire = self.render(req, SERVFAIL, bool(exc.authority), (), exc.authority)
            elif isinstance(exc, Refused):
                wire = self.render(req, REFUSED)
            elif isinstance(exc, dnserror.DNSServerError):
                wire = self.render(req, SERVFAIL)     # an upstream's SERVFAIL, not NXDOMAIN
            elif isinstance(exc, dnserror.DNSQueryRefusedError):
                wire = self.render(req, REFUSED)
            elif isinstance(exc, (dnserror.DomainError, dnserror.AuthoritativeDomainError)):
                wire = self.render(req, NXDOMAIN)     # stock DNSServerFactory behaviour
            else:
                self._unexpected(failure, req, proto, addr)
                return
        except Exception:
            self._unexpected(Failure(), req, proto, addr)
            return
        if line:
            # Logged before the reply goes out: whoever sees the reply sees the line.
            self.reportError(f"{SERVFAIL} {req.fqdn()} {type_name(req.qtype)}: {line}")
        self._send(req, proto, addr, wire)

    def _store(self, req: Request, wire: bytes, result: tuple) -> None:
        try:
            stored = self.cacheable(wire, req)
            if stored is not None:
                self.storeWireCache(req.qname, req.qtype, req.qclass, stored, result)
        except Exception:
            self._internalLog(_log.failure, "wire cache store failed")

    def _unexpected(self, failure: Failure, req: Request, proto: Any, addr: Any) -> None:
        """SERVFAIL for a resolver or rendering bug; the failure goes to the log."""
        try:
            _log.failure("{qname} {qtype}: resolver failed", failure,
                         qname=req.fqdn(), qtype=type_name(req.qtype))
            self._send(req, proto, addr, self.render(req, SERVFAIL))
        except Exception:
            self._internalLog(_log.failure, "could not answer SERVFAIL")

    def _send(self, req: Request, proto: Any, addr: Any, wire: bytes) -> None:
        proto.sendWire(wire, addr)
        if self.log_queries is not None:
            self._logQuery(req, proto, addr, wire)

    def _logQuery(self, req: Request, proto: Any, addr: Any, wire: bytes) -> None:
        try:
            host, port = proto.peer(addr)
            received = getattr(req, "received", None)
            duration = time.perf_counter() - received if received is not None else 0.0
            self.log_queries(QueryLog(host, port, req, wire, duration))
        except Exception:
            self._internalLog(_log.failure, "query log callback failed")

    # -- stock DNSServerFactory entry points ---------------------------------------------

    def messageReceived(self, message: dns.Message, proto: Any, address: Any = None) -> None:
        """Stock protocols (``dns.DNSDatagramProtocol``/``dns.DNSProtocol``) land here.

        The decoded message is re-encoded and takes the same path as raw bytes.
        """
        udp = address is not None
        message.maxSize = 0
        self.handleWire(message.toStr(), _StockProtocolAdapter(proto, udp), address, udp)

    def buildDatagramProtocol(self) -> DNSDatagramServerProtocol:
        """The UDP protocol for this factory."""
        return DNSDatagramServerProtocol(self)

    def buildProtocol(self, addr: Any) -> DNSStreamServerProtocol | None:
        """A TCP protocol, or None (Twisted then closes the socket) over the caps."""
        host = getattr(addr, "host", "?")
        if not self.tcpConnections.admit(host):
            self.tcpConnections.rejectLog(
                _log.warn, "TCP connection from {host} refused: {open} connections open "
                "(at most {total}, {per} per client) and none idle", host=host,
                open=len(self.tcpConnections), total=self.tcpConnections.max_total,
                per=self.tcpConnections.max_per_client)
            return None
        proto = DNSStreamServerProtocol(self)
        proto.host = host
        return proto

    def connectionMade(self, protocol: Any) -> None:
        # DNSServerFactory keeps a list (O(n) removal); the caps keep ordered dicts.
        if isinstance(protocol, DNSStreamServerProtocol):
            self.tcpConnections.add(protocol)

    def connectionLost(self, protocol: Any) -> None:
        if isinstance(protocol, DNSStreamServerProtocol):
            self.tcpConnections.remove(protocol)


# ---------------------------------------------------------------------------------------
# Protocols


class DNSDatagramServerProtocol(protocol.DatagramProtocol):
    """UDP: one datagram, one request; replies go straight to ``socket.sendto``."""

    def __init__(self, factory: KubernetaiServerFactory):
        self.factory = factory
        self._sendto: Callable[[bytes, Any], Any] | None = None
        self._sendLog = _RateLimitedLog()

    def startProtocol(self) -> None:
        sock = getattr(self.transport, "socket", None)
        # Twisted's Port.write re-validates the address string on every datagram;
        # the socket's own sendto is several times cheaper.
        self._sendto = sock.sendto if sock is not None else None

    def stopProtocol(self) -> None:
        self._sendto = None

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        try:
            self.factory.handleWire(data, self, addr, True)
        except Exception:
            self._sendLog(_log.failure, "unexpected error handling a UDP request")

    def sendWire(self, wire: bytes, addr: Any) -> None:
        try:
            if self._sendto is not None:
                self._sendto(wire, addr)
            elif self.transport is not None:
                self.transport.write(wire, addr)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNREFUSED,
                                 errno.EINTR, errno.ENOBUFS):
                self._sendLog(_log.warn, "UDP send to {addr} failed: {error}",
                              addr=addr, error=exc)
        except Exception as exc:
            self._sendLog(_log.warn, "UDP send to {addr} failed: {error}", addr=addr,
                          error=exc)

    def peer(self, addr: Any) -> tuple[str, int]:
        return addr[0], addr[1]


@implementer(IHalfCloseableProtocol, IPushProducer)
class DNSStreamServerProtocol(protocol.Protocol):
    """TCP: length-prefixed requests, pipelined; each answered when it completes.

    * As CoreDNS (miekg's read and idle timeouts): the first request must arrive whole
      within ``factory.tcp_read_timeout`` seconds of the connection, each later one
      within ``factory.tcp_idle_timeout`` seconds of the last request or answer; bytes
      dribbled in without completing a request do not count.
    * The factory's :class:`TCPConnections` caps how many are open; over a cap, the
      connection idle the longest is closed to make room.
    * A request shorter than a DNS header closes it at once.
    * A client that half-closes after sending still gets its outstanding answers.
    * Reading stops while the answers the client does not read pile up in the write
      buffer (the protocol is its own transport's producer), or while
      ``maxOutstanding`` answers are pending.
    """

    #: stop reading while this many queries of the connection are unanswered.
    maxOutstanding = 256

    host = "?"

    def __init__(self, factory: KubernetaiServerFactory):
        self.factory = factory
        self._buffer = b""
        self._outstanding = 0
        self._closed = False
        self._readClosed = False
        self._writeBlocked = False
        self._tooMany = False
        self._reading = True
        self._producer = False
        self._processing = False
        self._timer: Any = None
        self._abort: Any = None

    # -- connection lifecycle --

    def connectionMade(self) -> None:
        self.factory.connectionMade(self)
        try:
            self.transport.registerProducer(self, True)
            self._producer = True
        except Exception:          # a transport that cannot take a producer
            self._producer = False
        timeout = self.factory.tcp_read_timeout or self.factory.tcp_idle_timeout
        if timeout and timeout > 0:
            self._timer = self.factory._reactor.callLater(timeout, self._idle)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._closed = True
        self._buffer = b""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._abort is not None and self._abort.active():
            self._abort.cancel()
        self._abort = None
        try:
            self.factory.connectionLost(self)
        except ValueError:
            pass

    def readConnectionLost(self) -> None:
        """The client half-closed: answer what is outstanding, then close."""
        self._readClosed = True
        if self._outstanding <= 0:
            self._close()

    def writeConnectionLost(self) -> None:
        self._close()

    #: seconds a closing connection may take to flush its answers before it is aborted
    #: (CoreDNS's write timeout): a client that never reads cannot hold the socket.
    writeTimeout = 5.0

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._producer:
            self._producer = False
            self.transport.unregisterProducer()
        self.transport.loseConnection()
        if self._abort is None and hasattr(self.transport, "abortConnection"):
            self._abort = self.factory._reactor.callLater(self.writeTimeout,
                                                          self.transport.abortConnection)

    def _idle(self) -> None:
        self._timer = None
        if self._closed:
            return
        if self._outstanding > 0:
            self._timer = self.factory._reactor.callLater(
                self.factory.tcp_idle_timeout, self._idle)
            return
        self._close()

    def _touch(self) -> None:
        if self._timer is not None:
            self._timer.reset(self.factory.tcp_idle_timeout)

    def idle(self) -> bool:
        """No answer outstanding: closing it loses nothing."""
        return self._outstanding <= 0 and not self._closed

    def evict(self) -> None:
        """Closed at once to make room for a new connection (see :class:`TCPConnections`).

        Aborted, not closed politely: answers it has not read would otherwise keep the
        socket open after it stopped counting against the caps.
        """
        self._close()
        if hasattr(self.transport, "abortConnection"):
            self.transport.abortConnection()

    # -- flow control (IPushProducer, driven by our own transport's write buffer) --

    def _updateReading(self) -> None:
        want = not (self._writeBlocked or self._tooMany)
        if want != self._reading and not self._closed:
            self._reading = want
            if want:
                self.transport.resumeProducing()
            else:
                self.transport.pauseProducing()

    def pauseProducing(self) -> None:
        self._writeBlocked = True
        self._updateReading()

    def resumeProducing(self) -> None:
        self._writeBlocked = False
        self._updateReading()
        if self._buffer:
            self._process()

    def stopProducing(self) -> None:
        pass

    # -- requests and answers --

    def dataReceived(self, data: bytes) -> None:
        self._buffer = self._buffer + data if self._buffer else data
        self._process()

    def _process(self) -> None:
        """Answer the whole queries in the buffer while the client keeps up.

        It stops, keeping the rest buffered, as soon as answers pile up unread (the
        transport paused us) or too many are outstanding: one read can hold thousands of
        pipelined queries, and answering them all at once would buffer their answers
        without bound. Reading resumes, and the rest is answered, when the client drains.
        """
        if self._processing:
            return
        self._processing = True
        buf = self._buffer
        pos = 0
        n = len(buf)
        try:
            while (n - pos >= 2 and not self._closed and not self._writeBlocked
                   and self._outstanding < self.maxOutstanding):
                length = (buf[pos] << 8) | buf[pos + 1]
                if n - pos - 2 < length:
                    break
                message = buf[pos + 2:pos + 2 + length]
                pos += 2 + length
                if length < 12:
                    self.factory._malformedLog(_log.info, "short TCP DNS message; closing")
                    self._close()
                    break
                self._touch()
                self.factory.tcpConnections.active(self)
                self._outstanding += 1
                if not self.factory.handleWire(message, self, None, False):
                    self._outstanding -= 1
        except Exception:
            self.factory._internalLog(_log.failure, "unexpected error handling a TCP request")
        finally:
            self._processing = False
        self._buffer = buf[pos:] if not self._closed else b""
        if self._outstanding >= self.maxOutstanding and not self._tooMany:
            self._tooMany = True
            self._updateReading()

    def sendWire(self, wire: bytes, addr: Any = None) -> None:
        self._outstanding -= 1
        if self._closed:
            return
        self.transport.write(_U16.pack(len(wire)) + wire)
        if self._tooMany and self._outstanding < self.maxOutstanding // 2:
            self._tooMany = False
            self._updateReading()
            if self._buffer:
                self._process()
        if self._outstanding <= 0:
            if self._readClosed:
                self._close()
            else:
                self._touch()

    def peer(self, addr: Any = None) -> tuple[str, int]:
        p = self.transport.getPeer()
        return getattr(p, "host", "?"), getattr(p, "port", 0)


KubernetaiServerFactory.protocol = DNSStreamServerProtocol  # type: ignore[assignment]


# ---------------------------------------------------------------------------------------
# Listening


def listen(factory: KubernetaiServerFactory, address: str, port: int,
           reactor: Any = None) -> list[IListeningPort]:
    """Listen on UDP and TCP ``address``:``port``; with port 0, one free port for both."""
    if reactor is None:
        reactor = factory._reactor
    attempts = 20 if port == 0 else 1
    last: Exception | None = None
    for _ in range(attempts):
        udp = reactor.listenUDP(port, factory.buildDatagramProtocol(), interface=address,
                                maxPacketSize=factory.maxPacketSize)
        actual = udp.getHost().port
        try:
            tcp = reactor.listenTCP(actual, factory, interface=address, backlog=1024)
        except CannotListenError as exc:
            last = exc
            udp.stopListening()
            continue
        return [udp, tcp]
    assert last is not None
    raise last
