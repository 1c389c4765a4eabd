"""The `/metrics` listener: one per address for the whole process, kept across reloads.

As in CoreDNS, several server blocks may name one address: the first block's service
listens and absorbs the others, so `coredns_plugin_enabled` names every block that has
`prometheus`; a reload that keeps the address keeps the listener (CoreDNS stops it before
the new configuration starts, and loses it if that fails: not here) and takes the new
blocks. Every listener shows the whole process's metrics, as CoreDNS's default registry.
While a listener runs, so do the process's reactor stall and GC pause meters
(:mod:`kubernetai.core.stalls`): they cost nothing on the query path.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from kubernetai.core import stalls
from kubernetai.core.http import listen_http, split_address
from kubernetai.core.metrics import PROCESS, Gauge, Metric
from kubernetai.plugins.prometheus.exposition import MetricsPage

__all__ = ["PrometheusService", "plugins_enabled"]

log = Logger()

_ENABLED_HELP = ("1 for each plugin a server block runs, per server, zone and view (blocks "
                 "with prometheus only).")


def _zone(zone: str) -> str:
    zone = zone.rstrip(".")
    return zone + "." if zone else "."


def plugins_enabled(plans: Any, builders: list[Any]) -> list[tuple[str, str, str, str]]:
    """``coredns_plugin_enabled``'s label sets for the blocks ``builders`` set up: each of
    their plugins that takes part in answering (a handler or a resolver; `bind`, `health`,
    `ready`, `reload` do not, as in CoreDNS), on each address and zone of the block."""
    mine = {id(builder) for builder in builders}
    found: dict[tuple[str, str, str, str], None] = {}
    for plan in plans:
        for block in plan.blocks:
            builder = block.builder
            if id(builder) not in mine:
                continue
            names = sorted({stage.name for stage in builder.stages if not stage.implicit})
            for host in builder.bind_addresses or [""]:
                # As the server names itself (ListenGroup): only no `bind` is dns://:53.
                server = f"dns://{f'[{host}]' if ':' in host else host}:{plan.port}"
                for zone in block.zones:
                    for name in names:
                        found[(server, _zone(zone), "", name)] = None
    return list(found)


class PrometheusService(service.Service):
    """One `/metrics` listener; ``key`` identifies it across reloads (its address)."""

    def __init__(self, address: str, builder: Any, reactor: Any = None) -> None:
        self.address = address
        self.host, self.port = split_address(address)
        self.reactor = reactor
        self.builders: list[Any] = [builder]
        self.enabled: list[tuple[str, str, str, str]] = []
        self.listening: list[Any] = []  # IListeningPort

    @property
    def key(self) -> tuple[str, str]:
        return ("prometheus", self.address)

    def absorb(self, other: PrometheusService) -> None:
        """Another block names this address too: its plugins are counted as well."""
        self.builders += other.builders

    def adopt(self, newer: PrometheusService) -> None:
        """A reload kept this listener: the new configuration's blocks are the ones."""
        self.builders = newer.builders

    def serving(self, server: Any) -> None:
        """The server serves a (new) configuration: which plugins its blocks run."""
        self.enabled = plugins_enabled(getattr(server, "plans", ()), self.builders)

    def _metrics(self) -> list[Metric]:
        enabled = Gauge("coredns_plugin_enabled", _ENABLED_HELP,
                        ("server", "zone", "view", "name"))
        for labels in self.enabled:
            enabled.set(labels, 1)
        return [enabled]

    def startService(self) -> None:
        if self.reactor is None:
            from twisted.internet import reactor
            self.reactor = reactor
        self.listening = [listen_http(self.reactor, self.address, {b"/metrics": MetricsPage()})]
        PROCESS.collect(self.key, self._metrics)
        stalls.start(self.reactor)  # the reactor stall and GC pause metrics
        super().startService()
        bound = self.listening[0].getHost()
        log.info("plugin/prometheus: serving /metrics on {host}:{port}", host=bound.host,
                 port=bound.port)

    def stopService(self) -> defer.Deferred[Any]:
        if self.running:
            stalls.stop()
        super().stopService()
        PROCESS.collect(self.key, None)
        ports, self.listening = self.listening, []
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])
