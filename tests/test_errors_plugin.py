"""The `errors` directive as CoreDNS's: its syntax and messages, `consolidate` (on a test
clock, and on the real reactor through a reload), `stacktrace` for a plugin that raises;
and `errors` and `log` lines written by `twistd kubernetai` itself."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import dns.message
import dns.query
import dns.rcode
import pytest
from twisted.internet import defer, task

import kubernetai.corefile as corefile
from kubernetai.app.load import plans_of
from kubernetai.app.server import KubernetaiService, load_service
from kubernetai.core.codec import parse_request
from kubernetai.core.dnsserver import KubernetaiServerFactory, listen
from kubernetai.core.metrics import PROCESS
from kubernetai.core.pipeline import BlockPipeline, Stage
from kubernetai.core.plugin import position
from kubernetai.core.registry import BlockBuilder
from kubernetai.core.request import Reply, Request
from kubernetai.corefile import CorefileError
from kubernetai.pkg.gosyntax import go_duration
from kubernetai.pkg.logwriter import STDOUT
from kubernetai.pkg.reactor_thread import in_reactor
from kubernetai.plugins.errors.consolidate import Lifetime
from kubernetai.plugins.errors.handler import ErrorsHandler
from kubernetai.plugins.errors.regexp import RegexpError, compile_re2
from kubernetai.plugins.errors.setup import ErrorsDirective
from kubernetai.sandbox.ports import free_port

SOURCE = str(Path(__file__).resolve().parent.parent)  # twistd finds its plugin here
TWISTD = str(Path(sys.executable).with_name("twistd"))


# -- helpers ------------------------------------------------------------------------------


def builder_for(body: str) -> BlockBuilder:
    """``. { body }`` with its errors directive set up (body starts at line 2)."""
    (block,) = corefile.parse(f". {{\n{body}\n}}\n", "Corefile")
    builder = BlockBuilder(block, (".",))
    for index, directive in enumerate(block.directives):
        if directive.name == "errors":
            builder.directive, builder.index = directive, index
            ErrorsDirective().setup(directive, builder)
    builder.directive = None
    return builder


def step_for(body: str, clock: Any = None) -> tuple[ErrorsHandler, list[str]]:
    """The block's errors step, writing into the returned list, on ``clock``."""
    (stage,) = builder_for(body).stages
    step = stage.handler
    lines: list[str] = []
    step.write = lines.append
    if clock is not None:
        step.consolidator.clock = clock
    return step, lines


def patterns_of(body: str) -> list[tuple[int, str, str, bool]]:
    step, _ = step_for(body)
    return [(p.period_ns, p.source, p.level, p.show_first) for p in step.consolidator.patterns]


def error_of(body: str) -> CorefileError:
    with pytest.raises(CorefileError) as info:
        builder_for(body)
    return info.value


def request(name: str = "example.org", rdtype: str = "A") -> Request:
    req = parse_request(dns.message.make_query(name, rdtype).to_wire(), True)
    assert isinstance(req, Request)
    req.observers = None
    return req


def fail(step: ErrorsHandler, error: str, name: str = "example.org") -> Reply:
    """One query whose plugins answer SERVFAIL with ``error``; the reply is then "sent"."""
    req = request(name)
    reply = step.serve(req, lambda r: Reply(dns.rcode.SERVFAIL, error=error))
    assert reply.reported, "the server must not log it again"
    for observe in req.observers or ():
        observe(req, b"")
    return reply


def line(error: str, name: str = "example.org", level: str = "ERROR") -> str:
    return f"[{level}] plugin/errors: 2 {name}. A: {error}"


# -- the directive -------------------------------------------------------------------------


@pytest.mark.parametrize("body, patterns", [
    ("errors", []),
    ("errors stdout", []),
    ("errors {\n    stacktrace\n}", []),
    ('errors {\n    consolidate 5m ".* i/o timeout$"\n}',
     [(300 * 10**9, ".* i/o timeout$", "error", False)]),
    ('errors {\n    consolidate 30s "^Failed to .+" warning show_first\n'
     '    consolidate 1.5h x info\n    consolidate 100ms y show_first\n'
     '    consolidate 0 z debug\n}',
     [(30 * 10**9, "^Failed to .+", "warning", True), (5400 * 10**9, "x", "info", False),
      (10**8, "y", "error", True), (0, "z", "debug", False)]),
])
def test_accepted(body: str, patterns: list) -> None:
    assert patterns_of(body) == patterns


def test_stacktrace_and_consolidate_lifetime() -> None:
    builder = builder_for('errors {\n    stacktrace\n    consolidate 5m x\n}')
    (stage,) = builder.stages
    assert stage.handler.stacktrace
    (lifetime,) = builder.process_services
    assert isinstance(lifetime, Lifetime) and lifetime.consolidator is stage.handler.consolidator
    assert builder_for("errors").process_services == []  # nothing to stop without patterns


@pytest.mark.parametrize("body, line, token, message", [
    ("errors /var/log/errors.log", 2, "/var/log/errors.log",
     "errors: invalid log file: /var/log/errors.log"),
    ("errors stdout more", 2, "more",
     "Wrong argument count or unexpected line ending after 'more'"),
    ("errors {\n    consolidate\n}", 3, "consolidate",
     "Wrong argument count or unexpected line ending after 'consolidate'"),
    ("errors {\n    consolidate 5m\n}", 3, "5m",
     "Wrong argument count or unexpected line ending after '5m'"),
    ("errors {\n    consolidate 5m x warning show_first extra\n}", 3, "extra",
     "Wrong argument count or unexpected line ending after 'extra'"),
    ('errors {\n    consolidate 5x "a"\n}', 3, "5x",
     'errors: time: unknown unit "x" in duration "5x"'),
    ('errors {\n    consolidate five "a"\n}', 3, "five",
     'errors: time: invalid duration "five"'),
    ('errors {\n    consolidate 5 "a"\n}', 3, "5", 'errors: time: missing unit in duration "5"'),
    ('errors {\n    consolidate 5m "(abc"\n}', 3, "(abc",
     "errors: error parsing regexp: missing ), unterminated subpattern at position 0: `(abc`"),
    ('errors {\n    consolidate 5m "(?=timeout)"\n}', 3, "(?=timeout)",
     "errors: error parsing regexp: invalid or unsupported Perl syntax: `(?=`"),
    (f'errors {{\n    consolidate 5m "{"x" * 10001}"\n}}', 3, "x" * 10001,
     "errors: regex pattern too long: 10001 > 10000"),
    ("errors {\n    consolidate 5m x loud\n}", 3, "loud",
     "errors: unknown option in consolidate: loud"),
    ("errors {\n    consolidate 5m x warning error\n}", 3, "error",
     "errors: multiple log levels specified in consolidate"),
    ("errors {\n    consolidate 5m x show_first warning\n}", 3, "warning",
     "errors: log level must come before show_first in consolidate"),
    ("errors {\n    stacktrace now\n}", 3, "now", "errors: unknown property 'now'"),
    ("errors {\n    stacktrace\n    verbose\n}", 4, "verbose",
     "errors: unknown property 'verbose'"),
])
def test_errors(body: str, line: int, token: str, message: str) -> None:
    error = error_of(body)
    assert (error.line, error.token, error.message) == (line, token, message)


def test_once_per_block() -> None:
    with pytest.raises(CorefileError, match="can only be used once per Server Block: 'errors'"):
        plans_of(corefile.parse(". {\n    errors\n    errors\n}\n", "Corefile"))


@pytest.mark.parametrize("ns, text", [
    (0, "0s"), (1, "1ns"), (1500, "1.5\u00b5s"), (100_000_000, "100ms"), (1_500_000_000, "1.5s"),
    (30 * 10**9, "30s"), (300 * 10**9, "5m0s"), (90 * 10**9, "1m30s"), (3600 * 10**9, "1h0m0s"),
    (3661 * 10**9 + 5 * 10**8, "1h1m1.5s"), (-5 * 10**9, "-5s"),
])
def test_periods_printed_as_go_durations(ns: int, text: str) -> None:
    assert go_duration(ns) == text


# -- RE2 on Python's re --------------------------------------------------------------------


@pytest.mark.parametrize("pattern, text, matches", [
    (r"^read udp .* i/o timeout$", "read udp 10.0.0.1:53->8.8.8.8:53: i/o timeout", True),
    (r"timeout", "plugin/forward: i/o timeout on the way", True),   # anywhere in the text
    (r"timeout\z", "i/o timeout", True),
    (r"\Qa.b\E", "axb a.b", True),
    (r"\Qa.b\E", "axb", False),
    (r"(?<word>no) next", "no next plugin found", True),
    (r"^[[:alpha:]]+/[[:alpha:]]+:", "plugin/kubernetai: x", True),
    (r"\d+", "\u0663", False),                                      # \d is ASCII, as RE2
    (r"(?i)NO NEXT", "no next plugin found", True),
    (r"a{,2}", "a{,2}", True),                                       # text in RE2
])
def test_re2_patterns_mean_the_same(pattern: str, text: str, matches: bool) -> None:
    assert (compile_re2(pattern).search(text) is not None) is matches


@pytest.mark.parametrize("pattern", [
    r"(?=x)", r"(?<!x)y", r"(a)\1", r"(?P=n)", r"a*+", r"x\Z", r"a{1001}", r"(?x)a",
    r"(?#c)", r"(?>a)", r"[[:^alpha:]]", r"\pL", r"a(?i)b",
])
def test_re2_refusals(pattern: str) -> None:
    with pytest.raises(RegexpError, match="^error parsing regexp: "):
        compile_re2(pattern)


# -- the step: plain errors ------------------------------------------------------------------


def test_an_error_line_is_written_once_the_reply_is_sent() -> None:
    step, lines = step_for("errors")
    req = request()
    step.serve(req, lambda r: Reply(dns.rcode.SERVFAIL, error="plugin/x: boom"))
    assert lines == []  # not before the reply goes out
    for observe in req.observers:
        observe(req, b"")
    assert lines == [line("plugin/x: boom")]


def test_no_line_without_error_or_when_already_reported() -> None:
    step, lines = step_for("errors")
    step.serve(request(), lambda r: Reply(dns.rcode.NOERROR))
    done = Reply(dns.rcode.SERVFAIL, error="boom")
    done.reported = True
    req = request()
    step.serve(req, lambda r: done)
    assert lines == [] and req.observers is None


def test_error_text_cannot_forge_a_line() -> None:
    step, lines = step_for("errors")
    fail(step, "bad\n[ERROR] forged\x1b[2J \u00e9")
    assert lines == [line("bad\\n[ERROR] forged\\x1b[2J \\xe9")]


def test_an_error_from_a_deferred_reply() -> None:
    step, lines = step_for("errors")
    req = request()
    waiting: defer.Deferred = defer.Deferred()
    result = step.serve(req, lambda r: waiting)
    waiting.callback(Reply(dns.rcode.SERVFAIL, error="late"))
    assert result.result.reported
    for observe in req.observers:
        observe(req, b"")
    assert lines == [line("late")]


# -- consolidate ---------------------------------------------------------------------------


def test_consolidated_errors_make_one_line_per_period() -> None:
    clock = task.Clock()
    step, lines = step_for('errors {\n    consolidate 30s "timeout$" warning\n}', clock)
    for _ in range(3):
        fail(step, "read udp: i/o timeout")
    fail(step, "something else")
    assert lines == [line("something else")]
    clock.advance(29.9)
    assert len(lines) == 1
    clock.advance(0.1)
    assert lines[1:] == ["[WARNING] plugin/errors: 3 errors like 'timeout$' occurred in last 30s"]
    assert clock.getDelayedCalls() == []  # no match since: no timer
    fail(step, "read udp: i/o timeout")
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(30)
    assert lines[2:] == ["[WARNING] plugin/errors: 1 errors like 'timeout$' occurred in last 30s"]
    assert clock.getDelayedCalls() == []


def test_show_first_writes_the_first_at_once_and_sums_up_only_more() -> None:
    clock = task.Clock()
    step, lines = step_for('errors {\n    consolidate 5m "timeout$" info show_first\n}', clock)
    fail(step, "a timeout")
    assert lines == [line("a timeout", level="INFO")]
    fail(step, "b timeout")
    fail(step, "c timeout")
    clock.advance(300)
    assert lines[1:] == ["[INFO] plugin/errors: 3 errors like 'timeout$' occurred in last 5m0s"]
    fail(step, "d timeout")  # a new period: its first is written; alone, no summary
    clock.advance(300)
    assert lines[2:] == [line("d timeout", level="INFO")]


def test_the_first_matching_pattern_counts_an_error() -> None:
    clock = task.Clock()
    step, lines = step_for('errors {\n    consolidate 10s "^plugin/a" warning\n'
                           '    consolidate 20s "timeout" error\n}', clock)
    fail(step, "plugin/a: timeout")
    fail(step, "plugin/b: timeout")
    fail(step, "plugin/b: timeout")
    clock.advance(10)
    assert lines == ["[WARNING] plugin/errors: 1 errors like '^plugin/a' occurred in last 10s"]
    clock.advance(10)
    assert lines[1:] == ["[ERROR] plugin/errors: 2 errors like 'timeout' occurred in last 20s"]


def test_default_level_is_error() -> None:
    clock = task.Clock()
    step, lines = step_for("errors {\n    consolidate 1s x\n}", clock)
    fail(step, "x")
    clock.advance(1)
    assert lines == ["[ERROR] plugin/errors: 1 errors like 'x' occurred in last 1s"]


@pytest.mark.parametrize("debug", [False, True])
def test_debug_lines_only_in_debug_mode(debug: bool) -> None:
    """As CoreDNS's log.Debugf: nothing unless debug is on (here: the writer's flag)."""
    clock = task.Clock()
    step, lines = step_for("errors {\n    consolidate 1s x debug show_first\n}", clock)

    class Writer(list):
        """A line writer with the process's debug flag, as STDOUT has."""

        def __call__(self, text: str) -> None:
            self.append(text)
    writer = Writer()
    writer.debug = debug
    step.write = writer
    fail(step, "x")
    fail(step, "x")
    clock.advance(1)
    expected = [line("x", level="DEBUG"),
                "[DEBUG] plugin/errors: 2 errors like 'x' occurred in last 1s"]
    assert list(writer) == (expected if debug else [])


def test_debug_directive_in_the_block_turns_debug_lines_on() -> None:
    (block,) = corefile.parse(". {\n    debug\n    errors {\n        consolidate 1s x debug\n"
                              "    }\n}\n", "Corefile")
    builder = BlockBuilder(block, (".",))
    builder.directive = block.directives[1]
    ErrorsDirective().setup(block.directives[1], builder)
    assert builder.stages[0].handler.debug


def test_stop_writes_running_periods_and_then_every_error() -> None:
    """What a reload or the end of the process does (CoreDNS's OnShutdown)."""
    clock = task.Clock()
    step, lines = step_for('errors {\n    consolidate 1h "timeout" warning\n}', clock)
    lifetime = Lifetime(step.consolidator)
    lifetime.startService()
    fail(step, "timeout 1")
    fail(step, "timeout 2")
    lifetime.stopService()
    assert lines == ["[WARNING] plugin/errors: 2 errors like 'timeout' occurred in last 1h0m0s"]
    assert clock.getDelayedCalls() == []
    fail(step, "timeout 3")
    assert lines[1:] == [line("timeout 3", level="WARNING")]


def test_a_discarded_handler_holds_no_timer_past_its_period() -> None:
    clock = task.Clock()
    step, lines = step_for('errors {\n    consolidate 2s "x"\n}', clock)
    for _ in range(100):
        fail(step, "x")
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(2)
    assert clock.getDelayedCalls() == [] and len(lines) == 1


# -- stacktrace: a plugin that raises --------------------------------------------------------


def divide(request: Request) -> Reply:
    return Reply(1 // 0)


def panics() -> float:
    counter = PROCESS.counter("coredns_panics_total", "")
    return counter.values.get((), 0)


@pytest.mark.parametrize("stacktrace", [False, True])
def test_a_raising_plugin_is_answered_servfail_and_logged(stacktrace: bool) -> None:
    step, lines = step_for("errors {\n    stacktrace\n}" if stacktrace else "errors")
    before = panics()
    req = request()
    req.proto = None
    reply = step.serve(req, divide)
    assert (reply.rcode, reply.error) == (dns.rcode.SERVFAIL, None)
    assert panics() == before + 1
    (text,) = lines
    first, *rest = text.split("\n")
    assert first == ('[ERROR] Recovered from panic in server: "dns://" '
                     "ZeroDivisionError: integer division or modulo by zero")
    if stacktrace:
        assert rest[0] == "\tTraceback (most recent call last):"
        assert "in divide" in text and rest[-1].startswith("\tbuiltins.ZeroDivisionError")
        assert all(line.startswith("\t") for line in rest)
    else:
        assert rest == []


def test_a_raised_message_cannot_forge_a_line_of_the_traceback() -> None:
    """The exception's text may carry a newline (a name from the query, say): each line of
    the traceback is indented, so none of them reads as a log line of its own."""
    step, lines = step_for("errors {\n    stacktrace\n}")
    req = request()
    req.proto = None

    def forge(request: Request) -> Reply:
        raise ValueError("x\n[INFO] 10.0.0.1:53 - 1 \"A IN forged. udp\"")
    step.serve(req, forge)
    (text,) = lines
    assert not any(line.startswith("[") for line in text.split("\n")[1:])


def test_a_deferred_failure_is_a_panic_too() -> None:
    step, lines = step_for("errors")
    req = request()
    req.proto = None
    result = step.serve(req, lambda r: defer.fail(KeyError("gone")))
    assert result.result.rcode == dns.rcode.SERVFAIL
    assert lines == ['[ERROR] Recovered from panic in server: "dns://" KeyError: \'gone\'']


# -- a real server -------------------------------------------------------------------------


class Divide:
    name = "whoami"

    def serve(self, request: Request, next: Any) -> Reply:
        return divide(request)


def test_stacktrace_through_a_real_server(reactor_running: None) -> None:
    lines: list[str] = []
    pipeline = BlockPipeline([
        Stage("errors", position("errors"), 0, handler=ErrorsHandler(lines.append,
                                                                     stacktrace=True)),
        Stage("whoami", position("whoami"), 1, handler=Divide())])
    factory = in_reactor(KubernetaiServerFactory, {"boom.test": pipeline})
    ports = in_reactor(listen, factory, "127.0.0.1", 0)
    try:
        port = ports[0].getHost().port
        reply = dns.query.udp(dns.message.make_query("x.boom.test", "A"), "127.0.0.1",
                              port=port, timeout=5)
    finally:
        for p in ports:
            in_reactor(p.stopListening)
    assert reply.rcode() == dns.rcode.SERVFAIL
    (text,) = lines
    assert text.startswith('[ERROR] Recovered from panic in server: '
                           f'"dns://127.0.0.1:{port}" ZeroDivisionError: ')
    assert "\n\tTraceback (most recent call last):\n" in text


COREFILE = """\
fail.test {
    bind 127.0.0.1
    errors {
        consolidate 300ms "no next plugin found$" warning
    }
}
slow.test {
    bind 127.0.0.1
    errors {
        consolidate 1h "no next plugin found$" warning
    }
}
"""


@pytest.fixture
def served(reactor_running: None, tmp_path: Path) -> Iterator[tuple[KubernetaiService, int, Path]]:
    path = tmp_path / "Corefile"
    path.write_text(COREFILE)
    svc: KubernetaiService = in_reactor(load_service, str(path), port_override=0)
    in_reactor(svc.startService)

    def listening() -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        svc.listening.addBoth(lambda result: (d.callback(result), result)[1])
        return d
    ports = in_reactor(listening)
    try:
        yield svc, ports[0].getHost().port, path
    finally:
        in_reactor(svc.stopService)


def errors_steps(svc: KubernetaiService, lines: list[str]) -> list[ErrorsHandler]:
    """The errors steps of the configuration served now, writing into ``lines``."""
    steps = [stage.handler for plan in svc.plans for block in plan.blocks
             for stage in block.builder.stages if isinstance(stage.handler, ErrorsHandler)]
    for step in steps:
        assert step.write is STDOUT
        step.write = lines.append
    return steps


def until(predicate: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def servfail(port: int, name: str) -> None:
    reply = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=5)
    assert reply.rcode() == dns.rcode.SERVFAIL


def test_consolidated_on_the_reactor_and_summed_up_on_reload(
        served: tuple[KubernetaiService, int, Path]) -> None:
    svc, port, path = served
    lines: list[str] = []
    assert len(errors_steps(svc, lines)) == 2
    for i in range(3):
        servfail(port, f"q{i}.fail.test")
    assert lines == []
    until(lambda: lines)
    assert lines == ["[WARNING] plugin/errors: 3 errors like 'no next plugin found$' occurred "
                     "in last 300ms"]
    # A reload replaces the handlers: a period still running is summed up at once.
    for i in range(2):
        servfail(port, f"r{i}.slow.test")
    plans = in_reactor(plans_of, corefile.parse_file(str(path)), port_override=0)
    in_reactor(svc.retarget, plans)
    assert lines[1:] == ["[WARNING] plugin/errors: 2 errors like 'no next plugin found$' "
                         "occurred in last 1h0m0s"]
    fresh: list[str] = []
    _, slow = errors_steps(svc, fresh)
    servfail(port, "s.slow.test")
    in_reactor(lambda: None)
    assert fresh == [] and len(lines) == 2  # the new handler counts it, for an hour
    assert slow.consolidator.patterns[0].count == 1


# -- through twistd --------------------------------------------------------------------------


TWISTD_COREFILE = """\
who.test:{port} {{
    bind 127.0.0.1
    log
    errors
    whoami
}}
fail.test:{port} {{
    bind 127.0.0.1
    errors {{
        consolidate 1m "no next plugin found$" warning show_first
    }}
    log . "{{name}} {{rcode}} {{/log/class}}"
}}
"""


def test_lines_written_by_twistd(tmp_path: Path) -> None:
    """The real server's standard output: log lines in CoreDNS's common format, the first
    consolidated error at once, and the period still running summed up when it stops."""
    port = free_port()
    corefile_path = tmp_path / "Corefile"
    corefile_path.write_text(TWISTD_COREFILE.format(port=port))
    process = subprocess.Popen(
        [TWISTD, "--nodaemon", "--pidfile=", "kubernetai", "--corefile", str(corefile_path)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": SOURCE})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                dns.query.udp(dns.message.make_query("up.who.test", "A"), "127.0.0.1",
                              port=port, timeout=0.5)
                break
            except (dns.exception.Timeout, OSError):
                assert process.poll() is None and time.monotonic() < deadline, \
                    "the server did not start"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            query = dns.message.make_query("Web.Who.Test", "A")
            dns.query.udp(query, "127.0.0.1", port=port, sock=s, timeout=5)
            client = s.getsockname()[1]
        for i in range(3):
            reply = dns.query.udp(dns.message.make_query(f"q{i}.fail.test", "A"), "127.0.0.1",
                                  port=port, timeout=5)
            assert reply.rcode() == dns.rcode.SERVFAIL
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, out
    lines = out.splitlines()

    def found(pattern: str) -> list[str]:
        return [m.group(0) for text in lines if (m := re.search(pattern, text))]
    assert found(rf'\[INFO\] 127\.0\.0\.1:{client} - {query.id} "A IN web\.who\.test\. udp '
                 rf'{len(query.to_wire())} false 512" NOERROR qr,aa,rd \d+ [0-9.]+s$'), out
    assert found(r"\[WARNING\] plugin/errors: .*$") == [
        "[WARNING] plugin/errors: 2 q0.fail.test. A: plugin/log: no next plugin found",
        "[WARNING] plugin/errors: 3 errors like 'no next plugin found$' occurred in last 1m0s",
    ], out
    assert found(r"\[INFO\] q\d\.fail\.test\. .*$") == [
        f"[INFO] q{i}.fail.test. SERVFAIL error" for i in range(3)], out
    # CoreDNS's order: a query's log line, then its errors line.
    first_log = next(i for i, text in enumerate(lines) if "[INFO] q0.fail.test." in text)
    first_error = next(i for i, text in enumerate(lines) if "2 q0.fail.test. A:" in text)
    assert first_log < first_error, out

