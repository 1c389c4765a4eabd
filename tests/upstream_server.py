"""A loopback DNS server to forward to in tests: a zone, query counters, and fault modes.

It answers from a zone written in BIND syntax (parsed by Twisted Names' ``BindAuthority``)
as an authoritative server that also claims recursion: AA and RA set, the records of the
name, NXDOMAIN or NODATA with the zone's SOA in authority, REFUSED outside the zone
(which is what a `forward` health check, ``. IN NS``, gets: a live answer). UDP and TCP
listen on one free port of 127.0.0.1 (TCP pipelined); :meth:`UpstreamServer.start_tls`
adds a DNS-over-TLS listener.

Fault modes (:attr:`UpstreamServer.fault`, changed at any time from any thread):

``drop``            no reply at all (the client times out)
``refused``         REFUSED               ``servfail``  SERVFAIL
``garbage``         the query's ID, QR, then bytes that are no DNS message
``noise``           random bytes (no ID match: dropped by the client, which times out)
``truncated``       over UDP: TC set and no records; over TCP the full answer
``wrong_id``        the right answer under another ID
``wrong_question``  an answer to another name
``slow``            the right answer after :attr:`UpstreamServer.delay` seconds
``oversize``        over UDP the whole answer, however large, without TC (the client's
                    size ignored); over TCP the full answer
``cut``             over UDP the answer with its last record left out but still counted
                    (a message cut short); over TCP the full answer

Every query is counted per (lower-case name without the final dot, type name) in
:attr:`counts` and kept (its wire bytes and transport) in :attr:`queries`, faults
included. Use it from a test through the reactor thread (``reactor_running``)::

    upstream = UpstreamServer(ZONE)
    port = reactor_thread.in_reactor(upstream.start)
    ...
    reactor_thread.in_reactor(upstream.stop)

or as a separate process: ``python tests/upstream_server.py --zone FILE [--fault drop]``
prints the port on its first line and serves until killed.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import threading
from collections import Counter
from typing import Any

from twisted.internet import defer, protocol
from twisted.names import authority, dns

__all__ = ["UpstreamServer", "ZONE", "FAULTS"]

FAULTS = ("drop", "refused", "servfail", "garbage", "noise", "truncated", "wrong_id",
          "wrong_question", "slow", "oversize", "cut")

#: A small zone: the default of :class:`UpstreamServer`.
ZONE = """$ORIGIN example.org.
$TTL 300
@       IN SOA ns1.example.org. hostmaster.example.org. 2024010101 3600 600 86400 60
@       IN NS  ns1.example.org.
ns1     IN A   192.0.2.53
www     IN A   192.0.2.10
www     IN AAAA 2001:db8::10
alias   IN CNAME www.example.org.
mail    IN MX  10 www.example.org.
"""


def _type_name(qtype: int) -> str:
    return dns.QUERY_TYPES.get(qtype) or dns.EXT_QUERIES.get(qtype) or f"TYPE{qtype}"


class UpstreamServer:
    """See the module docstring. ``big`` adds that many A records to ``big.<origin>``
    (an answer larger than 512 bytes, for truncation tests)."""

    def __init__(self, zone: str = ZONE, *, host: str = "127.0.0.1", reactor: Any = None,
                 big: int = 60) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor
            reactor = global_reactor
        self.reactor = reactor
        self.host = host
        fd, path = tempfile.mkstemp(suffix=".zone")
        with os.fdopen(fd, "w") as handle:
            handle.write(zone)
        try:
            self.authority = authority.BindAuthority(path)
        finally:
            os.unlink(path)
        self.origin = self.authority.soa[0].lower()
        if big:
            self.authority.records[b"big." + self.origin] = [
                dns.Record_A(f"198.51.100.{i % 250 + 1}", 300) for i in range(big)]
        self.fault: str | None = None
        self.delay = 3.0
        self.counts: Counter[tuple[str, str]] = Counter()
        self.queries: list[tuple[bytes, str]] = []
        self._lock = threading.Lock()
        self.port = 0
        self.tls_port = 0
        self._listening: list[Any] = []
        self._connections: list[Any] = []
        #: TCP (and TLS) connections accepted so far.
        self.tcp_connections = 0

    # -- lifecycle (reactor thread) --------------------------------------------------------

    def start(self, port: int = 0) -> int:
        """Listen on UDP and TCP (one port; ``port`` 0 picks a free one). Returns it."""
        for _ in range(20):
            udp = self.reactor.listenUDP(port, _UDP(self), interface=self.host)
            chosen = udp.getHost().port
            try:
                tcp = self.reactor.listenTCP(chosen, _TCPFactory(self), interface=self.host)
            except Exception:
                udp.stopListening()
                if port:
                    raise
                continue
            self._listening += [udp, tcp]
            self.port = chosen
            return chosen
        raise RuntimeError("no port free for both UDP and TCP")

    def start_tls(self, context_factory: Any) -> int:
        """Also serve DNS over TLS (``context_factory``: server certificate options)."""
        port = self.reactor.listenSSL(0, _TCPFactory(self), context_factory,
                                      interface=self.host)
        self._listening.append(port)
        self.tls_port = port.getHost().port
        return self.tls_port

    def stop(self) -> defer.Deferred[Any]:
        """Close every socket (open TCP connections too); the port may be reused."""
        ports, self._listening = self._listening, []
        for connection in list(self._connections):
            connection.transport.abortConnection()
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])

    # -- counting ----------------------------------------------------------------------------

    def count(self, name: str, qtype: str = "A") -> int:
        with self._lock:
            return self.counts[(name.lower().rstrip("."), qtype)]

    def open_connections(self) -> int:
        """TCP (and TLS) connections open now."""
        return len(self._connections)

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
            self.queries.clear()

    # -- answering ----------------------------------------------------------------------------

    def respond(self, data: bytes, proto: str, send: Any) -> None:
        """Answer ``data`` (a query) with ``send(bytes)``, as the fault mode says."""
        message = dns.Message()
        try:
            message.fromStr(data)
        except Exception:  # noqa: BLE001 - not a query: ignore it
            return
        if not message.queries:
            return
        query = message.queries[0]
        with self._lock:
            self.counts[(query.name.name.decode("ascii", "replace").lower().rstrip("."),
                         _type_name(query.type))] += 1
            self.queries.append((data, proto))
        fault = self.fault
        if fault == "drop":
            return
        if fault == "noise":
            send(os.urandom(40))
            return
        if fault == "garbage":
            # The right ID and QR, one question promised, then a label of a reserved type.
            send(struct.pack("!HBBHHHH", message.id, 0x81, 0x80, 1, 1, 0, 0)
                 + b"\x40" + os.urandom(30))
            return
        reply = self.answer(message)
        if fault == "refused":
            reply.answers, reply.authority, reply.additional = [], [], []
            reply.rCode = dns.EREFUSED
        elif fault == "servfail":
            reply.answers, reply.authority, reply.additional = [], [], []
            reply.rCode = dns.ESERVER
        elif fault == "truncated" and proto == "udp":
            reply.answers, reply.authority, reply.additional = [], [], []
            reply.trunc = 1
        elif fault == "wrong_id":
            reply.id = (message.id + 1) & 0xFFFF
        elif fault == "wrong_question":
            reply.queries = [dns.Query(b"other." + self.origin, query.type, query.cls)]
        wire = reply.toStr()
        if fault == "cut" and proto == "udp" and reply.answers:
            count = len(reply.answers)
            reply.answers = reply.answers[:-1]
            wire = reply.toStr()
            wire = wire[:6] + struct.pack("!H", count) + wire[8:]
        elif fault == "oversize" and proto == "udp":
            pass
        elif proto == "udp" and not message.additional and len(wire) > 512 and not reply.trunc:
            reply.answers, reply.authority, reply.additional = [], [], []
            reply.trunc = 1
            wire = reply.toStr()
        if fault == "slow":
            self.reactor.callLater(self.delay, send, wire)
        else:
            send(wire)

    def answer(self, message: dns.Message) -> dns.Message:
        """The zone's answer to ``message`` (AA and RA set)."""
        query = message.queries[0]
        reply = dns.Message(id=message.id, answer=1, opCode=message.opCode, auth=1,
                            recDes=message.recDes, recAv=1, maxSize=65535)
        reply.checkingDisabled = message.checkingDisabled
        reply.queries = [query]
        name = query.name.name.lower()
        origin = self.origin
        if not (name == origin or name.endswith(b"." + origin)):
            reply.auth = 0
            reply.rCode = dns.EREFUSED
            return reply
        soa_name, soa = self.authority.soa
        negative = dns.RRHeader(soa_name, dns.SOA, dns.IN, min(soa.ttl, soa.minimum), soa,
                                auth=True)
        records = self.authority.records.get(name)
        if records is None:
            reply.rCode = dns.ENAME
            reply.authority = [negative]
            return reply
        owner = query.name.name
        for _ in range(8):
            found = [r for r in records if r.TYPE == query.type or query.type == dns.ALL_RECORDS]
            if found:
                reply.answers += [dns.RRHeader(owner, r.TYPE, dns.IN, r.ttl, r, auth=True)
                                  for r in found]
                return reply
            cnames = [r for r in records if r.TYPE == dns.CNAME]
            if not cnames:
                break
            reply.answers.append(dns.RRHeader(owner, dns.CNAME, dns.IN, cnames[0].ttl,
                                              cnames[0], auth=True))
            owner = cnames[0].name.name.rstrip(b".")
            records = self.authority.records.get(owner.lower(), [])
        if not reply.answers:
            reply.authority = [negative]
        return reply


class _UDP(protocol.DatagramProtocol):
    def __init__(self, server: UpstreamServer) -> None:
        self.server = server

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        def send(wire: bytes) -> None:
            if self.transport is not None:
                self.transport.write(wire, addr)
        self.server.respond(data, "udp", send)


class _TCP(protocol.Protocol):
    def __init__(self, server: UpstreamServer) -> None:
        self.server = server
        self.buffer = b""

    def connectionMade(self) -> None:
        self.server._connections.append(self)
        self.server.tcp_connections += 1

    def connectionLost(self, reason: Any = None) -> None:
        if self in self.server._connections:
            self.server._connections.remove(self)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 2:
            size = struct.unpack("!H", self.buffer[:2])[0]
            if len(self.buffer) < 2 + size:
                return
            frame, self.buffer = self.buffer[2:2 + size], self.buffer[2 + size:]
            self.server.respond(frame, "tcp", self._send)

    def _send(self, wire: bytes) -> None:
        if self.transport is not None and self.transport.connected:
            self.transport.write(struct.pack("!H", len(wire)) + wire)


class _TCPFactory(protocol.ServerFactory):
    def __init__(self, server: UpstreamServer) -> None:
        self.server = server

    def buildProtocol(self, addr: Any) -> _TCP:
        return _TCP(self.server)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a loopback DNS server for tests")
    parser.add_argument("--zone", help="zone file (BIND syntax); the built-in one if absent")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fault", choices=FAULTS)
    options = parser.parse_args(argv)
    from twisted.internet import reactor
    zone = ZONE
    if options.zone:
        with open(options.zone) as handle:
            zone = handle.read()
    server = UpstreamServer(zone, reactor=reactor)
    server.fault = options.fault
    print(server.start(options.port), flush=True)
    reactor.run()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
