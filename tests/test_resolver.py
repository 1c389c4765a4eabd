"""Tests for kubernetai.plugins.kubernetai.handler: a stanza's answers mapped onto the resolver contract.

Each stanza reads a ClusterCache filled from realistic API JSON through the
``*_from_json`` converters; no thread, no socket, no reactor (the Deferreds fire at once).
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from twisted.internet import defer, task
from twisted.names import dns
from twisted.python.failure import Failure

import kubernetai.corefile as corefile
from kubernetai.core.negative import AuthoritativeNameError, FallThrough, Refused, ServerFailure
from kubernetai.core.request import ContextQuery, Request, context_query
from kubernetai.core.router import ZoneRouter
from kubernetai.core.sources import changed
from kubernetai.plugins.kubernetai import records
from kubernetai.plugins.kubernetai.cache import ClusterCache
from kubernetai.plugins.kubernetai.config import parse_stanza
from kubernetai.plugins.kubernetai.controller import Cluster
from kubernetai.plugins.kubernetai.handler import (
    MAX_CHASE,
    StanzaResolver,
    answer_options,
)
from kubernetai.plugins.kubernetai.objects import (
    endpoint_slice_from_json,
    namespace_from_json,
    service_from_json,
)

NOW = 1700000000.5
SERIAL = 1700000000


# -- realistic API JSON -------------------------------------------------------------------


def _meta(ns: str | None, name: str, **extra: Any) -> dict:
    meta = {"name": name, "uid": f"uid-{ns}-{name}", "resourceVersion": "4711",
            "creationTimestamp": "2024-05-01T10:00:00Z",
            "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update"}]}
    if ns is not None:
        meta["namespace"] = ns
    meta.update(extra)
    return meta


def service_json(ns: str, name: str, cluster_ip: str | None = "10.96.0.10",
                 external_name: str | None = None) -> dict:
    if external_name is not None:
        spec = {"type": "ExternalName", "externalName": external_name,
                "sessionAffinity": "None"}
    else:
        spec = {"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                "selector": {"app": name}, "sessionAffinity": "None",
                "internalTrafficPolicy": "Cluster",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(ns, name, labels={"app": name}),
            "spec": spec, "status": {"loadBalancer": {}}}


def slice_json(ns: str, service: str, ips: list[str]) -> dict:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": _meta(ns, f"{service}-x7k2p", generateName=f"{service}-",
                          labels={"kubernetes.io/service-name": service,
                                  "endpointslice.kubernetes.io/managed-by":
                                      "endpointslice-controller.k8s.io"}),
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "nodeName": "node-1",
                       "conditions": {"ready": True, "serving": True, "terminating": False},
                       "targetRef": {"kind": "Pod", "namespace": ns, "name": f"{service}-{i}"}}
                      for i, ip in enumerate(ips)],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def namespace_json(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": _meta(None, name, labels={"kubernetes.io/metadata.name": name}),
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


SERVICES = [
    service_json("shop", "web", "10.96.0.10"),
    service_json("shop", "cart", "10.96.0.20"),
    service_json("shop", "ext", external_name="api.example.com"),
    service_json("shop", "ext-in", external_name="web.shop.svc.cluster.local"),
    service_json("kube-system", "kube-dns", "10.96.0.2"),
]
SLICES = [slice_json("shop", "web", ["10.244.1.5"])]
NAMESPACES = ["default", "kube-system", "shop"]


def filled_cache() -> ClusterCache:
    cache = ClusterCache(clock=lambda: NOW)
    cache.replace("namespaces", [namespace_from_json(namespace_json(n)) for n in NAMESPACES])
    cache.replace("services", [service_from_json(d) for d in SERVICES])
    cache.replace("endpointslices", [endpoint_slice_from_json(d) for d in SLICES])
    return cache


# -- helpers ------------------------------------------------------------------------------


def stanza_resolver(body: str, keys: str = "cluster.local in-addr.arpa", *,
                    cache: ClusterCache | None = None, upstream: Any = None) -> StanzaResolver:
    """The resolver of ``keys { kubernetai ... }`` over ``cache`` (a filled one by default)."""
    (block,) = corefile.parse(f"{keys} {{\n{body}\n}}\n", "Corefile")
    config = parse_stanza(block.directives[0], [k.zone for k in block.keys])
    cluster = Cluster(config, reactor=task.Clock())
    cluster.cache = filled_cache() if cache is None else cache
    return StanzaResolver(cluster, upstream=upstream)


def ask(resolver: Any, name: str, qtype: int = dns.A) -> defer.Deferred:
    return resolver.query(dns.Query(name, qtype, dns.IN))


def result_of(d: defer.Deferred) -> Any:
    out: list = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def failure_of(d: defer.Deferred, *kinds: type) -> Failure:
    out: list = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    assert isinstance(out[0], Failure), f"expected a failure, got {out[0]!r}"
    assert out[0].check(*kinds), out[0]
    return out[0]


def render(rr: dns.RRHeader) -> tuple[str, str, int, str]:
    p = rr.payload
    if rr.type == dns.A:
        data = socket.inet_ntoa(p.address)
    elif rr.type in (dns.CNAME, dns.PTR):
        data = p.name.name.decode()
    elif rr.type == dns.SOA:
        data = f"{p.mname.name.decode()} {p.serial} {p.minimum}"
    else:  # pragma: no cover
        raise AssertionError(rr.type)
    return (rr.name.name.decode(), dns.QUERY_TYPES.get(rr.type, str(rr.type)), rr.ttl, data)


def sections(result: tuple) -> tuple[list, list, list]:
    return tuple([render(rr) for rr in part] for part in result)  # type: ignore[return-value]


def SOA(zone: str = "cluster.local", ttl: int = 5) -> tuple[str, str, int, str]:
    return (zone, "SOA", ttl, f"ns.dns.{zone} {SERIAL} {ttl}")


W = "web.shop.svc.cluster.local"
BASIC = "kubernetai cluster.local in-addr.arpa"
FALL_REVERSE = "kubernetai cluster.local in-addr.arpa {\n    fallthrough in-addr.arpa\n}"
FALL_ALL = "kubernetai cluster.local in-addr.arpa {\n    fallthrough\n}"
FALL_SHOP = "kubernetai cluster.local {\n    fallthrough shop.svc.cluster.local\n}"


# -- answers ------------------------------------------------------------------------------


@pytest.mark.parametrize("body, name, qtype, expected", [
    pytest.param(BASIC, W, dns.A, ([(W, "A", 5, "10.96.0.10")], [], []), id="clusterip-a"),
    pytest.param(BASIC, "WeB.Shop.svc.Cluster.Local", dns.A,
                 ([("WeB.Shop.svc.Cluster.Local", "A", 5, "10.96.0.10")], [], []),
                 id="owner-keeps-client-case"),
    pytest.param("kubernetai cluster.local {\n    ttl 30\n}", W, dns.A,
                 ([(W, "A", 30, "10.96.0.10")], [], []), id="stanza-ttl"),
    pytest.param(BASIC, "10.0.96.10.in-addr.arpa", dns.PTR,
                 ([("10.0.96.10.in-addr.arpa", "PTR", 5, W)], [], []), id="ptr"),
    pytest.param(BASIC, W, dns.AAAA, ([], [SOA()], []), id="nodata-carries-soa"),
    pytest.param(BASIC, "cluster.local", dns.SOA, ([SOA()], [], []), id="apex-soa"),
    pytest.param(BASIC, "ext-in.shop.svc.cluster.local", dns.A,
                 ([("ext-in.shop.svc.cluster.local", "CNAME", 5, W), (W, "A", 5, "10.96.0.10")],
                  [], []), id="externalname-in-zone-needs-no-chase"),
])
def test_in_zone_answers(body: str, name: str, qtype: int, expected: tuple) -> None:
    """Names in the stanza's zones are answered from its cache."""
    assert sections(result_of(ask(stanza_resolver(body), name, qtype))) == expected


def test_answer_options_from_stanza() -> None:
    """The stanza's options become the AnswerOptions the answers are built with."""
    resolver = stanza_resolver("kubernetai cluster.local {\n    pods insecure\n    ttl 30\n"
                               "    namespaces shop\n    endpoint_pod_names\n}")
    options = resolver.options
    assert options == answer_options(resolver.cluster)
    assert (options.zones, options.ttl, options.pods, options.endpoint_pod_names,
            options.namespaces) == (("cluster.local.",), 30, "insecure", True,
                                    frozenset({"shop"}))


def test_longest_zone_answers() -> None:
    """With nested zones the most specific one is the zone of the answer (its SOA)."""
    resolver = stanza_resolver("kubernetai cluster.local sub.cluster.local",
                               keys="cluster.local")
    failure = failure_of(ask(resolver, "nope.sub.cluster.local"), AuthoritativeNameError)
    assert [render(rr) for rr in failure.value.authority] == [SOA("sub.cluster.local")]


# -- names the stanza does not answer -----------------------------------------------------


@pytest.mark.parametrize("body, name, qtype", [
    pytest.param(BASIC, "example.com", dns.A, id="out-of-zone"),
    pytest.param(BASIC, "xcluster.local", dns.A, id="out-of-zone-label-boundary"),
    pytest.param(BASIC, "ip6.arpa", dns.PTR, id="out-of-zone-other-reverse"),
    pytest.param(FALL_REVERSE, "4.3.2.1.in-addr.arpa", dns.PTR, id="fallthrough-reverse"),
    pytest.param(FALL_ALL, "nope.shop.svc.cluster.local", dns.A, id="fallthrough-all"),
    pytest.param(FALL_ALL, "nope.shop.svc.cluster.local", dns.MX, id="fallthrough-any-type"),
    pytest.param(FALL_SHOP, "nope.shop.svc.cluster.local", dns.A, id="fallthrough-zone-match"),
    pytest.param(FALL_SHOP, "NOPE.Shop.SVC.cluster.local", dns.A, id="fallthrough-any-case"),
    pytest.param(FALL_SHOP, "a.b.web.shop.svc.cluster.local", dns.A, id="fallthrough-deep-name"),
])
def test_fall_through(body: str, name: str, qtype: int) -> None:
    """Out-of-zone names, and name errors fallthrough covers, fail with FallThrough."""
    failure_of(ask(stanza_resolver(body), name, qtype), FallThrough)


@pytest.mark.parametrize("body, name", [
    pytest.param(BASIC, "nope.shop.svc.cluster.local", id="no-fallthrough"),
    pytest.param(FALL_REVERSE, "nope.shop.svc.cluster.local", id="fallthrough-other-zone"),
    pytest.param(FALL_SHOP, "nope.team.svc.cluster.local", id="fallthrough-sibling"),
    pytest.param(FALL_SHOP, "nope.xshop.svc.cluster.local", id="fallthrough-label-boundary"),
    pytest.param(FALL_REVERSE, "web.nope.svc.cluster.local", id="unknown-namespace"),
])
def test_nxdomain_carries_soa(body: str, name: str) -> None:
    """A name error fallthrough does not cover is an authoritative NXDOMAIN with the SOA."""
    failure = failure_of(ask(stanza_resolver(body), name), AuthoritativeNameError)
    assert [render(rr) for rr in failure.value.authority] == [SOA()]
    assert all(rr.auth for rr in failure.value.authority)


def test_fallthrough_never_hides_answers() -> None:
    """fallthrough only applies to name errors: existing names and NODATA are answered."""
    resolver = stanza_resolver(FALL_ALL)
    assert sections(result_of(ask(resolver, W))) == ([(W, "A", 5, "10.96.0.10")], [], [])
    assert sections(result_of(ask(resolver, W, dns.AAAA))) == ([], [SOA()], [])


@pytest.mark.parametrize("qtype", [dns.AXFR, dns.IXFR])
def test_zone_transfer_refused(qtype: int) -> None:
    """AXFR and IXFR are REFUSED, as CoreDNS's kubernetes plugin does."""
    failure_of(ask(stanza_resolver(FALL_ALL), "cluster.local", qtype), Refused)


def test_bug_in_answer_is_servfail_with_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception while answering is SERVFAIL with a message for the errors log."""
    def broken(*args: Any) -> None:
        raise RuntimeError("index out of step")
    monkeypatch.setattr(records, "answer", broken)
    failure = failure_of(ask(stanza_resolver(BASIC), W), ServerFailure)
    assert failure.value.message == "plugin/kubernetai: RuntimeError('index out of step')"


# -- not synced ---------------------------------------------------------------------------


def test_unsynced_name_error_is_servfail_with_soa() -> None:
    """Before the first full list, a name error is SERVFAIL carrying the SOA, no log line."""
    resolver = stanza_resolver(BASIC, cache=ClusterCache(clock=lambda: NOW))
    assert not resolver.cluster.synced
    failure = failure_of(ask(resolver, W), ServerFailure)
    assert failure.value.message is None
    assert [render(rr)[:2] for rr in failure.value.authority] == [("cluster.local", "SOA")]


def test_unsynced_fallthrough_still_falls_through() -> None:
    """fallthrough is decided before the sync state: an unsynced stanza still passes names on."""
    resolver = stanza_resolver(FALL_ALL, cache=ClusterCache(clock=lambda: NOW))
    failure_of(ask(resolver, W), FallThrough)


def test_one_unsynced_resource_is_enough_for_servfail() -> None:
    """A stanza is synced only when every watched resource is: one missing list is SERVFAIL."""
    cache = filled_cache()
    cache.mark_synced("endpointslices", False)
    resolver = stanza_resolver(BASIC, cache=cache)
    assert not resolver.cluster.synced
    failure_of(ask(resolver, "nope.shop.svc.cluster.local"), ServerFailure)
    # What the cache already holds is still answered.
    assert sections(result_of(ask(resolver, W))) == ([(W, "A", 5, "10.96.0.10")], [], [])


def test_synced_after_the_lists() -> None:
    """Once the lists arrive the same name is an authoritative NXDOMAIN."""
    cache = ClusterCache(clock=lambda: NOW)
    resolver = stanza_resolver(BASIC, cache=cache)
    failure_of(ask(resolver, "nope.shop.svc.cluster.local"), ServerFailure)
    cache.replace("namespaces", [namespace_from_json(namespace_json(n)) for n in NAMESPACES])
    cache.replace("services", [service_from_json(d) for d in SERVICES])
    cache.replace("endpointslices", [])
    failure_of(ask(resolver, "nope.shop.svc.cluster.local"), AuthoritativeNameError)


# -- ExternalName chasing -----------------------------------------------------------------


class Upstream:
    """The server's router, reduced to what the chase needs: query() -> result or failure."""

    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome
        self.queries: list[dns.Query] = []

    def query(self, query: dns.Query, timeout: Any = None) -> defer.Deferred:
        self.queries.append(query)
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return defer.succeed(self.outcome)


EXT = "ext.shop.svc.cluster.local"
API_A = dns.RRHeader(b"api.example.com", dns.A, dns.IN, 60, dns.Record_A("203.0.113.9", 60))


def test_chase_success_appends_upstream_answers() -> None:
    """An ExternalName outside the zones is chased through upstream for the same type."""
    upstream = Upstream(([API_A], [], []))
    resolver = stanza_resolver(BASIC, upstream=upstream)
    result = sections(result_of(ask(resolver, EXT)))
    assert result == ([(EXT, "CNAME", 5, "api.example.com"),
                       ("api.example.com", "A", 60, "203.0.113.9")], [], [])
    (query,) = upstream.queries
    assert (query.name.name.rstrip(b"."), query.type, query.cls) == (b"api.example.com", dns.A,
                                                                     dns.IN)


def test_chase_aaaa_uses_aaaa() -> None:
    """An AAAA query chases the target's AAAA records."""
    upstream = Upstream(([], [], []))
    result = sections(result_of(ask(stanza_resolver(BASIC, upstream=upstream), EXT, dns.AAAA)))
    assert result == ([(EXT, "CNAME", 5, "api.example.com")], [], [])
    assert [q.type for q in upstream.queries] == [dns.AAAA]


def test_chase_failure_is_nodata_with_soa() -> None:
    """When the lookup of the target cannot be made, the CNAME is dropped: NODATA with SOA."""
    upstream = Upstream(RuntimeError("no server to ask"))
    result = sections(result_of(ask(stanza_resolver(BASIC, upstream=upstream), EXT)))
    assert result == ([], [SOA()], [])


def test_no_chase_without_upstream() -> None:
    """With no upstream (no server to ask), the lookup cannot be made: NODATA with SOA."""
    result = sections(result_of(ask(stanza_resolver(BASIC), EXT)))
    assert result == ([], [SOA()], [])


@pytest.mark.parametrize("error", [FallThrough(), AuthoritativeNameError(()),
                                   ServerFailure("upstream down"), Refused()])
def test_chase_answered_negatively_keeps_cname(error) -> None:
    """A negative answer for the target keeps the CNAME alone, as CoreDNS does."""
    upstream = Upstream(error)
    result = sections(result_of(ask(stanza_resolver(BASIC, upstream=upstream), EXT)))
    assert result == ([(EXT, "CNAME", 5, "api.example.com")], [], [])


@pytest.mark.parametrize("qtype", [dns.CNAME, dns.TXT, dns.SRV])
def test_no_chase_for_other_types(qtype: int) -> None:
    """Only A and AAAA are chased; other types never ask upstream."""
    upstream = Upstream(([API_A], [], []))
    ask(stanza_resolver(BASIC, upstream=upstream), EXT, qtype).addErrback(lambda _: None)
    assert upstream.queries == []


# -- the chase's context: upstream and depth travel with the query ------------------------


def context_ask(resolver: Any, name: str, qtype: int = dns.A, **context: Any) -> defer.Deferred:
    return resolver.query(context_query(name.encode(), qtype, dns.IN, **context))


def test_chase_goes_through_the_query_upstream() -> None:
    """Without an upstream of its own, a stanza chases through the query's upstream (the
    server), one level deeper, carrying the request being answered."""
    upstream = Upstream(([API_A], [], []))
    request = Request()
    request.deps = None
    resolver = stanza_resolver(BASIC)
    result = sections(result_of(context_ask(resolver, EXT, upstream=upstream, depth=3,
                                            request=request)))
    assert result == ([(EXT, "CNAME", 5, "api.example.com"),
                       ("api.example.com", "A", 60, "203.0.113.9")], [], [])
    (query,) = upstream.queries
    assert isinstance(query, ContextQuery)
    assert (query.name.name.rstrip(b"."), query.type, query.depth) == (b"api.example.com",
                                                                        dns.A, 4)
    assert query.upstream is upstream and query.request is request
    # The answer read the cluster's cache: the request says which parts (for the answer
    # cache): the ExternalName's service and namespace cells, and the SOA serial's.
    cache = resolver.cluster.cache
    ns, name = EXT.split(".")[1], EXT.split(".")[0]
    assert {slot for slot, _ in request.deps} == {
        cache.cell(("svc", f"{ns}/{name}")), cache.cell(("ns", ns)), cache.serial_cell.slot}
    assert not changed(request.deps)
    assert request.fold is False  # an answer that is chased is never case-folded


def test_chase_stops_at_max_depth() -> None:
    """A query already MAX_CHASE chases deep is answered with the CNAME alone; one level
    less still chases, at MAX_CHASE."""
    upstream = Upstream(([API_A], [], []))
    resolver = stanza_resolver(BASIC)
    result = sections(result_of(context_ask(resolver, EXT, upstream=upstream,
                                            depth=MAX_CHASE)))
    assert result == ([(EXT, "CNAME", 5, "api.example.com")], [], [])
    assert upstream.queries == []
    result_of(context_ask(resolver, EXT, upstream=upstream, depth=MAX_CHASE - 1))
    assert [q.depth for q in upstream.queries] == [MAX_CHASE]


def test_chase_loop_is_bounded_by_the_query_depth() -> None:
    """Two stanzas whose ExternalNames point at each other, asked through a router as the
    server would: the loop ends after MAX_CHASE chases, the depth counted per query."""
    loop = [service_json("shop", "ping", external_name="pong.shop.svc.b.local")]
    back = [service_json("shop", "pong", external_name="ping.shop.svc.a.local")]
    a = stanza_resolver("kubernetai", keys="a.local", cache=cache_with(loop))
    b = stanza_resolver("kubernetai", keys="b.local", cache=cache_with(back))
    router = ZoneRouter({"a.local": a, "b.local": b})
    answers, _, _ = result_of(context_ask(a, "ping.shop.svc.a.local", upstream=router))
    assert [rr.type for rr in answers] == [dns.CNAME] * (MAX_CHASE + 1)
    assert [rr.payload.name.name for rr in answers[:2]] == [b"pong.shop.svc.b.local",
                                                             b"ping.shop.svc.a.local"]


def cache_with(services: list[dict]) -> ClusterCache:
    cache = ClusterCache(clock=lambda: NOW)
    cache.replace("namespaces", [namespace_from_json(namespace_json(n)) for n in NAMESPACES])
    cache.replace("services", [service_from_json(d) for d in services])
    cache.replace("endpointslices", [])
    return cache
