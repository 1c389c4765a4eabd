"""`hosts` as a resolver of the block's chain, answering as CoreDNS's ``hosts.go`` does.

* A name outside the plugin's zones is passed on whatever ``fallthrough`` says (``PTR``
  excepted: reverse names need not be in the zones, the addresses are looked up anyway).
* ``A``/``AAAA``: the addresses of the name (file entries first, then inline ones; a
  wildcard entry only where the name itself has none), owner name as asked, TTL ``ttl``,
  AA set. ``PTR``: the names of the address; an address without any is passed on, with or
  without ``fallthrough``.
* A name that has addresses but none of the type asked (``AAAA`` of an IPv4-only name,
  ``MX``, ...) is NODATA: NOERROR, AA, nothing in any section (hosts has no SOA). With
  ``fallthrough_unsupported`` the types hosts cannot answer are passed on instead.
* A name without any entry is passed on when ``fallthrough`` covers it; otherwise it is
  SERVFAIL (CoreDNS: "we want to send an NXDOMAIN, but ... we don't have a SOA"), and
  nothing is logged.

Passing on is a ``FallThrough``: the chain asks the next resolver (a ``kubernetai``
stanza), then the handlers after it (``forward``). Answers may be kept by the answer memo:
each records the hosts data it was read from (``request.depend``), which moves on when the
file changes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IResolver
from twisted.names import dns
from twisted.names.common import ResolverBase
from zope.interface import implementer

from kubernetai.core.negative import (
    AuthoritativeEmpty,
    FallThrough,
    NameErrorFallThrough,
    OutsideZones,
    ServerFailure,
)
from kubernetai.pkg.dnsname import plain_dots, presentation_dotted, zone_of
from kubernetai.pkg.fall import Fall
from kubernetai.plugins.hosts.hostsfile import address_from_reverse, wildcard_of
from kubernetai.plugins.hosts.source import HostsSource

__all__ = ["HostsResolver", "NoData"]

Result = tuple[list[dns.RRHeader], list[dns.RRHeader], list[dns.RRHeader]]

NO_NEXT = "plugin/hosts: no next plugin found"
_NEVER = Fall()
_NONE: tuple[list[str], list[str]] = ([], [])


#: hosts's NODATA: NOERROR with AA and every section empty (it has no SOA).
NoData = AuthoritativeEmpty


@implementer(IResolver)
class HostsResolver(ResolverBase):
    """Answers from a :class:`HostsSource`; see the module docstring."""

    cacheable = True
    # Its answers are a function of its source alone (recorded on the request).
    renewable = True

    def __init__(self, source: HostsSource, *, ttl: int = 3600, fall: Fall = _NEVER,
                 fallthrough_unsupported: bool = False) -> None:
        super().__init__()
        self.source = source
        self.ttl = ttl
        self.fall = fall
        self.fallthrough_unsupported = fallthrough_unsupported
        self._zones = [plain_dots(zone) for zone in source.zones]

    # -- IResolver -------------------------------------------------------------------

    def query(self, query: dns.Query, timeout: Any = None) -> defer.Deferred[Result]:
        """Every type is answered here (``ResolverBase.query`` would log a line for each
        type it has no ``lookup*`` method of, a client's choice)."""
        found = self.answer(query)
        if isinstance(found, Exception):
            # Made, not raised: a Failure without a traceback costs little, and every
            # name of the zones after hosts passes here first.
            return defer.fail(found)
        return defer.succeed(found)

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> defer.Deferred[Result]:
        return self.query(dns.Query(name, type, cls))

    def describe(self) -> dict[str, Any]:
        """What ``explain`` shows of this step (never called on the query path)."""
        return {"hostsfile": self.source.path, "zones": list(self.source.zones),
                "fallthrough": list(self.fall.zones), "generation": self.source.generation}

    # -- the answer ------------------------------------------------------------------

    def answer(self, query: dns.Query) -> Result | FallThrough | ServerFailure:
        """The records for ``query``, or the FallThrough / ServerFailure it gets."""
        owner = query.name.name
        request = getattr(query, "request", None)
        if request is not None and owner == request.qname:
            key = request.fqdn()  # lower case, escaped, fully qualified
        else:
            key = presentation_dotted(owner.lower())
        qtype = query.type
        in_zones = zone_of(plain_dots(key), self._zones) is not None
        if not in_zones and qtype != dns.PTR:
            return OutsideZones(NO_NEXT)
        if request is not None:
            request.depend(self.source.changes)
        table = self.source.table
        entry = table.names.get(key)
        if entry is None and table.wild:
            pattern = wildcard_of(key)
            if pattern is not None:
                entry = table.wild.get(pattern)
        v4, v6 = entry or _NONE
        ttl = self.ttl
        if qtype == dns.A:
            if v4:
                return [dns.RRHeader(owner, dns.A, dns.IN, ttl, dns.Record_A(a, ttl), True)
                        for a in v4], [], []
        elif qtype == dns.AAAA:
            if v6:
                return [dns.RRHeader(owner, dns.AAAA, dns.IN, ttl, dns.Record_AAAA(a, ttl),
                                     True) for a in v6], [], []
        elif qtype == dns.PTR:
            address = address_from_reverse(key)
            names = table.addr.get(address) if address is not None else None
            if not names:
                return FallThrough(NO_NEXT)  # whatever fallthrough says, as CoreDNS
            return [dns.RRHeader(owner, dns.PTR, dns.IN, ttl,
                                 dns.Record_PTR(_target(name), ttl), True)
                    for name in names], [], []
        elif self.fallthrough_unsupported and self.fall.through(key):
            return NameErrorFallThrough(NO_NEXT)
        if v4 or v6:
            return NoData(), [], []
        if self.fall.through(key):
            return NameErrorFallThrough(NO_NEXT)
        return ServerFailure()  # no SOA for an NXDOMAIN: SERVFAIL, nothing logged


def _target(name: str) -> bytes:
    """A name of the file as a PTR target: its bytes, without the trailing dot."""
    return name[:-1].encode("latin-1") if name.endswith(".") else name.encode("latin-1")
