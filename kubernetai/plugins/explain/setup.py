"""`debug` and `explain`: the two directives that let `/explain` explain a server block.

``debug`` is CoreDNS's (no arguments). CoreDNS uses it to stop recovering from panics;
here a plugin that raises is always answered SERVFAIL and logged, so its only effect is
the one ``explain`` has. ``explain`` is ours: CoreDNS's plugin order does not name it, so
it takes the place just after ``debug`` (it contributes no pipeline step either way).
"""

from __future__ import annotations

from kubernetai.core.registry import BlockBuilder
from kubernetai.corefile import Directive, no_options
from kubernetai.plugins.explain.service import ExplainService


class DebugDirective:
    """``debug``: CoreDNS's directive; here it makes the block explainable."""

    name = "debug"
    once = True

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        no_options(directive)
        builder.add_process_service(ExplainService())


class ExplainDirective:
    """``explain``: the block's queries may be explained through ``GET /explain``."""

    name = "explain"
    after = "debug"
    once = True

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        no_options(directive)
        builder.add_process_service(ExplainService())
