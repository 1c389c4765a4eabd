"""The orders `loadbalance` puts records in, as CoreDNS 1.14's policies do.

A policy does not touch records: given what it needs to know of a section's records (a
:class:`View` each: type, address, owner) it returns the new order as a list of indices,
or None to leave the section as it is. The same order is then applied to records a
plugin answered with (:mod:`.handler`) or to an encoded response (:mod:`.wire`), so the
two paths cannot disagree.

* ``round_robin`` (CoreDNS's ``randomShuffle``): in each of the answer, authority and
  additional sections holding more than one record, CNAMEs first, then the records of
  other types, then the A and AAAA records shuffled, then the MX records shuffled.
* ``weighted`` (``weightedShuffle``): for A, AAAA and SRV questions only, in the answer
  and additional sections that hold an address record: CNAMEs, other types, then the
  address records with one drawn by the weight file's weights (1 for an address it does
  not list) moved to the top, then MX.
* ``prefer`` (``reorderPreferredSubnets``), after either: in the answer and additional
  sections, CNAMEs, then the A/AAAA records in the preferred subnets (subnet by subnet,
  in the order given), the other address records, MX, then the rest.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Protocol, Sequence

__all__ = ["View", "Policy", "RoundRobin", "Weighted", "Prefer", "A", "AAAA", "CNAME", "MX"]

A, NS, CNAME, MX, AAAA, SRV = 1, 2, 5, 15, 28, 33
ANSWER, AUTHORITY, ADDITIONAL = 0, 1, 2
_ADDRESS = (A, AAAA)


class View(Protocol):
    """What a policy reads of one record."""

    type: int

    def address(self) -> bytes | None:
        """The packed IPv4/IPv6 address of an A/AAAA record (None for other types)."""

    def owner(self) -> str:
        """The owner name, lower case, with its trailing dot."""


class Policy(Protocol):
    def order(self, section: int, records: Sequence[View], qtype: int) -> list[int] | None:
        """The section's new order (indices into ``records``), or None: unchanged."""


_rng = random.Random()


def _shuffle(indices: list[int]) -> None:
    """CoreDNS's ``roundRobinShuffle``: two records swapped half the time, more shuffled."""
    if len(indices) == 2:
        if _rng.random() < 0.5:
            indices.reverse()
    elif len(indices) > 2:
        _rng.shuffle(indices)


def _partition(records: Sequence[View]) -> tuple[list[int], list[int], list[int], list[int]]:
    cname: list[int] = []
    address: list[int] = []
    mx: list[int] = []
    rest: list[int] = []
    for index, record in enumerate(records):
        kind = record.type
        if kind == A or kind == AAAA:
            address.append(index)
        elif kind == CNAME:
            cname.append(index)
        elif kind == MX:
            mx.append(index)
        else:
            rest.append(index)
    return cname, address, mx, rest


class RoundRobin:
    """The default policy (see the module docstring)."""

    def order(self, section: int, records: Sequence[View], qtype: int) -> list[int] | None:
        count = len(records)
        if count <= 1:
            return None
        first = records[0].type
        if first == A or first == AAAA:              # only addresses: the common case
            for record in records:
                if record.type != first:
                    break
            else:
                indices = list(range(count))
                _shuffle(indices)
                return indices
        cname, address, mx, rest = _partition(records)
        _shuffle(address)
        _shuffle(mx)
        return cname + rest + address + mx


class Weighted:
    """``weighted WEIGHTFILE``: ``weights`` maps an owner name (lower case, trailing dot)
    to {packed address: weight}; it is replaced whole when the file is read again."""

    def __init__(self, weights: dict[str, dict[bytes, int]] | None = None,
                 rng: random.Random | None = None) -> None:
        self.weights: dict[str, dict[bytes, int]] = weights or {}
        self.rng = rng or random.Random()

    def order(self, section: int, records: Sequence[View], qtype: int) -> list[int] | None:
        if section == AUTHORITY or qtype not in (A, AAAA, SRV):
            return None
        cname, address, mx, rest = _partition(records)
        if not address:
            return None
        top = self._top(records, address)
        if top:
            address[0], address[top] = address[top], address[0]
        return cname + rest + address + mx

    def _top(self, records: Sequence[View], address: list[int]) -> int:
        """Which of ``address`` goes first: drawn with the weights' odds."""
        weighed = []
        total = 0
        for position, index in enumerate(address):
            record = records[index]
            weight = self.weights.get(record.owner(), {}).get(record.address() or b"", 1)
            weighed.append((weight, position))
            total += weight
        weighed.sort(key=lambda item: -item[0])
        draw = self.rng.randrange(total)
        for weight, position in weighed:
            draw -= weight
            if draw < 0:
                return position
        return 0


class Prefer:
    """``prefer CIDR...`` after ``base``: see the module docstring."""

    def __init__(self, base: Policy, subnets: Sequence[ipaddress.IPv4Network
                                                        | ipaddress.IPv6Network]) -> None:
        self.base = base
        self.subnets = list(subnets)

    def order(self, section: int, records: Sequence[View], qtype: int) -> list[int] | None:
        first = self.base.order(section, records, qtype)
        if section == AUTHORITY:
            return first
        ordered = first if first is not None else list(range(len(records)))
        cname: list[int] = []
        address: list[int] = []
        mx: list[int] = []
        rest: list[int] = []
        for index in ordered:
            kind = records[index].type
            (address if kind in _ADDRESS else cname if kind == CNAME
             else mx if kind == MX else rest).append(index)
        return cname + self._sorted(records, address) + mx + rest

    def _sorted(self, records: Sequence[View], address: list[int]) -> list[int]:
        ips = [_ip(records[index].address()) for index in address]
        matched: list[int] = []
        taken = [False] * len(address)
        for subnet in self.subnets:
            for position, ip in enumerate(ips):
                if not taken[position] and ip is not None and ip.version == subnet.version \
                        and ip in subnet:
                    taken[position] = True
                    matched.append(address[position])
        return matched + [index for position, index in enumerate(address)
                          if not taken[position]]


def _ip(packed: bytes | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if packed is None or len(packed) not in (4, 16):
        return None
    return ipaddress.ip_address(packed)
