"""kubectl against the sandbox: the Go client must not tell it from a real API server."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from kubernetai.sandbox.status import ApiError

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed here")

SERVICE_YAML = """\
apiVersion: v1
kind: Service
metadata:
  name: made-by-kubectl
  namespace: default
  labels: {app: demo}
spec:
  ports:
  - name: http
    port: 80
"""


@pytest.fixture
def kubectl(sandbox, tmp_path):
    config = sandbox.write_kubeconfig(tmp_path / "kubeconfig")

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([KUBECTL, "--kubeconfig", str(config), *args],
                                capture_output=True, text=True, timeout=60)
        if check:
            assert result.returncode == 0, result.stderr
        return result
    run.config = config  # type: ignore[attr-defined]
    return run


def _service(name: str, namespace: str = "default") -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"port": 80}]}}


def test_get_all_namespaces_json(sandbox, kubectl):
    """kubectl get -A -o json lists what the sandbox holds, across pages."""
    sandbox.apply([_service(f"s{i}", f"ns{i % 2}") for i in range(12)])
    items = json.loads(kubectl("get", "services", "-A", "-o", "json",
                               "--chunk-size=5").stdout)["items"]
    assert sorted(i["metadata"]["name"] for i in items) == sorted(f"s{i}" for i in range(12))


def test_get_endpointslices_and_default_table(sandbox, kubectl):
    """Resources of other groups resolve through discovery; the plain table prints too."""
    sandbox.apply({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                   "metadata": {"name": "web-1", "namespace": "default",
                                "labels": {"kubernetes.io/service-name": "web"}},
                   "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.9"]}]})
    out = kubectl("get", "endpointslices", "-n", "default", "-o", "json").stdout
    assert json.loads(out)["items"][0]["endpoints"][0]["addresses"] == ["10.0.0.9"]
    assert "kube-system" in kubectl("get", "namespaces").stdout


def test_create_and_delete(sandbox, kubectl, tmp_path):
    """kubectl create -f and kubectl delete change the sandbox's objects."""
    manifest = tmp_path / "svc.yaml"
    manifest.write_text(SERVICE_YAML)
    kubectl("create", "-f", str(manifest))
    created = sandbox.get("Service", "default", "made-by-kubectl")
    assert created["spec"]["clusterIP"].startswith("10.")
    again = kubectl("create", "-f", str(manifest), check=False)
    assert again.returncode != 0 and "AlreadyExists" in again.stderr
    kubectl("delete", "service", "made-by-kubectl", "-n", "default")
    with pytest.raises(ApiError):
        sandbox.get("Service", "default", "made-by-kubectl")


def test_get_watch_sees_new_objects(sandbox, kubectl):
    """kubectl get -w prints objects created after it started watching."""
    process = subprocess.Popen([KUBECTL, "--kubeconfig", str(kubectl.config), "get",
                                "services", "-n", "default", "-w", "-o", "name"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        sandbox.apply(_service("appeared-later"))
        deadline = time.monotonic() + 30
        lines = []
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line.strip())
            if "appeared-later" in line:
                break
        assert "service/appeared-later" in lines
    finally:
        process.kill()
        process.wait()
