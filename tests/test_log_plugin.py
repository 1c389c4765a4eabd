"""The `log` directive as CoreDNS's: its arguments, its rules (first matching name wins),
its class filter (Typify/Classify), its placeholders; and its lines from a real server."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any, Iterator

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rrset
import pytest
from twisted.internet import defer

import kubernetai.corefile as corefile
from kubernetai.app.server import KubernetaiService, load_service
from kubernetai.core.codec import parse_request
from kubernetai.core.plugin import position
from kubernetai.core.registry import BlockBuilder
from kubernetai.core.request import Reply, Request
from kubernetai.corefile import CorefileError
from kubernetai.pkg.logwriter import STDOUT
from kubernetai.pkg.reactor_thread import in_reactor
from kubernetai.plugins.errors.setup import ErrorsDirective
from kubernetai.plugins.log.classify import classify, typify
from kubernetai.plugins.log.format import COMBINED, COMMON, Entry, compile_format, parse_format
from kubernetai.plugins.log.handler import LogHandler
from kubernetai.plugins.log.setup import LogDirective

PLUGINS = {"errors": ErrorsDirective(), "log": LogDirective()}
STARTED = 100.0


# -- helpers ------------------------------------------------------------------------------


def builder_for(body: str) -> BlockBuilder:
    """``. { body }`` set up with errors and log, in plugin order (body starts at line 2)."""
    (block,) = corefile.parse(f". {{\n{body}\n}}\n", "Corefile")
    builder = BlockBuilder(block, (".",))
    for _, index, directive in sorted(((position(d.name), i, d)
                                       for i, d in enumerate(block.directives)),
                                      key=lambda item: item[:2]):
        builder.directive, builder.index = directive, index
        PLUGINS[directive.name].setup(directive, builder)
    builder.directive = None
    return builder


def log_step(body: str) -> tuple[LogHandler, list[str]]:
    """The block's one log step, writing into the returned list."""
    steps = [s.handler for s in builder_for(body).stages if isinstance(s.handler, LogHandler)]
    assert len(steps) == 1, "every log line of a block joins one step"
    lines: list[str] = []
    steps[0].write = lines.append
    return steps[0], lines


def rules_of(body: str) -> list[tuple[str, str, Any]]:
    step, _ = log_step(body)
    return [(rule.scope, rule.fmt, rule.classes) for rule in step.rules]


def error_of(body: str) -> CorefileError:
    with pytest.raises(CorefileError) as info:
        builder_for(body)
    return info.value


class Peer:
    """The protocol a request came in on, as the log step asks it."""

    def __init__(self, remote: str = "127.0.0.1", port: int = 40311,
                 local: str = "127.0.0.1") -> None:
        self.remote, self.port = remote, port
        self.transport = type("T", (), {"getHost": lambda _: type("A", (), {"host": local})()})()

    def peer(self, addr: Any) -> tuple[str, int]:
        return self.remote, self.port


def query_wire(name: Any = "example.org", rdtype: str = "A", **kw: Any) -> bytes:
    return dns.message.make_query(name, rdtype, id=kw.pop("id", 41424), **kw).to_wire()


def response_wire(name: Any = "example.org", rdtype: str = "A", *,
                  rcode: int = dns.rcode.NOERROR, answers: int = 1, soa: bool = True,
                  ns: int = 0, flags: int = dns.flags.AA, **kw: Any) -> bytes:
    query = dns.message.make_query(name, rdtype, id=41424, **kw)
    response = dns.message.make_response(query)
    response.flags |= flags
    response.set_rcode(rcode)
    owner = name if isinstance(name, dns.name.Name) else dns.name.from_text(name)
    for i in range(answers):
        response.answer.append(dns.rrset.from_text(owner, 5, "IN", "A", f"10.0.0.{i + 1}"))
    if not answers and soa:
        response.authority.append(dns.rrset.from_text(
            "example.org.", 5, "IN", "SOA", "ns.dns.example.org. hostmaster.example.org. "
            "1 7200 1800 86400 5"))
    for i in range(ns):
        response.authority.append(dns.rrset.from_text(owner, 5, "IN", "NS", f"ns{i}.test."))
    return response.to_wire()


def request(name: Any = "example.org", rdtype: str = "A", *, udp: bool = True,
            peer: Peer | None = None, **kw: Any) -> Request:
    req = parse_request(query_wire(name, rdtype, **kw), udp)
    assert isinstance(req, Request)
    req.proto, req.addr, req.started, req.observers = peer or Peer(), None, STARTED, None
    return req


def through(step: LogHandler, req: Request, wire: bytes, duration: float = 0.000186745) -> None:
    """One query through the step as the server runs it: ``serve`` on the way in, then
    the observers once the response is sent."""
    reply = step.serve(req, lambda r: Reply.encoded(wire))
    assert reply.wire == wire  # the step passes the answer on untouched
    step.now = lambda: STARTED + duration
    for observe in req.observers or ():
        observe(req, wire)


def line_for(fmt: str, req: Request, wire: bytes, duration: float = 0.000186745) -> str:
    return compile_format(fmt)(Entry(req, wire, STARTED + duration))


# -- arguments, as CoreDNS's logParse ------------------------------------------------------


@pytest.mark.parametrize("body, rules", [
    ("log", [(".", COMMON, None)]),
    ("log example.org", [("example.org.", COMMON, None)]),
    ("log Example.ORG. b.example", [("example.org.", COMMON, None),
                                    ("b.example.", COMMON, None)]),
    ("log . {common}", [(".", COMMON, None)]),
    ("log example.org {combined}", [("example.org.", COMBINED, None)]),
    ('log . "{type} {name}"', [(".", "{type} {name}", None)]),
    ('log a.example b.example "{name} {common}"', [("a.example.", "{name} " + COMMON, None),
                                                 ("b.example.", "{name} " + COMMON, None)]),
    # One argument is a name, whatever it holds (CoreDNS's rule).
    ("log {combined}", [("{combined}.", COMMON, None)]),
    ("log {\n    class denial error\n}", [(".", COMMON, frozenset({"denial", "error"}))]),
    ("log {\n    class success\n    class all\n}", [(".", COMMON, None)]),
    ("log a.example b.example {\n    class denial\n}",
     [("a.example.", COMMON, frozenset({"denial"})), ("b.example.", COMMON, frozenset({"denial"}))]),
])
def test_arguments_as_coredns_reads_them(body: str, rules: list) -> None:
    """Names (fully qualified, compared in lower case), the format (the last of several
    arguments when it holds a "{", {common}/{combined} expanded), the classes (all when
    none, or when all is among them) of every name of the line."""
    assert rules_of(body) == rules


def test_a_lone_format_like_argument_is_a_name_with_a_warning() -> None:
    builder = builder_for("log {combined}")
    assert builder.warnings == ["Corefile:2: log: '{combined}' is taken as a name, as CoreDNS "
                                "takes a lone argument; write 'log . {combined}' for a format"]


def test_several_log_lines_make_one_step_with_rules_in_corefile_order() -> None:
    builder = builder_for("log b.example\nerrors\nlog a.example . {\n    class error\n}")
    steps = [s.handler for s in builder.stages if isinstance(s.handler, LogHandler)]
    assert len(steps) == 1
    assert [(r.scope, r.classes) for r in steps[0].rules] == [
        ("b.example.", None), ("a.example.", frozenset({"error"})), (".", frozenset({"error"}))]


@pytest.mark.parametrize("body, line, token, message", [
    ("log {\n    format json\n}", 3, "format", "log: unknown property 'format'"),
    ("log {\n    class\n}", 3, "class",
     "Wrong argument count or unexpected line ending after 'class'"),
    ("log {\n    class success failure\n}", 3, "failure", "log: invalid Class: failure"),
    ("log {\n    class DENIAL\n}", 3, "DENIAL", "log: invalid Class: DENIAL"),
])
def test_option_errors(body: str, line: int, token: str, message: str) -> None:
    error = error_of(body)
    assert (error.line, error.token, error.message) == (line, token, message)


# -- which rule logs a query ---------------------------------------------------------------


def test_the_first_rule_holding_the_name_decides_and_nothing_logs_twice() -> None:
    """CoreDNS logs a query at the first rule whose name holds it, if that rule's classes
    take the answer; later rules are not tried even when they would log it."""
    step, lines = log_step('log a.example "first {name} {rcode}"\n'
                           'log . "second {name} {rcode}" {\n    class error\n}\n'
                           'log . "third {name} {rcode}"')
    through(step, request("www.a.example"), response_wire("www.a.example"))
    through(step, request("b.example"), response_wire("b.example"))          # success
    through(step, request("b.example"), response_wire("b.example", rcode=dns.rcode.SERVFAIL,
                                                      answers=0, soa=False))
    through(step, request("a.example"), response_wire("a.example", rcode=dns.rcode.REFUSED,
                                                      answers=0, soa=False))
    assert lines == ["[INFO] first www.a.example. NOERROR", "[INFO] second b.example. SERVFAIL",
                     "[INFO] first a.example. REFUSED"]


@pytest.mark.parametrize("body, logged", [
    ("log", ["example.org.", "www.example.org.", "other.test."]),
    ("log example.org", ["example.org.", "www.example.org."]),
    ("log EXAMPLE.org. other.test", ["example.org.", "www.example.org.", "other.test."]),
    ("log www.example.org", ["www.example.org."]),
    ("log xample.org", []),
    ("log org", ["example.org.", "www.example.org."]),
])
def test_names_on_label_boundaries_case_insensitive(body: str, logged: list[str]) -> None:
    step, lines = log_step(body)
    for name in ("example.org", "www.Example.org", "other.test"):
        through(step, request(name), response_wire(name))
    assert [line.split('"')[1].split()[2] for line in lines] == logged


def test_an_escaped_dot_is_not_a_label_boundary() -> None:
    """A query label holding a dot ("a.b" as one label) is not under "b.example.org"."""
    step, lines = log_step("log b.example.org")
    name = dns.name.Name([b"a.b", b"example", b"org", b""])
    through(step, request(name), response_wire(name))
    assert lines == []


# -- classes -------------------------------------------------------------------------------


@pytest.mark.parametrize("wire, kind, cls", [
    (response_wire(), "NOERROR", "success"),
    (response_wire(answers=0), "NODATA", "denial"),
    (response_wire(answers=0, soa=False, ns=2), "DELEGATION", "success"),
    (response_wire(answers=0, soa=False), "NOERROR", "success"),
    (response_wire(rcode=dns.rcode.NXDOMAIN, answers=0), "NXDOMAIN", "denial"),
    (response_wire(rcode=dns.rcode.NXDOMAIN, answers=0, soa=False), "NXDOMAIN", "denial"),
    (response_wire(rcode=dns.rcode.NXDOMAIN, answers=1), "OTHERERROR", "error"),
    (response_wire(rcode=dns.rcode.SERVFAIL, answers=0, soa=False), "SERVERERROR", "error"),
    (response_wire(rcode=dns.rcode.NOTIMP, answers=0, soa=False), "SERVERERROR", "error"),
    (response_wire(rcode=dns.rcode.REFUSED, answers=0, soa=False), "OTHERERROR", "error"),
    (response_wire(rcode=dns.rcode.FORMERR, answers=0, soa=False), "OTHERERROR", "error"),
], ids=["answer", "nodata", "delegation", "empty", "nxdomain", "nxdomain-no-soa",
        "nxdomain-with-answer", "servfail", "notimp", "refused", "formerr"])
def test_typify_and_classify_as_coredns(wire: bytes, kind: str, cls: str) -> None:
    assert (typify(wire, 1), classify(typify(wire, 1))) == (kind, cls)


def test_zone_transfers_are_meta_so_error() -> None:
    assert typify(response_wire(rdtype="AXFR"), 252) == "META"
    assert classify("META") == "error"


@pytest.mark.parametrize("classes, rcodes", [
    ("all", ["NOERROR", "NOERROR", "NXDOMAIN", "SERVFAIL"]),
    ("success", ["NOERROR"]),
    ("denial", ["NOERROR", "NXDOMAIN"]),
    ("error", ["SERVFAIL"]),
    ("success error", ["NOERROR", "SERVFAIL"]),
    ("denial all", ["NOERROR", "NOERROR", "NXDOMAIN", "SERVFAIL"]),
])
def test_class_filter(classes: str, rcodes: list[str]) -> None:
    step, lines = log_step(f"log . {{rcode}} {{\n    class {classes}\n}}")
    for wire in (response_wire(), response_wire(answers=0),
                 response_wire(rcode=dns.rcode.NXDOMAIN, answers=0),
                 response_wire(rcode=dns.rcode.SERVFAIL, answers=0, soa=False)):
        through(step, request(), wire)
    assert [line.removeprefix("[INFO] ") for line in lines] == rcodes


# -- the format ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, parts", [
    ("{type} {name}", [("label", "{type}"), ("literal", " "), ("label", "{name}")]),
    ("A } {type}", [("literal", "A } "), ("label", "{type}")]),
    ("{ {type} }", [("literal", "{ "), ("label", "{type}"), ("literal", " }")]),
    ("x{foo}y{name}", [("literal", "x{foo}y"), ("label", "{name}")]),
    ("{/log/type}-{/x}", [("metadata", "log/type"), ("literal", "-"), ("metadata", "x")]),
    ("{>rd} {>cd}", [("literal", "{>rd} {>cd}")]),
    ("no placeholders", [("literal", "no placeholders")]),
    ("{", [("literal", "{")]),
])
def test_format_parsed_as_coredns_replacer(fmt: str, parts: list) -> None:
    """A "}" then the nearest "{" before it; unknown placeholders are text."""
    assert parse_format(fmt) == parts


def test_common_format_line() -> None:
    req, wire = request(), response_wire()
    size = len(query_wire())
    assert line_for(COMMON, req, wire) == (
        f'127.0.0.1:40311 - 41424 "A IN example.org. udp {size} false 512" NOERROR qr,aa,rd '
        f"{len(wire)} 0.000186745s")
    assert line_for(COMBINED, req, wire) == line_for(COMMON, req, wire) + ' "0"'


@pytest.mark.parametrize("fmt", [COMMON, COMBINED])
@pytest.mark.parametrize("kwargs, wire", [
    ({}, response_wire()),
    ({"udp": False, "peer": Peer("2001:db8::1", 53)}, response_wire(rcode=dns.rcode.NXDOMAIN)),
    ({"use_edns": 0, "payload": 4096, "want_dnssec": True, "peer": Peer("::ffff:10.0.0.1")},
     response_wire(rcode=dns.rcode.SERVFAIL, answers=0, soa=False, flags=0)),
    ({"name": "A\\ b.Example.org", "rdtype": "TYPE4321"}, response_wire(rcode=12)),
])
def test_the_default_formats_fast_path_is_the_placeholders_spelled_out(
        fmt: str, kwargs: dict, wire: bytes) -> None:
    """The common and combined formats are written by one hand-made expression; it must say
    exactly what the placeholders say."""
    name = kwargs.pop("name", "example.org")
    entry = Entry(request(name, kwargs.pop("rdtype", "A"), **kwargs), wire, STARTED + 0.25)
    assert compile_format(fmt)(entry) == compile_format(fmt, generic=True)(entry)
    assert compile_format(fmt) is not compile_format("x" + fmt)


@pytest.mark.parametrize("fmt, kwargs, expected", [
    ("{type} {class} {name}", {"name": "WWW.Example.ORG", "rdtype": "AAAA"},
     "AAAA IN www.example.org."),
    ("{remote} {port} {>id}", {"peer": Peer("::1", 5353)}, "[::1] 5353 41424"),
    ("{remote}", {"peer": Peer("::ffff:10.1.2.3", 5353)}, "10.1.2.3"),
    ("{local}", {"peer": Peer(local="::")}, "[::]"),
    ("{local}", {"peer": Peer(local="127.0.0.1")}, "127.0.0.1"),
    ("{proto} {>do} {>bufsize}", {}, "udp false 512"),
    ("{proto} {>bufsize}", {"udp": False}, "tcp 65535"),
    ("{>do} {>bufsize}", {"use_edns": 0, "payload": 1232, "want_dnssec": True}, "true 1232"),
    ("{>bufsize}", {"use_edns": 0, "payload": 100}, "512"),
    ("{>bufsize}", {"use_edns": 0, "payload": 65535}, "65535"),
    ("{>opcode}", {}, "0"),
    ("{rcode} {>rflags}", {}, "NOERROR qr,aa,rd"),
    ("{/log/type} {/log/class} {/other} {/}", {}, "NOERROR success - -"),
    ("id={>id} {unknown} {>rd}{>cd} plain", {}, "id=41424 {unknown} {>rd}{>cd} plain"),
    ("{{name}}", {}, "{example.org.}"),
])
def test_placeholders(fmt: str, kwargs: dict, expected: str) -> None:
    rdtype = kwargs.pop("rdtype", "A")
    name = kwargs.pop("name", "example.org")
    assert line_for(fmt, request(name, rdtype, **kwargs), response_wire(name, rdtype)) == expected


def test_size_and_rsize_are_the_request_and_response_sizes() -> None:
    req = request(use_edns=0, payload=1232)
    wire = response_wire(answers=3)
    assert line_for("{size} {rsize}", req, wire) == f"{req.size} {len(wire)}"
    assert req.size == len(query_wire(use_edns=0, payload=1232))


@pytest.mark.parametrize("seconds, text", [
    (0.000186745, "0.000186745s"), (1.5, "1.5s"), (0.0, "0s"), (2.0, "2s"), (0.1, "0.1s"),
    (1e-9, "0.000000001s"),
])
def test_duration_as_go_prints_seconds(seconds: float, text: str) -> None:
    assert line_for("{duration}", request(), response_wire(), seconds) == text


@pytest.mark.parametrize("flags, text", [
    (0, "qr"), (dns.flags.AA | dns.flags.TC | dns.flags.RD, "qr,aa,tc,rd"),
    (dns.flags.RA | 0x0040 | dns.flags.AD | dns.flags.CD, "qr,ra,z,ad,cd"),
])
def test_rflags_in_coredns_order(flags: int, text: str) -> None:
    wire = bytearray(response_wire(flags=0))
    wire[2] &= 0xF8 | 0x80  # keep QR and the opcode; AA, TC, RD off
    wire[3] &= 0x0F         # RA, Z, AD, CD off, keep the rcode
    value = int.from_bytes(wire[2:4], "big") | flags
    wire[2:4] = value.to_bytes(2, "big")
    assert line_for("{>rflags}", request(), bytes(wire)) == text


def test_hostile_names_are_escaped_as_coredns() -> None:
    """A name cannot forge a line: \\DDD for unprintable bytes, \\. for a dot in a label."""
    name = dns.name.Name([b"x\n[ERROR] forged", b"a.b", b"\x1b[2J\x80", b"org", b""])
    line = line_for("{name}", request(name), response_wire("example.org"))
    assert line == "x\\010[error]\\ forged.a\\.b.\\027[2j\\128.org."


# -- a real server -------------------------------------------------------------------------


COREFILE = """\
example.org {{
    bind 127.0.0.1
    log a.example.org "{{name}} {{type}} {{proto}} {{rcode}} {{>rflags}} {{/log/class}} {{local}} {{>rd}}"
    log . {{
        class denial error
    }}
    whoami
}}
fail.test {{
    bind 127.0.0.1
    log . {{combined}}
}}
other.test {{
    bind 127.0.0.1
    log
    whoami
}}
"""


@pytest.fixture
def served(reactor_running: None, tmp_path: Path) -> Iterator[tuple[int, list[str]]]:
    """COREFILE served on a free 127.0.0.1 port; its log lines go into a list."""
    path = tmp_path / "Corefile"
    path.write_text(COREFILE.format())
    svc: KubernetaiService = in_reactor(load_service, str(path), port_override=0)
    lines: list[str] = []
    for plan in svc.plans:
        for block in plan.blocks:
            for stage in block.builder.stages:
                if isinstance(stage.handler, LogHandler):
                    assert stage.handler.write is STDOUT
                    stage.handler.write = lines.append
    in_reactor(svc.startService)

    def listening() -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        svc.listening.addBoth(lambda result: (d.callback(result), result)[1])
        return d
    ports = in_reactor(listening)
    try:
        yield ports[0].getHost().port, lines
    finally:
        in_reactor(svc.stopService)


def ask(port: int, name: str, *, tcp: bool = False) -> tuple[dns.message.Message, int]:
    """The reply and the client's port; after it, the server has written its line (the
    step writes right after sending, in the same reactor turn)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        query = dns.message.make_query(name, "A")
        if tcp:
            s.connect(("127.0.0.1", port))
            reply = dns.query.tcp(query, "127.0.0.1", port=port, sock=s, timeout=5)
        else:
            reply = dns.query.udp(query, "127.0.0.1", port=port, sock=s, timeout=5)
        client = s.getsockname()[1]
    in_reactor(lambda: None)
    return reply, client


def test_lines_from_a_real_server(served: tuple[int, list[str]]) -> None:
    port, lines = served
    reply, _ = ask(port, "www.A.example.org")
    assert reply.rcode() == dns.rcode.NOERROR
    assert lines == ["[INFO] www.a.example.org. A udp NOERROR qr,aa,rd success 127.0.0.1 {>rd}"]
    ask(port, "www.a.example.org", tcp=True)
    assert lines[1] == "[INFO] www.a.example.org. A tcp NOERROR qr,aa,rd success 127.0.0.1 {>rd}"
    # b.example.org: the "." rule takes it, and it logs only denials and errors.
    ask(port, "b.example.org")
    reply, client = ask(port, "x.fail.test")
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert len(lines) == 3
    assert re.fullmatch(rf'\[INFO\] 127\.0\.0\.1:{client} - {reply.id} "A IN x\.fail\.test\. '
                        r'udp \d+ false 512" SERVFAIL qr,rd \d+ [0-9.]+s "0"', lines[2]), lines[2]


def test_common_format_from_a_real_server(served: tuple[int, list[str]]) -> None:
    port, lines = served
    query = dns.message.make_query("who.other.test", "A", use_edns=0, payload=1232)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        reply = dns.query.udp(query, "127.0.0.1", port=port, sock=s, timeout=5)
        client = s.getsockname()[1]
    in_reactor(lambda: None)
    (line,) = lines
    match = re.fullmatch(
        rf'\[INFO\] 127\.0\.0\.1:{client} - {query.id} "A IN who\.other\.test\. udp '
        rf'{len(query.to_wire())} false 1232" NOERROR qr,aa,rd (\d+) (\d+(\.\d+)?)s', line)
    assert match, line
    assert int(match.group(1)) == len(reply.to_wire())
    assert 0 < float(match.group(2)) < 5


def test_every_line_names_its_query_once(served: tuple[int, list[str]]) -> None:
    """A burst of queries over both rules and blocks: one line per query that a rule logs,
    none for the others."""
    port, lines = served
    names = [f"q{i}.a.example.org" if i % 3 == 0 else
             (f"q{i}.other.test" if i % 3 == 1 else f"q{i}.example.org") for i in range(30)]
    for name in names:
        ask(port, name)
    logged = [name + "." for name in names if not name.endswith(".example.org")
              or name.endswith(".a.example.org")]
    assert len(lines) == len(logged)
    for name in logged:
        assert sum(f"{name}" in line for line in lines) == 1

