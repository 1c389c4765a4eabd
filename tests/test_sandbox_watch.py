"""Watches against the sandbox, as the official client and a raw HTTP reader see them."""

from __future__ import annotations

import json
import threading
from typing import Iterator

import pytest
import urllib3
from kubernetes import client, watch
from kubernetes.client.rest import ApiException


def _service(name: str, namespace: str = "w", **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"ports": [{"name": "http", "port": 80}]}}


def raw_events(url: str, timeout: float = 5.0) -> Iterator[dict]:
    """Read a watch as newline-delimited JSON, exactly as it is on the wire."""
    http = urllib3.PoolManager()
    response = http.request("GET", url, preload_content=False,
                            timeout=urllib3.Timeout(connect=2, read=timeout))
    assert response.status == 200, response.data
    buffer = b""
    for chunk in response.stream(1024):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield json.loads(line)
    response.release_conn()


def later(seconds: float, fn, *args) -> threading.Timer:
    timer = threading.Timer(seconds, fn, args)
    timer.start()
    return timer


@pytest.fixture
def core(kube):
    return client.CoreV1Api(kube)


def test_stream_from_resource_version_gets_live_events(sandbox, core):
    """watch.stream from a resourceVersion receives ADDED, MODIFIED and DELETED as they happen."""
    sandbox.apply(_service("before"))
    rv = core.list_namespaced_service("w").metadata.resource_version

    def writes() -> None:
        sandbox.apply(_service("live", app="x"))
        sandbox.apply(_service("live", app="y"))
        sandbox.delete("Service", "w", "live")
    later(0.3, writes)
    seen = []
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_service, "w", resource_version=rv,
                          timeout_seconds=10):
        seen.append((event["type"], event["object"].metadata.name,
                     (event["object"].metadata.labels or {}).get("app")))
        if len(seen) == 3:
            w.stop()
    assert seen == [("ADDED", "live", "x"), ("MODIFIED", "live", "y"), ("DELETED", "live", "y")]


def test_replay_after_resource_version(sandbox):
    """A watch from an older resourceVersion replays exactly the events after it."""
    sandbox.apply(_service("a"))
    rv = sandbox.resource_version
    sandbox.apply(_service("b"))
    sandbox.delete("Service", "w", "a")
    url = f"{sandbox.url}/api/v1/services?watch=1&resourceVersion={rv}&timeoutSeconds=1"
    events = [(e["type"], e["object"]["metadata"]["name"]) for e in raw_events(url)]
    assert events == [("ADDED", "b"), ("DELETED", "a")]


def test_watch_without_resource_version_starts_with_current_state(sandbox):
    """No resourceVersion (or "0") starts with synthetic ADDED events for existing objects."""
    sandbox.apply([_service("a"), _service("b")])
    for rv in ("", "&resourceVersion=0"):
        url = f"{sandbox.url}/api/v1/namespaces/w/services?watch=true&timeoutSeconds=1{rv}"
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in raw_events(url)] == [
            ("ADDED", "a"), ("ADDED", "b")]


def test_events_carry_kind_and_resource_version(sandbox):
    """Each event object is a full object with kind, apiVersion and its resourceVersion."""
    sandbox.apply(_service("a"))
    url = f"{sandbox.url}/api/v1/services?watch=1&timeoutSeconds=1"
    event = next(raw_events(url))
    assert event["object"]["kind"] == "Service" and event["object"]["apiVersion"] == "v1"
    assert int(event["object"]["metadata"]["resourceVersion"]) == sandbox.resource_version


def test_bookmarks_when_allowed(sandbox):
    """allowWatchBookmarks brings BOOKMARK events with the current resourceVersion."""
    rv = sandbox.resource_version
    url = (f"{sandbox.url}/api/v1/pods?watch=1&allowWatchBookmarks=true"
           f"&resourceVersion={rv}&timeoutSeconds=2")
    events = list(raw_events(url))
    assert events and all(e["type"] == "BOOKMARK" for e in events)
    assert events[0]["object"]["kind"] == "Pod"
    assert events[0]["object"]["metadata"]["resourceVersion"] == str(rv)


def test_no_bookmarks_unless_asked(sandbox):
    """Without allowWatchBookmarks a quiet watch sends nothing and ends at timeoutSeconds."""
    url = f"{sandbox.url}/api/v1/pods?watch=1&resourceVersion={sandbox.resource_version}" \
          "&timeoutSeconds=1"
    assert list(raw_events(url)) == []


def test_send_initial_events_ends_with_annotated_bookmark(sandbox):
    """sendInitialEvents streams the current objects then a bookmark marking their end."""
    sandbox.apply(_service("a"))
    url = (f"{sandbox.url}/api/v1/services?watch=1&sendInitialEvents=true"
           "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1")
    events = list(raw_events(url))
    assert events[0]["type"] == "ADDED"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_selector_transitions_become_added_and_deleted(sandbox):
    """An object entering or leaving a label selector is seen as ADDED or DELETED."""
    sandbox.apply(_service("a", app="no"))
    rv = sandbox.resource_version
    sandbox.apply(_service("a", app="yes"))
    sandbox.apply(_service("a", app="yes", extra="1"))
    sandbox.apply(_service("a", app="no"))
    url = f"{sandbox.url}/api/v1/services?watch=1&labelSelector=app%3Dyes" \
          f"&resourceVersion={rv}&timeoutSeconds=1"
    assert [e["type"] for e in raw_events(url)] == ["ADDED", "MODIFIED", "DELETED"]


def test_too_old_resource_version_gets_410_error_event(sandbox):
    """A resourceVersion older than the kept history gets ERROR with a 410 Expired Status."""
    old = sandbox.resource_version
    for i in range(30):  # the fixture keeps 20 events per resource
        sandbox.apply(_service(f"s{i}"))
    url = f"{sandbox.url}/api/v1/services?watch=1&resourceVersion={old}"
    events = list(raw_events(url))
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert status["kind"] == "Status" and status["code"] == 410
    assert status["reason"] == "Expired"
    assert status["message"].startswith(f"too old resource version: {old} (")


def test_client_raises_410_after_expiry(sandbox, core):
    """The official client's watch raises ApiException 410 when its resourceVersion expired."""
    old = core.list_namespaced_service("w").metadata.resource_version
    for i in range(30):
        sandbox.apply(_service(f"s{i}"))
    with pytest.raises(ApiException) as caught:
        for _ in watch.Watch().stream(core.list_namespaced_service, "w",
                                      resource_version=old, timeout_seconds=5):
            pass
    assert caught.value.status == 410


def test_timeout_seconds_ends_stream_cleanly(sandbox):
    """timeoutSeconds closes the stream with a proper end of the chunked body."""
    url = f"{sandbox.url}/api/v1/services?watch=1&resourceVersion={sandbox.resource_version}" \
          "&timeoutSeconds=1"
    http = urllib3.PoolManager()
    response = http.request("GET", url, timeout=urllib3.Timeout(read=5))
    assert response.status == 200 and response.data == b""
