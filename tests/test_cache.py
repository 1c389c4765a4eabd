"""The cluster cache: full lists, watch events, indexes and the serial."""

from __future__ import annotations

import pytest

from kubernetai.plugins.kubernetai.cache import ADDED, DELETED, MODIFIED, ClusterCache
from kubernetai.plugins.kubernetai.objects import (
    endpoint_slice_from_json,
    mc_endpoint_slice_from_json,
    namespace_from_json,
    pod_from_json,
    service_from_json,
    service_import_from_json,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def tick(self) -> float:
        self.now += 1.5
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(clock: Clock) -> ClusterCache:
    return ClusterCache(clock=clock)


def svc(name, ns="shop", ips=("10.96.0.1",), ports=(("http", 80),), ext=(), rv="1", **spec):
    d = {
        "metadata": {"name": name, "namespace": ns, "resourceVersion": rv},
        "spec": {"clusterIP": ips[0], "clusterIPs": list(ips),
                 "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports],
                 **spec},
    }
    if ext:
        d["spec"]["externalIPs"] = list(ext)
    return service_from_json(d)


def eps(name, service, ips, ns="shop", hostname=None, node="n1", rv="1", labels=None):
    lab = {"kubernetes.io/service-name": service} if labels is None else labels
    return {
        "metadata": {"name": name, "namespace": ns, "labels": lab, "resourceVersion": rv},
        "addressType": "IPv4",
        "endpoints": [dict({"addresses": [ip], "conditions": {"ready": True}, "nodeName": node},
                           **({"hostname": hostname} if hostname else {})) for ip in ips],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def slice_(*a, **kw):
    return endpoint_slice_from_json(eps(*a, **kw))


def pod(name, ip, ns="shop", **meta):
    return pod_from_json({"metadata": {"name": name, "namespace": ns, **meta},
                          "status": {"podIP": ip}})


def ns(name):
    return namespace_from_json({"metadata": {"name": name}})


# --------------------------------------------------------------------------


def test_replace_sets_contents_and_removes_vanished(cache):
    """A full list replaces the store: new objects appear, missing ones are removed."""
    cache.replace("services", [svc("a", ips=("10.96.0.1",)), svc("b", ips=("10.96.0.2",))])
    assert set(cache.services) == {"shop/a", "shop/b"}
    cache.replace("services", [svc("b", ips=("10.96.0.2",)), svc("c", ips=("10.96.0.3",))])
    assert set(cache.services) == {"shop/b", "shop/c"}
    assert cache.services_for_cluster_ip("10.96.0.1") == ()
    assert [s.key for s in cache.services_for_cluster_ip("10.96.0.3")] == ["shop/c"]


def test_replace_marks_synced(cache):
    """A resource is synced after its first full list, even an empty one."""
    assert not cache.has_synced({"services", "namespaces"})
    cache.replace("services", [])
    assert cache.synced["services"]
    assert not cache.has_synced({"services", "namespaces"})
    cache.replace("namespaces", [ns("shop")])
    assert cache.has_synced({"services", "namespaces"})
    assert cache.has_synced(set())


def test_mark_synced(cache):
    """mark_synced sets (and clears) the synced flag of one resource."""
    cache.mark_synced("pods")
    assert cache.has_synced({"pods"})
    cache.mark_synced("pods", False)
    assert not cache.has_synced({"pods"})


def test_unknown_resource_is_an_error(cache):
    """Only the six known resources are accepted."""
    with pytest.raises(ValueError):
        cache.replace("configmaps", [])
    with pytest.raises(ValueError):
        cache.apply("nodes", [])


def test_unknown_event_type_is_an_error(cache):
    """Watch events other than ADDED, MODIFIED and DELETED are rejected."""
    with pytest.raises(ValueError):
        cache.apply("services", [("BOOKMARK", "shop/a", None)])


def test_apply_watch_events(cache):
    """ADDED/MODIFIED upsert, DELETED removes by key."""
    cache.apply("services", [(ADDED, "shop/a", svc("a")), (ADDED, "shop/b", svc("b", ips=("10.96.0.2",)))])
    assert set(cache.services) == {"shop/a", "shop/b"}
    cache.apply("services", [(MODIFIED, "shop/a", svc("a", ips=("10.96.0.9",)))])
    assert cache.services["shop/a"].cluster_ips == ("10.96.0.9",)
    assert cache.services_for_cluster_ip("10.96.0.1") == ()
    cache.apply("services", [(DELETED, "shop/b", None), (DELETED, "shop/missing", None)])
    assert set(cache.services) == {"shop/a"}
    assert cache.services_for_cluster_ip("10.96.0.2") == ()


def test_modified_bumps_on_add_and_delete(cache, clock):
    """Adds and deletes always bump the serial and the generation."""
    assert cache.modified == 0.0
    generation = cache.generation
    cache.apply("services", [(ADDED, "shop/a", svc("a"))])
    assert cache.modified == 1000.0 and cache.serial == 1000
    assert cache.generation == generation + 1
    t = clock.tick()
    cache.apply("services", [(DELETED, "shop/a", None)])
    assert cache.modified == t and cache.generation == generation + 2


def test_modified_only_bumps_on_dns_visible_update(cache, clock):
    """An update that changes nothing DNS-visible leaves the serial alone."""
    cache.replace("endpointslices", [slice_("web-1", "web", ["10.0.0.1"], node="n1")])
    before = cache.modified
    clock.tick()
    # only the node name and resourceVersion change: stored, but not DNS-visible
    changed = cache.apply("endpointslices", [
        (MODIFIED, "shop/web-1", slice_("web-1", "web", ["10.0.0.1"], node="n2", rv="2"))])
    assert not changed
    assert cache.modified == before
    assert cache.endpointslices["shop/web-1"].addresses[0].node_name == "n2"
    # an identical object changes nothing at all
    assert not cache.apply("endpointslices", [
        (MODIFIED, "shop/web-1", slice_("web-1", "web", ["10.0.0.1"], node="n2", rv="3"))])
    t = clock.tick()
    assert cache.apply("endpointslices", [
        (MODIFIED, "shop/web-1", slice_("web-1", "web", ["10.0.0.2"], node="n2"))])
    assert cache.modified == t


def test_pod_update_bumps_only_on_ip_change(cache, clock):
    """Pods: only an IP change is a DNS-visible update (CoreDNS podModified)."""
    cache.replace("pods", [pod("p", "10.0.0.1")])
    before = cache.modified
    clock.tick()
    assert not cache.apply("pods", [(MODIFIED, "shop/p", pod("p", "10.0.0.1", labels={"a": "b"}))])
    assert cache.modified == before
    t = clock.tick()
    assert cache.apply("pods", [(MODIFIED, "shop/p", pod("p", "10.0.0.2"))])
    assert cache.modified == t
    assert cache.pods_for_ip("10.0.0.1") == ()
    assert [p.key for p in cache.pods_for_ip("10.0.0.2")] == ["shop/p"]


def test_replace_with_identical_list_changes_nothing(cache, clock):
    """Re-listing the same objects (a relist after 410) does not bump the serial."""
    objs = [svc("a"), svc("b", ips=("10.96.0.2",))]
    cache.replace("services", objs)
    before, gen = cache.modified, cache.generation
    clock.tick()
    assert not cache.replace("services", [svc("a", rv="9"), svc("b", ips=("10.96.0.2",), rv="9")])
    assert (cache.modified, cache.generation) == (before, gen)


def test_replace_removal_bumps(cache, clock):
    """A relist missing an object counts as a change."""
    cache.replace("services", [svc("a"), svc("b", ips=("10.96.0.2",))])
    t = clock.tick()
    assert cache.replace("services", [svc("a")])
    assert cache.modified == t


def test_terminating_pod_events_are_ignored(cache):
    """A pod converted to None (being deleted) keeps the stored pod until DELETED."""
    cache.replace("pods", [pod("p", "10.0.0.1")])
    terminating = pod("p", "10.0.0.1", deletionTimestamp="2024-01-01T00:00:00Z")
    assert terminating is None
    assert not cache.apply("pods", [(MODIFIED, "shop/p", terminating)])
    assert "shop/p" in cache.pods
    cache.apply("pods", [(DELETED, "shop/p", None)])
    assert "shop/p" not in cache.pods and cache.pods_for_ip("10.0.0.1") == ()


def test_replace_keep_preserves_terminating_pods(cache):
    """replace(keep=...) leaves listed-but-unconvertible objects as they were."""
    cache.replace("pods", [pod("p", "10.0.0.1"), pod("q", "10.0.0.2")])
    cache.replace("pods", [None, pod("q", "10.0.0.2")], keep=["shop/p"])
    assert set(cache.pods) == {"shop/p", "shop/q"}
    cache.replace("pods", [pod("q", "10.0.0.2")])
    assert set(cache.pods) == {"shop/q"}


def test_endpoints_index_merges_slices_per_service(cache):
    """Several slices of one service are read as one tuple; removing one updates it."""
    cache.replace("endpointslices", [
        slice_("web-1", "web", ["10.0.0.1"]),
        slice_("web-2", "web", ["10.0.0.2"]),
        slice_("db-1", "db", ["10.0.1.1"]),
    ])
    assert [s.key for s in cache.endpoints["shop/web"]] == ["shop/web-1", "shop/web-2"]
    assert [s.key for s in cache.endpoints["shop/db"]] == ["shop/db-1"]
    cache.apply("endpointslices", [(DELETED, "shop/web-1", None)])
    assert [s.key for s in cache.endpoints["shop/web"]] == ["shop/web-2"]
    cache.apply("endpointslices", [(DELETED, "shop/web-2", None)])
    assert "shop/web" not in cache.endpoints


def test_slice_moving_to_another_service(cache):
    """A slice whose service label changes moves between per-service groups."""
    cache.replace("endpointslices", [slice_("s-1", "a", ["10.0.0.1"])])
    cache.apply("endpointslices", [(MODIFIED, "shop/s-1", slice_("s-1", "b", ["10.0.0.1"]))])
    assert "shop/a" not in cache.endpoints
    assert [s.key for s in cache.endpoints["shop/b"]] == ["shop/s-1"]
    assert [s.service for s in cache.slices_for_ip("10.0.0.1")] == ["b"]


def test_endpoint_ip_index(cache):
    """Endpoint IPs map to every slice that holds them, and are unindexed on change."""
    cache.replace("endpointslices", [
        slice_("web-1", "web", ["10.0.0.1", "10.0.0.2"]),
        slice_("api-1", "api", ["10.0.0.2"]),
    ])
    assert [s.key for s in cache.slices_for_ip("10.0.0.1")] == ["shop/web-1"]
    assert sorted(s.key for s in cache.slices_for_ip("10.0.0.2")) == ["shop/api-1", "shop/web-1"]
    cache.apply("endpointslices", [(MODIFIED, "shop/web-1", slice_("web-1", "web", ["10.0.0.3"]))])
    assert cache.slices_for_ip("10.0.0.1") == ()
    assert [s.key for s in cache.slices_for_ip("10.0.0.2")] == ["shop/api-1"]
    assert [s.key for s in cache.slices_for_ip("10.0.0.3")] == ["shop/web-1"]
    cache.apply("endpointslices", [(DELETED, "shop/api-1", None)])
    assert cache.slices_for_ip("10.0.0.2") == ()


def test_service_ip_indexes(cache):
    """Services are indexed by every ClusterIP, never by None or ''."""
    cache.replace("services", [
        svc("dual", ips=("10.96.0.5", "fd00::5"), ext=("203.0.113.1",), type="LoadBalancer"),
        svc("h", ips=("None",)),
        service_from_json({"metadata": {"name": "e", "namespace": "shop"},
                           "spec": {"type": "ExternalName", "externalName": "x.example"}}),
    ])
    assert [s.key for s in cache.services_for_cluster_ip("fd00::5")] == ["shop/dual"]
    assert [s.key for s in cache.services_for_cluster_ip("10.96.0.5")] == ["shop/dual"]
    assert cache.services_for_cluster_ip("None") == ()
    assert cache.services_for_cluster_ip("") == ()


def test_pod_ip_index_holds_shared_ips(cache):
    """Host-network pods share an IP; removing one keeps the other."""
    cache.replace("pods", [pod("a", "192.168.0.10", ns="x"), pod("b", "192.168.0.10", ns="y"),
                           pod("pending", "")])
    assert sorted(p.key for p in cache.pods_for_ip("192.168.0.10")) == ["x/a", "y/b"]
    assert cache.pods_for_ip("") == ()
    cache.apply("pods", [(DELETED, "x/a", None)])
    assert [p.key for p in cache.pods_for_ip("192.168.0.10")] == ["y/b"]


def test_namespaces_and_their_serial(cache, clock):
    """Namespaces are stored by name; adding or deleting one is a change."""
    cache.replace("namespaces", [ns("shop"), ns("default")])
    assert set(cache.namespaces) == {"shop", "default"}
    t = clock.tick()
    assert cache.apply("namespaces", [(DELETED, "default", None)])
    assert cache.modified == t
    assert not cache.apply("namespaces", [(MODIFIED, "shop", ns("shop"))])


def test_multicluster_resources_use_their_own_serial(cache, clock):
    """ServiceImports and multicluster slices bump modified_multicluster only."""
    cache.replace("services", [svc("a")])
    internal = cache.modified
    t = clock.tick()
    cache.replace("serviceimports", [service_import_from_json({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"type": "ClusterSetIP", "ips": ["10.100.0.1"]}})])
    cache.replace("mcendpointslices", [mc_endpoint_slice_from_json(eps(
        "web-c1", "web", ["10.1.0.1"], labels={
            "multicluster.kubernetes.io/service-name": "web",
            "multicluster.kubernetes.io/source-cluster": "c1"}))])
    assert cache.modified == internal
    assert cache.modified_multicluster == t and cache.serial_multicluster == int(t)
    assert set(cache.service_imports) == {"shop/web"}
    assert [s.cluster_id for s in cache.mc_endpoints["shop/web"]] == ["c1"]
    # multicluster slices are not in the PTR index
    assert cache.slices_for_ip("10.1.0.1") == ()


def test_readers_get_shared_objects_not_copies(cache):
    """The per-service endpoint tuple is the same object on every read."""
    cache.replace("endpointslices", [slice_("web-1", "web", ["10.0.0.1"])])
    assert cache.endpoints["shop/web"] is cache.endpoints["shop/web"]


def test_many_objects_round_trip(cache):
    """A large list and its removal leave every index empty."""
    cache.replace("endpointslices", [slice_(f"s-{i}", f"svc-{i % 50}", [f"10.{i // 250}.{i % 250}.1"])
                                     for i in range(2000)])
    assert len(cache.endpoints) == 50
    assert len(cache._slice_by_ip) == 2000
    cache.replace("endpointslices", [])
    assert cache.endpoints == {} and cache.endpointslices == {}
    assert len(cache._slice_by_ip) == 0 and cache._slices_by_svc == {}
