"""Query name -> answer: the Kubernetes DNS schema as CoreDNS 1.14 serves it.

:func:`answer` is the whole per-query logic of one stanza, with no I/O and no
threads.  It follows CoreDNS's ``plugin/kubernetes/handler.go`` (the switch on
the query type), ``kubernetes.go`` (``Services``, ``Records``,
``findServices`` and ``findMultiClusterServices`` (one function here),
``findPods``), ``reverse.go``,
``ns.go`` and ``plugin/backend_lookup.go`` (``A``, ``AAAA``, ``SRV``,
``TXT``, ``CNAME``, ``PTR``, ``NS``, ``SOA``), including the places where
their behaviour is surprising; those are marked "CoreDNS:" below.

What the caller (the stanza resolver) decides, not this module:

* whether a query is in the stanza's zones at all, and which zone matches
  (the longest one, CoreDNS ``plugin.Zones.Matches``);
* for a name error (``Answer.name_error``): fall through if the stanza's
  ``fallthrough`` zones match the name, else SERVFAIL (with the same SOA in
  authority) if the cache has not synced, else send the NXDOMAIN as built;
* ``Answer.chase``: an ExternalName target outside the zone.  The answer
  section then ends with the CNAME(s); the caller resolves ``chase`` for
  the same type through the whole server (CoreDNS ``upstream.Lookup``) and
  appends that response's answer section (even if empty).  If the lookup
  could not be made at all, CoreDNS drops the CNAMEs and answers NODATA:
  rcode OK, no answers, authority ``(Answer.soa,)``.

Names: the owner of every record in the answer section is the query name as
the client sent it (case preserved), as are the zone labels of SRV targets,
glue and the SOA; the service/namespace/hostname labels come from the API.
Names in the returned RRHeaders are bytes without the trailing dot (Twisted's
convention); ``Answer.chase`` is text, fully qualified, spelled as in the
Service's ``externalName``.

Dependencies: every answer lists in ``Answer.deps`` the sources it read, as
``(slot, generation)`` pairs (:mod:`kubernetai.core.sources`): the cache's cells (see
:mod:`kubernetai.plugins.kubernetai.cache`) of each service, namespace and IP
it looked up (found or not), the serial cell if it carries an SOA, and the
cache itself for answers that read more than named things (the apex NS and
``ns.dns`` names).  The answer holds exactly while none of them moved.

Speed: an answer costs about 7 us to build (a ClusterIP A, a pod A, an
NXDOMAIN) and is memoised per cache while its dependencies hold (about 0.5 us
per hit), see :data:`MEMO_MAX_RECORDS`.  Memoised answers and their RRHeaders
are shared between queries and must not be modified.  The A/AAAA records and
the SOA are :mod:`~kubernetai.plugins.kubernetai.answerwire` records (owner
bytes and packed rdata, which the codec appends to the response as Twisted
would encode them), not Twisted ``RRHeader`` + ``Record`` objects; the rarer
types (SRV, PTR, TXT, NS, CNAME) still are.

Letter case: ``Answer.foldable`` says that the answer to another spelling of
the same name is this one's wire image with the question's bytes rewritten:
every name derived from the question (owners equal to it, the zone as sent)
is a compression pointer into it, and no name from the API could be
compressed into it for some other spelling (see :func:`_foldable`).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from twisted.names import dns

from kubernetai.core.sources import GENERATIONS, Deps
from kubernetai.pkg.dnsname import in_zone, is_reverse
from kubernetai.plugins.kubernetai.answerwire import (
    AddressRR,
    address_rr,
    owner_of,
    soa_names,
    soa_rr,
)
from kubernetai.plugins.kubernetai.cache import ClusterCache
from kubernetai.plugins.kubernetai.objects import EndpointAddress
from kubernetai.plugins.kubernetai.qname import InvalidRequest, parse_request, trim_zone

__all__ = [
    "DNS_SCHEMA_VERSION",
    "MEMO_MAX_RECORDS",
    "Answer",
    "AnswerOptions",
    "answer",
    "endpoint_hostname",
    "extract_address_from_reverse",
    "soa",
]

DNS_SCHEMA_VERSION = b"1.1.0"
_TXT_TTL = 28800
_MAX_CNAME_CHAIN = 10
_SVC = "svc"
_POD = "pod"

_IN = dns.IN
_A = dns.A
_AAAA = dns.AAAA
_CNAME = dns.CNAME
_NAME_ERROR = "name error"  # CoreDNS errNoItems / errNsNotExposed / errInvalidRequest
_V4MAPPED = b"\x00" * 10 + b"\xff\xff"
_EMPTY: tuple = ()

#: Upper bound on the records held by one cache's answer memo; 0 disables it. Small:
#: the answer cache in front keeps the bytes of what is asked again, so the memo serves
#: what that cache does not keep, and each of its entries is four or more objects that a
#: full garbage collection walks (see kubernetai.core.sources).
MEMO_MAX_RECORDS = 4_096


@dataclass(frozen=True, slots=True)
class AnswerOptions:
    """The options of one stanza that shape its answers.

    ``zones`` and ``multicluster_zones`` are lower-case and fully qualified.
    ``namespaces`` is the ``namespaces`` option (``None`` or empty: all);
    a namespace is *exposed* when it is in that set (if given) **and** in
    the cache (the Namespace informer, filtered by ``namespace_labels``),
    as in CoreDNS ``namespace.go``.  ``ns_addresses`` are this server's own
    IPs (CoreDNS ``localIPs``: the non-loopback addresses it listens on).
    ``noendpoints`` makes every endpoint lookup empty, as if no slices were
    ever watched.  ``zonal`` enables the zone-scoped headless names (the
    slices must then be converted ``with_zones``).
    """

    zones: tuple[str, ...]
    ttl: int = 5
    pods: str = "disabled"
    endpoint_pod_names: bool = False
    ignore_empty_service: bool = False
    noendpoints: bool = False
    multicluster_zones: tuple[str, ...] = ()
    ns_addresses: tuple[str, ...] = ()
    namespaces: frozenset[str] | None = None
    zonal: bool = False
    primary_zone: str = field(init=False, repr=False, compare=False)
    _mc_zones: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.pods not in ("disabled", "insecure", "verified"):
            raise ValueError(f"pods must be disabled, insecure or verified, not {self.pods!r}")
        primary = next((z for z in self.zones if not is_reverse(z)), None)
        if primary is None:
            raise ValueError("non-reverse zone name must be used")
        object.__setattr__(self, "primary_zone", primary)
        object.__setattr__(
            self,
            "_mc_zones",
            frozenset(z for z in self.zones if _in_any(z, self.multicluster_zones)),
        )
        canon = []
        for ip in self.ns_addresses:
            addr = ipaddress.ip_address(ip)
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            canon.append(str(addr))
        object.__setattr__(self, "ns_addresses", tuple(canon))
        if self.namespaces is not None and not self.namespaces:
            object.__setattr__(self, "namespaces", None)

    def is_multicluster(self, zone: str) -> bool:
        """True when ``zone`` is at or below one of the multicluster zones."""
        if zone in self._mc_zones:
            return True
        return bool(self.multicluster_zones) and _in_any(zone, self.multicluster_zones)


def _in_any(name: str, zones: tuple[str, ...]) -> bool:
    return any(in_zone(name, z) for z in zones)


class Answer(NamedTuple):
    """What the stanza answers; see the module docstring for the caller's part.

    ``rcode`` is ``dns.OK``, ``dns.ENAME`` (NXDOMAIN) or ``dns.EREFUSED``
    (zone transfers).  Negative answers (NXDOMAIN and NODATA) carry the zone
    SOA in ``authority``; ``soa`` is that same record, also set when
    ``chase`` is (for the NODATA the caller sends if the chase fails).

    A named tuple, immutable and made in a fraction of a frozen dataclass's time
    (one is made per uncached answer).
    """

    rcode: int
    answers: tuple[dns.RRHeader, ...]
    authority: tuple[dns.RRHeader, ...]
    additional: tuple[dns.RRHeader, ...]
    name_error: bool
    chase: str | None = None
    soa: dns.RRHeader | None = None
    deps: Deps = ()
    foldable: bool = False


_REFUSED = Answer(dns.EREFUSED, (), (), (), False)


def _bname(name: str) -> bytes:
    """A fully-qualified text name as Twisted wants it: bytes, no trailing dot."""
    return name[:-1].encode("latin-1") if name != "." else b""


def soa(options: AnswerOptions, zone: str, serial: int) -> dns.RRHeader:
    """The SOA record of ``zone`` (as the client spelled it, fully qualified).

    MNAME ``ns.dns.<zone>``, RNAME ``hostmaster.<zone>``, refresh 7200,
    retry 1800, expire 86400, minimum = the stanza TTL; the record's own
    TTL is ``min(ttl, 300)`` (CoreDNS ``plugin.SOA``).
    """
    suffix = "." + zone if zone != "." else "."
    ttl = options.ttl
    return dns.RRHeader(
        _bname(zone),
        dns.SOA,
        _IN,
        min(ttl, 300),
        dns.Record_SOA(
            mname=_bname("ns.dns" + suffix),
            rname=_bname("hostmaster" + suffix),
            serial=serial & 0xFFFFFFFF,
            refresh=7200,
            retry=1800,
            expire=86400,
            minimum=ttl,
            ttl=min(ttl, 300),
        ),
        True,
    )


def endpoint_hostname(addr: EndpointAddress, endpoint_pod_names: bool) -> str:
    """The first label of an endpoint's name (CoreDNS ``endpointHostname``).

    Its ``hostname``; else, with ``endpoint_pod_names``, the pod name; else
    the IP with dashes (``10-0-0-1``; ``fd00--1``, and a trailing ``-`` of
    an IPv6 address becomes ``-0``).
    """
    if addr.hostname:
        return addr.hostname
    if endpoint_pod_names and addr.target_ref_name:
        return addr.target_ref_name
    ip = addr.ip
    if "." in ip:
        return ip.replace(".", "-")
    if ":" in ip:
        h = ip.replace(":", "-")
        return h + "0" if h[-1] == "-" else h
    return ""


def _classify(host: str) -> tuple[int, str | None]:
    """(A|AAAA, address) for an IP, (CNAME, None) for a name (CoreDNS ``HostType``).

    An IPv4-mapped IPv6 address is an A record, as Go's ``To4`` makes it.
    """
    kind, packed = _classify_packed(host)
    if packed is None:
        return kind, None
    if kind == _A and ":" in host:
        return _A, socket.inet_ntop(socket.AF_INET, packed)
    return kind, host


def _classify_packed(host: str) -> tuple[int, bytes | None]:
    """:func:`_classify` with the address packed (4 or 16 bytes), for the record itself."""
    if ":" in host:
        try:
            packed = socket.inet_pton(socket.AF_INET6, host)
        except (OSError, ValueError):
            return _CNAME, None
        if packed[:12] == _V4MAPPED:
            return _A, packed[12:]
        return _AAAA, packed
    try:
        return _A, socket.inet_pton(socket.AF_INET, host)
    except (OSError, ValueError):
        return _CNAME, None


def _address_rr(owner: bytes, kind: int, addr: str, ttl: int) -> dns.RRHeader:
    # Pre-encoded (answerwire): an RRHeader to its readers, its bytes written directly.
    return address_rr(owner, kind, addr, ttl)  # type: ignore[return-value]


def extract_address_from_reverse(name: str) -> str:
    """The IP of a full reverse name, or ``""`` (CoreDNS ``ExtractAddressFromReverse``)."""
    if name.endswith(".in-addr.arpa."):
        labels = name[:-14].split(".")
        labels.reverse()
        ip = ".".join(labels)
        try:
            socket.inet_pton(socket.AF_INET, ip)
        except (OSError, ValueError):
            return ""
        return ip
    if name.endswith(".ip6.arpa."):
        labels = name[:-10].split(".")
        labels.reverse()
        groups = ["".join(labels[i * 4 : i * 4 + 4]) for i in range(len(labels) // 4)]
        try:
            addr = ipaddress.IPv6Address(":".join(groups))
        except ValueError:
            return ""
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return addr.compressed
    return ""


# --------------------------------------------------------------------------
# The per-query state


class _Q:
    """One query: the cache, the options, the zone (lower-case and as sent), and the
    sources read so far (slot -> its generation when read, see
    :mod:`kubernetai.core.sources`)."""

    __slots__ = ("cache", "opts", "zone", "zone_sent", "suffix", "mc", "ttl", "pod_names",
                 "zonal", "deps")

    def __init__(self, cache: ClusterCache, opts: AnswerOptions, zone: str, zone_sent: str):
        self.cache = cache
        self.opts = opts
        self.zone = zone
        self.zone_sent = zone_sent
        self.suffix = "." + zone_sent if zone_sent != "." else "."
        self.mc = opts.is_multicluster(zone)
        self.ttl = opts.ttl
        self.pod_names = opts.endpoint_pod_names
        self.zonal = opts.zonal
        self.deps: dict[int, int] = {}

    def need(self, key: tuple[str, ...]) -> None:
        """The answer reads ``key`` (found or not)."""
        slot = self.cache.cells.slot(key)
        self.deps[slot] = GENERATIONS[slot]

    def need_all(self) -> None:
        """The answer reads more than named things: any change may change it."""
        slot = self.cache.everything.slot
        self.deps[slot] = GENERATIONS[slot]

    def exposed(self, namespace: str) -> bool:
        allowed = self.opts.namespaces
        if allowed is not None and namespace not in allowed:
            return False
        self.need(("ns", namespace))
        return namespace in self.cache.namespaces

    def soa(self) -> dns.RRHeader:
        # One SOA record per zone spelling, shared while the serial holds.
        cache = self.cache
        slot = cache.serial_cell.slot
        self.deps[slot] = GENERATIONS[slot]
        serial = int(cache.modified_multicluster if self.mc else cache.modified)
        key = ("soa", id(self.opts), self.zone_sent)
        hit = cache.memo.get(key)
        if hit is not None and hit[0] is self.opts and hit[3] == serial:
            return hit[1]  # type: ignore[no-any-return]
        rr: dns.RRHeader = soa_rr(_bname(self.zone_sent), self.opts.ttl,  # type: ignore[assignment]
                                  serial)
        if MEMO_MAX_RECORDS > 0:
            _memo_put(cache, key, (self.opts, rr, 1, serial))
        return rr


# A "service" here is CoreDNS's msg.Service reduced to what the kubernetes
# backend fills in: (host, port, rel) where host is an IP or a name, port is
# -1 for "no port", and rel is the record's name without the zone
# ("svc.ns.svc", "host.svc.ns.svc", "host.cluster.svc.ns.svc").


def _match_port(req_port: str, req_proto: str, p) -> bool:
    if req_port and req_port != p.name and req_port != p.name.lower():
        return False
    if req_proto and req_proto != p.protocol.lower():
        return False
    return True


def _endpoint_targets(q: _Q, r, svc: Any, slices, topo: str) -> list:
    """(ip, port, rel) for every matching ready address x matching port of ``slices``.

    In a multicluster zone the slice's cluster id sits between the host and the
    service (``host.cluster.svc.ns.svc``), and a name with an endpoint part only
    matches the slices of its cluster.  ``topo`` keeps the addresses of one
    topology zone (zonal names; never set in a multicluster zone).
    """
    out: list = []
    tail = "." + svc.name + "." + svc.namespace + ".svc"
    port, proto, endpoint, cluster = r.port, r.protocol, r.endpoint, r.cluster
    mc = q.mc
    pod_names = q.pod_names
    for es in slices:
        if mc and endpoint and cluster != es.cluster_id and cluster != es.cluster_id.lower():
            continue
        ports = [p for p in es.ports if _match_port(port, proto, p)]
        if not ports:
            continue
        mid = "." + es.cluster_id + tail if mc else tail
        for a in es.addresses:
            if topo and a.zone != topo:
                continue
            host = endpoint_hostname(a, pod_names)
            if endpoint and endpoint != host and endpoint != host.lower():
                continue
            rel = host + mid
            for p in ports:
                out.append((a.ip, p.port, rel))
    return out


def _find_services(q: _Q, r) -> tuple[list, str | None]:
    """CoreDNS ``findServices`` and, in a multicluster zone, ``findMultiClusterServices``.

    The same walk over either the Services and their EndpointSlices or the
    ServiceImports and their multicluster slices; only a Service can be an
    ExternalName, only a multicluster slice adds its cluster to the names.
    """
    if not r.service:
        return [], None  # <ns>.svc.<zone>: exists (namespace is exposed), no data
    key = r.namespace + "/" + r.service
    cache = q.cache
    q.need(("svc", key))
    if q.mc:
        svc: Any = cache.service_imports.get(key)
        by_service = cache.mc_endpoints
    else:
        svc = cache.services.get(key)
        by_service = cache.endpoints
    if svc is None:
        return [], _NAME_ERROR
    slices = _EMPTY if q.opts.noendpoints else by_service.get(key, _EMPTY)
    is_external = svc.is_external_name
    headless = svc.headless
    if q.opts.ignore_empty_service and not is_external and not headless:
        if not any(es.addresses for es in slices):
            return [], _NAME_ERROR
    topo = r.zone
    if topo and not headless:
        # Zone-scoped names exist for headless services only.
        return [], _NAME_ERROR
    if is_external:
        # CoreDNS: names with an endpoint, port or protocol part skip it,
        # and an externalName that is an IP address is ignored.
        if r.endpoint or r.port or r.protocol:
            return [], _NAME_ERROR
        if _classify(svc.external_name)[0] != _CNAME:
            return [], _NAME_ERROR
        return [(svc.external_name, 0, svc.name + "." + svc.namespace + ".svc")], None
    if headless or r.endpoint:
        out = _endpoint_targets(q, r, svc, slices, topo)
        if topo:
            if not out and r.zone_prefer:
                # "prefer" falls back to every endpoint of the service.
                out = _endpoint_targets(q, r, svc, slices, "")
            # A zone-scoped name of a headless service exists even when no
            # endpoint is in that zone: NODATA, not NXDOMAIN.
            return out, None
        return out, (None if out else _NAME_ERROR)
    return _cluster_ip_targets(svc, r.port, r.protocol)


def _cluster_ip_targets(svc: Any, port: str, proto: str) -> tuple[list, str | None]:
    """(ip, port, name) per ClusterIP and matching port of a Service or ServiceImport."""
    rel = svc.name + "." + svc.namespace + ".svc"
    out: list = []
    found = False
    for p in svc.ports:
        if not _match_port(port, proto, p):
            continue
        found = True
        for ip in svc.cluster_ips:
            out.append((ip, p.port, rel))
    return out, (None if found else _NAME_ERROR)


def _find_pods(q: _Q, r) -> tuple[list, str | None]:
    mode = q.opts.pods
    if mode == "disabled":
        return [], _NAME_ERROR
    podname = r.service
    if not podname:
        return [], None  # <ns>.pod.<zone>
    if podname.count("-") == 3 and "--" not in podname:
        ip = podname.replace("-", ".")
    else:
        ip = podname.replace("-", ":")
    if mode == "insecure":
        if _classify(ip)[0] == _CNAME:
            return [], _NAME_ERROR
        return [(ip, 0, "")], None
    q.need(("ip", ip))
    out = [(ip, 0, "") for p in q.cache.pods_for_ip(ip) if p.namespace == r.namespace]
    return out, (None if out else _NAME_ERROR)


def _records(q: _Q, lname: str) -> tuple[list, str | None]:
    """CoreDNS ``Kubernetes.Records``."""
    try:
        r = parse_request(lname, q.zone, q.mc, q.zonal)
    except InvalidRequest:
        return [], _NAME_ERROR
    if not r.podOrSvc:
        return [], None
    if is_reverse(lname):
        return [], _NAME_ERROR
    if not q.exposed(r.namespace):
        return [], _NAME_ERROR
    if r.podOrSvc == _POD:
        return _find_pods(q, r)
    return _find_services(q, r)


def _is_default_ns(lname: str, zone_sent: str) -> bool:
    # CoreDNS ns.go compares the lower-cased name with the zone as sent, so
    # a mixed-case zone never matches.
    return lname.startswith("ns.dns.") and lname.find(zone_sent) == 7


def _ns_addrs(q: _Q) -> list[tuple[str, str]]:
    """(name, ip) of this server (CoreDNS ``nsAddrs(false, false, zone)``)."""
    cache = q.cache
    q.need_all()
    out: list[tuple[str, str]] = []
    found = False
    local = q.opts.ns_addresses
    if not q.opts.noendpoints:
        for ip in local:
            for es in cache.slices_for_ip(ip):
                found = True
                svc = cache.services.get(es.service_key)
                if svc is None:
                    continue
                name = svc.name + "." + svc.namespace + ".svc" + q.suffix
                if svc.cluster_ips[0] == "None":
                    for a in es.addresses:
                        out.append((endpoint_hostname(a, q.pod_names) + "." + name, a.ip))
                else:
                    for cip in svc.cluster_ips:
                        out.append((name, cip))
    if not found:
        name = "ns.dns" + q.suffix
        out = [(name, ip) for ip in local]
    return out


def _services(q: _Q, lname: str, qtype: int) -> tuple[list, str | None]:
    """CoreDNS ``Kubernetes.Services`` for every type but TXT and NS."""
    if _is_default_ns(lname, q.zone_sent):
        want = _AAAA if qtype == _AAAA else _A
        out = []
        if qtype == _A or qtype == _AAAA:
            for _, ip in _ns_addrs(q):
                if _classify(ip)[0] == want:
                    out.append((ip, 0, ""))
        return out, None
    svcs, err = _records(q, lname)
    if qtype == dns.SRV and svcs:
        svcs = [s for s in svcs if _classify(s[0])[0] != _CNAME]
    return svcs, err


def _address(
    q: _Q, lname: str, owner: str, qtype: int, chain: tuple[str, ...]
) -> tuple[list, str | None, str | None]:
    """CoreDNS ``plugin.A`` / ``plugin.AAAA``: (records, chase target, error)."""
    svcs, err = _services(q, lname, qtype)
    if err is not None:
        return [], None, err
    records: list = []
    chase = None
    seen: set[str] = set()
    ttl = q.ttl
    bowner = None
    for host, _port, _rel in svcs:
        kind, packed = _classify_packed(host)
        if kind == _CNAME:
            target = host if host[-1:] == "." else host + "."
            ltarget = target.lower()
            if in_zone(ltarget, lname):
                continue  # x CNAME x (or below x) is a loop
            if len(chain) > _MAX_CNAME_CHAIN or target in chain:
                continue
            if bowner is None:
                bowner = _bname(owner)
            cname = dns.RRHeader(
                bowner, _CNAME, _IN, ttl, dns.Record_CNAME(_bname(target), ttl), True
            )
            if in_zone(ltarget, q.zone):
                more, more_chase, e = _address(q, ltarget, target, qtype, chain + (target,))
                if e is None and more:
                    records.append(cname)
                    records.extend(more)
                    chase = chase or more_chase
                continue
            records.append(cname)
            chase = target
            continue
        if kind == qtype and host not in seen:
            seen.add(host)
            if bowner is None:
                bowner = _bname(owner)
            records.append(AddressRR(bowner, kind, packed, ttl))
    return records, chase, None


def _srv(q: _Q, lname: str, owner: bytes) -> tuple[list, list, str | None]:
    """CoreDNS ``plugin.SRV``."""
    svcs, err = _services(q, lname, dns.SRV)
    if err is not None:
        return [], [], err
    if not svcs:
        return [], [], None
    weight = int(100.0 / float(100 * len(svcs)) * 100)
    if weight == 0:
        weight = 1
    ttl = q.ttl
    suffix = q.suffix
    records: list = []
    extra: list = []
    seen_srv: set = set()
    seen_addr: set = set()
    for host, port, rel in svcs:
        if port == -1:
            continue
        kind, addr = _classify(host)
        if kind == _CNAME:
            continue  # never produced by the kubernetes backend for SRV
        target = rel + suffix
        if (target, port) not in seen_srv:
            seen_srv.add((target, port))
            payload = dns.Record_SRV(0, weight, port, _bname(target), ttl)
            records.append(dns.RRHeader(owner, dns.SRV, _IN, ttl, payload, True))
        if (target, host) not in seen_addr:
            seen_addr.add((target, host))
            extra.append(_address_rr(_bname(target), kind, addr, ttl))
    return records, extra, None


def _ptr(q: _Q, lname: str, owner: bytes) -> tuple[list, str | None]:
    """CoreDNS ``plugin.PTR`` over ``Kubernetes.Reverse``."""
    ip = extract_address_from_reverse(lname)
    if not ip:
        _, err = _records(q, lname)
        return [], err
    cache = q.cache
    opts = q.opts
    primary = opts.primary_zone
    check_ns = opts.namespaces is not None
    q.need(("ip", ip))
    targets: list[str] = []
    for svc in cache.services_for_cluster_ip(ip):
        if check_ns and not q.exposed(svc.namespace):
            continue
        targets.append(svc.name + "." + svc.namespace + ".svc." + primary)
        break
    if not targets and not opts.noendpoints:
        pod_names = q.pod_names
        for es in cache.slices_for_ip(ip):
            if check_ns and not q.exposed(es.namespace):
                continue
            tail = "." + es.service + "." + es.namespace + ".svc." + primary
            for a in es.addresses:
                if a.ip == ip:
                    targets.append(endpoint_hostname(a, pod_names) + tail)
    if not targets:
        return [], _NAME_ERROR
    ttl = q.ttl
    records = []
    seen: set[str] = set()
    for t in targets:
        if t in seen:
            continue
        seen.add(t)
        records.append(dns.RRHeader(owner, dns.PTR, _IN, ttl, dns.Record_PTR(_bname(t), ttl), True))
    return records, None


def _ns(q: _Q, owner: bytes) -> tuple[list, list]:
    """CoreDNS ``plugin.NS`` at the apex: NS records and their glue."""
    ttl = q.ttl
    records: list = []
    extra: list = []
    seen: set[str] = set()
    for name, ip in _ns_addrs(q):
        kind, addr = _classify(ip)
        if kind == _CNAME:
            continue
        bname = _bname(name)
        extra.append(_address_rr(bname, kind, addr, ttl))
        if name in seen:
            continue
        seen.add(name)
        records.append(dns.RRHeader(owner, dns.NS, _IN, ttl, dns.Record_NS(bname, ttl), True))
    return records, extra


def _txt(q: _Q, lname: str, owner: bytes) -> tuple[list, str | None]:
    """CoreDNS ``Services`` for TXT: only ``dns-version``; else NODATA if the name exists."""
    if trim_zone(lname, q.zone) == "dns-version":
        payload = dns.Record_TXT(DNS_SCHEMA_VERSION, ttl=_TXT_TTL)
        return [dns.RRHeader(owner, dns.TXT, _IN, _TXT_TTL, payload, True)], None
    svcs, err = _records(q, lname)
    if svcs:
        return [], None
    # CoreDNS: any other TXT is NODATA when Records finds something, else a
    # name error -- even for names that exist without records (the apex,
    # "svc", a namespace) -- except an empty zone-scoped (zonal) name.
    if err is None and q.zonal:
        try:
            r = parse_request(lname, q.zone, q.mc, True)
        except InvalidRequest:
            r = None
        if r is not None and r.zone:
            return [], None
    return [], _NAME_ERROR


def _cname(q: _Q, lname: str, owner: bytes) -> tuple[list, str | None]:
    """CoreDNS ``plugin.CNAME``: the first service's host if it is a name."""
    svcs, err = _services(q, lname, _CNAME)
    if err is not None:
        return [], err
    if svcs:
        host = svcs[0][0]
        if _classify(host)[0] == _CNAME:
            target = host if host[-1:] == "." else host + "."
            ttl = q.ttl
            return [
                dns.RRHeader(owner, _CNAME, _IN, ttl, dns.Record_CNAME(_bname(target), ttl), True)
            ], None
    return [], None


# --------------------------------------------------------------------------


def answer(
    cache: ClusterCache, options: AnswerOptions, qname: bytes | str, qtype: int, zone: str
) -> Answer:
    """Answer ``qname``/``qtype`` from ``cache``; ``zone`` is the matching zone.

    ``qname`` is the name as the client sent it (bytes from Twisted, with or
    without the trailing dot); ``zone`` is lower-case and fully qualified.

    Answers are memoised in ``cache.memo`` until the next DNS-visible change
    to the cache, so the same Answer (and the same RRHeader objects) may be
    returned to several queries: treat them as immutable.
    """
    if qtype == dns.AXFR or qtype == dns.IXFR:
        return _REFUSED
    if MEMO_MAX_RECORDS <= 0:
        return _answer(cache, options, qname, qtype, zone)
    key = (id(options), qname, qtype, zone)
    memo = cache.memo
    hit = memo.get(key)
    if hit is not None and hit[0] is options:
        found: Answer = hit[1]
        generations = GENERATIONS
        for slot, generation in found.deps:
            if generations[slot] != generation:
                del memo[key]
                cache.memo_records -= hit[2]
                break
        else:
            return found
    got = _answer(cache, options, qname, qtype, zone)
    # The options object is kept with the answer so that its id cannot be
    # reused by another options object while the entry lives.
    _memo_put(cache, key, (options, got, 1 + len(got.answers) + len(got.additional)))
    return got


def _memo_put(cache: ClusterCache, key: Any, entry: tuple[Any, ...]) -> None:
    """Keep ``entry`` (its size in records third) in the memo, the oldest entries making
    room for it."""
    memo = cache.memo
    old = memo.pop(key, None)
    if old is not None:
        cache.memo_records -= old[2]
    size = entry[2]
    while memo and cache.memo_records + size > MEMO_MAX_RECORDS:
        _, gone = memo.popitem(last=False)
        cache.memo_records -= gone[2]
    memo[key] = entry
    cache.memo_records += size


def _answer(
    cache: ClusterCache, options: AnswerOptions, qname: bytes | str, qtype: int, zone: str
) -> Answer:
    if isinstance(qname, str):
        raw = qname.encode("latin-1")
    else:
        raw = qname
    if raw[-1:] != b".":
        raw += b"."
    sent = raw.decode("latin-1")
    lname = raw.lower().decode("latin-1")
    zone_sent = sent[len(sent) - len(zone) :] if zone != "." else "."
    q = _Q(cache, options, zone, zone_sent)
    owner = raw[:-1]  # _bname(sent)

    records: list = _EMPTY  # type: ignore[assignment]
    extra: list = _EMPTY  # type: ignore[assignment]
    chase = None
    err = None
    if qtype == _A or qtype == _AAAA:
        records, chase, err = _address(q, lname, sent, qtype, ())
    elif qtype == dns.SRV:
        records, extra, err = _srv(q, lname, owner)
    elif qtype == dns.PTR:
        records, err = _ptr(q, lname, owner)
    elif qtype == dns.TXT:
        records, err = _txt(q, lname, owner)
    elif qtype == _CNAME:
        records, err = _cname(q, lname, owner)
    elif qtype == dns.MX:
        # Kubernetes never has mail records: only the existence check remains.
        _, err = _services(q, lname, dns.MX)
    elif qtype == dns.SOA:
        # CoreDNS compares the name as sent with the zone cut from it: any
        # spelling of the apex.
        if lname == zone:
            records = [q.soa()]
    elif qtype == dns.NS and lname == zone_sent:
        # CoreDNS compares the lower-cased name with the zone as sent, so an
        # apex NS query in mixed case falls to the fake A lookup (NODATA).
        records, extra = _ns(q, owner)
    else:
        # Any other type (and NS below the apex): a fake A lookup decides
        # between NXDOMAIN and NODATA; only its error matters.
        _, err = _services(q, lname, _A)

    # CoreDNS decides the apex NS and the ns.dns names by the zone's spelling: those
    # answers are not the same for every spelling (never folded).
    by_case = (qtype == dns.NS and lname == zone) or lname == "ns.dns." + zone
    if err is not None:
        s = q.soa()
        return _done(q, raw, dns.ENAME, (), (s,), (), True, None, s, by_case)
    if not records:
        s = q.soa()
        return _done(q, raw, dns.OK, (), (s,), (), False, None, s, by_case)
    if chase is not None:
        return _done(q, raw, dns.OK, tuple(records), (), tuple(extra), False, chase, q.soa())
    return _done(q, raw, dns.OK, tuple(records), (), tuple(extra), False, None, None, by_case)


def _done(q: _Q, raw: bytes, rcode: int, answers: tuple, authority: tuple, additional: tuple,
          name_error: bool, chase: str | None, soa_rr: dns.RRHeader | None,
          by_case: bool = False) -> Answer:
    foldable = not by_case and chase is None and \
        _foldable(raw[:-1], q.zone_sent, answers, authority, additional)
    return Answer(rcode, answers, authority, additional, name_error, chase, soa_rr,
                  tuple(q.deps.items()), foldable)


def _labels(name: bytes) -> list[bytes]:
    return name.lower().split(b".") if name else []


def _foldable(sent: bytes, zone_sent: str, answers: tuple, authority: tuple,
              additional: tuple) -> bool:
    """Whether this answer, encoded for the question ``sent``, holds for every other
    spelling of it once the question's bytes are rewritten (see the module docstring).

    Names of three origins appear: the question itself (owners in the answer section),
    API text followed by the zone as sent (SOA, NS names and glue), and API text alone
    (CNAME and PTR targets, the owners of a CNAME chain). The encoder compresses
    case-sensitively, so the wire image is the same for every spelling when the first
    two are pointers into the question and API text cannot match the question's labels
    in any spelling: the API label just before the zone differs from the question's
    label there, and API-only names end differently from the question. SRV targets are
    not compressed (their zone is literal text in the asker's case): never foldable.
    """
    zone = _bname(zone_sent)
    if not additional and len(sent) > len(zone):
        # The common shapes, decided without splitting names: a negative answer (its SOA
        # names are "ns.dns" and "hostmaster" before the zone, pointers into the
        # question unless its label before the zone is one of those) and addresses
        # owned by the question.
        cut = len(sent) - len(zone) - 1 if zone else len(sent)
        if (not zone or sent[cut:cut + 1] == b".") and sent.endswith(zone):
            before = sent[:cut].rsplit(b".", 1)[-1].lower()
            if not answers and len(authority) == 1 and authority[0].type == dns.SOA \
                    and owner_of(authority[0]) == zone:
                return before != b"dns" and before != b"hostmaster"
            if not authority:
                for rr in answers:
                    if (rr.type != _A and rr.type != _AAAA) or owner_of(rr) != sent:
                        break
                else:
                    return True
    qlabels = _labels(sent)
    nzone = len(_labels(zone))
    before_zone = qlabels[-nzone - 1] if len(qlabels) > nzone else None
    last = qlabels[-1] if qlabels else None
    zsuffix = b"." + zone if zone else b""

    def zoned(name: bytes) -> bool:
        # API labels, then the zone as sent.
        if name == zone:
            return True
        if zone and not name.endswith(zsuffix):
            return False
        head = _labels(name[: len(name) - len(zsuffix)] if zone else name)
        return not head or head[-1] != before_zone

    def api(name: bytes) -> bool:
        labels = _labels(name)
        return not labels or labels[-1] != last

    for rr in answers:
        owner = owner_of(rr)
        if owner != sent and not api(owner):
            return False
        kind = rr.type
        if kind == _CNAME or kind == dns.PTR:
            if not api(rr.payload.name.name):
                return False
        elif kind == dns.NS:
            if not zoned(rr.payload.name.name):
                return False
        elif kind != _A and kind != _AAAA and kind != dns.TXT and kind != dns.SOA:
            return False
        if kind == dns.SOA and not (zoned(owner) and all(map(zoned, soa_names(rr)))):
            return False
    for rr in authority:
        if rr.type != dns.SOA or not (zoned(owner_of(rr)) and all(map(zoned, soa_names(rr)))):
            return False
    for rr in additional:
        if (rr.type != _A and rr.type != _AAAA) or not zoned(owner_of(rr)):
            return False
    return True
