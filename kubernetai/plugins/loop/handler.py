"""The `loop` step: count the start-up probe's arrivals, and halt the process on a loop.

The probe (:mod:`kubernetai.plugins.loop.probe`) asks the server itself for
``HINFO <random>.<random>.<zone>``. Seen once, the query came from the probe; seen three
times, whatever follows this step (``forward``) sent it back here, and would keep doing so
for every query: CoreDNS halts rather than serve in a loop, and so does this step. Once
the probe period is over the step only passes queries on, so a client that learned the
name later cannot halt the server with it.
"""

from __future__ import annotations

import os
import secrets
from typing import Callable

from kubernetai.core.plugin import Next, Result
from kubernetai.core.request import Request
from kubernetai.pkg.gosyntax import quote
from kubernetai.pkg.logwriter import STDOUT

__all__ = ["LoopHandler", "HINFO", "probe_name", "halt", "host_port"]

HINFO = 13
TROUBLESHOOTING = "https://coredns.io/plugins/loop#troubleshooting"


def probe_name(zone: str) -> str:
    """``<random>.<random>.<zone>`` as CoreDNS draws it: two random 62-bit integers in
    decimal, then the zone (``"."`` or ``"example.org."``); lower case, fully qualified."""
    first, second = secrets.randbelow(1 << 62), secrets.randbelow(1 << 62)
    zone = zone.lower()
    return f"{first}.{second}." + ("" if zone == "." else zone)


def host_port(host: str, port: int | str) -> str:
    """Go's ``net.JoinHostPort``: brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def halt(line: str) -> None:
    """CoreDNS's ``log.Fatal``: the line on the process log, then exit 1 at once (no
    shutdown: the server must not keep answering in a loop)."""
    STDOUT.flush(1.0)            # the query lines logged before it come first
    STDOUT.write_now(line)
    os._exit(1)


class LoopHandler:
    """CoreDNS's ``Loop`` handler: see the module docstring."""

    name = "loop"

    def __init__(self, zone: str, qname: str | None = None,
                 halt: Callable[[str], None] = halt) -> None:
        self.zone = zone.lower() if zone.endswith(".") else zone.lower() + "."
        self.qname = qname or probe_name(self.zone)
        self._probe = self.qname.rstrip(".").encode()
        self._suffix = b"" if self.zone == "." else b"." + self.zone.rstrip(".").encode()
        self._halt = halt
        self.seen = 0
        self.off = False
        #: Where the probe is sent, as CoreDNS writes it (``:53`` without `bind`).
        self.address = ""

    def serve(self, request: Request, next: Next) -> Result:
        if request.qtype != HINFO or self.off or not self._in_zone(request.lname):
            return next(request)
        if request.lname == self._probe:
            self.seen += 1
        if self.seen > 2:
            self._halt(self.fatal_line(request))
        return next(request)

    def _in_zone(self, lname: bytes) -> bool:
        suffix = self._suffix
        return not suffix or lname == suffix[1:] or lname.endswith(suffix)

    def fatal_line(self, request: Request) -> str:
        """CoreDNS's fatal log line for a loop seen on ``request``."""
        host, port = request.peer()
        if host.startswith("::ffff:") and "." in host:
            host = host[7:]                  # an IPv4 client of a dual-stack socket
        return (f"[FATAL] plugin/loop: Loop ({host_port(host, port)} -> {self.address}) "
                f"detected for zone {quote(self.zone)}, see {TROUBLESHOOTING}. "
                f'Query: "HINFO {self.qname}"')

    # What the probe tells the step.

    def reset(self) -> None:
        """The probe's exchange failed: what was counted does not show a loop."""
        self.seen = 0

    def disable(self) -> None:
        """The probe period is over: pass every query on from now on."""
        self.off = True
