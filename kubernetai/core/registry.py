"""Corefile directives as plugins: how they are found, set up, and what they contribute.

A directive is found through the setuptools entry-point group ``kubernetai.directives``;
our own (``kubernetai``, ``errors``, ``log``, ``bind``, ``whoami``) are registered there
exactly like a third party's would be, so nothing here knows their names.

Each directive's ``setup`` reads its Corefile lines and adds to the block's
:class:`BlockBuilder`: a handler for the pipeline, a resolver for the block's chain, a
data source to run (informers), listen addresses, start-up warnings. Setups run in the
pipeline order (:data:`~kubernetai.core.plugin.ORDER`), so ``bind`` is known before a
stanza that names the server's own addresses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from twisted.internet.interfaces import IResolver

from kubernetai.core.pipeline import BlockPipeline, Stage
from kubernetai.core.plugin import Handler, position
from kubernetai.corefile import CorefileError, Directive, ServerBlock

GROUP = "kubernetai.directives"


@dataclass(slots=True)
class SourceEntry:
    """A data source a plugin runs (a cluster's informers and cache), started with the
    server; ``rebind(running)`` makes the plugin use an equal source that is already
    running instead (a reload keeps warm caches)."""

    source: Any
    rebind: Callable[[Any], None]


@dataclass(slots=True)
class BlockBuilder:
    """What the directives of one server block contribute, filled in as they are set up."""

    block: ServerBlock
    zones: tuple[str, ...]
    stages: list[Stage] = field(default_factory=list)
    sources: list[SourceEntry] = field(default_factory=list)
    # Services of the whole process (an HTTP endpoint), each with a ``key``: one runs per
    # key, and a reload keeps it running (``adopt`` takes the new options).
    process_services: list[Any] = field(default_factory=list)
    bind_addresses: list[str] = field(default_factory=list)
    # Plugins that can be not ready (CoreDNS's ``Readiness``): (name, is_ready) pairs, the
    # name as `/ready` reports it. ``ready`` reads this list when it is asked, so a plugin
    # set up after it (kubernetai) is seen.
    readiness: list[tuple[str, Callable[[], bool]]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Run once every directive is set up; each returns start-up warnings about the block.
    checks: list[Callable[["BlockBuilder"], list[str]]] = field(default_factory=list)
    # Run once every directive of the block is set up, before the block is used: a plugin
    # that refers to one set up after it (`autopath @kubernetai`) finds it here, and may
    # raise a CorefileError.
    finishers: list[Callable[["BlockBuilder"], None]] = field(default_factory=list)
    # The directive being set up, and its place in the Corefile (set by the registry).
    directive: Directive | None = None
    index: int = 0
    after: str | None = None

    def add_handler(self, handler: Handler) -> None:
        """``handler`` joins the pipeline where this directive's name puts it."""
        self.stages.append(self._stage(handler=handler))

    def add_resolver(self, resolver: IResolver) -> None:
        """``resolver`` joins the block's ``ResolverChain`` where this directive's name
        puts it (several of one directive: in Corefile order)."""
        self.stages.append(self._stage(resolver=resolver))

    def add_source(self, source: Any, rebind: Callable[[Any], None]) -> None:
        self.sources.append(SourceEntry(source, rebind))

    def add_process_service(self, service: Any) -> None:
        """``service`` (an ``IService`` with ``key`` and ``adopt``) runs once per process
        per key, whichever blocks name it, and outlives reloads that keep naming it. When
        several blocks name one key, the first block's service runs and is given each
        later one through its ``absorb(other)``, if it has that method."""
        self.process_services.append(service)

    def add_ready(self, name: str, is_ready: Callable[[], bool]) -> None:
        """This plugin can be not ready: `/ready` answers 503 naming ``name`` while
        ``is_ready()`` is false."""
        self.readiness.append((name, is_ready))

    def add_check(self, check: Callable[["BlockBuilder"], list[str]]) -> None:
        self.checks.append(check)

    def add_finisher(self, finish: Callable[["BlockBuilder"], None]) -> None:
        """Call ``finish(builder)`` once every directive of the block is set up."""
        self.finishers.append(finish)

    def all_warnings(self) -> list[str]:
        return self.warnings + [note for check in self.checks for note in check(self)]

    def _stage(self, **what: Any) -> Stage:
        assert self.directive is not None, "add_* is for a directive's setup"
        name = self.directive.name
        return Stage(name, position(name, self.after), self.index, **what)

    def ordered(self) -> list[Stage]:
        """The stages in pipeline order."""
        return sorted(self.stages, key=lambda s: (s.position, s.index))

    def resolvers(self) -> list[IResolver]:
        """The block's resolvers in chain order."""
        return [s.resolver for s in self.ordered() if s.resolver is not None]

    def pipeline(self, extra: Sequence[Stage] = ()) -> BlockPipeline:
        """The block's pipeline, with ``extra`` stages the server adds (the answer cache)."""
        return BlockPipeline([*self.stages, *extra])


@runtime_checkable
class DirectivePlugin(Protocol):
    """What an entry point in ``kubernetai.directives`` must load to.

    ``name`` places it in :data:`~kubernetai.core.plugin.ORDER`; a directive CoreDNS does
    not know also sets ``after`` to the name of the plugin it follows.
    """

    name: str
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
        """Run each directive's setup, in pipeline order (Corefile order within a name)."""
        seen: set[str] = set()
        ordered = []
        for index, directive in enumerate(block.directives):
            plugin = self.get(directive)
            if plugin.once and directive.name in seen:
                raise CorefileError(directive.filename, directive.line,
                                    f"this plugin can only be used once per Server Block: "
                                    f"'{directive.name}'", directive.name)
            seen.add(directive.name)
            after = getattr(plugin, "after", None)
            try:
                where = position(directive.name, after)
            except KeyError:
                raise CorefileError(directive.filename, directive.line,
                                    f"directive '{directive.name}' does not say where it goes "
                                    f"in the plugin order (an 'after' naming a known plugin)",
                                    directive.name) from None
            ordered.append((where, index, plugin, directive))
        for _, index, plugin, directive in sorted(ordered, key=lambda item: item[:2]):
            builder.directive, builder.index = directive, index
            builder.after = getattr(plugin, "after", None)
            plugin.setup(directive, builder)
        builder.directive = None
        for finish in builder.finishers:
            finish(builder)
        return builder
