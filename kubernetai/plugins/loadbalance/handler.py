"""The `loadbalance` step: reorder the records of every successful answer.

It stands before the cache (CoreDNS's order), so it reorders answers coming back up: a
reply with records has them put in the policy's order (new lists: a plugin may answer
with lists it keeps), a reply already encoded (a cache hit, an answer relayed as is) is
reordered as bytes (:mod:`.wire`). ``filter_early`` does the same to a cache hit the
server answers early, so shuffling costs the cache's fast path nothing but the shuffle.
As in CoreDNS only NOERROR answers are touched, and never a zone transfer.
"""

from __future__ import annotations

from typing import Sequence

from twisted.names import dns

from kubernetai.core.plugin import Next, Result, then
from kubernetai.core.request import Reply, Request
from kubernetai.plugins.loadbalance.policy import Policy
from kubernetai.plugins.loadbalance.wire import reorder

__all__ = ["LoadbalanceHandler"]

_TRANSFERS = (dns.AXFR, dns.IXFR)


class _Header:
    """An ``RRHeader`` as a policy's :class:`~.policy.View`."""

    __slots__ = ("rr", "type")

    def __init__(self, rr: dns.RRHeader) -> None:
        self.rr = rr
        self.type = rr.type

    def address(self) -> bytes | None:
        if self.type in (dns.A, dns.AAAA):
            return getattr(self.rr.payload, "address", None)
        return None

    def owner(self) -> str:
        name = self.rr.name.name.decode("latin-1").lower()
        return name + "." if name else "."


class LoadbalanceHandler:
    name = "loadbalance"

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def serve(self, request: Request, next: Next) -> Result:
        return then(next(request), lambda reply: self.apply(request, reply))

    def apply(self, request: Request, reply: Reply) -> Reply:
        """``reply`` with its records in the policy's order (changed in place)."""
        if reply.rcode != dns.OK or request.qtype in _TRANSFERS:
            return reply
        wire = reply.wire
        if wire is not None:
            if len(wire) > 12 and not wire[3] & 0xF:
                reply.wire = reorder(wire, self.policy, request.qtype, request.limit)
            return reply
        qtype = request.qtype
        reply.answers = self._ordered(0, reply.answers, qtype)
        reply.authority = self._ordered(1, reply.authority, qtype)
        reply.additional = self._ordered(2, reply.additional, qtype)
        return reply

    def _ordered(self, section: int, records: Sequence[dns.RRHeader],
                 qtype: int) -> Sequence[dns.RRHeader]:
        if not records:
            return records
        order = self.policy.order(section, [_Header(rr) for rr in records], qtype)
        if order is None:
            return records
        return [records[index] for index in order]

    def filter_early(self, request: Request, wire: bytes) -> bytes:
        """A cache hit given early, reordered as :meth:`serve` would."""
        if wire[3] & 0xF or request.qtype in _TRANSFERS:
            return wire
        return reorder(wire, self.policy, request.qtype, request.limit)
