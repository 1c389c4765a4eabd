"""The process's small HTTP listeners (`/health`, `/ready`, `/metrics`), and the paths a
plugin serves on listeners other plugins own.

CoreDNS's health, ready and prometheus each run a plain HTTP server on an address of its
own; these helpers are what they share here: the address syntax, a site that writes no
access log (a kubelet probes every few seconds), and listening on every address when the
host is empty. A plugin with no listener of its own (`explain`) adds its path to
:data:`ROUTES`; every listener made by :func:`listen_http` serves those too. Paths are
process-wide, as the listeners are; the plugin that adds a path removes it when it stops.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.web import resource, server

from kubernetai.pkg.sockets import reusing_socket

__all__ = ["ROUTES", "add_route", "remove_route", "split_address", "listen_http"]

HTTP_TIMEOUT = 5.0
# Binding "::" fails so when the host has no IPv6: every IPv4 address then.
_NO_IPV6 = (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT)

#: path (bytes, e.g. ``b"/explain"``) -> a ``twisted.web`` resource rendering that path.
ROUTES: dict[bytes, Any] = {}


def add_route(path: bytes, leaf: Any) -> None:
    ROUTES[path] = leaf


def remove_route(path: bytes, leaf: Any) -> None:
    """Remove ``path`` if ``leaf`` still serves it (a newer one may have replaced it)."""
    if ROUTES.get(path) is leaf:
        del ROUTES[path]


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


class _Paths(resource.Resource):
    """The listener's own paths, then the process-wide :data:`ROUTES`; else Go's 404."""

    isLeaf = True

    def __init__(self, paths: dict[bytes, Any]) -> None:
        super().__init__()
        self.paths = paths

    def render(self, request: Any) -> Any:
        leaf = self.paths.get(request.path) or ROUTES.get(request.path)
        if leaf is None:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"404 page not found\n"
        return leaf.render(request)


class _QuietSite(server.Site):
    """No access log line per request."""

    def log(self, request: Any) -> None:
        pass


def listen_http(reactor: Any, address: str, paths: dict[bytes, Any]) -> IListeningPort:
    """Serve ``paths`` (path -> leaf resource) and :data:`ROUTES` on ``address``
    (``HOST:PORT``; no host: every address, IPv6 and IPv4 where possible).

    The socket is opened with SO_REUSEPORT, as CoreDNS opens its health and metrics
    listeners: a reload that moves a listener to a port another of ours still holds (health
    to ready's port, ``:8080`` to ``127.0.0.1:8080``) opens the new one before the old one
    closes, so a failed reload can leave everything as it was. Requests time out after 5 s
    (CoreDNS's read, write and idle timeouts for these servers).
    """
    host, port = split_address(address)
    site = _QuietSite(_Paths(paths), timeout=HTTP_TIMEOUT)
    site.noisy = False
    if host:
        sock = reusing_socket(socket.SOCK_STREAM, host, port)
    else:
        try:
            sock = reusing_socket(socket.SOCK_STREAM, "::", port)
        except CannotListenError as error:
            if getattr(error.socketError, "errno", None) not in _NO_IPV6:
                raise
            sock = reusing_socket(socket.SOCK_STREAM, "0.0.0.0", port)
    try:  # the reactor takes a copy of the descriptor
        listening: IListeningPort = reactor.adoptStreamPort(sock.fileno(), sock.family, site)
    finally:
        sock.close()
    return listening
