"""The Sandbox as a server: bearer tokens, HTTPS with client certificates, loading data."""

from __future__ import annotations

import json

import pytest
import urllib3
from conftest import EXAMPLES, client_for
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubernetai.sandbox.server import Sandbox


@pytest.fixture
def make_sandbox(reactor_running):
    started = []

    def make(**kwargs) -> Sandbox:
        server = Sandbox(**kwargs)
        server.start()
        started.append(server)
        return server
    yield make
    for server in started:
        server.stop()


def test_token_required(make_sandbox, tmp_path):
    """With a token, anonymous requests get 401 Unauthorized and the kubeconfig's token works."""
    server = make_sandbox(token="s3cret")
    anonymous = urllib3.PoolManager().request("GET", server.url + "/api/v1/namespaces")
    assert anonymous.status == 401
    assert json.loads(anonymous.data)["reason"] == "Unauthorized"
    wrong = urllib3.PoolManager().request("GET", server.url + "/api/v1/namespaces",
                                          headers={"authorization": "Bearer nope"})
    assert wrong.status == 401
    core = client.CoreV1Api(client_for(server, tmp_path))
    assert "default" in {n.metadata.name for n in core.list_namespace().items}


def test_tls_with_client_certificate(make_sandbox, tmp_path):
    """HTTPS: the generated kubeconfig (CA + client cert) works; no certificate gets 401."""
    server = make_sandbox(use_tls=True, tls_dir=tmp_path / "tls")
    assert server.url.startswith("https://127.0.0.1:")
    core = client.CoreV1Api(client_for(server, tmp_path))
    assert core.list_namespace().items
    files = server.tls_files
    http = urllib3.PoolManager(ca_certs=str(files.ca_cert))
    assert http.request("GET", server.url + "/api/v1/namespaces").status == 401
    with pytest.raises(urllib3.exceptions.SSLError):  # a client not trusting the sandbox CA
        urllib3.PoolManager(retries=False).request("GET", server.url + "/version")


def test_tls_files_match_coredns_tls_option(make_sandbox, tmp_path):
    """The client cert, key and CA are what CoreDNS's `tls CERT KEY CACERT` takes."""
    server = make_sandbox(use_tls=True, tls_dir=tmp_path / "tls")
    files = server.tls_files
    configuration = client.Configuration()
    configuration.host = server.url
    configuration.cert_file = str(files.client_cert)
    configuration.key_file = str(files.client_key)
    configuration.ssl_ca_cert = str(files.ca_cert)
    core = client.CoreV1Api(client.ApiClient(configuration))
    assert core.list_namespace().items


def test_load_example_cluster(make_sandbox, tmp_path):
    """An examples/ directory loads as it is and is served through the client."""
    server = make_sandbox()
    stored = server.apply(EXAMPLES / "cluster.local")
    assert stored
    core = client.CoreV1Api(client_for(server, tmp_path))
    services = {(s.metadata.namespace, s.metadata.name)
                for s in core.list_service_for_all_namespaces().items}
    assert ("default", "kubernetes") in services and ("kube-system", "kube-dns") in services


def test_load_kubectl_dump(make_sandbox, tmp_path):
    """A `kubectl get -A -o yaml` style List dump loads; kinds not served are skipped."""
    dump = tmp_path / "dump.yaml"
    dump.write_text("""\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: api, namespace: prod, resourceVersion: "99", uid: old}
  spec: {clusterIP: 10.96.7.7, ports: [{port: 443}]}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: api, namespace: prod}
""")
    server = make_sandbox()
    server.apply(dump)
    service = server.get("Service", "prod", "api")
    assert service["spec"]["clusterIP"] == "10.96.7.7"
    assert service["metadata"]["uid"] != "old"


def test_services_get_cluster_ips_allocated(make_sandbox):
    """A Service created without a ClusterIP gets one from the service CIDR, as kube does."""
    server = make_sandbox(service_cidr="10.200.0.0/16")
    server.apply({"apiVersion": "v1", "kind": "Service",
                  "metadata": {"name": "a", "namespace": "x"}, "spec": {"ports": [{"port": 1}]}})
    server.apply({"apiVersion": "v1", "kind": "Service",
                  "metadata": {"name": "b", "namespace": "x"}, "spec": {"ports": [{"port": 1}]}})
    a, b = server.get("Service", "x", "a"), server.get("Service", "x", "b")
    assert a["spec"]["clusterIP"].startswith("10.200.") and b["spec"]["clusterIPs"]
    assert a["spec"]["clusterIP"] != b["spec"]["clusterIP"]


def test_deleting_a_namespace_deletes_its_objects(make_sandbox, tmp_path):
    """Deleting a namespace removes what was in it, each with a DELETED event."""
    server = make_sandbox()
    server.apply({"apiVersion": "v1", "kind": "Service",
                  "metadata": {"name": "a", "namespace": "gone"}, "spec": {"ports": [{"port": 1}]}})
    server.delete("Namespace", "", "gone")
    core = client.CoreV1Api(client_for(server, tmp_path))
    assert core.list_namespaced_service("gone").items == []
    with pytest.raises(ApiException):
        core.read_namespace("gone")
