"""Which server block answers a name: the longest matching zone, as CoreDNS's ``ServeDNS``."""

from __future__ import annotations

from typing import Any, Mapping

from twisted.internet import defer
from twisted.names import dns

from kubernetai.core.negative import Refused

__all__ = ["ZoneRouter", "normalize_zone"]

_TYPE_DS = 43


def normalize_zone(zone: str | bytes) -> bytes:
    """A zone as the router keys it: lower case, no trailing dot, the root as ``b""``."""
    if isinstance(zone, str):
        zone = zone.encode("idna") if zone.strip(".") else zone.encode("ascii")
    return zone.lower().strip(b".") if zone.strip(b".") else b""



class ZoneRouter:
    """Longest-suffix zone match, case-insensitive, as ``Server.ServeDNS`` does it.

    ``route`` walks the query name's suffixes from the longest one, so
    ``a.b.cluster.local`` tries ``a.b.cluster.local``, ``b.cluster.local``,
    ``cluster.local``, ``local``, then the root zone ``.`` if one is configured.  DS
    queries keep walking and go to the *shortest* (parent-most) matching zone, like
    CoreDNS's ``dshandler``.

    It is also a minimal ``IResolver`` (``query`` only), used as the factory's
    ``resolver`` so code written against ``DNSServerFactory.resolver`` keeps working.
    """

    def __init__(self, zones: Mapping[str | bytes, Any]):
        self._zones: dict[bytes, Any] = {}
        for zone, resolver in zones.items():
            self._zones[normalize_zone(zone)] = resolver
        # The same, as ready (zone, value) pairs: the request path allocates nothing.
        self._entries = {zone: (zone, value) for zone, value in self._zones.items()}
        # A few zones: each tried as a suffix, longest first (the first that matches is
        # the longest), which costs less than cutting the name at every dot.
        self._few: list[tuple[bytes, bytes, tuple[bytes, Any]]] | None = None
        if len(self._zones) <= self.fewZones:
            self._few = [(zone, b"." + zone, self._entries[zone])
                         for zone in sorted(self._zones, key=len, reverse=True) if zone]
        self._root = self._entries.get(b"")

    #: up to this many zones, :meth:`entry` tries each as a suffix.
    fewZones = 8

    @property
    def zones(self) -> dict[bytes, Any]:
        """Normalized zone name → resolver (a copy)."""
        return dict(self._zones)

    def match(self, lname: bytes, qtype: int = dns.A) -> bytes | None:
        """The zone (normalized) that serves ``lname`` (lower case, no trailing dot)."""
        zones = self._zones
        name = lname
        found = None
        while True:
            if name in zones:
                if qtype != _TYPE_DS:
                    return name
                found = name
            dot = name.find(b".")
            if dot < 0:
                break
            name = name[dot + 1:]
        if found is not None:
            return found
        if b"" in zones:
            return b""
        return None

    def route(self, lname: bytes, qtype: int = dns.A) -> Any | None:
        """The value for ``lname`` (lower case, no trailing dot), or None → REFUSED."""
        found = self.entry(lname, qtype)
        return None if found is None else found[1]

    def entry(self, lname: bytes, qtype: int = dns.A) -> tuple[bytes, Any] | None:
        """``(zone, value)`` for ``lname`` (lower case, no trailing dot), or None."""
        entries = self._entries
        if qtype != _TYPE_DS:
            few = self._few
            if few is not None:
                for exact, dotted, pair in few:
                    if lname.endswith(dotted) or lname == exact:
                        return pair
                return self._root
            name = lname
            while True:
                found = entries.get(name)
                if found is not None:
                    return found
                dot = name.find(b".")
                if dot < 0:
                    return entries.get(b"")
                name = name[dot + 1:]
        zone = self.match(lname, qtype)
        return None if zone is None else entries[zone]

    def query(self, query: dns.Query, timeout: Any = None) -> defer.Deferred[Any]:
        """``IResolver.query``: hand the query to its zone's resolver, or fail Refused."""
        resolver = self.route(query.name.name.lower().rstrip(b"."), query.type)
        if resolver is None:
            return defer.fail(Refused())
        return resolver.query(query, timeout)

