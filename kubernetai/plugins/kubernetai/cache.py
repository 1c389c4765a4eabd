"""The in-memory view of one cluster that answers are built from.

One :class:`ClusterCache` per stanza holds the trimmed objects of
:mod:`kubernetai.plugins.kubernetai.objects` and the indexes the query path needs:

=======================  ==================================================
``services``             ``"ns/name"`` -> :class:`Service`
``endpoints``            ``"ns/service"`` -> tuple of that service's
                         :class:`EndpointSlice` s (several per service,
                         IPv4 and IPv6 slices; merged by the reader)
``service_imports``      ``"ns/name"`` -> :class:`ServiceImport`
``mc_endpoints``         ``"ns/service"`` -> tuple of multicluster slices
``namespaces``           name -> :class:`Namespace`
``pods``                 ``"ns/name"`` -> :class:`Pod`
``endpointslices``,      the slices by their own ``"ns/name"`` key
``mcendpointslices``
=======================  ==================================================

plus IP indexes read through :meth:`ClusterCache.services_for_cluster_ip`,
:meth:`~ClusterCache.slices_for_ip` and :meth:`~ClusterCache.pods_for_ip`
(CoreDNS's ``SvcIndexReverse``, ``EpIndexReverse`` and ``PodIndex``).
Empty strings and ``None`` are not indexed as IPs.  CoreDNS's
``SvcExtIndexReverse`` (external IPs) has no counterpart: only its
external-IP lookups read it, and this project has none.

Threading: the cache is mutated only on the reactor thread, through
:meth:`~ClusterCache.replace` (a full list) and :meth:`~ClusterCache.apply`
(watch events); readers on the same thread do plain dict lookups, with no
locks and no copies.  The per-service tuples in ``endpoints`` are rebuilt
when one of that service's slices changes, so a reader never merges.

Serial: ``modified`` is the Unix time (float) of the last DNS-visible change
to services, endpoint slices, pods or namespaces; ``modified_multicluster``
that of service imports and multicluster slices.  An add or a delete always
counts; an update counts only when ``old.dns_equal(new)`` is false (CoreDNS
``controller.go`` ``detectChanges``).  Unlike CoreDNS, namespace adds and
deletes count too (they change which names exist), multicluster adds and
deletes bump only ``modified_multicluster`` and a ServiceImport's IPs are
compared.  ``generation`` is an integer that increases with every
DNS-visible change; ``memo`` (a dict that :mod:`kubernetai.plugins.kubernetai.records` fills
with built answers) is emptied at the same moment.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from kubernetai.plugins.kubernetai.objects import (
    EndpointSlice,
    Namespace,
    Pod,
    Service,
    ServiceImport,
)

__all__ = ["ADDED", "DELETED", "MODIFIED", "RESOURCES", "ClusterCache"]

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"

RESOURCES = frozenset(
    {"services", "endpointslices", "pods", "namespaces", "serviceimports", "mcendpointslices"}
)
_MULTICLUSTER = frozenset({"serviceimports", "mcendpointslices"})

_NONE: tuple = ()


class _MultiIndex:
    """IP -> objects, storing a lone object directly to save a dict per IP.

    Most IPs belong to exactly one object; the value is then the object
    itself, and a ``{key: object}`` dict only when several share the IP
    (an endpoint in slices of two services, host-network pods).
    """

    __slots__ = ("_d",)

    def __init__(self) -> None:
        self._d: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self._d)

    def add(self, ip: str, obj: Any) -> None:
        d = self._d
        cur = d.get(ip)
        if cur is None:
            d[ip] = obj
        elif type(cur) is dict:
            cur[obj.key] = obj
        elif cur.key == obj.key:
            d[ip] = obj
        else:
            d[ip] = {cur.key: cur, obj.key: obj}

    def remove(self, ip: str, key: str) -> None:
        d = self._d
        cur = d.get(ip)
        if cur is None:
            return
        if type(cur) is dict:
            cur.pop(key, None)
            if len(cur) == 1:
                (d[ip],) = cur.values()
            elif not cur:
                del d[ip]
        elif cur.key == key:
            del d[ip]

    def get(self, ip: str) -> tuple:
        cur = self._d.get(ip)
        if cur is None:
            return _NONE
        if type(cur) is dict:
            return tuple(cur.values())
        return (cur,)

    def clear(self) -> None:
        self._d.clear()


class ClusterCache:
    """Indexes of one cluster's services, endpoint slices, pods, namespaces and imports."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.services: dict[str, Service] = {}
        self.endpointslices: dict[str, EndpointSlice] = {}
        self.endpoints: dict[str, tuple[EndpointSlice, ...]] = {}
        self.pods: dict[str, Pod] = {}
        self.namespaces: dict[str, Namespace] = {}
        self.service_imports: dict[str, ServiceImport] = {}
        self.mcendpointslices: dict[str, EndpointSlice] = {}
        self.mc_endpoints: dict[str, tuple[EndpointSlice, ...]] = {}
        self._svc_by_cluster_ip = _MultiIndex()
        self._slice_by_ip = _MultiIndex()
        self._pod_by_ip = _MultiIndex()
        # "ns/service" -> {slice key: slice}, the source of self.endpoints
        self._slices_by_svc: dict[str, dict[str, EndpointSlice]] = {}
        self._mc_slices_by_svc: dict[str, dict[str, EndpointSlice]] = {}
        self.modified: float = 0.0
        self.modified_multicluster: float = 0.0
        self.generation: int = 0
        # Memo of built answers, owned by kubernetai.plugins.kubernetai.records; emptied on every
        # DNS-visible change.
        self.memo: dict[Any, Any] = {}
        self.memo_records: int = 0
        self.synced: dict[str, bool] = dict.fromkeys(sorted(RESOURCES), False)

    # ------------------------------------------------------------------
    # Readers

    def services_for_cluster_ip(self, ip: str) -> tuple[Service, ...]:
        """Services whose ClusterIPs contain ``ip`` (CoreDNS ``SvcIndexReverse``)."""
        return self._svc_by_cluster_ip.get(ip)

    def slices_for_ip(self, ip: str) -> tuple[EndpointSlice, ...]:
        """Endpoint slices with a ready address ``ip`` (CoreDNS ``EpIndexReverse``)."""
        return self._slice_by_ip.get(ip)

    def pods_for_ip(self, ip: str) -> tuple[Pod, ...]:
        """Pods whose ``status.podIP`` is ``ip`` (CoreDNS ``PodIndex``)."""
        return self._pod_by_ip.get(ip)

    def sizes(self) -> dict[str, int]:
        """Objects held per resource (for the metrics)."""
        return {
            "services": len(self.services),
            "endpointslices": len(self.endpointslices),
            "pods": len(self.pods),
            "namespaces": len(self.namespaces),
            "serviceimports": len(self.service_imports),
            "mcendpointslices": len(self.mcendpointslices),
        }

    def has_synced(self, required: Iterable[str]) -> bool:
        """True when every resource in ``required`` has had its first full list."""
        synced = self.synced
        return all(synced.get(r, False) for r in required)

    @property
    def serial(self) -> int:
        """The SOA serial of the cluster's ordinary zones: ``int(modified)``."""
        return int(self.modified)

    @property
    def serial_multicluster(self) -> int:
        """The SOA serial of its multicluster zones: ``int(modified_multicluster)``."""
        return int(self.modified_multicluster)

    # ------------------------------------------------------------------
    # Writers (reactor thread only)

    def mark_synced(self, resource: str, synced: bool = True) -> None:
        self._check(resource)
        self.synced[resource] = synced

    def replace(self, resource: str, objects: Iterable[Any], keep: Iterable[str] = ()) -> bool:
        """Make ``objects`` the whole content of ``resource`` and mark it synced.

        Objects missing from the list are removed, except those whose key is
        in ``keep`` (the informer passes the keys of listed objects that
        converted to ``None``, i.e. pods being deleted, which CoreDNS leaves
        as they were).  ``None`` entries in ``objects`` are skipped.  Returns
        True when something DNS-visible changed.
        """
        store = self._store(resource)
        upsert, remove = self._writers(resource)
        changed = False
        seen: set[str] = set()
        for obj in objects:
            if obj is None:
                continue
            seen.add(obj.key)
            changed |= upsert(obj)
        if len(seen) != len(store):
            kept = set(keep)
            for key in [k for k in store if k not in seen and k not in kept]:
                changed |= remove(key)
        self.synced[resource] = True
        if changed:
            self._bump(resource)
        return changed

    def apply(self, resource: str, changes: Iterable[tuple[str, str, Any]]) -> bool:
        """Apply watch events ``(type, key, object)``; type ADDED, MODIFIED or DELETED.

        ADDED/MODIFIED with object ``None`` (a pod being deleted) are
        ignored, as CoreDNS skips them; DELETED removes ``key`` whatever
        the object.  Returns True when something DNS-visible changed.
        """
        upsert, remove = self._writers(resource)
        changed = False
        for kind, key, obj in changes:
            if kind == DELETED:
                changed |= remove(key)
            elif kind == ADDED or kind == MODIFIED:
                if obj is not None:
                    changed |= upsert(obj)
            else:
                raise ValueError(f"unknown watch event type {kind!r}")
        if changed:
            self._bump(resource)
        return changed

    # ------------------------------------------------------------------

    def _check(self, resource: str) -> None:
        if resource not in RESOURCES:
            raise ValueError(f"unknown resource {resource!r}")

    def _bump(self, resource: str) -> None:
        now = self._clock()
        if resource in _MULTICLUSTER:
            self.modified_multicluster = now
        else:
            self.modified = now
        self.generation += 1
        if self.memo:
            self.memo.clear()
            self.memo_records = 0

    def _store(self, resource: str) -> dict[str, Any]:
        self._check(resource)
        return {
            "services": self.services,
            "endpointslices": self.endpointslices,
            "pods": self.pods,
            "namespaces": self.namespaces,
            "serviceimports": self.service_imports,
            "mcendpointslices": self.mcendpointslices,
        }[resource]

    def _writers(self, resource: str):
        self._check(resource)
        if resource == "services":
            return self._upsert_service, self._remove_service
        if resource == "endpointslices":
            return self._upsert_slice, self._remove_slice
        if resource == "pods":
            return self._upsert_pod, self._remove_pod
        if resource == "namespaces":
            return self._upsert_namespace, self._remove_namespace
        if resource == "serviceimports":
            return self._upsert_import, self._remove_import
        return self._upsert_mc_slice, self._remove_mc_slice

    # services ----------------------------------------------------------

    def _index_service(self, svc: Service) -> None:
        for ip in svc.cluster_ips:
            if ip and ip != "None":
                self._svc_by_cluster_ip.add(ip, svc)

    def _unindex_service(self, svc: Service) -> None:
        for ip in svc.cluster_ips:
            if ip and ip != "None":
                self._svc_by_cluster_ip.remove(ip, svc.key)

    def _upsert_service(self, svc: Service) -> bool:
        old = self.services.get(svc.key)
        if old is not None:
            if old == svc:
                return False
            self._unindex_service(old)
        self.services[svc.key] = svc
        self._index_service(svc)
        return old is None or not old.dns_equal(svc)

    def _remove_service(self, key: str) -> bool:
        old = self.services.pop(key, None)
        if old is None:
            return False
        self._unindex_service(old)
        return True

    # endpoint slices ----------------------------------------------------

    def _upsert_slice(self, es: EndpointSlice) -> bool:
        return self._upsert_any_slice(
            es, self.endpointslices, self._slices_by_svc, self.endpoints, True
        )

    def _remove_slice(self, key: str) -> bool:
        return self._remove_any_slice(
            key, self.endpointslices, self._slices_by_svc, self.endpoints, True
        )

    def _upsert_mc_slice(self, es: EndpointSlice) -> bool:
        return self._upsert_any_slice(
            es, self.mcendpointslices, self._mc_slices_by_svc, self.mc_endpoints, False
        )

    def _remove_mc_slice(self, key: str) -> bool:
        return self._remove_any_slice(
            key, self.mcendpointslices, self._mc_slices_by_svc, self.mc_endpoints, False
        )

    @staticmethod
    def _relink(by_svc: dict, merged: dict, svc_key: str) -> None:
        group = by_svc.get(svc_key)
        if group:
            merged[svc_key] = tuple(group.values())
        else:
            by_svc.pop(svc_key, None)
            merged.pop(svc_key, None)

    def _upsert_any_slice(
        self, es: EndpointSlice, store: dict, by_svc: dict, merged: dict, index_ips: bool
    ) -> bool:
        old = store.get(es.key)
        if old is not None:
            if old == es:
                return False
            self._unlink_slice(old, by_svc, merged, index_ips)
        store[es.key] = es
        by_svc.setdefault(es.service_key, {})[es.key] = es
        self._relink(by_svc, merged, es.service_key)
        if index_ips:
            add = self._slice_by_ip.add
            for a in es.addresses:
                add(a.ip, es)
        return old is None or not old.dns_equal(es)

    def _unlink_slice(
        self, old: EndpointSlice, by_svc: dict, merged: dict, index_ips: bool
    ) -> None:
        group = by_svc.get(old.service_key)
        if group is not None:
            group.pop(old.key, None)
            self._relink(by_svc, merged, old.service_key)
        if index_ips:
            remove = self._slice_by_ip.remove
            for a in old.addresses:
                remove(a.ip, old.key)

    def _remove_any_slice(
        self, key: str, store: dict, by_svc: dict, merged: dict, index_ips: bool
    ) -> bool:
        old = store.pop(key, None)
        if old is None:
            return False
        self._unlink_slice(old, by_svc, merged, index_ips)
        return True

    # pods ----------------------------------------------------------------

    def _upsert_pod(self, pod: Pod) -> bool:
        old = self.pods.get(pod.key)
        if old is not None:
            if old == pod:
                return False
            if old.ip:
                self._pod_by_ip.remove(old.ip, old.key)
        self.pods[pod.key] = pod
        if pod.ip:
            self._pod_by_ip.add(pod.ip, pod)
        return old is None or not old.dns_equal(pod)

    def _remove_pod(self, key: str) -> bool:
        old = self.pods.pop(key, None)
        if old is None:
            return False
        if old.ip:
            self._pod_by_ip.remove(old.ip, old.key)
        return True

    # namespaces ----------------------------------------------------------

    def _upsert_namespace(self, ns: Namespace) -> bool:
        old = self.namespaces.get(ns.key)
        self.namespaces[ns.key] = ns
        return old is None or not old.dns_equal(ns)

    def _remove_namespace(self, key: str) -> bool:
        return self.namespaces.pop(key, None) is not None

    # service imports -----------------------------------------------------

    def _upsert_import(self, si: ServiceImport) -> bool:
        old = self.service_imports.get(si.key)
        if old is not None and old == si:
            return False
        self.service_imports[si.key] = si
        return old is None or not old.dns_equal(si)

    def _remove_import(self, key: str) -> bool:
        return self.service_imports.pop(key, None) is not None
