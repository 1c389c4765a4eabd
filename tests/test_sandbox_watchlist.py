"""The sandbox's three ways to list, as kube-apiserver serves them: watch-list (validated
as the real server validates it, refused by a server without the WatchList feature),
resourceVersion=0 from the watch cache (whole, `limit` ignored) and pages."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
import urllib3
from test_sandbox_watch import raw_events

from kubernetai.sandbox.server import Sandbox


def _service(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "w"},
            "spec": {"ports": [{"name": "http", "port": 80}]}}


@pytest.fixture
def make(reactor_running: None) -> Iterator[Any]:
    made: list[Sandbox] = []

    def build(**options: Any) -> Sandbox:
        server = Sandbox(bookmark_interval=3600, **options)
        server.apply([_service(f"s{i}") for i in range(5)])
        server.start()
        made.append(server)
        return server
    yield build
    for server in made:
        server.stop()


def get(url: str) -> tuple[int, dict]:
    response = urllib3.PoolManager().request("GET", url, timeout=5)
    return response.status, json.loads(response.data)


def test_watch_list_ends_its_initial_events_with_the_annotated_bookmark(make):
    server = make()
    events = raw_events(f"{server.url}/api/v1/services?watch=1&sendInitialEvents=true"
                        "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"
                        "&timeoutSeconds=1")
    got = list(events)
    assert [e["type"] for e in got] == ["ADDED"] * 5 + ["BOOKMARK"]
    meta = got[-1]["object"]["metadata"]
    assert meta["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert meta["resourceVersion"] == str(server.resource_version)


def test_no_end_bookmark_without_allow_watch_bookmarks(make):
    """kube-apiserver sends the end bookmark only to a watch that allows bookmarks."""
    server = make()
    got = list(raw_events(f"{server.url}/api/v1/services?watch=1&sendInitialEvents=true"
                          "&resourceVersionMatch=NotOlderThan&timeoutSeconds=1"))
    assert [e["type"] for e in got] == ["ADDED"] * 5


@pytest.mark.parametrize("query, field, detail", [
    ("sendInitialEvents=true&allowWatchBookmarks=true", "resourceVersionMatch",
     "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"),
    ("resourceVersionMatch=NotOlderThan&resourceVersion=5", "resourceVersionMatch",
     "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is "
     "provided"),
])
def test_watch_options_are_validated(make, query, field, detail):
    server = make()
    status, body = get(f"{server.url}/api/v1/services?watch=1&{query}")
    assert status == 422 and body["reason"] == "Invalid"
    assert body["message"] == f'ListOptions.meta.k8s.io "" is invalid: {field}: {detail}'
    assert body["details"]["causes"] == [
        {"reason": "FieldValueForbidden", "message": detail, "field": field}]


def test_server_without_watch_list_refuses_it_with_422(make):
    """The Status kube-apiserver answers when its WatchList feature gate is off."""
    server = make(watch_list=False)
    status, body = get(f"{server.url}/api/v1/services?watch=1&sendInitialEvents=true"
                       "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true")
    detail = ("Forbidden: sendInitialEvents is forbidden for watch unless the WatchList "
              "feature gate is enabled")
    assert status == 422
    assert body == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f'ListOptions.meta.k8s.io "" is invalid: sendInitialEvents: {detail}',
        "reason": "Invalid",
        "details": {"group": "meta.k8s.io", "kind": "ListOptions",
                    "causes": [{"reason": "FieldValueForbidden", "message": detail,
                                "field": "sendInitialEvents"}]},
        "code": 422}
    # An ordinary watch still works.
    got = list(raw_events(f"{server.url}/api/v1/services?watch=1&timeoutSeconds=1"))
    assert len(got) == 5


def test_send_initial_events_is_forbidden_on_a_list(make):
    server = make()
    status, body = get(f"{server.url}/api/v1/services?sendInitialEvents=true")
    assert status == 422
    assert body["message"].endswith("sendInitialEvents: Forbidden: sendInitialEvents is "
                                    "forbidden for list")


def test_rv0_list_ignores_limit(make):
    """The watch cache answers resourceVersion=0 whole: no continue token."""
    server = make()
    status, body = get(f"{server.url}/api/v1/services?resourceVersion=0&limit=2")
    assert status == 200 and len(body["items"]) == 5
    assert "continue" not in body["metadata"]
    status, body = get(f"{server.url}/api/v1/services?limit=2")
    assert len(body["items"]) == 2 and body["metadata"]["continue"]
    assert server.request_counts()[("list", "services")] == 2


def test_rv0_list_from_etcd_is_paginated(make):
    server = make(watch_cache_lists=False)
    status, body = get(f"{server.url}/api/v1/services?resourceVersion=0&limit=2")
    assert status == 200 and len(body["items"]) == 2 and body["metadata"]["continue"]


def test_command_line_switches():
    """`kubernetai sandbox --no-watch-list --no-watch-cache-lists` parse to the settings."""
    import argparse

    from kubernetai.sandbox import command
    parser = argparse.ArgumentParser()
    command.add_commands(parser.add_subparsers())
    args = parser.parse_args(["sandbox", "--no-watch-list", "--no-watch-cache-lists"])
    assert args.no_watch_list and args.no_watch_cache_lists
    args = parser.parse_args(["sandbox"])
    assert not args.no_watch_list and not args.no_watch_cache_lists
