"""minimal end to end: real sockets (dnspython) against (1) a server block whose last step
answers canned replies, as records and already encoded (an upstream's bytes), and (2) a
Corefile with `minimal` in front of a kubernetai stanza on a sandbox, beside the same
stanza without it. A positive answer loses authority and additional (the OPT record is the
client's); NODATA, NXDOMAIN, delegations, errors and answers with an expired signature
pass unchanged; a zone transfer's answer gets CoreDNS's plugin error; the answer cache
keeps what `minimal` let out. And the directive."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.names import dns as tdns

from kubernetai.app.server import KubernetaiService, load_service
from kubernetai.core.codec import NOERROR, NXDOMAIN, REFUSED, SERVFAIL, render
from kubernetai.core.dnsserver import KubernetaiServerFactory, listen
from kubernetai.core.pipeline import BlockPipeline, Stage
from kubernetai.core.plugin import Next, Result, position
from kubernetai.core.registry import BlockBuilder, Registry
from kubernetai.core.request import Reply, Request
from kubernetai.corefile import CorefileError, parse
from kubernetai.pkg.reactor_thread import in_reactor
from kubernetai.plugins.minimal.handler import MinimalHandler
from kubernetai.plugins.minimal.typify import rrsig_valid
from kubernetai.sandbox.ports import free_port
from kubernetai.sandbox.server import Sandbox

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


# -- canned replies behind `minimal` ----------------------------------------------------------


def soa() -> tdns.RRHeader:
    return tdns.RRHeader(b"test", tdns.SOA, ttl=5, auth=True, payload=tdns.Record_SOA(
        b"ns.test", b"hostmaster.test", 1, 7200, 1800, 86400, 5))


def ns() -> tdns.RRHeader:
    return tdns.RRHeader(b"test", tdns.NS, ttl=5, auth=True,
                         payload=tdns.Record_NS(b"ns.test"))


def glue() -> tdns.RRHeader:
    return tdns.RRHeader(b"ns.test", tdns.A, ttl=5, auth=True,
                         payload=tdns.Record_A("192.0.2.53"))


def address(name: bytes) -> tdns.RRHeader:
    return tdns.RRHeader(name, tdns.A, ttl=5, auth=True, payload=tdns.Record_A("192.0.2.1"))


def rrsig(name: str, expiration: int) -> dns.rrset.RRset:
    text = (f"A 8 2 5 {time.strftime('%Y%m%d%H%M%S', time.gmtime(expiration))} "
            f"{time.strftime('%Y%m%d%H%M%S', time.gmtime(expiration - 86400 * 30))} "
            "12345 test. AAAA")
    return dns.rrset.from_rdata(name, 5, dns.rdata.from_text("IN", "RRSIG", text))


def upstream(request: Request, signed: int | None = None, do: bool = False) -> Reply:
    """An encoded reply as an upstream would send it: answer, NS authority, glue, its
    own OPT record (size 4000), perhaps a signature."""
    message = dns.message.from_wire(render(request, NOERROR))
    name = request.qname.decode() + "."
    message.answer.append(dns.rrset.from_text(name, 5, "IN", "A", "192.0.2.1"))
    if signed is not None:
        message.answer.append(rrsig(name, signed))
    message.authority.append(dns.rrset.from_text("test.", 5, "IN", "NS", "ns.test."))
    message.additional.append(dns.rrset.from_text("ns.test.", 5, "IN", "A", "192.0.2.53"))
    message.use_edns(0, ednsflags=dns.flags.DO if do else 0, payload=4000)
    return Reply.encoded(message.to_wire())


class Canned:
    """The block's last step: a reply chosen by the query name's first label."""

    name = "whoami"

    def serve(self, request: Request, next: Next) -> Result:
        kind = request.labels[0].decode()
        owner = request.qname
        replies: dict[str, Any] = {
            "records": lambda: Reply(NOERROR, True, (address(owner),), (ns(),), (glue(),)),
            "answeronly": lambda: Reply(NOERROR, True, (address(owner),)),
            "nodata": lambda: Reply(NOERROR, True, (), (soa(),)),
            "nxdomain": lambda: Reply(NXDOMAIN, True, (), (soa(),)),
            "delegation": lambda: Reply(NOERROR, False, (), (ns(),), (glue(),)),
            "servfail": lambda: Reply(SERVFAIL, False, (), (soa(),)),
            "error": lambda: Reply(NOERROR, True, (address(owner),), (ns(),), (glue(),),
                                   error="plugin/canned: something"),
            "wire": lambda: upstream(request),
            "signed": lambda: upstream(request, int(time.time()) + 86400, do=True),
            "expired": lambda: upstream(request, int(time.time()) - 86400, do=True),
            "unchecked": lambda: upstream(request, int(time.time()) - 86400, do=False),
            "transfer": lambda: Reply(REFUSED),
            "garbage": lambda: Reply.encoded(render(request, NOERROR)[:12] + b"\x00\x01"),
        }
        return replies[kind]()


@pytest.fixture(scope="module")
def canned(reactor_running: None) -> Iterator[tuple[int, list[str]]]:
    errors: list[str] = []
    pipeline = BlockPipeline([
        Stage("minimal", position("minimal"), 0, handler=MinimalHandler()),
        Stage("whoami", position("whoami"), 1, handler=Canned()),
    ])
    factory = KubernetaiServerFactory({"test": pipeline}, on_error=errors.append)
    ports = in_reactor(listen, factory, "127.0.0.1", 0)
    try:
        yield ports[0].getHost().port, errors
    finally:
        in_reactor(lambda: defer.gatherResults(
            [defer.maybeDeferred(port.stopListening) for port in ports]))


def ask(port: int, name: str, rdtype: str = "A", tcp: bool = False,
        **options: Any) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **options)
    if tcp:
        return dns.query.tcp(query, "127.0.0.1", port=port, timeout=3)
    return dns.query.udp(query, "127.0.0.1", port=port, timeout=3)


def sections(reply: dns.message.Message) -> tuple[list[str], list[str], list[str]]:
    def types(rrsets: list) -> list[str]:
        return [dns.rdatatype.to_text(rrset.rdtype) for rrset in rrsets]
    return types(reply.answer), types(reply.authority), types(reply.additional)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_a_positive_answer_keeps_only_its_answer_section(canned: tuple[int, list[str]],
                                                         tcp: bool) -> None:
    port, _ = canned
    reply = ask(port, "records.test", tcp=tcp)
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
    assert sections(reply) == (["A"], [], [])
    assert reply.edns == -1                              # no EDNS asked, none sent
    reply = ask(port, "answeronly.test", tcp=tcp, use_edns=0, payload=1400)
    assert sections(reply) == (["A"], [], []) and reply.payload == 1400


def test_an_encoded_reply_is_minimized_with_the_clients_opt(canned: tuple[int, list[str]]
                                                           ) -> None:
    port, _ = canned
    reply = ask(port, "wire.test", use_edns=0, payload=1232)
    assert reply.rcode() == dns.rcode.NOERROR
    assert sections(reply) == (["A"], [], [])
    assert reply.payload == 1232                          # the client's, not the upstream's
    reply = ask(port, "wire.test")
    assert sections(reply) == (["A"], [], []) and reply.edns == -1
    reply = ask(port, "signed.test", use_edns=0, ednsflags=dns.flags.DO)
    assert sections(reply) == (["A", "RRSIG"], [], [])


@pytest.mark.parametrize("name, rcode, expected", [
    ("nodata.test", dns.rcode.NOERROR, ([], ["SOA"], [])),
    ("nxdomain.test", dns.rcode.NXDOMAIN, ([], ["SOA"], [])),
    ("delegation.test", dns.rcode.NOERROR, ([], ["NS"], ["A"])),
    ("servfail.test", dns.rcode.SERVFAIL, ([], ["SOA"], [])),
    # A plugin error: passed on as it came (CoreDNS returns the next plugin's error).
    ("error.test", dns.rcode.NOERROR, (["A"], ["NS"], ["A"])),
    # DO set in the reply's OPT and a signature out of its validity period: OTHERERROR.
    ("expired.test", dns.rcode.NOERROR, (["A", "RRSIG"], ["NS"], ["A"])),
    # The same signature without DO is not checked: a positive answer.
    ("unchecked.test", dns.rcode.NOERROR, (["A", "RRSIG"], [], [])),
])
def test_other_replies_pass_unchanged(canned: tuple[int, list[str]], name: str,
                                      rcode: int, expected: tuple) -> None:
    port, _ = canned
    reply = ask(port, name, use_edns=0)
    assert reply.rcode() == rcode
    assert sections(reply) == expected


def test_an_unreadable_encoded_reply_passes_as_it_is(canned: tuple[int, list[str]]) -> None:
    import socket
    port, _ = canned
    query = dns.message.make_query("garbage.test", "A")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(query.to_wire(), ("127.0.0.1", port))
        data = sock.recv(65535)
    assert data[12:] == b"\x00\x01" and data[:2] == query.id.to_bytes(2, "big")


def test_a_zone_transfer_answer_gets_coredns_plugin_error(canned: tuple[int, list[str]]
                                                           ) -> None:
    port, errors = canned
    del errors[:]
    reply = ask(port, "transfer.Test", "AXFR", tcp=True)
    assert reply.rcode() == dns.rcode.REFUSED
    assert errors == ['5 transfer.test. AXFR: plugin/minimal: unhandled response type '
                      '"META" for "transfer.Test."']


def test_rrsig_validity_period_as_miekg() -> None:
    now = 1_750_000_000
    assert rrsig_valid(now - 10, now + 10, now)
    assert not rrsig_valid(now - 20, now - 10, now)
    assert not rrsig_valid(now + 10, now + 20, now)
    assert rrsig_valid(now, now, now)


# -- with kubernetai and the answer cache ----------------------------------------------------

COREFILE = """\
cluster.local:{minimal} {{
    bind 127.0.0.1
    prometheus 127.0.0.1:{metrics}
    minimal
    kubernetai cluster.local {{
        endpoint {url}
    }}
}}
cluster.local:{plain} {{
    bind 127.0.0.1
    kubernetai cluster.local {{
        endpoint {url}
    }}
}}
"""


@pytest.fixture(scope="module")
def cluster(reactor_running: None, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[dict[str, int]]:
    sandbox = Sandbox(bookmark_interval=1.0)
    sandbox.apply(EXAMPLES / "cluster.local")
    in_reactor(sandbox.start)
    ports = {"minimal": free_port(), "plain": free_port(), "metrics": free_port()}
    path = tmp_path_factory.mktemp("minimal") / "Corefile"
    path.write_text(COREFILE.format(url=sandbox.url, **ports))
    service: KubernetaiService = in_reactor(load_service, str(path))
    in_reactor(service.startService)

    def listening() -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        service.listening.addBoth(lambda result: (d.callback(result), result)[1])
        return d
    in_reactor(listening)
    try:
        yield ports
    finally:
        in_reactor(service.stopService)
        in_reactor(sandbox.stop)


def cache_hits(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "coredns_dns_responses_total"
               and sample.labels.get("plugin") == "cache")


def test_kubernetai_answers_lose_their_additional_section_cached_too(
        cluster: dict[str, int]) -> None:
    name, rdtype = "_http._tcp.web.shared.svc.cluster.local", "SRV"  # with its target's A
    plain = ask(cluster["plain"], name, rdtype)
    assert plain.answer and plain.additional              # what there is to take out
    hits = cache_hits(cluster["metrics"])
    first = ask(cluster["minimal"], name, rdtype)
    second = ask(cluster["minimal"], name, rdtype)
    assert first.rcode() == second.rcode() == dns.rcode.NOERROR
    assert first.answer == plain.answer == second.answer
    assert first.additional == second.additional == []
    assert cache_hits(cluster["metrics"]) == hits + 1     # the second, minimal too


@pytest.mark.parametrize("name, rdtype, rcode", [
    ("web.shared.svc.cluster.local", "TXT", dns.rcode.NOERROR),       # NODATA
    ("nothing.shared.svc.cluster.local", "A", dns.rcode.NXDOMAIN),
])
def test_kubernetai_negative_answers_keep_their_soa(cluster: dict[str, int], name: str,
                                                   rdtype: str, rcode: int) -> None:
    reply = ask(cluster["minimal"], name, rdtype)
    assert reply.rcode() == rcode
    assert sections(reply) == ([], ["SOA"], [])
    assert reply.authority == ask(cluster["plain"], name, rdtype).authority


# -- the directive ---------------------------------------------------------------------------


def set_up(text: str) -> BlockBuilder:
    (block,) = parse(text, "Corefile")
    return Registry().set_up_block(block, BlockBuilder(block, ("example.org.",)))


def test_directive_takes_no_arguments() -> None:
    with pytest.raises(CorefileError) as info:
        set_up("example.org {\n    minimal yes\n}\n")
    assert (info.value.line, info.value.token, info.value.message) == (
        2, "yes", "Wrong argument count or unexpected line ending after 'yes'")


def test_a_block_is_ignored_with_a_warning() -> None:
    builder = set_up("example.org {\n    minimal {\n        all\n    }\n}\n")
    assert builder.warnings == ["Corefile:3: minimal: the block is ignored (minimal takes "
                                "no options)"]
    assert [stage.name for stage in builder.ordered()] == ["minimal"]


def test_one_step_after_the_cache_before_the_resolvers() -> None:
    builder = set_up("example.org {\n    whoami\n    minimal\n    minimal\n    acl\n}\n")
    assert [stage.name for stage in builder.ordered()] == ["acl", "minimal", "whoami"]
    assert position("cache") < position("minimal") < position("kubernetai")
