"""twistd's entry point: `twistd kubernetai --corefile FILE`.

The options live in kubernetai.app.tap; parsing them under twistd also sets up the
CoreDNS-shaped log (kubernetai.app.logs), so nothing here runs at import time: twistd
imports every plugin module to list them.
"""

from twisted.application.service import ServiceMaker

kubernetai = ServiceMaker(
    "kubernetai", "kubernetai.app.tap",
    "Kubernetes DNS for several clusters, configured by a CoreDNS Corefile.", "kubernetai")
