"""What kube-apiserver fills in on create and update, done the same way here.

A manifest written by hand has no uid, no creationTimestamp and often no ClusterIP; a real
API server adds them, and clients (and our DNS records) depend on them being there.
"""

from __future__ import annotations

import ipaddress
import time
import uuid
from typing import Any, Callable, Iterable

from .resources import NAMESPACES, SERVICES, ResourceType
from .status import ApiError


def rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class ClusterIPAllocator:
    """Hands out ClusterIPs from the service CIDR, lowest free address first."""

    def __init__(self, cidr: str = "10.96.0.0/12") -> None:
        self.network = ipaddress.ip_network(cidr)

    def allocate(self, in_use: Iterable[str]) -> str:
        used = set(in_use)
        # .0 is the network address, .1 is conventionally the `kubernetes` service.
        for offset in range(10, self.network.num_addresses - 1):
            candidate = str(self.network.network_address + offset)
            if candidate not in used:
                return candidate
        raise ApiError(500, f"range is full: no free ClusterIP in {self.network}")


def on_create(resource: ResourceType, obj: dict[str, Any], *, now: float,
              used_cluster_ips: Callable[[], Iterable[str]],
              allocator: ClusterIPAllocator) -> dict[str, Any]:
    """Set server-owned fields on a new object (the caller's own copy, changed in place)."""
    meta = obj.setdefault("metadata", {})
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = rfc3339(now)
    meta["generation"] = 1
    meta.pop("deletionTimestamp", None)
    if resource is SERVICES:
        _default_service(obj, used_cluster_ips, allocator)
    elif resource is NAMESPACES:
        _default_namespace(obj)
    return obj


def on_update(resource: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Keep server-owned fields across a replace and bump generation on a spec change.

    `new` is the caller's own copy and is changed in place.
    """
    meta = new.setdefault("metadata", {})
    old_meta = old.get("metadata", {})
    for field in ("uid", "creationTimestamp", "name", "namespace"):
        if field in old_meta:
            meta[field] = old_meta[field]
    generation = old_meta.get("generation", 1)
    if new.get("spec") != old.get("spec"):
        generation += 1
    meta["generation"] = generation
    if resource is SERVICES:
        _keep_cluster_ip(old, new)
    elif resource is NAMESPACES:
        _default_namespace(new)
    return new


def _default_service(obj: dict[str, Any], used: Callable[[], Iterable[str]],
                     allocator: ClusterIPAllocator) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        if spec["type"] != "ExternalName":
            port.setdefault("targetPort", port.get("port"))
    if spec["type"] == "ExternalName":
        return
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    if not ips:
        ips = [allocator.allocate(used())]
    spec["clusterIP"] = ips[0]
    spec["clusterIPs"] = ips
    if ips[0] != "None":
        families = ["IPv6" if ":" in ip else "IPv4" for ip in ips]
        spec.setdefault("ipFamilies", families)
        spec.setdefault("ipFamilyPolicy", "SingleStack" if len(ips) == 1 else "PreferDualStack")
    obj.setdefault("status", {"loadBalancer": {}})


def _keep_cluster_ip(old: dict[str, Any], new: dict[str, Any]) -> None:
    """A ClusterIP is immutable; an update that leaves it out keeps the old one."""
    old_spec, spec = old.get("spec", {}), new.setdefault("spec", {})
    if old_spec.get("type") == "ExternalName" or spec.get("type") == "ExternalName":
        return
    if not spec.get("clusterIP") and old_spec.get("clusterIP"):
        spec["clusterIP"] = old_spec["clusterIP"]
        spec["clusterIPs"] = old_spec.get("clusterIPs", [old_spec["clusterIP"]])
    elif spec.get("clusterIP") and old_spec.get("clusterIP") not in (None, spec["clusterIP"]):
        raise ApiError(422, f'Service "{new["metadata"].get("name")}" is invalid: '
                            "spec.clusterIPs[0]: Invalid value: field is immutable")


def _default_namespace(obj: dict[str, Any]) -> None:
    name = obj["metadata"]["name"]
    obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    obj.setdefault("spec", {"finalizers": ["kubernetes"]})
    obj.setdefault("status", {"phase": "Active"})
