"""acl end to end: a Corefile served in-process on loopback, queried with dnspython from
127.0.0.1 and from 127.0.0.2 (another source) and over ::1; allow, block (REFUSED + EDE
Blocked), filter (empty NOERROR + EDE Filtered), drop (no reply), CoreDNS's rule order,
zones, the answer cache's early path, the four counters read from `/metrics`; and the
directive's errors."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any, Iterator

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer

from kubernetai.app.server import KubernetaiService, load_service
from kubernetai.core.registry import BlockBuilder, Registry
from kubernetai.corefile import CorefileError, parse
from kubernetai.pkg.reactor_thread import in_reactor
from kubernetai.plugins.acl.handler import AclHandler
from kubernetai.plugins.acl.rules import client_address
from kubernetai.plugins.acl.rules import decide as rules_decide
from kubernetai.sandbox.ports import free_port
from kubernetai.sandbox.server import Sandbox

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
OTHER = "127.0.0.2"   # a second loopback source address

COREFILE = """\
block.test:{dns} {{
    bind 127.0.0.1
    prometheus 127.0.0.1:{metrics}
    acl {{
        block type A AAAA net 127.0.0.1
    }}
    whoami
}}
filter.test:{dns} {{
    bind 127.0.0.1
    prometheus 127.0.0.1:{metrics}
    acl {{
        filter net 127.0.0.1/32
    }}
    whoami
}}
drop.test:{dns} {{
    bind 127.0.0.1
    prometheus 127.0.0.1:{metrics}
    acl {{
        drop type TXT
    }}
    whoami
}}
rules.test:{dns} {{
    bind 127.0.0.1
    acl inner.rules.test {{
        block net 127.0.0.1
    }}
    acl {{
        allow net 127.0.0.2
        filter type TXT
    }}
    acl {{
        block type MX
    }}
    whoami
}}
cluster.local:{dns} {{
    bind 127.0.0.1
    prometheus 127.0.0.1:{metrics}
    acl {{
        block net 127.0.0.1
    }}
    kubernetai cluster.local {{
        endpoint {url}
    }}
}}
v6.test:{v6} {{
    bind ::1 127.0.0.1
    acl {{
        block net ::1
        filter net 0.0.0.0/0
    }}
    whoami
}}
"""


class Served:
    def __init__(self, directory: Path, url: str) -> None:
        self.dns, self.v6, self.metrics = free_port(), free_port(), free_port()
        path = directory / "Corefile"
        path.write_text(COREFILE.format(dns=self.dns, v6=self.v6, metrics=self.metrics,
                                        url=url))
        self.service: KubernetaiService = in_reactor(load_service, str(path))
        in_reactor(self.service.startService)

        def listening() -> defer.Deferred:
            d: defer.Deferred = defer.Deferred()
            self.service.listening.addBoth(lambda result: (d.callback(result), result)[1])
            return d
        in_reactor(listening)

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        url = f"http://127.0.0.1:{self.metrics}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
        return {(sample.name, frozenset(sample.labels.items())): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples}


@pytest.fixture(scope="module")
def served(reactor_running: None, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Served]:
    sandbox = Sandbox(bookmark_interval=1.0)
    sandbox.apply(EXAMPLES / "cluster.local")
    in_reactor(sandbox.start)
    server = Served(tmp_path_factory.mktemp("acl"), sandbox.url)
    try:
        yield server
    finally:
        in_reactor(server.service.stopService)
        in_reactor(sandbox.stop)


def ask(port: int, name: str, rdtype: str = "A", source: str = "127.0.0.1",
        tcp: bool = False, where: str = "127.0.0.1", timeout: float = 3,
        **options: Any) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **options)
    if tcp:
        return dns.query.tcp(query, where, port=port, source=source, timeout=timeout)
    return dns.query.udp(query, where, port=port, source=source, timeout=timeout)


def answered(reply: dns.message.Message) -> bool:
    """whoami's answer: NOERROR, AA, the client's address in the additional section."""
    return (reply.rcode() == dns.rcode.NOERROR and bool(reply.flags & dns.flags.AA)
            and len(reply.additional) == 2)


def ede(reply: dns.message.Message) -> list[int]:
    return [option.code for option in reply.options if option.otype == dns.edns.EDE]


def moved(before: dict, after: dict, name: str, **match: str) -> dict:
    wanted = set(match.items())
    return {dict(key).get("zone", ""): after[(n, key)] - before.get((n, key), 0)
            for (n, key) in after
            if n == name and wanted <= key and after[(n, key)] != before.get((n, key), 0)}


# -- the actions ----------------------------------------------------------------------------


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_block_refuses_the_matching_type_and_source(served: Served, tcp: bool) -> None:
    reply = ask(served.dns, "Web.Block.Test", "A", tcp=tcp)
    assert reply.rcode() == dns.rcode.REFUSED
    assert not reply.flags & dns.flags.AA and not reply.flags & dns.flags.RA
    assert reply.answer == reply.authority == reply.additional == []
    assert reply.question[0].name.to_text() == "Web.Block.Test."  # echoed as sent
    # CoreDNS's reply: an OPT record even for a client without EDNS (size 4096, DO set)
    # carrying EDE 15 (Blocked).
    assert (reply.edns, reply.payload, ede(reply)) == (0, 4096, [15])
    assert reply.ednsflags & dns.flags.DO
    assert ask(served.dns, "web.block.test", "AAAA", tcp=tcp).rcode() == dns.rcode.REFUSED
    # Another type, or another source: whoami answers.
    assert answered(ask(served.dns, "web.block.test", "TXT", tcp=tcp))
    assert answered(ask(served.dns, "web.block.test", "A", source=OTHER, tcp=tcp))


def test_block_opt_follows_the_clients_edns(served: Served) -> None:
    reply = ask(served.dns, "web.block.test", "A", use_edns=0, payload=1232)
    assert (reply.rcode(), reply.payload, ede(reply)) == (dns.rcode.REFUSED, 1232, [15])
    assert reply.ednsflags & dns.flags.DO          # set whatever the client sent
    assert len(reply.options) == 1                 # the client's cookie is not echoed


def test_filter_answers_empty_noerror(served: Served) -> None:
    reply = ask(served.dns, "x.filter.test", "SRV")
    assert reply.rcode() == dns.rcode.NOERROR and not reply.flags & dns.flags.AA
    assert reply.answer == reply.authority == reply.additional == []
    assert (reply.payload, ede(reply)) == (4096, [17])
    assert answered(ask(served.dns, "x.filter.test", "SRV", source=OTHER))


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_drop_sends_nothing(served: Served, tcp: bool) -> None:
    with pytest.raises(dns.exception.Timeout):
        ask(served.dns, "x.drop.test", "TXT", tcp=tcp, timeout=0.8)
    assert answered(ask(served.dns, "x.drop.test", "A", tcp=tcp))


@pytest.mark.parametrize("name, rdtype, source, outcome", [
    # The first rule guards inner.rules.test only, and blocks 127.0.0.1 there.
    ("a.inner.rules.test", "A", "127.0.0.1", "refused"),
    # 127.0.0.2: the first rule has no policy for it; the second allows it, which ends
    # the search: the third rule's `block type MX` is never asked.
    ("a.inner.rules.test", "A", OTHER, "answered"),
    ("x.rules.test", "MX", OTHER, "answered"),
    ("x.rules.test", "TXT", OTHER, "answered"),
    # 127.0.0.1 outside inner: the second rule filters TXT; nothing of it matches MX,
    # so the third rule blocks it; nothing matches A, so it is allowed.
    ("x.rules.test", "TXT", "127.0.0.1", "filtered"),
    ("x.rules.test", "MX", "127.0.0.1", "refused"),
    ("x.rules.test", "A", "127.0.0.1", "answered"),
    ("notinner.rules.test", "A", "127.0.0.1", "answered"),   # a label boundary
])
def test_rules_in_corefile_order(served: Served, name: str, rdtype: str, source: str,
                                 outcome: str) -> None:
    reply = ask(served.dns, name, rdtype, source=source)
    if outcome == "refused":
        assert reply.rcode() == dns.rcode.REFUSED and ede(reply) == [15]
    elif outcome == "filtered":
        assert reply.rcode() == dns.rcode.NOERROR and ede(reply) == [17]
        assert not reply.additional
    else:
        assert answered(reply)


def test_ipv6_sources(served: Served) -> None:
    reply = ask(served.v6, "x.v6.test", "A", source="::1", where="::1")
    assert reply.rcode() == dns.rcode.REFUSED and ede(reply) == [15]
    # An IPv4 client is not in ::1/128; it meets the next policy, 0.0.0.0/0.
    reply = ask(served.v6, "x.v6.test", "A")
    assert reply.rcode() == dns.rcode.NOERROR and ede(reply) == [17]


# -- before the answer cache ------------------------------------------------------------------


def test_a_cached_answer_is_not_served_to_a_blocked_client(served: Served) -> None:
    name = "web.shared.svc.cluster.local"
    before = served.scrape()
    first = ask(served.dns, name, source=OTHER)
    second = ask(served.dns, name, source=OTHER)
    assert first.rcode() == second.rcode() == dns.rcode.NOERROR
    assert [rr.address for rr in second.answer[0]] == ["10.96.100.10"]
    blocked = ask(served.dns, name)
    assert blocked.rcode() == dns.rcode.REFUSED and ede(blocked) == [15]
    after = served.scrape()
    # The second query was a cache hit: `acl` kept the cache's early path open.
    plugins = {dict(key)["plugin"]: after[(n, key)] - before.get((n, key), 0)
               for (n, key) in after if n == "coredns_dns_responses_total"
               and ("zone", "cluster.local.") in key
               and after[(n, key)] != before.get((n, key), 0)}
    assert plugins == {"kubernetai": 1, "cache": 1, "acl": 1}
    # ... and on the early path, answered before the request is filled in: the block
    # has one only because `acl` can filter an early answer.
    (block,) = [entry[1] for factory in served.service.factories
                if (entry := factory.router.entry(name.encode(), 1)) is not None]
    assert block.early is not None
    server = f"dns://127.0.0.1:{served.dns}"
    assert moved(before, after, "coredns_acl_allowed_requests_total",
                 server=server, view="") == {"": 2}
    assert moved(before, after, "coredns_acl_blocked_requests_total", server=server,
                 view="") == {"cluster.local.": 1}


def test_counters(served: Served) -> None:
    server = f"dns://127.0.0.1:{served.dns}"
    before = served.scrape()
    ask(served.dns, "a.block.test")                     # blocked
    ask(served.dns, "b.block.test", source=OTHER)       # allowed
    ask(served.dns, "a.filter.test")                    # filtered
    ask(served.dns, "a.filter.test")                    # filtered
    with pytest.raises(dns.exception.Timeout):
        ask(served.dns, "a.drop.test", "TXT", timeout=0.5)  # dropped
    ask(served.dns, "a.drop.test", "A")                 # allowed
    after = served.scrape()
    common = dict(server=server, view="")
    assert moved(before, after, "coredns_acl_blocked_requests_total", **common) == {
        "block.test.": 1}
    assert moved(before, after, "coredns_acl_filtered_requests_total", **common) == {
        "filter.test.": 2}
    assert moved(before, after, "coredns_acl_dropped_requests_total", **common) == {
        "drop.test.": 1}
    assert moved(before, after, "coredns_acl_allowed_requests_total", **common) == {"": 2}
    assert {key for (name, key) in after
            if name == "coredns_acl_allowed_requests_total"} >= {
        frozenset(common.items())}                      # no zone label


# -- the directive --------------------------------------------------------------------------


def set_up(text: str, zones: tuple[str, ...] = ("example.org.",)) -> BlockBuilder:
    (block,) = parse(text, "Corefile")
    return Registry().set_up_block(block, BlockBuilder(block, zones))


def handler_of(text: str) -> AclHandler:
    (stage,) = set_up(text).stages
    assert isinstance(stage.handler, AclHandler)
    return stage.handler


def decide(handler: AclHandler, name: bytes, qtype: int, host: str) -> int:
    return rules_decide(handler.rules, name, qtype, client_address(host))[0]


def test_lines_of_a_block_are_one_step_with_the_server_zones_by_default() -> None:
    handler = handler_of("example.org {\n    acl\n    acl a.example.org 10.0.0.0/8:53 {\n"
                         "        drop\n    }\n}\n")
    assert [rule.labels for rule in handler.rules] == [
        ("example.org.",), ("a.example.org.", "10.in-addr.arpa.")]
    assert [rule.zones for rule in handler.rules] == [
        (b"example.org",), (b"a.example.org", b"10.in-addr.arpa")]


@pytest.mark.parametrize("policy, name, qtype, host, action", [
    ("block", b"x.example.org", 1, "192.0.2.1", 2),                  # no type, no net: all
    ("BLOCK TYPE A NET 192.0.2.0/24", b"x.example.org", 1, "192.0.2.9", 2),  # any case
    ("block type A net 192.0.2.0/24", b"x.example.org", 28, "192.0.2.9", 1),
    ("block type A net 192.0.2.0/24", b"x.example.org", 1, "192.0.3.9", 1),
    ("block net 192.0.2.7", b"x.example.org", 1, "192.0.2.7", 2),    # a bare address: /32
    ("block net 192.0.2.7", b"x.example.org", 1, "192.0.2.8", 1),
    ("block net 192.0.2.7/24", b"x.example.org", 1, "192.0.2.200", 2),  # host bits cleared
    ("block net 2001:db8::/32", b"x.example.org", 1, "2001:db8::5", 2),
    ("block net 2001:db8::/32", b"x.example.org", 1, "192.0.2.1", 1),
    ("block net 192.0.2.0/24", b"x.example.org", 1, "::ffff:192.0.2.1", 2),  # v4-mapped
    ("block net fe80::1", b"x.example.org", 1, "fe80::1%eth0", 2),  # zone cut off
    ("block net *", b"x.example.org", 1, "2001:db8::1", 2),
    ("block net 10.0.0.0/8 * nonsense", b"x.example.org", 1, "192.0.2.1", 2),  # not read
    ("block type * NONSENSE", b"x.example.org", 65, "192.0.2.1", 2),
    ("block type None", b"x.example.org", 65, "192.0.2.1", 2),  # type 0 is `*`
    ("block type NSAP-PTR type TXT", b"x.example.org", 16, "192.0.2.1", 2),
    ("filter type A net 192.0.2.0/24 net 198.51.100.0/24", b"x.example.org", 1,
     "198.51.100.1", 3),
    ("drop", b"example.org", 1, "192.0.2.1", 4),
    ("drop", b"example.com", 1, "192.0.2.1", 1),                     # outside the zones
    ("drop", b"xexample.org", 1, "192.0.2.1", 1),
])
def test_policy_matching(policy: str, name: bytes, qtype: int, host: str,
                         action: int) -> None:
    handler = handler_of(f"example.org {{\n    acl {{\n        {policy}\n    }}\n}}\n")
    assert decide(handler, name, qtype, host) == action


def test_an_unreadable_source_is_blocked() -> None:
    handler = handler_of("example.org {\n    acl {\n        allow\n    }\n}\n")
    assert decide(handler, b"a.example.org", 1, "not-an-address") == 2
    assert decide(handler, b"a.example.com", 1, "not-an-address") == 1  # outside: allowed


@pytest.mark.parametrize("policy, line, token, message", [
    ("permit", 3, "permit",
     "acl: unexpected token \"permit\"; expect 'allow', 'block', 'filter' or 'drop'"),
    ("block A", 3, "A", "acl: unexpected token \"A\"; expect 'type | net'"),
    ("block type", 3, "type", 'acl: no token specified in "type" section'),
    ("block type A NET", 3, "NET", 'acl: no token specified in "net" section'),
    ("block type a", 3, "a", 'acl: unexpected token "a"; expect legal QTYPE'),
    ("block type A BOGUS", 3, "BOGUS", 'acl: unexpected token "BOGUS"; expect legal QTYPE'),
    ("block net 192.0.2.0/33", 3, "192.0.2.0/33", 'acl: illegal CIDR notation "192.0.2.0/33"'),
    ("block net nowhere", 3, "nowhere", 'acl: illegal CIDR notation "nowhere/32"'),
    ("block net 192.0.2.1/255.0.0.0", 3, "192.0.2.1/255.0.0.0",
     'acl: illegal CIDR notation "192.0.2.1/255.0.0.0"'),
    ("block net 010.0.0.0/8", 3, "010.0.0.0/8", 'acl: illegal CIDR notation "010.0.0.0/8"'),
    ("block net fe80::1%eth0", 3, "fe80::1%eth0",
     'acl: illegal CIDR notation "fe80::1%eth0/128"'),
    ("block net 10.0.0.0/8\n        allow net 10.1.0.0/16 10.2.0.0/-1", 4, "10.2.0.0/-1",
     'acl: illegal CIDR notation "10.2.0.0/-1"'),
])
def test_directive_errors(policy: str, line: int, token: str, message: str) -> None:
    with pytest.raises(CorefileError) as info:
        set_up(f"example.org {{\n    acl {{\n        {policy}\n    }}\n}}\n")
    assert (info.value.line, info.value.token, info.value.message) == (line, token, message)


def test_an_unreadable_zone_is_refused() -> None:
    with pytest.raises(CorefileError) as info:
        set_up("example.org {\n    acl example.org:nan\n}\n")
    assert (info.value.line, info.value.token) == (2, "example.org:nan")


def test_placed_before_the_cache_and_resolvers() -> None:
    builder = set_up("example.org {\n    whoami\n    acl\n    log\n    prometheus :0\n}\n")
    assert [stage.name for stage in builder.ordered()] == ["prometheus", "log", "acl",
                                                            "whoami"]

