"""A Corefile compiled into a running server: listeners, server blocks and stanzas.

`compile_corefile` turns parsed server blocks into `PortPlan`s: every block whose keys use a
port joins that port's server, which routes each query to the block of the longest matching
zone (REFUSED when none matches); within a block, the directives' resolvers form a
`ResolverChain` in the chain order (see `kubernetai.core.registry`). `KubernetaiService` runs it:
it starts every stanza's informers, waits for them to sync (all in parallel, each up to its
own `startup_timeout`, as CoreDNS waits before serving), then listens on UDP and TCP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.names.common import ResolverBase

from kubernetai.corefile import parser as corefile
from kubernetai.plugins.kubernetai.controller import Cluster
from kubernetai.core.registry import BlockBuilder, Registry
from kubernetai.core.dnsserver import KubernetaiServerFactory, QueryLog, TCPConnections, listen
from kubernetai.core.negative import FallThrough
from kubernetai.plugins.kubernetai.handler import QuietChain, StanzaResolver
from kubernetai.core.wirecache import CachingServerFactory, WireCache

log = Logger()


class _NoPlugin(ResolverBase):
    """A block with nothing to answer: CoreDNS's "no next plugin found"."""

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> defer.Deferred:
        return defer.fail(FallThrough())


@dataclass(slots=True)
class BlockPlan:
    zones: tuple[str, ...]
    builder: BlockBuilder
    resolver: Any


@dataclass(slots=True)
class PortPlan:
    port: int
    blocks: list[BlockPlan] = field(default_factory=list)

    def addresses(self) -> list[str]:
        """Where to listen: the union of `bind`s, or everywhere if any block has none."""
        found: list[str] = []
        for block in self.blocks:
            if not block.builder.bind_addresses:
                return [""]
            found += [a for a in block.builder.bind_addresses if a not in found]
        return found

    def clusters(self) -> list[Cluster]:
        found: list[Cluster] = []
        for block in self.blocks:
            found += [s for s in block.builder.services
                      if isinstance(s, Cluster) and s not in found]
        return found


def compile_corefile(blocks: Iterable[corefile.ServerBlock], *, registry: Registry | None = None,
                     port_override: int | None = None) -> list[PortPlan]:
    """Set up every block's directives once and group the blocks into one server per port.

    A block whose keys name several ports serves on each of them with the same stanzas
    (one set of informers), as CoreDNS shares one plugin instance across a block's keys.
    """
    registry = registry or Registry()
    ports: dict[int, PortPlan] = {}
    for block in blocks:
        by_port: dict[int, list[str]] = {}
        for key in block.keys:
            port = port_override if port_override is not None else key.port
            zones = by_port.setdefault(port, [])
            if key.zone not in zones:
                zones.append(key.zone)
        all_zones = tuple(dict.fromkeys(key.zone for key in block.keys))
        builder = registry.set_up_block(block, BlockBuilder(block, all_zones))
        chain = builder.chain()
        resolver = QuietChain(chain) if chain else _NoPlugin()
        for port, zones in by_port.items():
            plan = ports.setdefault(port, PortPlan(port))
            for zone in zones:
                if any(zone in other.zones for other in plan.blocks):
                    raise corefile.CorefileError(
                        block.filename, block.line,
                        f"cannot serve dns://{zone}:{port} - it is already defined (blocks "
                        "told apart only by bind addresses are not supported yet)", zone)
            plan.blocks.append(BlockPlan(tuple(zones), builder, resolver))
    return list(ports.values())


def all_warnings(plans: Iterable[PortPlan]) -> list[str]:
    """`warnings_for` every port, each note once (a block may serve several ports)."""
    return list(dict.fromkeys(note for plan in plans for note in warnings_for(plan)))


def warnings_for(plan: PortPlan) -> list[str]:
    """Configurations CoreDNS would answer SERVFAIL for, worth saying at start-up."""
    notes: list[str] = []
    for block in plan.blocks:
        notes += block.builder.warnings
        chain = block.builder.chain()
        stanzas = [r for r in chain if isinstance(r, StanzaResolver)]
        if not stanzas or chain[-1] is not stanzas[-1]:
            continue
        last = stanzas[-1].cluster.config
        if last.fall.zones:
            notes.append(f"{last.filename}:{last.line}: kubernetai: the last stanza has "
                         "fallthrough but no plugin follows it: names it passes on are "
                         "answered SERVFAIL (plugin/kubernetai: no next plugin found)")
        covered = {z for s in stanzas for z in s.cluster.config.zones}
        for zone in block.zones:
            if zone not in covered and not any(zone.endswith("." + c) or c == "."
                                               for c in covered):
                notes.append(f"{block.builder.block.filename}:{block.builder.block.line}: "
                             f"names in {zone} outside the kubernetai zones "
                             f"({', '.join(sorted(covered))}) reach no plugin and are "
                             "answered SERVFAIL")
    return notes


_ERROR_NAME = re.compile(r"\d+ ((?:\\.|[^ \\])+) ")


class _BlockLogs:
    """Sends each query's log line and error line to the `log`/`errors` of its block."""

    def __init__(self, plan: PortPlan) -> None:
        self._blocks = sorted(((zone, block) for block in plan.blocks for zone in block.zones),
                              key=lambda item: len(item[0]), reverse=True)

    def _block(self, name: str) -> BlockPlan | None:
        lname = name.lower()
        for zone, block in self._blocks:
            if zone == "." or lname == zone or lname.endswith("." + zone):
                return block
        return None

    def query(self, record: QueryLog) -> None:
        block = self._block(record.name)
        if block is not None:
            for logger in block.builder.query_loggers:
                logger(record)

    def error(self, line: str) -> None:
        # "<rcode> <name> <type>: <message>", as the server formats it; the name is in
        # presentation form, where a space inside a label is written "\ ".
        match = _ERROR_NAME.match(line)
        block = self._block(match.group(1)) if match else None
        loggers = block.builder.error_loggers if block else []
        for emit in loggers:
            emit("[ERROR] plugin/errors: " + line)
        if not loggers:
            log.error("{line}", line=line)

    @property
    def logs_queries(self) -> bool:
        return any(b.builder.query_loggers for _, b in self._blocks)


def build_factory(plan: PortPlan, reactor: Any = None,
                  cache: WireCache | None = None,
                  tcp: TCPConnections | None = None) -> KubernetaiServerFactory:
    """The server of one port; with `cache`, encoded answers are kept in it; `tcp` is
    the TCP connection caps it shares with the process's other ports."""
    logs = _BlockLogs(plan)
    zones = {zone: block.resolver for block in plan.blocks for zone in block.zones}
    options: dict[str, Any] = dict(reactor=reactor, on_error=logs.error,
                                   log_queries=logs.query if logs.logs_queries else None,
                                   tcp_connections=tcp)
    if cache is not None:
        factory: KubernetaiServerFactory = CachingServerFactory(zones, cache=cache,
                                                                scope=plan.port, **options)
    else:
        factory = KubernetaiServerFactory(zones, **options)
    for block in plan.blocks:
        for resolver in block.builder.chain():
            if isinstance(resolver, StanzaResolver):
                resolver.upstream = factory.router  # ExternalName chasing re-enters the server
    return factory


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
        self._watch_clusters()
        if own_clusters:  # else the caller runs them (the supervisor keeps them across reloads)
            for cluster in self.clusters:
                cluster.setServiceParent(self)
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

    def _watch_clusters(self) -> None:
        """Any cluster's change empties the wire cache (answers may cross clusters)."""
        for cluster in self.clusters:
            if self.cache.clear not in cluster.listeners:
                cluster.listeners.append(self.cache.clear)

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
                   if plan.port in current and current[plan.port][0].addresses() != plan.addresses()]
        added = [(plan, factory) for plan, factory in zip(plans, fresh) if plan.port not in current]
        try:
            for plan, factory in added:
                self._listen_plan(plan, factory)
        except Exception:
            for plan, _ in added:
                self._close_port(plan.port)
            raise
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
        for cluster in self.clusters:
            if cluster not in clusters_of(plans) and self.cache.clear in cluster.listeners:
                cluster.listeners.remove(self.cache.clear)
        self.plans, self.factories, self.clusters = plans, factories, clusters_of(plans)
        self._watch_clusters()
        self.cache.clear()

    def _close_port(self, plan_port: int) -> None:
        for port in self._listeners.pop(plan_port, []):
            self.ports.remove(port)
            port.stopListening()

    def pause(self) -> None:
        """Stop reading new queries; answers to those in flight can still be sent."""
        for port in self.ports:
            port.stopReading()

    def _wait(self, cluster: Cluster) -> defer.Deferred[bool]:
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


def clusters_of(plans: list[PortPlan]) -> list[Cluster]:
    return list({id(c): c for plan in plans for c in plan.clusters()}.values())


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
    """Parse and compile a Corefile; raises CorefileError with file:line on mistakes."""
    blocks = corefile.parse_file(path, environ=environ)
    if not blocks:
        raise corefile.CorefileError(str(path), 1, "no server blocks in the Corefile")
    plans = compile_corefile(blocks, registry=registry, port_override=port_override)
    connect_all(plans)
    return KubernetaiService(plans, reactor=reactor)


def connect_all(plans: list[PortPlan]) -> None:
    """Build every stanza's API client now, so connection mistakes stop start-up."""
    for plan in plans:
        for cluster in plan.clusters():
            cluster.connect()


__all__ = ["compile_corefile", "KubernetaiService", "load_service"]
