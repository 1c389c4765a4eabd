"""The wire cache: answers sent again as bytes until a cluster's data changes."""

from __future__ import annotations

import dns.message
import dns.rcode
from kubernetai.wirecache import CachingServerFactory, WireCache

from conftest import wait_for

from test_dnsserver import Collector, ZoneResolver
from test_e2e import answers, ask, sandboxes, server  # noqa: F401 - fixtures


def factory_with(cache: WireCache) -> tuple[CachingServerFactory, ZoneResolver]:
    resolver = ZoneResolver()
    return CachingServerFactory({"cluster.local": resolver}, cache=cache), resolver


def query(factory: CachingServerFactory, name: str, rdtype: str = "A",
          **kwargs) -> dns.message.Message:
    out = Collector()
    message = dns.message.make_query(name, rdtype, **kwargs)
    factory.handleWire(message.to_wire(), out, None, True)
    response = dns.message.from_wire(out.sent[0])
    assert response.id == message.id
    return response


def test_repeat_is_answered_from_the_cache():
    """The second identical query is not asked of the resolver, and answers the same."""
    cache = WireCache()
    factory, resolver = factory_with(cache)
    first = query(factory, "web.cluster.local")
    second = query(factory, "web.cluster.local")
    assert len(resolver.queries) == 1 and cache.hits == 1
    assert second.answer == first.answer and second.flags == first.flags


def test_nxdomain_cached_servfail_not():
    """Negative answers are kept; server failures are asked again every time."""
    cache = WireCache()
    factory, resolver = factory_with(cache)
    for _ in range(2):
        assert query(factory, "nothing.cluster.local").rcode() == dns.rcode.NXDOMAIN
    assert len(resolver.queries) == 1
    for _ in range(2):
        assert query(factory, "servfail.cluster.local").rcode() == dns.rcode.SERVFAIL
    assert len(resolver.queries) == 3


def test_edns_and_size_are_part_of_the_key():
    """A query with EDNS (another size, another OPT) is its own entry."""
    cache = WireCache()
    factory, resolver = factory_with(cache)
    query(factory, "web.cluster.local")
    with_edns = query(factory, "web.cluster.local", use_edns=0, payload=1232)
    assert with_edns.edns == 0 and len(resolver.queries) == 2


def test_bounded_and_cleared():
    """A full cache empties itself; clear() and adopt() empty it too."""
    cache = WireCache(max_entries=3)
    factory, _ = factory_with(cache)
    for i in range(3):
        query(factory, f"web{i}.cluster.local")
    assert len(cache.entries) == 3
    query(factory, "web9.cluster.local")
    assert len(cache.entries) == 1
    factory.adopt(factory_with(WireCache())[0])
    assert cache.entries == {}


def test_cluster_change_empties_the_server_cache(server, sandboxes):
    """End to end: a cached NXDOMAIN gives way to the service once it is created."""
    name = "later.shop.svc.conglomeration.local"
    assert ask(server, name).rcode() == dns.rcode.NXDOMAIN
    assert ask(server, name).rcode() == dns.rcode.NXDOMAIN  # from the cache now
    cluster = sandboxes["conglomeration.local"]
    cluster.apply({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "later", "namespace": "shop"},
                   "spec": {"clusterIP": "10.98.66.6", "ports": [{"port": 80}]}})
    try:
        wait_for(lambda: answers(ask(server, name)) == ["10.98.66.6"])
    finally:
        cluster.delete("Service", "shop", "later")
