"""The plugin pipeline's contract, through a real server on 127.0.0.1 asked with dnspython.

Each server block is a pipeline of handlers (CoreDNS's plugin chain): they run in the
plugin order (:data:`kubernetai.core.plugin.ORDER`), not the Corefile's; each may answer,
pass the query on, or wrap what comes back, now or later (a Deferred); each sees the
request's context; the block's resolvers are one step of it, and what they pass on goes
to the handlers after them. ExternalName chases re-enter the server with their depth on
the query, so loops end however the answers arrive.
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Callable, Iterator

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from twisted.internet import defer, reactor
from twisted.names import dns as tdns

import kubernetai.corefile as corefile
from kubernetai.app.load import compile_corefile, load_plans
from kubernetai.app.server import KubernetaiService, build_factory
from kubernetai.core.dnsserver import KubernetaiServerFactory, listen
from kubernetai.core.negative import FallThrough
from kubernetai.core.pipeline import BlockPipeline, Stage
from kubernetai.core.plugin import Next, Result, position, then
from kubernetai.core.registry import GROUP, BlockBuilder, Registry
from kubernetai.core.request import AD, RA, Reply, Request
from kubernetai.pkg.logwriter import STDOUT
from kubernetai.pkg.reactor_thread import in_reactor
from kubernetai.plugins.kubernetai.handler import MAX_CHASE
from kubernetai.sandbox.server import Sandbox

# What the handlers saw, in order: ("in"|"out"|"later", handler name).
TRACE: list[tuple[str, str]] = []


@pytest.fixture(autouse=True)
def _fresh_trace() -> None:
    TRACE.clear()


# -- handlers -----------------------------------------------------------------------------


def txt(request: Request, text: str) -> tdns.RRHeader:
    return tdns.RRHeader(request.qname, tdns.TXT, tdns.IN, 0, tdns.Record_TXT(text.encode()),
                         auth=True)


class Recorder:
    """Passes every query on, noting its name on the way in and on the way back."""

    def __init__(self, name: str) -> None:
        self.name = name

    def serve(self, request: Request, next: Next) -> Result:
        TRACE.append(("in", self.name))
        return then(next(request), self._back)

    def _back(self, reply: Reply) -> Reply:
        TRACE.append(("out", self.name))
        return reply


class Answerer:
    """Answers at once with one TXT record naming itself; never calls the next handler."""

    def __init__(self, name: str) -> None:
        self.name = name

    def serve(self, request: Request, next: Next) -> Result:
        TRACE.append(("in", self.name))
        return Reply(dns.rcode.NOERROR, True, [txt(request, f"answered by {self.name}")])


class Wrapper:
    """Passes the query on and adds a TXT record to whatever answer comes back."""

    def __init__(self, name: str) -> None:
        self.name = name

    def serve(self, request: Request, next: Next) -> Result:
        def wrap(reply: Reply) -> Reply:
            reply.answers = [*reply.answers, txt(request, f"wrapped by {self.name}")]
            return reply
        return then(next(request), wrap)


class Later:
    """Waits ``delay`` seconds on the reactor, then passes on (or answers, if ``answer``)."""

    def __init__(self, name: str, delay: float, answer: bool = False) -> None:
        self.name, self.delay, self.answer = name, delay, answer

    def serve(self, request: Request, next: Next) -> defer.Deferred[Reply]:
        waited: defer.Deferred[None] = defer.Deferred()
        reactor.callLater(self.delay, waited.callback, None)

        def go_on(_: None) -> Result:
            TRACE.append(("later", self.name))
            if self.answer:
                return Reply(dns.rcode.NOERROR, True, [txt(request, f"later {self.name}")])
            return next(request)
        return waited.addCallback(go_on)


class Capture:
    """Answers NOERROR and keeps what the request's context said."""

    name = "template"

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def serve(self, request: Request, next: Next) -> Result:
        self.seen.append({
            "peer": request.peer(), "transport": request.transport, "udp": request.udp,
            "edns": request.edns, "do": request.do, "limit": request.limit,
            "qname": request.qname, "lname": request.lname, "qtype": request.qtype,
            "qclass": request.qclass, "question": request.question, "zone": request.zone,
            "block": request.block, "server": request.server, "started": request.started,
            "depth": request.depth})
        return Reply(dns.rcode.NOERROR, True)


def pipeline(*handlers: Any) -> BlockPipeline:
    """A block of these handlers, each placed by its name in ORDER."""
    return BlockPipeline([Stage(h.name, position(h.name), i, handler=h)
                          for i, h in enumerate(handlers)])


# -- directives for the registry (entry points of this module) ----------------------------


class RecorderDirective:
    """Any plugin name of ORDER this test registers: a Recorder under that name."""

    name = "recorder"
    once = False

    def setup(self, directive: corefile.Directive, builder: BlockBuilder) -> None:
        builder.add_handler(Recorder(directive.name))


class StampDirective(RecorderDirective):
    """A third-party directive CoreDNS does not know, acting right after acl."""

    name = "stamp"
    after = "acl"


# How long the `delay` resolver waits before passing a query on.
DELAY = 0.05


class Delay:
    """A resolver that answers nothing, after DELAY seconds: every query of its block's
    chain is answered asynchronously (as one through `forward` would be)."""

    def query(self, query: tdns.Query, timeout: Any = None) -> defer.Deferred[Any]:
        later: defer.Deferred[Any] = defer.Deferred()
        reactor.callLater(DELAY, later.errback, FallThrough())
        return later


class DelayDirective:
    """A third-party resolver plugin placed before kubernetai in the chain."""

    name = "delay"
    after = "kubernetes"
    once = True

    def setup(self, directive: corefile.Directive, builder: BlockBuilder) -> None:
        builder.add_resolver(Delay())


def registry_with(**points: str) -> Registry:
    """The shipped directives and these: name -> attribute of this module."""
    return Registry(points=[*entry_points(group=GROUP),
                            *(EntryPoint(name, f"{__name__}:{attr}", GROUP)
                              for name, attr in points.items())])


# -- a server and a client ----------------------------------------------------------------


@contextmanager
def serving(factory: Callable[[], KubernetaiServerFactory]) -> Iterator[
        tuple[KubernetaiServerFactory, int]]:
    """The factory made and listening on 127.0.0.1 (UDP and TCP, one free port)."""
    def start() -> tuple[KubernetaiServerFactory, list[Any]]:
        made = factory()
        return made, listen(made, "127.0.0.1", 0)
    made, ports = in_reactor(start)
    try:
        yield made, ports[0].getHost().port
    finally:
        for port in ports:
            in_reactor(port.stopListening)


def serve_zones(zones: dict[str, Any], **options: Any) -> Any:
    return serving(lambda: KubernetaiServerFactory(zones, reactor=reactor, **options))


def ask(port: int, name: str, rdtype: str = "A", *, tcp: bool = False,
        sock: socket.socket | None = None, **query: Any) -> dns.message.Message:
    """One query; every record its own RRset (so repeated CNAMEs are all counted)."""
    message = dns.message.make_query(name, rdtype, **query)
    if tcp:
        return dns.query.tcp(message, "127.0.0.1", port=port, timeout=10, sock=sock,
                             one_rr_per_rrset=True)
    return dns.query.udp(message, "127.0.0.1", port=port, timeout=10, sock=sock,
                         one_rr_per_rrset=True)


def texts(response: dns.message.Message) -> list[str]:
    return [rr.to_text() for rrset in response.answer for rr in rrset]


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def tcp_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


# -- order --------------------------------------------------------------------------------


def corefile_plans(text: str, registry: Registry) -> list[Any]:
    """The Corefile compiled with ``registry``, every block on one port."""
    return compile_corefile(corefile.parse(text, "Corefile"), registry=registry,
                            port_override=0)


SCRAMBLED = """\
example.org:53 {
    whoami
    template
    rewrite
    header
    stamp
    acl
}
"""


def test_handlers_run_in_plugin_order_whatever_the_corefile_order(
        reactor_running: None) -> None:
    """rewrite, acl, stamp (after acl), header, template, then whoami answers; the answer
    comes back through them in reverse, although the Corefile lists them otherwise."""
    registry = registry_with(acl="RecorderDirective", rewrite="RecorderDirective",
                             header="RecorderDirective", template="RecorderDirective",
                             stamp="StampDirective")
    (plan,) = corefile_plans(SCRAMBLED, registry)
    (block,) = plan.blocks
    assert [h.name for h in block.pipeline().handlers] == [
        "rewrite", "acl", "stamp", "header", "template", "whoami"]
    with serving(lambda: build_factory(plan, reactor)) as (_, port):
        response = ask(port, "www.example.org")
    assert response.rcode() == dns.rcode.NOERROR
    assert [rr.to_text() for rrset in response.additional for rr in rrset][0] == "127.0.0.1"
    walked = ["rewrite", "acl", "stamp", "header", "template"]
    assert TRACE == [("in", n) for n in walked] + [("out", n) for n in reversed(walked)]


def test_third_party_directive_lands_after_the_plugin_it_names(reactor_running: None) -> None:
    """An entry-point directive that CoreDNS does not know acts right after the plugin its
    `after` names and before the next one of ORDER, wherever the Corefile puts it."""
    registry = registry_with(acl="RecorderDirective", rewrite="RecorderDirective",
                             stamp="StampDirective")
    assert "stamp" in registry.names()
    text = "example.org:53 {\n    rewrite\n    whoami\n    acl\n    stamp\n}\n"
    (plan,) = corefile_plans(text, registry)
    (block,) = plan.blocks
    (stamp,) = [s for s in block.builder.stages if s.name == "stamp"]
    assert position("acl") < stamp.position < position("cache")
    with serving(lambda: build_factory(plan, reactor)) as (_, port):
        assert ask(port, "www.example.org", tcp=True).rcode() == dns.rcode.NOERROR
    assert [name for way, name in TRACE if way == "in"] == ["rewrite", "acl", "stamp"]


# -- answer, pass on, wrap; now or later --------------------------------------------------


def test_a_handler_answers_and_the_rest_never_run(reactor_running: None) -> None:
    """A handler that answers ends the way in: later handlers are not asked; the answer
    goes back through the handlers before it."""
    with serve_zones({"example.org": pipeline(Recorder("any"), Answerer("rewrite"),
                                              Recorder("header"))}) as (_, port):
        response = ask(port, "www.example.org")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert texts(response) == ['"answered by rewrite"']
    assert TRACE == [("in", "any"), ("in", "rewrite"), ("out", "any")]


def test_a_handler_wraps_the_reply_of_the_next(reactor_running: None) -> None:
    """A handler may change what comes back: here each wrapper adds a record, the inner
    one first."""
    with serve_zones({"example.org": pipeline(Wrapper("any"), Wrapper("rewrite"),
                                              Answerer("template"))}) as (_, port):
        response = ask(port, "www.example.org", tcp=True)
    assert texts(response) == ['"answered by template"', '"wrapped by rewrite"',
                               '"wrapped by any"']


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_a_deferred_handler_passes_on_later(reactor_running: None, tcp: bool) -> None:
    """A handler that returns a Deferred holds the query until it fires; the next handler
    then answers, and the wrapper before it still wraps that later answer."""
    with serve_zones({"example.org": pipeline(Wrapper("any"), Later("rewrite", 0.2),
                                              Answerer("template"))}) as (_, port):
        started = time.monotonic()
        response = ask(port, "www.example.org", tcp=tcp)
        took = time.monotonic() - started
    assert took >= 0.2
    assert texts(response) == ['"answered by template"', '"wrapped by any"']
    assert TRACE == [("later", "rewrite"), ("in", "template")]


def test_a_deferred_handler_answers_itself(reactor_running: None) -> None:
    """A handler's Deferred may fire with its own answer; the handlers after it never run."""
    with serve_zones({"example.org": pipeline(Recorder("any"), Later("rewrite", 0.05, True),
                                              Answerer("template"))}) as (_, port):
        response = ask(port, "www.example.org")
    assert texts(response) == ['"later rewrite"']
    assert TRACE == [("in", "any"), ("later", "rewrite"), ("out", "any")]


def test_passing_on_past_the_last_handler_is_servfail(reactor_running: None) -> None:
    """Past the last handler there is no plugin: SERVFAIL, and the server reports CoreDNS's
    error naming the last plugin (no errors plugin in the block to do it)."""
    reported: list[str] = []
    with serve_zones({"example.org": pipeline(Recorder("any"), Recorder("rewrite"))},
                     on_error=reported.append) as (_, port):
        response = ask(port, "www.Example.org")
    assert response.rcode() == dns.rcode.SERVFAIL
    assert reported == ["2 www.example.org. A: plugin/rewrite: no next plugin found"]
    assert TRACE == [("in", "any"), ("in", "rewrite"), ("out", "rewrite"), ("out", "any")]


class Broken:
    """A handler that breaks the contract: it answers with something that is no Reply."""

    name = "acl"

    def serve(self, request: Request, next: Next) -> Result:
        return "not a reply"  # type: ignore[return-value]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_a_handler_answering_no_reply_is_servfail(reactor_running: None, tcp: bool) -> None:
    """A handler that returns neither a Reply nor a Deferred gets SERVFAIL, and a TCP
    connection goes on answering (its query is not left outstanding)."""
    with serve_zones({"example.org": pipeline(Broken())}) as (_, port):
        if tcp:
            sock = tcp_socket(port)
            with sock:
                for _ in range(2):
                    response = ask(port, "www.example.org", tcp=True, sock=sock)
                    assert response.rcode() == dns.rcode.SERVFAIL
        else:
            assert ask(port, "www.example.org").rcode() == dns.rcode.SERVFAIL


# -- the request context ------------------------------------------------------------------


def question_of(name: str) -> bytes:
    return dns.name.from_text(name).to_wire() + b"\x00\x01\x00\x01"  # A IN


@pytest.mark.parametrize("tcp, edns, expected", [
    pytest.param(False, {"use_edns": 0, "payload": 1232, "want_dnssec": True},
                 {"transport": "udp", "udp": True, "edns": True, "do": True, "limit": 1232},
                 id="udp-edns-do"),
    pytest.param(False, {}, {"transport": "udp", "udp": True, "edns": False, "do": False,
                             "limit": 512}, id="udp-plain"),
    pytest.param(True, {"use_edns": 0, "payload": 4096},
                 {"transport": "tcp", "udp": False, "edns": True, "do": False,
                  "limit": 65535}, id="tcp-edns"),
])
def test_request_context(reactor_running: None, tcp: bool, edns: dict,
                         expected: dict) -> None:
    """A handler sees who asked (address and port of the client's socket) and how
    (transport, EDNS size and DO), the question as sent (case kept), the zone of the
    block it was routed to (the longest match), the block and server, when it arrived,
    and no chase depth."""
    outer, inner = Capture(), Capture()
    outer_block, inner_block = pipeline(outer), pipeline(inner)
    name = "WWW.Sub.Example.ORG"
    with serve_zones({"example.org": outer_block, "Sub.example.org.": inner_block}) as (
            factory, port):
        sock = tcp_socket(port) if tcp else udp_socket()
        try:
            before = time.perf_counter()
            response = ask(port, name, tcp=tcp, sock=sock, **edns)
            after = time.perf_counter()
            client = sock.getsockname()
        finally:
            sock.close()
    assert response.rcode() == dns.rcode.NOERROR
    assert outer.seen == []
    (seen,) = inner.seen
    assert seen["peer"] == client
    assert {key: seen[key] for key in expected} == expected
    assert (seen["qname"], seen["lname"]) == (b"WWW.Sub.Example.ORG", b"www.sub.example.org")
    assert (seen["qtype"], seen["qclass"]) == (tdns.A, tdns.IN)
    assert seen["question"] == question_of(name)
    assert seen["zone"] == b"sub.example.org"
    assert seen["block"] is inner_block
    assert seen["server"] is factory.router
    assert before <= seen["started"] <= after
    assert seen["depth"] == 0


# -- the resolver chain and the handlers after it (a real cluster) -------------------------


def kube_service(name: str, **spec: Any) -> dict:
    spec.setdefault("ports", [{"name": "http", "port": 80}])
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "shop"}, "spec": spec}


def external(name: str, target: str) -> dict:
    return kube_service(name, type="ExternalName", externalName=target, ports=[])


# a.local/b.local: ExternalNames pointing at each other, answered at once. p.local/q.local:
# the same, but every query into that block waits DELAY for the `delay` resolver first.
CLUSTER_COREFILE = """\
a.local:53 c.local:53 {{
    bind 127.0.0.1
    whoami
    kubernetai a.local {{
        endpoint {url}
        fallthrough
    }}
}}
b.local:53 {{
    bind 127.0.0.1
    errors
    kubernetai {{
        endpoint {url}
        fallthrough
    }}
}}
p.local:53 q.local:53 {{
    bind 127.0.0.1
    kubernetai p.local {{
        endpoint {url}
    }}
    delay
    kubernetai q.local {{
        endpoint {url}
    }}
}}
"""


class Running:
    """The service running over one sandbox (``port``), and a second server of the same
    blocks without the answer cache (``plain``), so a name asked twice is answered twice."""

    def __init__(self, sandbox: Sandbox, service: KubernetaiService, port: int,
                 plain: int) -> None:
        self.sandbox, self.service, self.port, self.plain = sandbox, service, port, plain


@pytest.fixture(scope="module")
def cluster(reactor_running: None,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    sandbox = Sandbox(bookmark_interval=1.0, history_size=50)
    sandbox.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
                   kube_service("web"),
                   external("ping", "pong.shop.svc.b.local"),
                   external("pong", "ping.shop.svc.a.local"),
                   external("slowping", "slowpong.shop.svc.q.local"),
                   external("slowpong", "slowping.shop.svc.p.local")])
    sandbox.start()
    path: Path = tmp_path_factory.mktemp("pipeline") / "Corefile"
    path.write_text(CLUSTER_COREFILE.format(url=sandbox.url))
    plans = load_plans(str(path), port_override=0, registry=registry_with(delay="DelayDirective"))
    service = KubernetaiService(plans, reactor=reactor)

    def start() -> defer.Deferred:
        service.startService()
        return service.listening
    ports = in_reactor(start)
    try:
        assert all(c.synced for c in service.clusters)
        (plan,) = plans
        with serving(lambda: build_factory(plan, reactor)) as (_, plain):
            yield Running(sandbox, service, ports[0].getHost().port, plain)
    finally:
        in_reactor(service.stopService)
        in_reactor(sandbox.stop)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_a_name_passed_on_reaches_the_handler_after_the_chain(cluster: Running,
                                                              tcp: bool) -> None:
    """whoami (written first, acting after kubernetai) answers what the stanza passes on:
    a name it does not find (fallthrough) and a name outside its zones; what the stanza
    finds is its own answer."""
    cluster_ip = cluster.sandbox.get("Service", "shop", "web")["spec"]["clusterIP"]
    found = ask(cluster.port, "web.shop.svc.a.local", tcp=tcp)
    assert (found.rcode(), texts(found)) == (dns.rcode.NOERROR, [cluster_ip])
    for name in ("nope.shop.svc.a.local", "www.c.local"):
        sock = tcp_socket(cluster.port) if tcp else udp_socket()
        try:
            response = ask(cluster.port, name, tcp=tcp, sock=sock)
            client_port = sock.getsockname()[1]
        finally:
            sock.close()
        assert response.rcode() == dns.rcode.NOERROR, name
        assert response.answer == []
        additional = {(rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype)):
                      [rr.to_text() for rr in rrset] for rrset in response.additional}
        proto = "_tcp" if tcp else "_udp"
        assert additional == {(f"{name}.", "A"): ["127.0.0.1"],
                              (f"{proto}.{name}.", "SRV"): [f"0 0 {client_port} ."]}, name


def test_a_name_passed_on_with_no_next_plugin_is_servfail(
        cluster: Running, capsys: pytest.CaptureFixture[str]) -> None:
    """Without a handler after the chain, a name the stanza passes on is SERVFAIL, and the
    block's errors plugin writes CoreDNS's "no next plugin found" line for it."""
    assert ask(cluster.port, "web.shop.svc.b.local").rcode() == dns.rcode.NOERROR
    response = ask(cluster.port, "nope.shop.svc.b.local")
    assert response.rcode() == dns.rcode.SERVFAIL
    in_reactor(lambda: None)
    STDOUT.flush()
    lines = [line for line in capsys.readouterr().out.splitlines() if "[ERROR]" in line]
    assert lines == ["[ERROR] plugin/errors: 2 nope.shop.svc.b.local. A: "
                     "plugin/kubernetai: no next plugin found"]


# -- ExternalName chase depth -------------------------------------------------------------

# The name's own CNAME, then one per chase through the server: MAX_CHASE (10) chases.
CHAIN = MAX_CHASE + 1


def cnames(response: dns.message.Message) -> list[str]:
    assert response.rcode() == dns.rcode.NOERROR
    assert all(rrset.rdtype == dns.rdatatype.CNAME for rrset in response.answer)
    return [rrset.name.to_text() for rrset in response.answer]


def test_externalname_loop_is_bounded(cluster: Running) -> None:
    """ExternalNames of two zones pointing at each other: the answer is the CNAME chain,
    alternating between the zones, ended after MAX_CHASE chases."""
    chain = cnames(ask(cluster.plain, "ping.shop.svc.a.local", tcp=True))
    assert len(chain) == CHAIN <= 11
    assert chain[:3] == ["ping.shop.svc.a.local.", "pong.shop.svc.b.local.",
                         "ping.shop.svc.a.local."]


def test_asynchronous_externalname_loop_is_bounded(cluster: Running) -> None:
    """The same loop through a block whose every answer arrives later (a Deferred that
    fires after DELAY) ends after as many chases: the depth travels with the query."""
    started = time.monotonic()
    chain = cnames(ask(cluster.plain, "slowping.shop.svc.p.local", tcp=True))
    assert len(chain) == CHAIN
    assert chain[:2] == ["slowping.shop.svc.p.local.", "slowpong.shop.svc.q.local."]
    assert time.monotonic() - started >= DELAY * CHAIN  # each hop waited: asynchronous


def test_concurrent_chases_do_not_share_a_depth(cluster: Running) -> None:
    """Two asynchronous loops in flight at once, and an immediate one asked meanwhile,
    each end after exactly MAX_CHASE chases of their own: no depth is process-wide."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        slow = [pool.submit(ask, cluster.plain, name, tcp=True)
                for name in ("slowping.shop.svc.p.local", "slowpong.shop.svc.q.local")]
        time.sleep(2 * DELAY)  # both slow chains are a hop or two deep now
        assert not any(future.done() for future in slow)
        quick = [cnames(ask(cluster.plain, name, tcp=True))
                 for name in ("ping.shop.svc.a.local", "pong.shop.svc.b.local")]
        assert not any(future.done() for future in slow)  # still in flight meanwhile
        answers = [cnames(future.result(timeout=30)) for future in slow]
    assert [len(chain) for chain in quick + answers] == [CHAIN] * 4
    assert [chain[0] for chain in answers] == ["slowping.shop.svc.p.local.",
                                               "slowpong.shop.svc.q.local."]


def test_errors_first_keeps_the_early_answer_of_the_cache() -> None:
    """A block whose first step is `errors` (the kubeadm Corefile) answers cache hits early,
    through the cache, without passing `errors` (it has nothing to do for them); a miss goes
    through `errors` and the cache looks it up once."""
    from kubernetai.core.wirecache import WireCache, WireCacheHandler
    from kubernetai.plugins.errors.handler import ErrorsHandler

    errors = ErrorsHandler(lambda line: None)
    cache = WireCacheHandler(WireCache())
    pipeline = BlockPipeline([
        Stage("errors", position("errors"), 0, handler=errors),
        Stage("cache", position("cache"), 1, handler=cache, implicit=True)])
    assert pipeline.early == cache.early
    assert pipeline.entry == errors.serve


# -- what relayed and dropped answers need (forward, acl) ---------------------------------


class Fixed:
    """Answers every query with ``reply()`` (a fresh Reply each time), counting them."""

    def __init__(self, name: str, reply: Callable[[Request], Reply]) -> None:
        self.name, self.reply, self.served = name, reply, 0

    def serve(self, request: Request, next: Next) -> Result:
        self.served += 1
        return self.reply(request)


def test_a_dropped_reply_sends_nothing_and_the_server_goes_on(reactor_running: None) -> None:
    """``Reply.dropped()`` (acl's drop): the client hears nothing; the next query is answered."""
    def reply(request: Request) -> Reply:
        if request.lname.startswith(b"drop."):
            return Reply.dropped()
        return Reply(dns.rcode.NOERROR, True, [txt(request, "kept")])
    with serve_zones({"example.org": pipeline(Fixed("template", reply))}) as (_, port):
        with pytest.raises(dns.exception.Timeout):
            dns.query.udp(dns.message.make_query("drop.example.org", "A"), "127.0.0.1",
                          port=port, timeout=0.5)
        assert texts(ask(port, "www.example.org")) == ['"kept"']


@pytest.mark.parametrize("flags, expected", [
    (0, dns.flags.QR | dns.flags.RD),
    (RA, dns.flags.QR | dns.flags.RD | dns.flags.RA),
    (RA | AD, dns.flags.QR | dns.flags.RD | dns.flags.RA | dns.flags.AD),
])
def test_relayed_header_flags_are_sent(reactor_running: None, flags: int,
                                       expected: int) -> None:
    """RA and AD of an upstream's answer (``Reply.flags``) reach the client; the server's
    own answers never say RA."""
    handler = Fixed("template", lambda request: Reply(dns.rcode.NOERROR, flags=flags))
    with serve_zones({"example.org": pipeline(handler)}) as (_, port):
        for tcp in (False, True):
            assert ask(port, "www.example.org", tcp=tcp).flags == expected


class Stamp:
    """Sets AD on every answer passing back through it, cache hits given early included
    (``filter_early``); declines the early path (None) for TXT questions."""

    name = "loadbalance"

    def __init__(self) -> None:
        self.served = 0

    @staticmethod
    def stamp(wire: bytes) -> bytes:
        return wire[:3] + bytes([wire[3] | 0x20]) + wire[4:]

    def serve(self, request: Request, next: Next) -> Result:
        self.served += 1

        def stamped(reply: Reply) -> Reply:
            if reply.wire is not None:
                reply.wire = self.stamp(reply.wire)
            else:
                reply.flags |= AD
            return reply
        return then(next(request), stamped)

    def filter_early(self, request: Request, wire: bytes) -> bytes | None:
        if request.qtype == tdns.TXT:
            return None
        return self.stamp(wire)


def test_a_handler_before_the_cache_filters_its_early_answers(reactor_running: None) -> None:
    """A step before the answer cache that changes every answer keeps the early path by
    changing early answers too; one that declines sends the query the whole way."""
    from kubernetai.core.wirecache import WireCache, WireCacheHandler

    stamp = Stamp()
    cache = WireCacheHandler(WireCache())
    def kept(request: Request) -> Reply:
        record = tdns.RRHeader(request.qname, request.qtype, tdns.IN, 60,
                               tdns.Record_TXT(b"x") if request.qtype == tdns.TXT
                               else tdns.Record_A("192.0.2.1"), auth=True)
        return Reply(dns.rcode.NOERROR, True, [record], cache=())
    answer = Fixed("whoami", kept)
    block = BlockPipeline([
        Stage("loadbalance", position("loadbalance"), 0, handler=stamp),
        Stage("cache", position("cache"), 1, handler=cache, implicit=True),
        Stage("whoami", position("whoami"), 2, handler=answer)])
    assert block.early is not None
    with serve_zones({"example.org": block}) as (_, port):
        for _ in range(3):
            response = ask(port, "www.example.org")
            assert response.flags & dns.flags.AD and texts(response) == ["192.0.2.1"]
        assert (stamp.served, answer.served) == (1, 1)      # two hits given early
        for _ in range(2):
            assert ask(port, "www.example.org", "TXT").flags & dns.flags.AD
        assert (stamp.served, answer.served) == (3, 2)      # declined: through serve


def test_a_copied_request_leaves_the_original_alone() -> None:
    """``Request.copy()`` (rewrite's): changing the copy's question changes nothing of
    the original, and the copy never claims its name maps back to the question bytes."""
    from kubernetai.core.codec import parse_request

    query = dns.message.make_query("Web.Example.org", "A", use_edns=0, options=[
        dns.edns.GenericOption(65001, b"hi")])
    request = parse_request(query.to_wire(), True)
    assert isinstance(request, Request) and request.simple
    assert request.bufsize == 1232 and request.options == b"\xfd\xe9\x00\x02hi"
    twin = request.copy()
    twin.qname, twin.lname, twin.qtype = b"other.test", b"other.test", tdns.AAAA
    twin.labels.append(b"x")
    assert (request.qname, request.qtype, request.labels) == (
        b"Web.Example.org", tdns.A, [b"Web", b"Example", b"org"])
    assert twin.question == request.question and not twin.simple
    assert twin.options == request.options
