"""kubernetai inside any Twisted application: a resolver that is also a service.

`KubernetaiResolver` provides `IResolver` (so it answers `lookupAddress`, `lookupService`,
`query`, ... with `(answers, authority, additional)` and chains with
`twisted.names.client.Resolver` in a `ResolverChain`) and `IService` (so an `Application`
or `MultiService` starts and stops its informer threads with everything else).

It is built from the same options a Corefile stanza takes, either as Corefile text or as
`StanzaOptions` in Python, and both go through the very same parser, so an option means
exactly what it means in a Corefile. A name outside every stanza zone, and a name a stanza
passes on with `fallthrough`, fail with a `DomainError`, so a chain moves on to the next
resolver; an authoritative NXDOMAIN stops the chain, as it should for a zone we own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IResolver
from twisted.names import dns
from twisted.names.common import ResolverBase
from twisted.names.error import DomainError
from zope.interface import implementer

import kubernetai.corefile as corefile
from kubernetai.app.load import clusters_of, plans_of
from kubernetai.core.request import ContextQuery, context_query
from kubernetai.core.router import ZoneRouter
from kubernetai.plugins.kubernetai.controller import Cluster

__all__ = ["KubernetaiResolver", "StanzaOptions"]


@dataclass(frozen=True, slots=True)
class StanzaOptions:
    """One `kubernetai` stanza's options, as Python values (see README for each)."""

    zones: Sequence[str] = ("cluster.local",)
    endpoint: str | None = None
    tls: tuple[str, str, str] | None = None
    kubeconfig: str | None = None
    context: str | None = None
    namespaces: Sequence[str] = ()
    namespace_labels: str | None = None
    labels: str | None = None
    pods: str = "disabled"
    endpoint_pod_names: bool = False
    ttl: int | None = None
    noendpoints: bool = False
    fallthrough: bool | Sequence[str] = False
    ignore_empty_service: bool = False
    zonal: bool = False
    multicluster: Sequence[str] = ()
    startup_timeout: float | str | None = None
    apiserver_qps: float | None = None
    apiserver_burst: int | None = None
    apiserver_max_inflight: int | None = None

    def corefile_lines(self) -> list[str]:
        """This stanza in Corefile syntax, quoted so values cannot change the structure."""
        q = _quote
        lines = [f"kubernetai {' '.join(q(z) for z in self.zones)} {{"]
        options: list[tuple[str, Iterable[Any]]] = [
            ("endpoint", [self.endpoint] if self.endpoint else []),
            ("tls", self.tls or []),
            ("kubeconfig", [self.kubeconfig] + ([self.context] if self.context else [])
             if self.kubeconfig else []),
            ("namespaces", self.namespaces),
            ("namespace_labels", [self.namespace_labels] if self.namespace_labels else []),
            ("labels", [self.labels] if self.labels else []),
            ("pods", [self.pods] if self.pods != "disabled" else []),
            ("ttl", [self.ttl] if self.ttl is not None else []),
            ("multicluster", self.multicluster),
            ("startup_timeout", [_duration(self.startup_timeout)]
             if self.startup_timeout is not None else []),
            ("apiserver_qps", [self.apiserver_qps] if self.apiserver_qps is not None else []),
            ("apiserver_burst", [self.apiserver_burst]
             if self.apiserver_burst is not None else []),
            ("apiserver_max_inflight", [self.apiserver_max_inflight]
             if self.apiserver_max_inflight is not None else []),
        ]
        for name, values in options:
            values = list(values)
            if values:
                lines.append(f"    {name} {' '.join(q(str(v)) for v in values)}")
        for flag, name in ((self.endpoint_pod_names, "endpoint_pod_names"),
                           (self.noendpoints, "noendpoints"),
                           (self.ignore_empty_service, "ignore empty_service"),
                           (self.zonal, "zonal")):
            if flag:
                lines.append(f"    {name}")
        if self.fallthrough is True:
            lines.append("    fallthrough")
        elif self.fallthrough:
            lines.append(f"    fallthrough {' '.join(q(z) for z in self.fallthrough)}")
        lines.append("}")
        return lines


def _quote(value: str) -> str:
    """A Corefile token for any value: quoted, so spaces and braces cannot change structure.

    Quoted Corefile tokens know only the escape \\" , so a value ending in a backslash
    cannot be written; environment references are not expanded for Python values
    (`from_stanzas` parses with an empty environment).
    """
    if value.endswith("\\") or "{$" in value or "{%" in value:
        raise ValueError(f"a stanza option value cannot end with a backslash or hold an "
                         f"environment reference: {value!r}")
    return '"' + value.replace('"', '\\"') + '"'


def _duration(value: float | str | None) -> str:
    return value if isinstance(value, str) else f"{value}s"


@implementer(IResolver, service.IService)
class KubernetaiResolver(ResolverBase, service.MultiService):
    """Kubernetes DNS for the stanzas given, as a resolver and a service."""

    def __init__(self, blocks: Sequence[corefile.ServerBlock], *, reactor: Any = None) -> None:
        ResolverBase.__init__(self)
        service.MultiService.__init__(self)
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        plans = plans_of(blocks)  # as twistd loads a Corefile, API clients included
        # Only the blocks' resolvers answer here (no cache: the application has its own).
        zones = {zone: block.pipeline() for plan in plans for block in plan.blocks
                 for zone in block.zones}
        self._router = ZoneRouter(zones)
        self.clusters: list[Cluster] = clusters_of(plans)
        for cluster in self.clusters:
            cluster.setServiceParent(self)

    # -- construction ----------------------------------------------------------------

    @classmethod
    def from_corefile(cls, text: str, *, filename: str = "<corefile>",
                      environ: Any = None, reactor: Any = None) -> "KubernetaiResolver":
        """From Corefile text: its server blocks' `kubernetai` stanzas (other directives
        such as `log` are accepted and have no effect here)."""
        return cls(corefile.parse(text, filename, environ=environ), reactor=reactor)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], *, reactor: Any = None,
                  environ: Any = None) -> "KubernetaiResolver":
        return cls(corefile.parse_file(path, environ=environ), reactor=reactor)

    @classmethod
    def from_stanzas(cls, *stanzas: StanzaOptions, reactor: Any = None) -> "KubernetaiResolver":
        """From Python options; stanzas are asked in the order given (fallthrough order)."""
        if not stanzas:
            raise ValueError("at least one stanza is needed")
        zones: list[str] = []
        for stanza in stanzas:
            zones += [z for z in stanza.zones if z not in zones]
        text = "\n".join([f"{' '.join(_quote(z) for z in zones)} {{"]
                         + [line for s in stanzas for line in s.corefile_lines()] + ["}"])
        return cls.from_corefile(text, filename="<StanzaOptions>", reactor=reactor, environ={})

    # -- service ---------------------------------------------------------------------

    def wait_synced(self) -> defer.Deferred[bool]:
        """Fires when every stanza has synced or passed its startup_timeout; True if all synced."""
        waits = [c.wait_synced(c.config.startup_timeout) for c in self.clusters]
        return defer.gatherResults(waits).addCallback(all)

    @property
    def synced(self) -> bool:
        return all(c.synced for c in self.clusters)

    # -- resolver --------------------------------------------------------------------

    def query(self, query: dns.Query, timeout: Any = None) -> defer.Deferred:
        """Answer ``query``; a stanza's ExternalName chase comes back here with its depth."""
        name = query.name.name
        target = self._router.route(name.lower().rstrip(b"."), query.type)
        if target is None:
            return defer.fail(DomainError(name))
        if not isinstance(query, ContextQuery):
            # ExternalName targets outside a stanza's zones are resolved through us.
            query = context_query(name, query.type, query.cls, upstream=self)
        return target.query(query, timeout)

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> defer.Deferred:
        return self.query(dns.Query(name, type, cls), timeout)

    def lookupAllRecords(self, name: bytes, timeout: Any = None) -> defer.Deferred:
        return self._lookup(name, dns.IN, dns.ALL_RECORDS, timeout)
