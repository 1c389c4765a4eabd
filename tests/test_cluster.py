"""Tests for kubernetai.plugins.kubernetai.controller: what a stanza watches, and its informers against a sandbox."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable, Iterator

import pytest
from conftest import wait_for
from twisted.internet import task

import kubernetai.corefile as corefile
from kubernetai.core import gcpolicy
from kubernetai.pkg.reactor_thread import in_reactor
from kubernetai.plugins.kubernetai.config import StanzaConfig, parse_stanza
from kubernetai.plugins.kubernetai.controller import (
    MC_SERVICE_LABEL,
    POD_PHASES,
    Cluster,
    watched_for,
)
from kubernetai.plugins.kubernetai.informer import Changes, Replace, Watched
from kubernetai.plugins.kubernetai.objects import namespace_from_json, service_from_json
from kubernetai.sandbox.server import Sandbox


def config_of(body: str = "", zones: str = "cluster.local", filename: str = "Corefile",
              head: str = "") -> StanzaConfig:
    """The StanzaConfig of ``kubernetai ZONES { body }``; the stanza is on line 2."""
    text = f".:53 {{\nkubernetai {zones} {head}{{\n{body}\n}}\n}}\n"
    (block,) = corefile.parse(text, filename)
    return parse_stanza(block.directives[0], [k.zone for k in block.keys])


# -- watched_for --------------------------------------------------------------------------

BASE = {"services": Watched("services"), "namespaces": Watched("namespaces"),
        "endpointslices": Watched("endpointslices")}


@pytest.mark.parametrize("body, zones, expected", [
    pytest.param("", "cluster.local", BASE, id="defaults"),
    pytest.param("pods insecure", "cluster.local", BASE, id="pods-insecure-no-pod-watch"),
    pytest.param("pods disabled", "cluster.local", BASE, id="pods-disabled"),
    pytest.param("pods verified", "cluster.local",
                 {**BASE, "pods": Watched("pods", None, POD_PHASES)}, id="pods-verified"),
    pytest.param("noendpoints", "cluster.local",
                 {"services": Watched("services"), "namespaces": Watched("namespaces")},
                 id="noendpoints"),
    pytest.param("noendpoints\npods verified", "cluster.local",
                 {"services": Watched("services"), "namespaces": Watched("namespaces"),
                  "pods": Watched("pods", None, POD_PHASES)}, id="noendpoints-pods-verified"),
    pytest.param("multicluster clusterset.local", "cluster.local clusterset.local",
                 {**BASE, "serviceimports": Watched("serviceimports"),
                  "mcendpointslices": Watched("endpointslices", MC_SERVICE_LABEL)},
                 id="multicluster"),
    pytest.param("labels app=dns", "cluster.local",
                 {"services": Watched("services", "app=dns"),
                  "namespaces": Watched("namespaces"),
                  "endpointslices": Watched("endpointslices", "app=dns")}, id="labels"),
    pytest.param("labels app=dns\npods verified\nmulticluster clusterset.local",
                 "cluster.local clusterset.local",
                 {"services": Watched("services", "app=dns"),
                  "namespaces": Watched("namespaces"),
                  "endpointslices": Watched("endpointslices", "app=dns"),
                  "pods": Watched("pods", "app=dns", POD_PHASES),
                  "serviceimports": Watched("serviceimports"),
                  "mcendpointslices": Watched("endpointslices",
                                              f"app=dns,{MC_SERVICE_LABEL}")},
                 id="labels-everywhere"),
    pytest.param("namespace_labels team=a", "cluster.local",
                 {**BASE, "namespaces": Watched("namespaces", "team=a")},
                 id="namespace-labels"),
    pytest.param("namespaces shop", "cluster.local", BASE, id="namespaces-filter-locally"),
])
def test_watched_for(body: str, zones: str, expected: dict) -> None:
    """Each option set watches exactly what CoreDNS's controller would."""
    assert watched_for(config_of(body, zones)) == expected


def test_pod_field_selector_skips_finished_pods() -> None:
    """The pod watch leaves out Succeeded, Failed and Unknown pods on the server side."""
    assert POD_PHASES == ("status.phase!=Succeeded,status.phase!=Failed,"
                          "status.phase!=Unknown")


def test_required_resources_are_the_watched_ones() -> None:
    """A Cluster is synced when every resource it watches has been listed."""
    cluster = Cluster(config_of("pods verified\nnoendpoints"), reactor=task.Clock())
    assert cluster.required == frozenset({"services", "namespaces", "pods"})


def test_cluster_name_locates_the_stanza() -> None:
    """The service name says where the stanza is and which zones it serves."""
    cluster = Cluster(config_of(zones="cluster.local 10.0.0.0/24", filename="/etc/Corefile"),
                      reactor=task.Clock())
    assert cluster.label == "/etc/Corefile:2 cluster.local. 0.0.10.in-addr.arpa."
    assert cluster.name is None  # several clusters of one stanza coexist during a reload


# -- wait_synced and delivery, on a fake clock --------------------------------------------

SERVICE = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "17",
                        "uid": "uid-web"},
           "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}
NAMESPACE = {"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": "shop", "resourceVersion": "3", "uid": "uid-shop"}}


def deliver_lists(cluster: Cluster) -> None:
    svc = service_from_json(SERVICE)
    ns = namespace_from_json(NAMESPACE)
    cluster._deliver("services", Replace({svc.key: svc}))
    cluster._deliver("namespaces", Replace({ns.key: ns}))
    cluster._deliver("endpointslices", Replace({}))


def timers(clock: task.Clock) -> list:
    """The clock's pending calls but the garbage-collector freeze a list schedules."""
    return [call for call in clock.getDelayedCalls() if call.func is not gcpolicy._freeze]


def fired(d: Any) -> list:
    out: list = []
    d.addBoth(out.append)
    return out


def test_wait_synced_fires_true_when_every_list_arrived() -> None:
    """wait_synced fires True once the last watched resource is listed, and cancels its timer."""
    clock = task.Clock()
    cluster = Cluster(config_of(), reactor=clock)
    result = fired(cluster.wait_synced(5))
    svc = service_from_json(SERVICE)
    cluster._deliver("services", Replace({svc.key: svc}))
    cluster._deliver("namespaces", Replace({}))
    assert result == []
    cluster._deliver("endpointslices", Replace({}))
    assert result == [True]
    assert timers(clock) == []
    assert cluster.synced
    assert list(cluster.cache.services) == [svc.key]


def test_wait_synced_times_out_false() -> None:
    """wait_synced fires False at its timeout when a list is still missing."""
    clock = task.Clock()
    cluster = Cluster(config_of(), reactor=clock)
    result = fired(cluster.wait_synced(5))
    cluster._deliver("services", Replace({}))
    clock.advance(4.9)
    assert result == []
    clock.advance(0.1)
    assert result == [False]
    # A list arriving later does not fire it again.
    deliver_lists(cluster)
    assert result == [False]


def test_wait_synced_when_already_synced() -> None:
    """A synced cluster answers wait_synced with True at once."""
    cluster = Cluster(config_of(), reactor=task.Clock())
    deliver_lists(cluster)
    assert fired(cluster.wait_synced(5)) == [True]


def test_several_waiters() -> None:
    """Every waiter fires, each with its own timeout."""
    clock = task.Clock()
    cluster = Cluster(config_of(), reactor=clock)
    short, long = fired(cluster.wait_synced(1)), fired(cluster.wait_synced(10))
    clock.advance(1)
    assert (short, long) == ([False], [])
    deliver_lists(cluster)
    assert long == [True]
    assert timers(clock) == []


def test_stop_fires_waiters_with_the_sync_state() -> None:
    """Stopping a cluster fires pending waiters with whether it had synced (here not)."""
    clock = task.Clock()
    cluster = Cluster(config_of(), reactor=clock)
    result = fired(cluster.wait_synced(30))
    assert fired(cluster.stopService()) == [None]
    assert result == [False]
    assert timers(clock) == []


def test_watch_changes_reach_the_cache() -> None:
    """Watch events after the list are applied to the cache."""
    cluster = Cluster(config_of(), reactor=task.Clock())
    deliver_lists(cluster)
    cluster._deliver("services", Changes([("DELETED", "shop/web", None)]))
    assert cluster.cache.services == {}
    assert cluster.synced


# -- against a sandbox --------------------------------------------------------------------


def service(name: str, namespace: str = "shop", **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"ports": [{"name": "http", "port": 80}]}}


def namespace(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def informer_threads(zone: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate()
            if t.name.startswith(f"informer-{zone}") and t.is_alive()]


@pytest.fixture
def started(reactor_running: None) -> Iterator[Callable[[Cluster], Cluster]]:
    """Starts clusters on the reactor thread, and stops them whatever the test did."""
    clusters: list[Cluster] = []

    def start(cluster: Cluster) -> Cluster:
        clusters.append(cluster)
        in_reactor(cluster.startService)
        return cluster
    yield start
    for cluster in clusters:
        if cluster.running:
            in_reactor(cluster.stopService)


def test_cluster_syncs_from_sandbox(sandbox: Sandbox, started: Any) -> None:
    """Started against a sandbox, the cluster lists, syncs, and its cache holds the services."""
    sandbox.apply([namespace("shop"), service("web"), service("cart"),
                   service("dns", "kube-system")])
    cluster = started(Cluster(config_of(f"endpoint {sandbox.url}", zones="sync.local")))
    assert in_reactor(cluster.wait_synced, 15) is True
    keys = in_reactor(lambda: sorted(cluster.cache.services))
    assert {"shop/web", "shop/cart", "kube-system/dns"} <= set(keys)
    assert "shop" in in_reactor(lambda: set(cluster.cache.namespaces))
    assert len(informer_threads("sync.local.")) == 3


def test_cluster_follows_watch_events(sandbox: Sandbox, started: Any) -> None:
    """Services created and deleted after the sync show up in (and leave) the cache."""
    sandbox.apply([namespace("shop"), service("web")])
    cluster = started(Cluster(config_of(f"endpoint {sandbox.url}", zones="watch.local")))
    assert in_reactor(cluster.wait_synced, 15) is True
    sandbox.apply(service("late"))
    wait_for(lambda: in_reactor(lambda: "shop/late" in cluster.cache.services),
             what="shop/late in the cache")
    sandbox.delete("Service", "shop", "web")
    wait_for(lambda: in_reactor(lambda: "shop/web" not in cluster.cache.services),
             what="shop/web gone from the cache")


def test_cluster_watches_only_labelled_services(sandbox: Sandbox, started: Any) -> None:
    """A labels selector is applied by the API server: other services never arrive."""
    sandbox.apply([namespace("shop"), service("in", app="dns"), service("out", app="web")])
    cluster = started(Cluster(config_of(f"endpoint {sandbox.url}\nlabels app=dns",
                                        zones="labels.local")))
    assert in_reactor(cluster.wait_synced, 15) is True
    keys = in_reactor(lambda: set(cluster.cache.services))
    assert "shop/in" in keys and "shop/out" not in keys


def test_stop_service_joins_informer_threads(sandbox: Sandbox, started: Any) -> None:
    """stopService fires once every informer thread has ended."""
    cluster = started(Cluster(config_of(f"endpoint {sandbox.url}\npods verified",
                                        zones="stop.local")))
    assert in_reactor(cluster.wait_synced, 15) is True
    assert len(informer_threads("stop.local.")) == 4
    in_reactor(cluster.stopService)
    assert informer_threads("stop.local.") == []
    assert not cluster.running


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_wait_synced_false_against_unreachable_endpoint(started: Any) -> None:
    """Against an endpoint nobody listens on, wait_synced fires False at its timeout."""
    url = f"http://127.0.0.1:{unused_port()}"
    cluster = started(Cluster(config_of(f"endpoint {url}", zones="down.local")))
    begun = time.monotonic()
    assert in_reactor(cluster.wait_synced, 0.5) is False
    assert time.monotonic() - begun >= 0.45
    assert not cluster.synced
    in_reactor(cluster.stopService)
    assert informer_threads("down.local.") == []


def test_longest_go_startup_timeout_still_waits_and_syncs(sandbox: Sandbox, started: Any) -> None:
    """startup_timeout 2562047h47m16.854775807s (Go's longest duration, which CoreDNS accepts) works:
    the wait is armed on the reactor without overflowing and fires True once the stanza syncs."""
    sandbox.apply([namespace("shop"), service("web")])
    config = config_of(f"endpoint {sandbox.url}\nstartup_timeout 2562047h47m16.854775807s",
                       zones="forever.local")
    assert config.startup_timeout == pytest.approx(9223372036.854775807)
    cluster = Cluster(config)
    waiting = in_reactor(lambda: fired(cluster.wait_synced(config.startup_timeout)))
    started(cluster)
    wait_for(lambda: waiting == [True], what="the wait to fire True")


def test_informers_are_named_with_the_api_server_url(sandbox: Sandbox, started: Any) -> None:
    """Informer names (which lead their log lines) carry the API server's URL."""
    cluster = started(Cluster(config_of(f"endpoint {sandbox.url}", zones="named.local")))
    assert in_reactor(cluster.wait_synced, 15) is True
    names = sorted(t.name for t in informer_threads("named.local."))
    assert names == [f"informer-named.local.{resource} {sandbox.url}"
                     for resource in ("endpointslices", "namespaces", "services")]
