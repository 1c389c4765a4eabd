"""`kubernetai sandbox` and `kubernetai fault` as a user runs them, in a subprocess."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import EXAMPLES
from kubernetes import client, config
from kubernetes.client.rest import ApiException


@pytest.fixture
def run_sandbox():
    processes = []

    def start(*args: str) -> tuple[subprocess.Popen, list[str]]:
        process = subprocess.Popen([sys.executable, "-m", "kubernetai", "sandbox", *args],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        processes.append(process)
        lines = [process.stdout.readline().strip()]
        if "--write-kubeconfig" in args:
            lines.append(process.stdout.readline().strip())
        return process, lines
    yield start
    for process in processes:
        process.terminate()
        process.wait(10)


def test_sandbox_serves_example_and_writes_kubeconfig(run_sandbox, tmp_path):
    """It prints its URL and the kubeconfig path; the official client reads the demo cluster."""
    kubeconfig = tmp_path / "kubeconfig"
    _, lines = run_sandbox("--manifests", str(EXAMPLES / "assemblage.local"), "--port", "0",
                           "--write-kubeconfig", str(kubeconfig))
    assert lines[0].startswith("http://127.0.0.1:")
    assert lines[1] == f"kubeconfig: {kubeconfig}"
    core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    names = {s.metadata.name for s in core.list_namespaced_service("shared").items}
    assert {"web", "reports"} <= names


def test_sandbox_tls_and_fault_command(run_sandbox, tmp_path):
    """With --tls the kubeconfig carries certificates; `kubernetai fault` injects a 503."""
    kubeconfig = tmp_path / "kubeconfig"
    _, lines = run_sandbox("--manifests", str(EXAMPLES / "cluster.local"), "--tls",
                           "--tls-dir", str(tmp_path / "tls"),
                           "--write-kubeconfig", str(kubeconfig))
    url = lines[0]
    assert url.startswith("https://127.0.0.1:")
    core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    assert core.list_namespace().items
    tls = tmp_path / "tls"
    fault = subprocess.run([sys.executable, "-m", "kubernetai", "fault", "--server", url,
                            "--cacert", str(tls / "ca.crt"), "--cert", str(tls / "client.crt"),
                            "--key", str(tls / "client.key"), "error", "code=503", "count=1"],
                           capture_output=True, text=True, timeout=60)
    assert fault.returncode == 0, fault.stderr
    with pytest.raises(ApiException) as caught:
        core.list_namespace()
    assert caught.value.status == 503
    assert core.list_namespace().items


def test_sandbox_bad_manifest_path(tmp_path):
    """A missing manifest path is a one-line error and exit status 2."""
    result = subprocess.run([sys.executable, "-m", "kubernetai", "sandbox", "--manifests",
                             str(tmp_path / "missing")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "missing: no such file or directory" in result.stderr


def test_synthetic_from_command_line(run_sandbox, tmp_path):
    """--synthetic generates a cluster the client can page through."""
    kubeconfig = tmp_path / "kubeconfig"
    run_sandbox("--synthetic", "namespaces=3,services=30,headless=3,pods=50",
                "--write-kubeconfig", str(kubeconfig))
    core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    assert len(core.list_service_for_all_namespaces(limit=500).items) == 30
    assert len(core.list_pod_for_all_namespaces().items) == 50
