"""`minimal`: the directive (no arguments), with CoreDNS's messages.

CoreDNS's setup reads no block: one written under `minimal` is ignored there, and here it
is ignored with a start-up warning.
"""

from __future__ import annotations

from kubernetai.core.registry import BlockBuilder
from kubernetai.corefile import Directive, no_options
from kubernetai.plugins.minimal.handler import MinimalHandler


class MinimalDirective:
    name = "minimal"
    once = False  # as CoreDNS: a second `minimal` line adds nothing

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        no_options(directive, block=False)
        if directive.block:
            first = directive.block[0]
            builder.warnings.append(f"{first.filename}:{first.line}: minimal: the block is "
                                    "ignored (minimal takes no options)")
        if not any(isinstance(stage.handler, MinimalHandler) for stage in builder.stages):
            builder.add_handler(MinimalHandler())
