"""`whoami`: the directive (no arguments, no block), as CoreDNS's."""

from __future__ import annotations

from kubernetai.core.registry import BlockBuilder
from kubernetai.corefile import CorefileError, Directive, arg_error
from kubernetai.plugins.whoami.handler import WhoamiHandler


class WhoamiDirective:
    name = "whoami"
    once = False  # as CoreDNS: a second one is never reached

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        if directive.args:
            raise arg_error(directive.filename, directive.arg_lines[0], directive.args[0],
                            directive.args[0])
        if directive.block:
            first = directive.block[0]
            raise CorefileError(first.filename, first.line,
                                f"whoami: unknown property '{first.name}'", first.name)
        builder.add_handler(WhoamiHandler())
