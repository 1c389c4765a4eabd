"""This host's own addresses, for the `ns.dns.<zone>` records (CoreDNS's `boundIPs`).

CoreDNS answers the apex NS and `ns.dns.<zone>` with the addresses the server listens on:
those of `bind`, or every interface address when it binds to all; loopback never counts.
Linux only (ioctl for IPv4, /proc for IPv6); elsewhere the answer is empty, which CoreDNS
would also give with no usable address.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from typing import Iterable

_SIOCGIFADDR = 0x8915


def usable(addresses: Iterable[str]) -> tuple[str, ...]:
    """The addresses that can name this server to others: no loopback, no link-local."""
    kept = []
    for text in addresses:
        address = ipaddress.ip_address(text.split("%")[0])
        if not (address.is_loopback or address.is_link_local or address.is_unspecified):
            kept.append(str(address))
    return tuple(dict.fromkeys(kept))


def interface_addresses() -> tuple[str, ...]:
    """Every non-loopback address of this host's interfaces."""
    found: list[str] = []
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            for _, name in socket.if_nameindex():
                request = struct.pack("256s", name.encode()[:15])
                try:
                    reply = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
                except OSError:
                    continue  # no IPv4 address on this interface
                found.append(socket.inet_ntoa(reply[20:24]))
    except OSError:
        pass
    try:
        with open("/proc/net/if_inet6") as table:
            for line in table:
                hexaddr, *_ = line.split()
                found.append(str(ipaddress.IPv6Address(bytes.fromhex(hexaddr))))
    except OSError:
        pass
    return usable(found)


def server_addresses(bind: Iterable[str]) -> tuple[str, ...]:
    """What CoreDNS would use: the bound addresses, or all the host's, minus loopback."""
    bound = list(bind)
    return usable(bound) if bound else interface_addresses()
