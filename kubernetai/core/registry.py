"""Corefile directives as plugins: the contract, the registry, and the chain order rule.

A directive is found through the setuptools entry-point group `kubernetai.directives`;
our own (`kubernetai`, `errors`, `log`, `bind`) are registered there exactly like a third
party's would be, so nothing here knows their names.

**Order.** As in CoreDNS, the order in which directives act is fixed by the server (CoreDNS
compiles it from `plugin.cfg`), not by the order they are written in the Corefile. Each
plugin declares its `order`, the position of its namesake in CoreDNS's `plugin.cfg`
(`bind` 13, `errors` 20, `log` 21, `kubernetes` 44, `kubernetai` 44.5: an external plugin is
added right after `kubernetes`). Within one directive name, Corefile order is kept: several
`kubernetai` stanzas form one chain in the order written, which is kubernetai's
fallthrough order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, Protocol, runtime_checkable

from twisted.application.service import IService
from twisted.internet.interfaces import IResolver

from kubernetai.corefile.parser import CorefileError, Directive, ServerBlock

GROUP = "kubernetai.directives"


@dataclass(slots=True)
class BlockBuilder:
    """What the directives of one server block contribute, filled in as they are set up."""

    block: ServerBlock
    zones: tuple[str, ...]
    # (order, position in the Corefile, resolver): sorted into the block's chain.
    resolvers: list[tuple[float, int, IResolver]] = field(default_factory=list)
    services: list[IService] = field(default_factory=list)
    bind_addresses: list[str] = field(default_factory=list)
    query_loggers: list[Callable[..., None]] = field(default_factory=list)
    error_loggers: list[Callable[[str], None]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Directives may keep their own state here between stanzas (e.g. the stanza list).
    state: dict[str, Any] = field(default_factory=dict)

    def chain(self) -> list[IResolver]:
        return [resolver for _, _, resolver in sorted(self.resolvers, key=lambda r: r[:2])]


@runtime_checkable
class DirectivePlugin(Protocol):
    """What an entry point in `kubernetai.directives` must load to."""

    name: str
    order: float
    once: bool  # allowed only once per server block (CoreDNS's plugin.ErrOnce)

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        """Validate the directive and add what it contributes; raise CorefileError if bad."""


class Registry:
    """The directives available, discovered from entry points before any is loaded."""

    def __init__(self, points: list[EntryPoint] | None = None) -> None:
        if points is None:
            points = list(entry_points(group=GROUP))
        self._points = {point.name: point for point in sorted(points, key=lambda p: p.name)}
        self._loaded: dict[str, DirectivePlugin] = {}

    def names(self) -> list[str]:
        return list(self._points)

    def get(self, directive: Directive) -> DirectivePlugin:
        """The plugin for a directive, or a CorefileError naming the unknown directive."""
        name = directive.name
        if name not in self._loaded:
            point = self._points.get(name)
            if point is None:
                raise CorefileError(directive.filename, directive.line,
                                    f"unknown directive '{name}'", name)
            try:
                loaded = point.load()
                plugin = loaded() if isinstance(loaded, type) else loaded
            except Exception as error:  # noqa: BLE001 - a broken plugin must say which
                where = f" from {point.dist.name}" if point.dist else ""
                raise CorefileError(directive.filename, directive.line,
                                    f"directive '{name}'{where} failed to load: {error}",
                                    name) from error
            if not isinstance(plugin, DirectivePlugin):
                raise CorefileError(directive.filename, directive.line,
                                    f"entry point '{name}' ({point.value}) is not a directive "
                                    "plugin", name)
            self._loaded[name] = plugin
        return self._loaded[name]

    def set_up_block(self, block: ServerBlock, builder: BlockBuilder) -> BlockBuilder:
        """Run each directive's setup in the chain order rule (see the module docstring)."""
        seen: set[str] = set()
        ordered = []
        for position, directive in enumerate(block.directives):
            plugin = self.get(directive)
            if plugin.once and directive.name in seen:
                raise CorefileError(directive.filename, directive.line,
                                    f"this plugin can only be used once per Server Block: "
                                    f"'{directive.name}'", directive.name)
            seen.add(directive.name)
            ordered.append((plugin.order, position, plugin, directive))
        for _, _, plugin, directive in sorted(ordered, key=lambda item: item[:2]):
            plugin.setup(directive, builder)
        return builder
