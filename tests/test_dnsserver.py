"""Tests for kubernetai.core.dnsserver: what goes on the wire, checked against CoreDNS's rules.

End-to-end tests run a server on the session reactor thread and query it over real
UDP/TCP sockets with dnspython (or raw sockets for malformed input); unit tests drive
the protocols synchronously with StringTransport and task.Clock.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from typing import Any, Iterator

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest
from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.names import dns as tdns
from twisted.names import error as tderror
from twisted.trial.unittest import SynchronousTestCase

from kubernetai.core.codec import render
from kubernetai.core.dnsserver import KubernetaiServerFactory, block_of, listen
from kubernetai.core.negative import AuthoritativeNameError, FallThrough, Refused, ServerFailure
from kubernetai.core.pipeline import BlockPipeline, Stage
from kubernetai.core.plugin import Handler, position
from kubernetai.core.request import Request
from kubernetai.core.router import ZoneRouter, normalize_zone
from kubernetai.core.wirecache import WireCache
from kubernetai.pkg import reactor_thread
from kubernetai.plugins.log.handler import COMMON, LogHandler

ZONE = b"cluster.local"


def soa(zone: bytes = ZONE) -> tdns.RRHeader:
    return tdns.RRHeader(zone, tdns.SOA, ttl=5, auth=True, payload=tdns.Record_SOA(
        b"ns.dns." + zone, b"hostmaster." + zone, serial=1, refresh=7200, retry=1800,
        expire=86400, minimum=5))


def a(name: bytes, address: str, auth: bool = True) -> tdns.RRHeader:
    return tdns.RRHeader(name, tdns.A, ttl=5, auth=auth, payload=tdns.Record_A(address))


class ZoneResolver:
    """A small in-memory zone: fixed answers, NXDOMAIN/NODATA, and error triggers.

    Its answers depend only on the query, so, like a stanza, it lets the answer cache keep
    them (``cacheable``).
    """

    cacheable = True

    def __init__(self, zone: bytes = ZONE, tag: str = "10.0.0.1"):
        self.zone = zone
        self.tag = tag
        self.queries: list[tdns.Query] = []

    def query(self, query: tdns.Query, timeout: Any = None) -> defer.Deferred:
        self.queries.append(query)
        name = query.name.name
        low = name.lower()
        label = low[: -len(self.zone) - 1] if low != self.zone else b""
        first = label.split(b".")[0]
        if first == b"web" and query.type == tdns.A:
            return defer.succeed(([a(name, self.tag)], [], []))
        if first == b"web":
            return defer.succeed(([], [soa(self.zone)], []))          # NODATA
        if first == b"headless":
            return defer.succeed(([a(name, f"10.1.{i // 250}.{i % 250 + 1}")
                                   for i in range(500)], [], []))
        if first == b"mixed":
            ns = [tdns.RRHeader(self.zone, tdns.NS, ttl=5, auth=True,
                                payload=tdns.Record_NS(b"nameserver-%02d.example.net" % i))
                  for i in range(20)]
            glue = [a(b"nameserver-%02d.example.net" % i, f"192.0.2.{i + 1}")
                    for i in range(20)]
            return defer.succeed(([a(name, f"10.2.0.{i + 1}") for i in range(20)], ns, glue))
        if first == b"srv":
            targets = [b"10-3-%d-%d.srv.default.svc.%s" % (i // 200, i % 200, self.zone)
                       for i in range(400)]
            answers = [tdns.RRHeader(name, tdns.SRV, ttl=5, auth=True, payload=tdns.Record_SRV(
                0, 100, 80, t)) for t in targets]
            extra = [a(t, f"10.3.{i // 200}.{i % 200}") for i, t in enumerate(targets)]
            return defer.succeed((answers, [], extra))
        if first == b"servfail":
            return defer.fail(ServerFailure("backend exploded"))
        if first == b"notsynced":
            return defer.fail(ServerFailure(authority=[soa(self.zone)]))
        if first == b"refused":
            return defer.fail(Refused())
        if first == b"fall":
            return defer.fail(FallThrough())
        if first == b"domainerror":
            return defer.fail(tderror.DomainError(name))
        if first == b"upstreamservfail":
            return defer.fail(tderror.DNSServerError(name))
        if first == b"crash":
            return defer.fail(RuntimeError("resolver bug"))
        if first == b"raise":
            raise RuntimeError("synchronous resolver bug")
        if first == b"slow":
            d: defer.Deferred = defer.Deferred()
            reactor.callLater(0.4, d.callback, ([a(name, "10.9.9.9")], [], []))
            return d
        if first == b"later":
            d = defer.Deferred()
            reactor.callLater(0.05, d.callback, ([a(name, "10.9.9.8")], [], []))
            return d
        return defer.fail(AuthoritativeNameError([soa(self.zone)]))


def pipeline(resolver: Any, *handlers: Handler) -> BlockPipeline:
    """A server block: ``handlers`` (placed by their names) and ``resolver`` as its only
    answering plugin."""
    stages = [Stage(h.name, position(h.name), i, handler=h) for i, h in enumerate(handlers)]
    stages.append(Stage("kubernetai", position("kubernetai"), len(stages), resolver=resolver))
    return BlockPipeline(stages)


class Server:
    """A running KubernetaiServerFactory on 127.0.0.1 (UDP + TCP, same port).

    ``handlers`` are put in front of both zones' resolvers (each zone its own pipeline).
    """

    def __init__(self, *, handlers: tuple[Handler, ...] = (), **kwargs: Any):
        self.host = kwargs.pop("host", "127.0.0.1")
        self.main = ZoneResolver()
        self.sub = ZoneResolver(b"sub." + ZONE, tag="10.0.0.2")
        self.errors: list[str] = []
        kwargs.setdefault("on_error", self.errors.append)
        zones: dict[str, Any] = {"cluster.local.": self.main, "Sub.Cluster.Local": self.sub}
        if handlers:
            zones = {zone: pipeline(resolver, *handlers) for zone, resolver in zones.items()}
        self.factory = KubernetaiServerFactory(zones, **kwargs)
        self.ports = reactor_thread.in_reactor(listen, self.factory, self.host, 0)
        self.port = self.ports[0].getHost().port

    def stop(self) -> None:
        reactor_thread.in_reactor(
            lambda: defer.gatherResults([defer.maybeDeferred(p.stopListening)
                                         for p in self.ports]))

    # -- clients --

    def udp(self, name: str, rdtype: str = "A", **kw: Any) -> dns.message.Message:
        q = dns.message.make_query(name, rdtype, **kw)
        return dns.query.udp(q, self.host, port=self.port, timeout=3)

    def tcp(self, name: str, rdtype: str = "A", **kw: Any) -> dns.message.Message:
        q = dns.message.make_query(name, rdtype, **kw)
        return dns.query.tcp(q, self.host, port=self.port, timeout=5)

    def raw_udp(self, data: bytes, timeout: float = 1.0) -> bytes | None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(data, (self.host, self.port))
            try:
                return s.recvfrom(70000)[0]
            except socket.timeout:
                return None

    def tcp_socket(self) -> socket.socket:
        s = socket.create_connection((self.host, self.port), timeout=5)
        return s


def recv_exact(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out


def recv_tcp_message(s: socket.socket) -> bytes:
    (length,) = struct.unpack("!H", recv_exact(s, 2))
    return recv_exact(s, length)


def counts(wire: bytes) -> tuple[int, int, int, int]:
    return struct.unpack("!4H", wire[4:12])


def records(rrsets: list) -> int:
    return sum(len(r) for r in rrsets)


@pytest.fixture
def server(reactor_running: None) -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.stop()


# ---------------------------------------------------------------------------------------
# Routing


def test_longest_zone_match(server: Server) -> None:
    """A name under two zones goes to the longer one's resolver."""
    assert server.udp("web.sub.cluster.local").answer[0][0].address == "10.0.0.2"
    assert server.udp("web.default.cluster.local").answer[0][0].address == "10.0.0.1"


def test_zone_match_case_insensitive_question_echoed(server: Server) -> None:
    """Zone matching ignores case; the question comes back exactly as sent."""
    q = dns.message.make_query("WEB.Sub.CLUSTER.local", "A")
    wire = server.raw_udp(q.to_wire())
    assert wire is not None
    assert q.to_wire()[12:] in wire            # question bytes, case preserved
    r = dns.message.from_wire(wire)
    assert r.question[0].name.to_text() == "WEB.Sub.CLUSTER.local."
    assert r.answer[0][0].address == "10.0.0.2"
    assert server.sub.queries[-1].name.name == b"WEB.Sub.CLUSTER.local"


def test_no_matching_zone_refused(server: Server) -> None:
    """A name outside every zone is REFUSED, without AA, question echoed."""
    r = server.udp("www.example.org")
    assert r.rcode() == dns.rcode.REFUSED
    assert not r.flags & dns.flags.AA
    assert r.question[0].name.to_text() == "www.example.org."


def test_non_in_class_refused(server: Server) -> None:
    """A CH-class query is REFUSED (CoreDNS without the chaos plugin)."""
    r = server.udp("web.cluster.local", "TXT", rdclass=dns.rdataclass.CH)
    assert r.rcode() == dns.rcode.REFUSED


def test_class_checked_before_edns_version(server: Server) -> None:
    """A CH query with EDNS version 1 is REFUSED (class first), with an OPT."""
    r = server.udp("web.cluster.local", "TXT", rdclass=dns.rdataclass.CH, use_edns=1)
    assert r.rcode() == dns.rcode.REFUSED and r.edns == 0


def test_only_first_question_qdcount_two_formerr(server: Server) -> None:
    """QDCOUNT 2 gets FORMERR with the ID echoed and no question."""
    q = dns.message.make_query("web.cluster.local", "A")
    wire = bytearray(q.to_wire())
    question = bytes(wire[12:])
    wire[4:6] = struct.pack("!H", 2)
    resp = server.raw_udp(bytes(wire) + question)
    assert resp is not None
    r = dns.message.from_wire(resp)
    assert r.id == q.id and r.rcode() == dns.rcode.FORMERR and not r.question


def test_qdcount_zero_formerr(server: Server) -> None:
    """QDCOUNT 0 gets FORMERR."""
    resp = server.raw_udp(struct.pack("!HBBHHHH", 777, 1, 0, 0, 0, 0, 0))
    assert resp is not None
    r = dns.message.from_wire(resp)
    assert r.id == 777 and r.rcode() == dns.rcode.FORMERR


# ---------------------------------------------------------------------------------------
# Flags and sections


def test_answer_flags_aa_rd_no_ra(server: Server) -> None:
    """An authoritative answer has QR+AA, RD echoed, RA clear."""
    r = server.udp("web.cluster.local")
    assert r.rcode() == dns.rcode.NOERROR
    assert r.flags & dns.flags.QR and r.flags & dns.flags.AA and r.flags & dns.flags.RD
    assert not r.flags & dns.flags.RA
    assert r.answer[0][0].address == "10.0.0.1"


def test_rd_clear_is_echoed_clear(server: Server) -> None:
    """A query without RD gets a response without RD; CD is echoed."""
    q = dns.message.make_query("web.cluster.local", "A")
    q.flags &= ~dns.flags.RD
    q.flags |= dns.flags.CD
    r = dns.query.udp(q, server.host, port=server.port, timeout=3)
    assert not r.flags & dns.flags.RD
    assert r.flags & dns.flags.CD


def test_non_authoritative_answer_no_aa(reactor_running: None) -> None:
    """Records with auth=False do not set AA."""
    class Plain:
        def query(self, q: tdns.Query, timeout: Any = None) -> defer.Deferred:
            return defer.succeed(([a(q.name.name, "192.0.2.1", auth=False)], [], []))
    srv = Server()
    srv.factory.router = ZoneRouter({"example.org": block_of(Plain())})
    try:
        r = srv.udp("www.example.org")
        assert r.rcode() == dns.rcode.NOERROR and not r.flags & dns.flags.AA
    finally:
        srv.stop()


def test_nodata_has_aa_and_soa(server: Server) -> None:
    """NODATA (no answers, SOA in authority) is NOERROR with AA (unlike stock Twisted)."""
    r = server.udp("web.cluster.local", "AAAA")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    assert r.flags & dns.flags.AA
    assert r.authority[0].rdtype == dns.rdatatype.SOA


def test_nxdomain_has_aa_and_soa(server: Server) -> None:
    """AuthoritativeNameError → NXDOMAIN with AA and the zone SOA."""
    r = server.udp("nothing.default.svc.cluster.local", use_edns=0)
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert r.flags & dns.flags.AA
    assert r.authority[0].rdtype == dns.rdatatype.SOA
    assert r.authority[0].name.to_text() == "cluster.local."


def test_plain_domain_error_nxdomain_without_aa(server: Server) -> None:
    """A plain DomainError from another resolver is a bare NXDOMAIN (stock behaviour)."""
    r = server.udp("domainerror.cluster.local")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert not r.flags & dns.flags.AA and not r.authority


def test_upstream_servfail_stays_servfail(server: Server) -> None:
    """DNSServerError (an upstream SERVFAIL) is answered SERVFAIL, not NXDOMAIN."""
    assert server.udp("upstreamservfail.cluster.local").rcode() == dns.rcode.SERVFAIL


def test_fallthrough_at_top_servfail_and_log(server: Server) -> None:
    """FallThrough reaching the server → SERVFAIL and 'no next plugin found' logged."""
    r = server.udp("fall.cluster.local")
    assert r.rcode() == dns.rcode.SERVFAIL and not r.flags & dns.flags.AA
    assert server.errors == ["2 fall.cluster.local. A: plugin/kubernetai: no next plugin found"]


def test_server_failure_logged(server: Server) -> None:
    """ServerFailure with a message → SERVFAIL and an errors-plugin line."""
    r = server.udp("servfail.cluster.local", "SRV")
    assert r.rcode() == dns.rcode.SERVFAIL and not r.authority
    assert server.errors == ["2 servfail.cluster.local. SRV: backend exploded"]


def test_server_failure_with_soa(server: Server) -> None:
    """ServerFailure with authority → SERVFAIL + AA + SOA (BackendError), no log line."""
    r = server.udp("notsynced.cluster.local")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert r.flags & dns.flags.AA and r.authority[0].rdtype == dns.rdatatype.SOA
    assert server.errors == []


def test_refused_from_resolver(server: Server) -> None:
    """Refused from a resolver → REFUSED."""
    r = server.udp("refused.cluster.local", "AXFR")
    assert r.rcode() == dns.rcode.REFUSED


def test_unexpected_exception_servfail_logged(server: Server) -> None:
    """Any other exception (async or raised by query()) → SERVFAIL and a logged failure."""
    seen: list[dict] = []

    def observer(event: dict) -> None:
        if event.get("log_failure") is not None:
            seen.append(event)
    globalLogPublisher.addObserver(observer)
    try:
        assert server.udp("crash.cluster.local").rcode() == dns.rcode.SERVFAIL
        assert server.udp("raise.cluster.local").rcode() == dns.rcode.SERVFAIL
        assert server.udp("web.cluster.local").rcode() == dns.rcode.NOERROR
    finally:
        globalLogPublisher.removeObserver(observer)
    assert len(seen) == 2
    assert seen[0]["log_failure"].check(RuntimeError)


# ---------------------------------------------------------------------------------------
# EDNS0


def test_edns_opt_echoed(server: Server) -> None:
    """With OPT in the query: OPT in the response, version 0, the client's size, DO echoed."""
    r = server.udp("web.cluster.local", use_edns=0, payload=1400, want_dnssec=True)
    assert r.edns == 0 and r.payload == 1400
    assert r.ednsflags & dns.flags.DO
    r = server.udp("web.cluster.local", use_edns=0, payload=4096)
    assert r.edns == 0 and r.payload == 4096 and not r.ednsflags & dns.flags.DO


def test_edns_only_supported_options_echoed(server: Server) -> None:
    """NSID and COOKIE come back as sent; an unknown option is dropped (SizeAndDo)."""
    options = [dns.edns.GenericOption(3, b""), dns.edns.GenericOption(65001, b"xyz"),
               dns.edns.GenericOption(10, b"\x01\x02\x03\x04\x05\x06\x07\x08")]
    r = server.udp("web.cluster.local", use_edns=0, options=options)
    assert sorted(o.otype for o in r.options) == [3, 10]


def test_no_edns_no_opt(server: Server) -> None:
    """Without OPT in the query there is none in the response, errors included."""
    assert server.udp("web.cluster.local").edns == -1
    assert server.udp("x.example.org").edns == -1
    assert server.udp("nothing.cluster.local").edns == -1


def test_edns_on_error_responses(server: Server) -> None:
    """REFUSED and SERVFAIL carry the OPT too (errorFunc calls SizeAndDo)."""
    assert server.udp("x.example.org", use_edns=0).edns == 0
    assert server.udp("fall.cluster.local", use_edns=0).edns == 0


def test_edns_version_1_badvers(server: Server) -> None:
    """EDNS version 1 gets BADVERS with a version-0 OPT, no answer."""
    r = server.udp("web.cluster.local", use_edns=1)
    assert r.rcode() == dns.rcode.BADVERS
    assert r.edns == 0 and not r.answer
    assert server.main.queries == []


# ---------------------------------------------------------------------------------------
# Truncation


def _check_truncated(wire: bytes, limit: int) -> dns.message.Message:
    assert len(wire) <= limit
    r = dns.message.from_wire(wire)               # parses: no record cut in half
    assert r.flags & dns.flags.TC
    an, ns, ar = counts(wire)[1:]
    assert an == records(r.answer) and an > 0
    return r


def test_truncation_512_without_edns(server: Server) -> None:
    """500 A records over UDP without EDNS: ≤512 bytes, whole records, TC set."""
    q = dns.message.make_query("headless.default.svc.cluster.local", "A")
    wire = server.raw_udp(q.to_wire())
    assert wire is not None
    r = _check_truncated(wire, 512)
    assert records(r.answer) == (512 - 12 - 40) // 16     # compressed A records that fit
    assert r.answer[0][0].address == "10.1.0.1"          # the first records are kept


def test_truncation_to_edns_size(server: Server) -> None:
    """With EDNS the client's size is the limit (and sizes under 512 count as 512)."""
    for payload, limit in ((1232, 1232), (4096, 4096), (100, 512)):
        q = dns.message.make_query("headless.default.svc.cluster.local", "A", use_edns=0,
                                   payload=payload)
        wire = server.raw_udp(q.to_wire())
        assert wire is not None
        r = _check_truncated(wire, limit)
        assert len(wire) > limit - 16
        assert r.edns == 0 and r.payload == payload


def test_bufsize_clamps_edns_size(reactor_running: None) -> None:
    """bufsize= clamps the advertised size, like CoreDNS's bufsize plugin."""
    srv = Server(bufsize=1232)
    try:
        q = dns.message.make_query("headless.default.svc.cluster.local", "A", use_edns=0,
                                   payload=4096)
        wire = srv.raw_udp(q.to_wire())
        assert wire is not None
        r = _check_truncated(wire, 1232)
        assert r.payload == 1232
    finally:
        srv.stop()


def test_truncation_drops_additional_then_authority(server: Server) -> None:
    """Truncation keeps a prefix: answers before authority before additional."""
    for payload in (None, 600, 750, 900):
        kw = {"use_edns": 0, "payload": payload} if payload else {}
        q = dns.message.make_query("mixed.cluster.local", "A", **kw)
        wire = server.raw_udp(q.to_wire())
        assert wire is not None
        _, an, ns, ar = counts(wire)
        ar -= 1 if payload else 0
        r = dns.message.from_wire(wire)
        assert r.flags & dns.flags.TC
        assert an <= 20 and ns <= 20 and ar <= 20
        assert ns == 0 or an == 20
        assert ar == 0 or ns == 20
    q = dns.message.make_query("mixed.cluster.local", "A", use_edns=0, payload=4096)
    wire = server.raw_udp(q.to_wire())
    assert wire is not None and counts(wire)[1:] == (20, 20, 21)
    assert not dns.message.from_wire(wire).flags & dns.flags.TC


def test_tcp_not_truncated(server: Server) -> None:
    """Over TCP the 500-record answer comes whole, without TC."""
    r = server.tcp("headless.default.svc.cluster.local")
    assert not r.flags & dns.flags.TC
    assert records(r.answer) == 500


def test_tcp_large_answer_compression_pointers(server: Server) -> None:
    """A >16 KiB TCP answer (400 SRV + 400 glue) parses: no pointer past 0x3FFF."""
    r = server.tcp("srv.default.svc.cluster.local", "SRV")
    assert not r.flags & dns.flags.TC
    assert records(r.answer) == 400 and records(r.additional) == 400
    targets = {rr.target.to_text() for rr in r.answer[0]}
    assert {rrset.name.to_text() for rrset in r.additional} == targets


# ---------------------------------------------------------------------------------------
# Malformed input


def test_garbage_shorter_than_header_dropped(server: Server) -> None:
    """Fewer than 12 bytes: no reply, and the server keeps answering."""
    assert server.raw_udp(b"\x01\x02\x03", timeout=0.3) is None
    assert server.udp("web.cluster.local").rcode() == dns.rcode.NOERROR


def test_header_with_garbage_formerr(server: Server) -> None:
    """A valid header followed by junk gets FORMERR with the ID echoed."""
    resp = server.raw_udp(struct.pack("!HBBHHHH", 4242, 1, 0, 1, 0, 0, 0) + b"\x3fabc")
    assert resp is not None
    r = dns.message.from_wire(resp)
    assert r.id == 4242 and r.rcode() == dns.rcode.FORMERR and r.flags & dns.flags.QR


def test_bad_opt_formerr_keeps_question(server: Server) -> None:
    """A broken EDNS option gets FORMERR that still carries the (parsed) question."""
    q = dns.message.make_query("web.cluster.local", "A")
    wire = bytearray(q.to_wire())
    wire[10:12] = struct.pack("!H", 1)
    opt = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 6) + struct.pack("!HH", 3, 200) + b"xx"
    resp = server.raw_udp(bytes(wire) + opt)
    assert resp is not None
    r = dns.message.from_wire(resp)
    assert r.rcode() == dns.rcode.FORMERR
    assert r.question[0].name.to_text() == "web.cluster.local."


def test_response_packet_dropped(server: Server) -> None:
    """A packet with QR=1 gets no reply (no reflection loops)."""
    q = dns.message.make_query("web.cluster.local", "A")
    q.flags |= dns.flags.QR
    assert server.raw_udp(q.to_wire(), timeout=0.3) is None


def test_other_opcodes_notimp(server: Server) -> None:
    """STATUS and NOTIFY get NOTIMP with the opcode and ID echoed."""
    for opcode in (dns.opcode.STATUS, dns.opcode.NOTIFY, dns.opcode.UPDATE):
        q = dns.message.make_query("web.cluster.local", "SOA")
        q.set_opcode(opcode)
        resp = server.raw_udp(q.to_wire())
        assert resp is not None
        r = dns.message.from_wire(resp)
        assert r.id == q.id and r.rcode() == dns.rcode.NOTIMP and r.opcode() == opcode


def test_bare_header_servfail(server: Server) -> None:
    """A 12-byte header claiming one question gets SERVFAIL, as CoreDNS answers it."""
    resp = server.raw_udp(struct.pack("!HBBHHHH", 99, 1, 0, 1, 0, 0, 0))
    assert resp is not None
    r = dns.message.from_wire(resp)
    assert r.id == 99 and r.rcode() == dns.rcode.SERVFAIL and r.flags & dns.flags.RD


def test_random_garbage_never_breaks_server(server: Server) -> None:
    """A burst of random datagrams gets at most FORMERR-type replies; the server lives."""
    rng = random.Random(1234)
    family = socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        for _ in range(300):
            size = rng.randrange(0, 80)
            s.sendto(bytes(rng.randrange(256) for _ in range(size)), (server.host, server.port))
    time.sleep(0.2)
    assert server.udp("web.cluster.local").rcode() == dns.rcode.NOERROR


# ---------------------------------------------------------------------------------------
# TCP


def test_tcp_several_queries_one_connection(server: Server) -> None:
    """Sequential queries on one TCP connection are all answered."""
    with server.tcp_socket() as s:
        for name in ["web.cluster.local", "web.sub.cluster.local", "zz.cluster.local"]:
            q = dns.message.make_query(name, "A")
            dns.query.send_tcp(s, q)
            r, _ = dns.query.receive_tcp(s)
            assert r.id == q.id
        assert r.rcode() == dns.rcode.NXDOMAIN


def test_tcp_pipelined_out_of_order(server: Server) -> None:
    """Pipelined queries are answered as each completes: the fast one overtakes."""
    slow = dns.message.make_query("slow.cluster.local", "A")
    fast = dns.message.make_query("web.cluster.local", "A")
    payload = b"".join(struct.pack("!H", len(w)) + w for w in (slow.to_wire(), fast.to_wire()))
    with server.tcp_socket() as s:
        s.sendall(payload)
        first = dns.message.from_wire(recv_tcp_message(s))
        second = dns.message.from_wire(recv_tcp_message(s))
    assert first.id == fast.id and second.id == slow.id
    assert second.answer[0][0].address == "10.9.9.9"


def test_tcp_pipelined_burst_answered_in_order_then_closed(server: Server) -> None:
    """Hundreds of queries in one send, then a half-close: every one is answered (the
    answers made together are written together, in order), then the server closes."""
    names = ["web.cluster.local", "nope.cluster.local", "web.sub.cluster.local",
             "headless.cluster.local"]
    queries = [dns.message.make_query(names[i % len(names)], "A", id=i + 1)
               for i in range(120)]
    payload = b"".join(struct.pack("!H", len(w)) + w for w in (q.to_wire() for q in queries))
    with server.tcp_socket() as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        answers = [dns.message.from_wire(recv_tcp_message(s)) for _ in queries]
        s.settimeout(3)
        assert s.recv(10) == b""
    assert [r.id for r in answers] == [q.id for q in queries]
    assert [r.rcode() for r in answers[:4]] == [dns.rcode.NOERROR, dns.rcode.NXDOMAIN,
                                                dns.rcode.NOERROR, dns.rcode.NOERROR]
    assert all(len(r.answer[0]) == 500 for r in answers[3::4])


def test_tcp_message_split_across_segments(server: Server) -> None:
    """A length-prefixed message arriving byte by byte is reassembled."""
    q = dns.message.make_query("web.cluster.local", "A").to_wire()
    framed = struct.pack("!H", len(q)) + q
    with server.tcp_socket() as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(framed)):
            s.sendall(framed[i:i + 1])
            time.sleep(0.002)
        r = dns.message.from_wire(recv_tcp_message(s))
    assert r.answer[0][0].address == "10.0.0.1"


def test_tcp_malformed_formerr_then_short_closes(server: Server) -> None:
    """Over TCP a junk body gets FORMERR; a message shorter than a header closes."""
    with server.tcp_socket() as s:
        bad = struct.pack("!HBBHHHH", 31337, 1, 0, 1, 0, 0, 0) + b"\xc0"
        s.sendall(struct.pack("!H", len(bad)) + bad)
        r = dns.message.from_wire(recv_tcp_message(s))
        assert r.id == 31337 and r.rcode() == dns.rcode.FORMERR
        s.sendall(b"\x00\x03abc")
        s.settimeout(3)
        assert s.recv(10) == b""


def test_tcp_half_close_still_answered(server: Server) -> None:
    """A client that sends, then shuts down its write side, still gets a slow answer."""
    q = dns.message.make_query("later.cluster.local", "A")
    with server.tcp_socket() as s:
        dns.query.send_tcp(s, q)
        s.shutdown(socket.SHUT_WR)
        r = dns.message.from_wire(recv_tcp_message(s))
        assert r.id == q.id and r.answer[0][0].address == "10.9.9.8"
        s.settimeout(3)
        assert s.recv(10) == b""


def test_tcp_idle_timeout_real(reactor_running: None) -> None:
    """An idle TCP connection is closed after tcp_idle_timeout seconds."""
    srv = Server(tcp_idle_timeout=0.3)
    try:
        with srv.tcp_socket() as s:
            q = dns.message.make_query("web.cluster.local", "A")
            dns.query.send_tcp(s, q)
            dns.query.receive_tcp(s)
            start = time.monotonic()
            s.settimeout(5)
            assert s.recv(10) == b""
            assert 0.2 < time.monotonic() - start < 3
    finally:
        srv.stop()


def test_ipv6_loopback(reactor_running: None) -> None:
    """The server answers on ::1 over UDP and TCP."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        srv = Server(host="::1")
    except Exception as exc:          # noqa: BLE001 - no ::1 on this host
        pytest.skip(f"cannot bind ::1: {exc}")
    try:
        assert srv.udp("web.cluster.local").answer[0][0].address == "10.0.0.1"
        assert srv.tcp("web.cluster.local").answer[0][0].address == "10.0.0.1"
    finally:
        srv.stop()


# ---------------------------------------------------------------------------------------
# Logging hook


def test_log_queries_common_format(reactor_running: None) -> None:
    """The log plugin's step writes one line per answered query, in CoreDNS's format."""
    logged: list[str] = []
    srv = Server(handlers=(LogHandler((".",), COMMON, frozenset({"all"}), logged.append),))
    try:
        q = dns.message.make_query("web.cluster.local", "A", use_edns=0, payload=1232)
        dns.query.udp(q, srv.host, port=srv.port, timeout=3)
        deadline = time.monotonic() + 2
        while not logged and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        srv.stop()
    assert len(logged) == 1
    entry = logged[0]
    assert entry.startswith("[INFO] ")
    line = entry[len("[INFO] "):]
    assert line.startswith("127.0.0.1:")
    assert f' - {q.id} "A IN web.cluster.local. udp {len(q.to_wire())} false 1232" NOERROR qr,aa,rd ' in line
    assert line.endswith("s")


# ---------------------------------------------------------------------------------------
# Unit tests (synchronous)


def _query_wire(name: str = "web.cluster.local", rdtype: str = "A", **kw: Any) -> bytes:
    return dns.message.make_query(name, rdtype, **kw).to_wire()


class Collector:
    """A stand-in protocol for handleWire: keeps what would have been sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendWire(self, wire: bytes, addr: Any) -> None:
        self.sent.append(wire)

    def peer(self, addr: Any) -> tuple[str, int]:
        return "127.0.0.1", 5353


class ParsingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.factory = KubernetaiServerFactory({"cluster.local": ZoneResolver()})

    def test_parse_plain_query(self) -> None:
        """A plain query parses into name, type, class, RD and a 512-byte UDP limit."""
        req = self.factory.parseRequest(_query_wire("Web.Cluster.Local", "SRV"), True)
        assert isinstance(req, Request)
        self.assertEqual((req.qname, req.lname, req.qtype, req.qclass),
                         (b"Web.Cluster.Local", b"web.cluster.local", 33, 1))
        self.assertEqual((req.rd, req.edns, req.limit, req.opt), (1, False, 512, b""))

    def test_parse_tcp_limit(self) -> None:
        """Over TCP the limit is 65535 whatever the OPT says."""
        req = self.factory.parseRequest(_query_wire(use_edns=0, payload=1232), False)
        assert isinstance(req, Request)
        self.assertEqual(req.limit, 65535)

    def test_parse_root_query(self) -> None:
        """The root name parses as b''."""
        req = self.factory.parseRequest(_query_wire(".", "NS"), True)
        assert isinstance(req, Request)
        self.assertEqual(req.qname, b"")

    def test_random_bytes_never_raise(self) -> None:
        """parseRequest returns None, bytes or a Request for any input."""
        rng = random.Random(99)
        base = _query_wire(use_edns=0, options=[dns.edns.GenericOption(10, b"12345678")])
        for _ in range(3000):
            data = bytearray(base)
            for _ in range(rng.randrange(1, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = data[: rng.randrange(len(data) + 1)]
            out = self.factory.parseRequest(bytes(data), True)
            assert out is None or isinstance(out, (bytes, Request))
            if isinstance(out, bytes):
                dns.message.from_wire(out)

    def test_compression_loop_formerr(self) -> None:
        """A question name pointing at itself is FORMERR, not a hang."""
        data = struct.pack("!HBBHHHH", 5, 0, 0, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01"
        out = self.factory.parseRequest(data, True)
        assert isinstance(out, bytes)
        self.assertEqual(out[3] & 0xF, 1)

    def test_exception_never_escapes_handlewire(self) -> None:
        """A resolver raising synchronously still produces SERVFAIL, nothing propagates."""
        out = Collector()
        self.factory.handleWire(_query_wire("raise.cluster.local"), out, None, True)
        self.assertEqual(dns.message.from_wire(out.sent[0]).rcode(), dns.rcode.SERVFAIL)
        self.flushLoggedErrors(RuntimeError)


class RouterTests(SynchronousTestCase):
    def test_longest_match_and_root(self) -> None:
        """Longest suffix wins; the root zone catches the rest; no root → None."""
        r = ZoneRouter({"cluster.local": "c", "sub.cluster.local": "s", ".": "root"})
        self.assertEqual(r.route(b"x.sub.cluster.local"), "s")
        self.assertEqual(r.route(b"sub.cluster.local"), "s")
        self.assertEqual(r.route(b"x.cluster.local"), "c")
        self.assertEqual(r.route(b"example.org"), "root")
        self.assertEqual(r.route(b""), "root")
        self.assertIsNone(ZoneRouter({"cluster.local": "c"}).route(b"local"))
        self.assertIsNone(ZoneRouter({"cluster.local": "c"}).route(b"xcluster.local"))

    def test_ds_goes_to_parent(self) -> None:
        """DS queries go to the parent-most matching zone (CoreDNS dshandler)."""
        r = ZoneRouter({"cluster.local": "c", "sub.cluster.local": "s"})
        self.assertEqual(r.route(b"sub.cluster.local", 43), "c")
        self.assertEqual(r.route(b"sub.cluster.local", 1), "s")

    def test_normalize_zone(self) -> None:
        """Zones are lower-cased, without trailing dot, root as b''."""
        self.assertEqual(normalize_zone("Cluster.Local."), b"cluster.local")
        self.assertEqual(normalize_zone("."), b"")
        self.assertEqual(normalize_zone(b"a.B"), b"a.b")

    def test_router_as_resolver(self) -> None:
        """ZoneRouter.query delegates, or fails with Refused outside its zones."""
        r = ZoneRouter({"cluster.local": ZoneResolver()})
        res = self.successResultOf(r.query(tdns.Query(b"web.cluster.local")))
        self.assertEqual(res[0][0].payload.dottedQuad(), "10.0.0.1")
        self.failureResultOf(r.query(tdns.Query(b"web.example.org")), Refused)


class RenderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.factory = KubernetaiServerFactory({"cluster.local": ZoneResolver()})

    def test_truncation_boundaries(self) -> None:
        """For every UDP size the response fits, parses and holds a prefix of records."""
        many = [a(b"headless.cluster.local", f"10.0.{i // 256}.{i % 256}") for i in range(60)]
        for payload in range(512, 1400, 7):
            req = self.factory.parseRequest(_query_wire("headless.cluster.local",
                                                        use_edns=0, payload=payload), True)
            assert isinstance(req, Request)
            wire = render(req, 0, True, many)
            self.assertLessEqual(len(wire), payload)
            r = dns.message.from_wire(wire)
            kept = records(r.answer)
            self.assertEqual(bool(r.flags & dns.flags.TC), kept < 60)
            self.assertGreater(len(wire) + 16, min(payload, len(wire) + 16 * (60 - kept)))

    def test_wire_cache_key_and_patching(self) -> None:
        """The answer cache keys on (qname as sent, qtype, qclass); hits are patched."""
        resolver = ZoneResolver()
        cache = WireCache()
        factory = KubernetaiServerFactory({"cluster.local": resolver}, cache=cache)
        out = Collector()
        q1 = dns.message.make_query("web.cluster.local", "A")
        q2 = dns.message.make_query("web.cluster.local", "A")
        q2.flags &= ~dns.flags.RD
        q3 = dns.message.make_query("WEB.cluster.LOCAL", "A")
        factory.handleWire(q1.to_wire(), out, None, True)
        factory.handleWire(q2.to_wire(), out, None, True)
        self.assertEqual(len(resolver.queries), 1)
        self.assertEqual([key[:3] for key in cache.entries], [(b"web.cluster.local", 1, 1)])
        r2 = dns.message.from_wire(out.sent[1])
        self.assertEqual(r2.id, q2.id)
        self.assertFalse(r2.flags & dns.flags.RD)
        self.assertTrue(r2.flags & dns.flags.AA)
        self.assertEqual(r2.answer[0][0].address, "10.0.0.1")
        factory.handleWire(q3.to_wire(), out, None, True)  # other case: its own entry
        self.assertEqual(len(resolver.queries), 2)
        r3 = dns.message.from_wire(out.sent[2])
        self.assertEqual(r3.question[0].name.to_text(), "WEB.cluster.LOCAL.")

    def test_stock_protocol_compat(self) -> None:
        """Stock dns.DNSDatagramProtocol driving this factory gets the same answers."""
        proto = tdns.DNSDatagramProtocol(self.factory)
        proto.startProtocol()
        sent: list[bytes] = []

        class T:
            def write(self, data: bytes, addr: Any = None) -> None:
                sent.append(data)
        proto.transport = T()  # type: ignore[assignment]
        proto.datagramReceived(_query_wire("nothing.cluster.local", use_edns=0),
                               ("127.0.0.1", 5000))
        r = dns.message.from_wire(sent[0])
        self.assertEqual(r.rcode(), dns.rcode.NXDOMAIN)
        self.assertTrue(r.flags & dns.flags.AA)
        self.assertEqual(r.edns, 0)


class StreamProtocolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.pending: list[defer.Deferred] = []

        class Pending:
            def query(inner, q: tdns.Query, timeout: Any = None) -> defer.Deferred:
                d: defer.Deferred = defer.Deferred()
                self.pending.append(d)
                return d
        self.factory = KubernetaiServerFactory(
            {"cluster.local": ZoneResolver(), "pending.test": Pending()},
            reactor=self.clock, tcp_idle_timeout=10, tcp_read_timeout=3)
        self.proto = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)

    def send(self, wire: bytes) -> None:
        self.proto.dataReceived(struct.pack("!H", len(wire)) + wire)

    def responses(self) -> list[dns.message.Message]:
        data = self.transport.value()
        out = []
        while data:
            (n,) = struct.unpack("!H", data[:2])
            out.append(dns.message.from_wire(data[2:2 + n]))
            data = data[2 + n:]
        return out

    def test_first_query_within_read_timeout(self) -> None:
        """No whole first query within tcp_read_timeout (CoreDNS: 3 s) → closed."""
        self.clock.advance(2.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(self.transport.disconnecting)

    def test_dribbled_bytes_do_not_keep_it_open(self) -> None:
        """Part of a query, a byte at a time, does not restart the timer."""
        wire = struct.pack("!H", 40) + _query_wire()[:20]
        for byte in wire:
            self.proto.dataReceived(bytes([byte]))
            self.clock.advance(0.1)
        self.clock.advance(3 - 0.1 * len(wire) + 0.1)
        self.assertTrue(self.transport.disconnecting)

    def test_query_resets_idle_timer(self) -> None:
        """After a query, the idle timeout (10 s) applies; each query restarts it."""
        self.clock.advance(2)
        self.send(_query_wire())
        self.clock.advance(9.9)
        self.assertFalse(self.transport.disconnecting)
        self.send(_query_wire())
        self.clock.advance(9.9)
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(len(self.responses()), 2)
        self.clock.advance(0.2)
        self.assertTrue(self.transport.disconnecting)

    def test_outstanding_query_keeps_connection(self) -> None:
        """While an answer is outstanding the idle timer does not close the connection."""
        self.send(_query_wire("a.pending.test"))
        self.clock.advance(25)
        self.assertFalse(self.transport.disconnecting)
        self.pending[0].callback(([a(b"a.pending.test", "192.0.2.7")], [], []))
        self.assertEqual(self.responses()[0].answer[0][0].address, "192.0.2.7")
        self.clock.advance(10.1)
        self.assertTrue(self.transport.disconnecting)

    def test_pipelined_answers_in_completion_order(self) -> None:
        """Two pipelined queries: the one resolved first is written first."""
        q1 = dns.message.make_query("one.pending.test", "A")
        q2 = dns.message.make_query("two.pending.test", "A")
        wire = b"".join(struct.pack("!H", len(w)) + w for w in (q1.to_wire(), q2.to_wire()))
        self.proto.dataReceived(wire)
        self.pending[1].callback(([a(b"two.pending.test", "192.0.2.2")], [], []))
        self.pending[0].callback(([a(b"one.pending.test", "192.0.2.1")], [], []))
        self.assertEqual([r.id for r in self.responses()], [q2.id, q1.id])

    def test_answer_after_disconnect_is_dropped(self) -> None:
        """An answer for a closed connection is discarded without error."""
        self.send(_query_wire("x.pending.test"))
        self.proto.connectionLost(Exception("gone"))  # type: ignore[arg-type]
        self.pending[0].callback(([], [], []))
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(len(self.factory.tcpConnections), 0)

    def test_short_message_closes(self) -> None:
        """A length-prefixed message shorter than 12 bytes closes the connection."""
        self.proto.dataReceived(b"\x00\x02ab")
        self.assertTrue(self.transport.disconnecting)

    def test_write_backpressure_pauses_reading(self) -> None:
        """When the transport's write buffer is full, reading from the socket pauses."""
        self.assertIs(self.transport.producer, self.proto)
        self.proto.pauseProducing()
        self.assertEqual(self.transport.producerState, "paused")
        self.proto.resumeProducing()
        self.assertEqual(self.transport.producerState, "producing")

    def test_too_many_outstanding_pauses_reading(self) -> None:
        """Reading pauses at maxOutstanding unanswered queries and resumes as they drain."""
        self.proto.maxOutstanding = 2
        self.send(_query_wire("one.pending.test"))
        self.assertEqual(self.transport.producerState, "producing")
        self.send(_query_wire("two.pending.test"))
        self.assertEqual(self.transport.producerState, "paused")
        self.pending[0].callback(([], [], []))
        self.pending[1].callback(([], [], []))
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(len(self.responses()), 2)

    def test_queries_wait_while_answers_pile_up_unread(self) -> None:
        """Paused by a full write buffer, buffered queries wait; resumed, they are answered."""
        self.proto.pauseProducing()
        wire = b"".join(struct.pack("!H", len(q)) + q for q in [_query_wire()] * 10)
        self.proto.dataReceived(wire)
        self.assertEqual(self.responses(), [])
        self.proto.resumeProducing()
        self.assertEqual(len(self.responses()), 10)

    def test_outstanding_cap_holds_within_one_read(self) -> None:
        """One read of many pipelined queries starts at most maxOutstanding of them."""
        self.proto.maxOutstanding = 3
        wire = b"".join(struct.pack("!H", len(q)) + q
                        for q in [_query_wire(f"q{i}.pending.test") for i in range(10)])
        self.proto.dataReceived(wire)
        self.assertEqual(len(self.pending), 3)
        for d in list(self.pending):
            d.callback(([], [], []))
        self.assertGreater(len(self.pending), 3)

    def test_closing_connection_is_aborted_after_the_write_timeout(self) -> None:
        """A client that never reads cannot keep a closing connection open."""
        aborted = []
        self.transport.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
        self.clock.advance(3.1)
        self.assertTrue(self.transport.disconnecting)
        self.clock.advance(self.proto.writeTimeout)
        self.assertEqual(aborted, [True])

    def test_idle_close_unregisters_producer(self) -> None:
        """The idle close unregisters the producer so loseConnection takes effect."""
        self.clock.advance(10.1)
        self.assertTrue(self.transport.disconnecting)
        self.assertIsNone(self.transport.producer)


class HitShortcutTests(SynchronousTestCase):
    """A repeated request answered early (a cache hit) skips the parser and the router."""

    def setUp(self) -> None:
        self.resolver = ZoneResolver()
        self.cache = WireCache()
        self.factory = KubernetaiServerFactory({"cluster.local": self.resolver},
                                               cache=self.cache)
        self.out = Collector()

    def ask(self, name: str = "web.cluster.local", udp: bool = True, **kw: Any
            ) -> tuple[dns.message.Message, bytes]:
        query = dns.message.make_query(name, "A", **kw)
        self.factory.handleWire(query.to_wire(), self.out, ("127.0.0.1", 5353), udp)
        wire = self.out.sent[-1]
        self.assertEqual(dns.message.from_wire(wire).id, query.id)
        return query, wire

    def count_parses(self) -> list[bytes]:
        import kubernetai.core.dnsserver as dnsserver
        parsed: list[bytes] = []
        real = dnsserver.parse_request

        def counting(data: bytes, *args: Any) -> Any:
            parsed.append(data)
            return real(data, *args)
        self.patch(dnsserver, "parse_request", counting)
        return parsed

    def test_repeat_is_not_parsed_again_and_answers_the_same(self) -> None:
        """The third asking of the same bytes is not parsed; its answer is the second's
        byte for byte, with its own ID."""
        parsed = self.count_parses()
        self.ask()                      # miss: the resolver answers, the cache keeps it
        _, second = self.ask()          # hit, parsed: remembered
        _, third = self.ask()           # hit, not parsed
        _, fourth = self.ask(use_edns=0, payload=1232)   # other bytes: parsed
        self.assertEqual(len(parsed), 3)
        self.assertEqual(third[2:], second[2:])
        self.assertEqual(len(self.resolver.queries), 1)
        self.assertEqual(dns.message.from_wire(fourth).edns, 0)

    def test_a_remembered_request_that_misses_goes_down_the_pipeline(self) -> None:
        """When the answer cache no longer has it, the request is answered afresh."""
        self.ask()
        self.ask()
        self.cache.clear()
        self.resolver.tag = "10.0.0.7"
        _, wire = self.ask()
        self.assertEqual(len(self.resolver.queries), 2)
        self.assertEqual(dns.message.from_wire(wire).answer[0][0].address, "10.0.0.7")
        _, again = self.ask()           # a hit again (and remembered again)
        self.assertEqual(again[2:], wire[2:])
        self.assertEqual(len(self.resolver.queries), 2)

    def test_a_new_router_is_routed_afresh(self) -> None:
        """Replacing the router (a reload) forgets what was remembered."""
        self.ask()
        self.ask()
        other = ZoneResolver(tag="10.0.0.9")
        self.factory.router = ZoneRouter({"cluster.local": block_of(other, WireCache())})
        _, wire = self.ask()
        self.assertEqual(dns.message.from_wire(wire).answer[0][0].address, "10.0.0.9")

    def test_zero_turns_it_off(self) -> None:
        """With maxRememberedHits 0 every request is parsed."""
        self.factory.maxRememberedHits = 0
        parsed = self.count_parses()
        for _ in range(3):
            self.ask()
        self.assertEqual(len(parsed), 3)
        self.assertEqual(self.factory._hits, ({}, {}))

    def test_bounded(self) -> None:
        """A flood of distinct names never keeps more than maxRememberedHits."""
        self.factory.maxRememberedHits = 3
        for _ in range(2):
            for i in range(10):
                self.ask(f"web{i}.cluster.local")
        self.assertLessEqual(len(self.factory._hits[True]), 3)

    def test_large_requests_are_not_remembered(self) -> None:
        """Queries padded with EDNS options (up to 64 KiB over TCP) are answered but not
        kept: the table is bounded in bytes, not only in entries."""
        import dns.edns
        for i in range(20):
            padding = dns.edns.GenericOption(65001, bytes([i]) * 1000)
            self.ask(udp=False, use_edns=0, payload=4096, options=[padding])
        self.assertEqual(self.factory._hits[False], {})
        self.ask(udp=False)
        self.ask(udp=False)
        self.assertEqual(len(self.factory._hits[False]), 1)

    def test_tcp_connection_not_kept_by_a_remembered_request(self) -> None:
        """Over TCP the remembered request lets go of the connection that asked."""
        for _ in range(3):
            self.ask(udp=False)
        remembered = list(self.factory._hits[False].values())
        self.assertEqual(len(remembered), 1)
        self.assertIsNone(remembered[0][0].proto)


def test_udp_burst_all_answered(server: Server) -> None:
    """Hundreds of datagrams queued at once are each answered (by the server's own read
    loop, over several turns), with their own IDs."""
    queries = [dns.message.make_query("web.cluster.local" if i % 2 else f"n{i}.cluster.local",
                                      "A", id=i + 1) for i in range(150)]
    port = server.ports[0]
    assert port.doRead.__self__ is port.protocol  # the server's own read loop
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.settimeout(5)
        for q in queries:
            s.sendto(q.to_wire(), ("127.0.0.1", server.port))
        got = {}
        while len(got) < len(queries):
            r = dns.message.from_wire(s.recvfrom(65535)[0])
            got[r.id] = r
    for q in queries:
        want = dns.rcode.NOERROR if q.question[0].name.labels[0] == b"web" else \
            dns.rcode.NXDOMAIN
        assert got[q.id].rcode() == want


def test_udp_read_turns_are_bounded(server: Server) -> None:
    """A turn of the reactor reads at most ``maxDatagramsPerRead`` datagrams, so a flood
    cannot hold timers and other sockets back; the rest are read in later turns."""
    port = server.ports[0]
    protocol = port.protocol
    protocol.maxDatagramsPerRead = 10
    own = port.doRead
    turns: list[int] = []

    def counted() -> None:
        turns.append(1)
        own()
    port.doRead = counted
    try:
        queries = [dns.message.make_query(f"n{i}.cluster.local", "A", id=i + 1)
                   for i in range(100)]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.settimeout(5)
            # The reactor is held while the burst is sent, so it is all waiting at once.
            from twisted.internet import reactor
            reactor.callFromThread(time.sleep, 0.3)
            time.sleep(0.05)
            for q in queries:
                s.sendto(q.to_wire(), ("127.0.0.1", server.port))
            got = {dns.message.from_wire(s.recvfrom(65535)[0]).id for _ in queries}
    finally:
        port.doRead = own
        del protocol.maxDatagramsPerRead
    assert got == {q.id for q in queries}
    assert len(turns) >= 10


def test_router_few_zones_match_the_label_walk() -> None:
    """Trying each of a few zones as a suffix routes every name as the label walk does."""

    class Walking(ZoneRouter):
        fewZones = 0

    zones = {"cluster.local": "c", "sub.cluster.local": "s", "local": "l", "example.org": "e"}
    names = [b"", b"local", b"cluster.local", b"xcluster.local", b"a.sub.cluster.local",
             b"sub.cluster.local", b"a..cluster.local", b"org", b"example.org", b"x.example.org",
             b"a.b.c.d", b"sub.cluster.localx", b"cluster.local.sub"]
    for with_root in (False, True):
        zs = dict(zones, **({".": "root"} if with_root else {}))
        few, walking = ZoneRouter(zs), Walking(zs)
        assert few._few is not None and walking._few is None
        for name in names:
            for qtype in (1, 43):
                assert few.entry(name, qtype) == walking.entry(name, qtype), (name, qtype)
