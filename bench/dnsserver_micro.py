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

Then the miss path (``--distinct``, or by default after the table): a real ``kubernetai``
stanza (``pods insecure``) over a synthetic cluster (1,000 services, 100 of them
headless with 14 endpoints, 20,000 pods) behind the answer cache, every query a name
never asked before (a pod's A, an unknown service's NXDOMAIN, a ClusterIP service's A, a
headless service's A records), beside stock ``DNSServerFactory`` answering the same
pod names from a dict (what ``bench/scale.py``'s uncached phase compares against).

No sockets, no reactor: this is the Python cost per query that bounds QPS, not a QPS
figure.

    python bench/dnsserver_micro.py [N] [--distinct]
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


# --- every name distinct: the miss path of a real stanza ------------------------------------

DISTINCT_SPEC = "namespaces=20,services=1000,headless=100,endpoints=4,headless_endpoints=14," \
    "pods=20000"


class Proto:
    """The server's side of a socket: keeps the last response."""

    metrics = None

    def __init__(self):
        self.last = b""

    def sendWire(self, wire, addr):
        self.last = wire

    def peer(self, addr):
        return addr


def distinct_cluster():
    """A stanza's cluster over the synthetic cluster, synced; and its services' names."""
    from twisted.internet import task

    import kubernetai.corefile as corefile
    from kubernetai.plugins.kubernetai.cache import ClusterCache
    from kubernetai.plugins.kubernetai.config import parse_stanza
    from kubernetai.plugins.kubernetai.controller import Cluster
    from kubernetai.plugins.kubernetai.objects import (
        endpoint_slice_from_json,
        namespace_from_json,
        pod_from_json,
        service_from_json,
    )
    from kubernetai.sandbox.synthetic import generate, parse_spec

    convert = {"Namespace": ("namespaces", namespace_from_json),
               "Service": ("services", service_from_json),
               "EndpointSlice": ("endpointslices", endpoint_slice_from_json),
               "Pod": ("pods", pod_from_json)}
    found: dict = {resource: [] for resource, _ in convert.values()}
    services, headless = [], []
    for obj in generate(parse_spec(DISTINCT_SPEC)):
        kind, meta = obj["kind"], obj["metadata"]
        if kind in convert:
            resource, conv = convert[kind]
            found[resource].append(conv(obj))
        if kind == "Service":
            into = headless if obj["spec"].get("clusterIP") == "None" else services
            into.append(f"{meta['name']}.{meta['namespace']}.svc.cluster.local")
    cache = ClusterCache()
    for resource, objects in found.items():
        cache.replace(resource, objects)
    (block,) = corefile.parse("cluster.local {\nkubernetai cluster.local {\npods insecure\n}\n}\n",
                              "Corefile")
    cluster = Cluster(parse_stanza(block.directives[0], [k.zone for k in block.keys]),
                      reactor=task.Clock())
    cluster.cache = cache
    namespaces = sorted(ns.name for ns in found["namespaces"])
    return cluster, services, headless, namespaces


def distinct_main(n: int) -> None:
    import gc

    from kubernetai.core import gcpolicy
    from kubernetai.plugins.kubernetai.handler import StanzaResolver

    cluster, services, headless, namespaces = distinct_cluster()

    def pod(i: int) -> bytes:
        return (f"10-{(i >> 16) & 255}-{(i >> 8) & 255}-{i & 255}."
                f"{namespaces[i % len(namespaces)]}.pod.cluster.local").encode()

    cases = [
        ("pod A (pods insecure)", [pod(i) for i in range(n)]),
        ("NXDOMAIN (no such service)",
         [f"nope{i}.{namespaces[i % len(namespaces)]}.svc.cluster.local".encode()
          for i in range(n)]),
        ("ClusterIP service A", [name.encode() for name in services]),
        ("headless A (14 records)", [name.encode() for name in headless]),
    ]
    gc.collect()
    gc.freeze()                  # as the server does once synced (kubernetai.core.gcpolicy)
    gcpolicy.configure()
    addr = ("127.0.0.1", 53000)
    print(f"every name distinct, a kubernetai stanza ({DISTINCT_SPEC}), EDNS 1232:")
    for label, names in cases:
        datas = [query_bytes(name, True) for name in names]
        best = float("inf")
        for _ in range(3):
            factory = KubernetaiServerFactory({"cluster.local": StanzaResolver(cluster)},
                                              cache=WireCache())
            cluster.cache.memo.clear()
            cluster.cache.memo_records = 0
            proto = Proto()
            handle = factory.handleWire
            t0 = time.perf_counter()
            for data in datas:
                handle(data, proto, addr, True)
            best = min(best, (time.perf_counter() - t0) / len(datas) * 1e6)
            assert proto.last, "no response"
        print(f"  {label:30s}{best:8.1f} µs   (best of 3 over {len(datas)} names)")
    table = {}
    for i in range(n):
        name = pod(i)
        address = ".".join(name.split(b".")[0].decode().split("-"))
        table[name.lower()] = ([dns.RRHeader(name, dns.A, dns.IN, 5, dns.Record_A(address, 5),
                                             auth=True)], [], [])

    class Dict:
        def query(self, query, timeout=None):
            found = table.get(query.name.name.lower())
            if found is None:
                return defer.fail(dns.AuthoritativeDomainError(query.name.name))
            return defer.succeed(found)

    proto = dns.DNSDatagramProtocol(server.DNSServerFactory(authorities=[Dict()]))
    proto.startProtocol()
    proto.transport = Sink()
    datas = [query_bytes(pod(i), True) for i in range(n)]
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for data in datas:
            proto.datagramReceived(data, addr)
        best = min(best, (time.perf_counter() - t0) / len(datas) * 1e6)
    print(f"  {'stock twisted.names, pod A':30s}{best:8.1f} µs   (from a dict of the names)")


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 20000
    if "--distinct" in sys.argv:
        distinct_main(min(n, 20000))
        return
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
    print()
    distinct_main(min(n, 20000))


if __name__ == "__main__":
    main()
