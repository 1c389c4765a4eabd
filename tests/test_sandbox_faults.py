"""Each fault the sandbox injects, and what the official client sees when it happens."""

from __future__ import annotations

import json
import time

import pytest
import urllib3
from kubernetes import client, watch
from kubernetes.client.rest import ApiException


def _service(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "f"},
            "spec": {"ports": [{"port": 80}]}}


@pytest.fixture
def core(kube):
    return client.CoreV1Api(kube)


def _open_watch(sandbox, query: str = "", read_timeout: float = 5.0,
                stall_after_open: bool = False):
    """Open a raw watch; with stall_after_open, stall once the headers have arrived."""
    http = urllib3.PoolManager(retries=False)
    url = f"{sandbox.url}/api/v1/services?watch=1&resourceVersion={sandbox.resource_version}" \
          + query
    if stall_after_open:
        sandbox.unstall_watches()
    response = http.request("GET", url, preload_content=False,
                            timeout=urllib3.Timeout(connect=2, read=read_timeout), retries=False)
    if stall_after_open:
        sandbox.stall_watches()
    return response


def test_refuse_connections_then_accept(sandbox, core):
    """While refusing, requests fail to connect; after accept the same URL works again."""
    sandbox.refuse()
    with pytest.raises(urllib3.exceptions.MaxRetryError) as caught:
        core.list_namespace(_request_timeout=2)
    assert isinstance(caught.value.reason, urllib3.exceptions.NewConnectionError)
    assert "refused" in str(caught.value.reason).lower()
    sandbox.accept()
    assert core.list_namespace().items


def test_refuse_for_a_while(sandbox, core):
    """refuse(seconds) comes back by itself after that time."""
    sandbox.refuse(0.5)
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        core.list_namespace(_request_timeout=2)
    deadline = time.monotonic() + 10
    while True:
        try:
            core.list_namespace(_request_timeout=2)
            break
        except urllib3.exceptions.MaxRetryError:
            assert time.monotonic() < deadline, "the sandbox never accepted again"
            time.sleep(0.1)


def test_refuse_drops_open_watches(sandbox):
    """Going down drops open watch connections: the reader sees a broken stream."""
    response = _open_watch(sandbox)
    sandbox.refuse()
    with pytest.raises(urllib3.exceptions.ProtocolError):
        response.read()
    sandbox.accept()


def test_cut_watch_mid_stream(sandbox, core):
    """cut_watches drops the connection with no end chunk: the client gets ProtocolError."""
    sandbox.apply(_service("a"))
    rv = core.list_namespaced_service("f").metadata.resource_version
    sandbox.cut_watch_after(2)
    sandbox.apply([_service("b"), _service("c"), _service("d")])
    seen = []
    with pytest.raises(urllib3.exceptions.ProtocolError):
        for event in watch.Watch().stream(core.list_namespaced_service, "f",
                                          resource_version=rv, timeout_seconds=5):
            seen.append(event["object"].metadata.name)
    assert seen == ["b", "c"]


def test_cut_watches_now(sandbox):
    """cut_watches ends every open watch at once, mid-stream."""
    response = _open_watch(sandbox)
    assert sandbox.cut_watches() == 1
    with pytest.raises(urllib3.exceptions.ProtocolError):
        response.read()


def test_stalled_watch_sends_nothing_until_client_timeout(sandbox):
    """A stalled watch sends no bytes, not even headers, and an open one goes silent."""
    sandbox.stall_watches()
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        _open_watch(sandbox, read_timeout=1.0)
    response = _open_watch(sandbox, read_timeout=1.0, stall_after_open=True)
    sandbox.apply(_service("unseen"))
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        response.read()
    sandbox.unstall_watches()


def test_stalled_watch_blocks_client_with_request_timeout(sandbox, core):
    """The official client's watch with _request_timeout gives up on a stalled stream.

    No headers ever arrive, so urllib3 retries the request and then raises MaxRetryError
    wrapping the read timeout; without _request_timeout the client would wait forever.
    """
    sandbox.stall_watches()
    with pytest.raises(urllib3.exceptions.MaxRetryError) as caught:
        for _ in watch.Watch().stream(core.list_namespaced_service, "f",
                                      resource_version=str(sandbox.resource_version),
                                      _request_timeout=(2, 0.5)):
            pass
    assert isinstance(caught.value.reason, urllib3.exceptions.ReadTimeoutError)


@pytest.mark.parametrize("code, reason", [(429, "TooManyRequests"), (500, "InternalError"),
                                          (503, "ServiceUnavailable")])
def test_error_responses(sandbox, core, code, reason):
    """Injected 429/500/503 reach the client as ApiException with a Status body."""
    sandbox.error(code)
    with pytest.raises(ApiException) as caught:
        core.list_namespace()
    assert caught.value.status == code
    assert json.loads(caught.value.body)["reason"] == reason
    sandbox.clear_faults()
    assert core.list_namespace().items


def test_429_is_retried_after_retry_after(sandbox, core):
    """One 429 with Retry-After is retried by the client (urllib3) and then succeeds."""
    sandbox.error(429, count=1)
    assert core.list_namespace().items
    assert sandbox.request_counts()[("list", "namespaces")] == 2


def test_500_is_not_retried(sandbox, core):
    """A single 500 surfaces at once: the client does not retry it."""
    sandbox.error(500, count=1)
    with pytest.raises(ApiException):
        core.list_namespace()
    assert sandbox.request_counts()[("list", "namespaces")] == 1
    assert core.list_namespace().items


def test_errors_for_one_verb_only(sandbox, core):
    """An error rule for watch leaves lists alone."""
    sandbox.error(503, verbs=["watch"])
    assert core.list_namespace().items
    with pytest.raises(ApiException) as caught:
        for _ in watch.Watch().stream(core.list_namespace, timeout_seconds=1):
            pass
    assert caught.value.status == 503


def test_delayed_responses(sandbox, core):
    """A delay makes a client with a shorter read timeout give up; a patient one succeeds."""
    sandbox.delay(1.5)
    with pytest.raises(urllib3.exceptions.MaxRetryError) as caught:
        core.list_namespace(_request_timeout=(2, 0.5))
    assert isinstance(caught.value.reason, urllib3.exceptions.ReadTimeoutError)
    assert core.list_namespace(_request_timeout=(2, 10)).items


def test_expire_history_sends_410_to_open_watches(sandbox, core):
    """Expiring history ends open watches with a 410 ERROR; resuming from before also gets 410."""
    rv = core.list_namespaced_service("f").metadata.resource_version
    sandbox.apply(_service("a"))
    response = _open_watch(sandbox)
    sandbox.expire_history()
    line = response.read().split(b"\n")[0]
    event = json.loads(line)
    assert event["type"] == "ERROR" and event["object"]["code"] == 410
    with pytest.raises(ApiException) as caught:
        for _ in watch.Watch().stream(core.list_namespaced_service, "f",
                                      resource_version=rv, timeout_seconds=2):
            pass
    assert caught.value.status == 410


def test_new_epoch(sandbox, core):
    """A new epoch jumps resourceVersions ahead and invalidates every older one with 410."""
    before = int(core.list_namespace().metadata.resource_version)
    sandbox.new_epoch()
    after = int(core.list_namespace().metadata.resource_version)
    assert after >= before + 1_000_000
    with pytest.raises(ApiException) as caught:
        for _ in watch.Watch().stream(core.list_namespace, resource_version=str(before),
                                      timeout_seconds=2):
            pass
    assert caught.value.status == 410


def test_control_endpoint(sandbox, core):
    """Faults can be set over HTTP at /_sandbox/faults, as the command line does."""
    http = urllib3.PoolManager()
    response = http.request("POST", sandbox.url + "/_sandbox/faults",
                            body=json.dumps({"action": "error", "code": 503, "count": 1}),
                            headers={"content-type": "application/json"})
    assert response.status == 200
    with pytest.raises(ApiException) as caught:
        core.list_namespace()
    assert caught.value.status == 503
    bad = http.request("POST", sandbox.url + "/_sandbox/faults", body=b'{"action": "nope"}')
    assert bad.status == 400 and b"unknown fault action" in bad.data


def _raw_get(sandbox, path: str = "/api/v1/namespaces"):
    """One request over a bare http.client connection: header names exactly as sent."""
    import http.client
    from urllib.parse import urlsplit

    where = urlsplit(sandbox.url)
    connection = http.client.HTTPConnection(where.hostname, where.port, timeout=10)
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, response.getheaders(), body


def test_429_is_the_too_many_requests_status_with_retry_after(sandbox):
    """An injected 429 is what apierrors.NewTooManyRequests sends: a Status with reason
    TooManyRequests and details.retryAfterSeconds, and the Retry-After header (seconds)
    kube-apiserver adds for any Status that suggests a retry."""
    sandbox.error(429, count=1, retry_after=2)
    status, headers, body = _raw_get(sandbox)
    assert status == 429
    assert ("Retry-After", "2") in headers
    assert json.loads(body) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "Too many requests, please try again later.",
        "reason": "TooManyRequests", "details": {"retryAfterSeconds": 2}, "code": 429}


def test_429_without_a_retry_suggestion_has_no_header(sandbox):
    """retry_after=0: no retryAfterSeconds (omitted when zero), so no Retry-After."""
    sandbox.error(429, count=1, retry_after=0)
    status, headers, body = _raw_get(sandbox)
    assert status == 429 and "retry-after" not in {name.lower() for name, _ in headers}
    assert json.loads(body)["details"] == {}


def test_429_as_the_throttling_filters_send_it(sandbox):
    """plain=True: the 429 of max-in-flight and priority-and-fairness, which is Go's
    http.Error text with Retry-After, not a Status."""
    sandbox.error(429, count=1, retry_after=3, plain=True)
    status, headers, body = _raw_get(sandbox)
    assert status == 429
    assert ("Retry-After", "3") in headers
    assert ("Content-Type", "text/plain; charset=utf-8") in headers
    assert body == b"Too many requests, please try again later.\n"
    with pytest.raises(ValueError):
        sandbox.error(503, plain=True)
