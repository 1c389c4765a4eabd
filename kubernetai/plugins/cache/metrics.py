"""The cache's metrics, with CoreDNS's names and labels (``plugin/cache/metrics.go``), in
the process store: ``server`` is the server that took the query (``dns://:53``),
``type`` ``success`` or ``denial``, ``zones`` the cache's zones joined by commas, ``view``
empty (there is no `view` plugin)."""

from __future__ import annotations

from kubernetai.core.metrics import PROCESS
from kubernetai.core.request import Request

__all__ = ["entries", "requests", "hits", "misses", "prefetches", "drops", "served_stale",
           "evictions", "server_of"]

_TYPED = ("server", "type", "zones", "view")
_PLAIN = ("server", "zones", "view")

entries = PROCESS.gauge("coredns_cache_entries", "The number of elements in the cache.",
                        _TYPED)
requests = PROCESS.counter("coredns_cache_requests_total", "The count of cache requests.",
                           _PLAIN)
hits = PROCESS.counter("coredns_cache_hits_total", "The count of cache hits.", _TYPED)
misses = PROCESS.counter(
    "coredns_cache_misses_total",
    "The count of cache misses. Deprecated, derive misses from cache hits/requests counters.",
    _PLAIN)
prefetches = PROCESS.counter("coredns_cache_prefetch_total",
                             "The number of times the cache has prefetched a cached item.",
                             _PLAIN)
drops = PROCESS.counter("coredns_cache_drops_total",
                        "The number responses that are not cached, because the reply is "
                        "malformed.", _PLAIN)
served_stale = PROCESS.counter("coredns_cache_served_stale_total",
                               "The number of requests served from stale cache entries.",
                               _PLAIN)
evictions = PROCESS.counter("coredns_cache_evictions_total", "The count of cache evictions.",
                            _TYPED)


def server_of(request: Request) -> str:
    """The ``server`` label of the socket ``request`` came in on ("" if none)."""
    try:
        return request.proto.metrics[0]  # type: ignore[no-any-return]
    except (AttributeError, TypeError, IndexError):
        return ""
