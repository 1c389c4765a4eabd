"""dryRun=All (kubectl --dry-run=server): validated and rendered like a real write,
nothing stored, no resourceVersion bump, no watch event."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading

import pytest
import urllib3
from conftest import wait_for
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubernetai.sandbox.status import ApiError

KUBECTL = shutil.which("kubectl")


def _service(name: str, namespace: str = "dry") -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": {"v": "1"}},
            "spec": {"ports": [{"port": 80}]}}


@pytest.fixture
def core(kube):
    return client.CoreV1Api(kube)


@pytest.fixture
def watched(sandbox):
    """Every event a watch on services sees while the test runs."""
    events: list[dict] = []
    rv = sandbox.resource_version

    def read() -> None:
        response = urllib3.PoolManager(retries=False).request(
            "GET", f"{sandbox.url}/api/v1/services?watch=1&resourceVersion={rv}"
                   "&timeoutSeconds=60", preload_content=False,
            timeout=urllib3.Timeout(connect=5, read=70))
        buffer = b""
        try:
            for chunk in response.stream(1024):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    events.append(json.loads(line))
        except urllib3.exceptions.ProtocolError:
            pass  # cut at the end of the test
    reader = threading.Thread(target=read)
    reader.start()
    wait_for(lambda: sandbox.api.watches, what="the watch to open")
    yield events
    sandbox.cut_watches()
    reader.join(30)


def test_dry_run_create_renders_and_stores_nothing(sandbox, core, watched):
    """A dry-run create answers 201 with the server-filled object (uid, ClusterIP, no
    resourceVersion), and nothing is stored, bumped or watched."""
    sandbox.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dry"}})
    rv = sandbox.resource_version
    made = core.create_namespaced_service("dry", _service("web"), dry_run="All")
    assert made.metadata.uid and made.spec.cluster_ip.startswith("10.")
    assert made.metadata.resource_version is None
    assert sandbox.resource_version == rv
    assert core.list_namespaced_service("dry").items == []
    watched_names = lambda: [e["object"]["metadata"]["name"] for e in watched]  # noqa: E731
    created = core.create_namespaced_service("dry", _service("real"))
    assert created.spec.cluster_ip == made.spec.cluster_ip  # the dry run held no address
    wait_for(lambda: "real" in watched_names(), what="the real create's event")
    assert "web" not in watched_names()


def test_dry_run_update_patch_and_delete_change_nothing(sandbox, core, watched):
    """Dry-run PUT, PATCH and DELETE answer with what would be, and the object stays."""
    sandbox.apply(_service("web"))
    rv = sandbox.resource_version
    current = core.read_namespaced_service("web", "dry")
    current.metadata.labels = {"v": "2"}
    replaced = core.replace_namespaced_service("web", "dry", current, dry_run="All")
    assert replaced.metadata.labels == {"v": "2"}
    assert replaced.metadata.resource_version == str(rv)
    patched = core.patch_namespaced_service("web", "dry", {"metadata": {"labels": {"v": "3"}}},
                                            dry_run="All")
    assert patched.metadata.labels == {"v": "3"}
    deleted = core.delete_namespaced_service("web", "dry", dry_run="All")
    assert deleted.metadata.name == "web"
    assert sandbox.resource_version == rv
    assert core.read_namespaced_service("web", "dry").metadata.labels == {"v": "1"}
    core.delete_namespace("dry", dry_run="All")  # no cascade either
    assert core.read_namespaced_service("web", "dry").metadata.name == "web"


def test_dry_run_is_validated_like_a_write(sandbox, core):
    """A dry run fails as the write would (409 AlreadyExists), and dryRun takes only All."""
    sandbox.apply(_service("web"))
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_service("dry", _service("web"), dry_run="All")
    assert caught.value.status == 409
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_service("dry", _service("other"), dry_run="Some")
    assert caught.value.status == 422
    assert json.loads(caught.value.body)["message"] == (
        'CreateOptions.meta.k8s.io "" is invalid: dryRun: Unsupported value: '
        '[]string{"Some"}: supported values: "All"')
    assert [s.metadata.name for s in core.list_namespaced_service("dry").items] == ["web"]


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed here")
def test_kubectl_server_dry_run(sandbox, tmp_path):
    """kubectl create --dry-run=server -f and delete --dry-run=server leave the sandbox
    as it was."""
    config = sandbox.write_kubeconfig(tmp_path / "kubeconfig")
    manifest = tmp_path / "svc.yaml"
    manifest.write_text("apiVersion: v1\nkind: Service\nmetadata:\n  name: trial\n"
                        "  namespace: default\nspec:\n  ports:\n  - port: 80\n")

    def kubectl(*args: str) -> str:
        result = subprocess.run([KUBECTL, "--kubeconfig", str(config), *args],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()
    rv = sandbox.resource_version
    assert kubectl("create", "--dry-run=server", "-f", str(manifest)) == \
        "service/trial created (server dry run)"
    assert sandbox.resource_version == rv
    with pytest.raises(ApiError):
        sandbox.get("Service", "default", "trial")
    kubectl("create", "-f", str(manifest))
    rv = sandbox.resource_version
    assert kubectl("delete", "--dry-run=server", "service", "trial") == \
        'service "trial" deleted (server dry run)'
    assert sandbox.resource_version == rv
    assert sandbox.get("Service", "default", "trial")["metadata"]["name"] == "trial"
