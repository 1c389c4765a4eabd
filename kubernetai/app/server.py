"""A Corefile compiled into a running server: listeners, server blocks and stanzas.

`compile_corefile` turns parsed server blocks into `PortPlan`s: every block whose keys use a
port joins that port, and within it the listen group of each address it binds (every
address without `bind`); each group is one server, as in CoreDNS, which routes each query
that arrives on its address to the block of the longest matching zone (REFUSED when none
matches); within a block, the directives' contributions form one pipeline
(`kubernetai.core.pipeline`) with the answer cache in front of its resolvers.
`KubernetaiService` runs it:
it starts every stanza's informers, waits for them to sync (all in parallel, each up to its
own `startup_timeout`, as CoreDNS waits before serving), then listens on UDP and TCP.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from kubernetai.app.load import (  # noqa: F401 - compile_corefile, connect_all: used via here
    WILDCARDS,
    ListenGroup,
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
from kubernetai.pkg.sockets import reusing_socket

log = Logger()


def build_factory(plan: PortPlan | ListenGroup, reactor: Any = None,
                  cache: WireCache | None = None,
                  tcp: TCPConnections | None = None) -> KubernetaiServerFactory:
    """The server of one listen group (or of a whole port's blocks); with `cache`, answers
    are kept in it; `tcp` is the TCP connection caps it shares with the process's other
    listeners. A zone of two blocks goes to the first one."""
    zones: dict[str | bytes, Any] = {}
    for block in plan.blocks:
        for zone in block.zones:
            zones.setdefault(zone, block.pipeline(cache))
    factory = KubernetaiServerFactory(zones, reactor=reactor, tcp_connections=tcp)
    if isinstance(plan, ListenGroup):
        factory.label = str(plan)  # dns://:53 without bind; dns://0.0.0.0:53 with it
    return factory


class _Listener:
    """A listen group being served: its factory and its sockets (none until they open)."""

    __slots__ = ("group", "factory", "ports")

    def __init__(self, group: ListenGroup, factory: KubernetaiServerFactory) -> None:
        self.group = group
        self.factory = factory
        self.ports: list[IListeningPort] = []


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
        self._serving = self._listeners_for(plans)
        self.ports: list[IListeningPort] = []
        self._opened = False  # the sockets are open (start-up listens once every stanza waited)
        self.listening: defer.Deferred[list[IListeningPort]] = defer.Deferred()
        self._starting: defer.Deferred[Any] | None = None
        #: Open every DNS socket with SO_REUSEPORT (`--workers`: other processes share them).
        self.reuse_port = False
        self.clusters = clusters_of(plans)
        if own_clusters:  # else the caller runs them (the supervisor keeps them across reloads)
            for cluster in self.clusters:
                cluster.setServiceParent(self)
        # Process-wide endpoints (health): started with the server, kept across reloads.
        self.extras: dict[Any, Any] = process_services_of(plans)
        for extra in self.extras.values():
            extra.setServiceParent(self)
        self._tell_extras()

    @property
    def factories(self) -> list[KubernetaiServerFactory]:
        """One server per listen group (address and port), in Corefile order."""
        return [listener.factory for listener in self._serving.values()]

    def servers(self) -> list[tuple[ListenGroup, KubernetaiServerFactory]]:
        """Each listen group with its server (``str(group)`` is CoreDNS's name of it, such
        as ``dns://127.0.0.1:53``), in Corefile order; after a reload, the new groups with
        the servers kept on their sockets."""
        return [(listener.group, listener.factory) for listener in self._serving.values()]

    def _listeners_for(self, plans: list[PortPlan]) -> dict[tuple[int, str, bool], _Listener]:
        return {group.key: _Listener(group, build_factory(group, self.reactor, self.cache,
                                                          self.tcp))
                for plan in plans for group in plan.groups}

    def startService(self) -> None:
        for note in all_warnings(self.plans):
            log.warn("{note}", note=note)
        super().startService()
        waits = [self._wait(cluster) for cluster in self.clusters]
        self._starting = defer.gatherResults(waits).addCallback(lambda _: self._listen())
        self._starting.addErrback(self._failed)

    def retarget(self, plans: list[PortPlan]) -> defer.Deferred[bool]:
        """Serve a new configuration, switching the sockets already open in one step.

        Sockets are kept per listen address and port: where they did not change, the
        server on them takes the new routing and logging, and queries in flight finish
        with the resolvers they started with. New addresses are opened first, so one that
        cannot be bound fails the reload before anything changed (raised here). Addresses
        no longer named are closed. An address that cannot be opened while an old socket
        of its port is open (every address and a bound one where the old sockets were not
        opened to share, see `listen_group`) is opened once that socket has closed, on the
        next turn of the reactor: a short gap on that address only; the Deferred returned
        fires with True once the old sockets are closed and every address of the new
        configuration listens (False, and an error logged, if one could not be opened then).
        """
        fresh = self._listeners_for(plans)
        if not self._opened:  # still waiting for the stanzas: `_listen` opens what is current
            self._switch_extras(plans)
            self._serving = fresh
            self._adopt(plans)
            return defer.succeed(True)
        removed = [old for key, old in self._serving.items() if key not in fresh]
        added = [new for key, new in fresh.items() if key not in self._serving]
        later = [new for new in added
                 if any(_conflict(new.group, old.group) for old in removed)]
        opened: list[_Listener] = []
        try:
            for listener in added:
                if listener not in later:
                    self._open(listener)
                    opened.append(listener)
            self._switch_extras(plans)
        except Exception:
            for listener in opened:
                self._close(listener)
            raise
        for key, listener in self._serving.items():
            if key in fresh:
                listener.factory.adopt(fresh[key].factory)
                listener.group = fresh[key].group
                fresh[key] = listener
        closing = [self._close(listener) for listener in removed]
        self._serving = fresh
        self._adopt(plans)
        return self._open_later(later, closing)

    def _switch_extras(self, plans: list[PortPlan]) -> None:
        """Start the new configuration's process services (or raise, having started none)
        and let the running ones adopt their new configuration."""
        extras = process_services_of(plans)
        started = [extra for key, extra in extras.items() if key not in self.extras]
        try:
            for extra in list(started):
                try:
                    extra.setServiceParent(self)
                except Exception:
                    started.remove(extra)
                    extra.disownServiceParent()
                    raise
        except Exception:
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

    def _adopt(self, plans: list[PortPlan]) -> None:
        self.plans, self.clusters = plans, clusters_of(plans)
        self.cache.clear()  # a new configuration may answer differently
        self._tell_extras()

    def _open_later(self, later: list[_Listener],
                    closing: list[defer.Deferred[Any]]) -> defer.Deferred[bool]:
        """Open ``later`` once the sockets being closed are; True if all of them opened."""
        def reopen(_: Any) -> bool:
            done = True
            for listener in later:
                if not self._opened or self._serving.get(listener.group.key) is not listener:
                    continue  # stopped, or reloaded again meanwhile
                try:
                    self._open(listener)
                except Exception as error:  # noqa: BLE001 - reported, the rest still opens
                    done = False
                    log.error("kubernetai: cannot listen on {server} after the reload: "
                              "{error}", server=str(listener.group), error=error)
            return done
        return defer.DeferredList(closing, consumeErrors=True).addCallback(reopen)

    def _tell_extras(self) -> None:
        """Process services that look at the server (``serving(service)``) are told what
        it serves now: at start and after each reload."""
        for extra in self.extras.values():
            serving = getattr(extra, "serving", None)
            if serving is not None:
                serving(self)

    def _open(self, listener: _Listener) -> None:
        listener.ports = listen_group(listener.group, listener.factory, self.reactor,
                                      reuse=self.reuse_port)
        self.ports += listener.ports
        for port in listener.ports:
            host = port.getHost()
            log.info("kubernetai: listening on {type} {host}:{port}",
                     type=host.type, host=host.host, port=host.port)

    def _close(self, listener: _Listener) -> defer.Deferred[Any]:
        ports, listener.ports = listener.ports, []
        for port in ports:
            self.ports.remove(port)
        return defer.gatherResults([defer.maybeDeferred(port.stopListening) for port in ports])

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
        self._opened = True
        for listener in self._serving.values():
            self._open(listener)
        self.listening.callback(self.ports)
        return self.ports

    def _failed(self, failure: Any) -> None:
        log.error("kubernetai: cannot start serving: {error}", error=failure.getErrorMessage())
        self._opened = False
        for listener in self._serving.values():  # those opened before the one that failed
            self._close(listener)
        if not self.listening.called:
            self.listening.errback(failure)

    def stopService(self) -> defer.Deferred[Any]:
        self._opened = False
        stopping = [self._close(listener) for listener in self._serving.values()]
        stopping.append(defer.maybeDeferred(super().stopService))
        return defer.gatherResults(stopping)


def _conflict(new: ListenGroup, old: ListenGroup) -> bool:
    """Whether ``new`` cannot be bound while ``old`` is: one port, overlapping addresses,
    not both opened to share it (port 0 is a fresh port for each)."""
    if new.port != old.port or new.port == 0 or (new.shared and old.shared):
        return False
    return new.address == old.address or WILDCARDS & {new.address, old.address} != set()


def listen_group(group: ListenGroup, factory: KubernetaiServerFactory,
                 reactor: Any, *, reuse: bool = False) -> list[IListeningPort]:
    """Open a listen group's UDP and TCP sockets.

    A group whose port also has overlapping addresses (a block without `bind`, so every
    address, and a block bound to some address) listens with SO_REUSEPORT, as CoreDNS
    always does on Linux: then the kernel gives each query to the most specific socket
    (the bound address's), and the rest to the socket of every address. Other groups listen
    as plain Twisted ports, so a port another process holds is an error at once, unless
    ``reuse`` (`--workers`: the worker processes listen on the same port).
    """
    if (group.shared or reuse) and group.port != 0:
        return listen_shared(factory, group.address, group.port, reactor)
    return listen_any(factory, group.address, group.port, reactor)


def listen_any(factory: KubernetaiServerFactory, address: str, port: int,
               reactor: Any) -> list[IListeningPort]:
    """Listen on one address; "" means every address, IPv6 and IPv4 where possible."""
    if address:
        return listen(factory, address, port, reactor)
    try:
        return listen(factory, "::", port, reactor)
    except Exception:  # noqa: BLE001 - no IPv6 here: every IPv4 address then
        return listen(factory, "0.0.0.0", port, reactor)


def listen_shared(factory: KubernetaiServerFactory, address: str, port: int,
                  reactor: Any) -> list[IListeningPort]:
    """As `listen_any`, on sockets opened with SO_REUSEPORT (Linux lets sockets of one user
    share a port that way, each address going to the most specific one)."""
    if address:
        return _listen_reusing(factory, address, port, reactor)
    try:
        return _listen_reusing(factory, "::", port, reactor)
    except Exception:  # noqa: BLE001 - no IPv6 here: every IPv4 address then
        return _listen_reusing(factory, "0.0.0.0", port, reactor)


def _listen_reusing(factory: KubernetaiServerFactory, address: str, port: int,
                    reactor: Any) -> list[IListeningPort]:
    udp_socket = reusing_socket(socket.SOCK_DGRAM, address, port)
    try:
        tcp_socket = reusing_socket(socket.SOCK_STREAM, address, port)
    except Exception:
        udp_socket.close()
        raise
    try:  # the reactor takes copies of the descriptors
        udp = reactor.adoptDatagramPort(udp_socket.fileno(), udp_socket.family,
                                        factory.buildDatagramProtocol(), factory.maxPacketSize)
        try:
            tcp = reactor.adoptStreamPort(tcp_socket.fileno(), tcp_socket.family, factory)
        except Exception:
            udp.stopListening()
            raise
    finally:
        udp_socket.close()
        tcp_socket.close()
    return [udp, tcp]


def load_service(path: str, *, port_override: int | None = None, reactor: Any = None,
                 registry: Registry | None = None,
                 environ: Any = None) -> KubernetaiService:
    """A Corefile as a service; raises CorefileError with file:line on mistakes."""
    plans = load_plans(path, port_override=port_override, registry=registry, environ=environ)
    return KubernetaiService(plans, reactor=reactor)


__all__ = ["KubernetaiService", "build_factory", "load_service"]
