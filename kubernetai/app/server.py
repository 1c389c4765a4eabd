"""A Corefile compiled into a running server: listeners, server blocks and stanzas.

`compile_corefile` turns parsed server blocks into `PortPlan`s: every block whose keys use a
port joins that port's server, which routes each query to the block of the longest matching
zone (REFUSED when none matches); within a block, the directives' contributions form one
pipeline (`kubernetai.core.pipeline`) with the answer cache in front of its resolvers.
`KubernetaiService` runs it:
it starts every stanza's informers, waits for them to sync (all in parallel, each up to its
own `startup_timeout`, as CoreDNS waits before serving), then listens on UDP and TCP.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from kubernetai.app.load import (  # noqa: F401 - compile_corefile, connect_all: used via here
    PortPlan,
    all_warnings,
    clusters_of,
    compile_corefile,
    connect_all,
    load_plans,
    process_services_of,
    warnings_for,
)
from kubernetai.core.dnsserver import KubernetaiServerFactory, listen
from kubernetai.core.registry import Registry
from kubernetai.core.tcp import TCPConnections
from kubernetai.core.wirecache import WireCache

log = Logger()


def build_factory(plan: PortPlan, reactor: Any = None,
                  cache: WireCache | None = None,
                  tcp: TCPConnections | None = None) -> KubernetaiServerFactory:
    """The server of one port; with `cache`, answers are kept in it; `tcp` is the TCP
    connection caps it shares with the process's other ports."""
    zones = {zone: block.pipeline(cache) for block in plan.blocks for zone in block.zones}
    return KubernetaiServerFactory(zones, reactor=reactor, tcp_connections=tcp)


class KubernetaiService(service.MultiService):
    """Everything a Corefile describes, as one Twisted service."""

    def __init__(self, plans: list[PortPlan], *, reactor: Any = None,
                 own_clusters: bool = True) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.plans = plans
        self.cache = WireCache()
        self.tcp = TCPConnections()
        self.factories = [build_factory(plan, reactor, self.cache, self.tcp) for plan in plans]
        self.clusters = clusters_of(plans)
        if own_clusters:  # else the caller runs them (the supervisor keeps them across reloads)
            for cluster in self.clusters:
                cluster.setServiceParent(self)
        # Process-wide endpoints (health): started with the server, kept across reloads.
        self.extras: dict[Any, Any] = process_services_of(plans)
        for extra in self.extras.values():
            extra.setServiceParent(self)
        self.ports: list[IListeningPort] = []
        self._listeners: dict[int, list[IListeningPort]] = {}  # by the plan's port
        self.listening: defer.Deferred[list[IListeningPort]] = defer.Deferred()
        self._starting: defer.Deferred[Any] | None = None

    def startService(self) -> None:
        for note in all_warnings(self.plans):
            log.warn("{note}", note=note)
        super().startService()
        waits = [self._wait(cluster) for cluster in self.clusters]
        self._starting = defer.gatherResults(waits).addCallback(lambda _: self._listen())
        self._starting.addErrback(self._failed)

    def retarget(self, plans: list[PortPlan]) -> None:
        """Serve a new configuration, switching the sockets already open in one step.

        A port whose addresses did not change keeps its sockets: its factory takes the new
        routing and logging, and queries in flight finish with the resolvers they started
        with. New ports are opened first, so a port that cannot be bound fails the reload
        before anything changed. A port whose `bind` addresses changed is closed and opened
        again (a short gap on that port only); ports no longer named are closed.
        """
        current = {plan.port: (plan, factory) for plan, factory in zip(self.plans, self.factories)}
        fresh = [build_factory(plan, self.reactor, self.cache, self.tcp) for plan in plans]
        rebound = [(plan, factory) for plan, factory in zip(plans, fresh)
                   if plan.port in current
                   and current[plan.port][0].addresses() != plan.addresses()]
        added = [(plan, factory) for plan, factory in zip(plans, fresh) if plan.port not in current]
        extras = process_services_of(plans)
        started = [extra for key, extra in extras.items() if key not in self.extras]
        try:
            for plan, factory in added:
                self._listen_plan(plan, factory)
            for extra in list(started):
                try:
                    extra.setServiceParent(self)
                except Exception:
                    started.remove(extra)
                    extra.disownServiceParent()
                    raise
        except Exception:
            for plan, _ in added:
                self._close_port(plan.port)
            for extra in started:
                extra.disownServiceParent()
            raise
        for key, extra in list(self.extras.items()):
            if key in extras:
                extra.adopt(extras[key])
                extras[key] = extra
            else:
                extra.disownServiceParent()
        self.extras = extras
        for plan, factory in rebound:
            self._close_port(plan.port)
            self._listen_plan(plan, factory)
        factories = []
        for plan, factory in zip(plans, fresh):
            if plan.port in current and (plan, factory) not in rebound:
                kept = current[plan.port][1]
                kept.adopt(factory)
                factory = kept
            factories.append(factory)
        named = {plan.port for plan in plans}
        for port in [p for p in current if p not in named]:
            self._close_port(port)
        self.plans, self.factories, self.clusters = plans, factories, clusters_of(plans)
        self.cache.clear()  # a new configuration may answer differently

    def _close_port(self, plan_port: int) -> None:
        for port in self._listeners.pop(plan_port, []):
            self.ports.remove(port)
            port.stopListening()

    def lameduck(self) -> float:
        """Seconds to keep serving after a stop is asked (the largest `lameduck`)."""
        return max((getattr(extra, "lameduck", 0.0) for extra in self.extras.values()),
                   default=0.0)

    def pause(self) -> None:
        """Stop reading new queries; answers to those in flight can still be sent."""
        for port in self.ports:
            port.stopReading()

    def _wait(self, cluster: Any) -> defer.Deferred[bool]:
        timeout = cluster.config.startup_timeout
        log.info("plugin/kubernetai: waiting for Kubernetes API ({name})", name=cluster.label)

        def done(synced: bool) -> bool:
            if not synced:
                log.warn("plugin/kubernetai: starting server with unsynced Kubernetes API "
                         "({name})", name=cluster.label)
            return synced
        return cluster.wait_synced(timeout).addCallback(done)

    def _listen(self) -> list[IListeningPort]:
        if not self.running:
            return []
        for plan, factory in zip(self.plans, self.factories):
            self._listen_plan(plan, factory)
        for port in self.ports:
            host = port.getHost()
            log.info("kubernetai: listening on {type} {host}:{port}",
                     type=host.type, host=host.host, port=host.port)
        self.listening.callback(self.ports)
        return self.ports

    def _listen_plan(self, plan: PortPlan,
                     factory: KubernetaiServerFactory) -> list[IListeningPort]:
        opened: list[IListeningPort] = []
        try:
            for address in plan.addresses():
                opened += listen_any(factory, address, plan.port, self.reactor)
        except Exception:
            for port in opened:
                port.stopListening()
            raise
        self._listeners.setdefault(plan.port, []).extend(opened)
        self.ports += opened
        return opened

    def _failed(self, failure: Any) -> None:
        log.error("kubernetai: cannot start serving: {error}", error=failure.getErrorMessage())
        for port in self.ports:  # those opened before the one that failed
            port.stopListening()
        self.ports = []
        self._listeners.clear()
        if not self.listening.called:
            self.listening.errback(failure)

    def stopService(self) -> defer.Deferred[Any]:
        ports, self.ports = self.ports, []
        self._listeners.clear()
        stopping = [defer.maybeDeferred(port.stopListening) for port in ports]
        stopping.append(defer.maybeDeferred(super().stopService))
        return defer.gatherResults(stopping)


def listen_any(factory: KubernetaiServerFactory, address: str, port: int,
               reactor: Any) -> list[IListeningPort]:
    """Listen on one address; "" means every address, IPv6 and IPv4 where possible."""
    if address:
        return listen(factory, address, port, reactor)
    try:
        return listen(factory, "::", port, reactor)
    except Exception:  # noqa: BLE001 - no IPv6 here: every IPv4 address then
        return listen(factory, "0.0.0.0", port, reactor)


def load_service(path: str, *, port_override: int | None = None, reactor: Any = None,
                 registry: Registry | None = None,
                 environ: Any = None) -> KubernetaiService:
    """A Corefile as a service; raises CorefileError with file:line on mistakes."""
    plans = load_plans(path, port_override=port_override, registry=registry, environ=environ)
    return KubernetaiService(plans, reactor=reactor)


__all__ = ["KubernetaiService", "build_factory", "load_service"]
