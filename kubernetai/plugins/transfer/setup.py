"""`transfer [ZONES...] { to ADDRESS...; source ADDRESS }`: the directive, read as CoreDNS
1.14.7's *transfer* setup reads it, with its messages.

Each `transfer` line is one entry of the block's one step (Corefile order). Without ZONES
it covers the server block's zones. ``to`` (required, may repeat) names who may transfer
and where NOTIFY goes: ``*`` (anyone; no NOTIFY) or an IP address, with a port or the
default 53. ``source`` is the address NOTIFY is sent from.

CoreDNS wraps some of these errors twice (``plugin/transfer: plugin/transfer: ...``); they
are kept so. Stricter than CoreDNS: a zone argument it cannot read is refused (CoreDNS
drops it silently).
"""

from __future__ import annotations

from kubernetai.core.registry import BlockBuilder
from kubernetai.corefile import CorefileError, Directive, arg_error, origins
from kubernetai.pkg.gosyntax import quote
from kubernetai.plugins.transfer.handler import TransferHandler, Xfr
from kubernetai.plugins.transfer.hostport import host_port, is_ip
from kubernetai.plugins.transfer.notify import Notifier

__all__ = ["TransferDirective", "DEFAULT_PORT"]

PREFIX = "plugin/transfer: "
#: CoreDNS's ``transport.Port``.
DEFAULT_PORT = "53"


def _error(line: Directive, at: int, message: str, token: str | None, *,
           twice: bool = False) -> CorefileError:
    """``plugin/transfer: MESSAGE`` (``plugin.Error``), or with the prefix twice for the
    errors CoreDNS's parser wraps itself before its setup wraps them again."""
    prefix = PREFIX * 2 if twice else PREFIX
    return CorefileError(line.filename, at, prefix + message, token)


class TransferDirective:
    name = "transfer"
    once = False  # every line is one more entry of the block's one step

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        xfr = self.parse(directive, builder)
        for stage in builder.stages:
            if isinstance(stage.handler, TransferHandler):  # an earlier line of this block
                stage.handler.add(xfr)
                return
        handler = TransferHandler()
        handler.add(xfr)
        builder.add_handler(handler)
        builder.add_finisher(lambda done: _find_sources(handler, done))
        builder.add_process_service(Notifier(handler))

    @staticmethod
    def parse(directive: Directive, builder: BlockBuilder) -> Xfr:
        """One `transfer` line and its block."""
        zones = origins(directive.args, directive.arg_lines, builder.zones,
                        lambda line, message, token: _error(directive, line, message, token))
        to: list[str] = []
        source: str | None = None
        for option in directive.block:
            args = option.args
            if option.name == "to":
                if not args:
                    raise arg_error(option.filename, option.line, option.name, option.name,
                                    PREFIX)
                for arg, at in zip(args, option.arg_lines):
                    if arg == "*":
                        to.append(arg)
                        continue
                    try:
                        to.append(host_port(arg, DEFAULT_PORT))
                    except ValueError as error:
                        raise _error(option, at, str(error), arg) from None
            elif option.name == "source":
                if len(args) != 1:
                    last = args[-1] if args else option.name
                    at = option.arg_lines[-1] if args else option.line
                    raise arg_error(option.filename, at, last, last, PREFIX)
                if source is not None:
                    raise _error(option, option.arg_lines[0], "source already specified",
                                 args[0], twice=True)
                if not is_ip(args[0]):
                    raise _error(option, option.arg_lines[0],
                                 f"invalid source address {quote(args[0])}", args[0], twice=True)
                source = args[0]
            else:
                raise _error(option, option.line, f"unknown property {quote(option.name)}",
                             option.name, twice=True)
        if not to:
            raise _error(directive, directive.line, "'to' is required", directive.name,
                         twice=True)
        return Xfr(zones, tuple(to), source)


def _find_sources(handler: TransferHandler, builder: BlockBuilder) -> None:
    """Once the block is set up: its resolvers and handlers that can send a zone (a
    ``transfer`` method), in pipeline order (the chain's order for the stanzas)."""
    handler.sources = tuple(
        part for stage in builder.ordered()
        for part in (stage.resolver, stage.handler)
        if part is not None and part is not handler
        and callable(getattr(part, "transfer", None)))
