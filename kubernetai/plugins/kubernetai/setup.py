"""`kubernetai [ZONES...] { options }`: one cluster, the options of CoreDNS's kubernetes plugin.

Each stanza becomes a `Cluster` (informers and cache, a data source started with the
server) and a `StanzaResolver` in the block's chain; several stanzas are asked in
Corefile order, which is the order `fallthrough` passes names along.
"""

from __future__ import annotations

from typing import Any

from kubernetai.core.registry import BlockBuilder
from kubernetai.corefile import Directive
from kubernetai.pkg.dnsname import in_zone
from kubernetai.pkg.localaddrs import server_addresses
from kubernetai.pkg.resolvconf import read_search, valid_domain
from kubernetai.plugins.kubernetai.config import parse_stanza
from kubernetai.plugins.kubernetai.controller import Cluster
from kubernetai.plugins.kubernetai.handler import StanzaResolver
from kubernetai.plugins.kubernetai.metrics import stanza_name


class KubernetaiDirective:
    name = "kubernetai"
    once = False

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        config = parse_stanza(directive, builder.zones)
        cluster = Cluster(config)
        resolver = StanzaResolver(cluster,
                                  ns_addresses=server_addresses(builder.bind_addresses))
        resolver.host_search = host_search()
        builder.add_resolver(resolver)
        builder.add_source(cluster, resolver.use_cluster)
        # Each stanza is ready on its own, so `/ready` names the cluster that is not.
        builder.add_ready(ready_name(config),
                          lambda: resolver.cluster.ready())  # the running one after a reload
        builder.warnings.extend(config.warnings)
        if not any(check is chain_warnings for check in builder.checks):
            builder.add_check(chain_warnings)


#: Where the host's search list is read, once per stanza set up (CoreDNS reads it at
#: parse time too); a test may point it elsewhere.
RESOLV_CONF = "/etc/resolv.conf"


def host_search() -> tuple[str, ...]:
    """The host's search list for autopath (none if the file cannot be read, as CoreDNS)."""
    try:
        found = read_search(RESOLV_CONF)
    except OSError:
        return ()
    return tuple(name for name in found if valid_domain(name))


def ready_name(config: Any) -> str:
    """How `/ready` names a stanza: the plugin, then where the stanza is written and its
    zones (several stanzas often share a zone)."""
    return f"kubernetai({stanza_name(config)})"


def chain_warnings(builder: BlockBuilder) -> list[str]:
    """Configurations CoreDNS would answer SERVFAIL for, worth saying at start-up."""
    stages = builder.ordered()
    stanzas = [s for s in stages if isinstance(s.resolver, StanzaResolver)]
    if not stanzas or stages[-1] is not stanzas[-1]:
        return []  # something follows the last stanza
    notes = []
    last = stanzas[-1].resolver.cluster.config  # type: ignore[union-attr]
    if last.fall.zones:
        notes.append(f"{last.filename}:{last.line}: kubernetai: the last stanza has "
                     "fallthrough but no plugin follows it: names it passes on are "
                     "answered SERVFAIL (plugin/kubernetai: no next plugin found)")
    if any(s.name == "rewrite" or (s.resolver is not None and s not in stanzas)
           for s in stages):
        return notes  # another resolver (hosts) may serve them, or rewrite map them
    covered = {z for s in stanzas for z in s.resolver.cluster.config.zones}  # type: ignore[union-attr]
    for zone in builder.zones:
        if not any(in_zone(zone, c) for c in covered):
            notes.append(f"{builder.block.filename}:{builder.block.line}: "
                         f"names in {zone} outside the kubernetai zones "
                         f"({', '.join(sorted(covered))}) reach no plugin and are "
                         "answered SERVFAIL")
    return notes
