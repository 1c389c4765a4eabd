"""rewrite's rules through a real server (UDP, dnspython), each block built from its
Corefile lines with a test step after rewrite that shows what the steps after it see
(the request copy: name, type, class, EDNS0 options) and a step before it that checks
the client's request is left as it came.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Iterator

import dns.edns
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from twisted.internet import defer
from twisted.names import dns as tdns
from twisted.names import error as tderror

from kubernetai.core.codec import render
from kubernetai.core.dnsserver import KubernetaiServerFactory, listen
from kubernetai.core.pipeline import BlockPipeline, Stage
from kubernetai.core.plugin import Next, Result, position, then
from kubernetai.core.registry import BlockBuilder, Registry
from kubernetai.core.request import Reply, Request
from kubernetai.core.sources import Source
from kubernetai.corefile import parse
from kubernetai.pkg import reactor_thread

SOURCE = Source()  # a data source the resolver records as the answer's dependency


class Table:
    """A resolver (``hosts``' place) knowing x.other.test and y.other.test."""

    cacheable = True
    renewable = True

    def query(self, query: Any, timeout: Any = None) -> defer.Deferred:
        name = query.name.name.lower()
        if name in (b"x.other.test", b"y.other.test"):
            if getattr(query, "request", None) is not None:
                query.request.depend(SOURCE)
            return defer.succeed(([tdns.RRHeader(name, tdns.A, tdns.IN, 60,
                                                 tdns.Record_A("10.1.2.3"), auth=True)],
                                  [], []))
        return defer.fail(tderror.DomainError())


class Echo:
    """Answers with what it was asked: a TXT record ``qname qtype qclass`` under the
    name, and an A record under a name below it (to see sub-names mapped back)."""

    name = "whoami"

    def __init__(self) -> None:
        self.seen: list[Request] = []

    def serve(self, request: Request, next: Next) -> Result:
        self.seen.append(request)
        owner = request.qname
        if request.lname.startswith(b"nx"):
            return Reply(dns.rcode.NXDOMAIN, True)
        if request.lname.startswith(b"cn"):
            return Reply(0, True, [
                tdns.RRHeader(owner, tdns.CNAME, tdns.IN, 200,
                              tdns.Record_CNAME(b"x.cdn.example.net")),
                tdns.RRHeader(b"x.cdn.example.net", tdns.A, tdns.IN, 300,
                              tdns.Record_A("20.2.0.1"))])
        text = b"%s %d %d" % (request.lname, request.qtype, request.qclass)
        answers = [tdns.RRHeader(owner, tdns.TXT, tdns.IN, 300, tdns.Record_TXT(text))]
        additional = [tdns.RRHeader(b"_x." + owner, tdns.A, tdns.IN, 300,
                                    tdns.Record_A("10.0.0.1"))]
        if request.lname.startswith(b"wire"):
            # Encoded for the copy it was given (as a cache hit would be).
            return Reply.encoded(render(request, 0, True, answers, (), additional))
        return Reply(0, True, answers, (), additional)


class Spy:
    """Before rewrite: the client's request, checked to be unchanged after the steps
    behind it ran, and what they recorded on it."""

    name = "log"

    def __init__(self) -> None:
        self.after: list[tuple[Any, ...]] = []

    def serve(self, request: Request, next: Next) -> Result:
        before = (request.qname, request.lname, list(request.labels), request.qtype,
                  request.qclass, request.options, request.bufsize, request.edns)

        def check(reply: Reply) -> Reply:
            now = (request.qname, request.lname, list(request.labels), request.qtype,
                   request.qclass, request.options, request.bufsize, request.edns)
            assert now == before, (now, before)
            self.after.append((request.deps, request.nocache, request.renewable))
            return reply
        return then(next(request), check)


class Server:
    def __init__(self, lines: str) -> None:
        (block,) = parse(f"test {{\n{lines}\n}}\n", "Corefile")
        builder = Registry().set_up_block(block, BlockBuilder(block, ("test.",)))
        self.echo = Echo()
        self.spy = Spy()
        stages = [*builder.stages,
                  Stage("log", position("log"), 100, handler=self.spy),
                  Stage("hosts", position("hosts"), 101, resolver=Table()),
                  Stage("whoami", position("whoami"), 102, handler=self.echo)]
        self.errors: list[str] = []
        self.factory = KubernetaiServerFactory({"test": BlockPipeline(stages)},
                                               on_error=self.errors.append)
        self.ports = reactor_thread.in_reactor(listen, self.factory, "127.0.0.1", 0)
        self.port = self.ports[0].getHost().port

    def ask(self, name: str, rdtype: str = "TXT", **kwargs: Any) -> dns.message.Message:
        message = dns.message.make_query(name, rdtype, **kwargs)
        reply = dns.query.udp(message, "127.0.0.1", port=self.port, timeout=3)
        assert reply.id == message.id
        assert reply.question == message.question
        return reply

    @property
    def last(self) -> Request:
        return self.echo.seen[-1]

    def stop(self) -> None:
        reactor_thread.in_reactor(lambda: defer.gatherResults(
            [defer.maybeDeferred(port.stopListening) for port in self.ports]))


@pytest.fixture
def serve(reactor_running: None) -> Iterator[Callable[[str], Server]]:
    started: list[Server] = []

    def start(lines: str) -> Server:
        started.append(Server(lines))
        return started[-1]
    yield start
    for server in started:
        server.stop()


def owners(reply: dns.message.Message) -> list[str]:
    return [rrset.name.to_text() for section in (reply.answer, reply.additional)
            for rrset in section]


def txt(reply: dns.message.Message) -> str:
    ((rr,),) = [rrset for rrset in reply.answer if rrset.rdtype == dns.rdatatype.TXT]
    return b"".join(rr.strings).decode()


def options(request: Request) -> list[tuple[int, bytes]]:
    out, data = [], request.options
    while data:
        code, length = struct.unpack("!HH", data[:4])
        out.append((code, data[4:4 + length]))
        data = data[4 + length:]
    return out


# -- names ------------------------------------------------------------------------------

def test_exact_maps_the_name_and_names_below_it_back(serve) -> None:
    server = serve("rewrite name exact a.test b.test")
    reply = server.ask("A.test")
    assert txt(reply) == "b.test 16 1"
    assert owners(reply) == ["a.test.", "_x.a.test."]
    assert (server.last.qname, server.last.labels) == (b"b.test", [b"b", b"test"])
    assert server.ask("c.test").answer[0].name.to_text() == "c.test."


def test_continue_applies_the_next_rule_stop_does_not(serve) -> None:
    chained = serve("rewrite continue name exact a.test b.test\n"
                    "rewrite name exact b.test c.test")
    reply = chained.ask("a.test")
    assert txt(reply).startswith("c.test ")
    assert owners(reply) == ["a.test.", "_x.a.test."]   # mapped back in reverse order
    stopped = serve("rewrite name exact a.test b.test\nrewrite name exact b.test c.test")
    assert txt(stopped.ask("a.test")).startswith("b.test ")
    assert txt(stopped.ask("b.test")).startswith("c.test ")


def test_regex_groups_and_answer_name(serve) -> None:
    server = serve("rewrite stop {\n"
                   "    name regex (.*)-(us-west-1)\\.test {1}.service.{2}.test\n"
                   "    answer name (.*)\\.service\\.(us-west-1)\\.test {1}-{2}.test\n"
                   "}")
    reply = server.ask("ftp-us-west-1.test")
    assert txt(reply).startswith("ftp.service.us-west-1.test ")
    # answer name is anchored nowhere: the sub-name maps too ("_x.ftp" is group 1)
    assert owners(reply) == ["ftp-us-west-1.test.", "_x.ftp-us-west-1.test."]


def test_prefix_and_substring_with_answer_auto(serve) -> None:
    server = serve("rewrite continue name prefix foo bar answer auto\n"
                   "rewrite name substring middle center answer auto")
    reply = server.ask("foo.in.the.middle.test")
    assert txt(reply).startswith("bar.in.the.center.test ")
    assert owners(reply) == ["foo.in.the.middle.test.", "_x.foo.in.the.middle.test."]


def test_without_answer_rewrite_the_answer_keeps_the_new_name(serve) -> None:
    server = serve("rewrite name suffix .old.test .new.test")
    reply = server.ask("a.old.test")
    assert owners(reply) == ["a.new.test.", "_x.a.new.test."]


def test_answer_value_rewrites_targets(serve) -> None:
    server = serve("rewrite name exact cn.test cn2.test answer value "
                   "(.*)\\.cdn\\.example\\.net {1}.elsewhere.test")
    reply = server.ask("cn.test", "A")
    assert [(rrset.name.to_text(), rr.to_text()) for rrset in reply.answer for rr in rrset] \
        == [("cn.test.", "x.elsewhere.test."), ("x.cdn.example.net.", "20.2.0.1")]


def test_invalid_name_after_rewrite_is_servfail_and_logged(serve) -> None:
    server = serve("rewrite name regex (.*)\\.test {1}..test")
    reply = server.ask("a.test")
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert server.echo.seen == []
    assert any("invalid name after rewrite: a..test." in line for line in server.errors)


def test_wire_reply_for_the_copy_is_mapped_back(serve) -> None:
    server = serve("rewrite name exact wire.test wire2.test")
    reply = server.ask("wire.test")
    assert txt(reply).startswith("wire2.test ")
    assert owners(reply) == ["wire.test.", "_x.wire.test."]
    assert reply.flags & dns.flags.AA


# -- type, class, ttl, rcode ------------------------------------------------------------

def test_type_and_class(serve) -> None:
    server = serve("rewrite continue type MX TXT\nrewrite class IN CH")
    reply = server.ask("t.test", "MX")
    assert reply.question[0].rdtype == dns.rdatatype.MX
    assert txt(reply) == "t.test 16 3"
    assert (server.last.qtype, server.last.qclass) == (16, 3)


def test_ttl_range_clamps(serve) -> None:
    server = serve("rewrite ttl t.test 30-60\nrewrite ttl regex ^low 400-")
    assert {rrset.ttl for rrset in server.ask("t.test").answer} == {60}
    assert {rrset.ttl for rrset in server.ask("t.test").additional} == {60}
    assert {rrset.ttl for rrset in server.ask("low.test").answer} == {400}
    assert {rrset.ttl for rrset in server.ask("other.test").answer} == {300}


def test_rcode(serve) -> None:
    server = serve("rewrite rcode regex ^nx NXDOMAIN NOERROR")
    assert server.ask("nx.test").rcode() == dns.rcode.NOERROR
    assert serve("rewrite rcode exact nx.test 3 5").ask("nx.test").rcode() == \
        dns.rcode.REFUSED


def test_extended_rcode_goes_into_the_opt_record(serve) -> None:
    server = serve("rewrite rcode nx.test NXDOMAIN BADCOOKIE")
    assert server.ask("nx.test", use_edns=0).rcode() == dns.rcode.BADCOOKIE


# -- EDNS0 ------------------------------------------------------------------------------

def test_edns0_local_set_adds_an_opt_record(serve) -> None:
    server = serve("rewrite edns0 local set 0xffee 0x61626364")
    server.ask("e.test")
    assert options(server.last) == [(0xFFEE, b"abcd")]
    assert (server.last.edns, server.last.bufsize) == (True, 4096)


def test_edns0_local_replace_append_unset(serve) -> None:
    sent = [dns.edns.GenericOption(0xFFEE, b"old"), dns.edns.GenericOption(0xFFEF, b"x")]
    server = serve("rewrite edns0 local replace 0xffee new")
    server.ask("e.test", use_edns=0, payload=1232, options=sent)
    assert options(server.last) == [(0xFFEE, b"new"), (0xFFEF, b"x")]
    assert server.last.bufsize == 1232
    server = serve("rewrite edns0 local append 0xffee more")
    server.ask("e.test", use_edns=0, options=sent)
    assert options(server.last) == [(0xFFEE, b"old"), (0xFFEF, b"x"), (0xFFEE, b"more")]
    server = serve("rewrite edns0 local unset 0xffee")
    server.ask("e.test", use_edns=0, options=sent)
    assert options(server.last) == [(0xFFEF, b"x")]


def test_edns0_variables_nsid_subnet(serve) -> None:
    server = serve("rewrite continue edns0 local set 0xffe0 {client_ip}\n"
                   "rewrite continue edns0 local set 0xffe1 {qname}\n"
                   "rewrite continue edns0 local set 0xffe2 {protocol}\n"
                   "rewrite continue edns0 local set 0xffe3 {server_port}\n"
                   "rewrite continue edns0 local set 0xffe4 {qtype}\n"
                   "rewrite continue edns0 nsid set\n"
                   "rewrite edns0 subnet set 24 56")
    server.ask("Var.test")
    assert options(server.last) == [(0xFFE0, bytes([127, 0, 0, 1])), (0xFFE1, b"Var.test."),
                                    (0xFFE2, b"udp"), (0xFFE3, struct.pack("!H", server.port)),
                                    (0xFFE4, struct.pack("!H", 16)), (3, b""),
                                    (8, struct.pack("!HBB", 1, 24, 0) + bytes([127, 0, 0]))]


def test_edns0_revert_is_accepted_and_the_reply_opt_is_the_servers(serve) -> None:
    server = serve("rewrite edns0 local set 0xffee abcd revert")
    reply = server.ask("e.test", use_edns=0)
    assert options(server.last) == [(0xFFEE, b"abcd")]
    assert reply.edns == 0 and not reply.options


# -- cname, dependencies ----------------------------------------------------------------

def test_cname_target_rewritten_and_looked_up(serve) -> None:
    server = serve("rewrite cname regex (.*)\\.cdn\\.example\\.net\\. {1}.other.test.")
    reply = server.ask("cn.test", "A")
    assert [(rrset.name.to_text(), rr.to_text()) for rrset in reply.answer for rr in rrset] \
        == [("cn.test.", "x.other.test."), ("x.other.test.", "10.1.2.3")]


def test_what_the_steps_after_record_reaches_the_steps_before(serve) -> None:
    """The resolver's data sources, recorded on the copy, are the client's request's once
    the reply comes back (the answer memo and the steps before read them there)."""
    server = serve("rewrite name exact q.test x.other.test answer auto")
    reply = server.ask("q.test", "A")
    assert [(rrset.name.to_text(), rr.to_text()) for rrset in reply.answer for rr in rrset] \
        == [("q.test.", "10.1.2.3")]
    deps, nocache, renewable = server.spy.after[-1]
    assert deps == [SOURCE.dep()] and nocache is False and renewable is True


def test_a_cache_hit_passes_early_only_when_no_rule_applies() -> None:
    """`rewrite` stands before the answer cache: a hit for a question no rule changes is
    still answered early; any other goes the whole way (the cache keeps the rewritten one)."""
    from kubernetai.core.codec import parse_request
    (block,) = parse("example.org {\n    rewrite name exact a.example.org b.example.org\n}\n",
                     "Corefile")
    builder = Registry().set_up_block(block, BlockBuilder(block, ("example.org.",)))
    (stage,) = builder.stages
    wire = b"\x00" * 12

    def request(name: str) -> Request:
        parsed = parse_request(dns.message.make_query(name, "A").to_wire(), True)
        assert isinstance(parsed, Request)
        return parsed
    assert stage.handler.filter_early(request("c.example.org"), wire) == wire
    assert stage.handler.filter_early(request("a.example.org"), wire) is None
