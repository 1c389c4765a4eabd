"""One stanza's connection to its cluster: informers feeding a ClusterCache.

A `Cluster` is a Twisted service. Starting it builds the official client from the stanza's
options and starts one informer thread per resource the options need (CoreDNS's rule:
services and namespaces always, EndpointSlices unless `noendpoints`, pods only for
`pods verified`, ServiceImports and multicluster EndpointSlices for `multicluster`).
Informer threads hand batches over with `callFromThread`; the cache is only ever touched on
the reactor thread, so the query path reads it with no lock.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from twisted.application import service
from twisted.internet import defer, threads
from twisted.logger import Logger

from . import objects
from .cache import ClusterCache
from .informer import Changes, Informer, Replace, Watched
from .stanza import StanzaConfig, kube_client_config

POD_PHASES = "status.phase!=Succeeded,status.phase!=Failed,status.phase!=Unknown"
MC_SERVICE_LABEL = "multicluster.kubernetes.io/service-name"

CONVERTERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "services": objects.service_from_json,
    "endpointslices": objects.endpoint_slice_from_json,
    "pods": objects.pod_from_json,
    "namespaces": objects.namespace_from_json,
    "serviceimports": objects.service_import_from_json,
    "mcendpointslices": objects.mc_endpoint_slice_from_json,
}


def _and(*selectors: str | None) -> str | None:
    parts = [s for s in selectors if s]
    return ",".join(parts) or None


def watched_for(config: StanzaConfig) -> dict[str, Watched]:
    """Cache resource name -> what to watch, for exactly what the options need."""
    watched = {
        "services": Watched("services", config.labels),
        "namespaces": Watched("namespaces", config.namespace_labels),
    }
    if not config.noendpoints:
        watched["endpointslices"] = Watched("endpointslices", config.labels)
    if config.pods == "verified":
        watched["pods"] = Watched("pods", config.labels, POD_PHASES)
    if config.multicluster_zones:
        watched["serviceimports"] = Watched("serviceimports")
        watched["mcendpointslices"] = Watched("endpointslices",
                                              _and(config.labels, MC_SERVICE_LABEL))
    return watched


class Cluster(service.Service):
    """Keeps one cluster's cache current while the service runs."""

    log = Logger()

    def __init__(self, config: StanzaConfig, *, reactor: Any = None,
                 api_client: Any = None, read_timeout: float = 90.0) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self.reactor = reactor
        self.cache = ClusterCache()
        self.watched = watched_for(config)
        self.required = frozenset(self.watched)
        self.read_timeout = read_timeout
        self._api_client = api_client
        self._informers: list[Informer] = []
        self._waiters: list[defer.Deferred[bool]] = []
        # Called on the reactor thread after a change that can change answers (the
        # server's wire cache is emptied this way).
        self.listeners: list[Callable[[], None]] = []
        # Not `name`: a service name must be unique in its parent, and a reload briefly
        # runs an old and a new cluster for the same stanza side by side.
        self.label = f"{config.filename}:{config.line} {' '.join(config.zones)}"

    @property
    def synced(self) -> bool:
        return self.cache.has_synced(self.required)

    def connect(self) -> Any:
        """Build the API client from the options; a CorefileError names what is wrong.

        Called when the server is made, so a bad kubeconfig or certificate path stops
        start-up with a located error, as CoreDNS refuses to start.
        """
        if self._api_client is None:
            from kubernetes import client as k8s
            self._api_client = k8s.ApiClient(kube_client_config(self.config))
            self._api_client.user_agent = "kubernetai/python"
        return self._api_client

    def startService(self) -> None:
        super().startService()
        client = self.connect()
        limiter = self.config.request_limiter()
        for resource, watched in self.watched.items():
            convert = CONVERTERS[resource]
            if resource == "endpointslices" and self.config.zonal:
                convert = functools.partial(objects.endpoint_slice_from_json, with_zones=True)
            informer = Informer(client, watched, convert=convert,
                                deliver=lambda batch, r=resource: self._deliver(r, batch),
                                reactor=self.reactor, read_timeout=self.read_timeout,
                                limiter=limiter,
                                name=f"{self.config.primary_zone}{resource}")
            informer.start()
            self._informers.append(informer)

    def stopService(self) -> defer.Deferred[None]:
        """Stop the informer threads; joining them happens off the reactor thread."""
        super().stopService()
        informers, self._informers = self._informers, []
        for waiter in self._waiters:
            if not waiter.called:
                waiter.callback(self.synced)
        self._waiters.clear()
        if not informers:
            return defer.succeed(None)

        def stop_all() -> None:
            for informer in informers:
                informer.request_stop()
            for informer in informers:
                informer.stop()
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), stop_all)

    def _deliver(self, resource: str, batch: Replace | Changes) -> None:
        """Runs on the reactor thread (callFromThread from an informer)."""
        generation, synced = self.cache.generation, self.synced
        if isinstance(batch, Replace):
            self.cache.replace(resource, batch.items.values())
            self.cache.mark_synced(resource)
        else:
            self.cache.apply(resource, batch.events)
        if self.cache.generation != generation or self.synced != synced:
            for listener in self.listeners:
                listener()
        if self._waiters and self.synced:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(True)

    def wait_synced(self, timeout: float) -> defer.Deferred[bool]:
        """Fires True once every watched resource has been listed, or False at the timeout."""
        if self.synced:
            return defer.succeed(True)
        waiter: defer.Deferred[bool] = defer.Deferred()
        self._waiters.append(waiter)

        def expire() -> None:
            if not waiter.called:
                self._waiters.remove(waiter)
                waiter.callback(False)
        call = self.reactor.callLater(timeout, expire)
        waiter.addBoth(lambda result: (call.active() and call.cancel(), result)[1])
        return waiter
