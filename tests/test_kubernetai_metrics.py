"""The kubernetai plugin's metrics, read from the process store (PROCESS) as `/metrics` does.

Clusters run against the sandbox (a simulated API server on a free port); the values are
read on the reactor thread, where they are written. The process-wide families
(``coredns_kubernetes_*``) are shared by every test of the session, so the tests compare
before and after, and each sandbox's own ``host`` label keeps its requests apart.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import pytest
from conftest import wait_for
from twisted.internet import task

import kubernetai.corefile as corefile
from kubernetai.core.metrics import PROCESS, Histogram
from kubernetai.pkg.reactor_thread import in_reactor
from kubernetai.plugins.kubernetai import metrics
from kubernetai.plugins.kubernetai.config import StanzaConfig, parse_stanza
from kubernetai.plugins.kubernetai.controller import Cluster
from kubernetai.plugins.kubernetai.informer import Changes, Replace
from kubernetai.plugins.kubernetai.objects import (
    TRIGGER_TIME_ANNOTATION,
    endpoint_slice_from_json,
    parse_rfc3339,
    service_from_json,
)
from kubernetai.sandbox.ports import free_port
from kubernetai.sandbox.resources import by_kind
from kubernetai.sandbox.server import Sandbox

PROGRAMMING = "coredns_kubernetes_dns_programming_duration_seconds"
REQUESTS = "coredns_kubernetes_rest_client_requests_total"
DURATION = "coredns_kubernetes_rest_client_request_duration_seconds"
RATE_LIMITER = "coredns_kubernetes_rest_client_rate_limiter_duration_seconds"
RESOURCES = ("endpointslices", "namespaces", "services")

# -- reading the store ----------------------------------------------------------------------


def read(name: str) -> dict[tuple[str, ...], Any]:
    """A family's series, as the store gives them now: a number, or for a histogram
    (count, sum, per-bucket counts)."""
    def on_reactor() -> dict[tuple[str, ...], Any]:
        found: dict[tuple[str, ...], Any] = {}
        for metric in PROCESS:
            if metric.name != name:
                continue
            if isinstance(metric, Histogram):
                for labels, series in metric.values.items():
                    found[labels] = (sum(series.counts), series.sum, list(series.counts))
            else:
                found.update(metric.values)
        return found
    return in_reactor(on_reactor)


def count(name: str, labels: tuple[str, ...]) -> int:
    value = read(name).get(labels)
    return value[0] if value else 0


def by_code(label: str) -> dict[str, int]:
    """The REST client's request counts towards one API server, by status code (all GETs)."""
    found = {labels[0]: n for labels, n in read(REQUESTS).items() if labels[2] == label}
    assert all(labels[1] == "GET" for labels in read(REQUESTS) if labels[2] == label)
    return found


def of_stanza(name: str, stanza: str) -> dict[tuple[str, ...], float]:
    """A per-stanza family's series of one stanza, by their other labels."""
    return {labels[1:]: value for labels, value in read(name).items() if labels[0] == stanza}


def families() -> set[str]:
    return in_reactor(lambda: {metric.name for metric in PROCESS})


# -- objects ----------------------------------------------------------------------------------


def config_of(body: str, zones: str) -> StanzaConfig:
    """The StanzaConfig of ``kubernetai ZONES { body }`` in a file named Corefile (line 2)."""
    text = f".:53 {{\nkubernetai {zones} {{\n{body}\n}}\n}}\n"
    (block,) = corefile.parse(text, "/etc/coredns/Corefile")
    return parse_stanza(block.directives[0], [k.zone for k in block.keys])


def stamp(seconds_ago: float) -> str:
    """An RFC 3339 time with nanoseconds, as the EndpointSlice controller writes it."""
    when = datetime.fromtimestamp(time.time() - seconds_ago, timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"


def namespace(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def service(name: str, cluster_ip: str, namespace: str = "shop") -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}


def endpoint_slice(name: str, service: str, trigger: str | None, ip: str = "10.1.0.5",
                   **labels: str) -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": "shop",
                            "labels": {"kubernetes.io/service-name": service, **labels}}
    if trigger is not None:
        meta["annotations"] = {TRIGGER_TIME_ANNOTATION: trigger}
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": meta,
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}


@pytest.fixture
def started(reactor_running: None) -> Iterator[Callable[[Cluster], Cluster]]:
    """Starts clusters on the reactor thread and stops them whatever the test did."""
    clusters: list[Cluster] = []

    def start(cluster: Cluster) -> Cluster:
        clusters.append(cluster)
        in_reactor(cluster.startService)
        return cluster
    yield start
    for cluster in clusters:
        if cluster.running:
            in_reactor(cluster.stopService)


def synced_cluster(sandbox: Sandbox, started: Any, zone: str, body: str = "") -> Cluster:
    cluster = started(Cluster(config_of(f"endpoint {sandbox.url}\n{body}", zone)))
    assert in_reactor(cluster.wait_synced, 15) is True
    return cluster


def watch_requests(sandbox: Sandbox) -> dict[str, int]:
    counts = sandbox.request_counts()
    return {resource: counts.get(("watch", resource), 0) for resource in RESOURCES}


def host(sandbox: Sandbox) -> str:
    return f"127.0.0.1:{sandbox.port}"


# -- DNS programming latency ----------------------------------------------------------------


def test_programming_latency_of_endpoint_slice_changes(sandbox: Sandbox, started: Any) -> None:
    """A slice change carrying a last-change-trigger-time is observed once, as now minus
    that time, under its Service's kind; the first list, a slice of an unknown Service
    and an update that leaves the annotation alone are not."""
    sandbox.apply([namespace("shop"), service("web", "10.96.0.10"), service("hl", "None"),
                   endpoint_slice("old", "web", stamp(3600))])
    cluster_ip, headless = ("cluster_ip",), ("headless_with_selector",)
    before = read(PROGRAMMING)
    cluster = synced_cluster(sandbox, started, "programming.local")
    assert read(PROGRAMMING) == before  # the slice of the first list is no change

    sandbox.apply(endpoint_slice("web-1", "web", stamp(3.0)))
    wait_for(lambda: count(PROGRAMMING, cluster_ip) == before.get(cluster_ip, (0,))[0] + 1,
             what="the cluster_ip observation")
    spent = read(PROGRAMMING)[cluster_ip][1] - before.get(cluster_ip, (0, 0.0))[1]
    assert 3.0 <= spent < 30.0

    sandbox.apply(endpoint_slice("hl-1", "hl", stamp(1.5)))
    wait_for(lambda: count(PROGRAMMING, headless) == before.get(headless, (0,))[0] + 1,
             what="the headless observation")
    now = read(PROGRAMMING)

    # A label edit (the annotation unchanged), then a slice of no known Service: the second
    # one in the cache means the first was processed too (one watch, in order).
    edited = sandbox.get("EndpointSlice", "shop", "web-1")
    edited["metadata"]["labels"]["team"] = "a"
    sandbox.apply(edited)
    sandbox.apply(endpoint_slice("ghost-1", "ghost", stamp(2.0)))
    wait_for(lambda: in_reactor(lambda: "shop/ghost-1" in cluster.cache.endpointslices))
    assert read(PROGRAMMING) == now

    # The EndpointSlice controller writes the slice again: a new trigger time.
    sandbox.apply(endpoint_slice("web-1", "web", stamp(0.5), ip="10.1.0.6"))
    wait_for(lambda: count(PROGRAMMING, cluster_ip) == now[cluster_ip][0] + 1,
             what="the second cluster_ip observation")


def test_programming_latency_on_the_reactor_without_a_server() -> None:
    """The rules, batch by batch: a re-list observes only slices whose trigger time
    changed; deletions and slices without the annotation are not observed."""
    cluster = Cluster(config_of("endpoint http://127.0.0.1:1", "unit.local"),
                      reactor=task.Clock())
    svc = service_from_json({**service("web", "10.96.0.10"),
                             "metadata": {"name": "web", "namespace": "shop"}})
    labels = ("cluster_ip",)

    def slice_(name: str, seconds_ago: float | None) -> Any:
        return endpoint_slice_from_json(endpoint_slice(
            name, "web", None if seconds_ago is None else stamp(seconds_ago)))

    cluster._deliver("services", Replace({svc.key: svc}))
    first = {s.key: s for s in (slice_("a", 10), slice_("b", 10), slice_("c", None))}
    before = count(PROGRAMMING, labels)
    cluster._deliver("endpointslices", Replace(first))
    assert count(PROGRAMMING, labels) == before
    relist = {**first, "shop/b": slice_("b", 1), "shop/d": slice_("d", 1)}
    cluster._deliver("endpointslices", Replace(relist))
    assert count(PROGRAMMING, labels) == before + 2  # b changed, d is new
    cluster._deliver("endpointslices", Changes((("DELETED", "shop/a", None),
                                                ("MODIFIED", "shop/c", slice_("c", None)))))
    assert count(PROGRAMMING, labels) == before + 2
    # Two updates of one slice in a batch: each new trigger time counts once.
    cluster._deliver("endpointslices", Changes((("MODIFIED", "shop/d", slice_("d", 0.5)),
                                                ("MODIFIED", "shop/d", slice_("d", 0.2)))))
    assert count(PROGRAMMING, labels) == before + 4


@pytest.mark.parametrize("text, expected", [
    ("2024-05-01T12:00:00Z", 1714564800.0),
    ("2024-05-01T12:00:00.5Z", 1714564800.5),
    ("2024-05-01T12:00:00.123456789Z", 1714564800.123456789),
    ("2024-05-01T14:00:00+02:00", 1714564800.0),
    ("2024-05-01T07:30:00-04:30", 1714564800.0),
    ("2024-05-01 12:00:00Z", None),
    ("2024-13-01T12:00:00Z", None),
    ("2024-05-01T12:00:00", None),
    ("2024-05-01T12:00:00+24:00", None),
    ("yesterday", None),
])
def test_trigger_time_is_rfc3339(text: str, expected: float | None) -> None:
    """The annotation as Go's time.RFC3339Nano reads it; anything else is no time."""
    parsed = parse_rfc3339(text)
    assert parsed == (pytest.approx(expected) if expected is not None else None)


# -- REST client ------------------------------------------------------------------------------


def test_requests_are_counted_by_code_and_timed(sandbox: Sandbox, started: Any) -> None:
    """Every request counts under its status code, GET and the API server's host:port; each
    list is timed and every request's rate limiter wait is observed. Counted from what the
    series held before: an earlier test's sandbox may have had the same port (the series
    are the process's), and its requests stay counted under the same host label."""
    sandbox.apply(namespace("shop"))
    sandbox.error(503, count=1, verbs=["watch"])  # the watch-list; a list follows it
    label = host(sandbox)
    before_requests = by_code(label)
    before_timed = count(DURATION, ("GET", label)), count(RATE_LIMITER, ("GET", label))
    synced_cluster(sandbox, started, "requests.local")

    def made() -> tuple[int, int]:
        counts = sandbox.request_counts()
        lists = sum(n for (verb, _), n in counts.items() if verb == "list")
        return lists, lists + sum(n for (verb, _), n in counts.items() if verb == "watch")

    seen: list[Any] = []

    def counted() -> bool:
        """Both sides read between two equal request counts of the sandbox's, so that no
        request was made while the client's series were read."""
        made_before = made()
        codes = {code: n - before_requests.get(code, 0) for code, n in by_code(label).items()
                 if n != before_requests.get(code, 0)}
        timed = (count(DURATION, ("GET", label)) - before_timed[0],
                 count(RATE_LIMITER, ("GET", label)) - before_timed[1])
        seen[:] = [codes, timed, made_before]
        return (made() == made_before and sum(codes.values()) == made_before[1]
                and codes.get("503") == 1 and timed == made_before)
    try:
        wait_for(counted, what="every request counted")
    except AssertionError as error:
        raise AssertionError(f"{error}: counted by code {seen[0]}, (lists timed, waits "
                             f"observed) {seen[1]}, (lists, all) made {seen[2]}") from None
    assert set(seen[0]) == {"200", "503"}

    sandbox.refuse()
    wait_for(lambda: read(REQUESTS).get(("<error>", "GET", label), 0) >= 1,
             what="a refused request counted as <error>")
    sandbox.accept()


# -- per stanza -----------------------------------------------------------------------------


def test_stanza_gauges_follow_the_cache(sandbox: Sandbox, started: Any) -> None:
    """Synced, objects per resource as the API server holds them, and the age of the last
    thing heard, under the stanza as /ready names it."""
    sandbox.apply([namespace("shop"), service("web", "10.96.0.10"),
                   service("api", "10.96.0.11"), endpoint_slice("web-1", "web", None)])
    synced_cluster(sandbox, started, "gauges.local")
    stanza = "Corefile:2 gauges.local."
    assert of_stanza("kubernetai_synced", stanza) == {(): 1}

    def held() -> dict[tuple[str, ...], float]:
        def on_reactor() -> dict[tuple[str, ...], float]:
            kinds = {"services": ("v1", "Service"), "namespaces": ("v1", "Namespace"),
                     "endpointslices": ("discovery.k8s.io/v1", "EndpointSlice")}
            return {(resource,): sandbox.store.count(by_kind(*kind))
                    for resource, kind in kinds.items()}
        return in_reactor(on_reactor)
    assert of_stanza("kubernetai_cached_objects", stanza) == held()
    sandbox.apply([service("late", "10.96.0.12"), namespace("late")])
    wait_for(lambda: of_stanza("kubernetai_cached_objects", stanza) == held(),
             what="the gauges to follow the new objects")
    ages = of_stanza("kubernetai_last_event_age_seconds", stanza)
    assert set(ages) == {(resource,) for resource in RESOURCES}
    assert all(0 <= age < 10 for age in ages.values())


def test_unsynced_stanza(started: Any) -> None:
    """Against an API server that is not there: synced 0, nothing cached, and the age
    counts from the start."""
    url = f"http://127.0.0.1:{free_port()}"
    started(Cluster(config_of(f"endpoint {url}", "down.local")))
    stanza = "Corefile:2 down.local."
    assert of_stanza("kubernetai_synced", stanza) == {(): 0}
    assert of_stanza("kubernetai_cached_objects", stanza) == {(r,): 0 for r in RESOURCES}
    first = of_stanza("kubernetai_last_event_age_seconds", stanza)
    assert set(first) == {(r,) for r in RESOURCES}
    wait_for(lambda: all(age > first[key] for key, age in
                         of_stanza("kubernetai_last_event_age_seconds", stanza).items()),
             what="the ages to grow")


def test_watch_restarts_and_relists(sandbox: Sandbox, started: Any) -> None:
    """A cut watch is a restart (error), an expired history a re-list and a restart
    (expired), a restarted API server a re-list: per resource, as the informers saw it."""
    sandbox.apply(namespace("shop"))
    cluster = synced_cluster(sandbox, started, "restarts.local")
    stanza = "Corefile:2 restarts.local."

    def restarts(reason: str) -> dict[str, float]:
        return {labels[0]: n for labels, n in
                of_stanza("kubernetai_watch_restarts_total", stanza).items()
                if labels[1] == reason}

    def relists() -> dict[str, float]:
        return {labels[0]: n for labels, n in
                of_stanza("kubernetai_relists_total", stanza).items()}
    assert {labels[1] for labels in of_stanza("kubernetai_watch_restarts_total", stanza)} \
        == set(metrics.RESTART_REASONS)
    assert relists() == dict.fromkeys(RESOURCES, 0)

    watches = watch_requests(sandbox)
    sandbox.cut_watches()
    wait_for(lambda: all(n >= 1 for n in restarts("error").values()),
             what="every cut watch counted")
    assert relists() == dict.fromkeys(RESOURCES, 0)
    wait_for(lambda: all(n > watches[r] for r, n in watch_requests(sandbox).items()))

    watches = watch_requests(sandbox)
    sandbox.expire_history()
    wait_for(lambda: relists() == dict.fromkeys(RESOURCES, 1), what="one re-list each")
    wait_for(lambda: all(n >= 1 for n in restarts("expired").values()))
    # Every watch open again (a watch asked of the restarted server from a resourceVersion
    # it has not reached would be held open silently, until the stall limit).
    wait_for(lambda: all(n > watches[r] for r, n in watch_requests(sandbox).items()))

    sandbox.restart()
    wait_for(lambda: relists() == dict.fromkeys(RESOURCES, 2), what="the second re-lists")
    informers = in_reactor(lambda: dict(cluster._informer_of))
    assert {r: i.stats.relists for r, i in informers.items()} == relists()


def test_series_follow_the_running_stanzas(sandbox: Sandbox, started: Any) -> None:
    """A reload's new cluster of a stanza (same name, options changed) counts on from the
    old one's counters and is shown only once the old one stops; when no cluster of the
    stanza runs, its series are gone."""
    sandbox.apply(namespace("shop"))
    old = synced_cluster(sandbox, started, "reload.local")
    stanza = "Corefile:2 reload.local."
    sandbox.expire_history()
    wait_for(lambda: of_stanza("kubernetai_relists_total", stanza).get(("services",)) == 1)
    new = synced_cluster(sandbox, started, "reload.local", "ttl 7")
    assert of_stanza("kubernetai_relists_total", stanza)[("services",)] == 1
    in_reactor(old.stopService)
    assert of_stanza("kubernetai_synced", stanza) == {(): 1}
    assert of_stanza("kubernetai_relists_total", stanza)[("services",)] == 1
    sandbox.expire_history()
    wait_for(lambda: of_stanza("kubernetai_relists_total", stanza).get(("services",)) == 2,
             what="the new cluster counting on")
    in_reactor(new.stopService)
    for name in ("kubernetai_synced", "kubernetai_cached_objects",
                 "kubernetai_last_event_age_seconds", "kubernetai_watch_restarts_total",
                 "kubernetai_relists_total"):
        assert of_stanza(name, stanza) == {}, name


def test_process_families_exist_before_any_stanza() -> None:
    """CoreDNS's families are registered with the plugin, as promauto does at init."""
    assert {PROGRAMMING, REQUESTS, DURATION, RATE_LIMITER} <= families()
    assert metrics.programming_duration.buckets == tuple(0.001 * 2 ** i for i in range(20))
    assert metrics.rest_duration.buckets == (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                                             2.5, 5.0, 10.0)
