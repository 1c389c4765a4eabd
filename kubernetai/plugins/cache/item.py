"""One CoreDNS cache entry, kept as the response's bytes split at its records' TTLs.

A hit is the stored bytes with this request's ID, flags and question (the key is the
lower-case name: same length, only the case may differ), every TTL set to what is left
(one ``join``), and the request's OPT record: no message is decoded or encoded. CoreDNS's
``item.toMsg`` is what it reproduces: AA set, RA and the rcode as stored, AD as stored only
for a client that set DO or AD, RD and CD as asked.
"""

from __future__ import annotations

import struct
from typing import Any

from kubernetai.core.request import AD, Request
from kubernetai.core.sources import Deps
from kubernetai.core.wirecache import ENTRY_OVERHEAD, Key

__all__ = ["Item", "split"]

_HEAD = struct.Struct("!HBBHHHH")
_U32 = struct.Struct("!I")
_FULL = (0).to_bytes(4, "big")
#: Charged per TTL slice and per record end, beyond the bytes themselves.
_PER_SLICE = 48


def split(stored: bytes, ttl_at: list[int], start: int = 12) -> tuple[bytes, ...]:
    """The bytes from ``start`` (the header's end, or the question's), cut around each
    4-byte TTL."""
    chunks = []
    pos = start
    for at in ttl_at:
        chunks.append(stored[pos:at])
        pos = at + 4
    chunks.append(stored[pos:])
    return tuple(chunks)


class Item:
    """A stored response and what CoreDNS's ``item`` keeps of it."""

    __slots__ = ("chunks", "counts", "ends", "question", "b4", "ad", "orig_ttl", "stored_at",
                 "deps", "kind", "rcode", "size", "owner", "server", "last", "hits",
                 "refreshing", "retry_after")

    def __init__(self, stored: bytes, ttl_at: list[int], ends: list[int],
                 sections: list[int], qend: int, orig_ttl: int, now: float,
                 deps: Deps, kind: str, owner: Any, server: str,
                 qname: bytes) -> None:
        # The records after the question: a hit puts its own question in front (the key
        # is the lower-case name; the question echoes the asker's case, same length).
        self.chunks = split(stored, ttl_at, qend)
        an = sections.count(0)
        ns = sections.count(1)
        self.counts = (an, ns, len(sections) - an - ns)
        self.ends = tuple(end - qend for end in ends)
        self.question = stored[12:qend]                # the first asker's (`full`)
        self.rcode = stored[3] & 0xF
        self.b4 = stored[3] & 0x8F                     # RA and the rcode
        self.ad = bool(stored[3] & AD)
        self.orig_ttl = orig_ttl
        self.stored_at = now
        self.deps = deps
        self.kind = kind
        self.owner = owner
        self.server = server
        self.size = (len(stored) + len(qname) + ENTRY_OVERHEAD
                     + _PER_SLICE * (len(self.chunks) + len(self.ends)))
        # prefetch's frequency (plugin/cache/freq): last hit, hits in a row.
        self.last = float("-inf")
        self.hits = 0
        self.refreshing = False
        self.retry_after = float("-inf")

    def ttl(self, now: float) -> int:
        """Seconds left (negative once expired), as ``item.ttl`` counts them."""
        return self.orig_ttl - int(now - self.stored_at)

    def wire(self, request: Request, ttl: int) -> bytes:
        """The response to ``request`` with every TTL ``ttl``; truncated (TC) at whole
        records if it does not fit the size the request allows."""
        body = _U32.pack(ttl if ttl > 0 else 0).join(self.chunks)
        b4 = self.b4 | request.cd
        if self.ad and (request.do or getattr(request, "ad", False)):
            b4 |= AD
        opt = request.opt
        nopt = 1 if opt else 0
        an, ns, ar = self.counts
        question = request.question
        if 12 + len(question) + len(body) + len(opt) <= request.limit:
            return b"".join((_HEAD.pack(request.id, 0x84 | request.rd, b4, 1, an, ns,
                                        ar + nopt), question, body, opt))
        budget = request.limit - 12 - len(question) - len(opt)
        kept = 0
        end = 0
        for stop in self.ends:
            if stop > budget:
                break
            kept += 1
            end = stop
        ka = min(kept, an)
        kn = min(kept - ka, ns)
        return b"".join((_HEAD.pack(request.id, 0x86 | request.rd, b4, 1, ka, kn,
                                    kept - ka - kn + nopt), question, body[:end], opt))

    def full(self) -> bytes:
        """The stored response with its original TTLs (what `explain` reads)."""
        an, ns, ar = self.counts
        return (_HEAD.pack(0, 0x84, self.b4, 1, an, ns, ar) + self.question
                + _U32.pack(self.orig_ttl).join(self.chunks))

    def __iter__(self) -> Any:
        """Read as the answer memo's entry tuple (response, expiry, deps, renew)."""
        return iter((self.full(), self.stored_at + self.orig_ttl, self.deps, 0))

    # -- prefetch ------------------------------------------------------------------------

    def update(self, gap: float, now: float) -> int:
        """``freq.Update``: one more hit, or the first of a new run after ``gap``."""
        if self.last < now - gap:
            self.hits = 1
        else:
            self.hits += 1
        self.last = now
        return self.hits

    def begin_refresh(self, now: float, recheck: float) -> bool:
        """At most one refresh in flight, none during a failure's recheck period."""
        if self.refreshing or (recheck > 0 and now < self.retry_after):
            return False
        self.refreshing = True
        return True

    def end_refresh(self, now: float, recheck: float, refreshed: bool) -> None:
        self.retry_after = now + recheck if recheck > 0 and not refreshed else float("-inf")
        self.refreshing = False

    def gone(self, key: Key, evicted: bool) -> None:
        self.owner.gone(key, self, evicted)

