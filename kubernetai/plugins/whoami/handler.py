"""The `whoami` step: the client's address and port, as CoreDNS's whoami answers them.

The reply is NOERROR with AA, an empty answer section and, in the additional section, an
A (or AAAA) record for the client's address under the query name, then an SRV record
``_udp.NAME`` / ``_tcp.NAME`` whose port is the client's port and whose target is the root.
Names are lower case, TTLs 0. It answers everything that reaches it, so it is the end of
a pipeline; its answers depend on the client and are never cached.
"""

from __future__ import annotations

import ipaddress

from twisted.names import dns

from kubernetai.core.plugin import Next, Result
from kubernetai.core.request import Reply, Request


def _address_record(owner: bytes, host: str) -> dns.RRHeader:
    address = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket's IPv4 client is IPv4
    if address.version == 4:
        return dns.RRHeader(owner, dns.A, dns.IN, 0, dns.Record_A(str(address), 0), auth=True)
    return dns.RRHeader(owner, dns.AAAA, dns.IN, 0, dns.Record_AAAA(str(address), 0),
                        auth=True)


class WhoamiHandler:
    name = "whoami"

    def serve(self, request: Request, next: Next) -> Result:
        host, port = request.peer()
        owner = request.qname.lower()
        service = b"_" + request.transport.encode() + (b"." + owner if owner else b"")
        srv = dns.RRHeader(service, dns.SRV, dns.IN, 0,
                           dns.Record_SRV(0, 0, port, b"", 0), auth=True)
        return Reply(dns.OK, True, (), (), (_address_record(owner, host), srv))
