"""`whoami`: the directive (no arguments, no block), as CoreDNS's."""

from __future__ import annotations

from kubernetai.core.registry import BlockBuilder
from kubernetai.corefile import Directive, no_options
from kubernetai.plugins.whoami.handler import WhoamiHandler


class WhoamiDirective:
    name = "whoami"
    once = False  # as CoreDNS: a second one is never reached

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        no_options(directive)
        builder.add_handler(WhoamiHandler())
