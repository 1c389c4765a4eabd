"""In-process micro-benchmark of the UDP request → response path.

Feeds N encoded queries to the datagram protocol of
  * stock ``twisted.names.server.DNSServerFactory`` + ``dns.DNSDatagramProtocol``
    (``dns.Message`` decode, ``ResolverChain``, ``dns.Message`` encode, ``Port.write``
    replaced by a list append);
  * the same with ``dns._EDNSMessage`` decode/encode round trips, to price EDNS in
    stock Twisted;
  * ``kubernetai.core.dnsserver.KubernetaiServerFactory`` + its datagram protocol (its
    ``socket.sendto`` replaced by a list append), the resolver as a block's only plugin;
  * the same with the answer cache in front (``cache=WireCache()``), as every block is
    served: repeated queries are answered from it (a truncated answer is never kept),
    and, the bytes being the same each time, the server's shortcut for a repeated hit
    skips the parser and the router (``maxRememberedHits``);
  * the same without that shortcut (``maxRememberedHits = 0``): every query parsed and
    routed, then answered from the cache;
and prints microseconds per query (the speed-up is the uncached server's over stock).
No sockets, no reactor: this is the Python cost per query that bounds QPS, not a QPS
figure.

    python bench/dnsserver_micro.py [N]
"""

from __future__ import annotations

import sys
import time

from twisted.internet import defer
from twisted.names import dns, server

from kubernetai.core.dnsserver import DNSDatagramServerProtocol, KubernetaiServerFactory
from kubernetai.core.negative import AuthoritativeNameError
from kubernetai.core.wirecache import WireCache

ZONE = b"cluster.local"
SOA = dns.RRHeader(ZONE, dns.SOA, ttl=30, auth=True, payload=dns.Record_SOA(
    b"ns.dns." + ZONE, b"hostmaster." + ZONE, serial=1, refresh=7200, retry=1800,
    expire=86400, minimum=30))


class Resolver:
    """Fixed records: one A, a 500-A headless service, NXDOMAIN (twisted-style or ours)."""

    cacheable = True  # its answers depend on the query only, as a stanza's

    def __init__(self, ours: bool):
        self.ours = ours
        self.one = ([dns.RRHeader(b"web.default.svc." + ZONE, dns.A, ttl=5, auth=True,
                                  payload=dns.Record_A("10.96.0.10"))], [], [])
        self.many = ([dns.RRHeader(b"headless.default.svc." + ZONE, dns.A, ttl=5, auth=True,
                                   payload=dns.Record_A(f"10.1.{i // 250}.{i % 250 + 1}"))
                      for i in range(500)], [], [])

    def query(self, query, timeout=None):
        name = query.name.name.lower()
        if name.startswith(b"web."):
            return defer.succeed(self.one)
        if name.startswith(b"headless."):
            return defer.succeed(self.many)
        if self.ours:
            return defer.fail(AuthoritativeNameError([SOA]))
        return defer.fail(dns.AuthoritativeDomainError(name))


class Sink:
    """A transport (and socket) that keeps the last datagram."""

    def __init__(self):
        self.last = b""
        self.socket = self

    def write(self, data, addr=None):
        self.last = data

    def sendto(self, data, addr):
        self.last = data


def query_bytes(name: bytes, edns: bool) -> bytes:
    m = dns.Message(id=4321, recDes=1)
    m.queries = [dns.Query(name, dns.A, dns.IN)]
    if edns:
        m.additional = [dns.RRHeader(b"", dns.OPT, cls=1232, ttl=0,
                                     payload=dns.UnknownRecord(b""))]
    return m.toStr()


def stock_protocol():
    factory = server.DNSServerFactory(authorities=[Resolver(ours=False)])
    proto = dns.DNSDatagramProtocol(factory)
    proto.startProtocol()
    proto.transport = Sink()
    return proto


class EDNSStockFactory(server.DNSServerFactory):
    """Stock factory answering with ``_EDNSMessage`` (what twisted#6961 proposes)."""

    _messageFactory = dns._EDNSMessage

    def messageReceived(self, message, proto, address=None):
        message = dns._EDNSMessage._fromMessage(message)
        return super().messageReceived(message, proto, address)


def stock_edns_protocol():
    factory = EDNSStockFactory(authorities=[Resolver(ours=False)])
    proto = dns.DNSDatagramProtocol(factory)
    proto.startProtocol()
    proto.transport = Sink()
    return proto


def our_protocol(cache: WireCache | None = None):
    factory = KubernetaiServerFactory({"cluster.local": Resolver(ours=True)}, cache=cache)
    proto = DNSDatagramServerProtocol(factory)
    proto.transport = Sink()
    proto.startProtocol()
    return proto


def our_cached_protocol():
    return our_protocol(WireCache())


def our_cached_unremembered_protocol():
    proto = our_protocol(WireCache())
    proto.factory.maxRememberedHits = 0
    return proto


def timeit(proto, data: bytes, n: int) -> float:
    addr = ("127.0.0.1", 53000)
    receive = proto.datagramReceived
    for _ in range(min(n, 500)):
        receive(data, addr)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            receive(data, addr)
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    cases = [
        ("A, no EDNS", b"web.default.svc." + ZONE, False, n),
        ("A, EDNS 1232", b"web.default.svc." + ZONE, True, n),
        ("NXDOMAIN, EDNS", b"nope.default.svc." + ZONE, True, n),
        ("500 A, EDNS (truncated)", b"headless.default.svc." + ZONE, True, max(n // 20, 200)),
    ]
    makers = [("stock DNSServerFactory", stock_protocol),
              ("stock + _EDNSMessage", stock_edns_protocol),
              ("KubernetaiServerFactory", our_protocol),
              ("+ WireCache", our_cached_protocol),
              ("cache, no shortcut", our_cached_unremembered_protocol)]
    print(f"{'case':28s}" + "".join(f"{label:>26s}" for label, _ in makers) + "   speed-up")
    for label, name, edns, count in cases:
        data = query_bytes(name, edns)
        figures = []
        for _, make in makers:
            proto = make()
            figures.append(timeit(proto, data, count))
            assert proto.transport.last, "no response"
        print(f"{label:28s}" + "".join(f"{f:23.1f} µs" for f in figures)
              + f"   ×{figures[0] / figures[2]:.1f}")
    print(f"(best of 3 runs of N queries; N={n}, {max(n // 20, 200)} for the 500-record case; "
          f"Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
