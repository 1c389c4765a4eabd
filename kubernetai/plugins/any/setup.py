"""`any`: the directive (no arguments, no block), with CoreDNS's messages."""

from __future__ import annotations

from kubernetai.core.registry import BlockBuilder
from kubernetai.corefile import Directive, no_options
from kubernetai.plugins.any.handler import AnyHandler


class AnyDirective:
    name = "any"
    once = False  # as CoreDNS: a second `any` line adds nothing

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        no_options(directive)
        if not any(isinstance(stage.handler, AnyHandler) for stage in builder.stages):
            builder.add_handler(AnyHandler())
