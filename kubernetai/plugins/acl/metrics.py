"""`acl`'s counters, with CoreDNS's names, help and labels (``plugin/acl/metrics.go``).

Made when the plugin is imported, as CoreDNS registers them at start: they live as long
as the process, so a reload keeps their counts. ``view`` is always empty (no `view`
plugin); ``allowed`` has no ``zone`` label, as in CoreDNS.
"""

from __future__ import annotations

from kubernetai.core.metrics import PROCESS

__all__ = ["BLOCKED", "FILTERED", "ALLOWED", "DROPPED"]

BLOCKED = PROCESS.counter("coredns_acl_blocked_requests_total",
                          "Counter of DNS requests being blocked.", ("server", "zone", "view"))
FILTERED = PROCESS.counter("coredns_acl_filtered_requests_total",
                           "Counter of DNS requests being filtered.",
                           ("server", "zone", "view"))
ALLOWED = PROCESS.counter("coredns_acl_allowed_requests_total",
                          "Counter of DNS requests being allowed.", ("server", "view"))
DROPPED = PROCESS.counter("coredns_acl_dropped_requests_total",
                          "Counter of DNS requests being dropped.", ("server", "zone", "view"))
