"""`loop`: the directive (no arguments), as CoreDNS's."""

from __future__ import annotations

from kubernetai.core.registry import BlockBuilder
from kubernetai.corefile import CorefileError, Directive, no_options
from kubernetai.plugins.loop.handler import LoopHandler
from kubernetai.plugins.loop.probe import LoopProbe


class LoopDirective:
    name = "loop"
    once = True  # CoreDNS: plugin.ErrOnce

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        no_options(directive, block=False)
        if directive.block:
            raise CorefileError(directive.filename, directive.line,
                                "Unexpected token '{', expecting argument", "{")
        # The probe asks about the block's first zone only, as CoreDNS.
        handler = LoopHandler(builder.zones[0] if builder.zones else ".")
        builder.add_handler(handler)
        builder.add_process_service(LoopProbe(handler, builder))
