"""Answers kept as the bytes that were sent, in front of the resolvers.

Every answer a stanza gives is a pure function of its cluster's cache (TTLs are fixed, the
SOA serial is the time of the last change), so an encoded response can be sent again,
with the new query's ID, flags and OPT record patched in, until some cluster's data
changes. Then the whole cache is dropped: changes are rare next to queries, and dropping
everything also covers answers that involve several clusters (an ExternalName chased into
another zone). Only NOERROR, NODATA and NXDOMAIN answers are kept (never SERVFAIL, so
nothing from before a first sync that failed).

The key is what the client cannot vary at will (name as sent, type, class); the request's
EDNS options are not part of it and not stored (the server appends each request's own OPT
record). The cache is bounded in bytes as well as in entries, since a client chooses how
large an answer is (a headless service with many endpoints, over TCP): when either bound
is passed, the oldest entries go first.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from kubernetai.core.dnsserver import KubernetaiServerFactory

#: What one entry costs beyond its key name and answer bytes: the dict slot and its
#: order link, the key tuple, two bytes objects' headers (measured, rounded up).
ENTRY_OVERHEAD = 256


class WireCache:
    """Encoded responses (without OPT) by (qname as sent, qtype, qclass, port scope).

    :param max_entries: at most this many answers.
    :param max_bytes: at most this many bytes of keys, answers and per-entry overhead
        (:data:`ENTRY_OVERHEAD`); an answer larger than a quarter of it is not kept.
    """

    def __init__(self, max_entries: int = 50_000, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        # Ordered for eviction, oldest first: popitem(last=False) is O(1) here, where a
        # plain dict's first key gets slower to find with every entry popped before it.
        self.entries: OrderedDict[tuple[bytes, int, int, int], bytes] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.evictions = 0

    @staticmethod
    def cost(qname: bytes, stored: bytes) -> int:
        """The bytes one entry is charged."""
        return len(qname) + len(stored) + ENTRY_OVERHEAD

    def get(self, key: tuple[bytes, int, int, int]) -> bytes | None:
        stored = self.entries.get(key)
        if stored is not None:
            self.hits += 1
        return stored

    def put(self, key: tuple[bytes, int, int, int], stored: bytes) -> None:
        """Keep ``stored`` under ``key``, evicting the oldest entries to stay in bounds."""
        cost = self.cost(key[0], stored)
        if cost > self.max_bytes // 4:
            return
        entries = self.entries
        old = entries.pop(key, None)
        if old is not None:
            self.bytes -= self.cost(key[0], old)
        while entries and (self.bytes + cost > self.max_bytes
                           or len(entries) >= self.max_entries):
            oldest, value = entries.popitem(last=False)
            self.bytes -= self.cost(oldest[0], value)
            self.evictions += 1
        entries[key] = stored
        self.bytes += cost

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0


class CachingServerFactory(KubernetaiServerFactory):
    """The server factory with a `WireCache` behind its cache hooks."""

    def __init__(self, *args: Any, cache: WireCache, scope: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cache = cache
        # Ports of one process share the cache, and may route one name differently.
        self.scope = scope

    def lookupWireCache(self, qname: bytes, qtype: int, qclass: int) -> bytes | None:
        return self.cache.get((qname, qtype, qclass, self.scope))

    def storeWireCache(self, qname: bytes, qtype: int, qclass: int, stored: bytes,
                       result: tuple) -> None:
        self.cache.put((qname, qtype, qclass, self.scope), stored)

    def adopt(self, other: KubernetaiServerFactory) -> None:
        super().adopt(other)
        self.cache.clear()  # a new configuration answers differently
