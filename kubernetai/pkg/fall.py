"""Fallthrough zones: which names a plugin hands on instead of answering NXDOMAIN.

CoreDNS plugins with a ``fallthrough [ZONES...]`` option (kubernetes, hosts, file, ...)
share ``plugin/pkg/fall``; the stanza parser builds a :class:`Fall` and the resolver asks it
about each name error.  It is plain data so that a stanza's configuration can be compared
with the one a reload brings (see ``StanzaConfig.fingerprint``).
"""

from __future__ import annotations

from dataclasses import dataclass

from kubernetai.pkg.dnsname import ascii_lower, fqdn, in_zone, plain_dots

__all__ = ["Fall"]


@dataclass(frozen=True, slots=True)
class Fall:
    """The zones for which a name error falls through to the next stanza or plugin.

    ``zones`` empty: never fall through (CoreDNS ``fall.Zero``, no ``fallthrough`` line).
    ``(".",)``: every name (``fallthrough`` without arguments, ``fall.Root``).  Zones are
    lower-case FQDNs, as the Corefile parser normalises them.
    """

    zones: tuple[str, ...] = ()

    def through(self, qname: str) -> bool:
        """Whether ``qname`` is in one of the zones (CoreDNS ``plugin.Zones.Matches != ""``).

        ``qname`` is in presentation form (an escaped dot, ``a\\.b``, is inside a label),
        in any case, with or without its trailing dot; labels are compared whole.
        """
        if not self.zones:
            return False
        name = fqdn(plain_dots(ascii_lower(qname)))
        return any(in_zone(name, plain_dots(zone)) for zone in self.zones)
