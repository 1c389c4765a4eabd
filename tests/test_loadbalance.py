"""loadbalance: records reordered as CoreDNS's policies order them, on every path.

End to end: a kubernetai stanza on a sandbox cluster behind `loadbalance`, asked over UDP
and TCP with dnspython: a headless service's A records come back in changing orders (the
same set), cache hits included (the implicit answer cache stands after `loadbalance`, so
those are reordered as bytes, on the early path); an ExternalName's CNAME stays first.
Then the wire reordering on its own: the fast path (byte ranges moved) and the slow one
(a pointer into a record that moves: an MX answer with glue in the additional section),
the OPT record left last; the records path, the other policies and the directive.
"""

from __future__ import annotations

import ipaddress
import random
import time
from pathlib import Path
from typing import Any, Iterator

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from conftest import EXAMPLES
from test_e2e import start_server
from twisted.names import dns as tdns

from kubernetai.core.codec import parse_request, render
from kubernetai.core.plugin import position
from kubernetai.core.registry import BlockBuilder, Registry
from kubernetai.core.request import Reply, Request
from kubernetai.corefile import CorefileError, parse
from kubernetai.pkg import reactor_thread
from kubernetai.plugins.loadbalance.handler import LoadbalanceHandler
from kubernetai.plugins.loadbalance.policy import Prefer, RoundRobin, Weighted
from kubernetai.plugins.loadbalance.weights import WeightFileError, parse_weights
from kubernetai.plugins.loadbalance.wire import reorder, scan
from kubernetai.sandbox.server import Sandbox

COREFILE = """\
cluster.local {{
    bind 127.0.0.1
    loadbalance
    kubernetai cluster.local {{
        endpoint {url}
    }}
}}
"""

ALIAS = {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "alias", "namespace": "default"},
         "spec": {"type": "ExternalName", "externalName": "nginx.default.svc.cluster.local"}}


@pytest.fixture(scope="module")
def server(reactor_running: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    cluster = Sandbox(bookmark_interval=1.0, history_size=50)
    cluster.apply(EXAMPLES / "cluster.local")
    cluster.apply([ALIAS])
    cluster.start()
    path = tmp_path_factory.mktemp("loadbalance") / "Corefile"
    path.write_text(COREFILE.format(url=cluster.url))
    service, port = start_server(path)
    yield port
    reactor_thread.in_reactor(service.stopService)
    cluster.stop()


def ask(port: int, name: str, rdtype: str = "A", tcp: bool = False,
        **kwargs: Any) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kwargs)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, "127.0.0.1", port=port, timeout=5)


def order(response: dns.message.Message) -> tuple[tuple[str, str], ...]:
    """The answer records in wire order (dnspython keeps it within an rrset)."""
    return tuple((rrset.rdtype.name, rr.to_text()) for rrset in response.answer
                 for rr in rrset)


NGINX = {("A", "10.244.1.10"), ("A", "10.244.1.11"), ("A", "10.244.2.10")}


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_headless_answers_change_order_same_set(server: int, tcp: bool) -> None:
    seen = set()
    for _ in range(60):                  # 6 orders: all seen within 60 tries but for ~1e-3
        response = ask(server, "nginx.default.svc.cluster.local", tcp=tcp)
        assert response.rcode() == dns.rcode.NOERROR
        assert set(order(response)) == NGINX and len(order(response)) == 3
        seen.add(order(response))
        if len(seen) >= 4:
            break
    assert len(seen) >= 4, seen


def test_cache_hits_are_shuffled_too(server: int) -> None:
    """Cache hits keep their TTL countdown elsewhere; here: the cached answer comes back
    in changing orders (it is stored once, reordered on every hit), with EDNS too."""
    first = ask(server, "web-0.nginx.default.svc.cluster.local")   # (one record: as is)
    assert order(first) == (("A", "10.244.1.10"),)
    seen = set()
    for _ in range(60):
        response = ask(server, "nginx.default.svc.cluster.local", use_edns=0, payload=1232)
        assert response.edns == 0 and set(order(response)) == NGINX
        seen.add(order(response))
        if len(seen) >= 4:
            break
    assert len(seen) >= 4


def test_cname_stays_first(server: int) -> None:
    seen = set()
    for _ in range(40):
        response = ask(server, "alias.default.svc.cluster.local")
        records = order(response)
        assert records[0] == ("CNAME", "nginx.default.svc.cluster.local.")
        assert set(records[1:]) == NGINX
        seen.add(records)
        if len(seen) >= 3:
            break
    assert len(seen) >= 3


# --- the wire, on its own ------------------------------------------------------------------

def _request(name: str, rdtype: str = "A", **kwargs: Any) -> Request:
    wire = dns.message.make_query(name, rdtype, **kwargs).to_wire()
    request = parse_request(wire, True)
    assert isinstance(request, Request)
    request.limit = 65535
    return request


def _rr(name: str, rdtype: int, payload: Any, ttl: int = 30) -> tdns.RRHeader:
    return tdns.RRHeader(name, rdtype, tdns.IN, ttl, payload)


def _encoded(name: str, answers: list[tdns.RRHeader], additional: list[tdns.RRHeader] = (),
             rdtype: str = "A", **kwargs: Any) -> tuple[Request, bytes]:
    request = _request(name, rdtype, **kwargs)
    return request, render(request, 0, True, answers, (), additional)


def _parsed(wire: bytes) -> dns.message.Message:
    return dns.message.from_wire(wire)


def _many(count: int, name: str = "svc.example.org") -> list[tdns.RRHeader]:
    return [_rr(name, tdns.A, tdns.Record_A(f"10.0.0.{i + 1}")) for i in range(count)]


def test_fast_path_permutes_byte_ranges() -> None:
    request, wire = _encoded("svc.example.org", _many(5), use_edns=0)
    layout = scan(wire)
    assert layout is not None and layout.reach <= layout.sections[0][0] + 1
    seen = set()
    for _ in range(50):
        out = reorder(wire, RoundRobin(), 1)
        assert len(out) == len(wire) and out[:12] == wire[:12]
        message = _parsed(out)
        assert message.edns == 0                           # the OPT record untouched
        seen.add(tuple(rr.address for rr in message.answer[0]))
    assert len(seen) > 10 and {frozenset(s) for s in seen} == {
        frozenset(f"10.0.0.{i + 1}" for i in range(5))}


def test_a_pointer_into_a_moved_record_takes_the_slow_path() -> None:
    """MX answers whose exchanges the glue A records point into: moving the MX records
    would break those pointers, so the message is decoded and encoded again."""
    mx = [_rr("example.org", tdns.MX, tdns.Record_MX(10 * (i + 1), f"mx{i}.example.org"))
          for i in range(3)]
    glue = [_rr(f"mx{i}.example.org", tdns.A, tdns.Record_A(f"192.0.2.{i + 1}"))
            for i in range(3)]
    request, wire = _encoded("example.org", mx, glue, "MX", use_edns=0)
    layout = scan(wire)
    assert layout is not None and layout.reach > layout.sections[0][2][0].start
    expected = _parsed(wire)
    want_glue = {(rrset.name.to_text(), rr.address) for rrset in expected.additional
                 for rr in rrset}
    seen = set()
    for _ in range(60):
        out = reorder(wire, RoundRobin(), 15, request.limit)
        message = _parsed(out)                             # the pointers all still hold
        got = tuple((rr.preference, rr.exchange.to_text()) for rr in message.answer[0])
        assert sorted(got) == [(10, "mx0.example.org."), (20, "mx1.example.org."),
                               (30, "mx2.example.org.")]
        assert {(rrset.name.to_text(), rr.address) for rrset in message.additional
                for rr in rrset} == want_glue
        assert message.edns == 0 and message.id == expected.id
        assert message.question == expected.question
        seen.add(got)
    assert len(seen) >= 4


def test_cname_first_and_other_types_before_addresses_on_the_wire() -> None:
    answers = [_rr("svc.example.org", tdns.A, tdns.Record_A("10.0.0.1")),
               _rr("alias.example.org", tdns.CNAME, tdns.Record_CNAME("svc.example.org")),
               _rr("svc.example.org", tdns.A, tdns.Record_A("10.0.0.2")),
               _rr("svc.example.org", tdns.TXT, tdns.Record_TXT(b"x"))]
    request, wire = _encoded("alias.example.org", answers)
    for _ in range(10):
        message = _parsed(reorder(wire, RoundRobin(), 1))
        kinds = [rrset.rdtype for rrset in message.answer]
        assert kinds[:2] == [dns.rdatatype.CNAME, dns.rdatatype.TXT]


def test_what_is_left_alone() -> None:
    handler = LoadbalanceHandler(RoundRobin())
    request, wire = _encoded("svc.example.org", _many(4))
    nx = wire[:3] + bytes([wire[3] | 3]) + wire[4:]
    assert handler.filter_early(request, nx) is nx                     # not NOERROR
    one_request, one = _encoded("svc.example.org", _many(1))
    assert reorder(one, RoundRobin(), 1) == one                         # one record
    axfr = _request("example.org", "AXFR")
    assert handler.filter_early(axfr, wire) is wire                    # a zone transfer
    assert reorder(b"\x00" * 5, RoundRobin(), 1) == b"\x00" * 5        # garbage
    truncated = wire[:-3]
    assert reorder(truncated, RoundRobin(), 1) is truncated


def test_records_path_orders_copies() -> None:
    handler = LoadbalanceHandler(RoundRobin())
    answers = [_rr("a.example.org", tdns.CNAME, tdns.Record_CNAME("svc.example.org"))
               ] + _many(4)
    kept = list(answers)
    seen = set()
    for _ in range(40):
        reply = handler.serve(_request("a.example.org"), lambda r: Reply(0, True, answers))
        assert isinstance(reply, Reply) and reply.answers[0] is answers[0]
        seen.add(tuple(id(rr) for rr in reply.answers))
    assert answers == kept and len(seen) > 5


def test_weighted_top_record_follows_the_weights() -> None:
    weights = parse_weights("# comment\nsvc.example.org\n10.0.0.1 3\n10.0.0.2 1\n"
                            "10.0.0.3 2\n", "w")
    policy = Weighted(weights, random.Random(7))
    request, wire = _encoded("svc.example.org", _many(3))
    tops: dict[str, int] = {}
    for _ in range(1200):
        top = _parsed(reorder(wire, policy, 1)).answer[0][0].address
        tops[top] = tops.get(top, 0) + 1
    assert 520 < tops["10.0.0.1"] < 680 and 130 < tops["10.0.0.2"] < 270
    assert reorder(wire, policy, 16) == wire                  # TXT question: not touched


@pytest.mark.parametrize("text, message", [
    ("10.0.0.1\n", 'wrong domain name:"10.0.0.1" in weight file w. (Maybe a missing weight '
                   'value?)'),
    ("a.org\nnot-ip 3\n", 'wrong IP address:"not-ip" in weight file w'),
    ("a.org\n10.0.0.1 0\n", 'wrong weight value:"0" in weight file w'),
    ("a.org\n10.0.0.1 256\n", 'wrong weight value:"256" in weight file w'),
    ("10.0.0.1 3\n", "missing domain name in weight file w"),
    ("a.org\n10.0.0.1 3 4\n", 'could not parse weight line:"10.0.0.1 3 4" in weight file w'),
])
def test_weight_file_errors(text: str, message: str) -> None:
    with pytest.raises(WeightFileError) as caught:
        parse_weights(text, "w")
    assert str(caught.value) == message


def test_prefer_puts_the_subnets_first() -> None:
    answers = [_rr("svc.example.org", tdns.A, tdns.Record_A(ip))
               for ip in ("10.0.0.1", "192.168.1.5", "10.9.20.7", "172.16.0.1")]
    policy = Prefer(RoundRobin(), [ipaddress.ip_network("10.9.20.0/24"),
                                   ipaddress.ip_network("192.168.1.0/24")])
    request, wire = _encoded("svc.example.org", answers)
    for _ in range(10):
        got = [rr.address for rr in _parsed(reorder(wire, policy, 1)).answer[0]]
        assert got[:2] == ["10.9.20.7", "192.168.1.5"]


# --- the directive ---------------------------------------------------------------------------

def _set_up(text: str) -> BlockBuilder:
    (block,) = parse(text)
    return Registry().set_up_block(block, BlockBuilder(block, ("example.org.",)))


def test_directive_policies(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    weights.write_text("www.example.org\n100.64.1.1 3\n")
    handler = _set_up(f"example.org {{\n    loadbalance weighted {weights} {{\n"
                      "        reload 10s\n    }\n}\n").stages[0].handler
    assert isinstance(handler.policy, Weighted)
    assert handler.policy.weights == {"www.example.org.": {bytes([100, 64, 1, 1]): 3}}
    builder = _set_up("example.org {\n    loadbalance round_robin {\n"
                      "        prefer 10.9.20.0/24 192.168.1.0/24\n    }\n}\n")
    assert isinstance(builder.stages[0].handler.policy, Prefer)
    missing = _set_up(f"example.org {{\n    loadbalance weighted {tmp_path / 'nope'}\n}}\n")
    assert missing.warnings == ["plugin/loadbalance: Failed to open weight file:weight file "
                                "open error. Will try again in 30s"]
    stage = _set_up("example.org {\n    loadbalance\n}\n").stages[0]
    assert stage.position < position("cache")          # so cache hits come back through it


@pytest.mark.parametrize("body, token, message", [
    ("loadbalance round_robin x", "x", "loadbalance: unknown property for round_robin"),
    ("loadbalance weighted", "weighted", "loadbalance: missing weight file argument"),
    ("loadbalance weighted a b", "b", "loadbalance: unexpected argument(s)"),
    ("loadbalance random", "random", "loadbalance: unknown policy: random"),
    ("loadbalance {\n        reload 1s\n    }", "reload",
     "loadbalance: unknown property 'reload'"),
    ("loadbalance {\n        prefer 10.0.0.1\n    }", "10.0.0.1",
     'loadbalance: invalid CIDR "10.0.0.1": invalid CIDR address: 10.0.0.1'),
    ("loadbalance weighted /nonexistent {\n        reload\n    }", "reload",
     "loadbalance: reload duration value is missing"),
    ("loadbalance weighted /nonexistent {\n        reload 5\n    }", "5",
     "loadbalance: invalid reload duration '5'"),
    ("loadbalance weighted /nonexistent {\n        prefer 10.0.0.0/8\n    }", "prefer",
     "loadbalance: unknown property 'prefer'"),
    ("loadbalance weighted /nonexistent {\n        reload 0s\n    }", "/nonexistent",
     "loadbalance: weight file open error"),
])
def test_directive_errors(body: str, token: str, message: str) -> None:
    with pytest.raises(CorefileError) as caught:
        _set_up(f"example.org {{\n    {body}\n}}\n")
    assert caught.value.message == message and caught.value.token == token


def test_a_brief_bench() -> None:
    """Not a wall-clock assertion: prints what a cache hit's reordering costs."""
    request, wire = _encoded("nginx.default.svc.cluster.local", _many(3), use_edns=0)
    policy = RoundRobin()
    count = 20_000
    started = time.perf_counter()
    for _ in range(count):
        reorder(wire, policy, 1)
    each = (time.perf_counter() - started) / count
    print(f"\nreorder, 3 A records: {each * 1e6:.1f} us per hit")


def test_the_cache_keeps_its_early_path_behind_loadbalance() -> None:
    from kubernetai.core.pipeline import BlockPipeline, Stage
    from kubernetai.core.wirecache import WireCache, WireCacheHandler
    handler = LoadbalanceHandler(RoundRobin())
    pipeline = BlockPipeline([
        Stage("loadbalance", position("loadbalance"), 0, handler=handler),
        Stage("cache", position("cache"), 0, handler=WireCacheHandler(WireCache()),
              implicit=True)])
    assert pipeline.early is not None


def test_weight_file_read_again_when_it_changes(tmp_path: Path) -> None:
    from kubernetai.plugins.loadbalance.weights import WeightReloader
    policy = Weighted()
    reloader = WeightReloader(policy, str(tmp_path / "w"), 10.0, b"")
    reloader.update(b"a.org\n10.0.0.1 5\n")
    assert policy.weights == {"a.org.": {bytes([10, 0, 0, 1]): 5}}
    reloader.update(b"a.org\n10.0.0.1 0\n")             # does not parse: weights kept
    assert policy.weights == {"a.org.": {bytes([10, 0, 0, 1]): 5}}
    reloader.update(b"b.org\n10.0.0.2 7\n")
    assert policy.weights == {"b.org.": {bytes([10, 0, 0, 2]): 7}}
