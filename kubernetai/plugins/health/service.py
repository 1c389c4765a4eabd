"""The `/health` endpoint: an HTTP listener the process keeps across reloads.

It answers ``200 OK`` while the process runs, as CoreDNS's health plugin does, so a
Deployment's liveness probe sees the process, not the clusters (readiness is `ready`'s).
Its ``lameduck`` is how long the process keeps serving, DNS and `/health` alike, after it
is asked to stop; the supervisor waits that long before it closes anything.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web import resource, server

log = Logger()


class _Health(resource.Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        if request.path != b"/health":
            request.setResponseCode(404)
            return b"404 page not found\n"
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"OK"


class _QuietSite(server.Site):
    """No access log line per probe: a kubelet probes every few seconds."""

    def log(self, request: Any) -> None:
        pass


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``:8080``, ``127.0.0.1:8080``, ``[::1]:8080``) as (host, port);
    ValueError as Go's net.SplitHostPort words it when there is no port."""
    host, sep, port = address.rpartition(":")
    if not sep:
        raise ValueError(f"address {address}: missing port in address")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"address {address}: too many colons in address")
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"address {address}: invalid port")
    return host, int(port)


class HealthService(service.Service):
    """One `/health` listener. ``key`` identifies it across reloads (its address)."""

    def __init__(self, address: str, lameduck: float, reactor: Any = None) -> None:
        self.address = address
        self.host, self.port = split_address(address)
        self.lameduck = lameduck
        self.reactor = reactor
        self.listening: list[IListeningPort] = []

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
        site = _QuietSite(_Health())
        site.noisy = False
        hosts = [self.host] if self.host else ["::", "0.0.0.0"]
        last: Exception | None = None
        for host in hosts:  # no host: every address, IPv6 and IPv4 where possible
            try:
                self.listening = [self.reactor.listenTCP(self.port, site, interface=host)]
                break
            except CannotListenError as error:
                last = error
        else:
            assert last is not None
            raise last
        super().startService()
        bound = self.listening[0].getHost()
        log.info("plugin/health: serving /health on {host}:{port}", host=bound.host,
                 port=bound.port)

    def stopService(self) -> defer.Deferred[Any]:
        super().stopService()
        ports, self.listening = self.listening, []
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])
