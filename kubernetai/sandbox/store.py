"""The sandbox's object store: objects, one global resourceVersion, and a bounded event history.

kube-apiserver keeps objects in etcd with a cluster-wide revision counter, and serves watches
from a cache holding a limited window of recent events. Clients rely on three consequences,
all reproduced here: every write bumps one counter that orders all events; a watch may resume
from any resourceVersion still inside the window; and an older one is refused with 410 so the
client re-lists. Objects are kept as their JSON bytes plus the few fields selectors need,
so that 100,000 pods fit in memory and a list is a join of prepared byte strings.

The same window serves reads at a past resourceVersion (an exact list, a continue token):
the state then is the current one with the newer events undone, as etcd serves any revision
not yet compacted. `snapshot_state()`/`restore_state()` put the store back to a saved state
with its resourceVersion counter, as an etcd restore does; writes take `dry_run` to validate
and render without storing (kube-apiserver's dryRun=All).

Everything here runs on the reactor thread; the store has no locks.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import copy
import json
import re
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from kubernetai.pkg.selectors import FieldSelector, LabelSelector

from . import defaults
from .resources import ALL, NAMESPACES, SERVICES, ResourceType
from .status import (
    LIST_TOO_OLD,
    ApiError,
    already_exists,
    continue_expired,
    not_found,
    too_large,
    too_old,
)

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"

# The namespaces every cluster has.
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Stored:
    """One object as kept: its JSON and what selectors and routing need, nothing else."""

    key: str
    namespace: str
    name: str
    rv: int
    labels: Mapping[str, str]
    fields: Mapping[str, str]
    body: bytes

    def object(self) -> dict[str, Any]:
        return json.loads(self.body)

    def matches(self, namespace: str | None, labels: LabelSelector,
                fields: FieldSelector) -> bool:
        return ((namespace is None or self.namespace == namespace)
                and labels.matches(self.labels) and fields.matches(self.fields))


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    rv: int
    obj: Stored
    previous: Stored | None = None


@dataclass(slots=True)
class Page:
    items: list[Stored]
    rv: int
    continue_token: str = ""
    remaining: int | None = None


Listener = Callable[[Event], None]
# Called with the new resourceVersion whenever it moves (a write, an epoch, a restore).
ProgressListener = Callable[[int], None]


@dataclass(slots=True)
class _Table:
    """Objects and recent history of one resource type."""

    objects: dict[str, Stored] = field(default_factory=dict)
    history: deque[Event] = field(default_factory=deque)
    # Every event with rv > floor is still in `history`.
    floor: int = 0
    listeners: set[Listener] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class SavedState:
    """Every object and the resourceVersion at one moment: what a restart returns to.

    Stored objects are immutable, so a saved state shares them with the live store.
    """

    rv: int
    objects: Mapping[ResourceType, Mapping[str, Stored]]


def object_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


class Store:
    """All objects of one simulated cluster."""

    def __init__(self, *, history_size: int = 10_000, service_cidr: str = "10.96.0.0/12",
                 clock: Callable[[], float] = time.time) -> None:
        self.rv = 1
        self.history_size = history_size
        self.clock = clock
        self.allocator = defaults.ClusterIPAllocator(service_cidr)
        self.tables: dict[ResourceType, _Table] = {r: _Table() for r in ALL}
        self._snapshots: OrderedDict[tuple[ResourceType, int], list[Stored]] = OrderedDict()
        self._used_ips: Counter[str] = Counter()
        self.progress_listeners: set[ProgressListener] = set()
        for name in SYSTEM_NAMESPACES:
            self.apply(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                    "metadata": {"name": name}})

    # -- reading -----------------------------------------------------------------

    def get(self, resource: ResourceType, namespace: str, name: str) -> Stored:
        found = self.tables[resource].objects.get(object_key(namespace, name))
        if found is None:
            raise not_found(resource.plural, name, resource.group)
        return found

    def count(self, resource: ResourceType) -> int:
        return len(self.tables[resource].objects)

    def items(self, resource: ResourceType) -> Iterable[Stored]:
        return self.tables[resource].objects.values()

    def list(self, resource: ResourceType, *, namespace: str | None = None,
             labels: LabelSelector, fields: FieldSelector, limit: int = 0,
             continue_token: str = "", exact_rv: int | None = None) -> Page:
        """A consistent list: every page of a paginated list shows one resourceVersion.

        `exact_rv` lists the state at that resourceVersion (resourceVersionMatch=Exact, or a
        legacy paginated list with a resourceVersion), as etcd serves an old revision: 410
        once history is compacted past it, too large (504) if the store has not reached it.
        A continue token is served the same way at its own resourceVersion; a compacted one
        gets the 410 whose metadata.continue goes on at the latest state, and the token
        that 410 hands out (resourceVersion -1) is honoured.
        """
        if continue_token:
            token_rv, start = _decode_continue(continue_token)
            snapshot = self._continued(resource, token_rv, start)
            rv = self.rv if token_rv < 0 else token_rv
        else:
            rv = self.rv if exact_rv is None else exact_rv
            start, snapshot = "", self._snapshot(resource, rv)
        keys = _SortedKeys(snapshot)
        end = len(snapshot)
        index = keys.position(start)
        if namespace is not None:
            # A namespace's keys ("ns/name") are contiguous; "0" sorts right after "/".
            index = max(index, keys.position(namespace + "/"))
            end = keys.position(namespace + "0")
        items: list[Stored] = []
        while index < end and (limit <= 0 or len(items) < limit):
            stored = snapshot[index]
            index += 1
            if stored.matches(None, labels, fields):
                items.append(stored)
        page = Page(items, rv)
        if limit > 0 and index < end:
            page.continue_token = _encode_continue(rv, snapshot[index - 1].key + "\x00")
            if not labels.requirements and not fields.terms:
                page.remaining = end - index
        return page

    def _continued(self, resource: ResourceType, rv: int, start: str) -> list[Stored]:
        """The snapshot a continue token goes on with, or the etcd3 store's refusal."""
        if rv < 0:
            return self._snapshot(resource, self.rv)
        if rv > self.rv:
            raise too_large(rv, self.rv, 0)
        if rv < self.tables[resource].floor:
            raise continue_expired(_encode_continue(-1, start))
        return self._snapshot(resource, rv)

    def _snapshot(self, resource: ResourceType, rv: int) -> list[Stored]:
        key = (resource, rv)
        snapshot = self._snapshots.get(key)
        if snapshot is None:
            objects = self._state_at(resource, rv)
            snapshot = [objects[k] for k in sorted(objects)]
            self._snapshots[key] = snapshot
            while len(self._snapshots) > 16:
                self._snapshots.popitem(last=False)
        else:
            self._snapshots.move_to_end(key)
        return snapshot

    def _state_at(self, resource: ResourceType, rv: int) -> Mapping[str, Stored]:
        """The objects as they were at `rv`: the current ones with newer events undone."""
        table = self.tables[resource]
        if rv >= self.rv:
            if rv > self.rv:
                raise too_large(rv, self.rv, 0)
            return table.objects
        if rv < table.floor:
            raise ApiError(410, LIST_TOO_OLD)
        objects = dict(table.objects)
        for event in reversed(table.history):
            if event.rv <= rv:
                break
            if event.previous is None:
                objects.pop(event.obj.key, None)
            else:
                objects[event.obj.key] = event.previous
        return objects

    # -- history and watchers ----------------------------------------------------

    def floor(self, resource: ResourceType) -> int:
        return self.tables[resource].floor

    def events_since(self, resource: ResourceType, rv: int) -> list[Event]:
        """Events after `rv`, or 410 if some of them have left the history window."""
        table = self.tables[resource]
        if rv < table.floor:
            raise too_old(rv, table.floor)
        return [event for event in table.history if event.rv > rv]

    def subscribe(self, resource: ResourceType, listener: Listener) -> None:
        self.tables[resource].listeners.add(listener)

    def unsubscribe(self, resource: ResourceType, listener: Listener) -> None:
        self.tables[resource].listeners.discard(listener)

    def listeners(self, resource: ResourceType) -> set[Listener]:
        return self.tables[resource].listeners

    def expire_history(self) -> None:
        """Compact everything: watches and continue tokens from before now get 410.

        kube-apiserver's compactor writes one key (a new revision) and compacts below it;
        the same here, so that even a list or token taken at the current resourceVersion
        is from before the compaction and refused, as a client must be ready for.
        """
        self.rv += 1
        for table in self.tables.values():
            table.history.clear()
            table.floor = self.rv
        self._snapshots.clear()
        self._progressed()

    def new_epoch(self, jump: int = 1_000_000) -> None:
        """Move resourceVersions far ahead and drop history, as after an etcd restore."""
        self.rv += jump
        self.expire_history()

    def add_progress_listener(self, listener: ProgressListener) -> None:
        self.progress_listeners.add(listener)

    def remove_progress_listener(self, listener: ProgressListener) -> None:
        self.progress_listeners.discard(listener)

    def _progressed(self) -> None:
        if self.progress_listeners:
            for listener in list(self.progress_listeners):
                listener(self.rv)

    # -- saved states (restarts) ---------------------------------------------------

    def snapshot_state(self) -> SavedState:
        """The current objects and resourceVersion, to go back to with `restore_state`."""
        return SavedState(self.rv, {r: dict(t.objects) for r, t in self.tables.items()})

    def restore_state(self, state: SavedState) -> None:
        """Go back to a saved state, as a restart from manifests or an etcd restore does.

        Objects written since are lost, the resourceVersion counter goes back to the saved
        one (below what clients have seen since), and history starts afresh there: a watch
        from an older resourceVersion gets 410, from a newer one it waits for the store to
        catch up. Watchers are forgotten: the caller drops their connections.
        """
        self.rv = state.rv
        self.tables = {r: _Table(objects=dict(state.objects.get(r, {})), floor=state.rv)
                       for r in ALL}
        self._snapshots.clear()
        self._used_ips = Counter(ip for stored in self.tables[SERVICES].objects.values()
                                 for ip in _service_ips(stored.object()))
        self._progressed()

    # -- writing -----------------------------------------------------------------

    def create(self, resource: ResourceType, obj: dict[str, Any],
               namespace: str | None = None, *, owned: bool = False,
               dry_run: bool = False) -> Stored:
        obj = self._prepare(resource, obj, namespace, owned)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + f"{self.rv:x}"[-5:].rjust(5, "0")
        key = self._key(resource, meta)
        if key in self.tables[resource].objects:
            raise already_exists(resource.plural, meta["name"], resource.group)
        if resource.namespaced and meta["namespace"] not in self.tables[NAMESPACES].objects:
            raise not_found("namespaces", meta["namespace"])
        obj = defaults.on_create(resource, obj, now=self.clock(),
                                 used_cluster_ips=self._cluster_ips, allocator=self.allocator)
        if dry_run:
            # What kube-apiserver's dry-run create returns: no resourceVersion yet.
            obj["metadata"].pop("resourceVersion", None)
            return self._render(resource, obj, self.rv)
        return self._commit(resource, ADDED, obj, None)

    def replace(self, resource: ResourceType, obj: dict[str, Any],
                namespace: str | None = None, name: str | None = None, *,
                owned: bool = False, dry_run: bool = False) -> Stored:
        obj = self._prepare(resource, obj, namespace, owned)
        meta = obj["metadata"]
        if name is not None and meta.get("name") != name:
            raise ApiError(400, f"the name of the object ({meta.get('name')}) does not match "
                                f"the name on the URL ({name})")
        key = self._key(resource, meta)
        current = self.tables[resource].objects.get(key)
        if current is None:
            raise not_found(resource.plural, meta["name"], resource.group)
        wanted = meta.get("resourceVersion")
        if wanted and str(wanted) != str(current.rv):
            raise ApiError(409, f'Operation cannot be fulfilled on {resource.plural} '
                                f'"{meta["name"]}": the object has been modified; please apply '
                                "your changes to the latest version and try again")
        obj = defaults.on_update(resource, current.object(), obj)
        if dry_run:
            # The update as it would be stored, at the resourceVersion it has now.
            obj["metadata"]["resourceVersion"] = str(current.rv)
            return self._render(resource, obj, current.rv)
        return self._commit(resource, MODIFIED, obj, current)

    def patch(self, resource: ResourceType, namespace: str, name: str,
              patch: Mapping[str, Any], *, dry_run: bool = False) -> Stored:
        current = self.get(resource, namespace, name)
        if not isinstance(patch, Mapping):
            raise ApiError(400, "a merge patch must be a JSON object")
        merged = merge_patch(current.object(), patch)
        merged.setdefault("metadata", {})["resourceVersion"] = str(current.rv)
        return self.replace(resource, merged, namespace or None, name, owned=True,
                            dry_run=dry_run)

    def delete(self, resource: ResourceType, namespace: str, name: str, *,
               dry_run: bool = False) -> Stored:
        current = self.get(resource, namespace, name)
        if dry_run:
            return current  # kube-apiserver answers a dry-run delete with the object as is
        if resource is NAMESPACES:
            self._delete_contents(name)
        obj = current.object()
        return self._commit(resource, DELETED, obj, current)

    def apply(self, resource: ResourceType, obj: dict[str, Any], *, owned: bool = False) -> Stored:
        """Create or replace regardless of resourceVersion, creating a missing namespace.

        This is the loader's and the tests' convenience; the HTTP API stays strict. `owned`
        says the caller hands the object over, so it need not be copied (bulk loads).
        """
        obj = self._prepare(resource, obj, None, owned)
        meta = obj["metadata"]
        meta.pop("resourceVersion", None)
        if resource.namespaced and meta["namespace"] not in self.tables[NAMESPACES].objects:
            self.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                     "metadata": {"name": meta["namespace"]}})
        if self._key(resource, meta) in self.tables[resource].objects:
            return self.replace(resource, obj, owned=True)
        return self.create(resource, obj, owned=True)

    def _delete_contents(self, namespace: str) -> None:
        for resource, table in self.tables.items():
            if not resource.namespaced:
                continue
            for stored in [s for s in table.objects.values() if s.namespace == namespace]:
                self._commit(resource, DELETED, stored.object(), stored)

    def _prepare(self, resource: ResourceType, obj: Any, namespace: str | None,
                 owned: bool = False) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise ApiError(400, "the body of the request was in an unknown format")
        kind = obj.get("kind")
        if kind and kind != resource.kind:
            raise ApiError(400, f"the API version in the data ({obj.get('apiVersion')}) and "
                                f"kind ({kind}) do not match the {resource.plural} endpoint")
        if not owned:
            obj = copy.deepcopy(obj)
        obj["kind"], obj["apiVersion"] = resource.kind, resource.api_version
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "metadata must be an object")
        if resource.namespaced:
            body_ns = meta.get("namespace")
            if namespace and body_ns and body_ns != namespace:
                raise ApiError(400, "the namespace of the provided object does not match the "
                                    "namespace sent on the request")
            meta["namespace"] = namespace or body_ns or "default"
        else:
            meta.pop("namespace", None)
        name = meta.get("name")
        if name is None and meta.get("generateName"):
            return obj
        if not isinstance(name, str) or not name:
            raise ApiError(422, f"{resource.kind} \"\" is invalid: metadata.name: Required value: "
                                "name or generateName is required")
        if len(name) > 253 or not _NAME.match(name):
            raise ApiError(422, f'{resource.kind} "{name}" is invalid: metadata.name: Invalid '
                                "value: must be a lowercase RFC 1123 subdomain")
        return obj

    def _key(self, resource: ResourceType, meta: Mapping[str, Any]) -> str:
        return object_key(meta.get("namespace", "") if resource.namespaced else "", meta["name"])

    def _cluster_ips(self) -> Iterable[str]:
        return self._used_ips.keys()

    def _track_cluster_ips(self, resource: ResourceType, obj: dict[str, Any] | None,
                           previous: Stored | None) -> None:
        """Keep the set of ClusterIPs in use current, so allocation needs no scan."""
        if resource is not SERVICES:
            return
        if previous is not None:
            for ip in _service_ips(previous.object()):
                self._used_ips[ip] -= 1
                if self._used_ips[ip] <= 0:
                    del self._used_ips[ip]
        if obj is not None:
            for ip in _service_ips(obj):
                self._used_ips[ip] += 1

    def _render(self, resource: ResourceType, obj: dict[str, Any], rv: int) -> Stored:
        meta = obj["metadata"]
        return Stored(
            key=self._key(resource, meta),
            namespace=meta.get("namespace", "") if resource.namespaced else "",
            name=meta["name"],
            rv=rv,
            labels=dict(meta.get("labels") or {}),
            fields=resource.field_values(obj),
            body=dumps(obj),
        )

    def _commit(self, resource: ResourceType, kind: str, obj: dict[str, Any],
                previous: Stored | None) -> Stored:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        stored = self._render(resource, obj, self.rv)
        table = self.tables[resource]
        self._track_cluster_ips(resource, None if kind == DELETED else obj, previous)
        if kind == DELETED:
            del table.objects[stored.key]
        else:
            table.objects[stored.key] = stored
        event = Event(kind, self.rv, stored, previous)
        table.history.append(event)
        while len(table.history) > self.history_size:
            table.floor = table.history.popleft().rv
        for listener in list(table.listeners):
            listener(event)
        self._progressed()
        return stored


def _service_ips(obj: Mapping[str, Any]) -> set[str]:
    spec = obj.get("spec") or {}
    ips = set(spec.get("clusterIPs") or [])
    if spec.get("clusterIP"):
        ips.add(spec["clusterIP"])
    ips.discard("None")
    return ips


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, null deletes, everything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class _SortedKeys:
    """Binary search over a key-sorted snapshot without copying its keys."""

    __slots__ = ("_snapshot",)

    def __init__(self, snapshot: list[Stored]) -> None:
        self._snapshot = snapshot

    def __len__(self) -> int:
        return len(self._snapshot)

    def __getitem__(self, index: int) -> str:
        return self._snapshot[index].key

    def position(self, key: str) -> int:
        return bisect.bisect_left(self, key)  # type: ignore[arg-type]


def _encode_continue(rv: int, start: str) -> str:
    """kube-apiserver's token: unpadded base64url JSON of version, resourceVersion, start key.

    Clients treat it as opaque; rv -1 means "go on at the latest state" (after a 410).
    """
    token = {"v": "meta.k8s.io/v1", "rv": rv, "start": start}
    return base64.urlsafe_b64encode(dumps(token)).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode((token + "=" * (-len(token) % 4)).encode())
        data = json.loads(raw)
        if data.get("v") != "meta.k8s.io/v1" or int(data["rv"]) == 0:
            raise ValueError("not a meta.k8s.io/v1 token")
        return int(data["rv"]), str(data["start"])
    except (binascii.Error, ValueError, KeyError, TypeError, AttributeError):
        raise ApiError(400, "continue key is not valid: incorrect encoded start "
                            "resourceVersion (version meta.k8s.io/v1)") from None
