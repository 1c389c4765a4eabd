"""The kubernetai plugin's metrics: CoreDNS's kubernetes plugin's, and per stanza ones.

Process-wide, as CoreDNS registers them (``plugin/kubernetes/metrics.go`` and
``object/metrics.go``), in the process store :data:`kubernetai.core.metrics.PROCESS`:

* ``coredns_kubernetes_dns_programming_duration_seconds{service_kind}``: now minus an
  EndpointSlice's ``endpoints.kubernetes.io/last-change-trigger-time``, when a change
  of it reaches the cache (see `Cluster._deliver`);
* ``coredns_kubernetes_rest_client_requests_total{code,method,host}``,
  ``..._request_duration_seconds{verb,host}`` and ``..._rate_limiter_duration_seconds
  {verb,host}``: every request an informer makes (see `InformerMetrics`).

Per stanza, what CoreDNS cannot show (it has one cluster): sync state, objects cached,
watch restarts, re-lists, and the age of the last thing heard, labelled
``stanza="Corefile:12 cluster.local."`` (as `/ready` names it). They come from one
collector that reads the running clusters when `/metrics` is scraped; only the counters
are stored, in a `StanzaCounters` per stanza name that outlives a reload changing the
stanza's options (its new cluster counts on), and goes when no cluster of that name runs.

Threads: every write here happens on the reactor thread. Informer threads hand their
counts over with ``callFromThread`` (one call per API request or watch restart, never
per event); watch events are counted from the batches the reactor applies anyway. The
query path has nothing to do with any of it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterator
from urllib.parse import urlsplit

from kubernetai.core.metrics import PROCESS, Counter, Gauge, Metric, exponential_buckets

__all__ = ["InformerMetrics", "StanzaCounters", "attach", "detach", "api_host",
           "observe_programming", "stanza_name", "RESTART_REASONS", "COLLECTOR_KEY"]

# Prometheus's DefBuckets, which CoreDNS gives its REST client histograms.
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

programming_duration = PROCESS.histogram(
    "coredns_kubernetes_dns_programming_duration_seconds",
    "Seconds from the change that triggered an EndpointSlice update (its "
    "last-change-trigger-time annotation) to the change reaching the DNS cache.",
    ["service_kind"], exponential_buckets(0.001, 2, 20))
rest_requests = PROCESS.counter(
    "coredns_kubernetes_rest_client_requests_total",
    "Requests to the Kubernetes API server, by HTTP status code (<error> when no "
    "response came), method and host.",
    ["code", "method", "host"])
rest_duration = PROCESS.histogram(
    "coredns_kubernetes_rest_client_request_duration_seconds",
    "Seconds a list request to the Kubernetes API server took, client-side throttling "
    "and reading the answer included, by verb and host.",
    ["verb", "host"], DEFAULT_BUCKETS)
rate_limiter_duration = PROCESS.histogram(
    "coredns_kubernetes_rest_client_rate_limiter_duration_seconds",
    "Seconds a request to the Kubernetes API server waited for the client-side rate "
    "limiter (apiserver_qps, apiserver_burst), by verb and host.",
    ["verb", "host"], DEFAULT_BUCKETS)

#: Why a watch was opened again: the server ended it (timeoutSeconds, routine); it went
#: silent past the stall limit; its resourceVersion expired or the server's history moved
#: (410, too-large, backwards: it resumes after a re-list); anything else went wrong
#: (connection refused, reset or cut, an HTTP error, an ERROR event).
RESTART_REASONS = ("ended", "stalled", "expired", "error")

#: The key of this plugin's collector in PROCESS.
COLLECTOR_KEY = "kubernetai"


def stanza_name(config: Any) -> str:
    """How metrics (and `/ready`) name a stanza: where it is written, and its zones."""
    return f"{os.path.basename(config.filename)}:{config.line} {' '.join(config.zones)}"


def api_host(url: str) -> str:
    """The ``host`` label of an API server URL: its host and port, as client-go reports
    the request URL's ``Host``."""
    return urlsplit(url).netloc.rpartition("@")[2] or "none"


def observe_programming(headless: bool, trigger_time: float, now: float) -> None:
    """One DNS programming latency: a change of a slice with this trigger time, whose
    Service is (headless or not), is in the cache at ``now`` (Unix time)."""
    kind = "headless_with_selector" if headless else "cluster_ip"
    programming_duration.observe((kind,), now - trigger_time)


@dataclass(eq=False)
class StanzaCounters:
    """The counters of one stanza name, written on the reactor thread."""

    name: str
    restarts: dict[tuple[str, str], int] = field(default_factory=dict)  # (resource, reason)
    relists: dict[str, int] = field(default_factory=dict)               # resource
    clusters: list[Any] = field(default_factory=list)  # running ones, oldest first

    def relisted(self, resource: str) -> None:
        self.relists[resource] = self.relists.get(resource, 0) + 1

    def restarted(self, resource: str, reason: str) -> None:
        key = (resource, reason)
        self.restarts[key] = self.restarts.get(key, 0) + 1


class InformerMetrics:
    """What one informer reports; the informer calls these on the reactor thread."""

    __slots__ = ("host", "resource", "stanza")

    def __init__(self, host: str, resource: str, stanza: StanzaCounters) -> None:
        self.host = host
        self.resource = resource
        self.stanza = stanza

    def request(self, code: str, seconds: float | None, waited: float | None) -> None:
        """One request: its status code, how long it took (lists only: client-go does not
        time watches) and how long it waited for the rate limiter (None: no limiter)."""
        rest_requests.inc((code, "GET", self.host))
        if seconds is not None:
            rest_duration.observe(("GET", self.host), seconds)
        if waited is not None:
            rate_limiter_duration.observe(("GET", self.host), waited)

    def watch_restarted(self, reason: str) -> None:
        self.stanza.restarted(self.resource, reason)


# Stanza name -> its counters and running clusters. Reactor thread only.
_STANZAS: dict[str, StanzaCounters] = {}


def attach(cluster: Any) -> StanzaCounters:
    """A cluster starts: its stanza's counters (kept from a cluster of the same name that
    runs or ran until now), and its series shown from now on."""
    name = stanza_name(cluster.config)
    counters = _STANZAS.get(name)
    if counters is None:
        counters = _STANZAS[name] = StanzaCounters(name)
    if cluster not in counters.clusters:
        counters.clusters.append(cluster)
    PROCESS.collect(COLLECTOR_KEY, collect)
    return counters


def renamed(cluster: Any, old_name: str) -> None:
    """A running cluster now serves a stanza written elsewhere (a reload added a line above
    it): its series and counters follow it to its new name. Its informers keep counting
    into the same record, so only a record it has to itself is renamed (a second cluster
    of the old name, a moment of a reload, keeps it)."""
    counters = _STANZAS.get(old_name)
    name = stanza_name(cluster.config)
    if name == old_name or counters is None or counters.clusters != [cluster] \
            or name in _STANZAS:
        return
    del _STANZAS[old_name]
    counters.name = name
    _STANZAS[name] = counters


def detach(cluster: Any) -> None:
    """A cluster stops: when it was the last of its stanza name, the stanza's series go."""
    name = stanza_name(cluster.config)
    counters = _STANZAS.get(name)
    if counters is None or cluster not in counters.clusters:
        return
    counters.clusters.remove(cluster)
    if not counters.clusters:
        del _STANZAS[name]
    if not _STANZAS:
        PROCESS.collect(COLLECTOR_KEY, None)


def collect() -> Iterator[Metric]:
    """The per-stanza families, read from the running clusters now.

    While a reload runs a stanza's old and new cluster side by side, the old one (the
    first started, still serving) is shown; its counters are the stanza's, shared.
    """
    synced = Gauge("kubernetai_synced",
                   "1 once every resource the stanza watches has been listed, else 0.",
                   ("stanza",))
    cached = Gauge("kubernetai_cached_objects",
                   "Objects in the stanza's cache, by resource.", ("stanza", "resource"))
    age = Gauge("kubernetai_last_event_age_seconds",
                "Seconds since the stanza's informer of a resource last heard from the "
                "API server (a watch event, a bookmark, or a list; since it started, "
                "if nothing yet).", ("stanza", "resource"))
    restarts = Counter("kubernetai_watch_restarts_total",
                       "Watches opened again, by resource and why the previous one "
                       "ended (ended, stalled, expired, error).",
                       ("stanza", "resource", "reason"))
    relists = Counter("kubernetai_relists_total",
                      "Lists of a resource after the first (410 Gone, the API server's "
                      "history moved).", ("stanza", "resource"))
    now = time.monotonic()
    for counters in list(_STANZAS.values()):
        if not counters.clusters:
            continue
        cluster = counters.clusters[0]
        name = counters.name
        synced.set((name,), 1 if cluster.synced else 0)
        sizes = cluster.cache.sizes()
        heard = cluster.heard()
        for resource in sorted(cluster.watched):
            cached.set((name, resource), sizes.get(resource, 0))
            if resource in heard:
                age.set((name, resource), max(0.0, now - heard[resource]))
            relists.values[(name, resource)] = counters.relists.get(resource, 0)
            for reason in RESTART_REASONS:
                restarts.values[(name, resource, reason)] = \
                    counters.restarts.get((resource, reason), 0)
    return iter((synced, cached, age, restarts, relists))
