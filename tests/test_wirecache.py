"""The wire cache: answers sent again as bytes while their TTL runs and their data holds.

The first tests drive ``handleWire`` synchronously; the ones after them (TTL, TTL 0, who may
be cached, per-source invalidation, SERVFAIL) go through a real server over UDP sockets,
with the cache's ``clock`` moved by hand; the last ones run against simulated clusters.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from conftest import wait_for
from test_dnsserver import Collector, ZoneResolver
from test_e2e import COREFILE, answers, ask, sandboxes, server, start_server, urls  # noqa: F401
from twisted.internet import defer
from twisted.names import dns as tdns
from twisted.names import error as tderror

from kubernetai.core.dnsserver import KubernetaiServerFactory, listen
from kubernetai.core.negative import AuthoritativeNameError, FallThrough, ServerFailure
from kubernetai.core.pipeline import BlockPipeline, Stage
from kubernetai.core.plugin import position
from kubernetai.core.sources import Source
from kubernetai.core.wirecache import WireCache, WireCacheHandler
from kubernetai.pkg import reactor_thread


def factory_with(cache: WireCache) -> tuple[KubernetaiServerFactory, ZoneResolver]:
    resolver = ZoneResolver()
    return KubernetaiServerFactory({"cluster.local": resolver}, cache=cache), resolver


def query(factory: KubernetaiServerFactory, name: str, rdtype: str = "A",
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
    """Past max_entries the oldest entry goes; a new configuration on the same cache is
    not answered from the old one's entries; clear() (a reload) empties it."""
    cache = WireCache(max_entries=3)
    factory, _ = factory_with(cache)
    for i in range(4):
        query(factory, f"web{i}.cluster.local")
    assert [k[0] for k in cache.entries] == [b"web1.cluster.local", b"web2.cluster.local",
                                             b"web3.cluster.local"]
    fresh, resolver = factory_with(cache)
    factory.adopt(fresh)
    query(factory, "web3.cluster.local")
    assert len(resolver.queries) == 1           # asked of the new configuration's resolver
    cache.clear()
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
    assert cache.bytes == sum(cache.cost(k[0], v[0]) for k, v in cache.entries.items())
    assert all(len(v[0]) < 200 for v in cache.entries.values())
    assert cache.evictions > 0


# ---------------------------------------------------------------------------------------
# Through a real server over UDP: what is kept, and for how long


class Clock:
    """The cache's clock (seconds), moved by the test."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Canned:
    """What the scripted resolver answers for one name."""

    address: str = "192.0.2.1"
    ttl: int = 30
    glue_ttl: int | None = None          # an additional record with this TTL, if set
    failure: Exception | None = None
    sources: tuple[Source, ...] = ()     # what the answer is read from


def soa(ttl: int = 30) -> tdns.RRHeader:
    return tdns.RRHeader(b"test", tdns.SOA, ttl=ttl, auth=True, payload=tdns.Record_SOA(
        b"ns.dns.test", b"hostmaster.test", serial=1, minimum=ttl))


class Scripted:
    """Answers from a table (lower-case name -> Canned), counting what it is asked.

    Like a stanza, it records on the request what each answer was read from
    (``request.depend``) and lets the answer cache keep its answers (``cacheable``);
    a name not in the table falls through to the next resolver.
    """

    cacheable = True

    def __init__(self, table: dict[bytes, Canned]) -> None:
        self.table = table
        self.asked: Counter[bytes] = Counter()

    def query(self, query: tdns.Query, timeout: Any = None) -> defer.Deferred:
        name = query.name.name.lower()
        self.asked[name] += 1
        canned = self.table.get(name)
        if canned is None:
            return defer.fail(FallThrough())
        for source in canned.sources:
            query.request.depend(source)   # the server asks with a ContextQuery
        if canned.failure is not None:
            return defer.fail(canned.failure)
        answer = [tdns.RRHeader(name, tdns.A, ttl=canned.ttl, auth=True,
                                payload=tdns.Record_A(canned.address))]
        extra = [] if canned.glue_ttl is None else [
            tdns.RRHeader(b"ns." + name, tdns.A, ttl=canned.glue_ttl, auth=True,
                          payload=tdns.Record_A("192.0.2.53"))]
        return defer.succeed((answer, [], extra))


class Uncommitted(Scripted):
    """The same, from a resolver that does not say its answers may be kept."""

    cacheable = False


class Renewable(Scripted):
    """The same, from a resolver whose answers depend on the recorded sources alone (a
    stanza): an expired answer whose sources have not moved may be renewed in place."""

    renewable = True


def block(cache: WireCache, *resolvers: Any) -> BlockPipeline:
    """A server block: the answer cache in front of ``resolvers`` (asked in this order)."""
    stages = [Stage("cache", position("cache"), 0, handler=WireCacheHandler(cache))]
    stages += [Stage("kubernetai", position("kubernetai"), index, resolver=resolver)
               for index, resolver in enumerate(resolvers, 1)]
    return BlockPipeline(stages)


class UDPServer:
    """A server on 127.0.0.1 answering the zone ``test`` with one block."""

    def __init__(self, pipeline: BlockPipeline) -> None:
        self.errors: list[str] = []
        self.factory = KubernetaiServerFactory({"test": pipeline},
                                               on_error=self.errors.append)
        self.ports = reactor_thread.in_reactor(listen, self.factory, "127.0.0.1", 0)
        self.port = self.ports[0].getHost().port

    def ask(self, name: str) -> dns.message.Message:
        message = dns.message.make_query(name, "A")
        reply = dns.query.udp(message, "127.0.0.1", port=self.port, timeout=3)
        assert reply.id == message.id
        return reply

    def stop(self) -> None:
        reactor_thread.in_reactor(lambda: defer.gatherResults(
            [defer.maybeDeferred(port.stopListening) for port in self.ports]))


@pytest.fixture
def serve(reactor_running: None) -> Iterator[Any]:
    """Starts UDPServers for a test and stops them after it."""
    started: list[UDPServer] = []

    def start(pipeline: BlockPipeline) -> UDPServer:
        started.append(UDPServer(pipeline))
        return started[-1]
    yield start
    for server_ in started:
        server_.stop()


def addresses(reply: dns.message.Message) -> list[str]:
    return [rr.address for rrset in reply.answer for rr in rrset]


def test_kept_until_the_smallest_ttl_passes_then_asked_afresh(serve):
    """An answer is served from the cache until the smallest TTL of its records (here the
    additional section's, 10 s of 30) has passed; then the resolver is asked again."""
    clock = Clock()
    cache = WireCache(clock=clock)
    resolver = Scripted({b"web.test": Canned("192.0.2.1", ttl=30, glue_ttl=10)})
    srv = serve(block(cache, resolver))
    start = clock.now
    assert addresses(srv.ask("web.test")) == ["192.0.2.1"]
    resolver.table[b"web.test"] = Canned("192.0.2.2", ttl=30, glue_ttl=10)  # unseen yet
    clock.now = start + 9.9
    assert addresses(srv.ask("web.test")) == ["192.0.2.1"]
    assert resolver.asked[b"web.test"] == 1 and cache.hits == 1
    clock.now = start + 10
    assert addresses(srv.ask("web.test")) == ["192.0.2.2"]
    assert resolver.asked[b"web.test"] == 2 and cache.expired == 1
    clock.now = start + 19.9                    # the fresh answer is kept for its own TTL
    assert addresses(srv.ask("web.test")) == ["192.0.2.2"]
    assert resolver.asked[b"web.test"] == 2
    clock.now = start + 20
    srv.ask("web.test")
    assert resolver.asked[b"web.test"] == 3


def test_ttl_zero_is_never_kept(serve):
    """An answer or an NXDOMAIN whose smallest TTL is 0 is asked afresh every time (an
    answer with a TTL, asked alongside, is kept: the cache is working)."""
    cache = WireCache(clock=Clock())
    resolver = Scripted({
        b"zero.test": Canned(ttl=0),
        b"zeroglue.test": Canned(ttl=30, glue_ttl=0),
        b"gone.test": Canned(failure=AuthoritativeNameError([soa(ttl=0)])),
        b"kept.test": Canned(ttl=30),
    })
    srv = serve(block(cache, resolver))
    for _ in range(3):
        assert srv.ask("zero.test").rcode() == dns.rcode.NOERROR
        assert addresses(srv.ask("zeroglue.test")) == ["192.0.2.1"]
        assert srv.ask("gone.test").rcode() == dns.rcode.NXDOMAIN
        assert srv.ask("kept.test").rcode() == dns.rcode.NOERROR
    assert resolver.asked == {b"zero.test": 3, b"zeroglue.test": 3, b"gone.test": 3,
                              b"kept.test": 1}
    assert [key[0] for key in cache.entries] == [b"kept.test"]


def test_only_answers_of_a_resolver_that_says_cacheable_are_kept(serve):
    """A resolver without ``cacheable = True`` is asked every time, even when it answers
    after a cacheable one passed the name on; the cacheable one's answers are kept."""
    cache = WireCache(clock=Clock())
    first = Scripted({b"kept.test": Canned("192.0.2.1")})
    second = Uncommitted({b"passed.test": Canned("192.0.2.2"),
                          b"gone.test": Canned(failure=AuthoritativeNameError([soa()]))})
    srv = serve(block(cache, first, second))
    for _ in range(3):
        assert addresses(srv.ask("kept.test")) == ["192.0.2.1"]
        assert addresses(srv.ask("passed.test")) == ["192.0.2.2"]
        assert srv.ask("gone.test").rcode() == dns.rcode.NXDOMAIN
    assert first.asked[b"kept.test"] == 1
    assert second.asked == {b"passed.test": 3, b"gone.test": 3}
    assert [key[0] for key in cache.entries] == [b"kept.test"]

    alone = Uncommitted({b"web.test": Canned()})
    srv = serve(block(WireCache(clock=Clock()), alone))
    for _ in range(3):
        assert addresses(srv.ask("web.test")) == ["192.0.2.1"]
    assert alone.asked[b"web.test"] == 3


def test_a_renewable_answer_is_renewed_while_its_sources_hold(serve):
    """After its TTL, an answer from a resolver that says it depends only on its recorded
    sources is renewed for another TTL without asking (it would be the same bytes) as long
    as those sources have not moved; once one moves, it is asked afresh. An answer read
    from a non-renewable resolver through the same chain is asked again after its TTL."""
    clock = Clock()
    cache = WireCache(clock=clock)
    source = Source()
    stanza = Renewable({b"web.test": Canned("192.0.2.1", ttl=5, sources=(source,))})
    other = Scripted({b"far.test": Canned("192.0.2.9", ttl=5)})
    srv = serve(block(cache, stanza, other))
    start = clock.now
    assert addresses(srv.ask("web.test")) == ["192.0.2.1"]
    assert addresses(srv.ask("far.test")) == ["192.0.2.9"]
    stanza.table[b"web.test"] = Canned("192.0.2.2", ttl=5, sources=(source,))  # unseen yet
    for elapsed in (5, 10, 15):                      # three TTLs pass, nothing moved
        clock.now = start + elapsed
        assert addresses(srv.ask("web.test")) == ["192.0.2.1"]
        srv.ask("far.test")
    assert stanza.asked[b"web.test"] == 1 and cache.renewed == 3
    assert other.asked[b"far.test"] == 4           # not renewable: asked after each TTL
    reactor_thread.in_reactor(source.bump)
    assert addresses(srv.ask("web.test")) == ["192.0.2.2"]
    assert stanza.asked[b"web.test"] == 2


def test_a_source_change_drops_only_the_answers_read_from_it(serve):
    """Answers record the generation of each source they were read from; when one source
    moves on, the answers that read it are asked afresh (an NXDOMAIN too), the others
    stay cached."""
    east, west = Source(), Source()
    cache = WireCache(clock=Clock())
    resolver = Scripted({
        b"east.test": Canned("192.0.2.1", sources=(east,)),
        b"west.test": Canned("192.0.2.2", sources=(west,)),
        b"both.test": Canned("192.0.2.3", sources=(east, west)),
        b"none.test": Canned("192.0.2.4"),
        b"gone.test": Canned(failure=AuthoritativeNameError([soa()]), sources=(east,)),
    })
    srv = serve(block(cache, resolver))
    names = ["east.test", "west.test", "both.test", "none.test", "gone.test"]

    def ask_all() -> dict[bytes, int]:
        for name in names:
            reply = srv.ask(name)
            if name == "gone.test":
                assert reply.rcode() == dns.rcode.NXDOMAIN
            else:
                assert addresses(reply) == [resolver.table[name.encode()].address]
        return dict(resolver.asked)

    ask_all()
    assert ask_all() == {b"east.test": 1, b"west.test": 1, b"both.test": 1, b"none.test": 1,
                         b"gone.test": 1}
    reactor_thread.in_reactor(east.bump)
    assert ask_all() == {b"east.test": 2, b"west.test": 1, b"both.test": 2, b"none.test": 1,
                         b"gone.test": 2}
    assert cache.invalidated == 3
    reactor_thread.in_reactor(west.bump)
    assert ask_all() == {b"east.test": 2, b"west.test": 2, b"both.test": 3, b"none.test": 1,
                         b"gone.test": 2}
    assert cache.invalidated == 5


def test_servfail_is_never_kept(serve):
    """SERVFAIL, with or without an SOA, and an upstream's SERVFAIL, are asked afresh
    every time."""
    cache = WireCache(clock=Clock())
    resolver = Scripted({
        b"broken.test": Canned(failure=ServerFailure("backend exploded")),
        b"unsynced.test": Canned(failure=ServerFailure(authority=[soa()])),
        b"upstream.test": Canned(failure=tderror.DNSServerError(b"upstream.test")),
        b"kept.test": Canned(),
    })
    srv = serve(block(cache, resolver))
    for _ in range(3):
        for name in ("broken.test", "unsynced.test", "upstream.test"):
            assert srv.ask(name).rcode() == dns.rcode.SERVFAIL
        srv.ask("kept.test")
    assert resolver.asked == {b"broken.test": 3, b"unsynced.test": 3, b"upstream.test": 3,
                              b"kept.test": 1}
    assert [key[0] for key in cache.entries] == [b"kept.test"]
    assert srv.errors == ["2 broken.test. A: backend exploded"] * 3


# ---------------------------------------------------------------------------------------
# Against simulated clusters


def test_cluster_change_refreshes_a_cached_answer(server, sandboxes):
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


def test_cluster_change_keeps_other_clusters_answers(sandboxes, tmp_path: Path):
    """End to end: creating a service drops the cached answers read from its name (its
    NXDOMAIN) and keeps the others, those of other services of the same cluster as well
    as another cluster's (the cache's clock is stopped, so no TTL runs out)."""
    path = tmp_path / "Corefile"
    path.write_text(COREFILE.format(**urls(sandboxes)))
    service, port = start_server(path)
    cache = service.cache
    frozen = cache.clock()
    cache.clock = lambda: frozen
    mine = "gateway.edge.svc.conglomeration.local"
    other = "web.shared.svc.assemblage.local"
    name = "sooner.shop.svc.conglomeration.local"
    cluster = sandboxes["conglomeration.local"]
    try:
        first = {n: answers(ask(port, n)) for n in (mine, other)}
        assert all(first.values())
        assert ask(port, name).rcode() == dns.rcode.NXDOMAIN
        hits = cache.hits
        assert {n: answers(ask(port, n)) for n in (mine, other)} == first
        assert cache.hits == hits + 2
        cluster.apply({"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": "sooner", "namespace": "shop"},
                       "spec": {"clusterIP": "10.98.66.7", "ports": [{"port": 80}]}})
        wait_for(lambda: answers(ask(port, name)) == ["10.98.66.7"])
        hits, invalidated = cache.hits, cache.invalidated
        assert answers(ask(port, other)) == first[other]
        assert (cache.hits, cache.invalidated) == (hits + 1, invalidated)
        assert answers(ask(port, mine)) == first[mine]
        assert (cache.hits, cache.invalidated) == (hits + 2, invalidated)
    finally:
        cluster.delete("Service", "shop", "sooner")
        reactor_thread.in_reactor(service.stopService)


# ---------------------------------------------------------------------------------------
# Letter case


class Echoing(Scripted):
    """Answers with the name as asked as the owner (as a stanza does), and says whether
    its answers hold for every spelling (``fold``)."""

    def __init__(self, table: dict[bytes, Canned], fold: bool) -> None:
        super().__init__(table)
        self.fold = fold

    def query(self, query: tdns.Query, timeout: Any = None) -> defer.Deferred:
        name = query.name.name
        self.asked[name.lower()] += 1
        canned = self.table[name.lower()]
        query.request.folds(self.fold)
        return defer.succeed(([tdns.RRHeader(name, tdns.A, ttl=canned.ttl, auth=True,
                                             payload=tdns.Record_A(canned.address))], [], []))


def _raw(port: int, name: str) -> bytes:
    import socket
    wire = dns.message.make_query(name, "A").to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(wire, ("127.0.0.1", port))
        got, _ = sock.recvfrom(4096)
    return wire, got


def test_an_answer_that_holds_for_every_case_is_kept_once(serve):
    """One entry under the lower-case name serves every spelling, each with its own
    question and owner (the owner is a pointer to the question)."""
    cache = WireCache()
    resolver = Echoing({b"mixed.test": Canned()}, fold=True)
    srv = serve(block(cache, resolver))
    for spelling in ("mixed.test", "MiXeD.TeSt", "MIXED.test"):
        wire, got = _raw(srv.port, spelling)
        reply = dns.message.from_wire(got)
        assert str(reply.question[0].name) == str(reply.answer[0].name) == spelling + "."
        assert got[12:12 + len(wire) - 12] == wire[12:]
    assert resolver.asked == {b"mixed.test": 1}
    assert cache.hits == 2 and len(cache.entries) == 1


def test_an_answer_without_that_promise_is_kept_per_spelling(serve):
    cache = WireCache()
    resolver = Echoing({b"mixed.test": Canned()}, fold=False)
    srv = serve(block(cache, resolver))
    for spelling in ("mixed.test", "MiXeD.TeSt", "mixed.test", "MiXeD.TeSt"):
        reply = dns.message.from_wire(_raw(srv.port, spelling)[1])
        assert str(reply.answer[0].name) == spelling + "."
    assert resolver.asked == {b"mixed.test": 2}
    assert cache.hits == 2 and len(cache.entries) == 2
