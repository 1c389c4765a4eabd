"""Tests for the shipped directives: bind, errors, log (CoreDNS's formats) and kubernetai."""

from __future__ import annotations

import io
import threading
from types import SimpleNamespace
from typing import Any
from unittest import mock

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

import kubernetai.corefile as corefile
from kubernetai.core.dnsserver import KubernetaiServerFactory
from kubernetai.core.plugin import position
from kubernetai.core.registry import BlockBuilder
from kubernetai.core.request import Reply, Request
from kubernetai.corefile import CorefileError
from kubernetai.pkg.logwriter import STDOUT, LineWriter
from kubernetai.plugins.bind.setup import BindDirective
from kubernetai.plugins.errors.handler import ErrorsHandler
from kubernetai.plugins.errors.setup import ErrorsDirective
from kubernetai.plugins.kubernetai.controller import Cluster
from kubernetai.plugins.kubernetai.handler import StanzaResolver
from kubernetai.plugins.kubernetai.setup import KubernetaiDirective
from kubernetai.plugins.log import handler as log_handler
from kubernetai.plugins.log.handler import (
    COMBINED,
    COMMON,
    LogHandler,
    QueryLog,
    format_record,
    response_class,
)
from kubernetai.plugins.log.setup import LogDirective

PLUGINS = {"bind": BindDirective(), "errors": ErrorsDirective(), "log": LogDirective(),
           "kubernetai": KubernetaiDirective()}


# -- helpers ------------------------------------------------------------------------------


def builder_for(body: str, keys: str = ".") -> BlockBuilder:
    """Set up every line of ``keys { body }`` with the shipped plugins, in plugin order.

    Line 2 of the Corefile is the first line of ``body``.
    """
    (block,) = corefile.parse(f"{keys} {{\n{body}\n}}\n", "Corefile")
    builder = BlockBuilder(block, tuple(dict.fromkeys(k.zone for k in block.keys)))
    plugins = sorted(((position(d.name), i, d) for i, d in enumerate(block.directives)),
                     key=lambda item: item[:2])
    for _, index, directive in plugins:
        builder.directive, builder.index = directive, index
        PLUGINS[directive.name].setup(directive, builder)
    builder.directive = None
    return builder


def handlers_of(builder: BlockBuilder, kind: type) -> list[Any]:
    """The block's pipeline handlers of one kind, in pipeline order."""
    return [s.handler for s in builder.ordered() if isinstance(s.handler, kind)]


def error_of(body: str) -> CorefileError:
    with pytest.raises(CorefileError) as info:
        builder_for(body)
    return info.value


_FACTORY = KubernetaiServerFactory({"example.org": None})


class Exchange(SimpleNamespace):
    """One query as the log step sees it: the request, the response sent, who asked, and
    how long answering took."""

    req: Request
    wire: bytes
    remote: str
    port: int
    duration: float


class Peer:
    """The protocol a request arrived on, reduced to ``peer(addr)``."""

    def __init__(self, remote: str, port: int) -> None:
        self.remote, self.port = remote, port

    def peer(self, addr: Any) -> tuple[str, int]:
        return self.remote, self.port


def exchange(qname: str = "example.org", qtype: str = "A", *, rcode: int = dns.rcode.NOERROR,
             answers: int = 1, udp: bool = True, remote: str = "127.0.0.1", port: int = 40311,
             id: int = 41424, duration: float = 0.000186745, **query_kw) -> Exchange:
    """A parsed request and the response wire the server sent for it."""
    query = dns.message.make_query(qname, qtype, id=id, **query_kw)
    req = _FACTORY.parseRequest(query.to_wire(), udp)
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    response.set_rcode(rcode)
    for i in range(answers):
        response.answer.append(dns.rrset.from_text(qname.rstrip(".") + ".", 5, "IN", "A",
                                                   f"10.0.0.{i + 1}"))
    if not answers:
        response.authority.append(dns.rrset.from_text(
            "example.org.", 5, "IN", "SOA", "ns.dns.example.org. hostmaster.example.org. "
            "1 7200 1800 86400 5"))
    return Exchange(req=req, wire=response.to_wire(), remote=remote, port=port,
                    duration=duration)


def record(*args: Any, **kwargs: Any) -> QueryLog:
    """A QueryLog as the log step builds it: from the query's and the response's wire."""
    ex = exchange(*args, **kwargs)
    return QueryLog(ex.remote, ex.port, ex.req, ex.wire, ex.duration)


def through(handler: LogHandler, ex: Exchange) -> None:
    """Pass one exchange through the log step as the server does: the step's ``serve``
    sees the request on its way in, then its observers see the response once sent."""
    req = ex.req
    req.proto, req.addr, req.started, req.observers = Peer(ex.remote, ex.port), None, 100.0, None
    reply = handler.serve(req, lambda r: Reply.encoded(ex.wire))
    assert reply.wire == ex.wire  # the log step passes the answer on untouched
    clock = SimpleNamespace(perf_counter=lambda: 100.0 + ex.duration)
    with mock.patch.object(log_handler, "time", clock):
        for observe in req.observers or ():
            observe(req, ex.wire)


def logged(logger: LogHandler, *exchanges: Exchange) -> list[str]:
    """The lines a log step configured as ``logger`` writes for these exchanges."""
    lines: list[str] = []
    target = LogHandler(logger.names, logger.fmt, logger.classes, lines.append)
    for ex in exchanges:
        through(target, ex)
    return lines


# -- bind ---------------------------------------------------------------------------------


@pytest.mark.parametrize("body, addresses", [
    ("bind 127.0.0.1", ["127.0.0.1"]),
    ("bind 127.0.0.1 ::1", ["127.0.0.1", "::1"]),
    ("bind 0:0:0::1", ["::1"]),
    ("bind 10.0.0.1\nbind 10.0.0.2 10.0.0.1", ["10.0.0.1", "10.0.0.2"]),
    ("bind 0.0.0.0", ["0.0.0.0"]),
])
def test_bind_addresses(body: str, addresses: list[str]) -> None:
    """bind lines add up their addresses, canonical and without duplicates."""
    assert builder_for(body).bind_addresses == addresses


def test_no_bind_means_no_addresses() -> None:
    """Without bind the block has no addresses of its own (the server listens everywhere)."""
    assert builder_for("errors").bind_addresses == []


@pytest.mark.parametrize("body, line, token, message", [
    ("bind", 2, "bind", "Wrong argument count or unexpected line ending after 'bind'"),
    ("bind eth0", 2, "eth0",
     "bind: not a valid IP address: 'eth0' (interface names are not supported)"),
    ("bind 127.0.0.1 localhost", 2, "localhost",
     "bind: not a valid IP address: 'localhost' (interface names are not supported)"),
    ("bind 10.0.0.0/8", 2, "10.0.0.0/8",
     "bind: not a valid IP address: '10.0.0.0/8' (interface names are not supported)"),
    ("bind 127.0.0.1 {\n    except 127.0.0.2\n}", 3, "except",
     "bind: 'except' blocks are not supported"),
])
def test_bind_errors(body: str, line: int, token: str, message: str) -> None:
    """bind refuses what it cannot listen on, at the offending line and token."""
    error = error_of(body)
    assert (error.line, error.token, error.message) == (line, token, message)


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("body", ["errors", "errors {\n    stacktrace\n}"])
def test_errors_accepted(body: str) -> None:
    """errors, alone or with stacktrace, adds one errors step to the pipeline."""
    builder = builder_for(body)
    assert [s.name for s in builder.stages] == ["errors"]
    assert len(handlers_of(builder, ErrorsHandler)) == 1


@pytest.mark.parametrize("body, line, token, message", [
    ("errors /var/log/errors.log", 2, "/var/log/errors.log",
     "errors: invalid log file: /var/log/errors.log"),
    ("errors {\n    consolidate 5m \".* timeout$\"\n}", 3, "consolidate",
     "errors: 'consolidate' is not supported yet"),
    ("errors {\n    stacktrace\n    verbose\n}", 4, "verbose",
     "errors: unknown property 'verbose'"),
])
def test_errors_option_errors(body: str, line: int, token: str, message: str) -> None:
    """errors refuses an argument, unsupported and unknown properties, located."""
    error = error_of(body)
    assert (error.line, error.token, error.message) == (line, token, message)


def test_errors_logger_prints_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    """The errors step writes a plugin error of the reply to standard output (via the writer
    thread), in CoreDNS's format, and marks it reported so the server does not log it too."""
    (step,) = handlers_of(builder_for("errors"), ErrorsHandler)
    req = exchange().req
    reply = step.serve(req, lambda r: Reply(dns.rcode.SERVFAIL, error="boom"))
    assert (reply.rcode, reply.reported) == (dns.rcode.SERVFAIL, True)
    STDOUT.flush()
    assert "[ERROR] plugin/errors: 2 example.org. A: boom\n" in capsys.readouterr().out


def test_errors_step_writes_nothing_for_a_reply_without_error() -> None:
    """A reply without a plugin error, or one already reported, writes no line."""
    lines: list[str] = []
    step = ErrorsHandler(lines.append)
    req = exchange().req
    step.serve(req, lambda r: Reply(dns.rcode.NOERROR))
    done = Reply(dns.rcode.SERVFAIL, error="boom")
    done.reported = True
    step.serve(req, lambda r: done)
    assert lines == []


def test_line_writer_never_blocks_and_counts_drops() -> None:
    """A full queue drops lines instead of blocking the caller, and says how many."""
    class Stuck(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.release = threading.Event()

        def write(self, text: str) -> int:
            self.release.wait(10)
            return super().write(text)
    stream = Stuck()
    writer = LineWriter(stream, capacity=2)
    for i in range(10):
        writer(f"line {i}")  # returns at once although the stream is stuck
    assert writer.dropped >= 7
    stream.release.set()
    writer.flush()
    assert "log line(s) dropped: output too slow" in stream.getvalue()


# -- log: options -------------------------------------------------------------------------


@pytest.mark.parametrize("body, names, fmt, classes", [
    ("log", (".",), COMMON, {"all"}),
    ("log example.org", ("example.org.",), COMMON, {"all"}),
    ("log Example.ORG. b.example", ("example.org.", "b.example."), COMMON, {"all"}),
    ("log . {common}", (".",), "{common}", {"all"}),
    ("log example.org {combined}", ("example.org.",), "{combined}", {"all"}),
    ('log . "{type} {name}"', (".",), "{type} {name}", {"all"}),
    ("log {\n    class denial error\n}", (".",), COMMON, {"denial", "error"}),
    ("log {\n    class success\n    class all\n}", (".",), COMMON, {"success", "all"}),
])
def test_log_options(body: str, names: tuple, fmt: str, classes: set) -> None:
    """log's names (FQDN, lower case), format and class filters, CoreDNS's defaults."""
    (logger,) = handlers_of(builder_for(body), LogHandler)
    assert (logger.names, logger.fmt, logger.classes) == (names, fmt, frozenset(classes))


def test_log_twice_gives_two_loggers() -> None:
    """Each log line is a step of its own, as each is a rule in CoreDNS."""
    builder = builder_for("log a.example\nlog b.example {\n    class error\n}")
    assert [(q.names, q.classes) for q in handlers_of(builder, LogHandler)] == [
        (("a.example.",), frozenset({"all"})), (("b.example.",), frozenset({"error"}))]


@pytest.mark.parametrize("body, line, token, message", [
    ("log {\n    format json\n}", 3, "format", "log: unknown property 'format'"),
    ("log {\n    class\n}", 3, "class", "log: class needs at least one argument"),
    ("log {\n    class success failure\n}", 3, "failure", "log: unknown class 'failure'"),
    ("log {\n    class DENIAL\n}", 3, "DENIAL", "log: unknown class 'DENIAL'"),
])
def test_log_option_errors(body: str, line: int, token: str, message: str) -> None:
    """log refuses unknown properties and classes, located at the offending token."""
    error = error_of(body)
    assert (error.line, error.token, error.message) == (line, token, message)


# -- log: lines ---------------------------------------------------------------------------


def test_log_line_is_coredns_common_format() -> None:
    """The default line is CoreDNS's {common} format, prefixed by [INFO]."""
    query = dns.message.make_query("example.org", "A", id=41424)
    size = len(query.to_wire())
    ex = exchange()
    (logger,) = handlers_of(builder_for("log"), LogHandler)
    (line,) = logged(logger, ex)
    assert line == (f'[INFO] 127.0.0.1:40311 - 41424 "A IN example.org. udp {size} false 512" '
                    f"NOERROR qr,aa,rd {len(ex.wire)} 0.000186745s")


def test_log_writes_an_ipv4_client_of_a_dual_stack_socket_as_ipv4() -> None:
    """A server listening on "::" sees IPv4 clients as ::ffff:a.b.c.d; CoreDNS (Go) prints
    them as plain IPv4, and so does the log step. IPv6 clients stay bracketed."""
    (logger,) = handlers_of(builder_for("log"), LogHandler)
    (mapped,) = logged(logger, exchange(remote="::ffff:10.1.2.3", port=5353))
    (ipv6,) = logged(logger, exchange(remote="2001:db8::1", port=5353))
    assert mapped.startswith("[INFO] 10.1.2.3:5353 - 41424 ")
    assert ipv6.startswith("[INFO] [2001:db8::1]:5353 - 41424 ")


def test_log_writes_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    """A log step set up from the Corefile writes to standard output."""
    (logger,) = handlers_of(builder_for("log"), LogHandler)
    assert logger.write is STDOUT
    through(logger, exchange())
    STDOUT.flush()
    out = capsys.readouterr().out
    assert out.startswith("[INFO] 127.0.0.1:40311 - 41424 ")
    assert out.endswith("s\n")


@pytest.mark.parametrize("kwargs, expected", [
    pytest.param({}, '127.0.0.1:40311 - 41424 "A IN example.org. udp {size} false 512" '
                     'NOERROR qr,aa,rd {rsize} 0.000186745s', id="common"),
    pytest.param({"qname": "WWW.Example.ORG", "qtype": "AAAA"},
                 '127.0.0.1:40311 - 41424 "AAAA IN www.example.org. udp {size} false 512" '
                 'NOERROR qr,aa,rd {rsize} 0.000186745s', id="name-lower-cased"),
    pytest.param({"remote": "::1", "port": 5353},
                 '[::1]:5353 - 41424 "A IN example.org. udp {size} false 512" '
                 'NOERROR qr,aa,rd {rsize} 0.000186745s', id="ipv6-remote-bracketed"),
    pytest.param({"udp": False},
                 '127.0.0.1:40311 - 41424 "A IN example.org. tcp {size} false 65535" '
                 'NOERROR qr,aa,rd {rsize} 0.000186745s', id="tcp-bufsize"),
    pytest.param({"use_edns": 0, "payload": 1232, "want_dnssec": True},
                 '127.0.0.1:40311 - 41424 "A IN example.org. udp {size} true 1232" '
                 'NOERROR qr,aa,rd {rsize} 0.000186745s', id="edns-do-bufsize"),
    pytest.param({"rcode": dns.rcode.NXDOMAIN, "answers": 0, "duration": 1.5},
                 '127.0.0.1:40311 - 41424 "A IN example.org. udp {size} false 512" '
                 'NXDOMAIN qr,aa,rd {rsize} 1.5s', id="nxdomain"),
    pytest.param({"rcode": dns.rcode.SERVFAIL, "answers": 0, "duration": 0.0, "qtype": "SRV"},
                 '127.0.0.1:40311 - 41424 "SRV IN example.org. udp {size} false 512" '
                 'SERVFAIL qr,aa,rd {rsize} 0s', id="servfail-zero-duration"),
])
def test_common_format_table(kwargs: dict, expected: str) -> None:
    """{common} fields as CoreDNS prints them: case, IPv6 brackets, proto, EDNS, rcode, time."""
    r = record(**kwargs)
    text = expected.format(size=r.size, rsize=r.rsize)
    assert format_record(COMMON, r) == text
    # Spelling the format out placeholder by placeholder gives the same line.
    assert format_record("{common}", r) == text
    assert format_record(COMMON + " ", r) == text + " "


@pytest.mark.parametrize("fmt, expected", [
    ("{type} {class} {name}", "AAAA IN www.example.org."),
    ("{remote} {port} {>id}", "127.0.0.1 40311 41424"),
    ("{proto} {>do} {>bufsize}", "udp false 512"),
    ("{rcode} {>rflags}", "NOERROR qr,aa,rd"),
    ("{duration}", "0.000186745s"),
    ("id={>id} {unknown} plain", "id=41424 {unknown} plain"),
])
def test_custom_format_placeholders(fmt: str, expected: str) -> None:
    """Each CoreDNS placeholder is replaced; an unknown one is kept as written."""
    assert format_record(fmt, record("WWW.example.org", "AAAA")) == expected


def test_combined_extends_common() -> None:
    """{combined} is the common line followed by one quoted field."""
    r = record()
    line = format_record("{combined}", r)
    assert line.startswith(r.common() + ' "')
    assert line.endswith('"')
    assert COMBINED.startswith(COMMON)


@pytest.mark.parametrize("kwargs, cls", [
    ({}, "success"),
    ({"answers": 0}, "denial"),
    ({"rcode": dns.rcode.NXDOMAIN, "answers": 0}, "denial"),
    ({"rcode": dns.rcode.SERVFAIL, "answers": 0}, "error"),
    ({"rcode": dns.rcode.REFUSED, "answers": 0}, "error"),
])
def test_response_class(kwargs: dict, cls: str) -> None:
    """Responses classify as CoreDNS's response.Classify: NODATA and NXDOMAIN are denial."""
    assert response_class(record(**kwargs)) == cls


@pytest.mark.parametrize("body, names", [
    ("log", ["example.org.", "www.example.org.", "other.test."]),
    ("log example.org", ["example.org.", "www.example.org."]),
    ("log EXAMPLE.org. other.test", ["example.org.", "www.example.org.", "other.test."]),
    ("log www.example.org", ["www.example.org."]),
    ("log xample.org", []),
])
def test_log_name_filter(body: str, names: list[str]) -> None:
    """Only names at or below a log name are logged, on label boundaries."""
    (logger,) = handlers_of(builder_for(body), LogHandler)
    lines = logged(logger, exchange("example.org"), exchange("www.example.org"),
                   exchange("other.test"))
    assert [line.split('"')[1].split()[2] for line in lines] == names


@pytest.mark.parametrize("classes, expected", [
    ("all", ["NOERROR", "NOERROR", "NXDOMAIN", "SERVFAIL"]),
    ("success", ["NOERROR"]),
    ("denial", ["NOERROR", "NXDOMAIN"]),
    ("error", ["SERVFAIL"]),
    ("success error", ["NOERROR", "SERVFAIL"]),
])
def test_log_class_filter(classes: str, expected: list[str]) -> None:
    """class keeps the responses of the named classes (NODATA counts as denial)."""
    (logger,) = handlers_of(builder_for(f"log {{\n    class {classes}\n}}"), LogHandler)
    lines = logged(logger, exchange(), exchange(answers=0),
                   exchange(rcode=dns.rcode.NXDOMAIN, answers=0),
                   exchange(rcode=dns.rcode.SERVFAIL, answers=0))
    assert [line.split('" ')[1].split()[0] for line in lines] == expected


def test_log_custom_format_line() -> None:
    """A custom format from the Corefile is used for the line after [INFO]."""
    (logger,) = handlers_of(builder_for('log . "{name} {type} {rcode}"'), LogHandler)
    assert logged(logger, exchange("web.example.org", "AAAA")) == [
        "[INFO] web.example.org. AAAA NOERROR"]


# -- kubernetai ---------------------------------------------------------------------------


def test_kubernetai_contributes_cluster_and_resolver() -> None:
    """A stanza adds its Cluster as a data source and its StanzaResolver to the chain."""
    builder = builder_for("kubernetai {\n    ttl 30\n}", keys="cluster.local")
    (entry,) = builder.sources
    cluster = entry.source
    assert isinstance(cluster, Cluster)
    (resolver,) = builder.resolvers()
    assert isinstance(resolver, StanzaResolver)
    assert resolver.cluster is cluster
    assert cluster.config.zones == ("cluster.local.",)  # the server block's zones
    assert resolver.options.ttl == 30
    assert not cluster.running
    assert [(s.name, s.position) for s in builder.stages] == [("kubernetai",
                                                                position("kubernetai"))]


def test_kubernetai_source_rebinds_its_resolver() -> None:
    """A reload hands the stanza an equal cluster that is already running: the resolver
    then answers from that one."""
    builder = builder_for("kubernetai", keys="cluster.local")
    (entry,) = builder.sources
    (resolver,) = builder.resolvers()
    running = Cluster(entry.source.config)
    entry.rebind(running)
    assert resolver.cluster is running


def test_kubernetai_ns_addresses_from_bind() -> None:
    """The stanza's NS records use the block's bind addresses."""
    builder = builder_for("kubernetai cluster.local\nbind 192.0.2.53 2001:db8::53")
    (resolver,) = builder.resolvers()
    assert resolver.options.ns_addresses == ("192.0.2.53", "2001:db8::53")


def test_kubernetai_warnings_collected() -> None:
    """A stanza zone outside the server block's zones is a warning on the builder."""
    builder = builder_for("kubernetai other.local", keys="cluster.local")
    (warning,) = builder.warnings
    assert warning.startswith("Corefile:2: kubernetai: zone other.local. outside this server "
                              "block's zones (cluster.local.)")
