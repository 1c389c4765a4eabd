"""The `transfer` step: AXFR and IXFR answered from the block's transfer sources.

As CoreDNS 1.14's *transfer* (``plugin/transfer/transfer.go``), in this order:

1. a query of another type passes on;
2. over UDP: REFUSED (not written by the step: the server's error reply);
3. the name in no `transfer` line's zones (the longest matching zone decides which line,
   equal ones the greater string, then the first line): passes on (the `kubernetai`
   stanzas answer a transfer REFUSED, as CoreDNS's kubernetes plugin);
4. a client address that no ``to`` of that line names (the host string as written, the
   port ignored; ``*`` names everyone): REFUSED, written by the step;
5. an IXFR without exactly one SOA record in its authority section: SERVFAIL;
6. the first source, in chain order, that holds the name (``transfer(zone, serial)`` not
   None) sends the zone: the records in messages of at most 63,000 bytes of records each
   (:mod:`kubernetai.plugins.transfer.messages`); an IXFR whose serial is the current one
   gets the SOA alone. No source holds it: the query passes on.

A source is any resolver or handler of the block with a ``transfer(zone, serial)`` method
(the `kubernetai` stanzas), found once the block is set up; the step knows no plugin by
name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from twisted.logger import Logger

from kubernetai.core.codec import REFUSED, SERVFAIL
from kubernetai.core.plugin import Next, Result
from kubernetai.core.request import Reply, Request
from kubernetai.pkg.dnsname import in_zone, presentation
from kubernetai.pkg.gosyntax import quote
from kubernetai.plugins.transfer.hostport import split_host_port
from kubernetai.plugins.transfer.messages import messages

__all__ = ["Xfr", "TransferHandler", "longest_match", "matches", "client_ip"]

log = Logger()

_AXFR, _IXFR = 252, 251


@dataclass(frozen=True, slots=True)
class Xfr:
    """One `transfer` line: its zones (lower case, fully qualified), its ``to`` entries
    (``*`` or ``host:port`` as CoreDNS normalizes them) and its ``source`` address."""

    zones: tuple[str, ...]
    to: tuple[str, ...]
    source: str | None = None

    def allowed(self, client: str) -> bool:
        """CoreDNS's ``allowed``: ``*``, or a ``to`` whose host is the client's address
        as text (no ranges; the port does not count)."""
        for entry in self.to:
            if entry == "*":
                return True
            try:
                host, _ = split_host_port(entry)
            except ValueError:
                return False
            if host == client:
                return True
        return False

    def targets(self) -> list[str]:
        """Where NOTIFY goes: every ``to`` but ``*``."""
        return [entry for entry in self.to if entry != "*"]


def matches(zones: Sequence[str], name: str) -> str:
    """CoreDNS's ``Zones.Matches``: the longest of ``zones`` holding ``name``, or ``""``."""
    found = ""
    for zone in zones:
        if in_zone(name, zone) and len(zone) > len(found):
            found = zone
    return found


def longest_match(xfrs: Sequence[Xfr], name: str) -> Xfr | None:
    """The line whose zones hold ``name`` most closely (``longestMatch``)."""
    chosen = None
    zone = ""
    for xfr in xfrs:
        found = matches(xfr.zones, name)
        if found and (len(found) > len(zone) or (len(found) == len(zone) and found > zone)):
            zone = found
            chosen = xfr
    return chosen


def client_ip(request: Request) -> str:
    """The client's address as Go prints it: an IPv4 client of a dual-stack socket
    (``::ffff:192.0.2.1``) as IPv4."""
    host: str = request.peer()[0]
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


def _zone_name(request: Request) -> str:
    """The lower-case query name, fully qualified, as the sources read zones."""
    return request.lname.decode("latin-1") + "." if request.lname else "."


class TransferHandler:
    """One block's `transfer` step: every `transfer` line of the block, in Corefile order,
    and the sources found once the block is set up."""

    name = "transfer"

    def __init__(self) -> None:
        self.xfrs: tuple[Xfr, ...] = ()
        self.sources: tuple[Any, ...] = ()

    def add(self, xfr: Xfr) -> None:
        self.xfrs += (xfr,)

    def zones(self) -> list[str]:
        """Every zone of every line, once, in Corefile order."""
        return list(dict.fromkeys(zone for xfr in self.xfrs for zone in xfr.zones))

    def source_for(self, zone: str, serial: int) -> Any:
        """The first source's transfer of ``zone`` (CoreDNS's Transferer loop), or None."""
        for source in self.sources:
            found = source.transfer(zone, serial)
            if found is not None:
                return found
        return None

    def serve(self, request: Request, next: Next) -> Result:
        qtype = request.qtype
        if qtype != _AXFR and qtype != _IXFR:
            return next(request)
        if request.udp:
            return Reply(REFUSED)
        name = _zone_name(request)
        xfr = longest_match(self.xfrs, name)
        if xfr is None:
            return next(request)
        client = client_ip(request)
        if not xfr.allowed(client):
            return Reply(REFUSED, plugin=self.name)
        serial = 0
        if qtype == _IXFR:
            found = getattr(request, "ixfr_serial", None)
            if found is None:
                return Reply(SERVFAIL)
            serial = found
        transfer = self.source_for(name, serial)
        if transfer is None:
            return next(request)
        zone = presentation(request.labels)

        def sent(records: int, soa_serial: int | None, noop: bool) -> None:
            if noop:
                log.info("plugin/transfer: Outgoing noop, incremental transfer for up to "
                         "date zone {zone} to {client} for {serial} SOA serial",
                         zone=quote(zone), client=client, serial=soa_serial)
            else:
                log.info("plugin/transfer: Outgoing transfer of {records} records of zone "
                         "{zone} to {client} for {serial} SOA serial", records=records,
                         zone=quote(zone), client=client, serial=soa_serial or 0)

        series = messages(request, iter(transfer), sent)
        first = next_message(series)
        if first is None:
            return Reply.dropped()  # nothing to send (CoreDNS writes nothing either)
        reply = Reply.encoded(first)
        reply.plugin = self.name
        reply.more = series
        return reply


def next_message(series: Iterator[bytes]) -> bytes | None:
    """The next message of a series, None once it has no more (``serve``'s ``next`` is
    the pipeline's)."""
    return next(series, None)
