"""Continue tokens of paginated lists, as kube-apiserver's etcd3 store answers them: served
at their own resourceVersion while history holds it, 410 Expired with an inconsistent
continue token once compacted (expire-history, a restart), too large for a restarted
server's history."""

from __future__ import annotations

import json
from typing import Iterator

import pytest
import urllib3
from conftest import client_for
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubernetai.sandbox.server import Sandbox

INCONSISTENT = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted between "
    "the time the first chunk was returned and now may show up in the list.")


def _service(name: str, namespace: str = "pages") -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"port": 80}]}}


@pytest.fixture
def paged(reactor_running) -> Iterator[Sandbox]:
    server = Sandbox(history_size=200, too_large_rv_delay=0.3)
    server.apply([_service(f"s{i}") for i in range(6)])
    server.start()
    yield server
    server.stop()


def page(server: Sandbox, query: str) -> tuple[int, dict]:
    response = urllib3.PoolManager(retries=False).request(
        "GET", f"{server.url}/api/v1/namespaces/pages/services?{query}")
    return response.status, json.loads(response.data)


def names(body: dict) -> list[str]:
    return [item["metadata"]["name"] for item in body["items"]]


def test_expired_continue_token_is_410_with_an_inconsistent_token(paged):
    """expire-history compacts under an unfinished list: the next page is the etcd3 store's
    410 Expired, whose metadata.continue goes on at the latest state from the same key."""
    status, first = page(paged, "limit=2")
    assert status == 200 and names(first) == ["s0", "s1"]
    paged.expire_history()
    paged.apply(_service("s1a"))  # written after the first page: an inconsistent list shows it
    status, expired = page(paged, "limit=2&continue=" + first["metadata"]["continue"])
    assert status == 410
    assert expired["reason"] == "Expired" and expired["code"] == 410
    assert expired["message"] == INCONSISTENT
    token = expired["metadata"]["continue"]
    seen, latest = [], None
    while token:
        status, body = page(paged, "limit=2&continue=" + token)
        assert status == 200
        seen += names(body)
        latest = body["metadata"]["resourceVersion"]
        token = body["metadata"].get("continue")
    assert seen == ["s1a", "s2", "s3", "s4", "s5"]
    assert latest == str(paged.resource_version)


def test_official_client_gets_the_410(paged, tmp_path):
    """The Python client raises ApiException 410 with that Status body."""
    core = client.CoreV1Api(client_for(paged, tmp_path))
    token = core.list_namespaced_service("pages", limit=2).metadata._continue
    paged.expire_history()
    with pytest.raises(ApiException) as caught:
        core.list_namespaced_service("pages", limit=2, _continue=token)
    assert caught.value.status == 410
    body = json.loads(caught.value.body)
    assert body["message"] == INCONSISTENT and body["metadata"]["continue"]


def test_continue_is_consistent_while_history_holds_its_version(paged):
    """A token stays good as long as history reaches back to its resourceVersion, even when
    many other lists came between and writes changed the objects: it sees its own moment."""
    status, first = page(paged, "limit=3")
    at = first["metadata"]["resourceVersion"]
    for i in range(20):  # writes and lists at 20 other resourceVersions
        paged.apply(_service(f"new{i:02d}"))
        assert page(paged, "limit=1")[0] == 200
    paged.delete("Service", "pages", "s4")
    status, rest = page(paged, "continue=" + first["metadata"]["continue"])
    assert status == 200
    assert rest["metadata"]["resourceVersion"] == at
    assert names(rest) == ["s3", "s4", "s5"]


def test_continue_past_history_is_410(reactor_running):
    """History that moved past the token's resourceVersion (a short window under writes)
    expires it as compaction would."""
    server = Sandbox(history_size=3)
    server.apply([_service(f"s{i}") for i in range(4)])
    server.start()
    try:
        status, first = page(server, "limit=2")
        server.apply([_service(f"w{i}") for i in range(5)])
        status, body = page(server, "limit=2&continue=" + first["metadata"]["continue"])
        assert status == 410 and body["message"] == INCONSISTENT
    finally:
        server.stop()


def test_continue_after_a_restart(paged):
    """After a restart a token from before is from the future (504 too large, at once) if
    the old resourceVersion is beyond the new history, else compacted (410)."""
    status, early = page(paged, "limit=2")
    paged.apply([_service(f"later{i}") for i in range(5)])
    status, late = page(paged, "limit=2")
    back = paged.restart()
    status, body = page(paged, "limit=2&continue=" + late["metadata"]["continue"])
    assert status == 504
    assert body["message"] == (f"Timeout: Too large resource version: "
                               f"{late['metadata']['resourceVersion']}, current: {back}")
    assert "retryAfterSeconds" not in body["details"]
    status, body = page(paged, "limit=2&continue=" + early["metadata"]["continue"])
    assert status == 200  # the early token's version is the restored one: still consistent
    paged.apply(_service("moved"))
    paged.expire_history()
    status, body = page(paged, "limit=2&continue=" + early["metadata"]["continue"])
    assert status == 410 and body["message"] == INCONSISTENT


def test_malformed_continue_token_is_400(paged):
    """A token that does not decode is a 400, not an expiry."""
    status, body = page(paged, "limit=2&continue=not-a-token")
    assert status == 400 and body["reason"] == "BadRequest"
