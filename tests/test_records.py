"""The answer table: query name and type -> the sections CoreDNS 1.14 would send.

One fixed cluster (built from realistic API JSON with the ``*_from_json``
converters) is queried under a few option sets.  Each case gives the rcode,
the answer, authority and additional sections as ``(name, type, ttl, rdata)``
tuples, and for ExternalName targets outside the zone the name the caller
must chase.  The expectations follow CoreDNS's ``plugin/kubernetes``
(``handler.go``, ``kubernetes.go``, ``reverse.go``, ``ns.go``) and
``plugin/backend_lookup.go``, and the behaviour its own tables
(``handler_test.go``, ``handler_case_test.go``, ``handler_pod_*_test.go``,
``kubernetes_apex_test.go``, ``reverse_test.go``) pin down; the data is ours.
"""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest
from twisted.names import dns

from kubernetai.plugins.kubernetai.cache import ClusterCache
from kubernetai.plugins.kubernetai.objects import (
    endpoint_slice_from_json,
    mc_endpoint_slice_from_json,
    namespace_from_json,
    pod_from_json,
    service_from_json,
    service_import_from_json,
)
from kubernetai.plugins.kubernetai.records import (
    Answer,
    AnswerOptions,
    answer,
    extract_address_from_reverse,
    soa,
)

NOW = 1700000000.75
SERIAL = 1700000000

# --------------------------------------------------------------------------
# Realistic API JSON


def _meta(ns: str | None, name: str, labels: dict | None = None, **extra) -> dict:
    m = {
        "name": name,
        "uid": f"uid-{ns}-{name}",
        "resourceVersion": "12345",
        "creationTimestamp": "2024-05-01T10:00:00Z",
        "managedFields": [{"manager": "kube-controller-manager", "operation": "Update"}],
    }
    if ns is not None:
        m["namespace"] = ns
    if labels:
        m["labels"] = labels
    m.update(extra)
    return m


def service_json(ns, name, cluster_ips=("10.0.0.1",), ports=(), type_="ClusterIP",
                 external_name=None, external_ips=(), ingress=()):
    spec = {
        "type": type_,
        "sessionAffinity": "None",
        "selector": {"app": name},
        "internalTrafficPolicy": "Cluster",
    }
    if type_ != "ExternalName":
        spec["clusterIP"] = cluster_ips[0]
        spec["clusterIPs"] = list(cluster_ips)
        spec["ipFamilies"] = ["IPv6" if ":" in ip else "IPv4" for ip in cluster_ips if ip != "None"]
        spec["ipFamilyPolicy"] = "PreferDualStack" if len(cluster_ips) > 1 else "SingleStack"
    else:
        spec["externalName"] = external_name
        spec.pop("selector")
    if ports:
        spec["ports"] = [
            {"name": n, "port": p, "protocol": proto, "targetPort": p} if n else
            {"port": p, "protocol": proto, "targetPort": p}
            for n, p, proto in ports
        ]
    if external_ips:
        spec["externalIPs"] = list(external_ips)
    status = {"loadBalancer": {"ingress": list(ingress)} if ingress else {}}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(ns, name, {"app": name},
                          annotations={"kubectl.kubernetes.io/last-applied-configuration": "{}"}),
        "spec": spec,
        "status": status,
    }


def endpoint(ip, ready=True, hostname=None, pod=None, node="node-1", ns="shop"):
    e = {"addresses": [ip], "nodeName": node, "zone": "zone-a"}
    if ready is not None:
        e["conditions"] = {"ready": ready, "serving": ready, "terminating": not ready}
    else:
        e["conditions"] = {}
    if hostname:
        e["hostname"] = hostname
    if pod:
        e["targetRef"] = {"kind": "Pod", "name": pod, "namespace": ns, "uid": f"uid-{pod}"}
    return e


def slice_json(ns, name, service, endpoints, ports=(), address_type="IPv4", labels=None):
    lab = {
        "kubernetes.io/service-name": service,
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
    }
    if labels is not None:
        lab = labels
    d = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": _meta(ns, name, lab, generateName=service + "-",
                          ownerReferences=[{"kind": "Service", "name": service}]),
        "addressType": address_type,
        "endpoints": list(endpoints),
    }
    if ports:
        d["ports"] = [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports]
    return d


def pod_json(ns, name, ip, deleting=False):
    meta = _meta(ns, name, {"app": name.rsplit("-", 1)[0]})
    if deleting:
        meta["deletionTimestamp"] = "2024-05-01T11:00:00Z"
        meta["deletionGracePeriodSeconds"] = 30
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "192.168.0.10"},
    }


def namespace_json(name):
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": _meta(None, name, {"kubernetes.io/metadata.name": name}),
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def import_json(ns, name, type_, ips=(), ports=()):
    return {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ServiceImport",
        "metadata": _meta(ns, name),
        "spec": {
            "type": type_,
            "ips": list(ips),
            "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports],
        },
        "status": {"clusters": [{"cluster": "c1"}]},
    }


def mc_slice_json(ns, name, service, cluster, endpoints, ports=()):
    labels = {
        "multicluster.kubernetes.io/service-name": service,
        "multicluster.kubernetes.io/source-cluster": cluster,
        "endpointslice.kubernetes.io/managed-by": "mcs-controller",
    }
    return slice_json(ns, name, service, endpoints, ports, labels=labels)


TCP_HTTP = ("http", 80, "TCP")

SERVICES = [
    service_json("shop", "web", ("10.96.0.10",), [("http", 80, "TCP"), ("https", 443, "TCP")]),
    service_json("shop", "cart", ("10.96.0.20",), [("http", 8080, "TCP")]),
    service_json("shop", "db", ("None",), [("postgres", 5432, "TCP")]),
    service_json("shop", "dual", ("10.96.0.30", "fd00:96::30"), [TCP_HTTP]),
    service_json("shop", "v6only", ("fd00:96::40",), [TCP_HTTP]),
    service_json("shop", "nope", ("None",), [TCP_HTTP]),
    service_json("shop", "portless", ("None",)),
    service_json("shop", "noports", ("10.96.0.50",)),
    service_json("shop", "ext", type_="ExternalName", external_name="api.example.com",
                 ports=[TCP_HTTP]),
    service_json("shop", "ext-in", type_="ExternalName",
                 external_name="web.shop.svc.cluster.local"),
    service_json("shop", "ext-ip", type_="ExternalName", external_name="1.2.3.4"),
    service_json("shop", "ext-loop1", type_="ExternalName",
                 external_name="ext-loop2.shop.svc.cluster.local"),
    service_json("shop", "ext-loop2", type_="ExternalName",
                 external_name="ext-loop1.shop.svc.cluster.local."),
    service_json("shop", "ext-chain", type_="ExternalName",
                 external_name="ext.shop.svc.cluster.local"),
    service_json("shop", "lb", ("10.96.0.60",), [TCP_HTTP], type_="LoadBalancer",
                 external_ips=["203.0.113.7"],
                 ingress=[{"ip": "198.51.100.1", "ipMode": "VIP"}, {"hostname": "lb.example.net"}]),
    service_json("kube-system", "kube-dns", ("10.96.0.2",),
                 [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")]),
    service_json("team-b", "web", ("10.96.1.10",), [TCP_HTTP]),
    service_json("ghost", "orphan", ("10.96.9.9",), [TCP_HTTP]),
    service_json("shop", "zh", ("None",), [TCP_HTTP]),
    service_json("shop", "zh-empty", ("None",), [TCP_HTTP]),
]

SLICES = [
    slice_json("shop", "web-abc12", "web", [
        endpoint("10.244.1.5", pod="web-7d9f-x1", node="node-1"),
        endpoint("10.244.2.6", pod="web-7d9f-x2", node="node-2"),
        endpoint("10.244.3.7", ready=False, pod="web-7d9f-x3", node="node-3"),
    ], [("http", 8080, "TCP"), ("https", 8443, "TCP")]),
    slice_json("shop", "cart-xyz", "cart", [
        endpoint("10.244.4.4", ready=False, pod="cart-1"),
    ], [("http", 8080, "TCP")]),
    slice_json("shop", "db-4x", "db", [
        endpoint("10.244.1.10", hostname="db-0", pod="db-0"),
        endpoint("10.244.2.11", ready=None, hostname="db-1", pod="db-1"),
        endpoint("10.244.3.12", pod="db-2"),
        endpoint("10.244.4.13", ready=False, hostname="db-9", pod="db-9"),
    ], [("postgres", 5432, "TCP")]),
    slice_json("shop", "db-6x", "db", [
        endpoint("fd00:10:244::a", pod="db-3"),
    ], [("postgres", 5432, "TCP")], address_type="IPv6"),
    slice_json("shop", "nope-1", "nope", [endpoint("10.244.6.6", ready=False)], [TCP_HTTP]),
    slice_json("shop", "portless-1", "portless", [endpoint("10.244.5.5")]),
    slice_json("shop", "zh-1", "zh", [
        dict(endpoint("10.244.7.1"), zone="us-west-2a"),
        dict(endpoint("10.244.7.2"), zone="US-West-2b"),
        dict(endpoint("10.244.7.3"), zone="us-west-2b"),
    ], [TCP_HTTP]),
    slice_json("kube-system", "kube-dns-a", "kube-dns", [
        endpoint("10.244.0.2", pod="coredns-aaa", ns="kube-system"),
        endpoint("10.244.0.3", pod="coredns-bbb", ns="kube-system"),
    ], [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")]),
]

PODS = [
    pod_json("shop", "web-7d9f-x1", "10.244.1.5"),
    pod_json("shop", "web-7d9f-x2", "10.244.2.6"),
    pod_json("shop", "old-1", "10.244.9.9", deleting=True),
    pod_json("kube-system", "kube-proxy-a", "192.168.0.10"),
    pod_json("default", "node-exporter-a", "192.168.0.10"),
]

NAMESPACES = ["default", "kube-system", "shop", "team-b"]

IMPORTS = [
    import_json("shop", "web", "ClusterSetIP", ["10.100.0.10"], [TCP_HTTP]),
    import_json("shop", "cart", "ClusterSetIP", ["10.100.0.20"], [("http", 8080, "TCP")]),
    import_json("shop", "db", "Headless", [], [("postgres", 5432, "TCP")]),
]

MC_SLICES = [
    mc_slice_json("shop", "web-c1", "web", "c1", [endpoint("10.1.0.20")], [("http", 8080, "TCP")]),
    mc_slice_json("shop", "db-c1", "db", "c1", [endpoint("10.1.0.5", hostname="db-0")],
                  [("postgres", 5432, "TCP")]),
    mc_slice_json("shop", "db-c2", "db", "c2", [endpoint("10.2.0.6")], [("postgres", 5432, "TCP")]),
]


def build_cache(with_zones: bool = False) -> ClusterCache:
    cache = ClusterCache(clock=lambda: NOW)
    cache.replace("namespaces", [namespace_from_json(namespace_json(n)) for n in NAMESPACES])
    cache.replace("services", [service_from_json(d) for d in SERVICES])
    cache.replace("endpointslices", [endpoint_slice_from_json(d, with_zones) for d in SLICES])
    cache.replace("pods", [pod_from_json(d) for d in PODS])
    cache.replace("serviceimports", [service_import_from_json(d) for d in IMPORTS])
    cache.replace("mcendpointslices", [mc_endpoint_slice_from_json(d) for d in MC_SLICES])
    return cache


CACHE = build_cache()
ZONAL_CACHE = build_cache(with_zones=True)

ZONES = ("cluster.local.", "in-addr.arpa.", "ip6.arpa.", "clusterset.local.")
BASE = AnswerOptions(zones=ZONES, multicluster_zones=("clusterset.local.",),
                     ns_addresses=("10.244.0.2",))
OPTIONS = {
    "default": BASE,
    "insecure": replace(BASE, pods="insecure"),
    "verified": replace(BASE, pods="verified"),
    "podnames": replace(BASE, endpoint_pod_names=True),
    "ignore_empty": replace(BASE, ignore_empty_service=True),
    "noendpoints": replace(BASE, noendpoints=True),
    "namespaces": replace(BASE, namespaces=frozenset({"shop", "kube-system"})),
    "ttl30": replace(BASE, ttl=30),
    "ttl600": replace(BASE, ttl=600),
    "nsaddr_other": replace(BASE, ns_addresses=("192.0.2.53", "2001:db8::53")),
    "nsaddr_none": replace(BASE, ns_addresses=()),
    "zonal": replace(BASE, zonal=True),
}


def cache_for(opts: str) -> ClusterCache:
    """The zonal option set reads slices converted with their zones, as the informer would."""
    return ZONAL_CACHE if opts == "zonal" else CACHE


def _zone_of(name: str) -> str:
    lname = name.lower()
    best = ""
    for z in ZONES:
        if (lname == z or lname.endswith("." + z)) and len(z) > len(best):
            best = z
    assert best, name
    return best


# --------------------------------------------------------------------------
# Rendering records as (name, type, ttl, rdata) tuples


def _name(n: dns.Name) -> str:
    return n.name.decode("latin-1") + "."


def render(rr: dns.RRHeader) -> tuple[str, str, int, str]:
    assert rr.cls == dns.IN
    assert rr.auth is True
    p = rr.payload
    t = rr.type
    if t == dns.A:
        data = socket.inet_ntoa(p.address)
    elif t == dns.AAAA:
        data = socket.inet_ntop(socket.AF_INET6, p.address)
    elif t in (dns.CNAME, dns.PTR, dns.NS):
        data = _name(p.name)
    elif t == dns.SRV:
        data = f"{p.priority} {p.weight} {p.port} {_name(p.target)}"
    elif t == dns.TXT:
        data = " ".join('"' + d.decode() + '"' for d in p.data)
    elif t == dns.SOA:
        data = (f"{_name(p.mname)} {_name(p.rname)} {p.serial} {p.refresh} {p.retry} "
                f"{p.expire} {p.minimum}")
    else:  # pragma: no cover
        raise AssertionError(t)
    return (_name(rr.name), dns.QUERY_TYPES.get(t, str(t)), rr.ttl, data)


def SOA(zone="cluster.local.", ttl=5, minimum=None, serial=SERIAL):
    return (zone, "SOA", ttl,
            f"ns.dns.{zone} hostmaster.{zone} {serial} 7200 1800 86400 {ttl if minimum is None else minimum}")


def A(name, ip, ttl=5):
    return (name, "A", ttl, ip)


def AAAA(name, ip, ttl=5):
    return (name, "AAAA", ttl, ip)


def SRV(name, weight, port, target, ttl=5):
    return (name, "SRV", ttl, f"0 {weight} {port} {target}")


def CNAME(name, target, ttl=5):
    return (name, "CNAME", ttl, target)


def PTR(name, target, ttl=5):
    return (name, "PTR", ttl, target)


OK, NX, REFUSED = dns.OK, dns.ENAME, dns.EREFUSED
HINFO, HTTPS, CAA = 13, 65, 257

W = "web.shop.svc.cluster.local."
DB = "db.shop.svc.cluster.local."
CL = "clusterset.local."
ZH = "zh.shop.svc.cluster.local."


def case(why, qname, qtype, rcode=OK, answers=(), authority=None, additional=(), opts="default",
         chase=None):
    """One table row; a negative answer (no answers) defaults to the cluster.local SOA."""
    if authority is None:
        authority = () if answers or rcode == REFUSED else (SOA(),)
    return pytest.param(opts, qname, qtype, rcode, tuple(answers), tuple(authority),
                        tuple(additional), chase, id=why)


def nodata(why, qname, qtype, opts="default", zone="cluster.local."):
    return case(why, qname, qtype, OK, authority=[SOA(zone)], opts=opts)


def nxdomain(why, qname, qtype=dns.A, opts="default", zone="cluster.local."):
    return case(why, qname, qtype, NX, authority=[SOA(zone)], opts=opts)


TABLE = [
    # --- ClusterIP services -------------------------------------------------
    case("clusterip A", W, dns.A, answers=[A(W, "10.96.0.10")]),
    case("clusterip A keeps the client's case in the owner name",
         "WeB.ShOp.svc.Cluster.LOCAL.", dns.A,
         answers=[A("WeB.ShOp.svc.Cluster.LOCAL.", "10.96.0.10")]),
    case("qname without trailing dot (Twisted's form) answers the same",
         "web.shop.svc.cluster.local", dns.A, answers=[A(W, "10.96.0.10")]),
    nodata("clusterip v4 AAAA is NODATA", W, dns.AAAA),
    case("bare-name SRV lists every port, weight 100/N, glue once", W, dns.SRV,
         answers=[SRV(W, 50, 80, W), SRV(W, 50, 443, W)], additional=[A(W, "10.96.0.10")]),
    case("_port._proto SRV", "_http._tcp." + W, dns.SRV,
         answers=[SRV("_http._tcp." + W, 100, 80, W)], additional=[A(W, "10.96.0.10")]),
    case("SRV target and glue carry the zone as the client spelled it",
         "_HTTPS._TCP.Web.shop.svc.CLUSTER.local.", dns.SRV,
         answers=[SRV("_HTTPS._TCP.Web.shop.svc.CLUSTER.local.", 100, 443,
                      "web.shop.svc.CLUSTER.local.")],
         additional=[A("web.shop.svc.CLUSTER.local.", "10.96.0.10")],
         authority=()),
    nxdomain("SRV with an unknown protocol is NXDOMAIN", "_http._udp." + W, dns.SRV),
    nxdomain("SRV with an unknown port name is NXDOMAIN", "_gopher._tcp." + W, dns.SRV),
    case("A on a _port._proto name answers the ClusterIP", "_http._tcp." + W, dns.A,
         answers=[A("_http._tcp." + W, "10.96.0.10")]),
    case("ports without underscores parse the same", "http.tcp." + W, dns.SRV,
         answers=[SRV("http.tcp." + W, 100, 80, W)], additional=[A(W, "10.96.0.10")]),
    case("endpoint name below a ClusterIP service answers the endpoint",
         "10-244-1-5." + W, dns.A, answers=[A("10-244-1-5." + W, "10.244.1.5")]),
    nxdomain("a not-ready endpoint does not exist", "10-244-3-7." + W),
    nxdomain("pod-name endpoint labels need endpoint_pod_names", "web-7d9f-x1." + W),
    case("endpoint_pod_names answers the targetRef pod name", "web-7d9f-x1." + W, dns.A,
         answers=[A("web-7d9f-x1." + W, "10.244.1.5")], opts="podnames"),
    case("dual-stack A picks the IPv4 ClusterIP", "dual.shop.svc.cluster.local.", dns.A,
         answers=[A("dual.shop.svc.cluster.local.", "10.96.0.30")]),
    case("dual-stack AAAA picks the IPv6 ClusterIP", "dual.shop.svc.cluster.local.", dns.AAAA,
         answers=[AAAA("dual.shop.svc.cluster.local.", "fd00:96::30")]),
    case("dual-stack SRV: one record (deduplicated) weighted 50, A and AAAA glue",
         "dual.shop.svc.cluster.local.", dns.SRV,
         answers=[SRV("dual.shop.svc.cluster.local.", 50, 80, "dual.shop.svc.cluster.local.")],
         additional=[A("dual.shop.svc.cluster.local.", "10.96.0.30"),
                     AAAA("dual.shop.svc.cluster.local.", "fd00:96::30")]),
    case("IPv6-only service AAAA", "v6only.shop.svc.cluster.local.", dns.AAAA,
         answers=[AAAA("v6only.shop.svc.cluster.local.", "fd00:96::40")]),
    nodata("IPv6-only service A is NODATA", "v6only.shop.svc.cluster.local.", dns.A),
    case("service without ports still has its A", "noports.shop.svc.cluster.local.", dns.A,
         answers=[A("noports.shop.svc.cluster.local.", "10.96.0.50")]),
    nodata("service without ports has no SRV (port -1 skipped)",
           "noports.shop.svc.cluster.local.", dns.SRV),
    case("service with no ready endpoints still answers without ignore empty_service",
         "cart.shop.svc.cluster.local.", dns.A,
         answers=[A("cart.shop.svc.cluster.local.", "10.96.0.20")]),
    case("LoadBalancer service answers its ClusterIP, not its external IPs",
         "lb.shop.svc.cluster.local.", dns.A,
         answers=[A("lb.shop.svc.cluster.local.", "10.96.0.60")]),
    # --- headless services -----------------------------------------------------
    case("headless A: one record per ready IPv4 endpoint, over all slices", DB, dns.A,
         answers=[A(DB, "10.244.1.10"), A(DB, "10.244.2.11"), A(DB, "10.244.3.12")]),
    case("headless AAAA from the IPv6 slice", DB, dns.AAAA,
         answers=[AAAA(DB, "fd00:10:244::a")]),
    case("headless SRV: endpoint x port, targets by hostname or dashed IP, glue per target",
         DB, dns.SRV,
         answers=[SRV(DB, 25, 5432, "db-0." + DB), SRV(DB, 25, 5432, "db-1." + DB),
                  SRV(DB, 25, 5432, "10-244-3-12." + DB),
                  SRV(DB, 25, 5432, "fd00-10-244--a." + DB)],
         additional=[A("db-0." + DB, "10.244.1.10"), A("db-1." + DB, "10.244.2.11"),
                     A("10-244-3-12." + DB, "10.244.3.12"),
                     AAAA("fd00-10-244--a." + DB, "fd00:10:244::a")]),
    case("headless _port._proto SRV", "_postgres._tcp." + DB, dns.SRV,
         answers=[SRV("_postgres._tcp." + DB, 25, 5432, "db-0." + DB),
                  SRV("_postgres._tcp." + DB, 25, 5432, "db-1." + DB),
                  SRV("_postgres._tcp." + DB, 25, 5432, "10-244-3-12." + DB),
                  SRV("_postgres._tcp." + DB, 25, 5432, "fd00-10-244--a." + DB)],
         additional=[A("db-0." + DB, "10.244.1.10"), A("db-1." + DB, "10.244.2.11"),
                     A("10-244-3-12." + DB, "10.244.3.12"),
                     AAAA("fd00-10-244--a." + DB, "fd00:10:244::a")]),
    case("headless endpoint by hostname", "db-0." + DB, dns.A,
         answers=[A("db-0." + DB, "10.244.1.10")]),
    case("endpoint with missing ready condition counts as ready", "db-1." + DB, dns.A,
         answers=[A("db-1." + DB, "10.244.2.11")]),
    nxdomain("endpoint with ready=false is dropped", "db-9." + DB),
    case("endpoint by dashed IPv4", "10-244-3-12." + DB, dns.A,
         answers=[A("10-244-3-12." + DB, "10.244.3.12")]),
    case("endpoint by dashed IPv6", "fd00-10-244--a." + DB, dns.AAAA,
         answers=[AAAA("fd00-10-244--a." + DB, "fd00:10:244::a")]),
    nodata("endpoint that exists with another family is NODATA", "db-0." + DB, dns.AAAA),
    nxdomain("a hostname hides the pod name even with endpoint_pod_names", "db-0x." + DB,
             opts="podnames"),
    case("endpoint_pod_names names an endpoint without hostname by its pod", "db-2." + DB,
         dns.A, answers=[A("db-2." + DB, "10.244.3.12")], opts="podnames"),
    case("endpoint_pod_names SRV targets", "_postgres._tcp." + DB, dns.SRV,
         answers=[SRV("_postgres._tcp." + DB, 25, 5432, "db-0." + DB),
                  SRV("_postgres._tcp." + DB, 25, 5432, "db-1." + DB),
                  SRV("_postgres._tcp." + DB, 25, 5432, "db-2." + DB),
                  SRV("_postgres._tcp." + DB, 25, 5432, "db-3." + DB)],
         additional=[A("db-0." + DB, "10.244.1.10"), A("db-1." + DB, "10.244.2.11"),
                     A("db-2." + DB, "10.244.3.12"), AAAA("db-3." + DB, "fd00:10:244::a")],
         opts="podnames"),
    nxdomain("headless service without ready endpoints is NXDOMAIN",
             "nope.shop.svc.cluster.local."),
    nxdomain("headless SRV without ready endpoints is NXDOMAIN",
             "nope.shop.svc.cluster.local.", dns.SRV),
    case("headless service with a portless slice answers A",
         "portless.shop.svc.cluster.local.", dns.A,
         answers=[A("portless.shop.svc.cluster.local.", "10.244.5.5")]),
    nodata("headless portless SRV is NODATA", "portless.shop.svc.cluster.local.", dns.SRV),
    case("endpoint of a portless slice", "10-244-5-5.portless.shop.svc.cluster.local.", dns.A,
         answers=[A("10-244-5-5.portless.shop.svc.cluster.local.", "10.244.5.5")]),
    # --- ExternalName ----------------------------------------------------------
    case("ExternalName CNAME query", "ext.shop.svc.cluster.local.", dns.CNAME,
         answers=[CNAME("ext.shop.svc.cluster.local.", "api.example.com.")]),
    case("ExternalName A outside the zone: CNAME, caller chases the target",
         "ext.shop.svc.cluster.local.", dns.A,
         answers=[CNAME("ext.shop.svc.cluster.local.", "api.example.com.")],
         chase="api.example.com."),
    case("ExternalName AAAA chases too", "Ext.shop.svc.cluster.local.", dns.AAAA,
         answers=[CNAME("Ext.shop.svc.cluster.local.", "api.example.com.")],
         chase="api.example.com."),
    case("ExternalName inside the zone is chased internally",
         "ext-in.shop.svc.cluster.local.", dns.A,
         answers=[CNAME("ext-in.shop.svc.cluster.local.", "web.shop.svc.cluster.local."),
                  A("web.shop.svc.cluster.local.", "10.96.0.10")]),
    nodata("in-zone ExternalName whose target has no such record is NODATA",
           "ext-in.shop.svc.cluster.local.", dns.AAAA),
    case("in-zone chain ending outside: both CNAMEs, then the caller chases",
         "ext-chain.shop.svc.cluster.local.", dns.A,
         answers=[CNAME("ext-chain.shop.svc.cluster.local.", "ext.shop.svc.cluster.local."),
                  CNAME("ext.shop.svc.cluster.local.", "api.example.com.")],
         chase="api.example.com."),
    nodata("ExternalName loop ends as NODATA", "ext-loop1.shop.svc.cluster.local.", dns.A),
    nxdomain("ExternalName with an IP is ignored", "ext-ip.shop.svc.cluster.local."),
    nodata("SRV for ExternalName is NODATA", "ext.shop.svc.cluster.local.", dns.SRV),
    nxdomain("_port._proto on ExternalName is NXDOMAIN", "_http._tcp.ext.shop.svc.cluster.local.",
             dns.SRV),
    nxdomain("a name below an ExternalName does not exist", "foo.ext.shop.svc.cluster.local.",
             dns.CNAME),
    nodata("TXT on ExternalName is NODATA", "ext.shop.svc.cluster.local.", dns.TXT),
    nodata("CNAME query on a ClusterIP service is NODATA", W, dns.CNAME),
    # --- names that do not exist / structure -------------------------------------
    nxdomain("unknown service", "svc0.shop.svc.cluster.local."),
    nxdomain("unknown service AAAA", "svc0.shop.svc.cluster.local.", dns.AAAA),
    nxdomain("service in a namespace that does not exist", "orphan.ghost.svc.cluster.local."),
    nodata("existing namespace is NODATA", "shop.svc.cluster.local.", dns.A),
    nxdomain("missing namespace is NXDOMAIN", "ghost.svc.cluster.local."),
    nodata("bare svc is NODATA", "svc.cluster.local.", dns.A),
    nodata("bare pod is NODATA", "pod.cluster.local.", dns.A),
    nxdomain("last label neither svc nor pod", "web.shop.foo.cluster.local."),
    nxdomain("name directly below the zone", "foo.cluster.local."),
    nxdomain("too many labels", "a.b.c.web.shop.svc.cluster.local."),
    nxdomain("endpoint.cluster shape outside a multicluster zone is a port/proto",
             "db-0.c1." + DB),
    nxdomain("no wildcards", "*.shop.svc.cluster.local."),
    nxdomain("no 'any' wildcard either", "any.shop.svc.cluster.local."),
    # --- apex, SOA, NS, TXT ------------------------------------------------------
    nodata("apex A is NODATA", "cluster.local.", dns.A),
    nodata("apex AAAA is NODATA", "cluster.local.", dns.AAAA),
    nodata("apex SRV is NODATA", "cluster.local.", dns.SRV),
    nodata("apex HINFO is NODATA", "cluster.local.", HINFO),
    nodata("apex MX is NODATA", "cluster.local.", dns.MX),
    case("apex SOA", "cluster.local.", dns.SOA, answers=[SOA()]),
    case("apex SOA in the client's case", "Cluster.Local.", dns.SOA,
         answers=[SOA("Cluster.Local.")]),
    nodata("SOA below the apex is NODATA", W, dns.SOA),
    nodata("SOA for a name that does not exist is still NODATA", "nothing.cluster.local.",
           dns.SOA),
    case("apex NS names the DNS service whose endpoints hold our IP, with glue",
         "cluster.local.", dns.NS,
         answers=[("cluster.local.", "NS", 5, "kube-dns.kube-system.svc.cluster.local.")],
         additional=[A("kube-dns.kube-system.svc.cluster.local.", "10.96.0.2")]),
    case("apex NS falls back to ns.dns and our own IPs", "cluster.local.", dns.NS,
         answers=[("cluster.local.", "NS", 5, "ns.dns.cluster.local.")],
         additional=[A("ns.dns.cluster.local.", "192.0.2.53"),
                     AAAA("ns.dns.cluster.local.", "2001:db8::53")],
         opts="nsaddr_other"),
    nodata("apex NS without any address is NODATA", "cluster.local.", dns.NS,
           opts="nsaddr_none"),
    nodata("CoreDNS: apex NS in mixed case misses the NS branch (NODATA)",
           "Cluster.local.", dns.NS, zone="Cluster.local."),
    nxdomain("negative answers carry the SOA in the client's case",
             "Svc0.shop.svc.CLUSTER.local.", zone="CLUSTER.local."),
    case("ns.dns A: the ClusterIP of our own service", "ns.dns.cluster.local.", dns.A,
         answers=[A("ns.dns.cluster.local.", "10.96.0.2")]),
    case("ns.dns A without our service: our own IPs", "ns.dns.cluster.local.", dns.A,
         answers=[A("ns.dns.cluster.local.", "192.0.2.53")], opts="nsaddr_other"),
    case("ns.dns AAAA", "ns.dns.cluster.local.", dns.AAAA,
         answers=[AAAA("ns.dns.cluster.local.", "2001:db8::53")], opts="nsaddr_other"),
    nodata("ns.dns AAAA with only IPv4 is NODATA", "ns.dns.cluster.local.", dns.AAAA),
    nxdomain("CoreDNS: ns.dns with a mixed-case zone is NXDOMAIN", "ns.dns.Cluster.local.",
             zone="Cluster.local."),
    nodata("ns.dns MX is NODATA", "ns.dns.cluster.local.", dns.MX),
    nxdomain("CoreDNS: ns.dns TXT is NXDOMAIN", "ns.dns.cluster.local.", dns.TXT),
    nodata("NS below the apex on an existing name is NODATA", "svc.cluster.local.", dns.NS),
    nodata("NS on a namespace is NODATA", "shop.svc.cluster.local.", dns.NS),
    nxdomain("NS below the apex on a missing name is NXDOMAIN", "foo.svc.cluster.local.",
             dns.NS),
    case("dns-version TXT", "dns-version.cluster.local.", dns.TXT,
         answers=[("dns-version.cluster.local.", "TXT", 28800, '"1.1.0"')]),
    case("dns-version TXT in mixed case", "DNS-Version.Cluster.local.", dns.TXT,
         answers=[("DNS-Version.Cluster.local.", "TXT", 28800, '"1.1.0"')]),
    nxdomain("dns-version has no A", "dns-version.cluster.local."),
    nodata("TXT on an existing service is NODATA", W, dns.TXT),
    nxdomain("TXT on a missing service is NXDOMAIN", "svc0.shop.svc.cluster.local.", dns.TXT),
    nxdomain("CoreDNS: TXT at the apex is NXDOMAIN", "cluster.local.", dns.TXT),
    nxdomain("CoreDNS: TXT on a namespace is NXDOMAIN", "shop.svc.cluster.local.", dns.TXT),
    nodata("MX on a service is NODATA", W, dns.MX),
    nxdomain("MX on a missing service is NXDOMAIN", "svc0.shop.svc.cluster.local.", dns.MX),
    nodata("HTTPS on a service is NODATA (fake A lookup)", W, HTTPS),
    nxdomain("CAA on a missing service is NXDOMAIN (fake A lookup)",
             "svc0.shop.svc.cluster.local.", CAA),
    nodata("ANY on a service is NODATA (fake A lookup)", W, dns.ALL_RECORDS),
    nxdomain("ANY on a missing name is NXDOMAIN", "svc0.shop.svc.cluster.local.",
             dns.ALL_RECORDS),
    nodata("CNAME on ns.dns is NODATA", "ns.dns.cluster.local.", dns.CNAME),
    case("SRV on a headless endpoint name", "db-0." + DB, dns.SRV,
         answers=[SRV("db-0." + DB, 100, 5432, "db-0." + DB)],
         additional=[A("db-0." + DB, "10.244.1.10")]),
    case("multicluster zone apex SOA", CL, dns.SOA, answers=[SOA(CL)]),
    case("AXFR is refused", "cluster.local.", dns.AXFR, REFUSED),
    case("IXFR is refused", "cluster.local.", dns.IXFR, REFUSED),
    nodata("PTR on a forward service name is NODATA", W, dns.PTR),
    nxdomain("PTR on a missing forward name is NXDOMAIN", "foo.cluster.local.", dns.PTR),
    # --- reverse ------------------------------------------------------------------
    case("PTR of a ClusterIP", "10.0.96.10.in-addr.arpa.", dns.PTR,
         answers=[PTR("10.0.96.10.in-addr.arpa.", W)]),
    case("PTR of a headless endpoint with hostname", "10.1.244.10.in-addr.arpa.", dns.PTR,
         answers=[PTR("10.1.244.10.in-addr.arpa.", "db-0." + DB)]),
    case("PTR of an endpoint without hostname: dashed IP", "5.1.244.10.in-addr.arpa.", dns.PTR,
         answers=[PTR("5.1.244.10.in-addr.arpa.", "10-244-1-5." + W)]),
    case("PTR of an endpoint with endpoint_pod_names", "5.1.244.10.in-addr.arpa.", dns.PTR,
         answers=[PTR("5.1.244.10.in-addr.arpa.", "web-7d9f-x1." + W)], opts="podnames"),
    case("PTR of an IPv6 ClusterIP",
         "0.3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.d.f.ip6.arpa.", dns.PTR,
         answers=[PTR("0.3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.d.f.ip6.arpa.",
                      "dual.shop.svc.cluster.local.")]),
    case("PTR of an IPv6 endpoint",
         "a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.4.4.2.0.0.1.0.0.0.0.d.f.ip6.arpa.", dns.PTR,
         answers=[PTR("a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.4.4.2.0.0.1.0.0.0.0.d.f.ip6.arpa.",
                      "fd00-10-244--a." + DB)]),
    case("PTR owner keeps the client's case", "10.0.96.10.IN-ADDR.arpa.", dns.PTR,
         answers=[PTR("10.0.96.10.IN-ADDR.arpa.", W)]),
    nxdomain("PTR of a not-ready endpoint", "7.3.244.10.in-addr.arpa.", dns.PTR,
             zone="in-addr.arpa."),
    nxdomain("PTR of an unknown IP", "1.2.3.4.in-addr.arpa.", dns.PTR, zone="in-addr.arpa."),
    case("CoreDNS: PTR does not check that the namespace exists unless `namespaces` is set",
         "9.9.96.10.in-addr.arpa.", dns.PTR,
         answers=[PTR("9.9.96.10.in-addr.arpa.", "orphan.ghost.svc.cluster.local.")]),
    nxdomain("PTR honours the namespaces option", "10.1.96.10.in-addr.arpa.", dns.PTR,
             opts="namespaces", zone="in-addr.arpa."),
    nxdomain("CoreDNS: A on a reverse name is NXDOMAIN", "10.0.96.10.in-addr.arpa.", dns.A,
             zone="in-addr.arpa."),
    nxdomain("partial reverse name is NXDOMAIN", "0.96.10.in-addr.arpa.", dns.PTR,
             zone="in-addr.arpa."),
    nodata("reverse zone apex PTR is NODATA", "in-addr.arpa.", dns.PTR, zone="in-addr.arpa."),
    case("reverse zone apex SOA", "in-addr.arpa.", dns.SOA, answers=[SOA("in-addr.arpa.")]),
    # --- pods ---------------------------------------------------------------------
    nxdomain("pods disabled: pod names are NXDOMAIN", "10-244-1-5.shop.pod.cluster.local."),
    nxdomain("pods disabled: even the namespace under pod", "shop.pod.cluster.local."),
    case("pods insecure: any IP-shaped name answers", "1-2-3-4.shop.pod.cluster.local.", dns.A,
         answers=[A("1-2-3-4.shop.pod.cluster.local.", "1.2.3.4")], opts="insecure"),
    case("pods insecure: IPv6 pod name", "fd00--1.shop.pod.cluster.local.", dns.AAAA,
         answers=[AAAA("fd00--1.shop.pod.cluster.local.", "fd00::1")], opts="insecure"),
    nodata("pods insecure: IPv4 pod name AAAA is NODATA", "1-2-3-4.shop.pod.cluster.local.",
           dns.AAAA, opts="insecure"),
    nxdomain("pods insecure: not an IP", "blah.shop.pod.cluster.local.", opts="insecure"),
    nxdomain("pods insecure: leading zeros are not an IP", "010-0-0-1.shop.pod.cluster.local.",
             opts="insecure"),
    nxdomain("pods insecure: the namespace must exist", "1-2-3-4.ghost.pod.cluster.local.",
             opts="insecure"),
    nodata("pods insecure: existing namespace under pod is NODATA", "shop.pod.cluster.local.",
           dns.A, opts="insecure"),
    case("CoreDNS: pods insecure ignores an extra label on the left",
         "x.1-2-3-4.shop.pod.cluster.local.", dns.A,
         answers=[A("x.1-2-3-4.shop.pod.cluster.local.", "1.2.3.4")], opts="insecure"),
    case("pods verified: a running pod", "10-244-1-5.shop.pod.cluster.local.", dns.A,
         answers=[A("10-244-1-5.shop.pod.cluster.local.", "10.244.1.5")], opts="verified"),
    nxdomain("pods verified: wrong namespace", "10-244-1-5.default.pod.cluster.local.",
             opts="verified"),
    nxdomain("pods verified: a pod being deleted was never stored",
             "10-244-9-9.shop.pod.cluster.local.", opts="verified"),
    case("pods verified: host-network pods share an IP across namespaces",
         "192-168-0-10.default.pod.cluster.local.", dns.A,
         answers=[A("192-168-0-10.default.pod.cluster.local.", "192.168.0.10")], opts="verified"),
    case("pods verified: the other namespace too", "192-168-0-10.kube-system.pod.cluster.local.",
         dns.A, answers=[A("192-168-0-10.kube-system.pod.cluster.local.", "192.168.0.10")],
         opts="verified"),
    # --- options --------------------------------------------------------------------
    nxdomain("ignore empty_service: ClusterIP without ready endpoints is NXDOMAIN",
             "cart.shop.svc.cluster.local.", opts="ignore_empty"),
    case("ignore empty_service keeps services with endpoints", W, dns.A,
         answers=[A(W, "10.96.0.10")], opts="ignore_empty"),
    case("ignore empty_service leaves ExternalName alone", "ext.shop.svc.cluster.local.",
         dns.CNAME, answers=[CNAME("ext.shop.svc.cluster.local.", "api.example.com.")],
         opts="ignore_empty"),
    nxdomain("noendpoints: headless is NXDOMAIN", DB, opts="noendpoints"),
    nxdomain("noendpoints: endpoint names are NXDOMAIN", "10-244-1-5." + W, opts="noendpoints"),
    case("noendpoints: ClusterIP still answers", W, dns.A, answers=[A(W, "10.96.0.10")],
         opts="noendpoints"),
    nxdomain("noendpoints: no endpoint PTRs", "5.1.244.10.in-addr.arpa.", dns.PTR,
             opts="noendpoints", zone="in-addr.arpa."),
    case("noendpoints: ns.dns falls back to our own IPs", "ns.dns.cluster.local.", dns.A,
         answers=[A("ns.dns.cluster.local.", "10.244.0.2")], opts="noendpoints"),
    nxdomain("namespaces option hides other namespaces", "web.team-b.svc.cluster.local.",
             opts="namespaces"),
    nxdomain("namespaces option: hidden namespace name is NXDOMAIN", "team-b.svc.cluster.local.",
             opts="namespaces"),
    case("namespaces option keeps listed namespaces", W, dns.A, answers=[A(W, "10.96.0.10")],
         opts="namespaces"),
    case("ttl option applies to records", W, dns.A, answers=[A(W, "10.96.0.10", ttl=30)],
         opts="ttl30"),
    case("ttl option is the SOA minimum and TTL", "svc0.shop.svc.cluster.local.", dns.A, NX,
         authority=[SOA(ttl=30)], opts="ttl30"),
    case("SOA TTL is capped at 300, minimum is the ttl", "svc0.shop.svc.cluster.local.", dns.A,
         NX, authority=[SOA(ttl=300, minimum=600)], opts="ttl600"),
    # --- zonal (CoreDNS 1.14.7) ------------------------------------------------------
    case("zonal pin narrows to the zone", "us-west-2a.pin._zone." + ZH, dns.A,
         answers=[A("us-west-2a.pin._zone." + ZH, "10.244.7.1")], opts="zonal"),
    case("zonal pin matches zones case-insensitively", "us-west-2b.pin._zone." + ZH, dns.A,
         answers=[A("us-west-2b.pin._zone." + ZH, "10.244.7.2"),
                  A("us-west-2b.pin._zone." + ZH, "10.244.7.3")], opts="zonal"),
    nodata("zonal pin with no endpoint in the zone is NODATA", "us-west-2c.pin._zone." + ZH,
           dns.A, opts="zonal"),
    nodata("zonal pin empty zone: TXT is NODATA too", "us-west-2c.pin._zone." + ZH, dns.TXT,
           opts="zonal"),
    nodata("zonal TXT on a populated zone is NODATA", "us-west-2a.pin._zone." + ZH, dns.TXT,
           opts="zonal"),
    case("zonal prefer narrows when the zone is populated", "us-west-2a.prefer._zone." + ZH,
         dns.A, answers=[A("us-west-2a.prefer._zone." + ZH, "10.244.7.1")], opts="zonal"),
    case("zonal prefer falls back to every endpoint", "us-west-2c.prefer._zone." + ZH, dns.A,
         answers=[A("us-west-2c.prefer._zone." + ZH, "10.244.7.1"),
                  A("us-west-2c.prefer._zone." + ZH, "10.244.7.2"),
                  A("us-west-2c.prefer._zone." + ZH, "10.244.7.3")], opts="zonal"),
    case("zonal pin SRV is zone-filtered", "us-west-2b.pin._zone." + ZH, dns.SRV,
         answers=[SRV("us-west-2b.pin._zone." + ZH, 50, 80, "10-244-7-2." + ZH),
                  SRV("us-west-2b.pin._zone." + ZH, 50, 80, "10-244-7-3." + ZH)],
         additional=[A("10-244-7-2." + ZH, "10.244.7.2"), A("10-244-7-3." + ZH, "10.244.7.3")],
         opts="zonal"),
    nodata("zonal topology zone may span labels", "corp.example.pin._zone." + ZH, dns.A,
           opts="zonal"),
    nodata("zonal name of a headless service without endpoints is NODATA",
           "us-west-2a.prefer._zone.zh-empty.shop.svc.cluster.local.", dns.A, opts="zonal"),
    nxdomain("zonal name of a missing service is NXDOMAIN",
             "us-west-2a.pin._zone.ghost.shop.svc.cluster.local.", opts="zonal"),
    nxdomain("zonal unknown directive is NXDOMAIN", "us-west-2a.florp._zone." + ZH,
             opts="zonal"),
    nxdomain("zonal names are headless-only", "us-west-2a.pin._zone." + W, opts="zonal"),
    nxdomain("zonal names are NXDOMAIN without the option", "us-west-2a.pin._zone." + ZH),
    case("zonal option leaves ordinary headless names alone", ZH, dns.A,
         answers=[A(ZH, "10.244.7.1"), A(ZH, "10.244.7.2"), A(ZH, "10.244.7.3")],
         opts="zonal"),
    # --- multicluster ------------------------------------------------------------------
    case("multicluster ClusterSetIP A", "web.shop.svc." + CL, dns.A,
         answers=[A("web.shop.svc." + CL, "10.100.0.10")]),
    case("multicluster headless A across clusters", "db.shop.svc." + CL, dns.A,
         answers=[A("db.shop.svc." + CL, "10.1.0.5"), A("db.shop.svc." + CL, "10.2.0.6")]),
    case("multicluster headless SRV targets carry the cluster id", "db.shop.svc." + CL, dns.SRV,
         answers=[SRV("db.shop.svc." + CL, 50, 5432, "db-0.c1.db.shop.svc." + CL),
                  SRV("db.shop.svc." + CL, 50, 5432, "10-2-0-6.c2.db.shop.svc." + CL)],
         additional=[A("db-0.c1.db.shop.svc." + CL, "10.1.0.5"),
                     A("10-2-0-6.c2.db.shop.svc." + CL, "10.2.0.6")]),
    case("multicluster _port._proto SRV", "_postgres._tcp.db.shop.svc." + CL, dns.SRV,
         answers=[SRV("_postgres._tcp.db.shop.svc." + CL, 50, 5432, "db-0.c1.db.shop.svc." + CL),
                  SRV("_postgres._tcp.db.shop.svc." + CL, 50, 5432,
                      "10-2-0-6.c2.db.shop.svc." + CL)],
         additional=[A("db-0.c1.db.shop.svc." + CL, "10.1.0.5"),
                     A("10-2-0-6.c2.db.shop.svc." + CL, "10.2.0.6")]),
    case("multicluster endpoint.cluster name", "db-0.c1.db.shop.svc." + CL, dns.A,
         answers=[A("db-0.c1.db.shop.svc." + CL, "10.1.0.5")]),
    nxdomain("multicluster endpoint without cluster id is NXDOMAIN", "db-0.db.shop.svc." + CL,
             zone=CL),
    nxdomain("multicluster endpoint in the wrong cluster", "db-0.c2.db.shop.svc." + CL,
             zone=CL),
    nxdomain("multicluster unknown import (SOA of the clusterset zone)",
             "svc0.shop.svc." + CL, zone=CL),
    nxdomain("multicluster ignore empty_service", "cart.shop.svc." + CL, opts="ignore_empty",
             zone=CL),
    case("multicluster ignore empty_service keeps imports with endpoints",
         "web.shop.svc." + CL, dns.A, answers=[A("web.shop.svc." + CL, "10.100.0.10")],
         opts="ignore_empty"),
]


@pytest.mark.parametrize(
    "opts, qname, qtype, rcode, answers, authority, additional, chase", TABLE
)
def test_answer_table(opts, qname, qtype, rcode, answers, authority, additional, chase):
    """Each row: the exact sections CoreDNS sends for that name, type and option set."""
    got = answer(cache_for(opts), OPTIONS[opts], qname, qtype, _zone_of(qname.rstrip(".") + "."))
    assert isinstance(got, Answer)
    assert [render(r) for r in got.answers] == list(answers)
    assert [render(r) for r in got.authority] == list(authority)
    assert [render(r) for r in got.additional] == list(additional)
    assert got.rcode == rcode
    assert got.name_error is (rcode == NX)
    assert got.chase == chase


# --------------------------------------------------------------------------
# Details outside the table


def test_chase_answer_carries_the_soa_for_the_nodata_fallback():
    """An answer to chase carries the zone SOA, for the NODATA sent if the chase fails."""
    got = answer(CACHE, BASE, b"ext.shop.svc.cluster.local", dns.A, "cluster.local.")
    assert got.chase == "api.example.com."
    assert got.authority == ()
    assert render(got.soa) == SOA()


def test_negative_answers_carry_soa_field_too():
    """NXDOMAIN and NODATA expose the SOA both in authority and as ``soa``."""
    got = answer(CACHE, BASE, b"svc0.shop.svc.cluster.local", dns.A, "cluster.local.")
    assert got.authority == (got.soa,)


def test_owner_names_are_bytes_without_trailing_dot():
    """Records follow Twisted's convention: bytes names without the trailing dot."""
    got = answer(CACHE, BASE, b"_http._tcp.web.shop.svc.cluster.local", dns.SRV, "cluster.local.")
    assert got.answers[0].name == dns.Name(b"_http._tcp.web.shop.svc.cluster.local")
    assert got.answers[0].payload.target == dns.Name(b"web.shop.svc.cluster.local")


def test_str_and_bytes_qnames_agree():
    """A text qname and its bytes give the same answer."""
    a = answer(CACHE, BASE, "web.shop.svc.cluster.local.", dns.A, "cluster.local.")
    b = answer(CACHE, BASE, b"web.shop.svc.cluster.local.", dns.A, "cluster.local.")
    assert [render(r) for r in a.answers] == [render(r) for r in b.answers]


def test_soa_function():
    """soa() builds the zone SOA with the given serial and the ttl rules."""
    opts = replace(BASE, ttl=30)
    assert render(soa(opts, "cluster.local.", 42)) == SOA(ttl=30, serial=42)


def test_soa_serial_follows_cache_modified():
    """The SOA serial is the cache's last DNS-visible change, as an integer."""
    cache = ClusterCache(clock=lambda: 1234.9)
    cache.replace("namespaces", [namespace_from_json(namespace_json("shop"))])
    got = answer(cache, BASE, b"cluster.local", dns.SOA, "cluster.local.")
    assert render(got.answers[0]) == SOA(serial=1234)


def test_services_and_imports_are_read_alike_but_only_imports_name_the_cluster():
    """One lookup serves Services and ServiceImports: a cluster id is only put in (and
    matched against) multicluster names, and an import is never an ExternalName."""
    cache = ClusterCache(clock=lambda: NOW)
    cache.replace("namespaces", [namespace_from_json(namespace_json("shop"))])
    cache.replace("services", [service_from_json(service_json("shop", "db", ("None",), [("pg", 5432, "TCP")]))])
    # A plain slice that happens to carry a source-cluster label.
    labels = {"kubernetes.io/service-name": "db", "multicluster.kubernetes.io/source-cluster": "c1"}
    cache.replace("endpointslices", [endpoint_slice_from_json(
        slice_json("shop", "db-1", "db", [endpoint("10.244.1.1", hostname="db-0")], [("pg", 5432, "TCP")],
                   labels=labels))])
    cache.replace("serviceimports", [
        service_import_from_json(import_json("shop", "db", "Headless", [], [("pg", 5432, "TCP")])),
        service_import_from_json(import_json("shop", "odd", "ExternalName", ["10.100.0.99"], [TCP_HTTP])),
    ])
    cache.replace("mcendpointslices", [mc_endpoint_slice_from_json(
        mc_slice_json("shop", "db-C2", "db", "C2", [endpoint("10.2.0.7", hostname="db-0")], [("pg", 5432, "TCP")]))])

    def rendered(name: str, qtype: int, zone: str) -> list:
        return [render(r) for r in answer(cache, BASE, name, qtype, zone).answers]

    plain = "db.shop.svc.cluster.local."
    assert rendered(plain, dns.SRV, "cluster.local.") == [SRV(plain, 100, 5432, "db-0.db.shop.svc.cluster.local.")]
    assert rendered("db-0.c1.db.shop.svc.cluster.local.", dns.A, "cluster.local.") == []
    mc = "db.shop.svc." + CL
    assert rendered(mc, dns.SRV, CL) == [SRV(mc, 100, 5432, "db-0.C2.db.shop.svc." + CL)]
    assert rendered("db-0.c2.db.shop.svc." + CL, dns.A, CL) == [A("db-0.c2.db.shop.svc." + CL, "10.2.0.7")]
    assert answer(cache, BASE, "db-0.c1.db.shop.svc." + CL, dns.A, CL).name_error
    odd = "odd.shop.svc." + CL
    assert rendered(odd, dns.A, CL) == [A(odd, "10.100.0.99")]


def test_multicluster_zone_uses_multicluster_serial():
    """A multicluster zone's SOA serial is the multicluster modification time."""
    times = iter([100.0, 200.0])
    cache = ClusterCache(clock=lambda: next(times))
    cache.replace("namespaces", [namespace_from_json(namespace_json("shop"))])
    cache.replace("serviceimports", [service_import_from_json(d) for d in IMPORTS])
    got = answer(cache, BASE, b"clusterset.local", dns.SOA, CL)
    assert render(got.answers[0]) == SOA(CL, serial=200)
    got = answer(cache, BASE, b"cluster.local", dns.SOA, "cluster.local.")
    assert render(got.answers[0]) == SOA(serial=100)


def test_srv_weight_has_a_floor_of_one():
    """With more than 100 records the SRV weight is 1, never 0."""
    cache = ClusterCache(clock=lambda: NOW)
    cache.replace("namespaces", [namespace_from_json(namespace_json("big"))])
    cache.replace("services", [service_from_json(service_json("big", "h", ("None",),
                                                              [("p", 1, "TCP")]))])
    eps = [endpoint(f"10.9.{i // 250}.{i % 250}") for i in range(150)]
    cache.replace("endpointslices", [endpoint_slice_from_json(
        slice_json("big", "h-1", "h", eps, [("p", 1, "TCP")]))])
    got = answer(cache, BASE, b"h.big.svc.cluster.local", dns.SRV, "cluster.local.")
    assert len(got.answers) == 150
    assert {r.payload.weight for r in got.answers} == {1}


def test_duplicate_endpoint_in_two_slices_is_answered_once():
    """An address present in two slices of a service (slice skew) gives one A record."""
    cache = ClusterCache(clock=lambda: NOW)
    cache.replace("namespaces", [namespace_from_json(namespace_json("shop"))])
    cache.replace("services", [service_from_json(service_json("shop", "h", ("None",),
                                                              [TCP_HTTP]))])
    cache.replace("endpointslices", [
        endpoint_slice_from_json(slice_json("shop", "h-1", "h", [endpoint("10.1.1.1")], [TCP_HTTP])),
        endpoint_slice_from_json(slice_json("shop", "h-2", "h", [endpoint("10.1.1.1")], [TCP_HTTP])),
    ])
    got = answer(cache, BASE, b"h.shop.svc.cluster.local", dns.A, "cluster.local.")
    assert [render(r) for r in got.answers] == [A("h.shop.svc.cluster.local.", "10.1.1.1")]
    got = answer(cache, BASE, b"h.shop.svc.cluster.local", dns.SRV, "cluster.local.")
    # CoreDNS: weight counts both copies, the duplicate SRV and glue are dropped.
    assert [render(r) for r in got.answers] == [
        SRV("h.shop.svc.cluster.local.", 50, 80, "10-1-1-1.h.shop.svc.cluster.local.")]
    assert len(got.additional) == 1


def test_ipv6_dashed_name_with_trailing_colons():
    """An IPv6 endpoint ending in '::' is named with a trailing '-0'."""
    cache = ClusterCache(clock=lambda: NOW)
    cache.replace("namespaces", [namespace_from_json(namespace_json("shop"))])
    cache.replace("services", [service_from_json(service_json("shop", "h", ("None",),
                                                              [TCP_HTTP]))])
    cache.replace("endpointslices", [endpoint_slice_from_json(
        slice_json("shop", "h-1", "h", [endpoint("fd00:1::")], [TCP_HTTP], address_type="IPv6"))])
    got = answer(cache, BASE, b"fd00-1--0.h.shop.svc.cluster.local", dns.AAAA, "cluster.local.")
    assert [render(r) for r in got.answers] == [
        AAAA("fd00-1--0.h.shop.svc.cluster.local.", "fd00:1::")]


def test_extract_address_from_reverse():
    """Reverse names turn into canonical IP text; partial or malformed ones into ''."""
    assert extract_address_from_reverse("4.3.2.1.in-addr.arpa.") == "1.2.3.4"
    assert extract_address_from_reverse("3.2.1.in-addr.arpa.") == ""
    assert extract_address_from_reverse("x.3.2.1.in-addr.arpa.") == ""
    v6 = ".".join(reversed("20010db8000000000000000000000001")) + ".ip6.arpa."
    assert extract_address_from_reverse(v6) == "2001:db8::1"
    mapped = ".".join(reversed("00000000000000000000ffff01020304")) + ".ip6.arpa."
    assert extract_address_from_reverse(mapped) == "1.2.3.4"
    assert extract_address_from_reverse("1.0.ip6.arpa.") == ""
    assert extract_address_from_reverse("web.cluster.local.") == ""


def test_options_need_a_forward_zone():
    """A stanza with only reverse zones is refused, as CoreDNS's setup does."""
    with pytest.raises(ValueError):
        AnswerOptions(zones=("10.in-addr.arpa.",))


def test_primary_zone_is_first_forward_zone():
    """PTR targets use the first non-reverse zone; bare in-addr.arpa. counts as forward."""
    assert AnswerOptions(zones=("10.in-addr.arpa.", "cluster.local.")).primary_zone == "cluster.local."
    assert AnswerOptions(zones=("in-addr.arpa.", "cluster.local.")).primary_zone == "in-addr.arpa."


def test_answer_does_not_mutate_the_cache():
    """Answering leaves the cache's generation and serial unchanged."""
    gen, mod = CACHE.generation, CACHE.modified
    answer(CACHE, BASE, b"db.shop.svc.cluster.local", dns.SRV, "cluster.local.")
    assert (CACHE.generation, CACHE.modified) == (gen, mod)


def test_memo_follows_cache_changes():
    """A memoised answer is reused until a DNS-visible change, then rebuilt."""
    cache = build_cache()
    first = answer(cache, BASE, b"web.shop.svc.cluster.local", dns.A, "cluster.local.")
    assert answer(cache, BASE, b"web.shop.svc.cluster.local", dns.A, "cluster.local.") is first
    moved = service_json("shop", "web", ("10.96.0.99",), [("http", 80, "TCP")])
    cache.apply("services", [("MODIFIED", "shop/web", service_from_json(moved))])
    again = answer(cache, BASE, b"web.shop.svc.cluster.local", dns.A, "cluster.local.")
    assert [render(r) for r in again.answers] == [A(W, "10.96.0.99")]


def test_memo_is_per_options():
    """Two option sets on one cache never share memoised answers."""
    cache = build_cache()
    plain = answer(cache, BASE, b"web-7d9f-x1." + W.encode(), dns.A, "cluster.local.")
    named = answer(cache, OPTIONS["podnames"], b"web-7d9f-x1." + W.encode(), dns.A,
                   "cluster.local.")
    assert plain.rcode == NX and named.rcode == OK


def test_memo_is_bounded(monkeypatch):
    """The memo never holds more records than MEMO_MAX_RECORDS."""
    import kubernetai.plugins.kubernetai.records as records

    monkeypatch.setattr(records, "MEMO_MAX_RECORDS", 10)
    cache = build_cache()
    for i in range(50):
        answer(cache, BASE, f"svc{i}.shop.svc.cluster.local".encode(), dns.A, "cluster.local.")
        assert cache.memo_records <= 10 + 1


def test_table_without_memo(monkeypatch):
    """With the memo disabled every table row gives the same sections."""
    import kubernetai.plugins.kubernetai.records as records

    monkeypatch.setattr(records, "MEMO_MAX_RECORDS", 0)
    caches = {False: build_cache(), True: build_cache(with_zones=True)}
    for p in TABLE:
        opts, qname, qtype, rcode, answers, authority, additional, chase = p.values
        cache = caches[opts == "zonal"]
        got = answer(cache, OPTIONS[opts], qname, qtype, _zone_of(qname.rstrip(".") + "."))
        assert ([render(r) for r in got.answers], [render(r) for r in got.authority],
                [render(r) for r in got.additional], got.rcode, got.chase) == (
            list(answers), list(authority), list(additional), rcode, chase), p.id
    assert caches[False].memo == {} and caches[True].memo == {}
