"""The DNS server: sockets in, a block's pipeline, sockets out, as CoreDNS's ``core/dnsserver``.

:class:`KubernetaiServerFactory` is a :class:`twisted.names.server.DNSServerFactory` that
parses each request (:mod:`kubernetai.core.codec`), routes it to the server block of the
longest matching zone (:mod:`kubernetai.core.router`; REFUSED when none matches), fills in
the request context, runs the block's pipeline (:mod:`kubernetai.core.pipeline`) and
writes the reply. It owns what no plugin does:

* REFUSED for names outside every zone and for classes other than IN;
* a reply's plugin error is logged (as CoreDNS's ``errors`` would) unless a plugin already
  reported it; a plugin that raises is answered SERVFAIL and its traceback logged;
* UDP: up to a hundred waiting datagrams are read in one turn of the reactor by the
  protocol's own loop (it stands in for Twisted's ``Port.doRead``, which reads 256 KiB and
  so held the reactor for hundreds of milliseconds under load), and replies go straight to
  ``socket.sendto``; a request answered early (a cache hit) is remembered by its bytes
  after the ID, so the same bytes again skip the parser and the router (the early answer
  itself is asked every time);
* TCP: pipelined queries answered as each completes (those answered while one read is
  worked through are written together); CoreDNS's read (3 s), idle (10 s) and
  write (5 s) timeouts; connections capped in total and per client address, the longest
  idle one closed to make room (:mod:`kubernetai.core.tcp`); reading stops while answers
  pile up unread; a reply of several messages (a zone transfer, ``Reply.more``) is written
  message by message as the client reads them;
* malformed requests get a rate-limited one-line log, never a traceback;
* the queries no server block takes (REFUSED outside every zone or for another class, a
  question-less SERVFAIL, a plugin's exception) are counted in CoreDNS's per-query metrics
  under the zone "dropped", and exceptions in ``coredns_panics_total``, as CoreDNS's
  server does whether or not a block has `prometheus`. Each listening socket knows its
  ``server`` label (``dns://:53``, ``dns://127.0.0.1:53``): ``metrics`` on the protocol.
"""

from __future__ import annotations

import errno
import socket
import struct
import time
from collections import deque
from typing import Any, Callable, Iterator, Mapping

from twisted.internet import defer, protocol, udp
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IHalfCloseableProtocol, IListeningPort, IPushProducer
from twisted.logger import Logger
from twisted.names import dns
from twisted.names.server import DNSServerFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from kubernetai.core.codec import (
    ALLOWED_CLASSES,
    ECHOED_EDNS_OPTIONS,
    REFUSED,
    SERVFAIL,
    parse_request,
    render,
    render_reply,
    type_name,
)
from kubernetai.core.metrics import DNS_REQUESTS, DROPPED, PROCESS, Source
from kubernetai.core.pipeline import BlockPipeline, Stage
from kubernetai.core.plugin import position
from kubernetai.core.request import Reply, Request
from kubernetai.core.router import ZoneRouter
from kubernetai.core.tcp import TCPConnections
from kubernetai.core.wirecache import WireCache, WireCacheHandler
from kubernetai.pkg.ratelog import RateLimitedLog

__all__ = [
    "KubernetaiServerFactory",
    "DNSDatagramServerProtocol",
    "DNSStreamServerProtocol",
    "listen",
    "block_of",
]

_log = Logger(namespace="kubernetai.core.dnsserver")
_U16 = struct.Struct("!H")
_perf_counter = time.perf_counter

#: Twisted's UDP read, which :meth:`DNSDatagramServerProtocol._doRead` stands in for.
_PortDoRead = udp.Port.doRead
#: recvfrom errors that end a turn of reading, as Twisted's (its ignore and refuse lists:
#: on a socket that is not connected, a refusal is nothing to report).
_READ_DONE = frozenset(udp._sockErrReadIgnore) | frozenset(udp._sockErrReadRefuse)

PANICS = PROCESS.counter("coredns_panics_total",
                         "Exceptions raised while answering a query (each answered SERVFAIL).")


def server_label(host: str, port: int) -> str:
    """CoreDNS's ``server`` label of a listener: ``dns://:53`` for every address (no
    `bind`), ``dns://127.0.0.1:53``, ``dns://[::1]:53``."""
    if host in ("", "::", "0.0.0.0"):
        host = ""
    elif ":" in host:
        host = f"[{host}]"
    return f"dns://{host}:{port}"


def listening_source(host: str, port: int, udp: bool) -> Source:
    """The metrics' source of a socket listening on ``host``:``port``; the family 0 for
    one of every IPv6 address (dual-stack: each client's is read)."""
    return (server_label(host, port), udp, 0 if host in ("", "::") else address_family(host))


def address_family(host: str) -> int:
    """The `family` label: 1 for IPv4 (an IPv4 client of a dual-stack socket included),
    2 for IPv6."""
    return 2 if ":" in host and not host.startswith("::ffff:") else 1


def _family_of(addr: Any) -> int:
    """The family of a UDP client address (4-tuples come from an IPv6 socket)."""
    if addr is not None and len(addr) == 4 and not addr[0].startswith("::ffff:"):
        return 2
    return 1


def metrics_source(proto: Any, addr: Any) -> Source | None:
    """Where a query came in, for the per-query metrics: ``proto.metrics`` (server label,
    UDP, family), the family read from the client's address when the socket serves both
    (family 0 there); None for a protocol that is not one of the server's sockets."""
    source: Source | None = getattr(proto, "metrics", None)
    if source is None or source[2]:
        return source
    return client_source(source, addr)


def client_source(source: Source, addr: Any) -> Source:
    """``source`` of a dual-stack socket (family 0) with the family of the client at
    ``addr``."""
    return (source[0], source[1], _family_of(addr))


class _EveryClass(frozenset):  # type: ignore[type-arg]
    """Admits every class: re-parses a request REFUSED for its class, to count it."""

    def __contains__(self, item: object) -> bool:
        return True


_EVERY_CLASS = _EveryClass()


def block_of(value: Any, cache: WireCache | None = None) -> Any:
    """A zone's pipeline: ``value`` itself if it is one, else a pipeline around ``value``
    as the block's only resolver (with the answer cache in front, given one)."""
    if hasattr(value, "serve"):
        return value
    stages = []
    if value is not None:
        stages.append(Stage("kubernetai", position("kubernetai"), 0, resolver=value))
    if cache is not None:
        stages.append(Stage("cache", position("cache"), 0, handler=WireCacheHandler(cache),
                            implicit=True))
    return BlockPipeline(stages)


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

    @property
    def metrics(self) -> Source:
        """No server label; the family from each client (see :func:`metrics_source`)."""
        return ("", self.udp, 0)

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
# The factory


class KubernetaiServerFactory(DNSServerFactory):
    """A server port: routes each query to the pipeline of its longest matching zone.

    :param zones: zone name → that block's :class:`~kubernetai.core.pipeline.BlockPipeline`,
        or a plain ``IResolver`` (made the only plugin of a block, see :func:`block_of`);
        or a ready :class:`ZoneRouter` of pipelines.
    :param reactor: for the TCP timers (defaults to the global reactor).
    :param tcp_read_timeout: close a new TCP connection whose first query has not
        arrived whole after this many seconds (CoreDNS's read timeout: 3 s).
    :param tcp_idle_timeout: after that, close it once this many seconds pass with no
        complete query and no answer outstanding (CoreDNS: 10 s).
    :param max_tcp_connections: open TCP connections at most (see :class:`TCPConnections`).
    :param max_tcp_per_client: open TCP connections from one address at most.
    :param tcp_connections: caps shared with the other ports of the process (the limit on
        open files is the process's); by default this factory's own.
    :param on_error: called with each plugin error no plugin reported, formatted as
        CoreDNS's ``errors`` plugin (``"2 name. A: plugin/kubernetai: no next plugin
        found"``); by default it goes to the Twisted log at error level.
    :param bufsize: the ``bufsize`` plugin: clamp the client's advertised EDNS UDP size.
    :param cache: the answer cache put in front of plain resolvers given in ``zones``.
    """

    protocol = None  # type: ignore[assignment] # set below, after the protocol classes
    #: request classes answered; others get REFUSED (CoreDNS without ``chaos``).
    allowedClasses = ALLOWED_CLASSES
    #: EDNS0 option codes echoed back from the request.
    echoedOptions = ECHOED_EDNS_OPTIONS
    #: UDP receive buffer for the listening port (bytes); larger queries are cut.
    maxPacketSize = 8192
    #: CoreDNS's name of this server (``dns://:53`` for a block without `bind`,
    #: ``dns://0.0.0.0:53`` for ``bind 0.0.0.0``), the metrics' ``server`` label; None:
    #: worked out from each socket's address.
    label: str | None = None

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
        on_error: Callable[[str], None] | None = None,
        bufsize: int | None = None,
        cache: WireCache | None = None,
    ):
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self._reactor = reactor
        if not isinstance(zones, ZoneRouter):
            zones = ZoneRouter({zone: block_of(value, cache) for zone, value in zones.items()})
        self.router = zones
        self.resolver = self.router          # stock API: factory.resolver.query(...)
        self.canRecurse = False
        self.tcp_idle_timeout = tcp_idle_timeout
        self.tcp_read_timeout = tcp_read_timeout
        self.tcpConnections = tcp_connections or TCPConnections(max_tcp_connections,
                                                                max_tcp_per_client)
        self.on_error = on_error
        self.bufsize = bufsize
        self._malformedLog = RateLimitedLog()
        self._internalLog = RateLimitedLog()
        self._onMalformed = self._malformed
        # Requests answered early (cache hits), by their bytes after the ID, per transport:
        # the same bytes parse and route the same, so a repeat skips both (see
        # :meth:`handleWire`). Valid for one router; emptied when it is replaced.
        self._hits: tuple[dict[bytes, tuple[Request, Any]], dict[bytes, tuple[Request, Any]]] \
            = ({}, {})
        self._hitsRouter: ZoneRouter | None = None

    #: at most this many requests kept per transport for :meth:`handleWire`'s shortcut
    #: (emptied when full: a flood of distinct names costs one clear per this many); 0:
    #: no shortcut.
    maxRememberedHits = 2048
    #: only requests of at most this many bytes are remembered, so the table stays small
    #: (2,048 x 512 bytes at most): a client padding its queries with EDNS options up to
    #: 64 KiB over TCP would otherwise make it hold hundreds of megabytes.
    maxRememberedSize = 512

    def adopt(self, other: "KubernetaiServerFactory") -> None:
        """Take over another factory's routing (a reload on open sockets)."""
        self.router = other.router
        self.resolver = other.resolver
        self.on_error = other.on_error

    def reportError(self, line: str) -> None:
        """A plugin error no plugin reported."""
        if self.on_error is not None:
            try:
                self.on_error(line)
                return
            except Exception:
                _log.failure("on_error callback failed")
        _log.error("{line}", line=line)

    # -- request path -------------------------------------------------------------------

    def parseRequest(self, data: bytes, udp: bool) -> Request | bytes | None:
        """A :class:`Request`; or the bytes of an immediate error reply; or None (drop)."""
        return parse_request(data, udp, self.bufsize, self.allowedClasses,
                             self.echoedOptions, self._onMalformed)

    def _malformed(self, reason: str) -> None:
        self._malformedLog(_log.info, "malformed DNS request ({reason})", reason=reason)

    def handleWire(self, data: bytes, proto: Any, addr: Any, udp: bool) -> bool:
        """Answer one request; False if it is dropped without any reply.

        ``proto`` has ``sendWire(bytes, addr)`` and ``peer(addr) -> (host, port)``.

        A request answered early (a cache hit) is remembered by its bytes after the ID
        (flags, counts, question, OPT: all its parse and its route depend on): the same
        bytes again reuse its parsed :class:`Request` and route, with this one's ID, asker
        and transport written in. The early answer is still asked every time, so answers
        are what the full path gives. A remembered request is only ever lent to early
        answers, which keep nothing of a hit; on a miss it leaves the table and goes on
        down the pipeline as this query's own.
        """
        router = self.router
        if router is not self._hitsRouter:
            self._hitsRouter = router
            self._hits[0].clear()
            self._hits[1].clear()
        hits = self._hits[udp]
        key = data[2:]
        found = hits.get(key)
        if found is not None:
            lent, routed = found
            lent.id = (data[0] << 8) | data[1]
            lent.proto = proto
            lent.addr = addr
            early = routed[1].early
            if early is not None:
                try:
                    wire = early(lent)
                except Exception:
                    self._internalLog(_log.failure, "a plugin's early answer failed")
                    wire = None
                if wire is not None:
                    proto.sendWire(wire, addr)
                    if not udp:
                        lent.proto = None  # a closed connection is not kept alive by it
                    return True
            del hits[key]  # lent no more: this query's own from here
            return self._serve(lent, routed[1])
        try:
            req = parse_request(data, udp, self.bufsize, self.allowedClasses,
                                self.echoedOptions, self._onMalformed)
        except Exception:
            self._internalLog(_log.failure, "request parser failed")
            return False
        if req is None:
            return False
        if isinstance(req, bytes):
            proto.sendWire(req, addr)
            if req[3] & 0xF in (SERVFAIL, REFUSED):  # no question, or not class IN
                self._dropped_wire(data, req, proto, addr, udp)
            return True
        entry = router.entry(req.lname, req.qtype)
        if entry is None:
            refused = render(req, REFUSED)
            proto.sendWire(refused, addr)
            self._dropped(req, proto, addr, refused)
            return True
        block = entry[1]
        # What a first step answering early may count by: the zone and who asked.
        req.zone = entry[0]
        req.proto = proto
        req.addr = addr
        early = block.early
        if early is not None:
            try:
                wire = early(req)
            except Exception:
                self._internalLog(_log.failure, "a plugin's early answer failed")
                wire = None
            if wire is not None:
                proto.sendWire(wire, addr)
                limit = self.maxRememberedHits
                if limit > 0 and len(data) <= self.maxRememberedSize:
                    if len(hits) >= limit:
                        hits.clear()
                    hits[key] = (req, entry)
                    if not udp:
                        req.proto = None
                return True
        return self._serve(req, block)

    def _serve(self, req: Request, block: Any) -> bool:
        """The block's pipeline for ``req`` (no early answer): the reply is sent when it
        comes."""
        req.block = block
        req.server = self.router
        req.started = _perf_counter()
        req.depth = 0
        req.deps = None
        req.nocache = False
        req.renewable = True
        req.observers = None
        req.answered = None
        try:
            reply = block.entry(req, block.entry_next)
        except Exception:
            self._unexpected(Failure(), req)
            return True
        if reply.__class__ is Reply or isinstance(reply, Reply):
            self._answer(reply, req)
        elif isinstance(reply, defer.Deferred):
            reply.addCallbacks(self._answer, self._unexpected, callbackArgs=(req,),
                               errbackArgs=(req,))
        else:
            self._unexpected(Failure(TypeError(f"a handler answered {reply!r}, not a Reply")),
                             req)
        return True

    def _answer(self, reply: Reply, req: Request) -> None:
        try:
            wire = render_reply(req, reply)
        except Exception:
            self._unexpected(Failure(), req)
            return
        if reply.error and not reply.reported:
            # Logged before the reply goes out: whoever sees the reply sees the line.
            self.reportError(f"{reply.rcode} {req.fqdn()} {type_name(req.qtype)}: "
                             f"{reply.error}")
        if wire:
            if reply.more is None:
                self._send(req, wire)
            else:
                self._send_series(req, wire, reply.more)

    def _unexpected(self, failure: Failure, req: Request) -> None:
        """SERVFAIL for a plugin or rendering bug; the failure goes to the log, and is
        counted as CoreDNS counts a panic (``coredns_panics_total``, zone "dropped")."""
        PANICS.inc()
        try:
            _log.failure("{qname} {qtype}: resolver failed", failure,
                         qname=req.fqdn(), qtype=type_name(req.qtype))
            wire = render(req, SERVFAIL)
            self._send(req, wire)
            self._dropped(req, req.proto, req.addr, wire)
        except Exception:
            self._internalLog(_log.failure, "could not answer SERVFAIL")

    # -- what no block counts -----------------------------------------------------------

    @staticmethod
    def _dropped(req: Request, proto: Any, addr: Any, wire: bytes) -> None:
        """A query answered outside every block's plugins, counted as CoreDNS's
        ``errorAndMetricsFunc`` does (zone "dropped", no plugin)."""
        source = metrics_source(proto, addr)
        if source is not None:
            DNS_REQUESTS.report(source, DROPPED, req.qtype, req.do, wire[3] & 0xF, "",
                                req.size, len(wire), 0.0)

    def _dropped_wire(self, data: bytes, wire: bytes, proto: Any, addr: Any,
                      udp: bool) -> None:
        """:meth:`_dropped` for an answer the parser gave as bytes: a header with no
        question (SERVFAIL, type 0), or a class other than IN (REFUSED)."""
        try:
            req = parse_request(data, udp, self.bufsize, _EVERY_CLASS, self.echoedOptions)
        except Exception:
            return
        if isinstance(req, Request):
            self._dropped(req, proto, addr, wire)
            return
        source = metrics_source(proto, addr)
        if source is not None:
            DNS_REQUESTS.report(source, DROPPED, 0, False, wire[3] & 0xF, "", len(data),
                                len(wire), 0.0)

    def _send(self, req: Request, wire: bytes) -> None:
        req.proto.sendWire(wire, req.addr)
        self._observed(req, wire)

    def _observed(self, req: Request, wire: bytes) -> None:
        """The response to ``req`` has been sent: tell the plugins that asked."""
        observers = req.observers
        if observers is not None:
            for observe in observers:
                try:
                    observe(req, wire)
                except Exception:
                    self._internalLog(_log.failure, "a plugin's response observer failed")

    def _send_series(self, req: Request, wire: bytes, more: Iterator[bytes]) -> None:
        """A reply of several messages: ``wire``, then each of ``more``. On one of our TCP
        connections they are written as the client reads them; observers hear of the
        query once, with the first message, when the last is written (or the connection
        is gone). A stock TCP protocol takes them all at once; UDP only the first."""
        proto = req.proto
        stream = getattr(proto, "sendStream", None)
        if stream is not None:
            stream(wire, more, lambda: self._observed(req, wire))
            return
        proto.sendWire(wire, req.addr)
        try:
            if not req.udp:
                for message in more:
                    proto.sendWire(message, req.addr)
        except Exception:
            self._internalLog(_log.failure, "a reply's further messages failed")
        finally:
            _close(more)
        self._observed(req, wire)

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

    transport: Any
    #: Where its queries come in, for the metrics (:func:`metrics_source`): set when it
    #: starts listening; the family 0 on a dual-stack socket (each client's is read).
    metrics: Source = ("", True, 0)

    def __init__(self, factory: KubernetaiServerFactory):
        self.factory = factory
        self._sendto: Callable[[bytes, Any], Any] | None = None
        self._sendLog = RateLimitedLog()

    def startProtocol(self) -> None:
        try:
            bound = self.transport.getHost()
            source = listening_source(bound.host, bound.port, True)
            label = self.factory.label
            self.metrics = source if label is None else (label, *source[1:])
        except Exception:  # a transport without an address (a test's)
            pass
        sock = getattr(self.transport, "socket", None)
        # Twisted's Port.write re-validates the address string on every datagram;
        # the socket's own sendto is several times cheaper.
        self._sendto = sock.sendto if sock is not None else None
        if sock is not None and getattr(type(self.transport), "doRead", None) is _PortDoRead:
            # The reactor calls the port's doRead when the socket is readable: ours
            # reads the same datagrams, with what each costs looked up once a wake-up.
            self.transport.doRead = self._doRead

    def stopProtocol(self) -> None:
        self._sendto = None

    #: Datagrams read in one turn of the reactor at most. Twisted reads up to 256 KiB a
    #: turn, about 5,000 queries: under load the reactor then did not turn for 300-500 ms
    #: (timers, informer deliveries, TCP and /metrics all waited). A hundred queries are
    #: about a millisecond of work.
    maxDatagramsPerRead = 100

    def _doRead(self) -> None:
        """Twisted's ``udp.Port.doRead``, leaner: the datagrams waiting (at most
        :attr:`maxDatagramsPerRead` a turn) straight to
        :meth:`KubernetaiServerFactory.handleWire`."""
        port = self.transport
        recvfrom = port.socket.recvfrom
        size = port.maxPacketSize
        handle = self.factory.handleWire
        v6 = port.addressFamily == socket.AF_INET6
        for _ in range(self.maxDatagramsPerRead):
            try:
                data, addr = recvfrom(size)
            except BlockingIOError:  # every waiting datagram read: the usual end
                return
            except OSError as exc:
                if exc.args[0] in _READ_DONE:
                    return
                raise
            if v6:
                addr = addr[:2]  # as Twisted: (host, port), no flow or scope ID
            try:
                handle(data, self, addr, True)
            except Exception:
                self._sendLog(_log.failure, "unexpected error handling a UDP request")

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
    * A reply of several messages (a zone transfer: :meth:`sendStream`) is written one
      message at a time, the next one made only once the transport is below its write
      buffer's mark (64 KiB): a client that reads slowly holds that and one message of
      memory, however big the zone. No further query is read meanwhile, and a client
      that takes nothing of it for ``writeTimeout`` seconds is disconnected.
    """

    #: stop reading while this many queries of the connection are unanswered.
    maxOutstanding = 256
    transport: Any

    host = "?"
    #: Where its queries come in, for the metrics (:func:`metrics_source`): set when it
    #: connects.
    metrics: Source = ("", False, 0)

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
        # Answers made while a read's queries are answered, written together (see
        # :meth:`_process`); None outside it.
        self._batch: list[bytes] | None = None
        self._batched = 0
        self._timer: Any = None
        self._abort: Any = None
        # Replies of several messages, the first being written (see sendStream), and the
        # timer that disconnects a client that stopped taking them.
        self._series: deque[_Series] = deque()
        self._stall: Any = None

    # -- connection lifecycle --

    def connectionMade(self) -> None:
        self.factory.connectionMade(self)
        try:
            # The listening port's address (a Twisted TCP connection's ``server``), not
            # the connection's own: a socket of every address is ``dns://:53``.
            listening: Any = getattr(self.transport, "server", None)
            if self.factory.label is not None:
                label = self.factory.label
            elif hasattr(listening, "getHost"):
                bound = listening.getHost()
                label = server_label(bound.host, bound.port)
            else:
                label = server_label("", self.transport.getHost().port)
            self.metrics = (label, False, address_family(self.transport.getPeer().host))
        except Exception:  # a transport without addresses (a test's)
            pass
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
        self._endSeries()
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
        if self._batch:
            self._flush()  # what was answered goes out before the close
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
        want = not (self._writeBlocked or self._tooMany or self._series)
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
        if self._series:
            self._pump()  # reading resumes, and the buffer is answered, once they end
            return
        self._updateReading()
        if self._buffer:
            self._process()

    def stopProducing(self) -> None:
        pass

    # -- requests and answers --

    def dataReceived(self, data: bytes) -> None:
        self._buffer = self._buffer + data if self._buffer else data
        self._process()

    #: answers buffered by one batch at most before they are written (:meth:`_process`).
    batchBytes = 16384

    def _process(self) -> None:
        """Answer the whole queries in the buffer while the client keeps up.

        It stops, keeping the rest buffered, as soon as answers pile up unread (the
        transport paused us) or too many are outstanding: one read can hold thousands of
        pipelined queries, and answering them all at once would buffer their answers
        without bound. Reading resumes, and the rest is answered, when the client drains.

        The answers made meanwhile are written together, one write a batch (or each
        :attr:`batchBytes`), in the order they were made; the idle timer is reset and the
        connection marked active once a batch, as its queries all arrived at once.
        """
        if self._processing:
            return
        self._processing = True
        self._batch = []
        buf = self._buffer
        pos = 0
        n = len(buf)
        handle = self.factory.handleWire
        limit = self.maxOutstanding
        first = True
        try:
            while (n - pos >= 2 and not self._closed and not self._writeBlocked
                   and self._outstanding < limit and not self._series):
                length = (buf[pos] << 8) | buf[pos + 1]
                if n - pos - 2 < length:
                    break
                message = buf[pos + 2:pos + 2 + length]
                pos += 2 + length
                if length < 12:
                    self.factory._malformedLog(_log.info, "short TCP DNS message; closing")
                    self._close()
                    break
                if first:
                    first = False
                    self._touch()
                    self.factory.tcpConnections.active(self)
                self._outstanding += 1
                if not handle(message, self, None, False):
                    self._outstanding -= 1
        except Exception:
            self.factory._internalLog(_log.failure, "unexpected error handling a TCP request")
        finally:
            self._processing = False
            if self._batch:
                self._flush()
            self._batch = None
        self._buffer = buf[pos:] if not self._closed else b""
        if not first and self._outstanding <= 0 and not self._closed:
            if self._readClosed:
                self._close()
            else:
                self._touch()
        if self._outstanding >= self.maxOutstanding and not self._tooMany:
            self._tooMany = True
            self._updateReading()

    def _flush(self) -> None:
        batch = self._batch
        if batch:
            data = b"".join(batch) if len(batch) > 1 else batch[0]
            batch.clear()
            self._batched = 0
            self.transport.write(data)

    def sendWire(self, wire: bytes, addr: Any = None) -> None:
        self._outstanding -= 1
        if self._closed:
            return
        batch = self._batch
        if batch is not None:  # answered within _process: written with its batch
            batch.append(_U16.pack(len(wire)))
            batch.append(wire)
            self._batched += len(wire) + 2
            if self._batched >= self.batchBytes:
                self._flush()
            if self._tooMany and self._outstanding < self.maxOutstanding // 2:
                self._tooMany = False
                self._updateReading()
            return  # the idle timer and a half-closed client: at the batch's end
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

    # -- replies of several messages --

    def sendStream(self, first: bytes, more: Iterator[bytes], done: Callable[[], None]
                   ) -> None:
        """Answer with several messages: ``first``, then each of ``more`` in order, made
        one at a time as the transport takes them; ``done()`` once the last is written or
        the connection is lost. Replies of several messages to pipelined queries follow
        each other whole; answers made before this one go out before it."""
        if self._closed:
            self._outstanding -= 1
            _close(more)
            self._told(done)
            return
        if self._batch:
            self._flush()
        self._series.append(_Series(first, more, done))
        self._updateReading()
        if len(self._series) == 1:
            self._pump()

    def _pump(self) -> None:
        """Write the messages of the replies in series while the transport takes them
        (it pauses us, synchronously, once its buffer passes its mark)."""
        series = self._series
        self._cancelStall()
        while series and not self._writeBlocked and not self._closed:
            head = series[0]
            try:
                message = head.next()
            except Exception:
                self.factory._internalLog(_log.failure, "a reply's next message failed")
                self.evict()  # the client sees a transfer cut short, not a short zone
                return
            if message is None:
                series.popleft()
                self._outstanding -= 1
                self._told(head.done)
                continue
            self.transport.writeSequence((_U16.pack(len(message)), message))
        if self._closed:
            return
        if series:
            self._stall = self.factory._reactor.callLater(self.writeTimeout, self._stalled)
            return
        self._seriesEnded()

    def _seriesEnded(self) -> None:
        """The last message of the replies in series is written: what an answer's end
        does (see :meth:`sendWire`), and the queries read meanwhile are answered."""
        if self._tooMany and self._outstanding < self.maxOutstanding // 2:
            self._tooMany = False
        self._updateReading()
        if self._outstanding <= 0:
            if self._readClosed:
                self._close()
                return
            self._touch()
        if self._buffer and not self._writeBlocked:
            self._process()

    def _stalled(self) -> None:
        """The client took nothing of a reply in series for ``writeTimeout`` seconds."""
        self._stall = None
        if self._series and not self._closed:
            self.evict()

    def _cancelStall(self) -> None:
        stall, self._stall = self._stall, None
        if stall is not None and stall.active():
            stall.cancel()

    def _endSeries(self) -> None:
        """The connection is gone: the replies in series end where they are."""
        self._cancelStall()
        while self._series:
            head = self._series.popleft()
            _close(head.more)
            self._told(head.done)

    def _told(self, done: Callable[[], None]) -> None:
        try:
            done()
        except Exception:
            self.factory._internalLog(_log.failure, "a reply's end callback failed")

    def peer(self, addr: Any = None) -> tuple[str, int]:
        p = self.transport.getPeer()
        return getattr(p, "host", "?"), getattr(p, "port", 0)


KubernetaiServerFactory.protocol = DNSStreamServerProtocol  # type: ignore[assignment]


def _close(messages: Iterator[bytes]) -> None:
    """Let a series of messages go (a generator runs its cleanup)."""
    close = getattr(messages, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            _log.failure("closing a reply's messages failed")


class _Series:
    """A reply of several messages being written on a TCP connection: the next message
    (the first until it is written), the rest, and what to call once it ends."""

    __slots__ = ("first", "more", "done")

    def __init__(self, first: bytes, more: Iterator[bytes], done: Callable[[], None]) -> None:
        self.first: bytes | None = first
        self.more = more
        self.done = done

    def next(self) -> bytes | None:
        """The next message; None at the end. A failure to make one is raised."""
        first = self.first
        if first is not None:
            self.first = None
            return first
        return next(self.more, None)


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

