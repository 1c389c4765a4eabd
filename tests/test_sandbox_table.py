"""The Table form kube-apiserver serves `kubectl get`: columns and cells of the printers
in pkg/printers/internalversion/printers.go, over HTTP and through kubectl itself."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Iterator

import pytest
import urllib3
from conftest import wait_for

from kubernetai.sandbox.server import Sandbox
from kubernetai.sandbox.tables import human_duration

KUBECTL = shutil.which("kubectl")
KUBECTL_ACCEPT = ("application/json;as=Table;v=v1;g=meta.k8s.io,"
                  "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json")
CREATED = 1_700_000_000.0
LATER = CREATED + 3 * 3600 + 61  # every object is 3h1m old when the tables are made


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def objects() -> list[dict]:
    stamp = "2023-11-14T22:13:20Z"  # CREATED, as the pod's last restart time
    return [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "lb", "namespace": "t"},
         "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.50",
                  "externalIPs": ["192.0.2.9"], "selector": {"tier": "web", "app": "shop"},
                  "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"},
                            {"port": 53, "protocol": "UDP"}]},
         "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "ext", "namespace": "t"},
         "spec": {"type": "ExternalName", "externalName": "db.example.org"}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "headless", "namespace": "t"},
         "spec": {"clusterIP": "None", "selector": {"app": "db"}}},
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "web-1", "namespace": "t"},
         "spec": {"nodeName": "node-a", "containers": [{"name": "a"}, {"name": "b"}],
                  "readinessGates": [{"conditionType": "example.com/lb"}]},
         "status": {"phase": "Running", "podIP": "10.244.0.5",
                    "podIPs": [{"ip": "10.244.0.5"}, {"ip": "fd00::5"}],
                    "conditions": [{"type": "Ready", "status": "True"},
                                   {"type": "example.com/lb", "status": "True"}],
                    "containerStatuses": [
                        {"name": "a", "ready": True, "restartCount": 2,
                         "state": {"running": {}},
                         "lastState": {"terminated": {"exitCode": 1, "finishedAt": stamp}}},
                        {"name": "b", "ready": False, "restartCount": 0,
                         "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}},
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "init", "namespace": "t"},
         "spec": {"initContainers": [{"name": "setup"}], "containers": [{"name": "main"}]},
         "status": {"phase": "Pending", "initContainerStatuses": [
             {"name": "setup", "ready": False, "restartCount": 0,
              "state": {"waiting": {"reason": "PodInitializing"}}}]}},
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "job", "namespace": "t"},
         "spec": {"containers": [{"name": "main"}]},
         "status": {"phase": "Succeeded", "containerStatuses": [
             {"name": "main", "ready": False, "restartCount": 0,
              "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "lb-abc", "namespace": "t"}, "addressType": "IPv4",
         "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2", "10.0.0.3"]},
                       {"addresses": ["10.0.0.4"]}]},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "lb-def", "namespace": "t"}, "addressType": "IPv4",
         "ports": [{"port": 8080}, {"name": "dns"}, {}, {"port": 9}], "endpoints": []},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "lb", "namespace": "t"},
         "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}],
                      "ports": [{"port": 8080}, {"port": 9090}]}]},
        {"apiVersion": "v1", "kind": "Endpoints",
         "metadata": {"name": "empty", "namespace": "t"}},
        {"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
         "metadata": {"name": "db", "namespace": "t"},
         "spec": {"type": "ClusterSetIP", "ips": ["10.99.0.1"]}},
    ]


@pytest.fixture
def tabled(reactor_running) -> Iterator[Sandbox]:
    server = Sandbox()
    clock = Clock(CREATED)
    server.store.clock = clock
    server.apply(objects())
    clock.now = LATER
    server.start()
    yield server
    server.stop()


def table(server: Sandbox, path: str, accept: str = KUBECTL_ACCEPT) -> dict:
    response = urllib3.PoolManager(retries=False).request(
        "GET", server.url + path, headers={"Accept": accept})
    assert response.status == 200, response.data
    return json.loads(response.data)


def cells(document: dict) -> dict[str, list]:
    return {row["cells"][0]: row["cells"] for row in document["rows"]}


def columns(document: dict) -> list[tuple[str, str, int]]:
    return [(c["name"], c["type"], c["priority"]) for c in document["columnDefinitions"]]


def test_services_table(tabled):
    """Services: NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE and SELECTOR (priority 1)."""
    document = table(tabled, "/api/v1/namespaces/t/services")
    assert document["kind"] == "Table" and document["apiVersion"] == "meta.k8s.io/v1"
    assert document["metadata"] == {"resourceVersion": str(tabled.resource_version)}
    assert columns(document) == [("Name", "string", 0), ("Type", "string", 0),
                                 ("Cluster-IP", "string", 0), ("External-IP", "string", 0),
                                 ("Port(s)", "string", 0), ("Age", "string", 0),
                                 ("Selector", "string", 1)]
    assert document["columnDefinitions"][0]["format"] == "name"
    rows = cells(document)
    assert rows["lb"] == ["lb", "LoadBalancer", "10.96.0.50", "203.0.113.7,192.0.2.9",
                          "80:30080/TCP,53/UDP", "3h1m", "app=shop,tier=web"]
    assert rows["ext"] == ["ext", "ExternalName", "<none>", "db.example.org", "<none>",
                           "3h1m", "<none>"]
    assert rows["headless"] == ["headless", "ClusterIP", "None", "<none>", "<none>", "3h1m",
                                "app=db"]


def test_pods_table(tabled):
    """Pods: NAME READY STATUS RESTARTS AGE, then IP NODE NOMINATED NODE READINESS GATES."""
    document = table(tabled, "/api/v1/namespaces/t/pods")
    assert [c[0] for c in columns(document)] == [
        "Name", "Ready", "Status", "Restarts", "Age", "IP", "Node", "Nominated Node",
        "Readiness Gates"]
    assert [c[2] for c in columns(document)] == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    rows = cells(document)
    assert rows["web-1"] == ["web-1", "1/2", "CrashLoopBackOff", "2 (3h1m ago)", "3h1m",
                             "10.244.0.5", "node-a", "<none>", "1/1"]
    assert rows["init"] == ["init", "0/1", "Init:0/1", "0", "3h1m", "<none>", "<none>",
                            "<none>", "<none>"]
    assert rows["job"][:3] == ["job", "0/1", "Completed"]
    [job] = [row for row in document["rows"] if row["cells"][0] == "job"]
    assert job["conditions"] == [{"type": "Completed", "status": "True",
                                  "reason": "Succeeded",
                                  "message": "The pod has completed successfully."}]


def test_endpoint_slices_endpoints_namespaces_and_a_custom_resource(tabled):
    """EndpointSlices, Endpoints, Namespaces and the ServiceImport CRD's default columns."""
    slices = table(tabled, "/apis/discovery.k8s.io/v1/namespaces/t/endpointslices")
    assert [c[0] for c in columns(slices)] == ["Name", "AddressType", "Ports", "Endpoints",
                                               "Age"]
    assert cells(slices) == {
        "lb-abc": ["lb-abc", "IPv4", "<unset>", "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...",
                   "3h1m"],
        "lb-def": ["lb-def", "IPv4", "8080,dns,* + 1 more...", "<unset>", "3h1m"]}
    endpoints = table(tabled, "/api/v1/namespaces/t/endpoints")
    assert [c[0] for c in columns(endpoints)] == ["Name", "Endpoints", "Age"]
    assert cells(endpoints) == {
        "lb": ["lb", "10.0.0.1:8080,[fd00::1]:8080,10.0.0.1:9090 + 1 more...", "3h1m"],
        "empty": ["empty", "<none>", "3h1m"]}
    namespaces = table(tabled, "/api/v1/namespaces")
    assert [c[0] for c in columns(namespaces)] == ["Name", "Status", "Age"]
    assert cells(namespaces)["t"] == ["t", "Active", "3h1m"]
    imports = table(tabled, "/apis/multicluster.x-k8s.io/v1alpha1/serviceimports")
    assert columns(imports) == [("Name", "string", 0), ("Age", "date", 0)]
    assert cells(imports) == {"db": ["db", "3h1m"]}


def test_include_object(tabled):
    """Rows carry PartialObjectMetadata by default, the object with includeObject=Object,
    nothing with None; another value is a 400."""
    base = "/api/v1/namespaces/t/services"
    [row] = [r for r in table(tabled, base)["rows"] if r["cells"][0] == "lb"]
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["apiVersion"] == "meta.k8s.io/v1"
    assert row["object"]["metadata"]["name"] == "lb" and "spec" not in row["object"]
    full = table(tabled, base + "?includeObject=Object")["rows"][0]["object"]
    assert full["kind"] == "Service" and "spec" in full
    assert all(r["object"] is None for r in table(tabled, base + "?includeObject=None")["rows"])
    response = urllib3.PoolManager(retries=False).request(
        "GET", tabled.url + base + "?includeObject=Everything",
        headers={"Accept": KUBECTL_ACCEPT})
    assert response.status == 400
    assert json.loads(response.data)["message"] == \
        'unrecognized includeObject value: "Everything"'


def test_accept_negotiation(tabled):
    """The first acceptable clause wins: plain JSON unless a Table is asked for first;
    v1beta1 when that is the Table asked for; quality values count."""
    path = "/api/v1/namespaces/t/services"
    assert table(tabled, path, "application/json")["kind"] == "ServiceList"
    assert table(tabled, path, "application/json, application/json;as=Table;v=v1;"
                               "g=meta.k8s.io")["kind"] == "ServiceList"
    beta = table(tabled, path, "application/json;as=Table;v=v1beta1;g=meta.k8s.io")
    assert beta["apiVersion"] == "meta.k8s.io/v1beta1"
    assert beta["rows"][0]["object"]["apiVersion"] == "meta.k8s.io/v1beta1"
    weighted = ("application/json;q=0.5, application/json;as=Table;v=v1;g=meta.k8s.io;q=0.9")
    assert table(tabled, path, weighted)["kind"] == "Table"
    assert table(tabled, path, "application/json;as=Table;v=v2;g=meta.k8s.io,"
                               "application/json")["kind"] == "ServiceList"


def test_single_object_and_pages(tabled):
    """GET of one object is a one-row Table at its resourceVersion; pages carry continue."""
    one = table(tabled, "/api/v1/namespaces/t/services/lb")
    assert [r["cells"][0] for r in one["rows"]] == ["lb"]
    assert one["metadata"]["resourceVersion"] == tabled.get("Service", "t", "lb")[
        "metadata"]["resourceVersion"]
    first = table(tabled, "/api/v1/namespaces/t/services?limit=2")
    assert len(first["rows"]) == 2 and first["metadata"]["remainingItemCount"] == 1
    rest = table(tabled, "/api/v1/namespaces/t/services?limit=2&continue="
                 + first["metadata"]["continue"])
    assert len(rest["rows"]) == 1


def test_watch_table_events(tabled):
    """A Table watch sends each object as a one-row Table; only the first has columns."""
    response = urllib3.PoolManager(retries=False).request(
        "GET", tabled.url + "/api/v1/namespaces/t/services?watch=1&timeoutSeconds=1",
        headers={"Accept": KUBECTL_ACCEPT}, timeout=urllib3.Timeout(connect=5, read=10))
    events = [json.loads(line) for line in response.data.splitlines() if line]
    assert [e["type"] for e in events] == ["ADDED"] * 3
    assert all(e["object"]["kind"] == "Table" for e in events)
    assert events[0]["object"]["columnDefinitions"][0]["name"] == "Name"
    assert [e["object"]["columnDefinitions"] for e in events[1:]] == [None, None]
    assert sorted(e["object"]["rows"][0]["cells"][0] for e in events) == ["ext", "headless",
                                                                          "lb"]


@pytest.mark.parametrize("seconds, text", [
    (-5, "<invalid>"), (-1.5, "0s"), (0, "0s"), (119, "119s"), (120, "2m"), (125, "2m5s"),
    (600, "10m"), (10799, "179m"), (10800, "3h"), (10860, "3h1m"), (28800, "8h"),
    (47 * 3600, "47h"), (48 * 3600, "2d"), (49 * 3600, "2d1h"), (8 * 86400, "8d"),
    (729 * 86400, "729d"), (730 * 86400, "2y"), (731 * 86400, "2y1d"),
    (8 * 365 * 86400, "8y")])
def test_human_duration(seconds, text):
    """Ages read as apimachinery's duration.HumanDuration writes them."""
    assert human_duration(seconds) == text


# -- kubectl ----------------------------------------------------------------------------------


@pytest.fixture
def kubectl(tabled, tmp_path):
    if KUBECTL is None:
        pytest.skip("kubectl is not installed here")
    config = tabled.write_kubeconfig(tmp_path / "kubeconfig")

    def run(*args: str) -> list[list[str]]:
        result = subprocess.run([KUBECTL, "--kubeconfig", str(config), *args],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return [line.split() for line in result.stdout.splitlines()]
    return run


def test_kubectl_get_services_shows_the_server_columns(kubectl):
    """kubectl get svc prints kube-apiserver's columns; -o wide adds SELECTOR."""
    lines = kubectl("get", "svc", "-n", "t")
    assert lines[0] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert ["lb", "LoadBalancer", "10.96.0.50", "203.0.113.7,192.0.2.9",
            "80:30080/TCP,53/UDP", "3h1m"] in lines
    wide = kubectl("get", "svc", "-n", "t", "-o", "wide")
    assert wide[0][-1] == "SELECTOR" and ["ext", "ExternalName", "<none>", "db.example.org",
                                          "<none>", "3h1m", "<none>"] in wide


def test_kubectl_get_pods_wide(kubectl):
    """kubectl get pods -o wide: the pod columns with IP, NODE, NOMINATED NODE, READINESS
    GATES."""
    lines = kubectl("get", "pods", "-n", "t", "-o", "wide")
    assert lines[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE",
                        "NOMINATED", "NODE", "READINESS", "GATES"]
    assert ["web-1", "1/2", "CrashLoopBackOff", "2", "(3h1m", "ago)", "3h1m", "10.244.0.5",
            "node-a", "<none>", "1/1"] in lines
    assert kubectl("get", "pods", "-n", "t")[0] == ["NAME", "READY", "STATUS", "RESTARTS",
                                                    "AGE"]


def test_kubectl_get_other_resources(kubectl):
    """EndpointSlices, Endpoints, Namespaces (across namespaces too) and ServiceImports."""
    assert kubectl("get", "endpointslices", "-n", "t")[0] == ["NAME", "ADDRESSTYPE", "PORTS",
                                                             "ENDPOINTS", "AGE"]
    assert kubectl("get", "endpoints", "-n", "t")[0] == ["NAME", "ENDPOINTS", "AGE"]
    namespaces = kubectl("get", "namespaces")
    assert namespaces[0] == ["NAME", "STATUS", "AGE"] and ["t", "Active", "3h1m"] in namespaces
    imports = kubectl("get", "serviceimports", "-A")
    assert imports == [["NAMESPACE", "NAME", "AGE"], ["t", "db", "3h1m"]]


def test_kubectl_get_watch_prints_table_rows(tabled, tmp_path):
    """kubectl get -w reads the Table watch: later objects print in the server's columns."""
    if KUBECTL is None:
        pytest.skip("kubectl is not installed here")
    import threading

    config = tabled.write_kubeconfig(tmp_path / "kubeconfig")
    process = subprocess.Popen([KUBECTL, "--kubeconfig", str(config), "get", "svc", "-n",
                                "t", "-w"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    lines: list[list[str]] = []
    reader = threading.Thread(target=lambda: lines.extend(
        line.split() for line in process.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: tabled.api.watches, what="kubectl's watch")
        tabled.apply({"apiVersion": "v1", "kind": "Service",
                      "metadata": {"name": "later", "namespace": "t"},
                      "spec": {"clusterIP": "10.96.0.77", "ports": [{"port": 81}]}})
        wait_for(lambda: any(line[:1] == ["later"] for line in lines), timeout=30,
                 what="kubectl to print the new service")
        assert lines[0] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
        [later] = [line for line in lines if line[:1] == ["later"]]
        assert later[:5] == ["later", "ClusterIP", "10.96.0.77", "<none>", "81/TCP"]
    finally:
        process.kill()
        process.wait()
