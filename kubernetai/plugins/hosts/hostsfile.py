"""The hosts-file format: lines of ``ADDRESS NAME [ALIASES...]``, read as CoreDNS reads them.

CoreDNS's ``hostsfile.go`` (itself Go's ``net/hosts.go``) decides what a line means, and this
module follows it so a file answers the same here:

* ``#`` starts a comment anywhere on a line; fields are split on whitespace; a line with
  fewer than two fields, or whose first field is not an IP address, is skipped silently;
* an IPv6 zone (``fe80::1%lo0``) is dropped; an IPv4-mapped IPv6 address
  (``::ffff:10.0.0.1``) is an IPv4 address, as Go's ``To4`` makes it;
* each name is lower-cased and fully qualified; a name outside the plugin's zones is
  dropped (it is not answered, not even in a PTR);
* a name whose first label is ``*`` is a wildcard: it matches exactly one label more
  (``*.example.org`` holds ``a.example.org``, not ``example.org`` nor ``b.a.example.org``)
  and only where no entry names the host itself; wildcards have no PTR;
* unless ``no_reverse``, each address maps back to its names, for PTR answers;
* as Go's ``bufio.Scanner`` does, a line longer than 64 KiB ends the reading there.

Names are kept as text in presentation form (what the file says), matched against the
query name in presentation form (:func:`lookup_key`), compared without case.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from kubernetai.pkg.dnsname import ascii_lower, fqdn, plain_dots, zone_of

__all__ = ["HostsMap", "parse_hosts", "canonical_address", "address_from_reverse",
           "wildcard_of", "MAX_LINE"]

#: Go's ``bufio.MaxScanTokenSize``: a longer line stops the scan (``ErrTooLong``).
MAX_LINE = 64 * 1024

Addresses = dict[str, list[str]]


@dataclass(slots=True)
class HostsMap:
    """What one source (the file, or the Corefile's inline lines) says.

    ``name4``/``name6``: lower-case FQDN -> addresses (canonical text) in file order;
    ``wild4``/``wild6`` the same for ``*.`` owners; ``addr``: canonical address -> the
    names it was written with, for PTR (empty with ``no_reverse``).
    """

    name4: Addresses = field(default_factory=dict)
    name6: Addresses = field(default_factory=dict)
    wild4: Addresses = field(default_factory=dict)
    wild6: Addresses = field(default_factory=dict)
    addr: Addresses = field(default_factory=dict)

    def __len__(self) -> int:
        """Every address of every name, and every name of every address (CoreDNS's
        ``Map.Len``, which ``coredns_hosts_entries`` reports)."""
        return sum(len(values) for table in (self.name4, self.name6, self.wild4,
                                             self.wild6, self.addr)
                   for values in table.values())


def canonical_address(text: str) -> tuple[int, str] | None:
    """``(4|6, canonical text)`` of an address as Go's ``net.ParseIP`` reads it, the zone
    dropped and an IPv4-mapped IPv6 address taken as IPv4; None if it is not one.

    ``inet_pton`` refuses what Go refuses (an IPv4 octet with a leading zero, hex or
    octal forms, fewer than four parts), and is several times faster than ``ipaddress``
    (a hosts file that blocks advertising has a hundred thousand lines).
    """
    cut = text.find("%")
    if cut >= 0:
        text = text[:cut]
    if ":" not in text:
        try:
            socket.inet_pton(socket.AF_INET, text)
        except (OSError, ValueError):
            return None
        return 4, text  # decimal without leading zeros: already canonical
    try:
        packed = socket.inet_pton(socket.AF_INET6, text)
    except (OSError, ValueError):
        return None
    if packed[:12] == _V4MAPPED:
        return 4, socket.inet_ntop(socket.AF_INET, packed[12:])
    return 6, socket.inet_ntop(socket.AF_INET6, packed)


_V4MAPPED = bytes(10) + b"\xff\xff"


def _lines(data: bytes) -> Iterable[bytes]:
    """The lines of ``data`` as ``bufio.ScanLines`` gives them (``\\r\\n`` ends a line
    too), stopping at a line longer than :data:`MAX_LINE`."""
    for line in data.split(b"\n"):
        if len(line) > MAX_LINE:
            return
        yield line[:-1] if line.endswith(b"\r") else line


def parse_hosts(data: bytes, zones: Sequence[str], auto_reverse: bool = True) -> HostsMap:
    """The entries of hosts-file text whose names are in ``zones`` (lower-case FQDNs)."""
    hosts = HostsMap()
    plain_zones = [plain_dots(zone) for zone in zones]
    # Most files repeat a few addresses (127.0.0.1, 0.0.0.0): each is read once.
    seen: dict[bytes, tuple[int, str] | None] = {}
    for line in _lines(data):
        cut = line.find(b"#")
        if cut >= 0:
            line = line[:cut]
        fields = line.split()
        if len(fields) < 2:
            continue
        # latin-1 keeps every byte as one character: a name is written back byte for byte.
        first = fields[0]
        if first in seen:
            parsed = seen[first]
        else:
            parsed = seen[first] = canonical_address(first.decode("latin-1"))
        if parsed is None:
            continue
        family, address = parsed
        for raw in fields[1:]:
            name = ascii_lower(fqdn(raw.decode("latin-1")))
            if zone_of(plain_dots(name), plain_zones) is None:
                continue
            if name.startswith("*."):
                table = hosts.wild4 if family == 4 else hosts.wild6
                table.setdefault(name, []).append(address)
                continue
            table = hosts.name4 if family == 4 else hosts.name6
            table.setdefault(name, []).append(address)
            if auto_reverse:
                hosts.addr.setdefault(address, []).append(name)
    return hosts


def wildcard_of(name: str) -> str | None:
    """``name`` with its first label replaced by ``*`` (``a.example.org.`` ->
    ``*.example.org.``); None for a name of one label or the root (miekg/dns
    ``NextLabel`` finds no label after the first). An escaped dot is not a boundary."""
    i, n = 0, len(name) - 1
    while i < n:
        if name[i] == "\\":
            i += 2
            continue
        if name[i] == ".":
            return "*." + name[i + 1:]
        i += 1
    return None


_IP4ARPA = ".in-addr.arpa."
_IP6ARPA = ".ip6.arpa."


def address_from_reverse(name: str) -> str | None:
    """The canonical address a reverse name stands for (CoreDNS
    ``dnsutil.ExtractAddressFromReverse``), or None: ``4.3.2.1.in-addr.arpa.`` is
    ``1.2.3.4``; an ``ip6.arpa.`` name is read four nibbles to a group."""
    if name.endswith(_IP4ARPA):
        labels = name[:-len(_IP4ARPA)].split(".")
        labels.reverse()
        parsed = canonical_address(".".join(labels))
        return parsed[1] if parsed is not None and parsed[0] == 4 and "%" not in name \
            else None
    if name.endswith(_IP6ARPA):
        labels = name[:-len(_IP6ARPA)].split(".")
        labels.reverse()
        groups = ["".join(labels[i * 4:i * 4 + 4]) for i in range(len(labels) // 4)]
        if "%" in name:
            return None
        parsed = canonical_address(":".join(groups))
        return parsed[1] if parsed is not None else None
    return None
