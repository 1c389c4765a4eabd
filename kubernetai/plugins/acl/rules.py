"""What an `acl` decides: the rules of a block, and the action for one query.

Each `acl` line of a server block is a :class:`Rule`: its zones and, in order, its
policies (one per line of its block). A query meets the rules in Corefile order; a rule
whose zones do not hold the query name is skipped; within a rule the first policy whose
types and networks both match decides. ``allow`` ends the search (later rules are not
asked), ``block``, ``filter`` and ``drop`` act; a rule where no policy matches passes the
query on to the next rule. What no rule stops is allowed. That is CoreDNS's order.

Networks are held as (network, mask) integer pairs per address family, so matching a
client is a few integer operations; an IPv4 client of a dual-stack socket
(``::ffff:192.0.2.1``) is matched as the IPv4 address it is, as Go's ``net.IP`` does.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["NONE", "ALLOW", "BLOCK", "FILTER", "DROP", "ACTIONS", "ALL_TYPES", "Networks",
           "EVERY_NETWORK", "Policy", "Rule", "client_address", "decide", "parse_network"]

NONE, ALLOW, BLOCK, FILTER, DROP = range(5)
#: The actions by the name a policy line starts with (compared in lower case).
ACTIONS = {"allow": ALLOW, "block": BLOCK, "filter": FILTER, "drop": DROP}
#: In a policy's types: every type (``type *``, or no ``type`` section).
ALL_TYPES = 0

#: An address: (IP version, the address as an integer).
Address = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Networks:
    """Networks of both families, each as (network, mask) integers."""

    v4: tuple[tuple[int, int], ...] = ()
    v6: tuple[tuple[int, int], ...] = ()

    def contains(self, address: Address) -> bool:
        version, value = address
        for network, mask in (self.v4 if version == 4 else self.v6):
            if value & mask == network:
                return True
        return False


#: ``net *``, or no ``net`` section: every IPv4 and every IPv6 address.
EVERY_NETWORK = Networks(((0, 0),), ((0, 0),))


@dataclass(frozen=True, slots=True)
class Policy:
    """One line of an `acl` block: its action, the types and the networks it applies to."""

    action: int
    qtypes: frozenset[int]
    networks: Networks

    def matches(self, qtype: int, address: Address) -> bool:
        qtypes = self.qtypes
        return ((ALL_TYPES in qtypes or qtype in qtypes)
                and self.networks.contains(address))


@dataclass(frozen=True, slots=True)
class Rule:
    """One `acl` line: the zones it guards (routing form: lower case, no closing dot, the
    root as ``b""``), their metric labels (``example.org.``) and its policies."""

    zones: tuple[bytes, ...]
    labels: tuple[str, ...]
    policies: tuple[Policy, ...]

    def zone_of(self, lname: bytes) -> str | None:
        """The label of the longest zone holding ``lname`` (``Zones.Matches``), or None."""
        best = -1
        label = None
        for zone, text in zip(self.zones, self.labels):
            if len(zone) > best and (not zone or lname == zone
                                     or lname.endswith(b"." + zone)):
                best, label = len(zone), text
        return label

    def action(self, qtype: int, address: Address) -> int:
        for policy in self.policies:
            if policy.matches(qtype, address):
                return policy.action
        return NONE


def decide(rules: tuple[Rule, ...], lname: bytes, qtype: int,
           address: Address | None) -> tuple[int, str]:
    """The action for a query and the zone label of the rule that took it (``""`` when
    allowed). A client address that could not be read is blocked by the first rule whose
    zones hold the name, as CoreDNS blocks an unparsable source."""
    for rule in rules:
        zone = rule.zone_of(lname)
        if zone is None:
            continue
        if address is None:
            return BLOCK, zone
        action = rule.action(qtype, address)
        if action == ALLOW:
            break
        if action != NONE:
            return action, zone
    return ALLOW, ""


@lru_cache(maxsize=4096)
def client_address(host: str) -> Address | None:
    """A client's address as matched (``%zone`` cut off, IPv4-mapped IPv6 made IPv4), or
    None if it is no IP address. Cached: clients repeat."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.version, int(ip)


def normalize(token: str) -> str:
    """CoreDNS's ``normalize``: a single address becomes a /32 (or /128 with a colon)."""
    if "/" in token:
        return token
    return token + ("/128" if ":" in token else "/32")


def parse_network(token: str) -> tuple[int, int, int]:
    """(version, network, mask) of a CIDR as Go's ``net.ParseCIDR`` reads it: an address
    without a zone, ``/`` and a decimal prefix length (leading zeros allowed, no netmask
    form); host bits are cleared. ValueError if Go would refuse it."""
    address, slash, length = token.partition("/")
    if not slash or "%" in address or not length.isascii() or not length.isdigit():
        raise ValueError(token)
    ip = ipaddress.ip_address(address)
    bits = 32 if ip.version == 4 else 128
    prefix = int(length)
    if prefix > bits:
        raise ValueError(token)
    mask = ((1 << bits) - 1) ^ ((1 << (bits - prefix)) - 1)
    return ip.version, int(ip) & mask, mask
