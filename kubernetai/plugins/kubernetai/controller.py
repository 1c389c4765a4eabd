"""One stanza's connection to its cluster: informers feeding a ClusterCache.

A `Cluster` is a Twisted service. Starting it builds the official client from the stanza's
options and starts one informer thread per resource the options need (CoreDNS's rule:
services and namespaces always, EndpointSlices unless `noendpoints`, pods only for
`pods verified`, ServiceImports and multicluster EndpointSlices for `multicluster`).
Informer threads hand batches over with `callFromThread`; the cache is only ever touched on
the reactor thread, so the query path reads it with no lock. The stanza's metrics
(`kubernetai.plugins.kubernetai.metrics`) are counted there too: re-lists and DNS
programming latencies from the batches, requests and watch restarts from what the informers
report the same way.

`Cluster.probe` tries the API server once without starting anything (`kubernetai check
--connect`), and `describe_api_error` says in one line, naming the URL, why a request failed.
"""

from __future__ import annotations

import copy
import functools
import json
import ssl
import time
from typing import Any, Callable

import urllib3
from twisted.application import service
from twisted.internet import defer, threads
from twisted.logger import Logger

from kubernetai.core import gcpolicy
from kubernetai.plugins.kubernetai import metrics, objects
from kubernetai.plugins.kubernetai.apiclient import kube_client_config, plain_http_credentials
from kubernetai.plugins.kubernetai.cache import DELETED, ClusterCache
from kubernetai.plugins.kubernetai.config import StanzaConfig
from kubernetai.plugins.kubernetai.informer import (
    Changes,
    Informer,
    Replace,
    Watched,
    excerpt,
    lister,
)

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
        # Located notes about the connection, found when the client is built
        # (credentials over plain HTTP): printed by `check`, logged at start.
        self.warnings: list[str] = []
        self._informers: list[Informer] = []
        self._informer_of: dict[str, Informer] = {}  # by cache resource name
        # The stanza's counters while it runs (metrics.attach).
        self._counters: metrics.StanzaCounters | None = None
        self._waiters: list[defer.Deferred[bool]] = []
        # Called on the reactor thread after a change that can change answers (the
        # server's wire cache is emptied this way).
        self.listeners: list[Callable[[], None]] = []
        # Not `name`: a service name must be unique in its parent, and a reload briefly
        # runs an old and a new cluster for the same stanza side by side.
        self.label = f"{config.filename}:{config.line} {' '.join(config.zones)}"
        self.started_at: float | None = None  # reactor.seconds() at startService
        # Called on the reactor thread with (cluster, resource, batch) after each batch is
        # applied: `--workers` forwards them to the worker processes (kubernetai.app.workers).
        self.taps: list[Callable[[Cluster, str, Replace | Changes], None]] = []

    @property
    def synced(self) -> bool:
        return self.cache.has_synced(self.required)

    def relocate(self, config: StanzaConfig) -> None:
        """A reload kept this cluster for a stanza with the same options written elsewhere
        (a line added above it): it is named where it is written now, in logs, `/ready`,
        metrics and explain. Everything the fingerprint covers is the same, so nothing
        it serves changes."""
        if config is self.config:
            return
        old_name = metrics.stanza_name(self.config)
        self.config = config
        self.label = f"{config.filename}:{config.line} {' '.join(config.zones)}"
        metrics.renamed(self, old_name)

    def ready(self) -> bool:
        """Ready for `/ready`: synced, or its ``startup_timeout`` ran out since it started
        (as the server then serves what it has)."""
        if self.synced:
            return True
        started = self.started_at
        return started is not None and \
            self.reactor.seconds() - started >= self.config.startup_timeout

    def connect(self) -> Any:
        """Build the API client from the options; a CorefileError names what is wrong.

        Called when the server is made, so a bad kubeconfig or certificate path stops
        start-up with a located error, as CoreDNS refuses to start.
        """
        if self._api_client is None:
            from kubernetai.plugins.kubernetai import k8sapi as k8s
            client_config = kube_client_config(self.config)
            note = plain_http_credentials(self.config, client_config)
            self.warnings = [note] if note else []
            self._api_client = k8s.ApiClient(client_config)
            self._api_client.user_agent = "kubernetai/python"
        return self._api_client

    @property
    def url(self) -> str:
        """The API server's URL (once :meth:`connect` has built the client)."""
        return str(self._api_client.configuration.host) if self._api_client is not None else ""

    def startService(self) -> None:
        super().startService()
        self.started_at = self.reactor.seconds()
        client = self.connect()
        for note in self.warnings:
            self.log.warn("{note}", note=note)
        limiter = self.config.request_limiter()
        self._counters = counters = metrics.attach(self)
        host = metrics.api_host(self.url)
        for resource, watched in self.watched.items():
            convert = CONVERTERS[resource]
            if resource == "endpointslices" and self.config.zonal:
                convert = functools.partial(objects.endpoint_slice_from_json, with_zones=True)
            attr = "service_imports" if resource == "serviceimports" else resource
            convert = objects.reusing(convert, lambda a=attr: getattr(self.cache, a))
            informer = Informer(client, watched, convert=convert,
                                deliver=lambda batch, r=resource: self._deliver(r, batch),
                                # The new state is built on the informer's thread; the
                                # reactor only swaps it in (ClusterCache.install).
                                prepare=lambda items, r=resource: self.cache.prepare_replace(
                                    r, items),
                                reactor=self.reactor, read_timeout=self.read_timeout,
                                limiter=limiter,
                                observer=metrics.InformerMetrics(host, resource, counters),
                                # The URL, so that a failure (a TLS error names no host)
                                # says which API server it is about.
                                name=f"{self.config.primary_zone}{resource} {self.url}")
            informer.start()
            self._informers.append(informer)
            self._informer_of[resource] = informer

    def stopService(self) -> defer.Deferred[None]:
        """Stop the informer threads; joining them happens off the reactor thread."""
        super().stopService()
        metrics.detach(self)
        self._counters = None
        informers, self._informers = self._informers, []
        self._informer_of = {}
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

    def heard(self) -> dict[str, float]:
        """Per resource, the time.monotonic() its informer last heard from the API server
        (or started, if nothing came yet); only resources whose informer runs."""
        heard = {}
        for resource, informer in list(self._informer_of.items()):
            when = informer.last_heard or informer.started_at
            if when is not None:
                heard[resource] = when
        return heard

    def store(self, resource: str) -> dict[str, Any]:
        """The cache's current objects of ``resource`` by key (not a copy: read it on the
        reactor thread)."""
        return getattr(self.cache, "service_imports" if resource == "serviceimports"
                       else resource)

    def receive(self, resource: str, batch: Replace | Changes) -> None:
        """Apply a batch another process's informers delivered (a `--workers` worker runs
        no informers of its own); reactor thread."""
        self._deliver(resource, batch, observe=False)

    def _deliver(self, resource: str, batch: Replace | Changes, observe: bool = True) -> None:
        """Runs on the reactor thread (callFromThread from an informer)."""
        generation, synced = self.cache.generation, self.synced
        if resource == "endpointslices" and observe:
            self._programmed(batch)
        if isinstance(batch, Replace):
            if self._counters is not None and self.cache.synced.get(resource):
                self._counters.relisted(resource)
            prepared = batch.prepared
            if prepared is not None:
                self.cache.install(prepared)
            else:
                items = batch.items
                self.cache.replace(resource, items.values(),
                                   keep=[key for key, obj in items.items() if obj is None])
            self.cache.mark_synced(resource)
            gcpolicy.settled(self.reactor)
        else:
            self.cache.apply(resource, batch.events)
        for tap in self.taps:
            tap(self, resource, batch)
        if self.cache.generation != generation or self.synced != synced:
            for listener in self.listeners:
                listener()
        if self._waiters and self.synced:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(True)

    def _programmed(self, batch: Replace | Changes) -> None:
        """Observe the DNS programming latency of the EndpointSlice changes in ``batch``,
        before it is applied (the cached slices are the previous versions).

        As CoreDNS: for a slice with a last-change-trigger-time annotation whose Service
        is known (exactly one), as ``now - trigger``, ``headless_with_selector`` when the
        Service is headless, else ``cluster_ip``. Unlike CoreDNS, only when the annotation
        differs from the cached version's (a change the EndpointSlice controller made, not
        a label edit or a re-list of an unchanged slice), never for the first list
        (starting up is no programming delay), and not for deletions (a deleted slice's
        annotation is its last update's, not the deletion's).
        """
        if isinstance(batch, Replace):
            if not self.cache.synced.get("endpointslices"):
                return
            changes: Any = (("ADDED", key, es) for key, es in batch.items.items())
        else:
            changes = batch.events
        stored, services = self.cache.endpointslices, self.cache.services
        previous: dict[str, float | None] = {}
        now = time.time()
        for kind, key, es in changes:
            if kind == DELETED or es is None:
                previous[key] = None
                continue
            trigger = es.trigger_time
            if trigger is None:
                continue
            before = previous[key] if key in previous else \
                getattr(stored.get(key), "trigger_time", None)
            previous[key] = trigger
            if trigger == before:
                continue
            service = services.get(es.service_key)
            if service is not None:
                metrics.observe_programming(service.headless, trigger, now)

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

    def probe(self, timeout: float) -> str | None:
        """Try the API server once, as the informers would start: None if it answers.

        One list of each resource the stanza watches, ``limit=1``, with the
        stanza's selectors and credentials, each request bounded by
        ``timeout`` (connect, TLS handshake and answer each) and not
        retried.  Returns what went wrong, naming the URL, for the first
        resource that fails.  Blocking: for `check --connect`, not the
        reactor thread.
        """
        client = self.connect()
        probing = copy.copy(client.configuration)
        probing.retries = 0  # one try: a refused connection is reported, not retried
        from kubernetai.plugins.kubernetai import k8sapi as k8s
        api = k8s.ApiClient(probing)
        api.user_agent = client.user_agent
        try:
            for watched in self.watched.values():
                try:
                    _list_once(api, watched, timeout)
                except Exception as error:  # noqa: BLE001 - every failure is the answer
                    return f"{watched.resource}: {describe_api_error(error, probing.host, timeout)}"
        finally:
            api.close()
        return None


# The most a probe reads of an answer (a list of one object).
_PROBE_BODY_BYTES = 1 << 20


class _NotAList(Exception):
    """An answer that is not a Kubernetes list: probably not an API server."""


def _list_once(api: Any, watched: Watched, timeout: float) -> None:
    """One list request of ``watched`` with ``limit=1``; raises if it fails."""
    params: dict[str, Any] = {"limit": 1, "_preload_content": False,
                              "_request_timeout": (timeout, timeout)}
    if watched.label_selector:
        params["label_selector"] = watched.label_selector
    if watched.field_selector:
        params["field_selector"] = watched.field_selector
    response = lister(api, watched.resource)(**params)
    try:
        body = response.read(_PROBE_BODY_BYTES)
    finally:
        response.release_conn()
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not isinstance(answer.get("items"), list):
        raise _NotAList("the answer is not a Kubernetes list: is this the API server?")


def describe_api_error(error: BaseException, url: str, timeout: float) -> str:
    """One line saying what went wrong talking to the API server at ``url``.

    A TLS failure says so and names the URL (Python's own message names
    neither the server nor the certificate it refused); a refusal of the
    credentials says which status came back.
    """
    from kubernetai.plugins.kubernetai.k8sapi import ApiException

    if isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason is not None:
        error = error.reason
    if isinstance(error, ApiException):
        return _describe_status(error, url)
    if isinstance(error, urllib3.exceptions.SSLError) and error.args:
        error = error.args[0] if isinstance(error.args[0], BaseException) else error
    if isinstance(error, ssl.SSLCertVerificationError):
        return (f"TLS with {url} failed: its certificate is not trusted ({error.verify_message}): "
                "is the CA right (tls CACERT, or the kubeconfig's certificate-authority)?")
    if isinstance(error, (ssl.SSLError, urllib3.exceptions.SSLError)):
        return f"TLS with {url} failed: {error}"
    # NewConnectionError is a ConnectTimeoutError too (urllib3 keeps it so): test it first.
    if isinstance(error, urllib3.exceptions.NewConnectionError):
        cause = error.__cause__ or error.__context__
        why = getattr(cause, "strerror", None) or str(cause or error)
        return f"cannot connect to {url}: {why}"
    if isinstance(error, urllib3.exceptions.ConnectTimeoutError):
        return f"no connection to {url} within {timeout:g}s"
    if isinstance(error, urllib3.exceptions.ReadTimeoutError):
        return f"{url} did not answer within {timeout:g}s"
    if isinstance(error, _NotAList):
        return f"{url}: {error}"
    text = str(error)
    return f"{url}: {type(error).__name__}" + (f": {text}" if text else "")


def _describe_status(error: Any, url: str) -> str:
    message = ""
    try:
        body = json.loads(error.body or "")
        if isinstance(body, dict):
            message = str(body.get("message") or "")
    except (TypeError, ValueError):
        pass
    message = excerpt(message)
    status = f"HTTP {error.status} {excerpt(str(error.reason or ''), 80)}".rstrip()
    if error.status == 401:
        lead = f"{url} refused the credentials ({status})"
    elif error.status == 403:
        lead = f"{url} does not allow this ({status}): the stanza needs list and watch"
    else:
        lead = f"{url} answered {status}"
    return lead + (f": {message}" if message else "")
