"""`explain`: the real server (twistd) explains how it answers, over real HTTP and DNS.

Two simulated API servers back two `kubernetai` stanzas of one block (both with
`fallthrough`, `whoami` after them); the block has `explain` and `health` on a free
loopback port. A second block on the same port has no `explain`. The explanations are
read through `kubernetai explain` (its argparse command) and through `/explain` itself.
"""

from __future__ import annotations

import argparse
import json
import signal
import struct
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import dns.rcode
import pytest
from conftest import free_dns_port, wait_for
from test_e2e import SOURCE_ENV, TWISTD, answers, ask

from kubernetai.app import explain as explain_command
from kubernetai.app.load import compile_corefile
from kubernetai.core.pipeline import BlockPipeline, Stage
from kubernetai.core.plugin import position
from kubernetai.core.registry import BlockBuilder, Registry
from kubernetai.core.router import ZoneRouter
from kubernetai.core.sources import Source
from kubernetai.core.wirecache import WireCache, WireCacheHandler
from kubernetai.corefile import CorefileError, parse
from kubernetai.plugins.explain.report import render_text
from kubernetai.plugins.explain.service import ExplainService
from kubernetai.plugins.explain.trace import (
    cache_state,
    explain_block,
    parse_type,
    question_request,
)
from kubernetai.sandbox.server import Sandbox


def _service(name: str, ip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "ns"},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]}}


def corefile(dns_port: int, http_port: int, metrics_port: int, first: str, second: str, *,
             explain: str = "explain") -> str:
    return (f"b.local:{dns_port} other.local:{dns_port} {{\n    bind 127.0.0.1\n"
            f"    health 127.0.0.1:{http_port}\n    {explain}\n"
            f"    kubernetai b.local {{\n        endpoint {first}\n        fallthrough\n    }}\n"
            f"    kubernetai b.local {{\n        endpoint {second}\n        ttl 7\n"
            f"        fallthrough\n    }}\n"
            f"    whoami\n    errors\n    log\n    prometheus 127.0.0.1:{metrics_port}\n}}\n"
            f"c.local:{dns_port} {{\n    bind 127.0.0.1\n    whoami\n}}\n")


@pytest.fixture
def clusters(reactor_running: None) -> Iterator[dict[str, Sandbox]]:
    servers = {}
    for name, service, ip in (("first", "web", "10.1.0.1"), ("second", "api", "10.2.0.1")):
        server = Sandbox()
        server.apply(_service(service, ip))
        if name == "second":
            server.apply({"apiVersion": "v1", "kind": "Service",
                          "metadata": {"name": "ext", "namespace": "ns"},
                          "spec": {"type": "ExternalName", "externalName": "host.other.local"}})
        server.start()
        servers[name] = server
    yield servers
    for server in servers.values():
        server.stop()


class Server:
    """twistd kubernetai on :func:`corefile`."""

    def __init__(self, directory: Path, clusters: dict[str, Sandbox]) -> None:
        self.dns_port, self.http_port = free_dns_port(), free_dns_port()
        self.metrics_port = free_dns_port()
        self.clusters = clusters
        self.corefile = directory / "Corefile"
        self.write()
        self.log = directory / "twistd.log"
        with self.log.open("w") as output:
            self.process = subprocess.Popen(
                [TWISTD, "--nodaemon", "--pidfile=", "kubernetai", "--corefile",
                 str(self.corefile)],
                cwd=directory, stdout=output, stderr=subprocess.STDOUT, env=SOURCE_ENV)
        deadline = time.monotonic() + 60
        while True:
            try:
                if answers(ask(self.dns_port, "web.ns.svc.b.local")) == ["10.1.0.1"] and \
                        get(self.http_port, "/health")[0] == 200:
                    return
            except OSError:
                pass
            except Exception:  # noqa: BLE001 - dnspython's timeout while it starts
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not start: " + self.log.read_text())
            time.sleep(0.2)

    def write(self, explain: str = "explain") -> None:
        self.corefile.write_text(corefile(self.dns_port, self.http_port, self.metrics_port,
                                          self.clusters["first"].url,
                                          self.clusters["second"].url, explain=explain))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


@pytest.fixture
def server(tmp_path: Path, clusters: dict[str, Sandbox]) -> Iterator[Server]:
    started = Server(tmp_path, clusters)
    yield started
    started.stop()


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def cli(server: Server, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`kubernetai explain --server 127.0.0.1:PORT ARGV...` through its argparse command."""
    parser = argparse.ArgumentParser(prog="kubernetai")
    explain_command.add_command(parser.add_subparsers())
    args = parser.parse_args(["explain", "--server", f"127.0.0.1:{server.http_port}", *argv])
    code = args.run(args)
    out, err = capsys.readouterr()
    return code, out, err


def explained(server: Server, capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, err = cli(server, capsys, "--json", *argv)
    assert code == 0, err
    found: dict[str, Any] = json.loads(out)
    return found


def chain_of(found: dict[str, Any]) -> list[dict[str, Any]]:
    (step,) = [s for s in found["steps"] if s["kind"] == "chain"]
    resolvers: list[dict[str, Any]] = step["resolvers"]
    return resolvers


def test_answered_by_the_second_stanza(server: Server, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    """The first stanza's name error falls through (fallthrough), the second answers:
    which stanza, which cluster, the records; the first's line in the Corefile."""
    found = explained(server, capsys, "api.ns.svc.b.local")
    assert found["question"] == {"name": "api.ns.svc.b.local.", "type": "A", "class": "IN"}
    assert found["server"] == {"port": server.dns_port, "zone": "b.local.",
                               "keys": f"b.local.:{server.dns_port} other.local.:"
                                       f"{server.dns_port}",
                               "block": f"{server.corefile}:1",
                               "listen": f"dns://127.0.0.1:{server.dns_port}"}
    first, second = chain_of(found)
    assert first["stanza"] == f"{server.corefile}:5"
    assert first["outcome"] == "fell through"
    assert first["reason"] == "name-error-fallthrough"
    assert first["api_server"] == server.clusters["first"].url
    assert second["stanza"] == f"{server.corefile}:9"
    assert second["outcome"] == "answered" and second["rcode"] == "NOERROR"
    assert found["answered_by"]["stanza"] == f"{server.corefile}:9"
    assert found["answered_by"]["api_server"] == server.clusters["second"].url
    assert found["answered_by"]["synced"] is True
    assert found["answered_by"]["zones"] == ["b.local."]
    assert found["rcode"] == "NOERROR" and found["authoritative"] is True
    assert found["answer"] == ["api.ns.svc.b.local. 7 IN A 10.2.0.1"]
    # In the plugin order, not the Corefile's.
    assert [s["plugin"] for s in found["steps"]] == ["prometheus", "errors", "log", "cache",
                                                     "kubernetai", "whoami"]
    assert [s["outcome"] for s in found["steps"][:3]] == ["passed on"] * 3
    cache, chain, whoami = found["steps"][3:]
    assert cache == {"plugin": "cache", "kind": "cache", "outcome": "passed on",
                     "rcode": "NOERROR",
                     "why": "explain neither reads nor fills the answer cache"}
    assert chain["plugin"] == "kubernetai" and chain["kind"] == "chain"
    assert whoami == {"plugin": "whoami", "kind": "handler", "outcome": "not reached"}
    assert found["error"] is None

    # For a person: the same facts, one a line.
    code, out, _ = cli(server, capsys, "api.ns.svc.b.local")
    assert code == 0
    assert f"server block b.local.:{server.dns_port}" in out
    assert f"1. kubernetai {server.corefile}:5 (b.local.): fell through: name error" in out
    assert f"2. kubernetai {server.corefile}:9 (b.local.): answered NOERROR" in out
    assert f"answered by kubernetai stanza {server.corefile}:9, zones b.local., " \
           f"API server {server.clusters['second'].url}, synced" in out
    assert "  api.ns.svc.b.local. 7 IN A 10.2.0.1" in out
    assert "answer cache: not in the answer cache; this answer may be kept for 7s" in out


def test_the_cache_is_peeked_never_written(server: Server,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Explaining twice leaves the answer out of the cache; a real query puts it there,
    and the next explanation says so (and that the next query is answered from it)."""
    for _ in range(2):
        found = explained(server, capsys, "api.ns.svc.b.local")
        assert found["cache"] == {"in_cache": False, "state": "absent", "hit": False,
                                  "cacheable": True, "keep_for": 7}
    assert answers(ask(server.dns_port, "api.ns.svc.b.local")) == ["10.2.0.1"]
    cache = explained(server, capsys, "api.ns.svc.b.local")["cache"]
    assert cache["in_cache"] is True and cache["state"] == "fresh" and cache["hit"] is True
    assert cache["rcode"] == "NOERROR" and cache["answers"] == 1
    assert 0 < cache["ttl_left"] <= 7
    # The key is the lower-case name: another spelling is that entry (its question
    # rewritten when it is sent).
    assert explained(server, capsys, "API.ns.svc.b.local")["cache"]["in_cache"] is True


def test_outside_both_zones_whoami_answers(server: Server,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A name of the block outside both stanzas' zones passes both (outside-zones) and
    whoami, after them, answers with the explain client's address."""
    found = explained(server, capsys, "host.other.local")
    first, second = chain_of(found)
    for stanza in (first, second):
        assert stanza["outcome"] == "fell through"
        assert stanza["reason"] == "outside-zones"
        assert stanza["why"] == "the name is outside its zones (b.local.)"
    chain = [s for s in found["steps"] if s["kind"] == "chain"][0]
    assert chain["outcome"] == "passed on"
    assert found["answered_by"] == {"plugin": "whoami"}
    assert found["rcode"] == "NOERROR"
    assert found["additional"][0].startswith("host.other.local. 0 IN A 127.0.0.1")
    assert found["cache"]["cacheable"] is False           # whoami's answers are not kept


def test_a_name_neither_cluster_has(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    """Both stanzas fall through on a name error; whoami answers."""
    found = explained(server, capsys, "nope.ns.svc.b.local", "AAAA")
    assert [s["reason"] for s in chain_of(found)] == ["name-error-fallthrough"] * 2
    assert found["answered_by"] == {"plugin": "whoami"}
    assert found["question"]["type"] == "AAAA"


def test_the_first_stanza_answers_and_the_second_is_not_reached(
        server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    found = explained(server, capsys, "web.ns.svc.b.local")
    first, second = chain_of(found)
    assert first["outcome"] == "answered" and second["outcome"] == "not reached"
    assert second["stanza"] == f"{server.corefile}:9"        # still named
    assert found["answer"] == ["web.ns.svc.b.local. 5 IN A 10.1.0.1"]


def test_an_externalname_chased_through_the_server(
        server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    """The chase of an ExternalName target outside the stanza's zones goes through the
    server: the explanation follows it into the block that serves the target, whose
    stanzas pass it on to whoami (after the chain), which answers with no answer record."""
    found = explained(server, capsys, "ext.ns.svc.b.local")
    assert found["answered_by"]["stanza"] == f"{server.corefile}:9"
    assert found["answer"] == ["ext.ns.svc.b.local. 7 IN CNAME host.other.local."]
    (chase,) = found["chases"]
    assert chase["name"] == "host.other.local." and chase["type"] == "A"
    assert chase["zone"] == "other.local." and chase["rcode"] == "NOERROR"
    assert chase["answer"] == []
    assert [r["reason"] for r in chase["resolvers"]] == ["outside-zones"] * 2
    code, out, _ = cli(server, capsys, "ext.ns.svc.b.local")
    assert "chased host.other.local. A through the server: NOERROR (zone other.local.)" in out


def test_refusals(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    """A block without explain: 403 with a message; outside every block: REFUSED,
    explained; a bad type or a port no block uses: 400 / 404."""
    status, body = get(server.http_port, "/explain?name=x.c.local")
    assert status == 403
    message = json.loads(body)["error"]
    assert message == (f"explain is off in the server block c.local.:{server.dns_port} "
                       f"({server.corefile}:19): add `explain` (or `debug`) to it to explain "
                       "its queries")
    code, out, err = cli(server, capsys, "x.c.local")
    assert code == 1 and out == "" and "403" in err and "explain is off" in err

    found = explained(server, capsys, "x.example.com")
    assert found["rcode"] == "REFUSED" and found["steps"] == []
    assert found["why"] == f"no server block on port {server.dns_port} serves this name"

    assert get(server.http_port, "/explain?name=a.b.local&type=NOPE")[0] == 400
    assert get(server.http_port, "/explain")[0] == 400
    free = free_dns_port()
    status, body = get(server.http_port, f"/explain?name=a.b.local&port={free}")
    assert status == 404 and f"no server block listens on port {free}" in json.loads(body)["error"]
    # The text form, for curl.
    status, body = get(server.http_port, "/explain?name=web.ns.svc.b.local&format=text")
    assert status == 200 and b"answered by kubernetai stanza" in body


def requests_counted(server: Server) -> float:
    """coredns_dns_requests_total over every label, from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families
    _, body = get(server.metrics_port, "/metrics")
    return sum(sample.value for family in text_string_to_metric_families(body.decode())
               for sample in family.samples
               if sample.name == "coredns_dns_requests_total")


def test_explaining_is_not_a_query(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    """No `log` line, no request counted by `prometheus`; the DNS server answers as before;
    a query then is logged and counted (the checks would see one)."""
    before = requests_counted(server)
    for name in ("api.ns.svc.b.local", "host.other.local", "nope.ns.svc.b.local"):
        explained(server, capsys, name)
    assert requests_counted(server) == before
    assert "api.ns.svc.b.local" not in server.log.read_text()
    response = ask(server.dns_port, "api.ns.svc.b.local")
    assert response.rcode() == dns.rcode.NOERROR and answers(response) == ["10.2.0.1"]
    wait_for(lambda: '"A IN api.ns.svc.b.local. udp' in server.log.read_text(),
             what="the query's log line")
    assert requests_counted(server) == before + 1


def test_a_reload_without_explain_removes_the_path(server: Server,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """With `debug` instead, explain still works after a reload; with neither, /explain is
    gone (404) while /health stays."""
    server.write(explain="debug")
    server.process.send_signal(signal.SIGUSR1)
    wait_for(lambda: server.log.read_text().count("reloaded") >= 1, timeout=30,
             what="the first reload")
    assert explained(server, capsys, "api.ns.svc.b.local")["rcode"] == "NOERROR"
    server.write(explain="")
    server.process.send_signal(signal.SIGUSR1)
    wait_for(lambda: server.log.read_text().count("reloaded") >= 2, timeout=30,
             what="the second reload")
    assert get(server.http_port, "/explain?name=api.ns.svc.b.local")[0] == 404
    assert get(server.http_port, "/health")[0] == 200
    code, _, err = cli(server, capsys, "api.ns.svc.b.local")
    assert code == 1 and "does not serve /explain" in err


def test_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="kubernetai")
    explain_command.add_command(parser.add_subparsers())
    args = parser.parse_args(["explain", "--server", f"127.0.0.1:{free_dns_port()}", "a.b"])
    assert args.server != explain_command.DEFAULT_SERVER
    assert args.run(args) == 1
    assert "cannot ask http://127.0.0.1:" in capsys.readouterr().err


# -- without a server ---------------------------------------------------------------------


def _block(text: str) -> BlockBuilder:
    (block,) = parse(text)
    return Registry().set_up_block(block, BlockBuilder(block, ("example.org.",)))


@pytest.mark.parametrize("directive", ["debug", "explain"])
def test_the_directives(directive: str) -> None:
    builder = _block(f"example.org {{\n    {directive}\n    whoami\n}}\n")
    (service,) = builder.process_services
    assert isinstance(service, ExplainService) and service.key == ("explain",)
    assert [s.name for s in builder.stages] == ["whoami"]     # no step in the pipeline
    with pytest.raises(CorefileError, match="Wrong argument count or unexpected line ending "
                                            "after 'yes'"):
        _block(f"example.org {{\n    {directive} yes\n}}\n")
    with pytest.raises(CorefileError, match="can only be used once"):
        _block(f"example.org {{\n    {directive}\n    {directive}\n}}\n")
    with pytest.raises(CorefileError, match=f"{directive}: unknown property 'x'"):
        _block(f"example.org {{\n    {directive} {{\n        x\n    }}\n}}\n")


def test_the_served_pipeline_is_not_traced() -> None:
    """`wrap` is for the traced copy only: a pipeline built without it runs its handlers
    themselves (the query path pays nothing for explain)."""
    builder = _block("example.org {\n    explain\n    whoami\n}\n")
    pipeline = builder.pipeline()
    assert type(pipeline.handlers[0]).__name__ == "WhoamiHandler"
    assert pipeline.stages == tuple(builder.ordered())
    wrapped = BlockPipeline([Stage("whoami", position("whoami"), 0,
                                   handler=pipeline.handlers[0])],
                            wrap=lambda handler: handler)
    assert wrapped.handlers == pipeline.handlers


def test_questions() -> None:
    assert parse_type("srv") == 33 and parse_type("TYPE65") == 65 and parse_type("28") == 28
    request = question_request("Web.Example.ORG.", 1, ("127.0.0.1", 5))
    assert request.qname == b"Web.Example.ORG" and request.lname == b"web.example.org"
    assert request.peer() == ("127.0.0.1", 5) and request.simple
    for bad in ("a..b", "x" * 64 + ".org", "ü.org"):
        with pytest.raises(ValueError):
            question_request(bad, 1, ("127.0.0.1", 5))


UNSYNCED = """\
b.local {
    explain
    kubernetai b.local {
        endpoint http://127.0.0.1:9
        fallthrough
    }
    kubernetai b.local {
        endpoint http://127.0.0.1:9
    }
}
"""


def _unsynced(cache: WireCache) -> tuple[BlockPipeline, ZoneRouter]:
    """The block of UNSYNCED, its stanzas never started (their caches never sync)."""
    (plan,) = compile_corefile(parse(UNSYNCED))
    pipeline = plan.blocks[0].pipeline(cache)
    return pipeline, ZoneRouter({"b.local": pipeline})


def _explain_now(pipeline: BlockPipeline, router: ZoneRouter, name: str) -> dict[str, Any]:
    request = question_request(name, 1, ("127.0.0.1", 5))
    found: list[dict[str, Any]] = []
    explain_block(pipeline, request, b"b.local", router).addCallback(found.append)
    assert found, "answered from memory: no Deferred left waiting"
    return found[0]


def test_not_synced() -> None:
    """Before the first sync a name error falls through where `fallthrough` covers it
    (reason not-synced) and is SERVFAIL where it does not, as CoreDNS answers."""
    pipeline, router = _unsynced(WireCache())
    found = _explain_now(pipeline, router, "web.ns.svc.b.local")
    first, second = chain_of(found)
    assert first["synced"] is False and first["outcome"] == "fell through"
    assert first["reason"] == "not-synced"
    assert "has not synced" in first["why"]
    assert second["outcome"] == "answered" and second["rcode"] == "SERVFAIL"
    assert second["reason"] == "not-synced" and second["fallthrough"] == []
    assert found["rcode"] == "SERVFAIL" and found["cache"]["cacheable"] is False
    assert "NOT synced" in render_text(found)


def test_the_cache_states() -> None:
    """What is kept for the question, read without a hit counted or anything dropped:
    fresh, expired (renewable or not), and stale when its cluster changed."""
    now = [100.0]
    cache = WireCache(clock=lambda: now[0])
    pipeline, _ = _unsynced(cache)
    (scope,) = [s.handler.scope for s in pipeline.stages if isinstance(s.handler, WireCacheHandler)]
    request = question_request("Web.ns.svc.b.local", 1, ("127.0.0.1", 5))
    source = Source()
    stored = struct.pack("!HBBHHHH", 0, 0x84, 3, 1, 0, 1, 0) + b"rest"
    key = (request.qname, 1, 1, scope)
    cache.put(key, stored, 5, (source.dep(),), renewable=True)
    state = cache_state(pipeline, request)
    assert state == {"in_cache": True, "state": "fresh", "hit": True, "rcode": "NXDOMAIN",
                     "answers": 0, "ttl_left": 5.0}
    now[0] += 6
    assert cache_state(pipeline, request)["state"] == "renewable"
    cache.put(key, stored, 5, (source.dep(),), renewable=False)
    now[0] += 6
    assert cache_state(pipeline, request)["state"] == "expired"
    cache.put(key, stored, 5, (source.dep(),), renewable=True)
    source.bump()
    assert cache_state(pipeline, request)["state"] == "stale"
    assert key in cache.entries and cache.hits == 0 and cache.invalidated == 0
    other = question_request("web.ns.svc.b.local", 1, ("127.0.0.1", 5))  # another spelling
    assert cache_state(pipeline, other)["state"] == "absent"


def test_port_given_routes_among_the_addresses_of_that_port(tmp_path: Path,
                                                            reactor_running: None) -> None:
    """Blocks of one port told apart by `bind`: with `port`, the name still reaches the
    block that serves it, on its own address (not the port's first address)."""
    from twisted.internet import defer

    from kubernetai.app.server import load_service
    from kubernetai.pkg.reactor_thread import in_reactor

    dns_port, http_port = free_dns_port(), free_dns_port()
    path = tmp_path / "Corefile"
    path.write_text(f"a.local:{dns_port} {{\n    bind 127.0.0.1\n    explain\n"
                    f"    health 127.0.0.1:{http_port}\n    whoami\n}}\n"
                    f"b.local:{dns_port} {{\n    bind 127.0.0.2\n    explain\n    whoami\n}}\n")
    service = in_reactor(load_service, str(path))

    def start() -> defer.Deferred:
        service.startService()
        done: defer.Deferred = defer.Deferred()
        service.listening.addBoth(lambda result: (done.callback(None), result)[1])
        return done
    in_reactor(start)
    try:
        for name, listen in (("x.b.local", "127.0.0.2"), ("x.a.local", "127.0.0.1")):
            status, body = get(http_port, f"/explain?name={name}&port={dns_port}")
            found = json.loads(body)
            assert status == 200, found
            assert found["rcode"] == "NOERROR"
            assert found["server"]["listen"] == f"dns://{listen}:{dns_port}"
    finally:
        in_reactor(service.stopService)
