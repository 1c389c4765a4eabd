"""``rewrite edns0 local|nsid|subnet set|append|replace|unset ...``: the query's EDNS0
options, as the steps after rewrite see them (``request.options``: what ``forward``
sends upstream).

miekg/dns decodes each option by its code: the ones it knows get their own type (NSID 3,
client subnet 8, ...) and every other code is an ``EDNS0_LOCAL``. A ``local`` rule only
matches options of that local kind, ``nsid`` the NSID option, ``subnet`` the client
subnet option; as in CoreDNS, ``append`` of a local or NSID option adds one even when
one is there, and a query without EDNS gets an OPT record (UDP size 4096) as soon as an
edns0 rule looks at it.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

from kubernetai.plugins.rewrite.state import State

__all__ = ["LocalRule", "VariableRule", "NsidRule", "SubnetRule", "VARIABLES", "SET",
           "APPEND", "REPLACE", "UNSET"]

NSID = 3
SUBNET = 8
#: Codes miekg/dns decodes into an option type of their own (``makeDataOpt``); any
#: other code is an ``EDNS0_LOCAL``.
KNOWN_CODES = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15, 18, 19})

SET, APPEND, REPLACE, UNSET = "set", "append", "replace", "unset"

#: The variables a local option's data may name.
VARIABLES = ("{qname}", "{qtype}", "{client_ip}", "{client_port}", "{protocol}",
             "{server_ip}", "{server_port}")

def _is_local(code: int) -> bool:
    return code not in KNOWN_CODES


class _Edns0Rule:
    """What the edns0 rules share: the mode and the action."""

    def __init__(self, mode: str, action: str) -> None:
        self.mode = mode
        self.action = action

    def _apply(self, state: State, code: int, data: bytes, local: bool) -> list[Any] | None:
        """``set``/``replace`` the first option of ``code`` (of the local kind if
        ``local``), or ``set``/``append`` a new one; ``unset`` removes them all."""
        options = state.edns_options()
        if self.action == UNSET:
            options[:] = [opt for opt in options if opt[0] != code]
            return []
        for option in options:
            if option[0] == code and (_is_local(code) if local else True):
                if self.action in (REPLACE, SET):
                    option[1] = data
                    return []
        if self.action in (APPEND, SET):
            options.append([code, data])
            return []
        return None


class LocalRule(_Edns0Rule):
    """``edns0 local ACTION CODE DATA``: an option with fixed data."""

    def __init__(self, mode: str, action: str, code: int, data: bytes) -> None:
        super().__init__(mode, action)
        self.code = code
        self.data = data

    def rewrite(self, state: State) -> list[Any] | None:
        return self._apply(state, self.code, self.data, True)


class NsidRule(_Edns0Rule):
    """``edns0 nsid ACTION``: an empty NSID option (the server's id is asked for)."""

    def rewrite(self, state: State) -> list[Any] | None:
        return self._apply(state, NSID, b"", False)


class VariableRule(_Edns0Rule):
    """``edns0 local ACTION CODE {variable}``: data taken from the query. A variable that
    has no value (a metadata label: there is no metadata plugin) leaves the rule
    unmatched, as in CoreDNS."""

    def __init__(self, mode: str, action: str, code: int, variable: str) -> None:
        super().__init__(mode, action)
        self.code = code
        self.variable = variable

    def rewrite(self, state: State) -> list[Any] | None:
        data = _variable(self.variable, state)
        if data is None:
            return None
        options = state.edns_options()
        for option in options:
            if option[0] == self.code and _is_local(self.code):
                if self.action in (REPLACE, SET):
                    option[1] = data
                    return []
                return None
        if self.action in (APPEND, SET):
            options.append([self.code, data])
            return []
        return None


def _family_address(host: str) -> tuple[int, bytes]:
    address = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (1 if address.version == 4 else 2), address.packed


def _local(request: Any) -> tuple[str, int]:
    host = request.proto.transport.getHost()
    return host.host, host.port


def _variable(variable: str, state: State) -> bytes | None:
    request = state.request
    try:
        if variable == "{qname}":
            return state.name.encode("utf-8", "surrogateescape")
        if variable == "{qtype}":
            return struct.pack("!H", state.qtype)
        if variable == "{client_ip}":
            return _family_address(request.peer()[0])[1]
        if variable == "{client_port}":
            return struct.pack("!H", request.peer()[1])
        if variable == "{protocol}":
            return request.transport.encode()
        if variable == "{server_ip}":
            family = _family_address(request.peer()[0])[0]
            local = ipaddress.ip_address(_local(request)[0])
            if family == 1:
                if isinstance(local, ipaddress.IPv6Address):
                    return local.ipv4_mapped.packed if local.ipv4_mapped else None
                return local.packed
            if isinstance(local, ipaddress.IPv4Address):
                return ipaddress.IPv6Address(f"::ffff:{local}").packed
            return local.packed
        if variable == "{server_port}":
            return struct.pack("!H", _local(request)[1])
    except Exception:
        return None
    return None                               # a metadata label: no metadata here


class SubnetRule(_Edns0Rule):
    """``edns0 subnet ACTION V4BITS V6BITS``: the client's address, cut to the prefix
    length of its family, as an EDNS Client Subnet option (scope 0)."""

    def __init__(self, mode: str, action: str, v4: int, v6: int) -> None:
        super().__init__(mode, action)
        self.v4 = v4
        self.v6 = v6

    def _data(self, state: State) -> bytes | None:
        try:
            family, packed = _family_address(state.request.peer()[0])
        except Exception:
            return None
        bits = self.v4 if family == 1 else self.v6
        network = ipaddress.ip_network((packed, bits), strict=False)
        address = network.network_address.packed[:(bits + 7) // 8]
        return struct.pack("!HBB", family, bits, 0) + address

    def rewrite(self, state: State) -> list[Any] | None:
        options = state.edns_options()
        if self.action == UNSET:
            options[:] = [opt for opt in options if opt[0] != SUBNET]
            return []
        for option in options:
            if option[0] == SUBNET:
                if self.action in (REPLACE, SET):
                    data = self._data(state)
                    if data is not None:
                        option[1] = data
                        return []
                return None
        if self.action in (APPEND, SET):
            data = self._data(state)
            if data is not None:
                options.append([SUBNET, data])
                return []
        return None

