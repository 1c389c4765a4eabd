"""The `/health` endpoint: an HTTP listener the process keeps across reloads.

It answers ``200 OK`` while the process runs, as CoreDNS's health plugin does, so a
Deployment's liveness probe sees the process, not the clusters (readiness is `ready`'s).
Its ``lameduck`` is how long the process keeps serving, DNS and `/health` alike, after it
is asked to stop; the supervisor waits that long before it closes anything. While it
listens it asks itself once a second (:mod:`.selfcheck`), for CoreDNS's two metrics.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web import resource

from kubernetai.core.http import listen_http, split_address
from kubernetai.plugins.health.selfcheck import SelfCheck

log = Logger()


class _Health(resource.Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"OK"


class HealthService(service.Service):
    """One `/health` listener. ``key`` identifies it across reloads (its address)."""

    def __init__(self, address: str, lameduck: float, reactor: Any = None) -> None:
        self.address = address
        self.host, self.port = split_address(address)
        self.lameduck = lameduck
        self.reactor = reactor
        self.listening: list[IListeningPort] = []
        self.selfcheck: SelfCheck | None = None

    @property
    def key(self) -> tuple[str, str]:
        return ("health", self.address)

    def adopt(self, newer: HealthService) -> None:
        """A reload kept this listener: take the new configuration's lameduck."""
        self.lameduck = newer.lameduck

    def startService(self) -> None:
        if self.reactor is None:
            from twisted.internet import reactor
            self.reactor = reactor
        self.listening = [listen_http(self.reactor, self.address, {b"/health": _Health()})]
        super().startService()
        bound = self.listening[0].getHost()
        log.info("plugin/health: serving /health on {host}:{port}", host=bound.host,
                 port=bound.port)
        self.selfcheck = SelfCheck(self.reactor, self.host, bound.port)
        self.selfcheck.start()

    def stopService(self) -> defer.Deferred[Any]:
        super().stopService()
        if self.selfcheck is not None:
            self.selfcheck.stop()
            self.selfcheck = None
        ports, self.listening = self.listening, []
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])
