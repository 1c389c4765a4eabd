"""The one way a Corefile becomes what runs: parse, compile, connect.

twistd (through the supervisor), a reload, ``kubernetai check``, the demo and an embedding
application all go through :func:`load_plans` (or :func:`compile_corefile` for blocks they
parsed themselves), so a Corefile means the same everywhere and is refused with the same
file:line message.

:func:`compile_corefile` sets up every block's directives once (:mod:`kubernetai.core.registry`)
and groups the blocks into one :class:`PortPlan` per port, and within it one
:class:`ListenGroup` per listen address (the blocks that answer there, as CoreDNS makes one
server per address); each block keeps its :class:`~kubernetai.core.registry.BlockBuilder`
and makes its pipeline on demand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import kubernetai.corefile as corefile
from kubernetai.core.pipeline import BlockPipeline, Stage
from kubernetai.core.plugin import position
from kubernetai.core.registry import BlockBuilder, Registry
from kubernetai.core.wirecache import WireCache, WireCacheHandler

__all__ = ["BlockPlan", "ListenGroup", "PortPlan", "WILDCARDS", "compile_corefile", "connect_all",
           "load_plans", "plans_of", "cache_stages", "process_services_of", "clusters_of",
           "warnings_for", "all_warnings"]


@dataclass(slots=True)
class BlockPlan:
    zones: tuple[str, ...]
    builder: BlockBuilder
    _pipelines: dict[int, BlockPipeline] = field(default_factory=dict)

    def pipeline(self, cache: WireCache | None = None) -> BlockPipeline:
        """The block's pipeline, with the answer cache in front of its resolvers if given
        (one per cache: a block serving several ports is one pipeline; its plans on each
        port share ``_pipelines``).

        One cache step, one store: a block with a `cache` directive has that plugin's step
        (made here over ``cache``, or a store of its own without one) in place of the
        implicit answer cache; it keeps the implicit one's answers too (see
        `kubernetai.plugins.cache`)."""
        key = id(cache)
        if key not in self._pipelines:
            self._pipelines[key] = BlockPipeline(cache_stages(self.builder.stages, cache))
        return self._pipelines[key]


def cache_stages(stages: list[Stage], cache: WireCache | None) -> list[Stage]:
    """``stages`` with the block's one cache step: a configured one (a stage whose handler
    has ``for_store(store)``) bound to ``cache``, else the implicit answer cache if
    ``cache`` is given."""
    out: list[Stage] = []
    configured = False
    for stage in stages:
        bind = getattr(stage.handler, "for_store", None)
        if bind is not None:
            stage = Stage(stage.name, stage.position, stage.index,
                          handler=bind(cache if cache is not None else WireCache()))
            configured = True
        out.append(stage)
    if not configured and cache is not None:
        out.append(Stage("cache", position("cache"), 0, handler=WireCacheHandler(cache),
                         implicit=True))
    return out


#: Addresses that stand for every address of the host: a socket there overlaps all others
#: of its port ("" is a block without `bind`).
WILDCARDS = frozenset({"", "0.0.0.0", "::"})


@dataclass(slots=True)
class ListenGroup:
    """One listen address of a port and the blocks that answer there.

    This is what CoreDNS makes one server of (``groupConfigsByListenAddr``): a query that
    arrives on this address is routed among these blocks only, so blocks of one port told
    apart by `bind` each answer on their own addresses. ``address`` "" is every address (a
    block without `bind`). ``shared``: the port also has other addresses overlapping this one
    (every address and a bound one), so its sockets are opened with SO_REUSEPORT and the
    kernel gives each query to the most specific socket.
    """

    port: int
    address: str
    blocks: list[BlockPlan] = field(default_factory=list)
    shared: bool = False

    @property
    def key(self) -> tuple[int, str, bool]:
        """What its sockets are: a reload keeps the sockets of an unchanged key."""
        return self.port, self.address, self.shared

    def __str__(self) -> str:
        """CoreDNS's name of the server: ``dns://:53``, ``dns://127.0.0.1:53``, ``dns://[::1]:53``."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"dns://{host}:{self.port}"


@dataclass(slots=True)
class PortPlan:
    """Every block serving on one port (each once), and the port's listen groups."""

    port: int
    blocks: list[BlockPlan] = field(default_factory=list)
    groups: list[ListenGroup] = field(default_factory=list)

    def addresses(self) -> list[str]:
        """Where to listen, in Corefile order: each block's `bind`s, "" (every address) for
        a block without."""
        return [group.address for group in self.groups]

    def clusters(self) -> list[Any]:
        """The data sources the blocks' plugins run (a kubernetai stanza's cluster)."""
        found: list[Any] = []
        for block in self.blocks:
            found += [e.source for e in block.builder.sources if e.source not in found]
        return found


def compile_corefile(blocks: Iterable[corefile.ServerBlock], *, registry: Registry | None = None,
                     port_override: int | None = None) -> list[PortPlan]:
    """Set up every block's directives once and group the blocks by port and listen address.

    A block whose keys name several ports serves on each of them with the same stanzas
    (one set of informers), as CoreDNS shares one plugin instance across a block's keys;
    a block that binds several addresses answers on each of them with one pipeline.
    Every block is set up before the listen addresses are checked, as CoreDNS runs every
    directive before it makes its servers.
    """
    registry = registry or Registry()
    blocks = list(blocks)
    builders = [registry.set_up_block(block, BlockBuilder(block, _zones(block)))
                for block in blocks]
    for block, builder in zip(blocks, builders):
        _check_bound(block, builder)
    _check_listeners(blocks, builders, port_override)
    ports: dict[int, PortPlan] = {}
    groups: dict[tuple[int, str], ListenGroup] = {}
    for block, builder in zip(blocks, builders):
        # One pipeline per block (per answer cache), whatever ports it serves: its
        # handlers are one set, as CoreDNS's plugins are one instance per block.
        pipelines: dict[int, BlockPipeline] = {}
        for port, zones in _zones_by_port(block, port_override).items():
            plan = ports.setdefault(port, PortPlan(port))
            served = BlockPlan(tuple(zones), builder, pipelines)
            plan.blocks.append(served)
            for address in _hosts(builder):
                group = groups.get((port, address))
                if group is None:
                    group = groups[port, address] = ListenGroup(port, address)
                    plan.groups.append(group)
                group.blocks.append(served)
    for plan in ports.values():
        shared = len(plan.groups) > 1 and any(g.address in WILDCARDS for g in plan.groups)
        for group in plan.groups:
            group.shared = shared
    return list(ports.values())


def _zones(block: corefile.ServerBlock) -> tuple[str, ...]:
    return tuple(dict.fromkeys(key.zone for key in block.keys))


def _hosts(builder: BlockBuilder) -> list[str]:
    """A block's listen hosts, as CoreDNS's ``ListenHosts``: its binds, or "" (everywhere)."""
    return list(builder.bind_addresses) or [""]


def _check_bound(block: corefile.ServerBlock, builder: BlockBuilder) -> None:
    """A block whose `bind` lines leave no address (interfaces without one, everything
    excepted) is refused: CoreDNS would start without serving it, which nothing says."""
    binds = [d for d in block.directives if d.name == "bind"]
    if binds and not builder.bind_addresses:
        raise corefile.CorefileError(binds[0].filename, binds[0].line,
                                     "bind: no address to listen on (the interfaces named have "
                                     "none, or every address is excepted)", binds[0].name)


def _zones_by_port(block: corefile.ServerBlock, port_override: int | None) -> dict[int, list[str]]:
    """A block's zones on each of its ports; keys that differ only in a port the override
    replaces become one."""
    by_port: dict[int, list[str]] = {}
    for key in block.keys:
        zones = by_port.setdefault(_port(key, port_override), [])
        if key.zone not in zones:
            zones.append(key.zone)
    return by_port


def _port(key: corefile.ZoneAddress, port_override: int | None) -> int:
    return port_override if port_override is not None else key.port


def _check_listeners(blocks: list[corefile.ServerBlock], builders: list[BlockBuilder],
                     port_override: int | None) -> None:
    """Refuse a zone served twice on one address and port, and a zone served on one port
    both bound and unbound, with CoreDNS's messages (``validateZonesAndListeningAddresses``):
    which block would answer a query for it on the bound address could not be told.
    Blocks without `bind` were checked by the parser already, except for duplicates the
    port override makes."""
    checker = _ZoneOverlap()
    for block, builder in zip(blocks, builders):
        written: set[corefile.ZoneAddress] = set()
        served: set[tuple[str, int]] = set()
        for key in block.keys:
            port = _port(key, port_override)
            if key in written or (key.zone, port) not in served:  # else the override merged it
                for address in _hosts(builder):
                    checker.add(block, key, _ZoneAddr(key.scheme, key.zone, port, address))
            written.add(key)
            served.add((key.zone, port))


@dataclass(frozen=True, slots=True)
class _ZoneAddr:
    """CoreDNS's ``zoneAddr``: a zone on a port, and the address it is bound to ("" for none)."""

    scheme: str
    zone: str
    port: int
    address: str

    def unbound(self) -> _ZoneAddr:
        return _ZoneAddr(self.scheme, self.zone, self.port, "")

    def __str__(self) -> str:
        bound = f" on {self.address}" if self.address else ""
        return f"{self.scheme}://{self.zone}:{self.port}{bound}"


class _ZoneOverlap:
    """CoreDNS's ``zoneOverlap``: an unbound zone and port overlaps every bound one."""

    def __init__(self) -> None:
        self._blocks: dict[_ZoneAddr, corefile.ServerBlock] = {}  # registered → its block
        self._first: dict[_ZoneAddr, _ZoneAddr] = {}  # unbound form → first registered

    def add(self, block: corefile.ServerBlock, key: corefile.ZoneAddress, zone: _ZoneAddr) -> None:
        """Register ``zone`` of ``key`` in ``block``, or raise the CorefileError CoreDNS's
        message makes, naming where the other one is."""
        problem = None
        if zone in self._blocks:
            problem = "it is already defined" + self._where(zone, block)
        else:
            other = self._overlapping(zone)
            if other is not None:
                problem = (f"zone overlap listener capacity with {other}"
                           + self._where(other, block))
        if problem is not None:
            written = key.key or str(key)
            raise corefile.CorefileError(block.filename, block.line,
                                         f"key {written!r}: cannot serve {zone} - {problem}",
                                         written)
        self._blocks[zone] = block
        self._first.setdefault(zone.unbound(), zone)

    def _where(self, zone: _ZoneAddr, block: corefile.ServerBlock) -> str:
        first = self._blocks[zone]
        return "" if first is block else f" at {first.filename}:{first.line}"

    def _overlapping(self, zone: _ZoneAddr) -> _ZoneAddr | None:
        first = self._first.get(zone.unbound())
        if first is None:
            return None
        if not zone.address:
            return first  # unbound, while the zone is bound somewhere already
        return zone.unbound() if zone.unbound() in self._blocks else None


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
    one listener per address however many blocks name it); it absorbs the later ones (a
    `ready` of two blocks watches both blocks' plugins)."""
    found: dict[Any, Any] = {}
    for plan in plans:
        for block in plan.blocks:
            for service in block.builder.process_services:
                first = found.setdefault(service.key, service)
                if first is not service and hasattr(first, "absorb"):
                    first.absorb(service)
    return found
