"""The metric store, CoreDNS's per-query metrics as the server and the `prometheus` step count
them, and the text format `/metrics` writes (parsed back with prometheus_client's parser)."""

from __future__ import annotations

from typing import Any

import dns.message
import dns.rcode
import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.names import dns as tdns

from kubernetai.core.dnsserver import (
    PANICS,
    KubernetaiServerFactory,
    metrics_source,
    server_label,
)
from kubernetai.core.metrics import (
    DNS_REQUESTS,
    DROPPED,
    SIZE_BUCKETS,
    TIME_BUCKETS,
    Counter,
    DNSRequests,
    Histogram,
    MetricStore,
)
from kubernetai.core.pipeline import BlockPipeline, Stage
from kubernetai.core.plugin import position
from kubernetai.core.request import Reply, Request
from kubernetai.core.wirecache import WireCache, WireCacheHandler
from kubernetai.plugins.prometheus.exposition import StoreCollector, go_float, render_metrics
from kubernetai.plugins.prometheus.handler import MetricsHandler

SOURCE = ("dns://127.0.0.1:53", True, 1)


def families(metrics: list[Any]) -> dict[str, Any]:
    return {metric.name: metric for metric in metrics}


# -- the store ------------------------------------------------------------------------------


def test_store_gives_the_same_metric_by_name_and_refuses_another_shape() -> None:
    store = MetricStore()
    first = store.counter("x_total", "help", ("a",))
    first.inc(("1",))
    again = store.counter("x_total", "other help", ("a",))
    again.inc(("1",), 2)
    assert first is again and first.values == {("1",): 3}
    with pytest.raises(ValueError):
        store.counter("x_total", "help", ("b",))
    with pytest.raises(ValueError):
        store.gauge("x_total", "help", ("a",))


def test_collectors_replace_and_remove_by_key() -> None:
    store = MetricStore()
    store.collect("k", lambda: [Counter("a_total", "h", ())])
    store.collect("k", lambda: [Counter("b_total", "h", ())])
    assert [m.name for m in store] == ["b_total"]
    store.collect("k", None)
    assert list(store) == []


# -- DNSRequests ----------------------------------------------------------------------------


def test_counts_under_coredns_labels() -> None:
    requests = DNSRequests()
    requests.report(SOURCE, b"cluster.local", 1, False, 0, "kubernetai", 40, 90, 0.0001)
    requests.report(SOURCE, b"cluster.local", 1, True, 0, "cache", 40, 90, 0.0003)
    requests.report(("dns://:53", False, 2), b"", 99, False, 3, "whoami", 300, 600, 0.01)
    got = families(requests.metrics())
    assert got["coredns_dns_requests_total"].values == {
        ("dns://127.0.0.1:53", "cluster.local.", "", "udp", "1", "A"): 2,
        ("dns://:53", ".", "", "tcp", "2", "other"): 1}
    assert got["coredns_dns_do_requests_total"].values == {
        ("dns://127.0.0.1:53", "cluster.local.", ""): 1}
    assert got["coredns_dns_responses_total"].values == {
        ("dns://127.0.0.1:53", "cluster.local.", "", "NOERROR", "kubernetai"): 1,
        ("dns://127.0.0.1:53", "cluster.local.", "", "NOERROR", "cache"): 1,
        ("dns://:53", ".", "", "NXDOMAIN", "whoami"): 1}
    duration = got["coredns_dns_request_duration_seconds"]
    assert duration.buckets == TIME_BUCKETS and len(TIME_BUCKETS) == 16
    counts, total = duration.cumulative(("dns://127.0.0.1:53", "cluster.local.", ""))
    assert counts[0] == 1 and counts[1] == 2 and counts[-1] == 2   # le 0.00025, 0.0005
    assert total == pytest.approx(0.0004)
    size = got["coredns_dns_response_size_bytes"]
    assert size.buckets == SIZE_BUCKETS
    counts, total = size.cumulative(("dns://:53", ".", "", "tcp"))
    assert counts[SIZE_BUCKETS.index(511)] == 0 and counts[SIZE_BUCKETS.index(1023)] == 1
    assert total == 600


def test_folding_keeps_every_count() -> None:
    """More distinct queries than the limit (a client varying its sizes): folded, none lost."""
    requests = DNSRequests()
    requests.limit = 10
    for size in range(100):
        requests.report(SOURCE, b"a", 1, False, 0, "cache", 30 + size, 100, 0.001)
    assert len(requests.queries) <= 10
    got = families(requests.metrics())
    assert got["coredns_dns_requests_total"].values == {
        ("dns://127.0.0.1:53", "a.", "", "udp", "1", "A"): 100}
    counts, total = got["coredns_dns_request_size_bytes"].cumulative(
        ("dns://127.0.0.1:53", "a.", "", "udp"))
    assert counts[-1] == 100 and total == sum(range(30, 130))
    assert counts[SIZE_BUCKETS.index(100)] == 71         # 30..100
    # and counting goes on after a read
    requests.report(SOURCE, b"a", 1, False, 0, "cache", 30, 100, 0.001)
    assert families(requests.metrics())["coredns_dns_requests_total"].values[
        ("dns://127.0.0.1:53", "a.", "", "udp", "1", "A")] == 101


@pytest.mark.parametrize("qtype, label", [(1, "A"), (28, "AAAA"), (33, "SRV"), (65, "HTTPS"),
                                          (64, "SVCB"), (252, "AXFR"), (255, "ANY"),
                                          (99, "other"), (0, "other"), (257, "other")])
def test_type_label(qtype: int, label: str) -> None:
    requests = DNSRequests()
    requests.report(SOURCE, DROPPED, qtype, False, 5, "", 30, 30, 0.0)
    (labels,) = families(requests.metrics())["coredns_dns_requests_total"].values
    assert labels[-1] == label and labels[1] == "dropped"


# -- the text format -------------------------------------------------------------------------


@pytest.mark.parametrize("value, text", [(0.00025, "0.00025"), (8.192, "8.192"), (16e3, "16000"),
                                         (0, "0"), (511, "511"), (1e6, "1e+06"),
                                         (1234567.0, "1.234567e+06"), (1e-5, "1e-05"),
                                         (float("inf"), "+Inf")])
def test_bucket_bounds_written_as_go_writes_them(value: float, text: str) -> None:
    assert go_float(value) == text


def parse(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_store_written_in_the_text_format() -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    store = MetricStore()
    store.counter("quiet_total", "an unlabelled counter never counted")
    store.counter("hits_total", "h", ("zone",)).inc(("a.",), 3)
    hist = store.histogram("took_seconds", "h", ("zone",), (0.5, 1.0))
    hist.observe(("a.",), 0.2)
    hist.observe(("a.",), 2.0)
    store.collect("one", lambda: [Counter("split_total", "h", ("n",), {("1",): 1})])
    store.collect("two", lambda: [Counter("split_total", "h", ("n",), {("2",): 2})])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    assert "quiet_total 0.0" in text
    got = parse(text)
    assert got["hits"].type == "counter"
    assert [(s.labels, s.value) for s in got["hits"].samples if s.name == "hits_total"] == [
        ({"zone": "a."}, 3)]
    # one family of a name, whichever collectors gave its parts
    assert sorted(s.value for s in got["split"].samples if s.name == "split_total") == [1, 2]
    took = {(s.name, s.labels.get("le")): s.value for s in got["took_seconds"].samples}
    assert took[("took_seconds_bucket", "0.5")] == 1
    assert took[("took_seconds_bucket", "1")] == 1
    assert took[("took_seconds_bucket", "+Inf")] == 2
    assert took[("took_seconds_count", None)] == 2
    assert took[("took_seconds_sum", None)] == pytest.approx(2.2)


def test_process_metrics_beside_the_store() -> None:
    got = parse(render_metrics().decode())
    for name in ("coredns_panics", "coredns_dns_requests", "process_cpu_seconds",
                 "process_resident_memory_bytes", "python_info"):
        assert name in got


# -- the server: what no block counts ---------------------------------------------------------


class Socket:
    """A UDP socket of the server as ``handleWire`` sees it."""

    metrics = ("dns://127.0.0.1:53", True, 1)

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendWire(self, wire: bytes, addr: Any) -> None:  # noqa: N802
        self.sent.append(wire)

    def peer(self, addr: Any) -> tuple[str, int]:
        return addr


class Fixed:
    cacheable = True

    def query(self, query: Any, timeout: Any = None) -> defer.Deferred[Any]:
        rr = tdns.RRHeader(query.name.name, tdns.A, ttl=30, auth=True,
                           payload=tdns.Record_A("10.0.0.1"))
        return defer.succeed(([rr], [], []))


class Raising:
    name = "raising"

    def serve(self, request: Request, next: Any) -> Any:
        raise RuntimeError("a bug")


def dropped() -> dict[tuple[str, ...], float]:
    values = families(DNS_REQUESTS.metrics())["coredns_dns_responses_total"].values
    return {labels: value for labels, value in values.items() if labels[1] == "dropped"}


def delta(before: dict[Any, float], after: dict[Any, float]) -> dict[Any, float]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def ask(factory: KubernetaiServerFactory, wire: bytes) -> bytes:
    socket = Socket()
    factory.handleWire(wire, socket, ("127.0.0.1", 5353), True)
    return socket.sent[0] if socket.sent else b""


def query(name: str, rdtype: str = "A", rdclass: str = "IN", **kwargs: Any) -> bytes:
    return dns.message.make_query(name, rdtype, rdclass, **kwargs).to_wire()


@pytest.fixture
def factory() -> KubernetaiServerFactory:
    return KubernetaiServerFactory({"example.org": Fixed()})


def test_refused_outside_every_zone_counts_as_dropped(factory: KubernetaiServerFactory) -> None:
    before = dropped()
    for _ in range(3):
        ask(factory, query("x.example.com"))
    ask(factory, query("x.example.org", "TXT", "CH"))
    assert delta(before, dropped()) == {
        ("dns://127.0.0.1:53", "dropped", "", "REFUSED", ""): 4}


def test_question_less_servfail_counts_as_dropped(factory: KubernetaiServerFactory) -> None:
    before = dropped()
    assert dns.message.from_wire(ask(factory, b"\x00\x07\x01\x00\x00\x01" + b"\0" * 6),
                                 question_only=True).rcode() == dns.rcode.SERVFAIL
    assert delta(before, dropped()) == {
        ("dns://127.0.0.1:53", "dropped", "", "SERVFAIL", ""): 1}


def test_what_miekg_answers_itself_is_not_counted(factory: KubernetaiServerFactory) -> None:
    """FORMERR, NOTIMP and BADVERS never reach CoreDNS's server: not counted."""
    before = dropped()
    formerr = query("a.example.org")[:-3]                      # truncated question
    notimp = bytearray(query("a.example.org"))
    notimp[2] |= 0x28                                          # opcode 5 (UPDATE)
    badvers = dns.message.make_query("a.example.org", "A", use_edns=1).to_wire()
    for wire in (formerr, bytes(notimp), badvers):
        assert ask(factory, wire)
    assert delta(before, dropped()) == {}


def test_a_plugin_exception_is_a_panic_and_dropped() -> None:
    pipeline = BlockPipeline([Stage("raising", position("whoami"), 0, handler=Raising())])
    factory = KubernetaiServerFactory({"example.org": pipeline})
    panics, before = PANICS.values.get((), 0), dropped()
    response = dns.message.from_wire(ask(factory, query("a.example.org")))
    assert response.rcode() == dns.rcode.SERVFAIL
    assert PANICS.values[()] == panics + 1
    assert delta(before, dropped()) == {
        ("dns://127.0.0.1:53", "dropped", "", "SERVFAIL", ""): 1}


@pytest.mark.parametrize("host, label", [("", "dns://:53"), ("::", "dns://:53"),
                                         ("0.0.0.0", "dns://:53"),
                                         ("127.0.0.1", "dns://127.0.0.1:53"),
                                         ("::1", "dns://[::1]:53")])
def test_server_label(host: str, label: str) -> None:
    assert server_label(host, 53) == label


def test_family_of_a_dual_stack_socket_is_each_clients() -> None:
    class DualStack:
        metrics = ("dns://:53", True, 0)
    assert metrics_source(DualStack(), ("::ffff:127.0.0.1", 5, 0, 0)) == ("dns://:53", True, 1)
    assert metrics_source(DualStack(), ("::1", 5, 0, 0)) == ("dns://:53", True, 2)
    assert metrics_source(DualStack(), ("127.0.0.1", 5)) == ("dns://:53", True, 1)
    assert metrics_source(object(), None) is None


# -- the `prometheus` step ----------------------------------------------------------------------


class Whoami:
    name = "whoami"

    def serve(self, request: Request, next: Any) -> Reply:
        rr = tdns.RRHeader(request.qname, tdns.A, ttl=0, auth=True,
                           payload=tdns.Record_A("127.0.0.1"))
        return Reply(0, True, (), (), (rr,))


class Passes:
    name = "errors"

    def serve(self, request: Request, next: Any) -> Any:
        return next(request)


def block(requests: DNSRequests, *, stages: tuple[Stage, ...] = (),
          resolver: Any = None) -> tuple[KubernetaiServerFactory, MetricsHandler]:
    own = list(stages)
    if resolver is not None:
        own.append(Stage("kubernetai", position("kubernetai"), 1, resolver=resolver))
    handler = MetricsHandler(requests, lambda: own)
    own.append(Stage("prometheus", position("prometheus"), 0, handler=handler))
    cache = Stage("cache", position("cache"), 0, handler=WireCacheHandler(WireCache()),
                  implicit=True)
    pipeline = BlockPipeline([*own, cache])
    return KubernetaiServerFactory({"example.org": pipeline}), handler


def responses(requests: DNSRequests) -> dict[tuple[str, ...], float]:
    return dict(families(requests.metrics())["coredns_dns_responses_total"].values)


def test_the_step_counts_who_wrote_each_answer() -> None:
    requests = DNSRequests()
    factory, handler = block(requests, resolver=Fixed())
    assert handler.early is not None                       # the cache follows it directly
    for _ in range(5):
        ask(factory, query("a.example.org"))
    assert responses(requests) == {
        ("dns://127.0.0.1:53", "example.org.", "", "NOERROR", "kubernetai"): 1,
        ("dns://127.0.0.1:53", "example.org.", "", "NOERROR", "cache"): 4}


def test_cache_hits_counted_when_a_handler_stands_in_front_of_the_cache() -> None:
    requests = DNSRequests()
    errors = Stage("errors", position("errors"), 2, handler=Passes())
    factory, handler = block(requests, stages=(errors,), resolver=Fixed())
    assert handler.early is None                           # no early answer to give
    for _ in range(3):
        ask(factory, query("a.example.org"))
    assert responses(requests) == {
        ("dns://127.0.0.1:53", "example.org.", "", "NOERROR", "kubernetai"): 1,
        ("dns://127.0.0.1:53", "example.org.", "", "NOERROR", "cache"): 2}


def test_cache_hits_stay_early_through_a_step_that_does_nothing_for_them() -> None:
    """`errors` does nothing for a cache hit (early_transparent): with it between this step
    and the cache, hits are still answered and counted early, without passing it."""
    class Transparent(Passes):
        early_transparent = True
        served = 0

        def serve(self, request: Request, next: Any) -> Any:
            Transparent.served += 1
            return next(request)
    requests = DNSRequests()
    errors = Stage("errors", position("errors"), 2, handler=Transparent())
    factory, handler = block(requests, stages=(errors,), resolver=Fixed())
    assert handler.early is not None
    for _ in range(4):
        ask(factory, query("a.example.org"))
    assert Transparent.served == 1                         # the miss only
    assert responses(requests) == {
        ("dns://127.0.0.1:53", "example.org.", "", "NOERROR", "kubernetai"): 1,
        ("dns://127.0.0.1:53", "example.org.", "", "NOERROR", "cache"): 3}


def test_an_answer_of_a_handler_after_the_chain_is_its_own() -> None:
    requests = DNSRequests()
    whoami = Stage("whoami", position("whoami"), 2, handler=Whoami())
    factory, _ = block(requests, stages=(whoami,))
    for _ in range(2):
        ask(factory, query("b.example.org", want_dnssec=True))
    assert responses(requests) == {
        ("dns://127.0.0.1:53", "example.org.", "", "NOERROR", "whoami"): 2}
    assert families(requests.metrics())["coredns_dns_do_requests_total"].values == {
        ("dns://127.0.0.1:53", "example.org.", ""): 2}


def test_no_next_plugin_is_written_by_the_server() -> None:
    requests = DNSRequests()
    factory, _ = block(requests)
    assert dns.message.from_wire(ask(factory, query("c.example.org"))).rcode() == \
        dns.rcode.SERVFAIL
    assert responses(requests) == {
        ("dns://127.0.0.1:53", "example.org.", "", "SERVFAIL", ""): 1}


def test_sizes_are_the_bytes_on_the_wire() -> None:
    requests = DNSRequests()
    factory, _ = block(requests, resolver=Fixed())
    sent = [query("a.example.org"), query("a.example.org", want_dnssec=True),
            query("longer-name.example.org")]
    got = [ask(factory, wire) for wire in sent]
    metrics = families(requests.metrics())
    labels = ("dns://127.0.0.1:53", "example.org.", "", "udp")
    request_size: Histogram = metrics["coredns_dns_request_size_bytes"]
    response_size: Histogram = metrics["coredns_dns_response_size_bytes"]
    assert request_size.cumulative(labels)[1] == sum(map(len, sent))
    assert response_size.cumulative(labels)[1] == sum(map(len, got))
    assert metrics["coredns_dns_request_duration_seconds"].cumulative(labels[:3])[0][-1] == 3


def test_a_query_not_from_a_dns_socket_is_not_counted() -> None:
    """explain runs a request through the pipeline with a stand-in for the socket."""
    requests = DNSRequests()
    factory, handler = block(requests, resolver=Fixed())

    class Stand:
        def peer(self, addr: Any) -> Any:
            return addr

        def sendWire(self, wire: bytes, addr: Any) -> None:  # noqa: N802
            pass
    factory.handleWire(query("a.example.org"), Stand(), ("127.0.0.1", 1), True)
    assert responses(requests) == {}


def test_a_miss_asked_early_is_not_looked_up_again() -> None:
    """With the step in front, the cache's early lookup serves the request's whole pass."""
    class Counting(WireCache):
        gets = 0

        def get(self, key: Any) -> bytes | None:
            Counting.gets += 1
            return super().get(key)
    requests = DNSRequests()
    cache = Counting()
    handler = MetricsHandler(requests, lambda: [])
    pipeline = BlockPipeline([
        Stage("prometheus", position("prometheus"), 0, handler=handler),
        Stage("cache", position("cache"), 0, handler=WireCacheHandler(cache), implicit=True),
        Stage("kubernetai", position("kubernetai"), 1, resolver=Fixed())])
    factory = KubernetaiServerFactory({"example.org": pipeline})
    ask(factory, query("a.example.org"))  # the step learns that the cache follows it
    Counting.gets = 0
    for name in ("b.example.org", "c.example.org", "a.example.org"):
        ask(factory, query(name))
    assert Counting.gets == 0
    assert sum(responses(requests).values()) == 4


def test_the_server_label_is_the_listen_address_as_written() -> None:
    """As CoreDNS names its servers: `dns://:53` for a block without `bind`, but
    `dns://0.0.0.0:53` for `bind 0.0.0.0`, though both sockets listen on every address."""
    from kubernetai.app.load import compile_corefile
    from kubernetai.app.server import build_factory
    from kubernetai.corefile import parse

    plans = compile_corefile(parse("a.local:53 {\n    whoami\n}\n"
                                   "b.local:54 {\n    bind 0.0.0.0 ::\n    whoami\n}\n", "x"))
    labels = [build_factory(group).label for plan in plans for group in plan.groups]
    assert labels == ["dns://:53", "dns://0.0.0.0:54", "dns://[::]:54"]


def test_a_socket_counts_under_its_servers_label(reactor_running: None) -> None:
    """The label reaches the metrics of queries over a real UDP socket and TCP connection."""
    import dns.query

    from kubernetai.core.dnsserver import listen
    from kubernetai.pkg.reactor_thread import in_reactor

    requests = DNSRequests()
    factory, _ = block(requests, resolver=Fixed())
    factory.label = "dns://0.0.0.0:53"
    ports = in_reactor(listen, factory, "127.0.0.1", 0)
    try:
        port = ports[0].getHost().port
        dns.query.udp(dns.message.make_query("a.example.org", "A"), "127.0.0.1", port=port,
                      timeout=5)
        dns.query.tcp(dns.message.make_query("a.example.org", "A"), "127.0.0.1", port=port,
                      timeout=5)
    finally:
        for listening in ports:
            in_reactor(listening.stopListening)
    assert {labels[0] for labels in responses(requests)} == {"dns://0.0.0.0:53"}
