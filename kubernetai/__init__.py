"""kubernetai: Kubernetes DNS service discovery for several clusters, on Twisted Names."""

__version__ = "0.1.0.dev0"
