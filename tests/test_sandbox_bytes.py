"""The sandbox's meters: response body bytes per (verb, resource) and per token, watch
streams open and opened, as ``GET /_sandbox/requests`` reports them (bench/replicas_api.py
reads them to tell what a DNS server replica costs the API server)."""

from __future__ import annotations

import json
import urllib.request

from conftest import wait_for

SERVICES = [{"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": f"web-{i}", "namespace": "shop"},
             "spec": {"ports": [{"name": "http", "port": 80}]}} for i in range(3)]


def _get(url: str, token: str | None = None) -> bytes:
    request = urllib.request.Request(url)
    if token:
        request.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as reply:
        return reply.read()


def _meters(sandbox) -> dict:
    return json.loads(_get(sandbox.url + "/_sandbox/requests"))


def _bytes(meters: dict, verb: str, resource: str) -> int:
    return sum(row["bytes"] for row in meters["bytes"]
               if (row["verb"], row["resource"]) == (verb, resource))


def test_list_bytes_are_the_body_sent(sandbox):
    """A list counts exactly the bytes of its body, under (list, services) and its token."""
    sandbox.apply(SERVICES)
    body = _get(sandbox.url + "/api/v1/services", token="replica-1")
    assert len(json.loads(body)["items"]) == 3
    meters = _meters(sandbox)
    assert _bytes(meters, "list", "services") == len(body)
    assert sandbox.byte_counts() == {("list", "services"): len(body)}
    assert meters["tokens"] == [{"token": "replica-1", "requests": 1, "bytes": len(body),
                                 "watches_open": 0}]
    # The control endpoint and discovery are not metered; the request counts are unchanged.
    _get(sandbox.url + "/api")
    assert _meters(sandbox)["bytes"] == meters["bytes"]
    assert {"verb": "list", "resource": "services", "count": 1} in meters["requests"]


def test_watch_bytes_include_events_and_bookmarks(sandbox):
    """A watch counts its whole stream, events and bookmarks, and is seen open, then closed."""
    sandbox.apply(SERVICES)
    url = (sandbox.url + "/api/v1/services?watch=1&allowWatchBookmarks=true"
           "&timeoutSeconds=2")
    with urllib.request.urlopen(urllib.request.Request(
            url, headers={"authorization": "Bearer replica-2"}), timeout=10) as reply:
        wait_for(lambda: _meters(sandbox)["watches_open"] == 1, what="the watch is open")
        assert _meters(sandbox)["tokens"][0]["watches_open"] == 1
        body = reply.read()  # until timeoutSeconds ends the stream
    events = [json.loads(line)["type"] for line in body.splitlines()]
    assert events.count("ADDED") == 3 and "BOOKMARK" in events  # bookmarks every 0.3 s
    wait_for(lambda: _meters(sandbox)["watches_open"] == 0, what="the watch is closed")
    meters = _meters(sandbox)
    assert _bytes(meters, "watch", "services") == len(body)
    assert meters["watches_opened"] == 1
    assert sandbox.watch_counts() == (0, 1)
    assert meters["tokens"] == [{"token": "replica-2", "requests": 1, "bytes": len(body),
                                 "watches_open": 0}]
