"""In-cluster: a stanza with neither `endpoint` nor `kubeconfig` uses the service account
(token and CA from KUBERNETAI_SERVICEACCOUNT_DIR, the API server from
KUBERNETES_SERVICE_HOST/PORT), and picks up a rotated token without a restart; the
sandbox's token rotation that the end-to-end test relies on."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import free_dns_port, wait_for
from dns.exception import Timeout as DNSTimeout
from test_e2e import SOURCE_ENV, TWISTD, answers, ask

from kubernetai.corefile import CorefileError, parse
from kubernetai.plugins.kubernetai.apiclient import kube_client_config
from kubernetai.plugins.kubernetai.config import parse_stanza
from kubernetai.sandbox.server import Sandbox


def _service(name: str, ip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "shop"},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]}}


NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}


def write_token(directory: Path, token: str) -> None:
    """As the kubelet updates a projected token: a new file renamed over the old one."""
    fresh = directory / ".token.new"
    fresh.write_text(token)  # no newline: the client sends the file as it is
    os.replace(fresh, directory / "token")


def service_account(directory: Path, sandbox: Sandbox, token: str) -> Path:
    """A service account directory as the kubelet mounts it: token and ca.crt."""
    assert sandbox.tls_files is not None
    directory.mkdir()
    shutil.copy(sandbox.tls_files.ca_cert, directory / "ca.crt")
    write_token(directory, token)
    return directory


def in_cluster(directory: Path, sandbox: Sandbox) -> dict[str, str]:
    return {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(sandbox.port),
            "KUBERNETAI_SERVICEACCOUNT_DIR": str(directory)}


@pytest.fixture
def cluster(reactor_running: None) -> Iterator[Sandbox]:
    server = Sandbox(use_tls=True, token="token-one", bookmark_interval=1.0)
    server.apply([NAMESPACE, _service("before", "10.96.1.1")])
    server.start()
    yield server
    server.stop()


# -- where the service account is read ----------------------------------------------------


def _stanza() -> Any:
    [block] = parse("cluster.local {\n    kubernetai cluster.local\n}\n")
    return parse_stanza(block.directives[0], ("cluster.local.",))


def test_service_account_directory_from_the_environment(cluster, tmp_path):
    """KUBERNETAI_SERVICEACCOUNT_DIR moves where `token` and `ca.crt` are read."""
    directory = service_account(tmp_path / "sa", cluster, "token-one")
    cfg = kube_client_config(_stanza(), environ=in_cluster(directory, cluster))
    assert cfg.host == f"https://127.0.0.1:{cluster.port}"
    assert cfg.ssl_ca_cert == str(directory / "ca.crt")
    assert cfg.auth_settings()["BearerToken"]["value"] == "bearer token-one"


def test_missing_service_account_says_where_it_looked(tmp_path):
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "443",
               "KUBERNETAI_SERVICEACCOUNT_DIR": str(tmp_path / "nowhere")}
    with pytest.raises(CorefileError) as info:
        kube_client_config(_stanza(), environ=environ)
    assert str(info.value) == (
        "Corefile:2: kubernetai: unable to load in-cluster configuration: Service token file "
        f"does not exist. (the service account's token and ca.crt are read from "
        f"{tmp_path / 'nowhere'}; KUBERNETAI_SERVICEACCOUNT_DIR names another directory)")


def test_default_directory_is_the_kubelets(tmp_path):
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(CorefileError, match="read from /var/run/secrets/kubernetes.io/"
                                            "serviceaccount;"):
        kube_client_config(_stanza(), environ=environ)


# -- the sandbox's token rotation -----------------------------------------------------------


def _open(sandbox: Sandbox, path: str, token: str, body: Any = None) -> Any:
    """A request with a bearer token (in lower case, as the official client sends it)."""
    assert sandbox.tls_files is not None
    context = ssl.create_default_context(cafile=str(sandbox.tls_files.ca_cert))
    request = urllib.request.Request(
        sandbox.url + path, data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={"authorization": f"bearer {token}", "content-type": "application/json"})
    return urllib.request.urlopen(request, context=context, timeout=10)


def _request(sandbox: Sandbox, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    try:
        with _open(sandbox, path, token, body) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_rotation_refuses_the_old_token_and_ends_its_watches(cluster):
    """POST /_sandbox/token makes the new token the only one accepted (the scheme in any
    case, as kube-apiserver reads it) and ends the watches opened with the old one."""
    with _open(cluster, "/api/v1/services?watch=1", "token-one") as watch:
        assert watch.status == 200
        wait_for(lambda: cluster.api.watches, what="the watch to be open")
        code, answer = _request(cluster, "/_sandbox/token", "token-one", {"token": "token-two"})
        assert (code, answer) == (200, {"ok": True, "watches_ended": 1})
        with pytest.raises(http.client.IncompleteRead):
            watch.read()  # the connection is dropped mid-stream
    code, answer = _request(cluster, "/api/v1/services", "token-one")
    assert code == 401 and answer["reason"] == "Unauthorized"
    assert _request(cluster, "/api/v1/services", "token-two")[0] == 200
    assert cluster.token_counts() == {"token-one": 2, "token-two": 1}
    assert cluster.unauthorized_count() == 1
    assert _request(cluster, "/_sandbox/token", "token-two", {"token": "a b"})[0] == 400


# -- end to end: a rotated token is picked up without a restart --------------------------------

COREFILE = """\
cluster.local:{dns} {{
    bind 127.0.0.1
    kubernetai cluster.local
}}
"""


@pytest.mark.slow
def test_rotated_token_is_picked_up_without_restart(cluster, tmp_path):
    """twistd in-cluster against the sandbox over TLS. Once synced, the kubelet writes a new
    token and the API server stops accepting the old one (its watches end); a service
    created then is answered, with no restart, once the client re-reads the token file
    (the official client does when its copy is over a minute old)."""
    directory = service_account(tmp_path / "serviceaccount", cluster, "token-one")
    dns = free_dns_port()
    corefile = tmp_path / "Corefile"
    corefile.write_text(COREFILE.format(dns=dns))
    log = tmp_path / "twistd.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [TWISTD, "--nodaemon", "--pidfile=", "kubernetai", "--corefile", str(corefile)],
            stdout=output, stderr=subprocess.STDOUT, cwd=tmp_path,
            env={**SOURCE_ENV, **in_cluster(directory, cluster)})
    try:
        def running(predicate: Any, what: str, timeout: float) -> Any:
            def check() -> Any:
                assert process.poll() is None, log.read_text()
                try:
                    return predicate()
                except (OSError, DNSTimeout):  # not listening yet
                    return None
            try:
                return wait_for(check, timeout=timeout, what=what)
            except AssertionError as error:
                raise AssertionError(f"{error}\n{log.read_text()[-4000:]}") from None

        running(lambda: answers(ask(dns, "before.shop.svc.cluster.local")) == ["10.96.1.1"],
                "the first sync", 60)
        assert cluster.token_counts().get("token-one", 0) >= 3  # each resource's watch

        write_token(directory, "token-two")
        assert cluster.rotate_token("token-two") >= 3
        cluster.apply(_service("after", "10.96.1.2"))
        running(lambda: answers(ask(dns, "after.shop.svc.cluster.local")) == ["10.96.1.2"],
                "the service created after the rotation", 180)
        # Each informer (services, namespaces, EndpointSlices) comes back with the new one.
        running(lambda: cluster.token_counts().get("token-two", 0) >= 3,
                "every informer on the new token", 60)
        assert cluster.unauthorized_count() > 0  # the old token was tried, and refused
        assert answers(ask(dns, "before.shop.svc.cluster.local")) == ["10.96.1.1"]
        assert process.poll() is None
    finally:
        process.kill()
        process.wait(30)
