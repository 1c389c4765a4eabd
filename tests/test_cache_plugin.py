"""The `cache` directive: CoreDNS's cache, in the block's one cache step.

Through real sockets (dnspython over UDP/TCP) against a server whose block is the `cache`
step in front of a scripted handler (which counts what reaches it), with the store's clock
moved by hand; then whoami and a simulated cluster from Corefile text.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from conftest import EXAMPLES, wait_for
from test_e2e import answers, ask, start_server
from twisted.internet import defer
from twisted.names import dns as tdns

from kubernetai.core.dnsserver import KubernetaiServerFactory, listen
from kubernetai.core.metrics import PROCESS
from kubernetai.core.pipeline import BlockPipeline, Stage
from kubernetai.core.plugin import position
from kubernetai.core.request import RA, Reply, Request
from kubernetai.core.wirecache import WireCache
from kubernetai.corefile import CorefileError
from kubernetai.corefile import parse as parse_corefile
from kubernetai.pkg import reactor_thread
from kubernetai.plugins.cache.handler import CacheHandler
from kubernetai.plugins.cache.setup import parse


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def a(name: bytes, address: str, ttl: int) -> tdns.RRHeader:
    return tdns.RRHeader(name, tdns.A, ttl=ttl, payload=tdns.Record_A(address))


def soa(ttl: int) -> tdns.RRHeader:
    return tdns.RRHeader(b"example.org", tdns.SOA, ttl=ttl, payload=tdns.Record_SOA(
        b"ns.example.org", b"hostmaster.example.org", serial=1, minimum=ttl))


class Upstream:
    """The handler behind the cache: answers from a table of functions (lower-case name
    -> request -> Reply), as `forward` would (``cache=None``, RA set), counting asks."""

    name = "whoami"

    def __init__(self) -> None:
        self.table: dict[bytes, Callable[[Request], Any]] = {}
        self.asked: Counter[bytes] = Counter()

    def serve(self, request: Request, next: Any) -> Any:
        self.asked[request.lname] += 1
        answer = self.table.get(request.lname)
        if answer is None:
            return Reply(dns.rcode.NXDOMAIN, authority=[soa(900)], flags=RA, plugin="forward")
        return answer(request)


def addr(address: str, ttl: int) -> Callable[[Request], Reply]:
    return lambda request: Reply(0, answers=[a(request.lname, address, ttl)], flags=RA,
                                 plugin="forward")


class Server:
    def __init__(self, options: str, zone: str = "example.org") -> None:
        block = parse_corefile(f"{zone} {{\n    cache {options}\n}}\n")[0]
        self.clock = Clock()
        self.store = WireCache(clock=self.clock)
        self.config = parse(block.directives[0], tuple(k.zone for k in block.keys))
        self.cache = CacheHandler(self.config, self.store)
        self.upstream = Upstream()
        pipeline = BlockPipeline([
            Stage("cache", position("cache"), 0, handler=self.cache),
            Stage("whoami", position("whoami"), 1, handler=self.upstream)])
        self.factory = KubernetaiServerFactory({zone: pipeline})
        self.ports = reactor_thread.in_reactor(listen, self.factory, "127.0.0.1", 0)
        self.port = self.ports[0].getHost().port

    def ask(self, name: str, rdtype: str = "A", tcp: bool = False,
            **kwargs: Any) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype, **kwargs)
        send = dns.query.tcp if tcp else dns.query.udp
        reply = send(query, "127.0.0.1", port=self.port, timeout=3)
        assert reply.id == query.id
        return reply

    def later(self, seconds: float) -> None:
        self.clock.now += seconds

    def stop(self) -> None:
        reactor_thread.in_reactor(lambda: defer.gatherResults(
            [defer.maybeDeferred(port.stopListening) for port in self.ports]))


@pytest.fixture
def serve(reactor_running: None) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(options: str = "", zone: str = "example.org") -> Server:
        started.append(Server(options, zone))
        return started[-1]
    yield start
    for server in started:
        server.stop()


def ttls(reply: dns.message.Message) -> list[int]:
    return [rrset.ttl for section in (reply.answer, reply.authority, reply.additional)
            for rrset in section]


def addresses(reply: dns.message.Message) -> list[str]:
    return [rr.address for rrset in reply.answer for rr in rrset]


def metric(name: str, **labels: str) -> float:
    for family in PROCESS:
        if family.name == name:
            return sum(value for key, value in family.values.items()  # type: ignore[misc]
                       if all(dict(zip(family.labelnames, key)).get(k) == v
                              for k, v in labels.items()))
    return 0


# -- TTL arithmetic ------------------------------------------------------------------------


def test_ttls_count_down_on_hits_with_aa_set(serve):
    srv = serve()
    srv.upstream.table[b"www.example.org"] = addr("192.0.2.1", 100)
    first = srv.ask("www.example.org")
    assert ttls(first) == [100] and not first.flags & dns.flags.AA
    assert first.flags & dns.flags.RA
    srv.later(30.7)
    hit = srv.ask("www.example.org")
    assert srv.upstream.asked[b"www.example.org"] == 1
    assert ttls(hit) == [70] and hit.flags & dns.flags.AA and hit.flags & dns.flags.RA
    assert addresses(hit) == ["192.0.2.1"]
    srv.later(69)
    assert ttls(srv.ask("www.example.org")) == [1]
    srv.later(1)
    assert ttls(srv.ask("www.example.org")) == [100]          # expired: asked again
    assert srv.upstream.asked[b"www.example.org"] == 2


def test_keepttl_serves_the_original_ttl(serve):
    srv = serve("{\n keepttl\n }")
    srv.upstream.table[b"www.example.org"] = addr("192.0.2.1", 100)
    srv.ask("www.example.org")
    srv.later(60)
    assert ttls(srv.ask("www.example.org")) == [100]
    assert srv.upstream.asked[b"www.example.org"] == 1


def test_ttl_capped_and_raised_to_the_minimum_on_every_record(serve):
    srv = serve("20 {\n success 1024 20 10\n }")
    srv.upstream.table[b"long.example.org"] = addr("192.0.2.1", 100)
    srv.upstream.table[b"short.example.org"] = lambda r: Reply(
        0, answers=[a(r.lname, "192.0.2.2", 2)], additional=[a(b"x.example.org",
                                                             "192.0.2.3", 50)])
    assert ttls(srv.ask("long.example.org")) == [20]
    assert ttls(srv.ask("short.example.org")) == [10, 10]
    srv.later(9)
    assert ttls(srv.ask("short.example.org")) == [1, 1]
    assert srv.upstream.asked[b"short.example.org"] == 1


def test_denial_ttl_from_the_soa_capped_by_the_denial_ttl(serve):
    srv = serve()
    nx = srv.ask("nothing.example.org")
    assert nx.rcode() == dns.rcode.NXDOMAIN and ttls(nx) == [900]
    srv.later(100)
    again = srv.ask("nothing.example.org")
    assert ttls(again) == [800] and srv.upstream.asked[b"nothing.example.org"] == 1
    capped = serve("{\n denial 1024 60\n }")
    assert ttls(capped.ask("nothing.example.org")) == [60]


def test_nodata_with_soa_is_a_denial_nxdomain_without_soa_is_not_kept(serve):
    srv = serve()
    srv.upstream.table[b"nodata.example.org"] = lambda r: Reply(0, authority=[soa(40)])
    srv.upstream.table[b"bare.example.org"] = lambda r: Reply(3)
    for _ in range(2):
        assert ttls(srv.ask("nodata.example.org")) == [40]
        assert srv.ask("bare.example.org").rcode() == dns.rcode.NXDOMAIN
    assert srv.upstream.asked[b"nodata.example.org"] == 1
    assert srv.upstream.asked[b"bare.example.org"] == 2


def test_servfail_cached_five_seconds_refused_never(serve):
    srv = serve()
    srv.upstream.table[b"fail.example.org"] = lambda r: Reply(2)
    srv.upstream.table[b"refused.example.org"] = lambda r: Reply(5)
    for _ in range(2):
        assert srv.ask("fail.example.org").rcode() == dns.rcode.SERVFAIL
        assert srv.ask("refused.example.org").rcode() == dns.rcode.REFUSED
    assert srv.upstream.asked[b"fail.example.org"] == 1
    assert srv.upstream.asked[b"refused.example.org"] == 2
    srv.later(5)
    srv.ask("fail.example.org")
    assert srv.upstream.asked[b"fail.example.org"] == 2
    off = serve("{\n servfail 0\n }")
    off.upstream.table[b"fail.example.org"] = lambda r: Reply(2)
    off.ask("fail.example.org")
    off.ask("fail.example.org")
    assert off.upstream.asked[b"fail.example.org"] == 2


def test_do_and_cd_are_part_of_the_key(serve):
    srv = serve()
    srv.upstream.table[b"www.example.org"] = addr("192.0.2.1", 100)
    srv.ask("www.example.org")
    srv.ask("www.example.org", use_edns=0, want_dnssec=True)
    srv.ask("www.example.org", use_edns=0, want_dnssec=True)
    assert srv.upstream.asked[b"www.example.org"] == 2


def test_a_reply_already_encoded_is_retimed_and_kept(serve):
    srv = serve("30")

    def encoded(request: Request) -> Reply:
        from kubernetai.core.codec import render
        return Reply.encoded(render(request, 0, False, [a(request.lname, "192.0.2.9", 300)]))
    srv.upstream.table[b"wire.example.org"] = encoded
    assert ttls(srv.ask("wire.example.org")) == [30]
    srv.later(10)
    assert ttls(srv.ask("wire.example.org")) == [20]
    assert srv.upstream.asked[b"wire.example.org"] == 1


def test_every_message_of_a_transfer_gets_the_cache_ttl(serve):
    """A zone transfer's later messages are retimed as its first (CoreDNS's cache writer
    sets the TTL of every message it writes)."""
    import socket
    import struct

    from kubernetai.core.codec import render
    srv = serve("30")

    def zone(request: Request) -> Reply:
        later = iter([render(request, 0, True, [a(b"x.example.org", "192.0.2.7", 300)]),
                      render(request, 0, True, [soa(900)])])
        return Reply(0, True, [soa(900), a(b"w.example.org", "192.0.2.6", 300)], more=later)
    srv.upstream.table[b"example.org"] = zone
    wire = dns.message.make_query("example.org", "AXFR").to_wire()
    got = []
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(struct.pack("!H", len(wire)) + wire)
        stream = sock.makefile("rb")
        for _ in range(3):
            (size,) = struct.unpack("!H", stream.read(2))
            got.append(dns.message.from_wire(stream.read(size), xfr=True))
    ttl_sets = [{rrset.ttl for rrset in message.answer} for message in got]
    assert len(ttl_sets[0]) == 1 and ttl_sets[0] == ttl_sets[1] == ttl_sets[2]
    assert ttl_sets[0] != {300} and ttl_sets[0] != {900}


def test_a_hit_too_large_for_the_client_is_truncated(serve):
    srv = serve()
    many = [f"192.0.2.{i}" for i in range(1, 60)]
    srv.upstream.table[b"big.example.org"] = lambda r: Reply(
        0, answers=[a(r.lname, x, 100) for x in many])
    full = srv.ask("big.example.org", tcp=True)
    assert len(addresses(full)) == 59
    small = srv.ask("big.example.org")
    assert small.flags & dns.flags.TC and 0 < len(addresses(small)) < 59
    assert srv.upstream.asked[b"big.example.org"] == 1


def test_the_key_is_the_lower_case_name_and_a_hit_echoes_the_askers_case(serve):
    """DNS 0x20 clients (Unbound's randomised case) share CoreDNS's one entry: a hit
    carries the client's own question, the first asker's records."""
    srv = serve()
    srv.upstream.table[b"www.example.org"] = lambda r: Reply(
        0, answers=[a(r.qname, "192.0.2.1", 100)], flags=RA, plugin="forward")
    first = srv.ask("www.example.org")
    hit = srv.ask("WwW.ExAmPlE.oRg")
    assert srv.upstream.asked[b"www.example.org"] == 1
    assert hit.question[0].name.to_text() == "WwW.ExAmPlE.oRg."
    assert hit.answer[0].name == dns.name.from_text("www.example.org")  # either case
    assert hit.flags & dns.flags.AA and addresses(hit) == addresses(first)
    for variant in ("WWW.EXAMPLE.ORG", "wWw.example.ORG", "Www.Example.Org"):
        again = srv.ask(variant, use_edns=0)
        assert again.question[0].name.to_text() == variant + "."
    assert srv.upstream.asked[b"www.example.org"] == 1
    assert len(srv.cache.buckets["success"]) == 1          # a case flood is one entry


def test_a_truncated_hit_echoes_the_askers_case(serve):
    srv = serve()
    many = [f"192.0.2.{i}" for i in range(1, 60)]
    srv.upstream.table[b"big.example.org"] = lambda r: Reply(
        0, answers=[a(r.lname, x, 100) for x in many])
    srv.ask("big.example.org", tcp=True)
    small = srv.ask("BIG.Example.org")
    assert small.flags & dns.flags.TC and 0 < len(addresses(small)) < 59
    assert small.question[0].name.to_text() == "BIG.Example.org."
    assert srv.upstream.asked[b"big.example.org"] == 1


def test_the_memo_of_a_disabled_zone_keeps_the_name_as_sent(serve):
    """Where the cache keeps no entry, a stanza-like answer (``cache`` deps) is memoized
    byte for byte as a fresh answer: under the name as sent."""
    srv = serve("30 {\n disable success sub.example.org\n }")
    srv.upstream.table[b"www.sub.example.org"] = lambda r: Reply(
        0, answers=[a(r.qname, "192.0.2.1", 100)], cache=())
    for _ in range(2):
        assert ttls(srv.ask("www.sub.example.org")) == [30]
    assert srv.upstream.asked[b"www.sub.example.org"] == 1
    for _ in range(2):
        mixed = srv.ask("WWW.sub.example.org")
        assert mixed.answer[0].name.to_text() == "WWW.sub.example.org."
    assert srv.upstream.asked[b"www.sub.example.org"] == 2
    assert srv.ask("www.sub.example.org").answer[0].name.to_text() == "www.sub.example.org."
    assert srv.upstream.asked[b"www.sub.example.org"] == 2


# -- which names and types ------------------------------------------------------------------


def test_disable_keeps_nothing_of_that_type_but_still_sets_the_ttl(serve):
    srv = serve("30 {\n disable success sub.example.org\n }")
    srv.upstream.table[b"www.sub.example.org"] = addr("192.0.2.1", 100)
    for _ in range(2):
        assert ttls(srv.ask("www.sub.example.org")) == [30]
        assert srv.ask("gone.sub.example.org").rcode() == dns.rcode.NXDOMAIN
    assert srv.upstream.asked[b"www.sub.example.org"] == 2
    assert srv.upstream.asked[b"gone.sub.example.org"] == 1        # denials still kept


def test_names_outside_the_cache_zones_pass_untouched(serve):
    srv = serve("30 sub.example.org")
    srv.upstream.table[b"www.example.org"] = addr("192.0.2.1", 100)
    for _ in range(2):
        assert ttls(srv.ask("www.example.org")) == [100]
    assert srv.upstream.asked[b"www.example.org"] == 2


def test_capacity_evicts_and_the_entries_stay_bounded(serve):
    srv = serve("{\n success 1024\n }", zone="capacity.test")
    for i in range(1030):
        srv.upstream.table[f"n{i}.capacity.test".encode()] = addr("192.0.2.1", 100)
        srv.ask(f"n{i}.capacity.test")
    assert len(srv.cache.buckets["success"]) == 1024
    assert metric("coredns_cache_entries", type="success", zones="capacity.test.") == 1024
    assert metric("coredns_cache_evictions_total", type="success",
                  zones="capacity.test.") == 6
    srv.ask("n0.capacity.test")                                   # the oldest went first
    srv.ask("n1029.capacity.test")
    assert srv.upstream.asked[b"n0.capacity.test"] == 2
    assert srv.upstream.asked[b"n1029.capacity.test"] == 1


def test_bounded_in_bytes_too(serve):
    srv = serve()
    srv.store.max_bytes = 64 * 1024
    for i in range(200):
        srv.upstream.table[f"n{i}.example.org".encode()] = lambda r: Reply(
            0, answers=[a(r.lname, f"192.0.2.{k}", 100) for k in range(1, 20)])
        srv.ask(f"n{i}.example.org", tcp=True)
    assert srv.store.bytes <= 64 * 1024
    assert len(srv.cache.buckets["success"]) == len(srv.store.entries) < 200


# -- prefetch and serve_stale -----------------------------------------------------------


def test_prefetch_refreshes_a_popular_entry_before_it_expires(serve):
    srv = serve("{\n prefetch 1\n }")
    served = iter(["127.0.0.1", "127.0.0.2", "127.0.0.3"])
    srv.upstream.table[b"hits.example.org"] = lambda r: Reply(
        0, answers=[a(r.lname, next(served), 80)])
    assert ttls(srv.ask("hits.example.org")) == [80]
    srv.later(73)
    hit = srv.ask("hits.example.org")                  # TTL 7 <= 10% of 80: prefetched
    assert ttls(hit) == [7] and addresses(hit) == ["127.0.0.1"]
    assert srv.upstream.asked[b"hits.example.org"] == 2
    srv.later(7)
    fresh = srv.ask("hits.example.org")
    assert addresses(fresh) == ["127.0.0.2"] and ttls(fresh) == [73]
    assert metric("coredns_cache_prefetch_total", zones="example.org.") >= 1


def test_serve_stale_immediate_answers_ttl_0_and_refreshes(serve):
    srv = serve("{\n serve_stale 1h\n }")
    served = iter(["127.0.0.1", "127.0.0.2"])
    srv.upstream.table[b"old.example.org"] = lambda r: Reply(
        0, answers=[a(r.lname, next(served), 10)])
    srv.ask("old.example.org")
    srv.later(20)
    stale = srv.ask("old.example.org")
    assert addresses(stale) == ["127.0.0.1"] and ttls(stale) == [0]
    assert srv.upstream.asked[b"old.example.org"] == 2
    fresh = srv.ask("old.example.org")
    assert addresses(fresh) == ["127.0.0.2"] and ttls(fresh) == [10]
    assert metric("coredns_cache_served_stale_total", zones="example.org.") >= 1


def test_serve_stale_verify_sends_stale_only_when_the_refresh_fails(serve):
    srv = serve("{\n serve_stale 1h verify 0 30s\n }")
    state = {"up": True}
    srv.upstream.table[b"v.example.org"] = lambda r: (
        Reply(0, answers=[a(r.lname, "192.0.2.1", 10)]) if state["up"] else Reply(2))
    srv.ask("v.example.org")
    srv.later(20)
    state["up"] = False
    stale = srv.ask("v.example.org")
    assert stale.rcode() == dns.rcode.NOERROR and ttls(stale) == [30]  # RESPONSE_TTL
    state["up"] = True
    fresh = srv.ask("v.example.org")
    assert ttls(fresh) == [10] and srv.upstream.asked[b"v.example.org"] == 3


def test_a_verify_refresh_failing_after_its_timeout_is_retried_after_the_recheck(serve):
    """The stale entry goes out at VERIFY_TIMEOUT; the refresh failing later still ends it,
    so once FAILURE_RECHECK has passed the entry is refreshed again."""
    srv = serve("{\n serve_stale 1h verify 50ms 30s 10s\n }")
    pending: list[defer.Deferred[Reply]] = []

    def slow(request: Request) -> defer.Deferred[Reply]:
        pending.append(defer.Deferred())
        return pending[-1]
    srv.upstream.table[b"late.example.org"] = addr("192.0.2.1", 10)
    srv.ask("late.example.org")
    srv.later(20)
    srv.upstream.table[b"late.example.org"] = slow
    stale = srv.ask("late.example.org")                   # the timeout answers
    assert addresses(stale) == ["192.0.2.1"] and ttls(stale) == [30]
    reactor_thread.in_reactor(lambda: pending[0].errback(RuntimeError("upstream gone")))
    srv.later(11)                                           # past FAILURE_RECHECK
    srv.upstream.table[b"late.example.org"] = addr("192.0.2.2", 10)
    fresh = srv.ask("late.example.org")
    assert addresses(fresh) == ["192.0.2.2"] and ttls(fresh) == [10]
    assert srv.upstream.asked[b"late.example.org"] == 3


# -- metrics --------------------------------------------------------------------------------


def test_requests_hits_and_misses_are_counted(serve):
    srv = serve("{\n success 2048\n }", zone="metrics.test")
    srv.upstream.table[b"m.metrics.test"] = addr("192.0.2.1", 100)
    for _ in range(3):
        srv.ask("m.metrics.test")
    labels = {"zones": "metrics.test."}
    assert metric("coredns_cache_requests_total", **labels) == 3
    assert metric("coredns_cache_misses_total", **labels) == 1
    assert metric("coredns_cache_hits_total", type="success", **labels) == 2
    assert metric("coredns_cache_entries", type="success", **labels) == 1


# -- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("cache 0", "cache TTL can not be zero or negative: 0"),
    ("cache {\n success\n }", "Wrong argument count"),
    ("cache {\n success x\n }", 'strconv.Atoi: parsing "x": invalid syntax'),
    ("cache {\n denial 10 0\n }", "cache TTL can not be zero or negative: 0"),
    ("cache {\n success 10 10 -1\n }", "cache min TTL can not be negative: -1"),
    ("cache {\n prefetch 1 1m 5%\n }", "percentage should fall in range [10, 90]: 5"),
    ("cache {\n prefetch 1 1m 50\n }", "last character of percentage should be"),
    ("cache {\n serve_stale 1h sometimes\n }", "invalid value for serve_stale refresh mode"),
    ("cache {\n servfail 10m\n }", "caching SERVFAIL responses over 5 minutes"),
    ("cache {\n disable both\n }", 'cache type for disable must be "success" or "denial"'),
    ("cache {\n keepttl yes\n }", "Wrong argument count"),
    ("cache {\n nonsense\n }", "Wrong argument count"),
])
def test_corefile_mistakes_name_the_line(text: str, message: str) -> None:
    block = parse_corefile(f"example.org {{\n{text}\n}}\n")[0]
    with pytest.raises(CorefileError) as caught:
        parse(block.directives[0], ("example.org.",))
    assert message in str(caught.value) and "plugin/cache: " in str(caught.value)
    assert caught.value.line >= 2


def test_defaults_and_options_parse() -> None:
    block = parse_corefile("example.org {\n cache 30 a.example.org {\n prefetch 2 30s 20%\n"
                           " serve_stale 10m verify 100ms 30s 1m\n disable success\n"
                           " denial 500 60 1\n }\n}\n")[0]
    config = parse(block.directives[0])
    assert config.zones == ("a.example.org.",) and config.pttl == 30
    assert (config.ncap, config.nttl, config.minnttl) == (500, 60, 1)
    assert (config.prefetch, config.duration, config.percentage) == (2, 30.0, 20)
    assert (config.stale_up_to, config.verify_stale, config.verify_timeout,
            config.stale_ttl, config.stale_recheck) == (600.0, True, 0.1, 30, 60.0)
    assert config.pexcept == (".",)


# -- Corefiles: whoami, a cluster, and blocks without `cache` --------------------------------


def _start(tmp_path: Path, text: str) -> tuple[Any, int]:
    path = tmp_path / "Corefile"
    path.write_text(text)
    return start_server(path)


def test_whoami_answers_are_cached_with_a_directive_only(reactor_running, tmp_path):
    service, port = _start(tmp_path, ".:53 {\n    whoami\n}\n")
    try:
        first, second = ask(port, "who.example.org"), ask(port, "who.example.org")
        # Each answer names its own client port: nothing kept without `cache`.
        assert first.additional != second.additional and ttls(first) == [0, 0]
    finally:
        reactor_thread.in_reactor(service.stopService)
    (tmp_path / "b").mkdir()
    service, port = _start(tmp_path / "b", ".:53 {\n    cache 10\n    whoami\n}\n")
    try:
        first, second = ask(port, "who.example.org"), ask(port, "who.example.org")
        assert first.additional == second.additional and ttls(first) == [5, 5]
    finally:
        reactor_thread.in_reactor(service.stopService)


def test_forward_like_answers_are_not_memoized_without_a_directive(reactor_running):
    """The implicit memo keeps only what a producer marked cacheable."""
    from kubernetai.app.load import cache_stages
    upstream = Upstream()
    upstream.table[b"www.example.org"] = addr("192.0.2.1", 100)
    store = WireCache()
    stages = [Stage("whoami", position("whoami"), 1, handler=upstream)]
    pipeline = BlockPipeline(cache_stages(stages, store))
    factory = KubernetaiServerFactory({"example.org": pipeline})
    ports = reactor_thread.in_reactor(listen, factory, "127.0.0.1", 0)
    try:
        for _ in range(2):
            assert ttls(ask(ports[0].getHost().port, "www.example.org")) == [100]
        assert upstream.asked[b"www.example.org"] == 2 and not store.entries
    finally:
        reactor_thread.in_reactor(lambda: defer.gatherResults(
            [defer.maybeDeferred(port.stopListening) for port in ports]))


CLUSTER = """\
cluster.local:53 {{
    bind 127.0.0.1
    kubernetai cluster.local {{
        endpoint {url}
        ttl 30
    }}
    cache {options}
}}
"""


@pytest.mark.parametrize("options", [
    "30 {\n        disable success cluster.local\n        disable denial cluster.local\n    }",
    "300"], ids=["kubeadm", "kept"])
def test_cluster_answers_never_outlive_a_change(sandbox, tmp_path, options):
    sandbox.apply(EXAMPLES / "cluster.local")
    service, port = _start(tmp_path, CLUSTER.format(url=sandbox.url, options=options))
    store = service.cache
    clock = Clock()
    store.clock = clock
    name = "later.shop.svc.cluster.local"
    try:
        assert ask(port, name).rcode() == dns.rcode.NXDOMAIN
        first = ask(port, "web.shared.svc.cluster.local")
        assert answers(first) and first.answer[0].ttl == 30
        clock.now += 10
        again = ask(port, "web.shared.svc.cluster.local")
        kubeadm = "disable" in options
        # kubeadm's lines: no CoreDNS entry, TTL 30 always; else counted down.
        assert again.answer[0].ttl == (30 if kubeadm else 20)
        assert ask(port, name).rcode() == dns.rcode.NXDOMAIN
        sandbox.apply({"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": "later", "namespace": "shop"},
                       "spec": {"clusterIP": "10.96.66.6", "ports": [{"port": 80}]}})
        wait_for(lambda: answers(ask(port, name)) == ["10.96.66.6"])
    finally:
        reactor_thread.in_reactor(service.stopService)
