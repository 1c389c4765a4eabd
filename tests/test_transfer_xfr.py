"""A stanza's zone transfer record by record, against CoreDNS's own table.

The cluster is the one CoreDNS's ``plugin/kubernetes/xfr_test.go`` transfers (its services
``external``, ``external-to-service``, ``hdls1``, ``hdlsprtls``, ``kubedns``,
``svc-dual-stack``, ``svc1``, ``svc6``, ``svcempty`` in namespaces ``testns`` and
``kube-system``, this server's address 10.0.0.10), built from API JSON, and the expected
records are that test's ``expectedZone`` (and ``expectedMultiClusterZone``), with one
difference its comparison hides: the glue's TTL is 0 (``nsAddrs`` never sets one; the Go
test compares with ``dns.IsDuplicate``, which ignores TTLs). Then the rules xfr.go has
that its table does not show: non-exposed namespaces, a Service without ports, an
ExternalName that is an IP, equal names in two namespaces, several slices, the glue of a
server whose own Service is found, and an IXFR.
"""

from __future__ import annotations

from typing import Any

import dns.message
import dns.rrset
import pytest

from kubernetai.core.codec import parse_request
from kubernetai.plugins.kubernetai.cache import ClusterCache
from kubernetai.plugins.kubernetai.objects import (
    endpoint_slice_from_json,
    mc_endpoint_slice_from_json,
    namespace_from_json,
    service_from_json,
    service_import_from_json,
)
from kubernetai.plugins.kubernetai.records import AnswerOptions
from kubernetai.plugins.kubernetai.xfr import srv_weight, transfer
from kubernetai.plugins.transfer.messages import LIMIT, messages

SERIAL = 3


def service(ns: str, name: str, ips: tuple[str, ...] = ("None",), ports: tuple = (),
            kind: str = "ClusterIP", external: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": kind,
                            "ports": [{"name": n, "port": p, "protocol": proto}
                                      for n, p, proto in ports]}
    if external is not None:
        spec["externalName"] = external
    else:
        spec["clusterIP"] = ips[0]
        spec["clusterIPs"] = list(ips)
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


def endpoints(ns: str, service_name: str, name: str, addresses: list[tuple[str, str]],
              ports: tuple = (), label: str = "kubernetes.io/service-name",
              extra_labels: dict | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns,
                         "labels": {label: service_name, **(extra_labels or {})}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], **({"hostname": host} if host else {}),
                           "conditions": {"ready": True}} for ip, host in addresses],
            "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports]}


HDLS1 = [("172.0.0.2", ""), ("172.0.0.3", ""), ("172.0.0.4", "dup-name"),
         ("172.0.0.5", "dup-name"), ("5678:abcd::1", ""), ("5678:abcd::2", "")]


def coredns_cluster() -> ClusterCache:
    """xfr_test.go's cluster (APIConnServeTest), its services in EndpointSlice form."""
    cache = ClusterCache(clock=lambda: float(SERIAL))
    cache.replace("namespaces", [namespace_from_json({"metadata": {"name": ns}})
                                 for ns in ("testns", "kube-system")])
    http = (("http", 80, "TCP"),)
    cache.replace("services", [service_from_json(s) for s in (
        service("testns", "svc1", ("10.0.0.1",), http),
        service("testns", "svcempty", ("10.0.0.1",), http),
        service("testns", "svc6", ("1234:abcd::1",), http),
        service("testns", "hdls1", ports=http),
        service("testns", "external", ports=(("http", 80, "TCP"),), kind="ExternalName",
                external="ext.interwebs.test"),
        service("testns", "external-to-service", ports=http, kind="ExternalName",
                external="svc1.testns.svc.cluster.local"),
        service("testns", "hdlsprtls"),
        service("testns", "svc-dual-stack", ("10.0.0.3", "10::3"), http),
        service("kube-system", "kubedns", ("10.0.0.10",), (("dns", 53, "UDP"),)),
    )])
    cache.replace("endpointslices", [endpoint_slice_from_json(e) for e in (
        endpoints("testns", "svc1", "svc1-a", [("172.0.0.1", "ep1a")], http),
        endpoints("testns", "hdls1", "hdls1-a", HDLS1, http),
        endpoints("testns", "hdlsprtls", "hdlsprtls-a", [("172.0.0.20", "")],
                  (("", -1, ""),)),
    )])
    return cache


def expected(zone: str) -> list[str]:
    def z(name: str) -> str:
        return name.replace("cluster.local.", zone)
    hdls = "hdls1.testns.svc.cluster.local."
    hosts = ["172-0-0-2", "172-0-0-3", "dup-name", "dup-name", "5678-abcd--1", "5678-abcd--2"]
    lines = [
        "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. "
        "3 7200 1800 86400 5",
        "cluster.local. 5 IN NS ns.dns.cluster.local.",
        "ns.dns.cluster.local. 0 IN A 10.0.0.10",
        "external.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test.",
        "external-to-service.testns.svc.cluster.local. 5 IN CNAME "
        "svc1.testns.svc.cluster.local.",
    ]
    for (ip, _), host in zip(HDLS1, hosts):
        kind = "AAAA" if ":" in ip else "A"
        lines += [f"{hdls} 5 IN {kind} {ip}", f"{host}.{hdls} 5 IN {kind} {ip}",
                  f"_http._tcp.{hdls} 5 IN SRV 0 16 80 {host}.{hdls}"]
    lines += [
        "hdlsprtls.testns.svc.cluster.local. 5 IN A 172.0.0.20",
        "172-0-0-20.hdlsprtls.testns.svc.cluster.local. 5 IN A 172.0.0.20",
        "kubedns.kube-system.svc.cluster.local. 5 IN A 10.0.0.10",
        "kubedns.kube-system.svc.cluster.local. 5 IN SRV 0 100 53 "
        "kubedns.kube-system.svc.cluster.local.",
        "_dns._udp.kubedns.kube-system.svc.cluster.local. 5 IN SRV 0 100 53 "
        "kubedns.kube-system.svc.cluster.local.",
        "svc-dual-stack.testns.svc.cluster.local. 5 IN A 10.0.0.3",
        "svc-dual-stack.testns.svc.cluster.local. 5 IN AAAA 10::3",
        "svc-dual-stack.testns.svc.cluster.local. 5 IN SRV 0 100 80 "
        "svc-dual-stack.testns.svc.cluster.local.",
        "_http._tcp.svc-dual-stack.testns.svc.cluster.local. 5 IN SRV 0 100 80 "
        "svc-dual-stack.testns.svc.cluster.local.",
        "svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1",
        "svc1.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc1.testns.svc.cluster.local.",
        "_http._tcp.svc1.testns.svc.cluster.local. 5 IN SRV 0 100 80 "
        "svc1.testns.svc.cluster.local.",
        "svc6.testns.svc.cluster.local. 5 IN AAAA 1234:abcd::1",
        "svc6.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc6.testns.svc.cluster.local.",
        "_http._tcp.svc6.testns.svc.cluster.local. 5 IN SRV 0 100 80 "
        "svc6.testns.svc.cluster.local.",
        "svcempty.testns.svc.cluster.local. 5 IN A 10.0.0.1",
        "svcempty.testns.svc.cluster.local. 5 IN SRV 0 100 80 "
        "svcempty.testns.svc.cluster.local.",
        "_http._tcp.svcempty.testns.svc.cluster.local. 5 IN SRV 0 100 80 "
        "svcempty.testns.svc.cluster.local.",
    ]
    lines.append(lines[0])
    return [z(line) for line in lines]


def texts(records: Any) -> list[str]:
    """The records as presentation lines, read back from the wire as a client would."""
    query = dns.message.make_query("cluster.local.", "AXFR")
    request = parse_request(query.to_wire(), False)
    assert not isinstance(request, (bytes, type(None)))
    out = []
    for wire in messages(request, records):
        message = dns.message.from_wire(wire, xfr=True, one_rr_per_rrset=True)
        out += [" ".join(rrset.to_text().split()) for rrset in message.answer]
    return out


OPTIONS = AnswerOptions(zones=("cluster.local.",), ns_addresses=("10.0.0.10",),
                        namespaces=frozenset({"testns", "kube-system"}))


def test_axfr_is_corednss_expected_zone():
    assert texts(transfer(coredns_cluster(), OPTIONS, "cluster.local.", 0)) == \
        expected("cluster.local.")


def test_ixfr_of_an_older_serial_is_the_whole_zone_and_of_the_current_one_its_soa():
    cache = coredns_cluster()
    assert texts(transfer(cache, OPTIONS, "cluster.local.", 1)) == expected("cluster.local.")
    current = list(transfer(cache, OPTIONS, "cluster.local.", SERIAL))
    assert [" ".join(line.split()) for line in texts(current)] == [expected("cluster.local.")[0]]
    newer = transfer(cache, OPTIONS, "cluster.local.", SERIAL + 1)
    assert len(list(newer)) > 1  # equality only, as CoreDNS (not "equal or newer")


def test_multicluster_zone_transfers_the_service_imports():
    """xfr_test.go's multicluster case: the same records, from ServiceImports and
    multicluster slices, in clusterset.local; the serial is still the cache's own."""
    cache = ClusterCache(clock=lambda: float(SERIAL))
    source = coredns_cluster()
    cache.replace("namespaces", list(source.namespaces.values()))
    http = [{"name": "http", "port": 80, "protocol": "TCP"}]
    imports = []
    for svc in source.services.values():
        if svc.is_external_name:
            continue
        headless = svc.cluster_ips[0] == "None"
        imports.append(service_import_from_json({
            "metadata": {"name": svc.name, "namespace": svc.namespace},
            "spec": {"type": "Headless" if headless else "ClusterSetIP",
                     "ips": [] if headless else list(svc.cluster_ips),
                     "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol}
                               for p in svc.ports if p.port >= 0] or
                              ([] if headless else http)}}))
    cache.replace("serviceimports", imports)
    label = "multicluster.kubernetes.io/service-name"
    cache.replace("mcendpointslices", [mc_endpoint_slice_from_json(e) for e in (
        endpoints("testns", "hdls1", "hdls1-a", HDLS1, (("http", 80, "TCP"),), label,
                  {"multicluster.kubernetes.io/source-cluster": "c1"}),
        endpoints("testns", "hdlsprtls", "hdlsprtls-a", [("172.0.0.20", "")], (), label,
                  {"multicluster.kubernetes.io/source-cluster": "c1"}),
    )])
    cache.modified_multicluster = 99.0
    options = AnswerOptions(zones=("cluster.local.", "clusterset.local."),
                            multicluster_zones=("clusterset.local.",),
                            ns_addresses=("10.0.0.10",))
    want = [line for line in expected("clusterset.local.") if " CNAME " not in line]
    assert texts(transfer(cache, options, "clusterset.local.", 0)) == want


def cluster(*services: dict, slices: tuple = ()) -> ClusterCache:
    cache = ClusterCache(clock=lambda: float(SERIAL))
    names = {s["metadata"]["namespace"] for s in services}
    cache.replace("namespaces", [namespace_from_json({"metadata": {"name": ns}})
                                 for ns in names])
    cache.replace("services", [service_from_json(s) for s in services])
    cache.replace("endpointslices", [endpoint_slice_from_json(e) for e in slices])
    return cache


def body(cache: ClusterCache, options: AnswerOptions, zone: str = "cluster.local.") -> list[str]:
    """The records between the SOAs, NS and glue, as text."""
    lines = texts(transfer(cache, options, zone, 0))
    return [line for line in lines[1:-1] if " NS " not in line and " 0 IN " not in line]


PLAIN = AnswerOptions(zones=("cluster.local.",))


def test_namespaces_not_exposed_are_left_out():
    cache = cluster(service("shop", "web", ("10.0.0.1",)), service("hidden", "web", ("10.0.0.2",)))

    def addresses(options: AnswerOptions) -> list[str]:
        return [line for line in body(cache, options) if " IN A " in line]
    assert addresses(PLAIN) == ["web.hidden.svc.cluster.local. 5 IN A 10.0.0.2",
                                "web.shop.svc.cluster.local. 5 IN A 10.0.0.1"]
    only_shop = AnswerOptions(zones=("cluster.local.",), namespaces=frozenset({"shop"}))
    assert addresses(only_shop) == ["web.shop.svc.cluster.local. 5 IN A 10.0.0.1"]
    del cache.namespaces["hidden"]  # not in the cache (namespace_labels): not exposed
    assert addresses(PLAIN) == ["web.shop.svc.cluster.local. 5 IN A 10.0.0.1"]


def test_services_of_one_name_come_by_namespace_and_unnamed_ports_only_at_the_service():
    cache = cluster(service("zeta", "api", ("10.0.0.1",), (("", 8080, "TCP"),)),
                    service("alpha", "api", ("10.0.0.2",), (("GRPC", 9000, "UDP"),)))
    assert body(cache, PLAIN) == [
        "api.alpha.svc.cluster.local. 5 IN A 10.0.0.2",
        "api.alpha.svc.cluster.local. 5 IN SRV 0 100 9000 api.alpha.svc.cluster.local.",
        "_grpc._udp.api.alpha.svc.cluster.local. 5 IN SRV 0 100 9000 "
        "api.alpha.svc.cluster.local.",
        "api.zeta.svc.cluster.local. 5 IN A 10.0.0.1",
        "api.zeta.svc.cluster.local. 5 IN SRV 0 100 8080 api.zeta.svc.cluster.local.",
    ]


def test_quirks_no_ports_ip_externalname_and_other_types():
    cache = cluster(service("ns", "bare", ("10.0.0.1",)),
                    service("ns", "byip", kind="ExternalName", external="192.0.2.1"),
                    service("ns", "lb", ("10.0.0.2",), kind="LoadBalancer"),
                    service("ns", "odd", ("10.0.0.3",), kind="Strange"))
    assert body(cache, PLAIN) == [
        # CoreDNS's sentinel port -1 for a Service without ports, as an uint16
        "bare.ns.svc.cluster.local. 5 IN A 10.0.0.1",
        "bare.ns.svc.cluster.local. 5 IN SRV 0 100 65535 bare.ns.svc.cluster.local.",
        "lb.ns.svc.cluster.local. 5 IN A 10.0.0.2",
        "lb.ns.svc.cluster.local. 5 IN SRV 0 100 65535 lb.ns.svc.cluster.local.",
    ]


def test_headless_slices_in_name_order_each_with_its_own_weight():
    http = (("http", 80, "TCP"),)
    cache = cluster(service("ns", "db", ports=http), slices=(
        endpoints("ns", "db", "db-b", [("10.1.0.3", "")], http),
        endpoints("ns", "db", "db-a", [("10.1.0.1", "db-0"), ("10.1.0.2", "db-1"),
                                       ("10.1.0.4", "db-2")], http),
    ))
    lines = body(cache, PLAIN)
    assert lines[:3] == ["db.ns.svc.cluster.local. 5 IN A 10.1.0.1",
                         "db-0.db.ns.svc.cluster.local. 5 IN A 10.1.0.1",
                         "_http._tcp.db.ns.svc.cluster.local. 5 IN SRV 0 33 80 "
                         "db-0.db.ns.svc.cluster.local."]
    assert lines[-1] == ("_http._tcp.db.ns.svc.cluster.local. 5 IN SRV 0 100 80 "
                         "10-1-0-3.db.ns.svc.cluster.local.")
    assert len(lines) == 12


@pytest.mark.parametrize("count,weight", [(1, 100), (2, 50), (3, 33), (6, 16), (7, 14),
                                          (100, 1), (101, 1), (1000, 1)])
def test_srv_weight(count, weight):
    assert srv_weight(count) == weight


def test_glue_of_a_server_found_in_its_own_service():
    """The server's address in a slice: the NS names that service (ClusterIP: per
    ClusterIP; headless: per endpoint at its hostname), glue TTL 0."""
    dns_port = (("dns", 53, "UDP"),)
    cache = cluster(service("kube-system", "kube-dns", ("10.96.0.10",), dns_port),
                    slices=(endpoints("kube-system", "kube-dns", "kube-dns-a",
                                      [("10.244.0.5", "")], dns_port),))
    options = AnswerOptions(zones=("cluster.local.",), ns_addresses=("10.244.0.5",))
    lines = texts(transfer(cache, options, "cluster.local.", 0))
    assert lines[1:3] == [
        "cluster.local. 5 IN NS kube-dns.kube-system.svc.cluster.local.",
        "kube-dns.kube-system.svc.cluster.local. 0 IN A 10.96.0.10"]
    headless = cluster(service("kube-system", "kube-dns", ports=dns_port),
                       slices=(endpoints("kube-system", "kube-dns", "kube-dns-a",
                                         [("10.244.0.5", "")], dns_port),))
    lines = texts(transfer(headless, options, "cluster.local.", 0))
    assert lines[1:3] == [
        "cluster.local. 5 IN NS 10-244-0-5.kube-dns.kube-system.svc.cluster.local.",
        "10-244-0-5.kube-dns.kube-system.svc.cluster.local. 0 IN A 10.244.0.5"]
    two = AnswerOptions(zones=("cluster.local.",), ns_addresses=("10.0.0.10", "fd00::10"))
    lines = texts(transfer(cluster(service("a", "b", ("10.0.0.1",))), two, "cluster.local.", 0))
    assert lines[1:4] == ["cluster.local. 5 IN NS ns.dns.cluster.local.",
                          "ns.dns.cluster.local. 0 IN A 10.0.0.10",
                          "ns.dns.cluster.local. 0 IN AAAA fd00::10"]


def test_a_name_below_the_zone_is_a_zone_of_its_own():
    """As CoreDNS's Matches: AXFR of a name under the stanza's zone roots everything there."""
    cache = cluster(service("ns", "web", ("10.0.0.1",)))
    lines = texts(transfer(cache, PLAIN, "sub.cluster.local.", 0))
    assert lines[0].startswith("sub.cluster.local. 5 IN SOA ns.dns.sub.cluster.local. "
                               "hostmaster.sub.cluster.local. 3 ")
    assert "web.ns.svc.sub.cluster.local. 5 IN A 10.0.0.1" in lines


def test_the_snapshot_holds_while_the_cache_changes():
    """Records are read from what the cache held when iteration began."""
    cache = cluster(*[service("ns", f"s{i:03}", (f"10.0.1.{i}",)) for i in range(1, 100)])
    records = iter(transfer(cache, PLAIN, "cluster.local.", 0))
    first = next(records)
    cache.replace("services", [service_from_json(service("ns", "late", ("10.0.2.1",)))])
    rest = list(records)
    names = {rr.name.name for rr in rest}
    assert b"late.ns.svc.cluster.local" not in names
    assert b"s099.ns.svc.cluster.local" in names
    assert rest[-1].type == first.type == 6


def test_messages_are_cut_before_63000_bytes_of_records():
    cache = cluster(*[service("namespace-with-a-long-name", f"service-{i:05}",
                              (f"10.{i // 250}.{i % 250}.1",),
                              (("http", 80, "TCP"), ("metrics", 9090, "TCP")))
                      for i in range(3000)])
    query = dns.message.make_query("cluster.local.", "AXFR", use_edns=0)
    request = parse_request(query.to_wire(), False)
    assert not isinstance(request, (bytes, type(None)))
    wires = list(messages(request, transfer(cache, PLAIN, "cluster.local.", 0)))
    assert len(wires) > 5
    overhead = 12 + len(request.question) + len(request.opt)
    total = 0
    for wire in wires:
        message = dns.message.from_wire(wire, xfr=True, one_rr_per_rrset=True)
        assert message.flags & dns.flags.AA and message.opt is not None
        assert len(wire) - overhead <= LIMIT
        total += len(message.answer)
    for wire in wires[:-1]:
        assert len(wire) - overhead > LIMIT - 200  # full: the next record did not fit
    assert total == 2 + 3000 * 5
