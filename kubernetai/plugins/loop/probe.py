"""The start-up probe: ask the server itself for the loop step's name, once it listens.

As CoreDNS's ``OnStartup`` goroutine: the probe goes over UDP to the block's first listen
address and port (127.0.0.1 or ::1 for a block listening everywhere), as a plain query
(RD set, no EDNS) with a random ID. Any reply ends the probe period; a failed exchange (no
reply within 2 s, the port refusing) resets the step's count and is tried again a second
later, for up to 30 s after the server started listening; then the step turns itself off
either way. Everything runs on the reactor: a UDP socket, a timer, no thread.

The server is learned through the process-service hook: :class:`KubernetaiService` calls
``serving(server)`` at start and after each reload, and fires ``server.listening`` once its
sockets are open. Each probe service has a key of its own, so a reload starts a new one
for the new configuration's loop step (CoreDNS probes again after a reload as well).
"""

from __future__ import annotations

import secrets
import struct
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.python.failure import Failure

from kubernetai.plugins.loop.handler import HINFO, LoopHandler, host_port

__all__ = ["LoopProbe", "probe_query", "probe_target"]

#: CoreDNS's numbers: keep trying for 30 s, a second between tries, 2 s per exchange.
DEADLINE = 30.0
PAUSE = 1.0
TIMEOUT = 2.0

_WILDCARD = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def probe_query(qname: str, id_: int) -> bytes:
    """The probe's wire form: header with RD, one question ``qname HINFO IN``."""
    labels = [label for label in qname.rstrip(".").split(".") if label]
    name = b"".join(bytes((len(label),)) + label.encode() for label in labels) + b"\0"
    return struct.pack("!HBBHHHH", id_, 0x01, 0, 1, 0, 0, 0) + name + struct.pack("!HH",
                                                                                  HINFO, 1)


def probe_target(server: Any, builder: Any) -> tuple[str, int] | None:
    """The first listen address and port of the block ``builder`` set up, among what
    ``server`` (a KubernetaiService) serves: ("", port) for a block without `bind`."""
    for group, factory in server.servers():
        if any(block.builder is builder for block in group.blocks):
            port = group.port
            if port == 0:  # a port picked when listening: the one its sockets got
                for opened in getattr(server, "ports", ()):
                    if getattr(opened, "factory", None) is factory:
                        port = opened.getHost().port
                        break
            return group.address, port
    return None


class _Exchange(DatagramProtocol):
    """One query and its reply over a connected UDP socket (Go's ``dns.Exchange``)."""

    def __init__(self, query: bytes, id_: int) -> None:
        self.query = query
        self.id = id_
        self.done: defer.Deferred[None] = defer.Deferred()

    def send(self) -> None:
        """Send the query (once the socket is connected to the server)."""
        transport: Any = self.transport       # connected: no address to give
        transport.write(self.query)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if len(data) >= 12 and data[2] & 0x80 and struct.unpack_from("!H", data)[0] == self.id:
            self._finish(None)

    def connectionRefused(self) -> None:
        self._finish(Failure(ConnectionRefusedError("the port refused the probe")))

    def _finish(self, result: Any) -> None:
        if not self.done.called:
            self.done.callback(None) if result is None else self.done.errback(result)


class LoopProbe(service.Service):
    """Runs the probe for one block's loop step (a process service, see the module)."""

    def __init__(self, handler: LoopHandler, builder: Any, reactor: Any = None, *,
                 deadline: float = DEADLINE, pause: float = PAUSE,
                 timeout: float = TIMEOUT) -> None:
        self.handler = handler
        self.builder = builder
        self.reactor = reactor
        self.deadline, self.pause, self.timeout = deadline, pause, timeout
        self.key = ("loop", id(self))
        self._server: Any = None
        self._ends = 0.0
        self._port: Any = None        # the UDP socket of the exchange under way
        self._timer: Any = None       # its timeout, or the pause before the next try
        self._started = False
        #: How many exchanges were tried (for tests and `explain`-style inspection).
        self.tries = 0

    def adopt(self, newer: "LoopProbe") -> None:
        """Never called: each probe has a key of its own."""

    def serving(self, server: Any) -> None:
        """The server to probe; the probe starts once it listens."""
        if self._server is not None:
            return
        self._server = server
        server.listening.addBoth(self._listening)

    def _listening(self, result: Any) -> Any:
        if not isinstance(result, Failure) and self.running and not self._started:
            self._reactor().callLater(0, self._begin)
        return result

    def startService(self) -> None:
        super().startService()
        listening = getattr(self._server, "listening", None)
        if listening is not None and listening.called and not self._started:
            self._reactor().callLater(0, self._begin)

    def stopService(self) -> Any:
        super().stopService()
        self._stop_try()
        return None

    def _reactor(self) -> Any:
        if self.reactor is None:
            from twisted.internet import reactor
            self.reactor = reactor
        return self.reactor

    def _begin(self) -> None:
        if self._started or not self.running:
            return
        self._started = True
        self._ends = self._reactor().seconds() + self.deadline
        self._try()

    def _try(self) -> None:
        self._timer = None
        if not self.running:
            return
        reactor = self._reactor()
        if reactor.seconds() >= self._ends:
            self.handler.disable()
            return
        target = probe_target(self._server, self.builder)
        if target is None:
            self.handler.disable()
            return
        host, port = target
        self.handler.address = host_port(host, port)
        id_ = secrets.randbelow(0x10000)
        exchange = _Exchange(probe_query(self.handler.qname, id_), id_)
        destination = _WILDCARD.get(host, host)
        self.tries += 1
        try:
            interface = "::" if ":" in destination else ""
            self._port = reactor.listenUDP(0, exchange, interface=interface)
            self._port.connect(destination, port)
            exchange.send()
        except Exception as error:  # noqa: BLE001 - a failed try, as Go's Exchange error
            self._stop_try()
            self._failed(Failure(error))
            return
        self._timer = reactor.callLater(self.timeout, exchange._finish,
                                        Failure(TimeoutError("probe timed out")))
        exchange.done.addCallbacks(self._answered, self._failed)

    def _stop_try(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        port, self._port = self._port, None
        if port is not None:
            port.stopListening()

    def _answered(self, _: Any) -> None:
        self._stop_try()
        self.handler.disable()

    def _failed(self, failure: Failure) -> None:
        self._stop_try()
        self.handler.reset()
        if self.running:
            self._timer = self._reactor().callLater(self.pause, self._try)
