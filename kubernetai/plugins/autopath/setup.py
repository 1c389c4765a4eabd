"""`autopath [ZONE...] RESOLV-CONF`: the directive, read as CoreDNS's autopath setup reads it.

The last argument is the search list: a resolv.conf-like file (its last ``search`` or
``domain`` line, read once here) or ``@PLUGIN``, a plugin of the same server block asked
for each query (``@kubernetai``: the stanzas, in Corefile order). The arguments before it
are the zones (default: the server block's). As CoreDNS, ``@PLUGIN`` naming a plugin the
block does not have leaves the step doing nothing (here with a start-up warning), and
naming one that cannot give a search path is an error.
"""

from __future__ import annotations

import os

from kubernetai.core.registry import BlockBuilder
from kubernetai.corefile import CorefileError, Directive, origins
from kubernetai.pkg.gosyntax import quote
from kubernetai.pkg.resolvconf import read_search, valid_domain
from kubernetai.plugins.autopath.handler import AutopathHandler

__all__ = ["AutopathDirective"]


def _error(directive: Directive, line: int, message: str, token: str | None) -> CorefileError:
    return CorefileError(directive.filename, line, f"plugin/autopath: {message}", token)


class AutopathDirective:
    name = "autopath"
    once = True

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        if not directive.args:
            raise _error(directive, directive.line, "no resolv-conf specified", None)
        if directive.block:
            option = directive.block[0]
            raise CorefileError(option.filename, option.line,
                                f"autopath: unknown property '{option.name}'", option.name)
        *zone_args, source = directive.args
        zones = origins(zone_args, directive.arg_lines, builder.zones,
                        lambda line, message, token: _error(directive, line, message, token))
        plugin = None
        search: list[str] = []
        if source.startswith("@"):
            plugin = source[1:]
        else:
            try:
                search = read_search(source)
            except OSError as error:
                reason = os.strerror(error.errno) if error.errno else str(error)
                raise _error(directive, directive.arg_lines[-1],
                             f"failed to parse {quote(source)}: open {source}: "
                             f"{reason[:1].lower()}{reason[1:]}", source) from None
            bad = [name for name in search if not valid_domain(name)]
            if bad:
                raise _error(directive, directive.arg_lines[-1],
                             f"search domain {quote(bad[0])} in {quote(source)} is not a "
                             "domain name", source)
            search.append("")
        handler = AutopathHandler(zones, search, plugin)
        builder.add_handler(handler)
        if plugin is not None:
            builder.add_finisher(lambda done: _find_sources(directive, handler, done))


def _find_sources(directive: Directive, handler: AutopathHandler,
                  builder: BlockBuilder) -> None:
    """Once the block is set up: the resolvers of ``@PLUGIN``, in chain order."""
    found = [stage for stage in builder.ordered() if stage.name == handler.plugin]
    if not found:
        builder.warnings.append(
            f"{directive.filename}:{directive.line}: autopath: no {handler.plugin} in this "
            f"server block: @{handler.plugin} gives no search path, autopath does nothing")
        return
    sources = [stage.resolver or stage.handler for stage in found]
    if not all(callable(getattr(source, "autopath", None)) for source in sources):
        raise _error(directive, directive.arg_lines[-1],
                     f"{handler.plugin} does not implement the AutoPather interface",
                     directive.args[-1])
    handler.sources = tuple(sources)
