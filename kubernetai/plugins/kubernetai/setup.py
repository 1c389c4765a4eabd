"""`kubernetai [ZONES...] { options }`: one cluster, with the options of CoreDNS's kubernetes plugin.

Each stanza becomes a `Cluster` (informers and cache, started with the server) and a
`StanzaResolver`; the stanzas of a server block join one `ResolverChain` in Corefile order,
which is the order `fallthrough` passes names along.
"""

from __future__ import annotations

from kubernetai.plugins.kubernetai.controller import Cluster
from kubernetai.corefile.parser import Directive
from kubernetai.core.registry import BlockBuilder
from kubernetai.pkg.localaddrs import server_addresses
from kubernetai.plugins.kubernetai.handler import StanzaResolver
from kubernetai.plugins.kubernetai.config import parse_stanza

STATE_KEY = "kubernetai"


class KubernetaiDirective:
    name = "kubernetai"
    order = 44.5  # right after CoreDNS's `kubernetes` (44), as an external plugin is added
    once = False

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        config = parse_stanza(directive, builder.zones)
        cluster = Cluster(config)
        resolver = StanzaResolver(cluster,
                                  ns_addresses=server_addresses(builder.bind_addresses))
        stanzas = builder.state.setdefault(STATE_KEY, [])
        builder.resolvers.append((self.order, len(stanzas), resolver))
        stanzas.append(resolver)
        builder.services.append(cluster)
        builder.warnings.extend(config.warnings)
