"""Converting raw API JSON into the trimmed DNS objects (CoreDNS ``object/*.go``)."""

from __future__ import annotations

import json
import sys
from dataclasses import FrozenInstanceError

import pytest

from kubernetai.plugins.kubernetai import objects as objects_module
from kubernetai.plugins.kubernetai.objects import (
    NO_PORTS,
    EndpointAddress,
    Port,
    endpoint_slice_from_json,
    mc_endpoint_slice_from_json,
    namespace_from_json,
    pod_from_json,
    reusing,
    service_from_json,
    service_import_from_json,
)

SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {
        "name": "web",
        "namespace": "shop",
        "uid": "u1",
        "resourceVersion": "7",
        "labels": {"app": "web"},
        "annotations": {"a": "b" * 300},
        "managedFields": [{"manager": "kubectl"}],
    },
    "spec": {
        "type": "LoadBalancer",
        "clusterIP": "10.96.0.10",
        "clusterIPs": ["10.96.0.10", "fd00::10"],
        "ports": [
            {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080},
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"},
        ],
        "externalIPs": ["203.0.113.7"],
        "selector": {"app": "web"},
    },
    "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}, {"hostname": "lb.example.net"}]}},
}


def test_service_keeps_dns_fields_only():
    """A Service keeps name, namespace, ClusterIPs, type, ports and external IPs, as tuples."""
    s = service_from_json(SERVICE)
    assert s.key == "shop/web"
    assert (s.name, s.namespace) == ("web", "shop")
    assert s.cluster_ips == ("10.96.0.10", "fd00::10")
    assert s.type == "LoadBalancer"
    assert s.ports == (Port("http", 80, "TCP"), Port("dns", 53, "UDP"))
    assert s.external_ips == ("203.0.113.7", "198.51.100.1", "lb.example.net")
    assert not s.headless and not s.is_external_name
    assert not hasattr(s, "__dict__")


def test_service_without_cluster_ips_falls_back_to_cluster_ip():
    """Without spec.clusterIPs the single spec.clusterIP is used."""
    s = service_from_json({"metadata": {"name": "h", "namespace": "n"},
                           "spec": {"clusterIP": "None"}})
    assert s.cluster_ips == ("None",)
    assert s.headless


def test_service_without_ports_gets_the_sentinel():
    """A service with no ports has one port -1 (SRV skips it, A still works)."""
    s = service_from_json({"metadata": {"name": "h", "namespace": "n"},
                           "spec": {"clusterIP": "10.0.0.1"}})
    assert s.ports == NO_PORTS == (Port("", -1, ""),)


def test_external_name_service():
    """An ExternalName service keeps its target; its ClusterIPs are ('',)."""
    s = service_from_json({"metadata": {"name": "e", "namespace": "n"},
                           "spec": {"type": "ExternalName", "externalName": "api.example.com"}})
    assert s.is_external_name
    assert s.external_name == "api.example.com"
    assert s.cluster_ips == ("",)
    assert not s.headless


def test_service_objects_are_frozen():
    """Converted objects cannot be modified."""
    s = service_from_json(SERVICE)
    with pytest.raises(FrozenInstanceError):
        s.name = "x"  # type: ignore[misc]


def test_service_dns_equal():
    """Any stored field change is DNS-visible; metadata noise is not even stored."""
    a = service_from_json(SERVICE)
    noisy = {**SERVICE, "metadata": {**SERVICE["metadata"], "resourceVersion": "8",
                                     "annotations": {}}}
    assert a.dns_equal(service_from_json(noisy))
    moved = {**SERVICE, "spec": {**SERVICE["spec"], "ports": [{"name": "http", "port": 81,
                                                               "protocol": "TCP"}]}}
    assert not a.dns_equal(service_from_json(moved))


def _slice(endpoints, ports=None, labels=None):
    d = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-abc",
            "namespace": "shop",
            "labels": {"kubernetes.io/service-name": "web"} if labels is None else labels,
            "resourceVersion": "3",
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
    }
    if ports is not None:
        d["ports"] = ports
    return d


def test_endpoint_slice_drops_not_ready():
    """ready=false endpoints are dropped; a missing ready (or conditions) counts as ready."""
    es = endpoint_slice_from_json(_slice([
        {"addresses": ["10.0.0.1"], "conditions": {"ready": True}, "hostname": "h1",
         "nodeName": "n1", "targetRef": {"kind": "Pod", "name": "web-1"}},
        {"addresses": ["10.0.0.2"], "conditions": {"ready": False, "serving": True,
                                                   "terminating": True}},
        {"addresses": ["10.0.0.3"], "conditions": {}},
        {"addresses": ["10.0.0.4"]},
        {"addresses": ["10.0.0.5"], "conditions": {"ready": None}},
    ], [{"name": "http", "port": 8080, "protocol": "TCP"}]))
    assert es.key == "shop/web-abc"
    assert es.service == "web"
    assert es.service_key == "shop/web"
    assert es.addresses == (
        EndpointAddress("10.0.0.1", "h1", "n1", "web-1"),
        EndpointAddress("10.0.0.3", "", "", ""),
        EndpointAddress("10.0.0.4", "", "", ""),
        EndpointAddress("10.0.0.5", "", "", ""),
    )
    assert es.ports == (Port("http", 8080, "TCP"),)


def test_endpoint_slice_long_pod_names_are_dropped():
    """A targetRef name of 64 characters or more is not kept (not a valid label)."""
    es = endpoint_slice_from_json(_slice([
        {"addresses": ["10.0.0.1"], "targetRef": {"kind": "Pod", "name": "p" * 63}},
        {"addresses": ["10.0.0.2"], "targetRef": {"kind": "Pod", "name": "p" * 64}},
    ]))
    assert [a.target_ref_name for a in es.addresses] == ["p" * 63, ""]


def test_endpoint_slice_ports_sentinel_and_missing_fields():
    """No ports gives the -1 sentinel; a port without number is -1, without name ''."""
    assert endpoint_slice_from_json(_slice([], None)).ports == NO_PORTS
    assert endpoint_slice_from_json(_slice([], [])).ports == NO_PORTS
    es = endpoint_slice_from_json(_slice([], [{"protocol": "UDP"}, {"name": "x", "port": 5}]))
    assert es.ports == (Port("", -1, "UDP"), Port("x", 5, ""))


def test_endpoint_slice_with_several_addresses_per_endpoint():
    """Every address of a ready endpoint is kept, with the endpoint's hostname."""
    es = endpoint_slice_from_json(_slice([{"addresses": ["10.0.0.1", "10.0.0.2"],
                                           "hostname": "h"}]))
    assert [(a.ip, a.hostname) for a in es.addresses] == [("10.0.0.1", "h"), ("10.0.0.2", "h")]


def test_endpoint_slice_without_service_label():
    """A slice without the service-name label belongs to the empty service name."""
    es = endpoint_slice_from_json(_slice([], labels={}))
    assert es.service == "" and es.service_key == "shop/"


def test_endpoint_slice_dns_equal_ignores_node_name():
    """Node names are not DNS-visible; IPs, hostnames, pod names and ports are."""
    base = [{"addresses": ["10.0.0.1"], "nodeName": "n1", "hostname": "h",
             "targetRef": {"name": "p"}}]
    a = endpoint_slice_from_json(_slice(base))
    b = endpoint_slice_from_json(_slice([{**base[0], "nodeName": "n2"}]))
    assert a != b and a.dns_equal(b)
    for change in ({"hostname": "h2"}, {"addresses": ["10.0.0.9"]}, {"targetRef": {"name": "q"}},
                   {"conditions": {"ready": False}}):
        assert not a.dns_equal(endpoint_slice_from_json(_slice([{**base[0], **change}])))
    assert not a.dns_equal(endpoint_slice_from_json(
        _slice(base, [{"name": "http", "port": 1, "protocol": "TCP"}])))


def test_multicluster_slice_labels():
    """Multicluster slices take the service and cluster id from the MCS labels."""
    es = mc_endpoint_slice_from_json(_slice(
        [{"addresses": ["10.1.0.5"], "hostname": "db-0"}],
        labels={"multicluster.kubernetes.io/service-name": "db",
                "multicluster.kubernetes.io/source-cluster": "c1"}))
    assert (es.service, es.service_key, es.cluster_id) == ("db", "shop/db", "c1")
    regular = endpoint_slice_from_json(_slice([], labels={
        "kubernetes.io/service-name": "db", "multicluster.kubernetes.io/source-cluster": "c1"}))
    assert (regular.service, regular.cluster_id) == ("db", "c1")


def _pod(**meta):
    return {
        "metadata": {"name": "web-1", "namespace": "shop", **meta},
        "spec": {"containers": [{"name": "c"}]},
        "status": {"phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}]},
    }


def test_pod_conversion():
    """A pod keeps its key, name, namespace and primary IP."""
    p = pod_from_json(_pod())
    assert p is not None
    assert (p.key, p.name, p.namespace, p.ip) == ("shop/web-1", "web-1", "shop", "10.244.1.5")


def test_pod_being_deleted_converts_to_none():
    """A pod with deletionTimestamp is skipped (None), as CoreDNS's errPodTerminating."""
    assert pod_from_json(_pod(deletionTimestamp="2024-01-01T00:00:00Z")) is None


def test_pending_pod_without_ip():
    """A pod without an IP yet converts with an empty IP."""
    d = _pod()
    del d["status"]["podIP"]
    assert pod_from_json(d).ip == ""


def test_pod_dns_equal_is_the_ip():
    """Only a pod IP change is DNS-visible."""
    a = pod_from_json(_pod())
    assert a.dns_equal(pod_from_json(_pod(labels={"x": "y"})))
    moved = _pod()
    moved["status"]["podIP"] = "10.244.1.6"
    assert not a.dns_equal(pod_from_json(moved))


def test_namespace_conversion():
    """A namespace is keyed by its name."""
    n = namespace_from_json({"metadata": {"name": "shop", "labels": {"team": "a"}},
                             "status": {"phase": "Active"}})
    assert (n.key, n.name) == ("shop", "shop")


def test_service_import_conversion():
    """A ServiceImport keeps type, IPs and ports (no port sentinel)."""
    si = service_import_from_json({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"type": "ClusterSetIP", "ips": ["10.100.0.10"],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    })
    assert (si.key, si.type, si.cluster_ips) == ("shop/web", "ClusterSetIP", ("10.100.0.10",))
    assert si.ports == (Port("http", 80, "TCP"),)
    assert not si.headless
    h = service_import_from_json({"metadata": {"name": "db", "namespace": "shop"},
                                  "spec": {"type": "Headless"}})
    assert h.headless and h.ports == () and h.cluster_ips == ()
    # Read like a Service by the answers, but never an ExternalName (even if its type says so).
    assert not h.is_external_name
    assert not service_import_from_json({"metadata": {"name": "e", "namespace": "shop"},
                                         "spec": {"type": "ExternalName"}}).is_external_name
    assert not si.dns_equal(service_import_from_json({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"type": "ClusterSetIP", "ips": ["10.100.0.11"],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}))


def test_conversion_drops_the_source():
    """Converted objects hold no reference to the raw dict (it can be garbage-collected)."""
    d = {**SERVICE}
    s = service_from_json(d)
    refcount = sys.getrefcount(d)
    del s
    assert sys.getrefcount(d) == refcount


def test_endpoint_slice_zones_only_when_asked():
    """Topology zones are kept (lower-cased) only for the zonal option, and are DNS-visible."""
    d = _slice([{"addresses": ["10.0.0.1"], "zone": "US-West-2a"}, {"addresses": ["10.0.0.2"]}])
    assert [a.zone for a in endpoint_slice_from_json(d).addresses] == ["", ""]
    zoned = endpoint_slice_from_json(d, with_zones=True)
    assert [a.zone for a in zoned.addresses] == ["us-west-2a", ""]
    moved = _slice([{"addresses": ["10.0.0.1"], "zone": "us-west-2b"}, {"addresses": ["10.0.0.2"]}])
    assert not zoned.dns_equal(endpoint_slice_from_json(moved, with_zones=True))


# -- memory: slots, shared strings and ports, reuse on re-list ------------------------------


def _decoded(d):
    """``d`` as a fresh JSON decode makes it: no string shared with another decode."""
    return json.loads(json.dumps(d))


def test_objects_have_no_instance_dict():
    """Every object and sub-record is slotted (no per-object __dict__)."""
    slice_ = endpoint_slice_from_json(_slice([{"addresses": ["10.0.0.1"]}],
                                             ports=[{"name": "http", "port": 80}]))
    made = [service_from_json(SERVICE), slice_, slice_.addresses[0], slice_.ports[0],
            pod_from_json(_pod()), namespace_from_json({"metadata": {"name": "shop"}}),
            service_import_from_json({"metadata": {"name": "web", "namespace": "shop"},
                                      "spec": {"type": "ClusterSetIP"}})]
    for obj in made:
        assert not hasattr(obj, "__dict__"), type(obj).__name__


def test_repeated_strings_are_shared():
    """Namespaces, types, node names, zones and service names are interned: objects
    decoded from different documents hold the same string, not equal copies."""
    a, b = (pod_from_json(_decoded(_pod())) for _ in range(2))
    assert a.namespace == "shop" and a.namespace is b.namespace
    assert a.ip == b.ip
    s1, s2 = (service_from_json(_decoded(SERVICE)) for _ in range(2))
    assert s1.namespace is s2.namespace and s1.type is s2.type
    endpoints = [{"addresses": ["10.0.0.1"], "nodeName": "node-1", "zone": "Z-1"}]
    e1, e2 = (endpoint_slice_from_json(_decoded(_slice(endpoints)), with_zones=True)
              for _ in range(2))
    assert e1.service == "web" and e1.service is e2.service
    assert e1.addresses[0].node_name is e2.addresses[0].node_name
    assert e1.addresses[0].zone == "z-1" and e1.addresses[0].zone is e2.addresses[0].zone


def test_equal_ports_are_shared():
    """Services and slices with the same ports hold one tuple of the same Port records."""
    s1, s2 = (service_from_json(_decoded(SERVICE)) for _ in range(2))
    assert s1.ports == s2.ports and s1.ports is s2.ports
    ports = [{"name": "http", "port": 80, "protocol": "TCP"}]
    e1 = endpoint_slice_from_json(_decoded(_slice([{"addresses": ["10.0.0.1"]}], ports=ports)))
    e2 = endpoint_slice_from_json(_decoded(_slice([{"addresses": ["10.0.0.2"]}], ports=ports)))
    assert e1.ports is e2.ports
    assert e1.ports[0] is s1.ports[0]  # Port("http", 80, "TCP") is the service's too


def test_port_sharing_is_bounded(monkeypatch):
    """Past the bound, new ports are not remembered (the tables cannot grow without end),
    and the objects are the same as ever."""
    monkeypatch.setattr(objects_module, "_SHARED_MAX", 3)
    monkeypatch.setattr(objects_module, "_shared_ports", {})
    monkeypatch.setattr(objects_module, "_shared_port_tuples", {})
    made = [service_from_json({"metadata": {"name": f"s{i}", "namespace": "shop"},
                               "spec": {"ports": [{"name": f"p{i}", "port": i}]}})
            for i in range(10)]
    assert [s.ports for s in made] == [(Port(f"p{i}", i, ""),) for i in range(10)]
    assert len(objects_module._shared_ports) == 3
    assert len(objects_module._shared_port_tuples) == 3


def test_malformed_strings_are_kept_as_they_are():
    """A value of the wrong type (never sent by an API server) is kept, not refused:
    interning applies to strings only."""
    es = endpoint_slice_from_json(_slice([{"addresses": ["10.0.0.1"], "nodeName": 7}]))
    assert es.addresses[0].node_name == 7
    odd = service_from_json({"metadata": {"name": "s", "namespace": "shop"},
                             "spec": {"ports": [{"name": ["x"], "port": 1}]}})
    assert odd.ports[0].name == ["x"]


def test_reusing_hands_back_the_object_held():
    """On a re-list, an unchanged object is the one already held; a changed one is new;
    a pod being deleted is still None; the store is read at each call."""
    held = pod_from_json(_pod())
    store = {held.key: held}
    convert = reusing(pod_from_json, lambda: store)
    again = convert(_decoded(_pod()))
    assert again is held
    moved = _pod()
    moved["status"]["podIP"] = "10.244.1.6"
    changed = convert(moved)
    assert changed is not held and changed.ip == "10.244.1.6"
    assert convert(_pod(deletionTimestamp="2024-01-01T00:00:00Z")) is None
    store = {}
    assert convert(_decoded(_pod())) is not held


def test_shared_strings_are_bounded_and_mortal() -> None:
    """The table that shares strings starts over when full, and holds no string alive
    beyond it (unlike sys.intern on Python 3.12, whose strings are immortal)."""
    import gc
    import weakref

    from kubernetai.plugins.kubernetai import objects as mod

    class Text(str):  # a str subclass can be weakly referenced; it is shared all the same
        pass
    assert mod._intern(Text("x")) == "x"
    mod._strings.clear()
    gone = Text("node-that-went-away")
    mod._strings[gone] = gone
    ref = weakref.ref(gone)
    del gone
    for i in range(mod._STRINGS_MAX):
        mod._intern(f"n{i}")
    gc.collect()
    assert ref() is None and len(mod._strings) <= mod._STRINGS_MAX
