"""`bind ADDRESS...`: the addresses a server block listens on (default: all)."""

from __future__ import annotations

import ipaddress

from kubernetai.core.registry import BlockBuilder
from kubernetai.corefile import CorefileError, Directive


class BindDirective:
    name = "bind"
    once = False  # CoreDNS allows several bind lines; their addresses add up

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        if not directive.args:
            raise CorefileError(directive.filename, directive.line,
                                "Wrong argument count or unexpected line ending after 'bind'",
                                directive.name)
        if directive.block:
            first = directive.block[0]
            raise CorefileError(first.filename, first.line,
                                f"bind: '{first.name}' blocks are not supported", first.name)
        for arg, line in zip(directive.args, directive.arg_lines):
            try:
                address = ipaddress.ip_address(arg.split("%")[0])
            except ValueError:
                raise CorefileError(directive.filename, line,
                                    f"bind: not a valid IP address: '{arg}' (interface names "
                                    "are not supported)", arg) from None
            if str(address) not in builder.bind_addresses:
                builder.bind_addresses.append(str(address))
