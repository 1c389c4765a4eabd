"""The uncached answer path: pre-encoded records, the same bytes as Twisted's encoding.

A stanza's A/AAAA and SOA records are :mod:`kubernetai.plugins.kubernetai.answerwire`
records (owner bytes and packed rdata), which the codec appends to the response directly.
Every answer here is encoded twice: as the stanza returned it, and with each record
replaced by a genuine Twisted ``RRHeader`` of the same name, type, class, TTL and payload
(encoded by Twisted's ``RRHeader.encode``): the bytes must be equal, compression pointers,
TTLs, flags, SOA fields, order and truncation included. The answers are those of the whole
``test_records`` table and of a synthetic cluster.
"""

from __future__ import annotations

import copy
import socket

import pytest
from test_records import CACHE, OPTIONS, TABLE, _zone_of, cache_for
from twisted.internet import defer, task
from twisted.names import dns

import kubernetai.corefile as corefile
from kubernetai.core.codec import parse_request, render
from kubernetai.core.pipeline import BlockPipeline, Stage
from kubernetai.core.plugin import position
from kubernetai.core.request import Reply, Request
from kubernetai.plugins.kubernetai import records
from kubernetai.plugins.kubernetai.answerwire import AddressRR, SoaRR, address_rr, soa_rr
from kubernetai.plugins.kubernetai.cache import ClusterCache
from kubernetai.plugins.kubernetai.config import parse_stanza
from kubernetai.plugins.kubernetai.controller import Cluster
from kubernetai.plugins.kubernetai.handler import StanzaResolver
from kubernetai.plugins.kubernetai.objects import (
    endpoint_slice_from_json,
    namespace_from_json,
    pod_from_json,
    service_from_json,
)
from kubernetai.sandbox.synthetic import generate, parse_spec


def twin(rr: dns.RRHeader) -> dns.RRHeader:
    """A genuine Twisted record equal to ``rr`` (a copy of it, if it is one already)."""
    return dns.RRHeader(rr.name.name, rr.type, rr.cls, rr.ttl, copy.copy(rr.payload), rr.auth)


def query(name: bytes, qtype: int, edns: bool, udp: bool = True) -> Request:
    message = dns.Message(id=77, recDes=1)
    message.queries = [dns.Query(name, qtype, dns.IN)]
    if edns:
        message.additional = [dns.RRHeader(b"", dns.OPT, cls=1232, ttl=0,
                                           payload=dns.UnknownRecord(b""))]
    req = parse_request(message.toStr(), udp)
    assert isinstance(req, Request)
    return req


def both_ways(req: Request, got: records.Answer) -> tuple[bytes, bytes]:
    rcode = dns.EREFUSED if got.rcode == dns.EREFUSED else got.rcode
    fast = render(req, rcode, True, got.answers, got.authority, got.additional)
    slow = render(req, rcode, True, [twin(r) for r in got.answers],
                  [twin(r) for r in got.authority], [twin(r) for r in got.additional])
    return fast, slow


def spellings(qname: str) -> list[bytes]:
    raw = qname.rstrip(".").encode("latin-1")
    return [raw, raw.upper(), raw.title()]


@pytest.mark.parametrize("opts, qname, qtype, rcode, answers, authority, additional, chase",
                         TABLE)
def test_table_answers_encode_as_twisted_would(opts, qname, qtype, rcode, answers,
                                               authority, additional, chase):
    """Each table row, in three spellings, with and without EDNS: the same bytes."""
    for name in spellings(qname):
        got = records.answer(cache_for(opts), OPTIONS[opts], name, qtype,
                             _zone_of(qname.rstrip(".") + "."))
        for edns in (False, True):
            req = query(name, qtype, edns)
            fast, slow = both_ways(req, got)
            assert fast == slow
            if got.soa is not None:
                assert render(req, 0, True, (), (got.soa,)) == \
                    render(req, 0, True, (), (twin(got.soa),))


def synthetic_cache(spec: str) -> tuple[ClusterCache, list[str]]:
    convert = {"Namespace": ("namespaces", namespace_from_json),
               "Service": ("services", service_from_json),
               "EndpointSlice": ("endpointslices", endpoint_slice_from_json),
               "Pod": ("pods", pod_from_json)}
    found: dict[str, list] = {resource: [] for resource, _ in convert.values()}
    names = []
    for obj in generate(parse_spec(spec)):
        kind, meta = obj["kind"], obj["metadata"]
        if kind in convert:
            resource, conv = convert[kind]
            found[resource].append(conv(obj))
        if kind == "Service":
            names.append(f"{meta['name']}.{meta['namespace']}.svc.cluster.local")
            names.append(f"nope-{meta['name']}.{meta['namespace']}.svc.cluster.local")
        elif kind == "Pod" and obj.get("status", {}).get("podIP"):
            ip = obj["status"]["podIP"]
            names.append(f"{ip.replace('.', '-')}.{meta['namespace']}.pod.cluster.local")
            names.append(".".join(reversed(ip.split("."))) + ".in-addr.arpa")
    cache = ClusterCache(clock=lambda: 1700000000.5)
    for resource in ("namespaces", "services", "endpointslices", "pods"):
        cache.replace(resource, found[resource])
    return cache, names


def test_synthetic_cluster_answers_encode_as_twisted_would():
    """Every service (ClusterIP and headless, up to 40 endpoints: truncated over UDP
    without EDNS), an unknown name beside each, every pod and its reverse name, in every
    type the stanza answers: the same bytes over UDP (512 and 1232 bytes) and TCP."""
    cache, names = synthetic_cache("namespaces=4,services=30,headless=6,endpoints=3,"
                                   "headless_endpoints=40,pods=30")
    names += ["cluster.local", "ns.dns.cluster.local", "dns-version.cluster.local",
              "x.dns.cluster.local", "a.hostmaster.cluster.local", "svc.cluster.local"]
    options = {mode: records.AnswerOptions(zones=("cluster.local.", "in-addr.arpa."),
                                           pods=mode, ns_addresses=("10.128.0.9",))
               for mode in ("insecure", "verified")}
    truncated = pre_encoded = 0
    for mode, opts in options.items():
        for qname in names:
            zone = "in-addr.arpa." if qname.endswith("arpa") else "cluster.local."
            for name in spellings(qname):
                for qtype in (dns.A, dns.AAAA, dns.SRV, dns.PTR, dns.TXT, dns.NS, dns.SOA,
                              dns.MX, 65):
                    got = records.answer(cache, opts, name, qtype, zone)
                    pre_encoded += all(isinstance(r, (AddressRR, SoaRR)) for r in
                                       got.answers + got.authority + got.additional)
                    for edns, udp in ((False, True), (True, True), (False, False)):
                        fast, slow = both_ways(query(name, qtype, edns, udp), got)
                        assert fast == slow, (mode, name, qtype, edns, udp)
                        truncated += bool(fast[2] & 0x02)
    assert truncated  # the truncation rule was exercised
    assert pre_encoded > len(names) * 9  # most answers are the common shapes


def test_compression_table_keeps_no_offset_a_pointer_cannot_hold():
    """Past 16 KB (TCP) names are written out rather than pointed at an offset over
    0x3FFF, as the codec's table does for Twisted records."""
    req = query(b"big.shop.svc.cluster.local", dns.A, False, udp=False)
    rrs = [address_rr(f"h{i}.big.shop.svc.cluster.local".encode(), dns.A, "10.0.0.1", 5)
           for i in range(900)]
    rrs += [address_rr(f"h{i}.big.shop.svc.cluster.local".encode(), dns.A, "10.0.0.2", 5)
            for i in range(900)]
    fast = render(req, 0, True, rrs)
    assert len(fast) > 0x4000
    assert fast == render(req, 0, True, [twin(r) for r in rrs])


def test_records_read_as_rrheaders():
    a = address_rr(b"web.shop.svc.cluster.local", dns.A, "10.0.0.1", 5)
    six = address_rr(b"web.shop.svc.cluster.local", dns.AAAA, "fd00::1", 5)
    s = soa_rr(b"cluster.local", 30, 1700000000)
    for rr in (a, six, s):
        real = twin(rr)
        assert rr == real and real == rr and not rr != real
        assert str(rr) == str(real) and repr(rr) == repr(real)
        assert rr.isAuthoritative() and rr.name == real.name and rr.payload == real.payload
    assert a.payload.address == socket.inet_aton("10.0.0.1")
    assert (s.payload.serial, s.payload.minimum, s.payload.ttl, s.ttl) == (1700000000, 30, 30, 30)
    assert s == records.soa(records.AnswerOptions(zones=("cluster.local.",), ttl=30),
                            "cluster.local.", 1700000000)
    assert a != address_rr(b"web.shop.svc.cluster.local", dns.A, "10.0.0.2", 5)


def test_an_edited_copy_is_encoded_from_what_it_holds():
    """`rewrite` copies a record and assigns its name, payload or TTL: the copy is encoded
    from those, the original is unchanged and still appends itself."""
    req = query(b"web.shop.svc.cluster.local", dns.A, False)
    for original in (address_rr(b"web.shop.svc.cluster.local", dns.A, "10.0.0.1", 5),
                     soa_rr(b"cluster.local", 5, 7)):
        kept = render(req, 0, True, [original])
        renamed = copy.copy(original)
        renamed.name = dns.Name(b"other.example")
        assert render(req, 0, True, [renamed]) == render(req, 0, True, [twin(renamed)])
        assert twin(renamed).name.name == b"other.example"
        repaid = copy.copy(original)
        repaid.payload = copy.copy(original.payload)
        repaid.payload.ttl = 99
        assert render(req, 0, True, [repaid]) == render(req, 0, True, [twin(repaid)])
        longer = copy.copy(original)
        longer.ttl = 3600
        assert render(req, 0, True, [longer]) == render(req, 0, True, [twin(longer)])
        assert render(req, 0, True, [original]) == kept
        assert isinstance(original, (AddressRR, SoaRR)) and original.wire_into(bytearray(), {})
        assert not renamed.wire_into(bytearray(), {})


def test_a_twisted_message_encodes_them_too():
    """Stock Twisted code (``dns.Message.toStr``) encodes them as RRHeaders."""
    got = records.answer(CACHE, OPTIONS["default"], b"web.shop.svc.cluster.local", dns.A,
                         "cluster.local.")
    neg = records.answer(CACHE, OPTIONS["default"], b"nope.shop.svc.cluster.local", dns.A,
                         "cluster.local.")
    for answer in (got, neg):
        ours = dns.Message(id=1, answer=1, auth=1)
        ours.answers, ours.authority = list(answer.answers), list(answer.authority)
        theirs = dns.Message(id=1, answer=1, auth=1)
        theirs.answers = [twin(r) for r in answer.answers]
        theirs.authority = [twin(r) for r in answer.authority]
        assert ours.toStr() == theirs.toStr()


# -- the stanza without Deferreds ------------------------------------------------------------


def stanza(body: str = "kubernetai cluster.local") -> StanzaResolver:
    (block,) = corefile.parse(f"cluster.local {{\n{body}\n}}\n", "Corefile")
    config = parse_stanza(block.directives[0], [k.zone for k in block.keys])
    cluster = Cluster(config, reactor=task.Clock())
    cluster.cache = CACHE
    for resource in cluster.cache.synced:
        cluster.cache.mark_synced(resource)
    return StanzaResolver(cluster)


def served(resolver: StanzaResolver, name: bytes) -> Reply:
    pipeline = BlockPipeline([Stage("kubernetai", position("kubernetai"), 0,
                                    resolver=resolver)])
    req = query(name, dns.A, False)
    req.block, req.server, req.depth, req.deps = pipeline, None, 0, None
    req.nocache, req.renewable, req.observers, req.answered = False, True, None, None
    reply = pipeline.serve(req)
    assert isinstance(reply, Reply)  # no Deferred on the way
    return reply


def test_the_pipeline_takes_the_stanza_answer_without_a_deferred():
    resolver = stanza()
    reply = served(resolver, b"web.shop.svc.cluster.local")
    assert reply.rcode == 0 and reply.aa and len(reply.answers) >= 1 and reply.cache
    missing = served(resolver, b"nope.shop.svc.cluster.local")
    assert missing.rcode == 3 and missing.aa and missing.authority[0].type == dns.SOA
    assert missing.cache is not None


def test_resolve_and_query_agree():
    resolver = stanza()
    q = dns.Query(b"web.shop.svc.cluster.local", dns.A, dns.IN)
    got = resolver.resolve(q)
    assert isinstance(got, tuple)
    d = resolver.query(q)
    assert isinstance(d, defer.Deferred)
    assert d.result == got
    q = dns.Query(b"nope.shop.svc.cluster.local", dns.A, dns.IN)
    failure = resolver.query(q)
    failure.addErrback(lambda f: f.value)
    assert type(failure.result) is type(resolver.resolve(q))
