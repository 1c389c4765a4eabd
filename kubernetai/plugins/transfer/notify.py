"""NOTIFY (RFC 1996) to the ``to`` peers when a transferred zone's serial moves.

CoreDNS's kubernetes plugin never sends NOTIFY (only *file*, *auto* and *secondary* call
the *transfer* plugin's ``Notify``); here the zones the stanzas serve do, so a secondary
learns of a change without waiting for the SOA's refresh (7200 s). The message and the
exchange are CoreDNS's ``Notify``: opcode NOTIFY, AA, a random ID, no RD, the question
``<zone> SOA IN``, no EDNS; over UDP from ``source`` (or any address) to each ``to`` but
``*``, at the port written there (53 by default); up to three tries of 2 s, accepted when
the peer answers NOERROR; a failure is logged with CoreDNS's text (``notify for zone
"Z" was not accepted by "ADDR": ...``).

When: every :attr:`Notifier.poll` seconds (1 s) the serial of each zone of the block's
`transfer` lines (from the first source that holds it, as a transfer would) is read; the
first reading is the baseline and sends nothing. Once it moves, one NOTIFY round goes to
that zone's peers (the `transfer` line a transfer of the zone would use), and the next no
sooner than :attr:`Notifier.hold` seconds (5 s) after it: changes in between are one
NOTIFY, so a cluster changing 100 times a second costs each peer at most one NOTIFY per
zone every 5 s, and one transfer after it. A round does not start while the last one's
exchanges for that zone are still trying.

It is a process service of the configuration that set it up (a key of its own): a reload
starts the new one (with a new baseline) and stops this one. With ``--workers`` only the
main process sends (it alone runs process services).
"""

from __future__ import annotations

import functools
import itertools
import secrets
import struct
from typing import Any, Callable

from twisted.application import service
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from kubernetai.pkg.gosyntax import quote
from kubernetai.plugins.transfer.handler import TransferHandler, longest_match
from kubernetai.plugins.transfer.hostport import split_host_port

__all__ = ["Notifier", "notify_message", "TRIES", "TIMEOUT"]

log = Logger()
_keys = itertools.count(1)

#: CoreDNS's ``sendNotify``: three tries; miekg's client waits 2 s for each.
TRIES = 3
TIMEOUT = 2.0

_HEADER = struct.Struct("!HBBHHHH")
_NOTIFY_AA = (4 << 3) | 0x04   # opcode NOTIFY, AA
_SOA_IN = struct.pack("!HH", 6, 1)
#: miekg's ``RcodeToString`` for the rcodes a 4-bit header field holds.
_RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN",
           "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE", "DSOTYPENI")


def rcode_name(rcode: int) -> str:
    """CoreDNS's ``rcode.ToString``: the name, or the number."""
    return _RCODES[rcode] if rcode < len(_RCODES) else str(rcode)


def notify_message(zone: str, id_: int) -> bytes:
    """miekg's ``SetNotify(zone)`` on the wire: ``zone`` fully qualified, lower case."""
    labels = [label for label in zone.rstrip(".").split(".") if label]
    name = b"".join(bytes((len(raw),)) + raw for raw in (label.encode("utf-8")
                                                          for label in labels)) + b"\0"
    return _HEADER.pack(id_, _NOTIFY_AA, 0, 1, 0, 0, 0) + name + _SOA_IN


class _Exchange(DatagramProtocol):
    """One NOTIFY to one peer: up to :data:`TRIES` sends, each waiting :data:`TIMEOUT`
    seconds for an answer with its ID; ``finished(error)`` once (None: accepted)."""

    def __init__(self, reactor: Any, zone: str, target: str, source: str | None) -> None:
        self.reactor = reactor
        self.zone = zone
        self.target = target
        self.source = source
        self.finished: Callable[[str | None], None] = lambda error: None
        self.id = secrets.randbelow(0x10000)
        self.query = notify_message(zone, self.id)
        self.tries = 0
        self.last_error = ""
        self.rcode: int | None = None
        self._port: Any = None
        self._timer: Any = None
        self._done = False

    def start(self) -> None:
        try:
            host, port_text = split_host_port(self.target)
            if not port_text.isdigit() or int(port_text) > 65535:
                raise ValueError(f"dial udp: address {self.target}: invalid port")
            port = int(port_text)
            interface = self.source or ("::" if ":" in host else "")
            self._port = self.reactor.listenUDP(0, self, interface=interface)
            self._port.connect(host.split("%")[0], port)
        except Exception as error:  # noqa: BLE001 - reported as the exchange's error
            self.last_error = str(error)
            self._finish()
            return
        self._send()

    def _send(self) -> None:
        if self._done:
            return
        if self.tries >= TRIES:
            self._finish()
            return
        self.tries += 1
        transport: Any = self.transport       # connected: no address to give
        try:
            transport.write(self.query)
        except Exception as error:  # noqa: BLE001 - a failed try, as Go's Exchange error
            self.last_error = str(error)
            self._timer = self.reactor.callLater(0, self._send)
            return
        self._timer = self.reactor.callLater(TIMEOUT, self._timeout)

    def _timeout(self) -> None:
        self._timer = None
        self.last_error = f"read udp {self.target}: i/o timeout"
        self.rcode = None
        self._send()

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if self._done or len(data) < 12 or not data[2] & 0x80:
            return
        if struct.unpack_from("!H", data)[0] != self.id:
            return
        self._cancel()
        self.rcode = data[3] & 0x0F
        if self.rcode == 0:
            self._finish(accepted=True)
            return
        self.last_error = ""
        self._send()

    def connectionRefused(self) -> None:
        if self._done:
            return
        self._cancel()
        self.last_error = f"read udp {self.target}: connection refused"
        self.rcode = None
        self._timer = self.reactor.callLater(0, self._send)

    def _cancel(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def stop(self) -> None:
        """Give up (the service stops)."""
        self._done = True
        self._cancel()
        port, self._port = self._port, None
        if port is not None:
            port.stopListening()

    def _finish(self, accepted: bool = False) -> None:
        if self._done:
            return
        self.stop()
        if accepted:
            self.finished(None)
        elif self.rcode is not None and not self.last_error:
            self.finished(f"notify for zone {quote(self.zone)} was not accepted by "
                          f"{quote(self.target)}: rcode was {quote(rcode_name(self.rcode))}")
        else:
            self.finished(f"notify for zone {quote(self.zone)} was not accepted by "
                          f"{quote(self.target)}: {quote(self.last_error)}")


class Notifier(service.Service):
    """Sends NOTIFY for one block's `transfer` zones as their serials move (see the
    module docstring)."""

    #: seconds between two readings of the serials.
    poll = 1.0
    #: seconds at least between two NOTIFY rounds for one zone.
    hold = 5.0

    def __init__(self, handler: TransferHandler, reactor: Any = None) -> None:
        self.handler = handler
        self.reactor = reactor
        self.key = ("transfer-notify", next(_keys))
        self._loop: LoopingCall | None = None
        self._serials: dict[str, int] = {}
        self._pending: set[str] = set()
        self._last_round: dict[str, float] = {}
        self._flying: dict[str, list[_Exchange]] = {}
        #: NOTIFY rounds started, per zone (tests read it).
        self.rounds: dict[str, int] = {}

    def adopt(self, newer: "Notifier") -> None:
        """Never called: no other configuration has this key."""

    def startService(self) -> None:
        if self.reactor is None:
            from twisted.internet import reactor
            self.reactor = reactor
        super().startService()
        self._loop = LoopingCall(self.check)
        self._loop.clock = self.reactor
        self._loop.start(self.poll, now=True)

    def stopService(self) -> Any:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        for exchanges in self._flying.values():
            for exchange in exchanges:
                exchange.stop()
        self._flying.clear()
        return None

    def check(self) -> None:
        """Read each zone's serial; send the NOTIFY rounds that are due."""
        try:
            self._check()
        except Exception:  # noqa: BLE001 - a broken source must not stop the loop
            log.failure("plugin/transfer: reading the zones' serials failed")

    def _check(self) -> None:
        now = self.reactor.seconds()
        for zone in self.handler.zones():
            transfer = self.handler.source_for(zone, 0)
            if transfer is None:
                continue
            serial = transfer.serial
            known = self._serials.get(zone)
            self._serials[zone] = serial
            if known is not None and serial != known:
                self._pending.add(zone)
            if zone not in self._pending or self._flying.get(zone):
                continue
            last = self._last_round.get(zone)
            if last is not None and now - last < self.hold:
                continue
            self._pending.discard(zone)
            self._last_round[zone] = now
            self._round(zone)

    def _round(self, zone: str) -> None:
        """One NOTIFY for ``zone`` to each peer of its `transfer` line."""
        xfr = longest_match(self.handler.xfrs, zone)
        if xfr is None or not xfr.targets():
            return
        self.rounds[zone] = self.rounds.get(zone, 0) + 1
        self.send(zone, xfr.targets(), xfr.source)

    def send(self, zone: str, targets: list[str], source: str | None) -> None:
        """Start the exchanges of one round; each failure is logged when it ends."""
        flying = self._flying[zone] = []

        def finished(exchange: _Exchange, error: str | None) -> None:
            if exchange in flying:
                flying.remove(exchange)
            if error is not None:
                log.warn("plugin/transfer: {error}", error=error)

        exchanges = [_Exchange(self.reactor, zone, target, source) for target in targets]
        flying.extend(exchanges)
        for exchange in exchanges:
            exchange.finished = functools.partial(finished, exchange)
            exchange.start()
