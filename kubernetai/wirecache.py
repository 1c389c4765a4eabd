"""Answers kept as the bytes that were sent, in front of the resolvers.

Every answer a stanza gives is a pure function of its cluster's cache (TTLs are fixed, the
SOA serial is the time of the last change), so an encoded response can be sent again,
with the new query's ID and flags patched in, until some cluster's data changes. Then the
whole cache is dropped: changes are rare next to queries, and dropping everything also
covers answers that involve several clusters (an ExternalName chased into another zone).
Only NOERROR, NODATA and NXDOMAIN answers are kept (never SERVFAIL, so nothing from before
a first sync that failed), and the size is bounded: a flood of random names empties it.
"""

from __future__ import annotations

from typing import Any

from .dnsserver import KubernetaiServerFactory


class WireCache:
    """Encoded responses by (qname as sent, qtype, qclass, EDNS key)."""

    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        self.entries: dict[tuple[bytes, int, int, Any], bytes] = {}
        self.hits = 0

    def clear(self) -> None:
        self.entries.clear()


class CachingServerFactory(KubernetaiServerFactory):
    """The server factory with a `WireCache` behind its cache hooks."""

    def __init__(self, *args: Any, cache: WireCache, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cache = cache

    def lookupWireCache(self, qname: bytes, qtype: int, qclass: int,
                        ednsKey: Any) -> bytes | None:
        wire = self.cache.entries.get((qname, qtype, qclass, ednsKey))
        if wire is not None:
            self.cache.hits += 1
        return wire

    def storeWireCache(self, qname: bytes, qtype: int, qclass: int, ednsKey: Any,
                       wire: bytes, result: tuple) -> None:
        entries = self.cache.entries
        if len(entries) >= self.cache.max_entries:
            entries.clear()
        entries[(qname, qtype, qclass, ednsKey)] = wire

    def adopt(self, other: KubernetaiServerFactory) -> None:
        super().adopt(other)
        self.cache.clear()  # a new configuration answers differently
