"""The embedding API used as a user would: import, build, chain, start and stop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import urllib3
from conftest import EXAMPLES
from twisted.application import service
from twisted.application.service import IService
from twisted.internet.interfaces import IResolver
from twisted.names import dns, resolve
from twisted.names.common import ResolverBase
from twisted.names.error import AuthoritativeDomainError, DomainError
from zope.interface.verify import verifyObject

import kubernetai
from kubernetai import CorefileError, KubernetaiResolver, StanzaOptions
from kubernetai.pkg import reactor_thread
from kubernetai.plugins.kubernetai.handler import MAX_CHASE

ROOT = Path(__file__).resolve().parent.parent


class StaticResolver(ResolverBase):
    """Another resolver to chain with: answers every A query with 192.0.2.1."""

    def _lookup(self, name, cls, type, timeout):
        from twisted.internet import defer
        record = dns.RRHeader(name, dns.A, dns.IN, 60, dns.Record_A("192.0.2.1"))
        return defer.succeed(([record], [], []))


@pytest.fixture
def cluster(sandbox):
    sandbox.apply(EXAMPLES / "cluster.local")
    return sandbox


def addresses(result) -> list[str]:
    return sorted(rr.payload.dottedQuad() for rr in result[0] if rr.type == dns.A)


def test_public_names():
    """The package exports its embedding API in __all__."""
    assert set(kubernetai.__all__) >= {"KubernetaiResolver", "StanzaOptions", "CorefileError"}


def test_from_corefile_text_in_a_chain(cluster):
    """Built from Corefile text, it answers in a ResolverChain; other names reach the next one."""
    resolver = KubernetaiResolver.from_corefile(
        f"cluster.local {{\n  kubernetai {{\n    endpoint {cluster.url}\n  }}\n}}\n")
    assert verifyObject(IResolver, resolver) and verifyObject(IService, resolver)
    chain = resolve.ResolverChain([resolver, StaticResolver()])
    reactor_thread.in_reactor(resolver.startService)
    try:
        assert reactor_thread.in_reactor(resolver.wait_synced) is True
        found = reactor_thread.in_reactor(chain.lookupAddress, b"web.shared.svc.cluster.local")
        assert addresses(found) == ["10.96.100.10"]
        outside = reactor_thread.in_reactor(chain.lookupAddress, b"www.example.org")
        assert addresses(outside) == ["192.0.2.1"]
        with pytest.raises(AuthoritativeDomainError):
            reactor_thread.in_reactor(chain.lookupAddress, b"nope.shared.svc.cluster.local")
        srv = reactor_thread.in_reactor(resolver.lookupService,
                                        b"_grpc._tcp.cart.shop.svc.cluster.local")
        assert srv[0][0].payload.port == 9090
    finally:
        reactor_thread.in_reactor(resolver.stopService)


def test_from_stanzas_with_fallthrough_and_application(cluster, reactor_running):
    """From Python options, as a service of an Application: fallthrough passes names on."""
    other = StanzaOptions(zones=["cluster.local"], endpoint=cluster.url)
    first = StanzaOptions(zones=["cluster.local"], endpoint="http://127.0.0.1:9",
                          fallthrough=True, startup_timeout=0.3)
    resolver = KubernetaiResolver.from_stanzas(first, other)
    application = service.Application("test")
    resolver.setServiceParent(application)
    top = service.IService(application)
    reactor_thread.in_reactor(top.startService)
    try:
        assert reactor_thread.in_reactor(resolver.wait_synced) is False  # first never syncs
        found = reactor_thread.in_reactor(resolver.lookupAddress, b"web.shared.svc.cluster.local")
        assert addresses(found) == ["10.96.100.10"]
    finally:
        reactor_thread.in_reactor(top.stopService)
    assert not resolver.running


def test_outside_zones_is_domain_error(cluster):
    """A name outside every zone fails with DomainError, so chains move on."""
    resolver = KubernetaiResolver.from_stanzas(StanzaOptions(endpoint=cluster.url))
    with pytest.raises(DomainError):
        reactor_thread.in_reactor(resolver.lookupAddress, b"www.example.org")


def test_option_errors_are_corefile_errors():
    """Bad options raise CorefileError with the stanza's message."""
    with pytest.raises(CorefileError) as caught:
        KubernetaiResolver.from_stanzas(StanzaOptions(endpoint="http://x", ttl=99999))
    assert "ttl must be in range [0, 3600]: 99999" in str(caught.value)


def test_embed_example_program(cluster):
    """examples/embed.py runs, syncs, and resolves a cluster name over HTTP."""
    process = subprocess.Popen([sys.executable, str(ROOT / "examples" / "embed.py"),
                                "--endpoint", cluster.url, "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert "clusters synced: True" in line, process.stderr.read()[-2000:]
        url = line.split()[0].replace("...", "web.shared.svc.cluster.local")
        body = json.loads(urllib3.PoolManager().request("GET", url).data)
        assert [a["data"] for a in body["answers"]] == ["10.96.100.10"]
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.parametrize("value", ["http://h/{$HOME}", "http://h/\\", "http://h/{%PATH%}"])
def test_option_values_cannot_change_structure(value):
    """Values that quoting cannot carry faithfully are refused, not reinterpreted."""
    with pytest.raises(ValueError):
        KubernetaiResolver.from_stanzas(StanzaOptions(endpoint=value))


def test_option_values_with_spaces_and_braces_stay_one_token(cluster):
    """A value with spaces, quotes or braces stays one argument (here, an invalid selector)."""
    with pytest.raises(CorefileError) as caught:
        KubernetaiResolver.from_stanzas(StanzaOptions(endpoint=cluster.url,
                                                      labels='a b } { "c"'))
    assert "unable to parse label selector" in str(caught.value)


def _external(name: str, target: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "shared"},
            "spec": {"type": "ExternalName", "externalName": target}}


def test_externalname_chased_through_the_embedding_resolver(cluster):
    """An ExternalName into another zone of the same resolver is resolved through it, and
    two pointing at each other end in a bounded CNAME chain (the depth goes with the query)."""
    cluster.apply([_external("hop", "web.shared.svc.b.local"),
                   _external("ping", "pong.shared.svc.b.local"),
                   _external("pong", "ping.shared.svc.a.local")])
    resolver = KubernetaiResolver.from_stanzas(
        StanzaOptions(zones=["a.local"], endpoint=cluster.url),
        StanzaOptions(zones=["b.local"], endpoint=cluster.url))
    reactor_thread.in_reactor(resolver.startService)
    try:
        assert reactor_thread.in_reactor(resolver.wait_synced) is True
        answers, _, _ = reactor_thread.in_reactor(resolver.lookupAddress,
                                                  b"hop.shared.svc.a.local")
        assert [(rr.name.name, rr.type) for rr in answers] == [
            (b"hop.shared.svc.a.local", dns.CNAME), (b"web.shared.svc.b.local", dns.A)]
        assert addresses((answers,)) == ["10.96.100.10"]
        looped, _, _ = reactor_thread.in_reactor(resolver.lookupAddress,
                                                 b"ping.shared.svc.a.local")
        assert [rr.type for rr in looped] == [dns.CNAME] * (MAX_CHASE + 1)
    finally:
        reactor_thread.in_reactor(resolver.stopService)
