"""Tests for kubernetai.app.server: a Corefile compiled into ports, blocks and pipelines, and run."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from twisted.internet import defer
from twisted.names import dns as tdns
from twisted.names.common import ResolverBase
from twisted.names.resolve import ResolverChain

import kubernetai.corefile as corefile
from kubernetai.app.server import (
    KubernetaiService,
    PortPlan,
    build_factory,
    compile_corefile,
    load_service,
    warnings_for,
)
from kubernetai.core.negative import FallThrough
from kubernetai.core.pipeline import BlockPipeline
from kubernetai.core.registry import GROUP, BlockBuilder, Registry
from kubernetai.core.request import ContextQuery
from kubernetai.core.wirecache import WireCache
from kubernetai.corefile import CorefileError
from kubernetai.pkg.logwriter import STDOUT
from kubernetai.pkg.reactor_thread import in_reactor
from kubernetai.plugins.kubernetai.controller import Cluster
from kubernetai.plugins.kubernetai.handler import StanzaResolver
from kubernetai.sandbox.server import Sandbox


def plans_of(text: str, *, filename: str = "Corefile", registry: Registry | None = None,
             port_override: int | None = None) -> list[PortPlan]:
    return compile_corefile(corefile.parse(text, filename), registry=registry,
                            port_override=port_override)


def stanza_zones(pipeline: BlockPipeline) -> list[tuple[str, ...]]:
    assert pipeline.chain is not None
    return [r.cluster.config.zones for r in pipeline.chain.resolvers]


class Wire:
    """A transport for ``factory.handleWire``: keeps what the server sends back."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendWire(self, wire: bytes, addr: Any) -> None:
        self.sent.append(wire)

    def peer(self, addr: Any) -> tuple[str, int]:
        return addr


def exchange(factory: Any, name: str, rdtype: str = "A") -> dns.message.Message:
    """One UDP query through the factory's request path, from 127.0.0.1:5353."""
    wire = Wire()
    query = dns.message.make_query(name, rdtype, id=7)
    assert factory.handleWire(query.to_wire(), wire, ("127.0.0.1", 5353), True)
    (response,) = wire.sent
    return dns.message.from_wire(response)


class Trailer(ResolverBase):
    """A stand-in for a plugin after kubernetai (e.g. forward): answers nothing itself."""

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> defer.Deferred:
        return defer.fail(FallThrough())


class TrailerPlugin:
    name = "trailer"
    after = "kubernetai"
    once = True

    def setup(self, directive: corefile.Directive, builder: BlockBuilder) -> None:
        builder.add_resolver(Trailer())


def with_trailer() -> Registry:
    return Registry(points=[*entry_points(group=GROUP),
                            EntryPoint("trailer", f"{__name__}:TrailerPlugin", GROUP)])


# -- compile_corefile ---------------------------------------------------------------------

THREE_BLOCKS = """\
a.local:1053 {
    kubernetai
}
b.local:1053 {
    kubernetai
}
c.local:2053 {
    kubernetai
}
"""


def test_blocks_grouped_by_port() -> None:
    """Blocks sharing a port share one server; ports keep the order they first appear in."""
    plans = plans_of(THREE_BLOCKS)
    assert [(p.port, [b.zones for b in p.blocks]) for p in plans] == [
        (1053, [("a.local.",), ("b.local.",)]), (2053, [("c.local.",)])]


def test_block_on_two_ports_is_set_up_once() -> None:
    """A block whose keys use two ports joins both servers with one set of stanzas."""
    plans = plans_of("a.local:1053 b.local:2053 c.local:1053 {\n    kubernetai\n    errors\n}\n")
    assert [(p.port, [b.zones for b in p.blocks]) for p in plans] == [
        (1053, [("a.local.", "c.local.")]), (2053, [("b.local.",)])]
    (first,), (second,) = (p.blocks for p in plans)
    assert first.builder is second.builder
    assert first.pipeline().chain.resolvers == second.pipeline().chain.resolvers
    assert stanza_zones(first.pipeline()) == [("a.local.", "b.local.", "c.local.")]
    assert len(plans[0].clusters()) == 1
    assert plans[0].clusters() == plans[1].clusters()


@pytest.mark.parametrize("override", [0, 5353])
def test_port_override_joins_every_block(override: int) -> None:
    """With a port override (coredns -dns.port) every block serves on that one port."""
    (plan,) = plans_of(THREE_BLOCKS, port_override=override)
    assert plan.port == override
    assert [b.zones for b in plan.blocks] == [("a.local.",), ("b.local.",), ("c.local.",)]


def test_duplicate_zone_after_override_collapses() -> None:
    """Keys differing only by port become one zone under an override."""
    (plan,) = plans_of("a.local:1053 a.local:2053 {\n    kubernetai\n}\n", port_override=53)
    (block,) = plan.blocks
    assert block.zones == ("a.local.",)


def test_block_chain_is_a_resolver_chain_in_chain_order() -> None:
    """A block's resolvers form one ResolverChain, in chain order, in its pipeline."""
    (plan,) = plans_of(".:53 {\n    trailer\n    kubernetai b.local\n    kubernetai a.local\n}\n",
                       registry=with_trailer())
    (block,) = plan.blocks
    pipeline = block.pipeline()
    assert isinstance(pipeline, BlockPipeline)
    assert isinstance(pipeline.chain, ResolverChain)
    assert pipeline.chain.resolvers == block.builder.resolvers()
    assert [type(r) for r in pipeline.chain.resolvers] == [StanzaResolver, StanzaResolver, Trailer]
    assert block.pipeline() is pipeline  # one pipeline per block (and cache)


@pytest.mark.parametrize("cache", [None, WireCache()], ids=["no-cache", "answer-cache"])
def test_block_without_resolvers_falls_through(cache: WireCache | None) -> None:
    """A block with nothing to answer fails every chase into it with FallThrough, and a
    query is SERVFAIL naming the last plugin written in the Corefile (CoreDNS's "no next
    plugin found"), not the answer cache the server adds."""
    (plan,) = plans_of("a.local:1053 {\n    errors\n    log\n}\n")
    (block,) = plan.blocks
    assert block.pipeline().chain is None
    failures: list = []
    block.pipeline().query(tdns.Query(b"x.a.local", tdns.A)).addErrback(failures.append)
    (failure,) = failures
    assert failure.check(FallThrough)
    errors: list[str] = []
    factory = build_factory(plan, reactor=object(), cache=cache)
    factory.on_error = errors.append
    with pytest.MonkeyPatch.context() as patch:
        written: list[str] = []
        patch.setattr(block.pipeline(cache).handlers[0], "write", written.append)
        assert exchange(factory, "x.a.local").rcode() == dns.rcode.SERVFAIL
    assert written == ["[ERROR] plugin/errors: 2 x.a.local. A: plugin/log: no next plugin found"]
    assert errors == []  # the block's errors step reported it


def test_clusters_of_a_plan() -> None:
    """A plan's clusters are the Cluster services of all its blocks, in order."""
    (plan,) = plans_of(THREE_BLOCKS, port_override=53)
    clusters = plan.clusters()
    assert all(isinstance(c, Cluster) for c in clusters)
    assert [c.config.zones for c in clusters] == [("a.local.",), ("b.local.",), ("c.local.",)]


@pytest.mark.parametrize("text, groups", [
    pytest.param("a.local:1053 {\n    kubernetai\n}\n", [("", ["a.local."])],
                 id="no-bind-everywhere"),
    pytest.param("a.local:1053 {\n    bind 127.0.0.1 ::1\n    kubernetai\n}\n",
                 [("127.0.0.1", ["a.local."]), ("::1", ["a.local."])], id="bind"),
    pytest.param("a.local:1053 {\n    bind 127.0.0.1\n}\nb.local:1053 {\n    bind 127.0.0.2 "
                 "127.0.0.1\n}\n", [("127.0.0.1", ["a.local.", "b.local."]),
                                    ("127.0.0.2", ["b.local."])], id="union-of-blocks"),
    pytest.param("a.local:1053 {\n    bind 127.0.0.1\n}\nb.local:1053 {\n    errors\n}\n",
                 [("127.0.0.1", ["a.local."]), ("", ["b.local."])], id="one-block-without-bind"),
])
def test_listen_addresses(text: str, groups: list[tuple[str, list[str]]]) -> None:
    """A port listens on each address its blocks bind ("" for a block without bind: every
    address), and a query on an address reaches only the blocks bound there (CoreDNS)."""
    (plan,) = plans_of(text)
    assert plan.addresses() == [address for address, _ in groups]
    assert [(g.address, [z for b in g.blocks for z in b.zones]) for g in plan.groups] == groups


def test_corefile_errors_propagate() -> None:
    """A directive error during compilation is the located CorefileError."""
    with pytest.raises(CorefileError) as info:
        plans_of(".:53 {\n    kubernetai\n    errors\n    errors\n}\n", filename="/etc/Corefile")
    assert str(info.value) == ("/etc/Corefile:4: this plugin can only be used once per Server "
                               "Block: 'errors'")


# -- the zone routing map -----------------------------------------------------------------


def test_zone_routing_map() -> None:
    """The server routes each zone to its block's chain; longest zone wins; others REFUSED."""
    (plan,) = plans_of("cluster.local:1053 {\n    kubernetai\n}\n"
                       "sub.cluster.local:1053 example.org:1053 {\n    kubernetai\n}\n")
    outer, inner = plan.blocks
    router = build_factory(plan, reactor=object()).router
    assert router.zones == {b"cluster.local": outer.pipeline(),
                            b"sub.cluster.local": inner.pipeline(),
                            b"example.org": inner.pipeline()}
    assert router.route(b"web.shop.svc.cluster.local") is outer.pipeline()
    assert router.route(b"web.sub.cluster.local") is inner.pipeline()
    assert router.route(b"www.example.org") is inner.pipeline()
    assert router.route(b"example.com") is None


def test_stanzas_chase_through_the_router() -> None:
    """Every stanza is asked with the factory's router as its upstream (and no chase depth
    yet), so ExternalName chases re-enter the server; no stanza holds an upstream itself."""
    (plan,) = plans_of(THREE_BLOCKS, port_override=53)
    stanzas = [r for b in plan.blocks for r in b.builder.resolvers()]
    assert len(stanzas) == 3
    assert all(s.upstream is None for s in stanzas)
    asked: list[Any] = []
    with pytest.MonkeyPatch.context() as patch:
        # Spied before the factory is built: a block's only stanza is asked through
        # `resolve` (no Deferred), which its chain step looks up once.
        for stanza in stanzas:
            def spy(query: Any, timeout: Any = None, stanza: Any = stanza) -> defer.Deferred:
                return defer.fail(spy_resolve(query))

            def spy_resolve(query: Any, stanza: Any = stanza) -> Exception:
                asked.append((stanza, query))
                return FallThrough()
            patch.setattr(stanza, "query", spy)
            patch.setattr(stanza, "resolve", spy_resolve)
        factory = build_factory(plan, reactor=object())
        for name in ("web.a.local", "web.b.local", "web.c.local"):
            exchange(factory, name)
    assert [stanza for stanza, _ in asked] == stanzas
    for _, query in asked:
        assert isinstance(query, ContextQuery)
        assert query.upstream is factory.router
        assert query.depth == 0


# -- per-block log and errors -------------------------------------------------------------

# Clusters that are not started: every name falls through to "no next plugin found".
LOGGING = """\
a.local:1053 {
    log
    errors
    kubernetai {
        fallthrough
    }
}
b.local:1053 {
    kubernetai {
        fallthrough
    }
}
"""


def test_query_log_goes_to_the_block_of_the_name(capsys: pytest.CaptureFixture[str]) -> None:
    """Only queries routed to a block with log are logged, by that block's log step."""
    (plan,) = plans_of(LOGGING)
    factory = build_factory(plan, reactor=object())
    factory.on_error = lambda line: None
    exchange(factory, "web.a.local")
    exchange(factory, "web.b.local")
    STDOUT.flush()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[INFO]")]
    assert len(lines) == 1
    assert lines[0].startswith('[INFO] 127.0.0.1:5353 - 7 "A IN web.a.local. udp ')
    assert " SERVFAIL qr,rd " in lines[0]


def test_no_log_no_query_bookkeeping() -> None:
    """Without any log directive the block's pipeline has no log step, and a query it
    answers leaves no observer behind."""
    (plan,) = plans_of("a.local:1053 {\n    errors\n    kubernetai\n}\n")
    (block,) = plan.blocks
    assert [h.name for h in block.pipeline().handlers] == ["errors", "kubernetai"]
    factory = build_factory(plan, reactor=object())
    seen: list[Any] = []
    real_send = factory._send
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(factory, "_send", lambda req, wire: (seen.append(req.observers),
                                                            real_send(req, wire)))
        exchange(factory, "web.a.local")
    assert seen == [None]


def test_error_line_goes_to_the_block_of_the_name(capsys: pytest.CaptureFixture[str]) -> None:
    """A plugin error is printed by the errors step of the block the name belongs to; a
    block without errors leaves it to the server's own error log."""
    (plan,) = plans_of(LOGGING)
    factory = build_factory(plan, reactor=object())
    unreported: list[str] = []
    factory.on_error = unreported.append
    assert exchange(factory, "web.a.local").rcode() == dns.rcode.SERVFAIL
    assert exchange(factory, "web.b.local").rcode() == dns.rcode.SERVFAIL
    STDOUT.flush()
    out = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[ERROR]")]
    assert out == [
        "[ERROR] plugin/errors: 2 web.a.local. A: plugin/kubernetai: no next plugin found"]
    assert unreported == ["2 web.b.local. A: plugin/kubernetai: no next plugin found"]


def test_error_line_of_an_escaped_name_stays_in_its_block(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A name holding a space (printed "\\ ") is still reported by its own block's errors."""
    (plan,) = plans_of(LOGGING)
    factory = build_factory(plan, reactor=object())
    unreported: list[str] = []
    factory.on_error = unreported.append
    assert exchange(factory, "we\\ b.a.local").rcode() == dns.rcode.SERVFAIL
    STDOUT.flush()
    out = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[ERROR]")]
    assert out == [
        "[ERROR] plugin/errors: 2 we\\ b.a.local. A: plugin/kubernetai: no next plugin found"]
    assert unreported == []


# -- warnings_for -------------------------------------------------------------------------


def warnings_of(text: str, registry: Registry | None = None) -> list[str]:
    return [w for plan in plans_of(text, registry=registry) for w in warnings_for(plan)]


def test_no_warnings_for_a_sound_corefile() -> None:
    """Stanzas covering the block and a last stanza without fallthrough: nothing to say."""
    assert warnings_of("cluster.local:53 example.local:53 {\n"
                       "    kubernetai cluster.local {\n        fallthrough\n    }\n"
                       "    kubernetai cluster.local example.local\n}\n") == []


@pytest.mark.parametrize("fall", ["fallthrough", "fallthrough in-addr.arpa"])
def test_warning_for_fallthrough_in_last_stanza(fall: str) -> None:
    """fallthrough in the last stanza with no plugin after it is worth a warning at the stanza."""
    text = (".:53 {\n    kubernetai cluster.local in-addr.arpa {\n        fallthrough\n    }\n"
            f"    kubernetai other.local in-addr.arpa {{\n        {fall}\n    }}\n}}\n")
    notes = warnings_of(text)
    assert [n for n in notes if "fallthrough" in n] == [
        "Corefile:5: kubernetai: the last stanza has fallthrough but no plugin follows it: "
        "names it passes on are answered SERVFAIL (plugin/kubernetai: no next plugin found)"]


def test_no_fallthrough_warning_when_a_plugin_follows() -> None:
    """A plugin after the last stanza takes what it passes on: no warning."""
    text = ("cluster.local {\n    trailer\n"
            "    kubernetai cluster.local {\n        fallthrough\n    }\n}\n")
    assert warnings_of(text, with_trailer()) == []


@pytest.mark.parametrize("keys, stanzas, uncovered", [
    pytest.param(".", "kubernetai cluster.local", ["."], id="root-block"),
    pytest.param("cluster.local example.org", "kubernetai cluster.local", ["example.org."],
                 id="one-key-uncovered"),
    pytest.param("a.local b.local", "kubernetai a.local\n    kubernetai b.local", [],
                 id="covered-by-two-stanzas"),
    pytest.param("sub.cluster.local", "kubernetai cluster.local", [], id="covered-by-parent"),
    pytest.param("cluster.local", "kubernetai", [], id="stanza-takes-block-zones"),
])
def test_warning_for_uncovered_block_zones(keys: str, stanzas: str, uncovered: list[str]) -> None:
    """Block zones outside every stanza's zones reach no plugin: one warning per zone."""
    notes = warnings_of(f"{keys} {{\n    {stanzas}\n}}\n")
    found = [n for n in notes if "reach no plugin" in n]
    assert [n.split("names in ")[1].split(" ")[0] for n in found] == uncovered
    for note in found:
        assert note.startswith("Corefile:1: names in ")
        assert note.endswith("reach no plugin and are answered SERVFAIL")


@pytest.mark.parametrize("other", [
    "hosts {\n        192.0.2.1 www.example.org\n    }",
    "rewrite name suffix .example.org .cluster.local",
])
def test_no_uncovered_warning_when_another_plugin_may_take_the_names(other: str) -> None:
    """hosts may serve the block's other names, and rewrite map them into the stanza's."""
    notes = warnings_of(f"example.org {{\n    {other}\n    kubernetai cluster.local\n}}\n")
    assert [n for n in notes if "reach no plugin" in n] == []


def test_uncovered_warning_names_the_stanza_zones() -> None:
    """The uncovered-zone warning lists the zones the stanzas do serve."""
    (note,) = [n for n in warnings_of(".:53 {\n    kubernetai b.local a.local\n}\n")
               if "reach no plugin" in n]
    assert note == ("Corefile:1: names in . outside the kubernetai zones (a.local., b.local.) "
                    "reach no plugin and are answered SERVFAIL")


def test_stanza_warnings_are_included() -> None:
    """The stanzas' own warnings come first in the list."""
    notes = warnings_of("cluster.local {\n    kubernetai {\n        ttl 10\n        ttl 20\n"
                        "    }\n}\n")
    assert notes == [
        "Corefile:4: kubernetai: 'ttl' is given again (first at line 3); the last one is used"]


# -- load_service -------------------------------------------------------------------------

CONNECTED = """\
a.local:1053 {
    kubernetai {
        endpoint http://127.0.0.1:16441
    }
}
b.local:1053 {
    kubernetai {
        endpoint http://127.0.0.1:16442
    }
}
c.local:2053 {
    kubernetai {
        endpoint http://127.0.0.1:16443
    }
}
"""


def test_load_service(tmp_path: Path) -> None:
    """load_service compiles a Corefile into a KubernetaiService owning every cluster."""
    path = tmp_path / "Corefile"
    path.write_text(CONNECTED)
    service = load_service(str(path), port_override=5353, reactor=object())
    assert isinstance(service, KubernetaiService)
    assert [p.port for p in service.plans] == [5353]
    assert len(service.clusters) == 3
    assert all(c.parent is service for c in service.clusters)
    assert len(service.factories) == 1
    assert not service.running


def test_load_service_keeps_ports(tmp_path: Path) -> None:
    """Without an override each port of the Corefile gets its own server."""
    path = tmp_path / "Corefile"
    path.write_text(CONNECTED)
    service = load_service(str(path), reactor=object())
    assert [p.port for p in service.plans] == [1053, 2053]
    assert len(service.factories) == 2


@pytest.mark.parametrize("text, line, message", [
    ("", 1, "no server blocks in the Corefile"),
    ("# only a comment\n", 1, "no server blocks in the Corefile"),
    (".:53 {\n    dnssec\n}\n", 2, "unknown directive 'dnssec'"),
    (".:53 {\n    kubernetai {\n        pods maybe\n    }\n}\n", 3, None),
    (".:53 {\n    kubernetai {\n        endpoint http://127.0.0.1:1\n    }\n"
     "    kubernetai other.local {\n\n        kubeconfig /nonexistent/kubeconfig\n    }\n}\n",
     7, "kubernetai: cannot read kubeconfig '/nonexistent/kubeconfig': no such file"),
])
def test_load_service_errors(tmp_path: Path, text: str, line: int, message: str | None) -> None:
    """Mistakes come out as a CorefileError naming the file and line."""
    path = tmp_path / "Corefile"
    path.write_text(text)
    with pytest.raises(CorefileError) as info:
        load_service(str(path), reactor=object())
    assert (info.value.filename, info.value.line) == (str(path), line)
    if message is not None:
        assert info.value.message == message


def test_load_service_connects_clusters(tmp_path: Path, sandbox: Sandbox) -> None:
    """Each stanza's API client is built when the service is made, from its kubeconfig."""
    kubeconfig = sandbox.write_kubeconfig(tmp_path / "kubeconfig")
    path = tmp_path / "Corefile"
    path.write_text(f".:53 {{\n    kubernetai cluster.local {{\n        kubeconfig {kubeconfig}\n"
                    "    }\n}\n")
    service = load_service(str(path), reactor=object())
    (cluster,) = service.clusters
    assert cluster.connect().configuration.host == sandbox.url


def test_load_service_environment(tmp_path: Path) -> None:
    """{$VAR} in the Corefile is read from the environ given."""
    path = tmp_path / "Corefile"
    path.write_text("{$ZONE}:1053 {\n    kubernetai {\n        endpoint {$API}\n    }\n}\n")
    service = load_service(str(path), reactor=object(), environ={"ZONE": "env.local",
                                                                  "API": "http://10.0.0.1:8080"})
    assert service.plans[0].blocks[0].zones == ("env.local.",)
    assert service.clusters[0].config.endpoint == "http://10.0.0.1:8080"


# -- running it ---------------------------------------------------------------------------


def service(name: str, namespace: str = "shop", **spec: Any) -> dict:
    spec.setdefault("ports", [{"name": "http", "port": 80}])
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


@pytest.fixture
def running(sandbox: Sandbox, tmp_path: Path) -> Iterator[tuple[KubernetaiService, int, Sandbox]]:
    """A KubernetaiService on 127.0.0.1 (a free port) over the sandbox, serving two zones."""
    sandbox.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
                   service("web"),
                   service("ext", type="ExternalName", externalName="web.shop.svc.b.local"),
                   service("outside", type="ExternalName", externalName="www.example.com")])
    path = tmp_path / "Corefile"
    path.write_text(f"""\
a.local:53 b.local:53 {{
    bind 127.0.0.1
    log
    kubernetai a.local {{
        endpoint {sandbox.url}
        fallthrough
    }}
    kubernetai b.local {{
        endpoint {sandbox.url}
    }}
}}
""")
    svc = in_reactor(load_service, str(path), port_override=0)
    in_reactor(svc.startService)

    def listening() -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        svc.listening.addBoth(lambda result: (d.callback(result), result)[1])
        return d
    ports = in_reactor(listening)
    try:
        yield svc, ports[0].getHost().port, sandbox
    finally:
        in_reactor(svc.stopService)


def ask(port: int, name: str, rdtype: str = "A") -> dns.message.Message:
    response = dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=port,
                             timeout=5)
    # The server logs a query right after sending its answer, on the reactor thread: one
    # round trip through the reactor makes sure the line has been written.
    in_reactor(lambda: None)
    return response


def test_service_answers_over_udp(running: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Started, the service syncs its clusters, listens, and answers from them."""
    svc, port, sandbox = running
    assert all(c.synced for c in svc.clusters)
    cluster_ip = sandbox.get("Service", "shop", "web")["spec"]["clusterIP"]
    response = ask(port, "web.shop.svc.a.local")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert [rr.to_text() for rrset in response.answer for rr in rrset] == [cluster_ip]
    STDOUT.flush()  # the line is written by the log writer thread, maybe not yet
    lines = capsys.readouterr().out.splitlines()
    (line,) = [line for line in lines if " web.shop.svc.a.local. " in line] or [lines]
    assert line.startswith("[INFO] 127.0.0.1:")
    assert " NOERROR qr,aa,rd " in line


def test_service_negative_answers(running: Any) -> None:
    """NXDOMAIN carries the SOA; a zone no block serves is REFUSED."""
    _, port, _ = running
    response = ask(port, "nope.shop.svc.b.local")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert [rrset.name.to_text() for rrset in response.authority] == ["b.local."]
    assert ask(port, "example.com").rcode() == dns.rcode.REFUSED


def test_service_fallthrough_at_the_end_is_servfail(running: Any) -> None:
    """A name the a.local stanza passes on reaches no plugin: SERVFAIL."""
    _, port, _ = running
    assert ask(port, "nope.shop.svc.a.local").rcode() == dns.rcode.SERVFAIL


def test_service_chases_externalname_through_the_server(running: Any) -> None:
    """An ExternalName into another stanza's zone is resolved through the whole server."""
    _, port, sandbox = running
    cluster_ip = sandbox.get("Service", "shop", "web")["spec"]["clusterIP"]
    response = ask(port, "ext.shop.svc.a.local")
    assert response.rcode() == dns.rcode.NOERROR
    assert [(rrset.name.to_text(), rr.to_text()) for rrset in response.answer for rr in rrset] == [
        ("ext.shop.svc.a.local.", "web.shop.svc.b.local."),
        ("web.shop.svc.b.local.", cluster_ip)]


def test_a_block_on_several_ports_is_one_pipeline() -> None:
    """One block's handlers are one set (a `prometheus` step learns what follows it): the
    block serves each of its ports with the same pipeline."""
    from kubernetai.app.load import compile_corefile
    from kubernetai.core.wirecache import WireCache
    from kubernetai.corefile import parse

    plans = compile_corefile(parse("a.local:1053 a.local:2053 {\n    whoami\n}\n", "x"))
    cache = WireCache()
    first, second = (plan.blocks[0].pipeline(cache) for plan in plans)
    assert first is second
