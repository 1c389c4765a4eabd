"""any end to end: a Corefile served in-process on loopback, queried with dnspython over UDP
and TCP; an ANY question gets CoreDNS's RFC 8482 HINFO answer, other types pass on (to
whoami, to a kubernetai stanza and its answer cache, whose early path stays open); and the
directive's errors."""

from __future__ import annotations

import socket
import struct
from pathlib import Path
from typing import Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest
from twisted.internet import defer

from kubernetai.app.server import KubernetaiService, load_service
from kubernetai.core.codec import parse_request
from kubernetai.core.registry import BlockBuilder, Registry
from kubernetai.core.request import Request
from kubernetai.corefile import CorefileError, parse
from kubernetai.pkg.reactor_thread import in_reactor
from kubernetai.plugins.any.handler import AnyHandler
from kubernetai.sandbox.ports import free_port
from kubernetai.sandbox.server import Sandbox

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

COREFILE = """\
any.test:{dns} {{
    bind 127.0.0.1
    any
    whoami
}}
cluster.local:{dns} {{
    bind 127.0.0.1
    any
    kubernetai cluster.local {{
        endpoint {url}
    }}
}}
"""


@pytest.fixture(scope="module")
def served(reactor_running: None, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[KubernetaiService, int]]:
    sandbox = Sandbox(bookmark_interval=1.0)
    sandbox.apply(EXAMPLES / "cluster.local")
    in_reactor(sandbox.start)
    port = free_port()
    path = tmp_path_factory.mktemp("any") / "Corefile"
    path.write_text(COREFILE.format(dns=port, url=sandbox.url))
    service: KubernetaiService = in_reactor(load_service, str(path))
    in_reactor(service.startService)

    def listening() -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        service.listening.addBoth(lambda result: (d.callback(result), result)[1])
        return d
    in_reactor(listening)
    try:
        yield service, port
    finally:
        in_reactor(service.stopService)
        in_reactor(sandbox.stop)


def raw(port: int, query: dns.message.Message, tcp: bool) -> bytes:
    """The raw response bytes (to see how names are written)."""
    wire = query.to_wire()
    if tcp:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
            sock.sendall(struct.pack("!H", len(wire)) + wire)
            data = b""
            while len(data) < 2 or len(data) < 2 + struct.unpack("!H", data[:2])[0]:
                chunk = sock.recv(65535)
                assert chunk
                data += chunk
            return data[2:]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(wire, ("127.0.0.1", port))
        return sock.recv(65535)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("name", ["Who.Any.Test", "web.shared.svc.cluster.local"])
def test_any_question_gets_the_rfc8482_hinfo(served: tuple[KubernetaiService, int],
                                             name: str, tcp: bool) -> None:
    _, port = served
    query = dns.message.make_query(name, "ANY", use_edns=0, payload=1232)
    query.flags |= dns.flags.CD
    data = raw(port, query, tcp)
    reply = dns.message.from_wire(data)
    assert reply.id == query.id and reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.QR and reply.flags & dns.flags.RD
    assert reply.flags & dns.flags.CD
    assert not reply.flags & (dns.flags.AA | dns.flags.RA | dns.flags.TC)
    assert reply.authority == [] and reply.additional == []
    assert reply.payload == 1232                      # the client's OPT, echoed
    (rrset,) = reply.answer
    assert (rrset.name.to_text(), rrset.rdclass, rrset.rdtype, rrset.ttl) == (
        name + ".", dns.rdataclass.IN, dns.rdatatype.HINFO, 8482)
    (hinfo,) = rrset
    assert (hinfo.cpu, hinfo.os) == (b"ANY obsoleted", b"See RFC 8482")
    # The owner is the question's name as sent: a pointer to it, case kept.
    question_end = 12 + len(query.question[0].name.to_wire()) + 4
    assert data[question_end:question_end + 2] == b"\xc0\x0c"
    assert data[12:question_end - 4] == query.question[0].name.to_wire()


def test_other_types_pass_on(served: tuple[KubernetaiService, int]) -> None:
    service, port = served
    reply = dns.query.udp(dns.message.make_query("who.any.test", "A"), "127.0.0.1",
                          port=port, timeout=3)
    assert reply.flags & dns.flags.AA and len(reply.additional) == 2   # whoami
    name = "web.shared.svc.cluster.local"
    for _ in range(2):
        reply = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port,
                              timeout=3)
        assert [rr.address for rr in reply.answer[0]] == ["10.96.100.10"]
    # `any` stands before the answer cache and keeps its early path open.
    (block,) = [entry[1] for factory in service.factories
                if (entry := factory.router.entry(name.encode(), 1)) is not None]
    assert block.early is not None


def request(rdtype: str) -> Request:
    parsed = parse_request(dns.message.make_query("example.org", rdtype).to_wire(), True)
    assert isinstance(parsed, Request)
    return parsed


def test_a_cache_hit_for_any_goes_the_whole_way() -> None:
    handler = AnyHandler()
    assert handler.filter_early(request("ANY"), b"cached") is None
    assert handler.filter_early(request("A"), b"cached") == b"cached"


def set_up(text: str) -> BlockBuilder:
    (block,) = parse(text, "Corefile")
    return Registry().set_up_block(block, BlockBuilder(block, ("example.org.",)))


def test_directive_errors() -> None:
    with pytest.raises(CorefileError) as info:
        set_up("example.org {\n    any all\n}\n")
    assert (info.value.line, info.value.token, info.value.message) == (
        2, "all", "Wrong argument count or unexpected line ending after 'all'")
    with pytest.raises(CorefileError) as info:
        set_up("example.org {\n    any {\n        hinfo\n    }\n}\n")
    assert (info.value.line, info.value.token, info.value.message) == (
        3, "hinfo", "any: unknown property 'hinfo'")


def test_one_step_placed_before_acl() -> None:
    """CoreDNS 1.14.7's plugin.cfg puts `any` before `acl` (acl moved down, beside cache)."""
    builder = set_up("example.org {\n    whoami\n    any\n    any\n    acl\n}\n")
    assert [stage.name for stage in builder.ordered()] == ["any", "acl", "whoami"]
