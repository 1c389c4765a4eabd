"""The addresses of a network interface, for `bind IFACE` (Go's ``net.Interface.Addrs``).

CoreDNS reads them once when it loads the Corefile (at start and at each reload), and so
do we. Linux only: IPv4 from the ``SIOCGIFCONF`` ioctl (every address, secondary ones
included, each under its label ``eth0`` or ``eth0:1``), IPv6 from ``/proc/net/if_inet6``
(link-local ones with their ``%IFACE`` zone, as CoreDNS writes them). Elsewhere no name
is an interface, and `bind` accepts IP addresses only.
"""

from __future__ import annotations

import array
import fcntl
import ipaddress
import socket
import struct

__all__ = ["interface_names", "addresses_of"]

_SIOCGIFCONF = 0x8912
_IFNAMSIZ = 16
# struct ifreq: the name, then a union whose largest member is struct ifmap.
_IFREQ_SIZE = _IFNAMSIZ + max(16, struct.calcsize("@LLHBBB0L"))
_IF_INET6 = "/proc/net/if_inet6"
_MAX_INTERFACES = 4096  # SIOCGIFCONF entries read at most


def interface_names() -> set[str]:
    """This host's interface names (empty where they cannot be listed)."""
    try:
        return {name for _, name in socket.if_nameindex()}
    except OSError:
        return set()


def addresses_of(name: str) -> list[str]:
    """Every address of interface ``name``: IPv4 first, then IPv6, each once."""
    found = [address for label, address in _ipv4_addresses() if label.split(":")[0] == name]
    found += [address for iface, address in _ipv6_addresses() if iface == name]
    return list(dict.fromkeys(found))


def _ipv4_addresses() -> list[tuple[str, str]]:
    """(label, address) of every IPv4 address of the host."""
    count = 64
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            while True:
                buffer = array.array("B", bytes(count * _IFREQ_SIZE))
                pointer, length = buffer.buffer_info()
                request = struct.pack("@iP", length, pointer)
                used = struct.unpack("@iP", fcntl.ioctl(probe.fileno(), _SIOCGIFCONF,
                                                        request))[0]
                if used < length or count >= _MAX_INTERFACES:
                    break
                count *= 2  # the table may have been cut: ask again with room to spare
    except OSError:
        return []
    data = buffer.tobytes()[:used]
    found = []
    for start in range(0, used - _IFREQ_SIZE + 1, _IFREQ_SIZE):
        entry = data[start:start + _IFREQ_SIZE]
        label = entry[:_IFNAMSIZ].split(b"\0", 1)[0].decode("ascii", "replace")
        family = struct.unpack("@H", entry[_IFNAMSIZ:_IFNAMSIZ + 2])[0]
        if family == socket.AF_INET:
            found.append((label, socket.inet_ntoa(entry[_IFNAMSIZ + 4:_IFNAMSIZ + 8])))
    return found


def _ipv6_addresses() -> list[tuple[str, str]]:
    """(interface, address) of every IPv6 address of the host, link-local ones zoned."""
    found = []
    try:
        with open(_IF_INET6, encoding="ascii") as table:
            for line in table:
                fields = line.split()
                if len(fields) != 6:
                    continue
                address = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
                iface = fields[5]
                text = f"{address}%{iface}" if address.is_link_local else str(address)
                found.append((iface, text))
    except (OSError, ValueError):
        return found
    return found
