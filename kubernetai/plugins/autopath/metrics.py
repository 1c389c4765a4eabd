"""`autopath`'s counter, with CoreDNS's name, help and label (``plugin/autopath/metrics.go``).

Made when the plugin is imported and kept for the life of the process, as CoreDNS
registers it at start; a reload keeps its count.
"""

from __future__ import annotations

from kubernetai.core.metrics import PROCESS

__all__ = ["SUCCESS"]

SUCCESS = PROCESS.counter("coredns_autopath_success_total",
                          "Counter of requests that did autopath.", ("server",))
