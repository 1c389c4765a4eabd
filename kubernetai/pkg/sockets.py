"""Listening sockets opened with SO_REUSEPORT, for the reactor to adopt.

Twisted's ``listenTCP``/``listenUDP`` do not set SO_REUSEPORT; CoreDNS opens every socket
with it. We use it where two sockets of this process must hold one port at once: a DNS port
with blocks on every address and on some address (Linux gives each packet to the most
specific socket), and an HTTP listener moving by a reload while the old one still listens.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.error import CannotListenError

__all__ = ["reusing_socket"]


def reusing_socket(kind: int, address: str, port: int, backlog: int = 1024) -> socket.socket:
    """A bound (and for TCP listening) non-blocking socket with SO_REUSEPORT; a
    CannotListenError naming the address if that fails."""
    try:
        family, where = _resolve(address, port, kind)
    except socket.gaierror as error:
        raise CannotListenError(address, port, error) from None
    try:
        sock = socket.socket(family, kind)
    except OSError as error:  # no IPv6 on this host
        raise CannotListenError(address, port, error) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and address in ("::", ""):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(where)
        if kind == socket.SOCK_STREAM:
            sock.listen(backlog)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        raise CannotListenError(address, port, error) from None
    return sock


def _resolve(address: str, port: int, kind: int) -> tuple[int, Any]:
    """An IP address as it is; a host name (CoreDNS's default ``localhost:9153``) as Go
    listens on it: its first IPv4 address, else its first address."""
    try:
        found = socket.getaddrinfo(address, port, type=kind,
                                   flags=socket.AI_NUMERICHOST | socket.AI_PASSIVE)
    except socket.gaierror:
        found = socket.getaddrinfo(address, port, type=kind, flags=socket.AI_PASSIVE)
        found.sort(key=lambda info: info[0] != socket.AF_INET)
    family, _, _, _, where = found[0]
    return family, where
