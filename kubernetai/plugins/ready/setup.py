"""`ready [ADDRESS] { monitor until-ready|continuously }`: the directive, as CoreDNS's."""

from __future__ import annotations

from kubernetai.core.registry import BlockBuilder
from kubernetai.corefile import CorefileError, Directive, arg_error
from kubernetai.plugins.ready.service import ReadyService

DEFAULT_ADDRESS = ":8181"
MONITOR_TYPES = ("until-ready", "continuously")


def _arg_error(line: Directive, index: int) -> CorefileError:
    """caddy's ArgErr: the last token read is the one named."""
    return arg_error(line.filename, line.arg_lines[index] if line.arg_lines else line.line,
                     line.args[-1] if line.args else line.name,
                     line.args[index] if line.args else line.name)


class ReadyDirective:
    name = "ready"
    once = True

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        if len(directive.args) > 1:
            raise _arg_error(directive, 1)
        address = directive.args[0] if directive.args else DEFAULT_ADDRESS
        continuously = False
        for option in directive.block:
            if option.name != "monitor":
                raise CorefileError(option.filename, option.line,
                                    f"ready: unknown property '{option.name}'", option.name)
            if len(option.args) != 1:
                raise _arg_error(option, 1 if option.args else 0)
            if option.args[0] not in MONITOR_TYPES:
                raise CorefileError(option.filename, option.arg_lines[0],
                                    f"ready: monitor type '{option.args[0]}' not supported",
                                    option.args[0])
            continuously = option.args[0] == "continuously"
        try:
            ready = ReadyService(address, continuously, builder.readiness)
        except ValueError as error:
            raise CorefileError(directive.filename, directive.arg_lines[0], f"ready: {error}",
                                address) from None
        builder.add_process_service(ready)
