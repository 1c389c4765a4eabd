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
:meth:`~ClusterCache.replace` or :meth:`~ClusterCache.install` (a full list)
and :meth:`~ClusterCache.apply` (watch events); readers on the same thread do
plain dict lookups, with no locks and no copies.  The one reader on another
thread is :meth:`~ClusterCache.prepare_replace`, which copies a store in one
C-level step and checks a per-resource write count around it.  The
per-service tuples in ``endpoints`` are rebuilt when one of that service's
slices changes, so a reader never merges.

Serial: ``modified`` is the Unix time (float) of the last DNS-visible change
to services, endpoint slices, pods or namespaces; ``modified_multicluster``
that of service imports and multicluster slices.  An add or a delete always
counts; an update counts only when ``old.dns_equal(new)`` is false (CoreDNS
``controller.go`` ``detectChanges``).  Unlike CoreDNS, namespace adds and
deletes count too (they change which names exist), multicluster adds and
deletes bump only ``modified_multicluster`` and a ServiceImport's IPs are
compared.  ``generation`` is an integer that increases with every
DNS-visible change (that of :attr:`ClusterCache.everything`, the source an
answer that reads everything depends on).

Cells: what one answer read, for invalidating per name rather than
everything.  :meth:`ClusterCache.cell` hands out a slot of
:mod:`kubernetai.core.sources` per key (from a bounded ring: a key keeps it
while newer keys have not taken the whole ring), and every DNS-visible change
moves the generation of the slots of the keys it touches:

=========================  ===============================================
``("svc", "ns/name")``     that Service, the EndpointSlices of service
                           ``ns/name``, the ServiceImport ``ns/name`` and
                           its multicluster slices (also a name that does
                           not exist yet: it starts existing)
``("ns", name)``           the Namespace ``name`` added, changed, removed
``("ip", ip)``             a Service's cluster IP, a slice's address, a
                           pod's IP (old and new ones)
=========================  ===============================================

and :attr:`ClusterCache.serial_cell` moves when ``int(modified)`` or
``int(modified_multicluster)`` does (an SOA's bytes hold the serial).
Answers remember ``(slot, generation)`` integer pairs, so the caches that
keep them hold no tracked objects for the garbage collector to walk.
``memo`` is a dict that :mod:`kubernetai.plugins.kubernetai.records` fills
with built answers, each checked against its cells when it is read.

A full list can be taken over in two steps: :meth:`ClusterCache.prepare_replace`
builds the new store and its indexes from a snapshot, with no mutation (an
informer thread), and :meth:`ClusterCache.install` swaps them in on the
reactor thread with a few assignments, bumping the cells of the keys that
changed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from kubernetai.core.sources import KeySlots, Source
from kubernetai.plugins.kubernetai.objects import (
    EndpointSlice,
    Namespace,
    Pod,
    Service,
    ServiceImport,
)

__all__ = ["ADDED", "DELETED", "MODIFIED", "RESOURCES", "ClusterCache", "Prepared"]

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

    def copy(self) -> "_MultiIndex":
        twin = _MultiIndex()
        d = twin._d
        for ip, cur in self._d.items():
            d[ip] = dict(cur) if type(cur) is dict else cur
        return twin


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
        # Moves with every DNS-visible change: the source of answers that read everything.
        self.everything = Source()
        # key -> slot, for the keys something (a kept answer) may depend on.
        self.cells = KeySlots()
        # Moves when either SOA serial does.
        self.serial_cell = Source()
        # Memo of built answers, owned by kubernetai.plugins.kubernetai.records; each entry
        # is checked against the cells its answer read.
        self.memo: OrderedDict[Any, Any] = OrderedDict()
        self.memo_records: int = 0
        self.synced: dict[str, bool] = dict.fromkeys(sorted(RESOURCES), False)
        # Writes per resource, so that a prepared list built from an older snapshot is
        # not installed over changes made since (see install()).
        self._writes: dict[str, int] = dict.fromkeys(RESOURCES, 0)
        # Prepared lists that came too late and were applied with replace() instead.
        self.fallbacks = 0

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

    @property
    def generation(self) -> int:
        """Moves with every DNS-visible change."""
        return self.everything.generation

    def cell(self, key: tuple[str, ...]) -> int:
        """The slot of ``key`` (``("svc", "ns/name")``, ``("ns", name)``, ``("ip", ip)``),
        given on first use; see the module docstring."""
        return self.cells.slot(key)

    def _touch(self, key: tuple[str, ...]) -> None:
        self.cells.touch(key)

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
        self._check(resource)
        self._writes[resource] += 1  # odd while writing: see prepare_replace
        try:
            return self._replace(resource, objects, keep)
        finally:
            self._writes[resource] += 1

    def _replace(self, resource: str, objects: Iterable[Any], keep: Iterable[str]) -> bool:
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

    def prepare_replace(self, resource: str, items: dict[str, Any]) -> Prepared:
        """What :meth:`replace` would make of ``resource`` from the list ``items`` (key ->
        object; ``None``: listed but being deleted, kept as it is), built without touching
        the cache, so any thread may call it: the new store, the resource's indexes and
        the cells of the keys that changed, against a snapshot of the current store.
        In ``items``, an object equal to the one held is replaced by it, so that the
        list's copy is freed here rather than on the reactor with the batch."""
        self._check(resource)
        writes = self._writes[resource]
        # One C-level copy, atomic under the GIL. The reactor may be writing meanwhile:
        # the write count, odd during a write, read before and after it, tells a torn or
        # outdated snapshot, and install() then does a replace() instead.
        old = dict(self._store(resource))
        if writes % 2 or self._writes[resource] != writes:
            writes = -1
        cells_of = _CELLS[resource]
        store: dict[str, Any] = {}
        touched: set[tuple[str, ...]] = set()
        changed = False
        get = old.get
        for listed, obj in items.items():
            if obj is None:
                before = get(listed)
                if before is not None:
                    store[listed] = before
                continue
            key = obj.key
            before = get(key)
            if before is None:
                store[key] = obj
                changed = True
                touched.update(cells_of(None, obj))
            elif before == obj:
                store[key] = before  # the object already held (and its memory) stays
                # and the list's equal copy goes now, on this thread: freed with the
                # batch, 100,000 pods' copies held the reactor for ~18 ms.
                items[listed] = before
            else:
                store[key] = obj
                if not before.dns_equal(obj):
                    changed = True
                    touched.update(cells_of(before, obj))
        for key, before in old.items():
            if key not in store:
                changed = True
                touched.update(cells_of(before, None))
        return Prepared(resource, writes, items, store, _build_indexes(resource, store),
                        frozenset(touched), changed)

    def install(self, prepared: Prepared) -> bool:
        """Take over a :meth:`prepare_replace` result (reactor thread): a few assignments
        and the bumps of the changed keys' cells. If ``resource`` was written since its
        snapshot, :meth:`replace` does the work instead. True when something DNS-visible
        changed."""
        resource = prepared.resource
        if self._writes[resource] != prepared.writes:
            self.fallbacks += 1
            items = prepared.items
            return self.replace(resource, items.values(),
                                keep=[key for key, obj in items.items() if obj is None])
        self._writes[resource] += 2
        setattr(self, _STORE_ATTR[resource], prepared.store)
        for name, value in prepared.indexes.items():
            setattr(self, name, value)
        self.synced[resource] = True
        if prepared.changed:
            self.cells.touch_all(prepared.touched)
            self._bump(resource)
        return prepared.changed

    def apply(self, resource: str, changes: Iterable[tuple[str, str, Any]]) -> bool:
        """Apply watch events ``(type, key, object)``; type ADDED, MODIFIED or DELETED.

        ADDED/MODIFIED with object ``None`` (a pod being deleted) are
        ignored, as CoreDNS skips them; DELETED removes ``key`` whatever
        the object.  Returns True when something DNS-visible changed.
        """
        upsert, remove = self._writers(resource)
        self._writes[resource] += 1  # odd while writing: see prepare_replace
        try:
            changed = self._apply(upsert, remove, changes)
        finally:
            self._writes[resource] += 1
        if changed:
            self._bump(resource)
        return changed

    @staticmethod
    def _apply(upsert: Callable[[Any], bool], remove: Callable[[str], bool],
               changes: Iterable[tuple[str, str, Any]]) -> bool:
        changed = False
        for kind, key, obj in changes:
            if kind == DELETED:
                changed |= remove(key)
            elif kind == ADDED or kind == MODIFIED:
                if obj is not None:
                    changed |= upsert(obj)
            else:
                raise ValueError(f"unknown watch event type {kind!r}")
        return changed

    # ------------------------------------------------------------------

    def _check(self, resource: str) -> None:
        if resource not in RESOURCES:
            raise ValueError(f"unknown resource {resource!r}")

    def _bump(self, resource: str) -> None:
        now = self._clock()
        if resource in _MULTICLUSTER:
            before = int(self.modified_multicluster)
            self.modified_multicluster = now
        else:
            before = int(self.modified)
            self.modified = now
        if int(now) != before:
            self.serial_cell.bump()
        self.everything.bump()

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
        if old is None or not old.dns_equal(svc):
            self._touch_service(old, svc)
            return True
        return False

    def _remove_service(self, key: str) -> bool:
        old = self.services.pop(key, None)
        if old is None:
            return False
        self._unindex_service(old)
        self._touch_service(old, None)
        return True

    def _touch_service(self, old: Service | None, new: Service | None) -> None:
        for key in _service_cells(old, new):
            self._touch(key)

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
        if old is None or not old.dns_equal(es):
            for key in _slice_cells(old, es):
                self._touch(key)
            return True
        return False

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
        for cell in _slice_cells(old, None):
            self._touch(cell)
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
        if old is None or not old.dns_equal(pod):
            for key in _pod_cells(old, pod):
                self._touch(key)
            return True
        return False

    def _remove_pod(self, key: str) -> bool:
        old = self.pods.pop(key, None)
        if old is None:
            return False
        if old.ip:
            self._pod_by_ip.remove(old.ip, old.key)
            self._touch(("ip", old.ip))
        return True

    # namespaces ----------------------------------------------------------

    def _upsert_namespace(self, ns: Namespace) -> bool:
        old = self.namespaces.get(ns.key)
        self.namespaces[ns.key] = ns
        if old is None or not old.dns_equal(ns):
            self._touch(("ns", ns.key))
            return True
        return False

    def _remove_namespace(self, key: str) -> bool:
        if self.namespaces.pop(key, None) is None:
            return False
        self._touch(("ns", key))
        return True

    # service imports -----------------------------------------------------

    def _upsert_import(self, si: ServiceImport) -> bool:
        old = self.service_imports.get(si.key)
        if old is not None and old == si:
            return False
        self.service_imports[si.key] = si
        if old is None or not old.dns_equal(si):
            self._touch(("svc", si.key))
            return True
        return False

    def _remove_import(self, key: str) -> bool:
        if self.service_imports.pop(key, None) is None:
            return False
        self._touch(("svc", key))
        return True



# --------------------------------------------------------------------------
# Cells a change touches, and the indexes of a prepared list


def _service_cells(old: Any, new: Any) -> list[tuple[str, ...]]:
    keys: list[tuple[str, ...]] = []
    for svc in (old, new):
        if svc is not None:
            keys.append(("svc", svc.key))
            for ip in svc.cluster_ips:
                if ip and ip != "None":
                    keys.append(("ip", ip))
    return keys


def _slice_cells(old: Any, new: Any) -> list[tuple[str, ...]]:
    keys: list[tuple[str, ...]] = []
    for es in (old, new):
        if es is not None:
            keys.append(("svc", es.service_key))
            for a in es.addresses:
                keys.append(("ip", a.ip))
    return keys


def _pod_cells(old: Any, new: Any) -> list[tuple[str, ...]]:
    return [("ip", pod.ip) for pod in (old, new) if pod is not None and pod.ip]


def _namespace_cells(old: Any, new: Any) -> list[tuple[str, ...]]:
    return [("ns", (old or new).key)]


def _import_cells(old: Any, new: Any) -> list[tuple[str, ...]]:
    return [("svc", (old or new).key)]


_CELLS: dict[str, Callable[[Any, Any], list[tuple[str, ...]]]] = {
    "services": _service_cells,
    "endpointslices": _slice_cells,
    "mcendpointslices": _slice_cells,
    "pods": _pod_cells,
    "namespaces": _namespace_cells,
    "serviceimports": _import_cells,
}

_STORE_ATTR = {
    "services": "services",
    "endpointslices": "endpointslices",
    "pods": "pods",
    "namespaces": "namespaces",
    "serviceimports": "service_imports",
    "mcendpointslices": "mcendpointslices",
}


class Prepared:
    """A full list of one resource made ready to install (see ``prepare_replace``)."""

    __slots__ = ("resource", "writes", "items", "store", "indexes", "touched", "changed")

    def __init__(self, resource: str, writes: int, items: dict[str, Any],
                 store: dict[str, Any], indexes: dict[str, Any],
                 touched: frozenset[tuple[str, ...]], changed: bool) -> None:
        self.resource = resource
        self.writes = writes      # the resource's write count when it was snapshotted
        self.items = items        # the list, for replace() if the snapshot is outdated
        self.store = store
        self.indexes = indexes    # ClusterCache attribute -> its new value
        self.touched = touched    # cell keys to bump
        self.changed = changed


def _group_slices(store: dict[str, Any]) -> tuple[dict[str, dict[str, Any]],
                                                  dict[str, tuple[Any, ...]]]:
    by_svc: dict[str, dict[str, Any]] = {}
    for es in store.values():
        group = by_svc.get(es.service_key)
        if group is None:
            group = by_svc[es.service_key] = {}
        group[es.key] = es
    return by_svc, {key: tuple(group.values()) for key, group in by_svc.items()}


def _build_indexes(resource: str, store: dict[str, Any]) -> dict[str, Any]:
    """The indexes :class:`ClusterCache` keeps for ``resource``, built from ``store``."""
    if resource == "services":
        by_ip = _MultiIndex()
        for svc in store.values():
            for ip in svc.cluster_ips:
                if ip and ip != "None":
                    by_ip.add(ip, svc)
        return {"_svc_by_cluster_ip": by_ip}
    if resource == "endpointslices":
        by_svc, merged = _group_slices(store)
        by_ip = _MultiIndex()
        for es in store.values():
            for a in es.addresses:
                by_ip.add(a.ip, es)
        return {"_slices_by_svc": by_svc, "endpoints": merged, "_slice_by_ip": by_ip}
    if resource == "mcendpointslices":
        by_svc, merged = _group_slices(store)
        return {"_mc_slices_by_svc": by_svc, "mc_endpoints": merged}
    if resource == "pods":
        by_ip = _MultiIndex()
        for pod in store.values():
            if pod.ip:
                by_ip.add(pod.ip, pod)
        return {"_pod_by_ip": by_ip}
    return {}
