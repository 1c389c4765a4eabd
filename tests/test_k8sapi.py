"""k8sapi: the informers' list and watch requests, the same as the official client's.

Each request is compared byte for byte (method, URL, headers, timeout) with what the
generated ``list_*`` method sends with ``_preload_content=False``, both through a REST
client that records instead of connecting; errors come back as the client's own
``ApiException``; and a real list and watch go through the sandbox.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kubernetai.plugins.kubernetai import k8sapi
from kubernetai.sandbox.server import Sandbox


class _Answer:
    """What RESTClientObject.request returns (a RESTResponse), as far as callers read it."""

    def __init__(self, status: int, body: bytes = b"{}") -> None:
        self.status = status
        self.reason = "Reason"
        self.data: bytes | None = None
        self._body = body
        self.response = self  # the urllib3 response the caller streams
        self.headers = {"Content-Type": "application/json"}

    def read(self) -> bytes:
        self.data = self._body
        return self._body

    def getheaders(self) -> dict[str, str]:
        return self.headers


class _Recorder:
    def __init__(self, status: int = 200, body: bytes = b"{}") -> None:
        self.requests: list[tuple[Any, ...]] = []
        self.status = status
        self.body = body

    def request(self, method: str, url: str, headers: Any = None, body: Any = None,
                post_params: Any = None, _request_timeout: Any = None) -> _Answer:
        self.requests.append((method, url, dict(headers or {}), body, _request_timeout))
        return _Answer(self.status, self.body)


def _configuration(token: str | None = "secret") -> Any:
    configuration = k8sapi.Configuration()
    configuration.host = "https://127.0.0.1:6443"
    if token:
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
    return configuration


def _official(resource: str, configuration: Any, recorder: _Recorder) -> Any:
    from kubernetes import client

    api = client.ApiClient(configuration)
    api.rest_client = recorder
    api.user_agent = "kubernetai/python"
    api.cookie = "session=1"
    if resource == "services":
        return client.CoreV1Api(api).list_service_for_all_namespaces
    if resource == "pods":
        return client.CoreV1Api(api).list_pod_for_all_namespaces
    if resource == "namespaces":
        return client.CoreV1Api(api).list_namespace
    if resource == "endpointslices":
        return client.DiscoveryV1Api(api).list_endpoint_slice_for_all_namespaces

    def custom(**params: Any) -> Any:
        return client.CustomObjectsApi(api).list_cluster_custom_object(
            "multicluster.x-k8s.io", "v1alpha1", "serviceimports", **params)
    return custom


def _ours(resource: str, configuration: Any, recorder: _Recorder) -> Any:
    api = k8sapi.ApiClient(configuration)
    api.rest_client = recorder
    api.user_agent = "kubernetai/python"
    api.cookie = "session=1"
    return k8sapi.lister(api, resource)


CALLS = [
    {"limit": 500},
    {"limit": 500, "_continue": "eyJ2IjoibWV0YS5rOHMuaW8vdjEifQ==", "resource_version": "0",
     "resource_version_match": "NotOlderThan"},
    {"watch": True, "allow_watch_bookmarks": True, "resource_version": "123",
     "timeout_seconds": 301, "label_selector": "app in (a,b),tier!=x",
     "field_selector": "status.phase!=Succeeded,status.phase!=Failed"},
    {"watch": True, "send_initial_events": True, "resource_version_match": "NotOlderThan",
     "allow_watch_bookmarks": True},
]


# The generated custom-object method has no sendInitialEvents, so that one has nothing to
# be compared with (tests/test_informer_list.py watch-lists serviceimports end to end).
COMPARABLE = [(resource, params) for resource in k8sapi.PATHS for params in CALLS
              if not (resource == "serviceimports" and "send_initial_events" in params)]


@pytest.mark.parametrize(("resource", "params"), COMPARABLE)
def test_requests_are_the_official_clients(resource: str, params: dict[str, Any]) -> None:
    """Same method, URL (path, query order and encoding), headers (Accept, user agent,
    cookie, bearer token) and timeout as the generated method."""
    sent = []
    for build in (_official, _ours):
        recorder = _Recorder()
        build(resource, _configuration(), recorder)(
            _preload_content=False, _request_timeout=(3.0, 60.0), **params)
        sent.append(recorder.requests)
    assert sent[0] == sent[1]
    assert len(sent[1]) == 1


def test_refreshed_token_is_sent() -> None:
    """The configuration's refresh hook runs before each request, as in ApiClient."""
    configuration = _configuration(token=None)
    configuration.api_key = {"authorization": "Bearer zero"}  # as the in-cluster loader sets
    tokens = iter(["one", "two"])

    def refresh(config: Any) -> None:
        config.api_key = {"authorization": "Bearer " + next(tokens)}
    configuration.refresh_api_key_hook = refresh
    recorder = _Recorder()
    api = k8sapi.ApiClient(configuration)
    api.rest_client = recorder
    lister = k8sapi.lister(api, "pods")
    lister(limit=1)
    lister(limit=1)
    assert [r[2]["authorization"] for r in recorder.requests] == ["Bearer one", "Bearer two"]


def test_no_token_no_authorization_header() -> None:
    recorder = _Recorder()
    api = k8sapi.ApiClient(_configuration(token=None))
    api.rest_client = recorder
    k8sapi.lister(api, "namespaces")(limit=1)
    assert "authorization" not in recorder.requests[0][2]


@pytest.mark.parametrize("status", [401, 410, 429, 500, 503])
def test_error_answers_raise_the_clients_exception(status: int) -> None:
    body = json.dumps({"kind": "Status", "code": status, "reason": "Expired"}).encode()
    api = k8sapi.ApiClient(_configuration())
    api.rest_client = _Recorder(status, body)
    with pytest.raises(k8sapi.ApiException) as raised:
        k8sapi.lister(api, "pods")(limit=1, _preload_content=False)
    assert raised.value.status == status
    assert json.loads(raised.value.body)["code"] == status


def test_unknown_parameter_and_resource_are_refused() -> None:
    api = k8sapi.ApiClient(_configuration())
    api.rest_client = _Recorder()
    with pytest.raises(TypeError, match="resourceversion"):
        k8sapi.lister(api, "pods")(resourceversion="1")
    with pytest.raises(ValueError, match="cannot watch 'deployments'"):
        k8sapi.lister(api, "deployments")
    with pytest.raises(ValueError, match="_preload_content"):
        k8sapi.lister(api, "pods")(_preload_content=True)


def test_list_and_watch_against_the_sandbox(sandbox: Sandbox) -> None:
    """A real list, then a watch from its resourceVersion, over HTTP."""
    configuration = k8sapi.Configuration()
    configuration.host = sandbox.url
    api = k8sapi.ApiClient(configuration)
    lister = k8sapi.lister(api, "namespaces")
    response = lister(limit=10, _preload_content=False, _request_timeout=(5, 5))
    document = json.loads(response.read())
    response.release_conn()
    assert document["kind"] == "NamespaceList"
    assert document["metadata"]["resourceVersion"]
    watch = lister(watch=True, resource_version=document["metadata"]["resourceVersion"],
                   timeout_seconds=1, _preload_content=False, _request_timeout=(5, 5))
    try:
        assert watch.status == 200
    finally:
        watch.release_conn()
    api.close()


_DEFERRED = """
import json, sys
from kubernetai.plugins.kubernetai import k8sapi
light = sorted(m for m in sys.modules if m.startswith(("kubernetes", "pydantic", "yaml")))
import kubernetes
from kubernetes import config, watch
whole = {"version": kubernetes.__version__, "watch": watch.Watch.__name__,
         "kubeconfig": callable(config.load_kube_config),
         "same_exception": kubernetes.client.exceptions.ApiException is k8sapi.ApiException,
         "api": kubernetes.client.CoreV1Api.__name__}
print(json.dumps({"light": light, "whole": whole}))
"""


def test_the_whole_client_is_still_there_when_asked_for() -> None:
    """Importing k8sapi first loads only the connection layer; code that then wants the
    whole client (watch, config, the generated API classes) gets it, the same objects."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", _DEFERRED], env=env, cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert not [m for m in result["light"] if m.startswith(
        ("pydantic", "yaml", "kubernetes.client.models.", "kubernetes.client.api.",
         "kubernetes.config.kube_config"))], result["light"]
    assert result["whole"] == {"version": result["whole"]["version"], "watch": "Watch",
                               "kubeconfig": True, "same_exception": True,
                               "api": "CoreV1Api"}
