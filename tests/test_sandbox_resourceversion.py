"""Reads at resourceVersions the sandbox has not reached, exact reads of the past, and
restarts that send resourceVersions back below what clients have seen: all answered as
kube-apiserver answers them (watch cache: wait 3 s, then 504 "Too large resource version";
a watch from the future is accepted and stays silent; etcd: exact reads of history, 410
once compacted)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Iterator

import pytest
import urllib3
from conftest import EXAMPLES, client_for, wait_for
from kubernetes import client

from kubernetai.sandbox.server import Sandbox

DELAY = 0.3


def _service(name: str, namespace: str = "rv", **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"ports": [{"port": 80}]}}


def too_large_body(asked: int, current: int, retry: bool = True) -> dict:
    details: dict = {"causes": [{"reason": "ResourceVersionTooLarge",
                                 "message": "Too large resource version"}]}
    if retry:
        details["retryAfterSeconds"] = 1
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f"Timeout: Too large resource version: {asked}, current: {current}",
            "reason": "Timeout", "details": details, "code": 504}


@pytest.fixture
def quick(reactor_running) -> Iterator[Sandbox]:
    """A sandbox that gives up waiting for a future resourceVersion after DELAY seconds."""
    server = Sandbox(bookmark_interval=0.3, history_size=50, too_large_rv_delay=DELAY)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def http() -> urllib3.PoolManager:
    return urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=30))


def get(http: urllib3.PoolManager, server: Sandbox, path: str) -> urllib3.BaseHTTPResponse:
    return http.request("GET", server.url + path)


def watch_events(server: Sandbox, query: str, read: float = 10) -> list[dict]:
    """Every event of one watch, read until the server ends it."""
    pool = urllib3.PoolManager(retries=False)
    response = pool.request("GET", f"{server.url}/api/v1/services?watch=1&{query}",
                            preload_content=False,
                            timeout=urllib3.Timeout(connect=5, read=read))
    assert response.status == 200
    body = b"".join(response.stream(4096))
    return [json.loads(line) for line in body.splitlines() if line]


# -- lists and gets from the future ----------------------------------------------------------


def test_list_from_a_future_version_is_504_too_large(quick, http):
    """A list asking for a resourceVersion the store has not reached waits the delay, then
    gets kube-apiserver's 504 Status (cause ResourceVersionTooLarge) and Retry-After: 1."""
    current = quick.resource_version
    started = time.monotonic()
    response = get(http, quick, f"/api/v1/services?resourceVersion={current + 100}")
    assert time.monotonic() - started >= DELAY * 0.9
    assert response.status == 504
    assert json.loads(response.data) == too_large_body(current + 100, current)
    assert response.headers["Retry-After"] == "1"


def test_not_older_than_and_paginated_not_older_than_wait_too(quick, http):
    """resourceVersionMatch=NotOlderThan goes to the watch cache with or without a limit."""
    future = quick.resource_version + 7
    for query in (f"resourceVersion={future}&resourceVersionMatch=NotOlderThan",
                  f"resourceVersion={future}&resourceVersionMatch=NotOlderThan&limit=2"):
        response = get(http, quick, "/api/v1/namespaces?" + query)
        assert response.status == 504
        assert json.loads(response.data) == too_large_body(future, quick.resource_version)


def test_list_answers_once_the_store_catches_up(reactor_running, http):
    """A list waiting for a future resourceVersion is answered as soon as writes reach it;
    the reactor keeps serving (the writes below go through it) while the list waits."""
    server = Sandbox(too_large_rv_delay=60)
    server.start()
    try:
        target = server.resource_version + 3
        answer: dict = {}
        waiting = threading.Thread(target=lambda: answer.update(response=get(
            http, server, f"/api/v1/namespaces/rv/services?resourceVersion={target}")))
        waiting.start()
        wait_for(lambda: server.api.freshness.waiting == 1, what="the list to wait")
        server.apply([_service("a"), _service("b")])  # namespace + 2 services: rv + 3
        waiting.join(30)
        response = answer["response"]
        assert response.status == 200
        body = json.loads(response.data)
        assert int(body["metadata"]["resourceVersion"]) >= target
        assert [s["metadata"]["name"] for s in body["items"]] == ["a", "b"]
    finally:
        server.stop()


def test_exact_and_legacy_paginated_lists_from_the_future_fail_at_once(quick, http):
    """Exact reads go to etcd in kube-apiserver, which refuses a future revision at once:
    504 too large with no retry suggestion and no Retry-After."""
    current = quick.resource_version
    for query in (f"resourceVersion={current + 5}&resourceVersionMatch=Exact",
                  f"resourceVersion={current + 5}&limit=10"):
        response = get(http, quick, "/api/v1/services?" + query)
        assert response.status == 504
        assert json.loads(response.data) == too_large_body(current + 5, current, retry=False)
        assert "Retry-After" not in response.headers
    assert quick.api.freshness.waiting == 0


def test_resource_version_zero_and_empty_are_not_future(quick, http):
    """"0" (any) and "" (latest) are served at once, whatever the store's resourceVersion."""
    for query in ("", "?resourceVersion=0", "?resourceVersion="):
        assert get(http, quick, "/api/v1/services" + query).status == 200


def test_get_from_a_future_version_is_504_too(quick, http):
    """GET of one object at a future resourceVersion waits, then 504 too large."""
    quick.apply(_service("one"))
    current = quick.resource_version
    path = "/api/v1/namespaces/rv/services/one?resourceVersion="
    response = get(http, quick, f"{path}{current + 1}")
    assert response.status == 504
    assert json.loads(response.data) == too_large_body(current + 1, current)
    assert get(http, quick, f"{path}{current}").status == 200


def test_official_client_sees_the_status_cause(quick, tmp_path):
    """The Python client's ApiException carries the Status an informer decides on."""
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(client_for(quick, tmp_path))
    with pytest.raises(ApiException) as caught:
        core.list_namespace(resource_version=str(quick.resource_version + 1))
    assert caught.value.status == 504
    causes = json.loads(caught.value.body)["details"]["causes"]
    assert causes == [{"reason": "ResourceVersionTooLarge",
                       "message": "Too large resource version"}]


# -- exact lists of the past ------------------------------------------------------------------


def test_exact_list_serves_the_state_at_that_version(quick, http):
    """resourceVersionMatch=Exact (and a limit with a resourceVersion) lists the objects as
    they were then: later creations absent, later deletions and changes undone."""
    quick.apply([_service("kept", v="1"), _service("deleted"), _service("changed", v="1")])
    then = quick.resource_version
    quick.apply([_service("created"), _service("changed", v="2")])
    quick.delete("Service", "rv", "deleted")
    for query in (f"resourceVersion={then}&resourceVersionMatch=Exact",
                  f"resourceVersion={then}&limit=10"):
        body = json.loads(get(http, quick, "/api/v1/namespaces/rv/services?" + query).data)
        assert body["metadata"]["resourceVersion"] == str(then)
        items = {s["metadata"]["name"]: s["metadata"]["labels"] for s in body["items"]}
        assert items == {"changed": {"v": "1"}, "deleted": {}, "kept": {"v": "1"}}
    latest = json.loads(get(http, quick, "/api/v1/namespaces/rv/services").data)
    assert sorted(s["metadata"]["name"] for s in latest["items"]) == ["changed", "created",
                                                                      "kept"]


def test_exact_list_before_the_history_is_410(quick, http):
    """An exact read older than the kept history is what etcd calls compacted: 410."""
    quick.apply(_service("a"))
    old = quick.resource_version
    quick.expire_history()
    response = get(http, quick, f"/api/v1/services?resourceVersion={old}"
                                "&resourceVersionMatch=Exact")
    assert response.status == 410
    body = json.loads(response.data)
    assert body["reason"] == "Expired"
    assert body["message"] == "The resourceVersion for the provided list is too old."


@pytest.mark.parametrize("query, code, text", [
    ("resourceVersionMatch=Exact", 422, "resourceVersionMatch is forbidden unless "
                                        "resourceVersion is provided"),
    ("resourceVersion=0&resourceVersionMatch=Exact", 422,
     'resourceVersionMatch "exact" is forbidden for resourceVersion "0"'),
    ("resourceVersion=1&resourceVersionMatch=Newest", 422, 'Unsupported value: "Newest"'),
    ("resourceVersion=3&continue=abc", 400,
     "specifying resource version is not allowed when using continue"),
])
def test_invalid_resource_version_options(quick, http, query, code, text):
    """Option combinations kube-apiserver rejects are rejected the same way."""
    response = get(http, quick, "/api/v1/services?" + query)
    assert response.status == code
    assert text in json.loads(response.data)["message"]


# -- watches from the future ------------------------------------------------------------------


def test_watch_from_a_future_version_is_silent_until_the_store_passes_it(quick):
    """kube-apiserver accepts a watch from a resourceVersion it has not reached and sends
    only events and bookmarks newer than it: nothing at all while the store catches up
    (writes and bookmarks below it are held back), then the newer events."""
    quick.apply(_service("seed"))
    asked = quick.resource_version + 6
    events: list[dict] = []

    def read() -> None:
        response = urllib3.PoolManager(retries=False).request(
            "GET", f"{quick.url}/api/v1/services?watch=1&resourceVersion={asked}"
                   "&allowWatchBookmarks=true&timeoutSeconds=60", preload_content=False,
            timeout=urllib3.Timeout(connect=5, read=70))
        buffer = b""
        try:
            for chunk in response.stream(1024):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    events.append(json.loads(line))
        except urllib3.exceptions.ProtocolError:
            pass  # cut below
    reader = threading.Thread(target=read)
    reader.start()
    try:
        wait_for(lambda: quick.api.watches, what="the watch to open")
        for i in range(8):  # rv + 1 .. rv + 8: the first six are not newer than `asked`
            quick.apply(_service(f"s{i}"))
            time.sleep(0.1)  # bookmarks (every 0.3 s) fall while the store is below `asked`
        wait_for(lambda: any(e["object"]["metadata"].get("name") == "s7" for e in events),
                 what="the events newer than the watch's resourceVersion")
    finally:
        quick.cut_watches()
        reader.join(30)
    for event in events:  # a bookmark may say the watch's own resourceVersion, no less
        version = int(event["object"]["metadata"]["resourceVersion"])
        assert version >= asked if event["type"] == "BOOKMARK" else version > asked, event
    assert [e["object"]["metadata"]["name"] for e in events if e["type"] == "ADDED"] == \
        ["s6", "s7"]


def test_watch_from_a_future_version_with_send_initial_events_gets_an_error_event(quick):
    """With sendInitialEvents the watch cache first waits to be fresh; past the delay the
    answer is a 200 stream holding one ERROR event with the too-large Status."""
    current = quick.resource_version
    events = watch_events(quick, f"resourceVersion={current + 50}&sendInitialEvents=true"
                                 "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"
                                 "&timeoutSeconds=5")
    assert events == [{"type": "ERROR", "object": too_large_body(current + 50, current)}]


def test_watch_from_an_older_version_than_history_still_410(quick):
    """Resuming from before the history window is still the 410 ERROR event."""
    old = quick.resource_version
    quick.apply(_service("a"))
    quick.expire_history()
    [event] = watch_events(quick, f"resourceVersion={old}&timeoutSeconds=5")
    assert event["type"] == "ERROR" and event["object"]["code"] == 410


# -- restart ----------------------------------------------------------------------------------


def _started_from_manifests(**options) -> Sandbox:
    server = Sandbox(bookmark_interval=0.3, history_size=50, too_large_rv_delay=DELAY,
                     **options)
    server.apply(EXAMPLES / "assemblage.local")
    server.start()
    return server


def fresh() -> urllib3.PoolManager:
    """A client with no kept-alive connection: a restart resets those (as a real one does),
    and a pool would reuse a reset one before noticing."""
    return urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=30))


def _names(server: Sandbox) -> tuple[int, set[str]]:
    body = json.loads(get(fresh(), server, "/api/v1/services").data)
    return (int(body["metadata"]["resourceVersion"]),
            {f"{s['metadata']['namespace']}/{s['metadata']['name']}" for s in body["items"]})


def test_restart_goes_back_to_the_initial_objects_and_version(reactor_running):
    """restart(): objects written since start are gone, the ones started with are back,
    the resourceVersion counts from its starting value again, and open watches drop."""
    server = _started_from_manifests()
    try:
        start_rv, start_names = _names(server)
        server.apply(_service("later"))
        server.delete("Service", "shared", "web")
        seen_rv, _ = _names(server)
        pool = urllib3.PoolManager(retries=False)
        watch = pool.request("GET", f"{server.url}/api/v1/services?watch=1&resourceVersion="
                                    f"{seen_rv}", preload_content=False,
                             timeout=urllib3.Timeout(connect=5, read=10))
        assert server.restart() == start_rv
        with pytest.raises(urllib3.exceptions.ProtocolError):
            watch.read()
        rv, names = _names(server)
        assert (rv, names) == (start_rv, start_names) and rv < seen_rv
        server.apply(_service("after"))
        assert server.resource_version == start_rv + 2  # namespace rv, then the service
    finally:
        server.stop()


def test_restart_forgets_history(reactor_running):
    """A watch that could replay history before the restart gets 410 after it."""
    server = _started_from_manifests()
    try:
        early = server.resource_version - 3
        before = watch_events(server, f"resourceVersion={early}&timeoutSeconds=1")
        assert before and all(e["type"] == "ADDED" for e in before)
        server.restart()
        [event] = watch_events(server, f"resourceVersion={early}&timeoutSeconds=5")
        assert event["type"] == "ERROR" and event["object"]["code"] == 410
    finally:
        server.stop()


def test_restart_makes_clients_versions_future(reactor_running):
    """After a restart, a client's last resourceVersion is in the future: its list gets
    504 too large after the delay, its watch stays silent (no error)."""
    server = _started_from_manifests()
    try:
        server.apply([_service(f"x{i}") for i in range(5)])
        seen = server.resource_version
        back = server.restart()
        response = get(fresh(), server, f"/api/v1/services?resourceVersion={seen}")
        assert response.status == 504
        assert json.loads(response.data) == too_large_body(seen, back)
        assert watch_events(server, f"resourceVersion={seen}&timeoutSeconds=1") == []
    finally:
        server.stop()


def test_restart_with_downtime_and_save_initial_state(reactor_running):
    """restart(seconds) refuses connections for a while; save_initial_state() moves the
    state a restart returns to."""
    server = _started_from_manifests()
    try:
        server.apply(_service("kept"))
        saved = server.save_initial_state()
        server.apply(_service("lost"))
        server.restart(seconds=0.5)
        # Refused, or reset when the connection raced the listener's closing.
        with pytest.raises((urllib3.exceptions.NewConnectionError,
                            urllib3.exceptions.ProtocolError)):
            fresh().request("GET", server.url + "/version", timeout=2)
        wait_for(lambda: _reachable(fresh(), server), what="the sandbox to listen again")
        rv, names = _names(server)
        assert rv == saved and "rv/kept" in names and "rv/lost" not in names
    finally:
        server.stop()


def _reachable(http: urllib3.PoolManager, server: Sandbox) -> bool:
    try:
        return http.request("GET", server.url + "/version", timeout=2).status == 200
    except urllib3.exceptions.HTTPError:
        return False


def test_restart_through_the_control_endpoint_and_the_command(reactor_running):
    """The restart action is a fault like the others: /_sandbox/faults and
    `kubernetai fault restart`."""
    server = _started_from_manifests()
    try:
        start_rv = server.resource_version
        server.apply(_service("gone"))
        reply = fresh().request("POST", server.url + "/_sandbox/faults",
                             body=json.dumps({"action": "restart"}),
                             headers={"content-type": "application/json"})
        assert json.loads(reply.data) == {"ok": True, "result": start_rv}
        server.apply(_service("gone-too"))
        result = subprocess.run([sys.executable, "-m", "kubernetai", "fault", "--server",
                                 server.url, "restart"], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"ok": True, "result": start_rv}
        assert "rv/gone-too" not in _names(server)[1]
    finally:
        server.stop()


def test_expire_history_and_new_epoch_still_work_after_restart(reactor_running):
    """The older history faults keep their meaning on a restarted sandbox."""
    server = _started_from_manifests()
    try:
        server.restart()
        before = server.resource_version
        server.new_epoch(1000)
        assert server.resource_version > before + 1000
        [event] = watch_events(server, f"resourceVersion={before}&timeoutSeconds=5")
        assert event["object"]["code"] == 410
    finally:
        server.stop()


# -- a real process restart -------------------------------------------------------------------


def _start_process(port: int, *extra: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "kubernetai", "sandbox", "--manifests",
         str(EXAMPLES / "cluster.local"), "--port", str(port), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process, process.stdout.readline().strip()


def test_killed_sandbox_process_restarts_with_low_versions(tmp_path, http):
    """`kubernetai sandbox` killed and started again from the same manifests on the same
    port: its resourceVersions start low again, so a client's are in the future: lists
    get 504 too large after --too-large-rv-delay, watches wait in silence."""
    first, url = _start_process(0, "--too-large-rv-delay", "0.3")
    port = int(url.rsplit(":", 1)[1])
    second = None
    try:
        start_rv = int(json.loads(http.request("GET", url + "/api/v1/services").data)
                       ["metadata"]["resourceVersion"])
        for i in range(5):
            created = http.request("POST", url + "/api/v1/namespaces/default/services",
                                   body=json.dumps(_service(f"n{i}", "default")),
                                   headers={"content-type": "application/json"})
            assert created.status == 201
        seen = int(json.loads(created.data)["metadata"]["resourceVersion"])
        first.kill()
        first.wait(30)
        second, again = _start_process(port, "--too-large-rv-delay", "0.3")
        assert again == url
        listed = json.loads(http.request("GET", url + "/api/v1/services").data)
        assert int(listed["metadata"]["resourceVersion"]) == start_rv < seen
        response = http.request("GET", f"{url}/api/v1/services?resourceVersion={seen}")
        assert response.status == 504
        assert json.loads(response.data) == too_large_body(seen, start_rv)
        silent = urllib3.PoolManager(retries=False).request(
            "GET", f"{url}/api/v1/services?watch=1&resourceVersion={seen}&timeoutSeconds=1",
            timeout=urllib3.Timeout(connect=5, read=10))
        assert silent.status == 200 and silent.data == b""
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(10)
