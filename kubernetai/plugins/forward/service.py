"""The upstream sockets' lifetime: closed with the configuration that opened them.

Each `forward` directive registers one of these as a process service under a key of its
own, so it starts and stops with the server, and a reload (whose new configuration has
new keys) stops the old one: health checks are cancelled at once, idle sockets closed,
sockets with queries still in flight closed as soon as those are answered or time out
(they finish on the configuration they started with, as CoreDNS's ``OnShutdown``).
"""

from __future__ import annotations

from typing import Any

from twisted.application import service

from kubernetai.plugins.forward.handler import ForwardHandler

__all__ = ["ForwardLifetime"]


class ForwardLifetime(service.Service):
    """Stops one `forward`'s upstreams when the server stops or a reload replaces it."""

    def __init__(self, handler: ForwardHandler) -> None:
        self.handler = handler

    @property
    def key(self) -> tuple[str, int]:
        return ("forward", id(self))

    def adopt(self, newer: Any) -> None:
        """Never called: no two configurations share a key."""

    def stopService(self) -> None:
        super().stopService()
        self.handler.stop()
