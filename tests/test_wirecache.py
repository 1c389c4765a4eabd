"""The wire cache: answers sent again as bytes until a cluster's data changes."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.rcode
from kubernetai.core.wirecache import CachingServerFactory, WireCache

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
    factory.handleWire(message.to_wire(max_size=65535), out, None, True)
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


def test_edns_is_not_part_of_the_key():
    """One entry serves every EDNS size and option set; each reply has its own OPT."""
    cache = WireCache()
    factory, resolver = factory_with(cache)
    plain = query(factory, "web.cluster.local")
    with_edns = query(factory, "web.cluster.local", use_edns=0, payload=1232, want_dnssec=True)
    cookie = dns.edns.GenericOption(dns.edns.COOKIE, b"12345678")
    with_cookie = query(factory, "web.cluster.local", use_edns=0, options=[cookie])
    assert len(resolver.queries) == 1 and cache.hits == 2 and len(cache.entries) == 1
    assert plain.edns == -1 and with_edns.edns == 0 and with_edns.payload == 1232
    assert with_edns.ednsflags & dns.flags.DO
    assert [o.client for o in with_cookie.options] == [b"12345678"]
    assert plain.answer == with_edns.answer == with_cookie.answer


def test_an_entry_too_large_for_a_small_client_is_not_served_to_it():
    """An answer cached from a large-buffer query is answered afresh, truncated, for 512."""
    cache = WireCache()
    factory, resolver = factory_with(cache)
    big = query(factory, "mixed.cluster.local", use_edns=0, payload=4096)
    assert not big.flags & dns.flags.TC and len(big.to_wire()) > 512
    small = query(factory, "mixed.cluster.local")
    assert small.flags & dns.flags.TC and len(resolver.queries) == 2
    assert query(factory, "mixed.cluster.local", use_edns=0, payload=4096).answer == big.answer
    assert len(resolver.queries) == 2


def test_bounded_in_entries_oldest_first_and_cleared():
    """Past max_entries the oldest entry goes; clear() and adopt() empty it."""
    cache = WireCache(max_entries=3)
    factory, _ = factory_with(cache)
    for i in range(4):
        query(factory, f"web{i}.cluster.local")
    assert [k[0] for k in cache.entries] == [b"web1.cluster.local", b"web2.cluster.local",
                                             b"web3.cluster.local"]
    factory.adopt(factory_with(WireCache())[0])
    assert not cache.entries and cache.bytes == 0


def test_bounded_in_bytes_whatever_the_client_pads():
    """Padding and cookies neither enlarge an entry nor make new ones (D2)."""
    cache = WireCache(max_bytes=64 * 1024)
    factory, resolver = factory_with(cache)
    for i in range(2000):
        padding = dns.edns.GenericOption(dns.edns.PADDING, bytes(7000))
        reply = query(factory, f"n{i}.cluster.local", use_edns=0, payload=1232,
                      options=[padding])
        assert len(reply.to_wire()) <= 1232
        assert cache.bytes <= cache.max_bytes
    assert cache.bytes == sum(cache.cost(k[0], v) for k, v in cache.entries.items())
    assert all(len(v) < 200 for v in cache.entries.values())
    assert cache.evictions > 0


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
