"""`health [ADDRESS] { lameduck DURATION }`: the directive, as CoreDNS's."""

from __future__ import annotations

from kubernetai.core.registry import BlockBuilder
from kubernetai.corefile import CorefileError, Directive, arg_error
from kubernetai.pkg.gosyntax import parse_duration
from kubernetai.plugins.health.service import HealthService

DEFAULT_ADDRESS = ":8080"


class HealthDirective:
    name = "health"
    once = True

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        if len(directive.args) > 1:
            raise arg_error(directive.filename, directive.arg_lines[1], directive.args[0],
                            directive.args[1])
        address = directive.args[0] if directive.args else DEFAULT_ADDRESS
        lameduck = 0.0
        for option in directive.block:
            if option.name != "lameduck":
                raise CorefileError(option.filename, option.line,
                                    f"health: unknown property '{option.name}'", option.name)
            if len(option.args) != 1:
                raise arg_error(option.filename, option.line, "lameduck", option.name)
            try:
                lameduck = parse_duration(option.args[0])
            except ValueError as error:
                raise CorefileError(option.filename, option.arg_lines[0],
                                    "health: unable to parse lameduck duration value: "
                                    f"'{option.args[0]}' : {error}", option.args[0]) from None
        try:
            health = HealthService(address, lameduck)
        except ValueError as error:
            raise CorefileError(directive.filename, directive.arg_lines[0], f"health: {error}",
                                address) from None
        builder.add_process_service(health)
