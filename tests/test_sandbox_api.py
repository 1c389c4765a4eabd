"""The sandbox driven by the official Kubernetes Python client over real HTTP."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

SERVICE = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web", "tier": "front"}},
    "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80}]},
}


def _service(name: str, namespace: str = "shop", **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"ports": [{"name": "http", "port": 80}]}}


@pytest.fixture
def core(kube):
    return client.CoreV1Api(kube)


@pytest.fixture
def discovery(kube):
    return client.DiscoveryV1Api(kube)


def test_list_returns_applied_objects_with_resource_version(sandbox, core):
    """A list carries every object, server-filled metadata and the list resourceVersion."""
    sandbox.apply(SERVICE)
    result = core.list_service_for_all_namespaces()
    assert [s.metadata.name for s in result.items] == ["web"]
    service = result.items[0]
    assert service.spec.cluster_ip == "10.96.0.20"
    assert service.metadata.uid and service.metadata.creation_timestamp
    assert int(result.metadata.resource_version) == sandbox.resource_version


def test_namespaced_and_cluster_wide_paths(sandbox, core):
    """Namespaced lists see only their namespace; cluster-wide lists see all."""
    sandbox.apply([_service("a", "one"), _service("b", "two"), _service("c", "two")])
    assert [s.metadata.name for s in core.list_namespaced_service("two").items] == ["b", "c"]
    assert len(core.list_service_for_all_namespaces().items) == 3
    names = {n.metadata.name for n in core.list_namespace().items}
    assert {"default", "kube-system", "one", "two"} <= names


def test_get_one_and_404_status(core, sandbox):
    """GET of one object returns it; a missing one is a 404 with a NotFound Status body."""
    sandbox.apply(SERVICE)
    assert core.read_namespaced_service("web", "shop").spec.ports[0].name == "http"
    with pytest.raises(ApiException) as caught:
        core.read_namespaced_service("nope", "shop")
    assert caught.value.status == 404
    body = json.loads(caught.value.body)
    assert body["kind"] == "Status" and body["reason"] == "NotFound"
    assert body["message"] == 'services "nope" not found'


@pytest.mark.parametrize("selector, expected", [
    ("app=web", ["web"]),
    ("app==web", ["web"]),
    ("app!=web", ["api", "plain"]),
    ("tier in (front,back)", ["api", "web"]),
    ("tier notin (front)", ["api", "plain"]),
    ("tier", ["api", "web"]),
    ("!tier", ["plain"]),
    ("app=web,tier=front", ["web"]),
])
def test_label_selectors(sandbox, core, selector, expected):
    """labelSelector supports =, ==, !=, in, notin, exists and not-exists."""
    sandbox.apply([_service("web", app="web", tier="front"),
                   _service("api", app="api", tier="back"), _service("plain")])
    found = core.list_namespaced_service("shop", label_selector=selector).items
    assert sorted(s.metadata.name for s in found) == expected


def test_field_selectors_on_pods(sandbox, core):
    """fieldSelector handles metadata.name, metadata.namespace and CoreDNS's phase filter."""
    pods = []
    for name, phase in [("run", "Running"), ("done", "Succeeded"), ("bad", "Failed"),
                        ("wait", "Pending")]:
        pods.append({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": name, "namespace": "p"},
                     "spec": {"containers": [{"name": "c", "image": "i"}]},
                     "status": {"phase": phase, "podIP": "10.0.0.1"}})
    sandbox.apply(pods)
    coredns = "status.phase!=Succeeded,status.phase!=Failed,status.phase!=Unknown"
    found = core.list_pod_for_all_namespaces(field_selector=coredns).items
    assert sorted(p.metadata.name for p in found) == ["run", "wait"]
    assert [p.metadata.name for p in
            core.list_pod_for_all_namespaces(field_selector="metadata.name=done").items] == ["done"]
    assert len(core.list_pod_for_all_namespaces(field_selector="metadata.namespace=p").items) == 4


def test_bad_selector_is_400(core):
    """An unsupported field or malformed label selector is a 400 BadRequest Status."""
    with pytest.raises(ApiException) as caught:
        core.list_service_for_all_namespaces(field_selector="spec.bogus=1")
    assert caught.value.status == 400
    assert "field label not supported: spec.bogus" in json.loads(caught.value.body)["message"]
    with pytest.raises(ApiException) as caught:
        core.list_service_for_all_namespaces(label_selector="a in (b")
    assert caught.value.status == 400


def test_pagination_is_consistent(sandbox, core):
    """limit/continue pages through a snapshot; writes between pages do not show up."""
    sandbox.apply([_service(f"s{i:02d}") for i in range(7)])
    first = core.list_namespaced_service("shop", limit=3)
    assert [s.metadata.name for s in first.items] == ["s00", "s01", "s02"]
    assert first.metadata.remaining_item_count == 4
    sandbox.apply(_service("s03a"))
    sandbox.delete("Service", "shop", "s05")
    names = [s.metadata.name for s in first.items]
    token = first.metadata._continue
    while token:
        page = core.list_namespaced_service("shop", limit=3, _continue=token)
        assert page.metadata.resource_version == first.metadata.resource_version
        names += [s.metadata.name for s in page.items]
        token = page.metadata._continue
    assert names == [f"s{i:02d}" for i in range(7)]


def test_pagination_with_selector_across_namespaces(sandbox, core):
    """Paging with a selector over all namespaces returns every match exactly once."""
    objects = [_service(f"s{i}", f"ns{i % 3}", even=str(i % 2 == 0).lower()) for i in range(20)]
    sandbox.apply(objects)
    seen, token = [], None
    while True:
        page = core.list_service_for_all_namespaces(label_selector="even=true", limit=4,
                                                    _continue=token)
        seen += [(s.metadata.namespace, s.metadata.name) for s in page.items]
        token = page.metadata._continue
        if not token:
            break
    expected = sorted((f"ns{i % 3}", f"s{i}") for i in range(0, 20, 2))
    assert sorted(seen) == expected and len(seen) == len(set(seen))


def test_discovery_v1_endpointslices(sandbox, discovery):
    """EndpointSlices are served under discovery.k8s.io/v1 and select by service label."""
    sandbox.apply({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-abc", "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.1.0.5"], "conditions": {"ready": True}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    })
    found = discovery.list_endpoint_slice_for_all_namespaces(
        label_selector="kubernetes.io/service-name=web").items
    assert [s.endpoints[0].addresses for s in found] == [["10.1.0.5"]]


def test_write_verbs_through_the_client(core, sandbox):
    """POST, PUT, merge-PATCH and DELETE work and bump the resourceVersion each time."""
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="shop")))
    created = core.create_namespaced_service("shop", client.V1Service(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=80, name="http")])))
    assert created.spec.cluster_ip.startswith("10.") and created.metadata.generation == 1
    rv1 = int(created.metadata.resource_version)
    created.spec.ports[0].port = 81
    replaced = core.replace_namespaced_service("web", "shop", created)
    assert replaced.spec.ports[0].port == 81 and int(replaced.metadata.resource_version) > rv1
    assert replaced.metadata.uid == created.metadata.uid
    patched = core.patch_namespaced_service("web", "shop", {"metadata": {"labels": {"x": "y"}}})
    assert patched.metadata.labels == {"x": "y"}
    core.delete_namespaced_service("web", "shop")
    with pytest.raises(ApiException) as caught:
        core.read_namespaced_service("web", "shop")
    assert caught.value.status == 404


def test_write_errors(core, sandbox):
    """Duplicate create is 409 AlreadyExists; a stale PUT is 409 Conflict; no namespace is 404."""
    sandbox.apply(SERVICE)
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_service("shop", SERVICE)
    assert caught.value.status == 409
    assert json.loads(caught.value.body)["reason"] == "AlreadyExists"
    stale = json.loads(json.dumps(SERVICE))
    stale["metadata"]["resourceVersion"] = "1"
    with pytest.raises(ApiException) as caught:
        core.replace_namespaced_service("web", "shop", stale)
    assert caught.value.status == 409
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_service("nowhere", _service("x", "nowhere"))
    assert caught.value.status == 404


def test_version_and_discovery_documents(kube):
    """/version, /api, /apis and group documents describe what the sandbox serves."""
    api = kube
    assert client.VersionApi(api).get_code().git_version.startswith("v1.")
    groups = {g.name: g for g in client.ApisApi(api).get_api_versions().groups}
    assert set(groups) == {"discovery.k8s.io", "multicluster.x-k8s.io"}
    resources = client.CoreV1Api(api).get_api_resources().resources
    assert {"namespaces", "services", "endpoints", "pods"} <= {r.name for r in resources}
    slices = client.DiscoveryV1Api(api).get_api_resources().resources
    assert [r.name for r in slices] == ["endpointslices"]


def test_service_imports_via_custom_objects(sandbox, kube):
    """ServiceImports are served at multicluster.x-k8s.io/v1alpha1."""
    sandbox.apply({"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
                   "metadata": {"name": "db", "namespace": "shop"},
                   "spec": {"type": "ClusterSetIP", "ips": ["10.99.0.1"],
                            "ports": [{"port": 5432, "protocol": "TCP"}]}})
    custom = client.CustomObjectsApi(kube)
    found = custom.list_cluster_custom_object("multicluster.x-k8s.io", "v1alpha1",
                                              "serviceimports")
    assert [i["spec"]["ips"] for i in found["items"]] == [["10.99.0.1"]]
