"""`errors [stdout] { stacktrace }`: the directive; the step itself is `handler.py`."""

from __future__ import annotations

from kubernetai.core.registry import BlockBuilder
from kubernetai.corefile import CorefileError, Directive
from kubernetai.pkg.logwriter import STDOUT
from kubernetai.plugins.errors.handler import ErrorsHandler


class ErrorsDirective:
    name = "errors"
    once = True

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        # CoreDNS takes one optional argument, the log file, and only "stdout" is valid.
        if len(directive.args) > 1 or (directive.args and directive.args[0] != "stdout"):
            bad = directive.args[1] if len(directive.args) > 1 else directive.args[0]
            raise CorefileError(directive.filename, directive.arg_lines[0],
                                f"errors: invalid log file: {bad}", bad)
        for option in directive.block:
            if option.name == "stacktrace":
                continue
            if option.name == "consolidate":
                raise CorefileError(option.filename, option.line,
                                    "errors: 'consolidate' is not supported yet", option.name)
            raise CorefileError(option.filename, option.line,
                                f"errors: unknown property '{option.name}'", option.name)
        builder.add_handler(ErrorsHandler(STDOUT))
