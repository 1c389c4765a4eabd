"""The one way a Corefile becomes what runs: parse, compile, connect.

twistd (through the supervisor), a reload, ``kubernetai check``, the demo and an embedding
application all go through :func:`load_plans` (or :func:`compile_corefile` for blocks they
parsed themselves), so a Corefile means the same everywhere and is refused with the same
file:line message.

:func:`compile_corefile` sets up every block's directives once (:mod:`kubernetai.core.registry`)
and groups the blocks into one :class:`PortPlan` per port; each block keeps its
:class:`~kubernetai.core.registry.BlockBuilder` and makes its pipeline on demand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import kubernetai.corefile as corefile
from kubernetai.core.pipeline import BlockPipeline, Stage
from kubernetai.core.plugin import position
from kubernetai.core.registry import BlockBuilder, Registry
from kubernetai.core.wirecache import WireCache, WireCacheHandler

__all__ = ["BlockPlan", "PortPlan", "compile_corefile", "connect_all", "load_plans", "plans_of",
           "process_services_of",
           "clusters_of", "warnings_for", "all_warnings"]


@dataclass(slots=True)
class BlockPlan:
    zones: tuple[str, ...]
    builder: BlockBuilder
    _pipelines: dict[int, BlockPipeline] = field(default_factory=dict)

    def pipeline(self, cache: WireCache | None = None) -> BlockPipeline:
        """The block's pipeline, with the answer cache in front of its resolvers if given
        (one per cache: a block serving several ports is one pipeline)."""
        key = id(cache)
        if key not in self._pipelines:
            extra = [] if cache is None else [
                Stage("cache", position("cache"), 0, handler=WireCacheHandler(cache),
                      implicit=True)]
            self._pipelines[key] = self.builder.pipeline(extra)
        return self._pipelines[key]


@dataclass(slots=True)
class PortPlan:
    port: int
    blocks: list[BlockPlan] = field(default_factory=list)

    def addresses(self) -> list[str]:
        """Where to listen: the union of `bind`s, or everywhere if any block has none."""
        found: list[str] = []
        for block in self.blocks:
            if not block.builder.bind_addresses:
                return [""]
            found += [a for a in block.builder.bind_addresses if a not in found]
        return found

    def clusters(self) -> list[Any]:
        """The data sources the blocks' plugins run (a kubernetai stanza's cluster)."""
        found: list[Any] = []
        for block in self.blocks:
            found += [e.source for e in block.builder.sources if e.source not in found]
        return found


def compile_corefile(blocks: Iterable[corefile.ServerBlock], *, registry: Registry | None = None,
                     port_override: int | None = None) -> list[PortPlan]:
    """Set up every block's directives once and group the blocks into one server per port.

    A block whose keys name several ports serves on each of them with the same stanzas
    (one set of informers), as CoreDNS shares one plugin instance across a block's keys.
    """
    registry = registry or Registry()
    ports: dict[int, PortPlan] = {}
    for block in blocks:
        by_port: dict[int, list[str]] = {}
        for key in block.keys:
            port = port_override if port_override is not None else key.port
            zones = by_port.setdefault(port, [])
            if key.zone not in zones:
                zones.append(key.zone)
        all_zones = tuple(dict.fromkeys(key.zone for key in block.keys))
        builder = registry.set_up_block(block, BlockBuilder(block, all_zones))
        for port, zones in by_port.items():
            plan = ports.setdefault(port, PortPlan(port))
            for zone in zones:
                if any(zone in other.zones for other in plan.blocks):
                    raise corefile.CorefileError(
                        block.filename, block.line,
                        f"cannot serve dns://{zone}:{port} - it is already defined (blocks "
                        "told apart only by bind addresses are not supported yet)", zone)
            plan.blocks.append(BlockPlan(tuple(zones), builder))
    return list(ports.values())


def all_warnings(plans: Iterable[PortPlan]) -> list[str]:
    """`warnings_for` every port, each note once (a block may serve several ports)."""
    return list(dict.fromkeys(note for plan in plans for note in warnings_for(plan)))


def warnings_for(plan: PortPlan) -> list[str]:
    """What the blocks' directives found worth saying at start-up."""
    return [note for block in plan.blocks for note in block.builder.all_warnings()]


def load_plans(path: str, *, port_override: int | None = None,
               registry: Registry | None = None, environ: Any = None) -> list[PortPlan]:
    """Parse, compile and connect the Corefile at ``path`` (blocking: files are read).

    Raises CorefileError naming file, line and token for any mistake, the API clients'
    (kubeconfig, certificates, credentials) included.
    """
    blocks = corefile.parse_file(path, environ=environ)
    if not blocks:
        raise corefile.CorefileError(str(path), 1, "no server blocks in the Corefile")
    return plans_of(blocks, port_override=port_override, registry=registry)


def plans_of(blocks: Iterable[corefile.ServerBlock], *, port_override: int | None = None,
             registry: Registry | None = None) -> list[PortPlan]:
    """Compile and connect server blocks parsed already (an embedding application's text)."""
    plans = compile_corefile(blocks, registry=registry, port_override=port_override)
    connect_all(plans)
    return plans


def connect_all(plans: list[PortPlan]) -> None:
    """Build every stanza's API client now, so connection mistakes stop start-up."""
    for plan in plans:
        for cluster in plan.clusters():
            cluster.connect()


def clusters_of(plans: list[PortPlan]) -> list[Any]:
    return list({id(c): c for plan in plans for c in plan.clusters()}.values())


def process_services_of(plans: list[PortPlan]) -> dict[Any, Any]:
    """The process's services by key, the first block naming a key winning (CoreDNS starts
    one listener per address however many blocks name it)."""
    found: dict[Any, Any] = {}
    for plan in plans:
        for block in plan.blocks:
            for service in block.builder.process_services:
                found.setdefault(service.key, service)
    return found
