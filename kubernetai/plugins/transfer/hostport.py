"""Addresses as CoreDNS's *transfer* reads them: Go's ``net.SplitHostPort`` and
``net.JoinHostPort``, and CoreDNS's ``parse.HostPort`` on top of them.

Pure functions of text; the errors are Go's (``SplitHostPort``) and CoreDNS's
(``must specify an IP address: `X'``) words.
"""

from __future__ import annotations

import ipaddress

__all__ = ["split_host_port", "join_host_port", "host_port", "is_ip"]


def split_host_port(hostport: str) -> tuple[str, str]:
    """Go's ``net.SplitHostPort``: ``host:port``, ``[host]:port`` or ``[host%zone]:port``
    into host and port (the port is not checked: it may be empty or a word). ValueError
    with Go's reason otherwise."""
    i = hostport.rfind(":")
    if i < 0:
        raise ValueError(f"address {hostport}: missing port in address")
    j = k = 0
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise ValueError(f"address {hostport}: missing ']' in address")
        if end + 1 == len(hostport):
            raise ValueError(f"address {hostport}: missing port in address")
        if end + 1 != i:
            if hostport[end + 1] == ":":
                raise ValueError(f"address {hostport}: too many colons in address")
            raise ValueError(f"address {hostport}: missing port in address")
        host = hostport[1:end]
        j, k = 1, end + 1
    else:
        host = hostport[:i]
        if ":" in host:
            raise ValueError(f"address {hostport}: too many colons in address")
    if "[" in hostport[j:]:
        raise ValueError(f"address {hostport}: unexpected '[' in address")
    if "]" in hostport[k:]:
        raise ValueError(f"address {hostport}: unexpected ']' in address")
    return host, hostport[i + 1:]


def join_host_port(host: str, port: str) -> str:
    """Go's ``net.JoinHostPort``: brackets around a host holding a colon."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _strip_zone(host: str) -> str:
    """CoreDNS's ``stripZone``: what comes before the last ``%``."""
    cut = host.rfind("%")
    return host[:cut] if cut >= 0 else host


def is_ip(text: str) -> bool:
    """Go's ``net.ParseIP(text) != nil``: an IPv4 address in dotted decimal (no leading
    zeros) or an IPv6 address (no zone)."""
    if "%" in text:
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def host_port(text: str, default_port: str) -> str:
    """CoreDNS's ``parse.HostPort``: ``text`` as ``host:port`` with ``default_port`` when
    it has none; the host must be an IP address (an IPv6 zone is allowed). ValueError
    ``must specify an IP address: `X'`` otherwise."""
    try:
        host, port = split_host_port(text)
    except ValueError:
        if not is_ip(_strip_zone(text)):
            raise ValueError(f"must specify an IP address: `{text}'") from None
        return join_host_port(text, default_port)
    if not is_ip(_strip_zone(host)):
        raise ValueError(f"must specify an IP address: `{host}'")
    return join_host_port(host, port or default_port)
