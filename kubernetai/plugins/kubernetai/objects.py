"""Trimmed, immutable copies of the Kubernetes objects DNS needs.

The informer converts every object it lists or watches with one of the
``*_from_json`` functions below, straight from the decoded JSON dict (the
API's camelCase keys), and keeps only the result, as CoreDNS does with its
``object.To*`` converters (``plugin/kubernetes/object/*.go``): the full API
object is dropped as soon as it is converted, which is what keeps the memory
near CoreDNS's ~1 KB per object.

What is kept, and what CoreDNS keeps (its ``object`` package):

=================  ============================================================
Service            name, namespace, ClusterIPs (falling back to
                   ``[spec.clusterIP]``), type, externalName, ports (name,
                   port, protocol; a single ``port == -1`` sentinel when the
                   service has none), external IPs (``spec.externalIPs`` then
                   each load-balancer ingress IP, or its hostname).
EndpointSlice      name, namespace, the owning service (label
                   ``kubernetes.io/service-name``), the *ready* endpoints'
                   addresses (``conditions.ready`` false is dropped, missing
                   counts as ready) with hostname, nodeName and the targetRef
                   name when shorter than 64 characters (and, for the
                   ``zonal`` option only, the lower-cased topology zone),
                   and the ports (a ``-1`` sentinel when there are none), and
                   the time of the annotation ``endpoints.kubernetes.io/
                   last-change-trigger-time`` (for the DNS programming latency
                   metric; CoreDNS reads it before converting).  Multicluster
                   slices take the service from ``multicluster.kubernetes.io/
                   service-name`` and keep the source cluster id.
Pod                name, namespace, ``status.podIP``.  A pod being deleted
                   (``metadata.deletionTimestamp`` set) converts to ``None``.
Namespace          name.
ServiceImport      name, namespace, type, ``spec.ips``, ports (no sentinel).
=================  ============================================================

Sub-records (addresses, ports) are ``NamedTuple`` s and every sequence is a
tuple, so objects are hashable, comparable and cheap to build.

Memory (100,000 pods are kept for ``pods verified``): the objects have ``__slots__`` and
no ``__dict__``; the strings many objects repeat (namespaces, service names, types,
protocols, port names, node names, zones, cluster ids) are shared through a bounded
table (:func:`_intern`), so a namespace's pods share one string instead of each holding
the copy its JSON document decoded (not :func:`sys.intern`: on Python 3.12 an interned
string is immortal, and the names of namespaces and nodes long gone would stay); equal
ports and port lists are shared (:func:`_shared`), as most services and slices repeat a
handful of them.  Objects hold no reference cycles,
so a relist frees the objects it replaces by reference counting alone.

Every object has ``key`` (``"<namespace>/<name>"``, or the name alone for a
namespace: client-go's ``MetaNamespaceKeyFunc``) and ``dns_equal(other)``,
which says whether replacing one by the other can change a DNS answer; the
cache bumps the SOA serial only when it cannot (CoreDNS ``controller.go``
``detectChanges``; see :mod:`kubernetai.plugins.kubernetai.cache`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, NamedTuple

__all__ = [
    "CLUSTER_IP_NONE",
    "EndpointAddress",
    "EndpointSlice",
    "LABEL_MC_SERVICE_NAME",
    "LABEL_SERVICE_NAME",
    "LABEL_SOURCE_CLUSTER",
    "TRIGGER_TIME_ANNOTATION",
    "Namespace",
    "Pod",
    "Port",
    "Service",
    "ServiceImport",
    "endpoint_slice_from_json",
    "mc_endpoint_slice_from_json",
    "namespace_from_json",
    "parse_rfc3339",
    "pod_from_json",
    "reusing",
    "service_from_json",
    "service_import_from_json",
]

LABEL_SERVICE_NAME = "kubernetes.io/service-name"
LABEL_MC_SERVICE_NAME = "multicluster.kubernetes.io/service-name"
LABEL_SOURCE_CLUSTER = "multicluster.kubernetes.io/source-cluster"
# Set by the EndpointSlice controller to when the change it wrote was triggered (a pod or
# service change): the start of the DNS programming latency (CoreDNS object/metrics.go).
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"
CLUSTER_IP_NONE = "None"
TYPE_EXTERNAL_NAME = "ExternalName"
TYPE_HEADLESS_IMPORT = "Headless"

_EMPTY: dict = {}


#: Distinct strings :func:`_intern` shares at most; the table starts over when full (a
#: string already shared stays shared by the objects holding it).
_STRINGS_MAX = 1 << 16
_strings: dict[str, str] = {}


def _intern(value: Any) -> Any:
    """The shared copy of ``value`` when it is a string (a malformed object may hold
    anything else: it is kept as it is). Informer threads call it concurrently: each dict
    operation is atomic, and a lost race only costs a string not shared."""
    if value.__class__ is not str:
        return value
    shared = _strings.get(value)
    if shared is None:
        if len(_strings) >= _STRINGS_MAX:
            _strings.clear()
        _strings[value] = shared = value
    return shared


# Equal ports and port tuples, shared by the objects that repeat them. Bounded, so that a
# cluster with ever-new port names cannot grow it without end: past the bound, new values
# are simply not shared (no entry is ever evicted, so a shared value stays valid).
_SHARED_MAX = 4096
_shared_ports: dict[Any, Any] = {}
_shared_port_tuples: dict[Any, Any] = {}


def _shared(table: dict[Any, Any], value: Any) -> Any:
    """The equal value already in ``table`` (added when there is room), else ``value``."""
    try:
        found = table.get(value)
    except TypeError:  # unhashable: a malformed object, kept as it is
        return value
    if found is not None:
        return found
    if len(table) < _SHARED_MAX:
        table[value] = value
    return value


class Port(NamedTuple):
    """A service, endpoint-slice or service-import port."""

    name: str
    port: int
    protocol: str


NO_PORTS = (Port("", -1, ""),)


class EndpointAddress(NamedTuple):
    """One ready address of an endpoint slice.

    ``zone`` is the endpoint's topology zone, lower-cased, and only kept
    when the slice was converted ``with_zones`` (the ``zonal`` option).
    """

    ip: str
    hostname: str
    node_name: str
    target_ref_name: str
    zone: str = ""


# --------------------------------------------------------------------------
# Services


@dataclass(frozen=True, slots=True)
class Service:
    key: str
    name: str
    namespace: str
    cluster_ips: tuple[str, ...]
    type: str
    external_name: str
    ports: tuple[Port, ...]
    external_ips: tuple[str, ...]

    @property
    def headless(self) -> bool:
        """True for ``clusterIP: None`` (CoreDNS ``Service.Headless``)."""
        return self.cluster_ips[0] == CLUSTER_IP_NONE

    @property
    def is_external_name(self) -> bool:
        return self.type == TYPE_EXTERNAL_NAME

    def dns_equal(self, other: Service) -> bool:
        """Every stored field is visible in DNS, so this is plain equality."""
        return self == other


_HEADLESS_IPS = (CLUSTER_IP_NONE,)


def _ports(raw: list | None, sentinel: bool) -> tuple[Port, ...]:
    if not raw:
        return NO_PORTS if sentinel else ()
    out = []
    for p in raw:
        port = p.get("port")
        out.append(_shared(_shared_ports, Port(
            _intern(p.get("name") or ""), -1 if port is None else int(port),
            _intern(p.get("protocol") or ""))))
    return _shared(_shared_port_tuples, tuple(out))


def service_from_json(d: dict[str, Any]) -> Service:
    """Convert a ``v1/Service`` dict (CoreDNS ``object.ToService``)."""
    meta = d["metadata"]
    spec = d.get("spec") or _EMPTY
    name = meta["name"]
    ns = _intern(meta.get("namespace") or "")
    ips = spec.get("clusterIPs")
    cluster_ips = tuple(ips) if ips else (spec.get("clusterIP") or "",)
    if cluster_ips == _HEADLESS_IPS:
        cluster_ips = _HEADLESS_IPS  # one tuple for every headless service
    external = list(spec.get("externalIPs") or ())
    ingress = ((d.get("status") or _EMPTY).get("loadBalancer") or _EMPTY).get("ingress")
    if ingress:
        for lb in ingress:
            external.append(lb.get("ip") or lb.get("hostname") or "")
    return Service(
        key=ns + "/" + name,
        name=name,
        namespace=ns,
        cluster_ips=cluster_ips,
        type=_intern(spec.get("type") or "ClusterIP"),
        external_name=spec.get("externalName") or "",
        ports=_ports(spec.get("ports"), sentinel=True),
        external_ips=tuple(external),
    )


# --------------------------------------------------------------------------
# Endpoint slices


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    """The ready endpoints of one EndpointSlice.

    ``service_key`` is ``"<namespace>/<service>"``, the key of the Service
    the slice belongs to; ``cluster_id`` is the ``multicluster.kubernetes.io/
    source-cluster`` label (only multicluster answers use it).
    """

    key: str
    name: str
    namespace: str
    service: str
    service_key: str
    addresses: tuple[EndpointAddress, ...]
    ports: tuple[Port, ...]
    cluster_id: str = ""
    # Unix time of the last-change-trigger-time annotation, None without a valid one. Not
    # visible in DNS (dns_equal ignores it), but compared by ==, so the cache keeps the
    # newest and a later update that leaves it alone is not taken for a new change.
    trigger_time: float | None = None

    def dns_equal(self, other: EndpointSlice) -> bool:
        """False when addresses (IP, hostname, pod name, zone), ports, owner or cluster differ.

        CoreDNS compares IP, hostname, ports and (with ``zonal``) zones; the
        pod name is compared here too because ``endpoint_pod_names`` answers
        with it.  The node name is not visible in DNS.
        """
        if self is other:
            return True
        if (
            self.service_key != other.service_key
            or self.ports != other.ports
            or self.cluster_id != other.cluster_id
            or len(self.addresses) != len(other.addresses)
        ):
            return False
        for a, b in zip(self.addresses, other.addresses):
            if (
                a.ip != b.ip
                or a.hostname != b.hostname
                or a.target_ref_name != b.target_ref_name
                or a.zone != b.zone
            ):
                return False
        return True


def _slice(d: dict[str, Any], service_label: str, with_zones: bool) -> EndpointSlice:
    meta = d["metadata"]
    name = meta["name"]
    ns = _intern(meta.get("namespace") or "")
    labels = meta.get("labels") or _EMPTY
    service = _intern(labels.get(service_label) or "")
    addresses = []
    append = addresses.append
    for ep in d.get("endpoints") or ():
        cond = ep.get("conditions")
        if cond is not None and cond.get("ready") is False:
            continue
        addrs = ep.get("addresses")
        if not addrs:
            continue
        hostname = ep.get("hostname") or ""
        node = _intern(ep.get("nodeName") or "")
        ref = ep.get("targetRef")
        ref_name = ""
        if ref is not None:
            ref_name = ref.get("name") or ""
            if len(ref_name) >= 64:
                ref_name = ""
        if with_zones:
            zone = _intern((ep.get("zone") or "").lower())
            for ip in addrs:
                append(EndpointAddress(ip, hostname, node, ref_name, zone))
        else:
            for ip in addrs:
                append(EndpointAddress(ip, hostname, node, ref_name))
    return EndpointSlice(
        key=ns + "/" + name,
        name=name,
        namespace=ns,
        service=service,
        service_key=ns + "/" + service,
        addresses=tuple(addresses),
        ports=_ports(d.get("ports"), sentinel=True),
        cluster_id=_intern(labels.get(LABEL_SOURCE_CLUSTER) or ""),
        trigger_time=_trigger_time(meta) if service_label == LABEL_SERVICE_NAME else None,
    )


def _trigger_time(meta: dict[str, Any]) -> float | None:
    value = (meta.get("annotations") or _EMPTY).get(TRIGGER_TIME_ANNOTATION)
    return parse_rfc3339(value) if isinstance(value, str) else None


_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d{1,9})?"
                      r"(?:Z|([+-])(\d\d):(\d\d))", re.ASCII)


def parse_rfc3339(text: str) -> float | None:
    """Unix time of an RFC 3339 timestamp (Go's ``time.RFC3339Nano`` layout, which the
    annotation uses: ``2024-05-01T12:00:00.123456789Z`` or with a ``+02:00`` offset);
    None if it is not one. CoreDNS logs a warning for an invalid value; this ignores it
    alone, as one odd annotation must not write a line per relist."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, sign, off_hours, off_minutes = match.groups()[6:]
    try:
        when = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    except ValueError:
        return None
    seconds = when.timestamp() + (float(fraction) if fraction else 0.0)
    if sign:
        if int(off_hours) > 23 or int(off_minutes) > 59:
            return None
        offset = int(off_hours) * 3600 + int(off_minutes) * 60
        seconds -= offset if sign == "+" else -offset
    return seconds


def endpoint_slice_from_json(d: dict[str, Any], with_zones: bool = False) -> EndpointSlice:
    """Convert a ``discovery.k8s.io/v1`` EndpointSlice dict, dropping not-ready endpoints.

    (CoreDNS ``object.EndpointSliceToEndpoints``.)  ``with_zones`` keeps each
    endpoint's ``zone`` (CoreDNS ``EndpointSliceToEndpointsWithZones``, used
    only with the ``zonal`` option).
    """
    return _slice(d, LABEL_SERVICE_NAME, with_zones)


def mc_endpoint_slice_from_json(d: dict[str, Any]) -> EndpointSlice:
    """Convert a multicluster EndpointSlice (CoreDNS ``EndpointSliceToMultiClusterEndpoints``).

    The service comes from label ``multicluster.kubernetes.io/service-name``
    and ``cluster_id`` from ``multicluster.kubernetes.io/source-cluster``.
    """
    return _slice(d, LABEL_MC_SERVICE_NAME, False)


# --------------------------------------------------------------------------
# Pods


@dataclass(frozen=True, slots=True)
class Pod:
    key: str
    name: str
    namespace: str
    ip: str

    def dns_equal(self, other: Pod) -> bool:
        """Only the pod IP is visible in DNS (CoreDNS ``podModified``)."""
        return self.ip == other.ip and self.namespace == other.namespace


def pod_from_json(d: dict[str, Any]) -> Pod | None:
    """Convert a ``v1/Pod`` dict; ``None`` for a pod that is being deleted.

    (CoreDNS ``object.ToPod``: such a pod is skipped, see
    :meth:`kubernetai.plugins.kubernetai.cache.ClusterCache.apply`.)  The phase is not checked:
    the informer lists and watches pods with CoreDNS's field selector
    ``status.phase!=Succeeded,status.phase!=Failed,status.phase!=Unknown``.
    """
    meta = d["metadata"]
    if meta.get("deletionTimestamp"):
        return None
    name = meta["name"]
    ns = _intern(meta.get("namespace") or "")
    return Pod(ns + "/" + name, name, ns, (d.get("status") or _EMPTY).get("podIP") or "")


# --------------------------------------------------------------------------
# Namespaces


@dataclass(frozen=True, slots=True)
class Namespace:
    key: str
    name: str

    def dns_equal(self, other: Namespace) -> bool:
        return self.name == other.name


def namespace_from_json(d: dict[str, Any]) -> Namespace:
    """Convert a ``v1/Namespace`` dict (CoreDNS ``object.ToNamespace``)."""
    name = _intern(d["metadata"]["name"])
    return Namespace(name, name)


# --------------------------------------------------------------------------
# Multicluster ServiceImports


@dataclass(frozen=True, slots=True)
class ServiceImport:
    key: str
    name: str
    namespace: str
    type: str
    cluster_ips: tuple[str, ...]
    ports: tuple[Port, ...]

    @property
    def headless(self) -> bool:
        """True for ``spec.type: Headless`` (CoreDNS ``ServiceImport.Headless``)."""
        return self.type == TYPE_HEADLESS_IMPORT

    @property
    def is_external_name(self) -> bool:
        """Always False: an import has no ExternalName form.

        (So that answers read a Service and a ServiceImport the same way.)
        """
        return False

    def dns_equal(self, other: ServiceImport) -> bool:
        """Every stored field is visible in DNS.

        (CoreDNS ``serviceImportEquivalent`` forgets the IPs; they are
        compared here.)
        """
        return self == other


def service_import_from_json(d: dict[str, Any]) -> ServiceImport:
    """Convert a ``multicluster.x-k8s.io/v1alpha1`` ServiceImport dict.

    (CoreDNS ``object.ToServiceImport``.)
    """
    meta = d["metadata"]
    spec = d.get("spec") or _EMPTY
    name = meta["name"]
    ns = _intern(meta.get("namespace") or "")
    return ServiceImport(
        key=ns + "/" + name,
        name=name,
        namespace=ns,
        type=_intern(spec.get("type") or ""),
        cluster_ips=tuple(spec.get("ips") or ()),
        ports=_ports(spec.get("ports"), sentinel=False),
    )


# --------------------------------------------------------------------------
# Re-lists


def reusing(convert: Callable[[dict[str, Any]], Any],
            current: Callable[[], Mapping[str, Any]]) -> Callable[[dict[str, Any]], Any]:
    """``convert``, returning the object already held under the same key when it is equal.

    A re-list converts every object again, and nearly all of them are unchanged: handing
    back the held object lets the new copy die at once, page by page, instead of living
    beside the old one until the swap.  The relist's peak is then one page of objects,
    not a second copy of the cluster, and the held objects stay where they are in memory
    (fewer half-empty allocator arenas afterwards).  ``current`` returns the store now
    held (key -> object), read from the informer's thread: a lookup and an equality test
    of immutable objects, safe against the reactor's writes under the GIL.
    """
    def convert_reusing(document: dict[str, Any]) -> Any:
        obj = convert(document)
        if obj is not None:
            held = current().get(obj.key)
            if held is not None and held == obj:
                return held
        return obj

    return convert_reusing
