"""`bind ADDRESS|IFACE... [{ except ADDRESS|IFACE... }]`: where a server block listens."""

from __future__ import annotations

import ipaddress
from typing import Sequence

from kubernetai.core.registry import BlockBuilder
from kubernetai.corefile import CorefileError, Directive, arg_error
from kubernetai.plugins.bind.interfaces import addresses_of, interface_names


class BindDirective:
    name = "bind"
    once = False  # CoreDNS allows several bind lines; their addresses add up

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        if not directive.args:
            raise arg_error(directive.filename, directive.line, "bind", directive.name)
        names = interface_names()
        addresses = _addresses(directive, directive.args, directive.arg_lines, names)
        excluded: list[str] = []
        for option in directive.block:
            if option.name != "except":
                raise CorefileError(option.filename, option.line,
                                    f"bind: invalid option '{option.name}'", option.name)
            if not option.args:
                raise CorefileError(option.filename, option.line,
                                    "bind: at least one address or interface must be given "
                                    "to except subdirective", option.name)
            if option.block:
                first = option.block[0]
                raise CorefileError(first.filename, first.line,
                                    "bind: unexpected block after 'except'", first.name)
            # As CoreDNS: a later except line replaces an earlier one of the same bind.
            excluded = _addresses(option, option.args, option.arg_lines, names)
        for address in addresses:
            if address not in excluded and address not in builder.bind_addresses:
                builder.bind_addresses.append(address)


def _addresses(line: Directive, args: Sequence[str], lines: Sequence[int],
               names: set[str]) -> list[str]:
    """The addresses ``args`` name: an interface's addresses (read now), or an IP address
    in its canonical form. An interface name wins over an address, as in CoreDNS."""
    found: list[str] = []
    for arg, number in zip(args, lines):
        if arg in names:
            found += addresses_of(arg)
            continue
        try:
            found.append(str(ipaddress.ip_address(arg)))
        except ValueError:
            raise CorefileError(line.filename, number,
                                f"bind: not a valid IP address or interface name: '{arg}'",
                                arg) from None
    return found
