"""forward's metrics, with CoreDNS 1.14's names and labels (``plugin/forward/metrics.go``
and ``plugin/pkg/proxy/metrics.go``), in the process store: they outlive reloads.

``to`` is the upstream as configured (``127.0.0.1:53``, ``[::1]:53``), ``proxy_name`` is
always ``forward``, ``proto`` is ``udp``, ``tcp`` or ``tcp-tls``, ``rcode`` the
upstream's (``NOERROR``, ``NXDOMAIN``, ...).
"""

from __future__ import annotations

from kubernetai.core.metrics import PROCESS, TIME_BUCKETS

__all__ = ["REQUEST_DURATION", "HEALTHCHECK_FAILURES", "CONN_CACHE_HITS",
           "CONN_CACHE_MISSES", "HEALTHCHECK_BROKEN", "MAX_CONCURRENT_REJECTS"]

REQUEST_DURATION = PROCESS.histogram(
    "coredns_proxy_request_duration_seconds",
    "Seconds each exchange with an upstream took, per upstream and the rcode it answered.",
    ["proxy_name", "to", "rcode"], TIME_BUCKETS)
HEALTHCHECK_FAILURES = PROCESS.counter(
    "coredns_proxy_healthcheck_failures_total",
    "Health checks of an upstream that got no answer.", ["proxy_name", "to"])
CONN_CACHE_HITS = PROCESS.counter(
    "coredns_proxy_conn_cache_hits_total",
    "Exchanges that reused an open socket to the upstream, per protocol.",
    ["proxy_name", "to", "proto"])
CONN_CACHE_MISSES = PROCESS.counter(
    "coredns_proxy_conn_cache_misses_total",
    "Exchanges that had to open a socket to the upstream, per protocol.",
    ["proxy_name", "to", "proto"])
HEALTHCHECK_BROKEN = PROCESS.counter(
    "coredns_forward_healthcheck_broken_total",
    "Times every upstream was down and one was picked at random.")
MAX_CONCURRENT_REJECTS = PROCESS.counter(
    "coredns_forward_max_concurrent_rejects_total",
    "Queries refused because max_concurrent queries were already in flight.")

# Unlabelled counters are shown from the start, at 0, as Prometheus's client shows them.
HEALTHCHECK_BROKEN.inc((), 0)
MAX_CONCURRENT_REJECTS.inc((), 0)
