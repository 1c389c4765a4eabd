"""twistd's entry point: `twistd kubernetai --corefile FILE`.

The options live in kubernetai.app.tap.
"""

from twisted.application.service import ServiceMaker

kubernetai = ServiceMaker(
    "kubernetai", "kubernetai.app.tap",
    "Kubernetes DNS for several clusters, configured by a CoreDNS Corefile.", "kubernetai")
