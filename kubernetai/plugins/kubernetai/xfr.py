"""A stanza's zone transfer: the records CoreDNS's kubernetes plugin sends for AXFR/IXFR.

:func:`transfer` is CoreDNS 1.14's ``Kubernetes.Transfer`` (``plugin/kubernetes/xfr.go``)
over one cluster's cache. The records come in its order:

1. the zone's SOA (an IXFR whose serial is the current one gets this alone);
2. ``<zone> NS <name>`` for each distinct name of the server's own addresses (CoreDNS's
   ``nsAddrs``: the Services whose endpoints hold one of them, else ``ns.dns.<zone>``),
   then those addresses as A/AAAA records, TTL 0 (``nsAddrs`` never sets one);
3. every Service of an exposed namespace (an exposed ServiceImport in a multicluster zone),
   sorted by name, services of equal names by namespace (Go's ``sort.Slice`` leaves their
   order unspecified; this one is stable):

   * a ClusterIP, NodePort or LoadBalancer Service whose first ClusterIP is an address: an
     A/AAAA record per ClusterIP at ``<svc>.<ns>.svc.<zone>``, then per port an SRV there
     (priority 0, weight 100, target the service name) and, for a named port, the same SRV
     at ``_<name>._<proto>.<svc>.<ns>.svc.<zone>`` (lower case). A Service without ports
     has CoreDNS's sentinel port -1, written as 65535;
   * otherwise (headless, or an empty ClusterIP) its EndpointSlices, sorted by name (Go's
     informer index has no order): per ready address an A/AAAA record at the service name
     and one at ``<hostname>.<svc>.<ns>.svc.<zone>`` (the endpoint's hostname, its pod's
     name with ``endpoint_pod_names``, else the address with dashes), then per named port
     of the slice an SRV at ``_<name>._<proto>.<svc>...`` to that hostname, weight
     ``floor(100 / n)`` (at least 1) for the slice's n ready addresses;
   * an ExternalName: a CNAME to its target, unless the target is an IP address;

4. the SOA again.

Not in a transfer, as in CoreDNS: pod records, ``ignore empty_service``, external IPs, the
zonal names of ``zonal``, reverse names. Every record has the stanza TTL (the SOA its own,
``min(ttl, 300)``, and the glue 0). The serial is the cache's (the last DNS-visible change
to its Services, EndpointSlices, Pods or Namespaces, in Unix seconds); CoreDNS builds the
SOA without a request, so a multicluster zone's transfer carries it too, not the serial its
SOA queries answer with.

The zone is the name the client asked for, lower case: like CoreDNS, any name at or below
one of the stanza's zones is a zone to transfer (its SOA and names rooted there).

Consistency: the records are read from a snapshot taken when iteration starts (the sorted
Services and their slice tuples, all immutable), so a transfer sent over many turns of the
reactor is one state of the cluster even while the cache changes under it.
"""

from __future__ import annotations

import math
import socket
from typing import Any, Iterator

from twisted.names import dns

from kubernetai.plugins.kubernetai.answerwire import AddressRR, soa_rr
from kubernetai.plugins.kubernetai.cache import ClusterCache
from kubernetai.plugins.kubernetai.records import AnswerOptions, endpoint_hostname

__all__ = ["ZoneTransfer", "transfer", "srv_weight"]

_IN = dns.IN
_V4MAPPED = b"\x00" * 10 + b"\xff\xff"
_ADDRESS_TYPES = frozenset({"ClusterIP", "NodePort", "LoadBalancer"})
_EXTERNAL_NAME = "ExternalName"


def srv_weight(count: int) -> int:
    """CoreDNS's ``calcSRVWeight``: ``floor((100 / (100 * count)) * 100)`` in float64,
    at least 1."""
    weight = math.floor((100.0 / float(100 * count)) * 100) if count > 0 else 0
    return weight if weight > 0 else 1


def _packed(host: str) -> tuple[int, bytes] | None:
    """(A|AAAA, packed address) for an IP (an IPv4-mapped IPv6 address is an A record,
    as Go's ``To4`` makes it); None for anything else (Go's ``ParseIP`` is nil)."""
    if ":" in host:
        try:
            packed = socket.inet_pton(socket.AF_INET6, host)
        except (OSError, ValueError):
            return None
        if packed[:12] == _V4MAPPED:
            return dns.A, packed[12:]
        return dns.AAAA, packed
    try:
        return dns.A, socket.inet_pton(socket.AF_INET, host)
    except (OSError, ValueError):
        return None


def _wire(name: str) -> bytes:
    """A fully-qualified text name as Twisted wants it: bytes, no trailing dot."""
    return name[:-1].encode("utf-8") if name != "." else b""


class ZoneTransfer:
    """One transfer of ``zone`` from one stanza: ``serial`` is the zone's current serial;
    iterating gives the records, SOA first and last (the SOA alone when ``requested``, an
    IXFR's serial, is the current one). Iterate it in the reactor turn it was made in."""

    __slots__ = ("cache", "options", "zone", "requested")

    def __init__(self, cache: ClusterCache, options: AnswerOptions, zone: str,
                 requested: int) -> None:
        self.cache = cache
        self.options = options
        self.zone = zone
        self.requested = requested

    @property
    def serial(self) -> int:
        """The zone's SOA serial now (what a NOTIFY follows)."""
        return self.cache.serial & 0xFFFFFFFF

    def __iter__(self) -> Iterator[Any]:
        return self._records()

    def _records(self) -> Iterator[Any]:
        serial = self.serial
        options = self.options
        soa = soa_rr(_wire(self.zone), options.ttl, serial)
        if self.requested != 0 and self.requested == serial:
            yield soa
            return
        # The snapshot: taken now, read below over as many turns as the reader needs.
        services = self._services()
        glue = ns_addresses(self.cache, options, self.zone)
        yield soa
        zone = _wire(self.zone)
        ttl = options.ttl
        named: set[str] = set()
        for name, _ in glue:
            if name not in named:
                named.add(name)
                yield dns.RRHeader(zone, dns.NS, _IN, ttl, dns.Record_NS(_wire(name), ttl),
                                   True)
        for name, ip in glue:
            found = _packed(ip)
            if found is not None:
                yield AddressRR(_wire(name), found[0], found[1], 0)
        suffix = ".svc." + (self.zone if self.zone != "." else "")
        pod_names = options.endpoint_pod_names
        imported = options.is_multicluster(self.zone)
        for svc, slices in services:
            yield from _service_records(svc, slices, svc.name + "." + svc.namespace + suffix,
                                        ttl, pod_names, imported)
        yield soa

    def _services(self) -> list[tuple[Any, tuple[Any, ...]]]:
        """The exposed Services (ServiceImports in a multicluster zone) sorted as CoreDNS
        sorts them, each with its EndpointSlices, sorted by name, when its records come
        from them (see :func:`_service_records`)."""
        cache = self.cache
        options = self.options
        imported = options.is_multicluster(self.zone)
        held: Any = cache.service_imports if imported else cache.services
        by_service: Any = cache.mc_endpoints if imported else cache.endpoints
        allowed = options.namespaces
        namespaces = cache.namespaces
        exposed = [svc for svc in held.values()
                   if (allowed is None or svc.namespace in allowed)
                   and svc.namespace in namespaces]
        exposed.sort(key=lambda svc: (svc.name, svc.namespace))
        empty: tuple[Any, ...] = ()
        out = []
        for svc in exposed:
            slices = empty
            if _kind(svc, imported) == _BY_ENDPOINTS:
                slices = tuple(sorted(by_service.get(svc.key, empty), key=lambda es: es.name))
            out.append((svc, slices))
        return out


_BY_ADDRESS, _BY_ENDPOINTS, _BY_NAME, _NOTHING = range(4)


def _kind(svc: Any, imported: bool) -> int:
    """Where xfr.go takes a service's records from: its ClusterIPs (the first is an
    address), its endpoints (headless, or no address), its ExternalName; or nothing (a
    Service type it does not list). A ServiceImport has no type to switch on."""
    if not imported:
        if svc.type == _EXTERNAL_NAME:
            return _BY_NAME
        if svc.type not in _ADDRESS_TYPES:
            return _NOTHING
    ips = svc.cluster_ips
    return _BY_ADDRESS if ips and _packed(ips[0]) is not None else _BY_ENDPOINTS


def _service_records(svc: Any, slices: tuple[Any, ...], name: str, ttl: int,
                     pod_names: bool, imported: bool) -> Iterator[Any]:
    """One service's records (the loop body of ``transferServices`` and
    ``transferMultiClusterServices``); ``name`` is its fully-qualified name."""
    kind = _kind(svc, imported)
    owner = _wire(name)
    if kind == _BY_NAME:
        target = svc.external_name
        if _packed(target) is None:
            target = target if target.endswith(".") else target + "."
            yield dns.RRHeader(owner, dns.CNAME, _IN, ttl, dns.Record_CNAME(_wire(target), ttl),
                               True)
        return
    if kind == _BY_ADDRESS:
        host = b""                    # the name of the last address record (Go's quirk)
        for ip in svc.cluster_ips:
            found = _packed(ip)
            host = b""
            if found is not None:
                yield AddressRR(owner, found[0], found[1], ttl)
                host = owner
        for port in svc.ports:
            yield _srv(owner, 100, port.port, host, ttl)
            if port.name:
                yield _srv(_port_name(port, name), 100, port.port, host, ttl)
        return
    for es in slices:
        weight = srv_weight(len(es.addresses))
        for address in es.addresses:
            found = _packed(address.ip)
            hostname = b""
            if found is not None:
                yield AddressRR(owner, found[0], found[1], ttl)
                hostname = _wire(endpoint_hostname(address, pod_names) + "." + name)
                yield AddressRR(hostname, found[0], found[1], ttl)
            for port in es.ports:
                if port.name:
                    yield _srv(_port_name(port, name), weight, port.port, hostname, ttl)


def _port_name(port: Any, name: str) -> bytes:
    return _wire(f"_{port.name.lower()}._{port.protocol.lower()}.{name}")


def _srv(owner: bytes, weight: int, port: int, target: bytes, ttl: int) -> dns.RRHeader:
    return dns.RRHeader(owner, dns.SRV, _IN, ttl,
                        dns.Record_SRV(0, weight, port & 0xFFFF, target, ttl), True)


def ns_addresses(cache: ClusterCache, options: AnswerOptions, zone: str
                 ) -> list[tuple[str, str]]:
    """(fully-qualified name, address) of this server in ``zone`` (CoreDNS's
    ``nsAddrs(false, false, zone)``): for each of its own addresses, the Services whose
    EndpointSlices hold it (a ClusterIP Service by name, per ClusterIP; a headless one per
    endpoint address, at its hostname); none found: ``ns.dns.<zone>`` per address."""
    suffix = "." + zone if zone != "." else "."
    out: list[tuple[str, str]] = []
    found = False
    if not options.noendpoints:
        for ip in options.ns_addresses:
            for es in cache.slices_for_ip(ip):
                found = True
                svc = cache.services.get(es.service_key)
                if svc is None:
                    continue
                name = svc.name + "." + svc.namespace + ".svc" + suffix
                if svc.headless:
                    for address in es.addresses:
                        out.append((endpoint_hostname(address, options.endpoint_pod_names)
                                    + "." + name, address.ip))
                else:
                    out.extend((name, cluster_ip) for cluster_ip in svc.cluster_ips)
    if not found:
        out = [("ns.dns" + suffix, ip) for ip in options.ns_addresses]
    return out


def transfer(cache: ClusterCache, options: AnswerOptions, zone: str,
             serial: int) -> ZoneTransfer:
    """The transfer of ``zone`` (lower case, fully qualified, at or below one of the
    stanza's zones: the caller checks) for an AXFR (``serial`` 0) or an IXFR from
    ``serial``."""
    return ZoneTransfer(cache, options, zone, serial)
