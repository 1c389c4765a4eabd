"""The resource types the sandbox serves, and the discovery documents that describe them.

Clients (the official Python client, kubectl, our informer) find resources through
discovery and then address them by group, version and plural name. One table here feeds
the router, the discovery endpoints and the manifest loader, so the three cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-kubernetai-sandbox",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23.4",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True, slots=True)
class ResourceType:
    """One REST resource: where it lives and which selector fields it supports."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    # Field selectors kube-apiserver accepts for this resource, beyond metadata.*.
    extra_fields: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version_path(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def selectable_fields(self) -> tuple[str, ...]:
        return ("metadata.name", "metadata.namespace") + self.extra_fields

    def field_values(self, obj: Mapping[str, Any]) -> dict[str, str]:
        """The values field selectors compare, taken once when an object is stored."""
        meta = obj.get("metadata") or {}
        values = {
            "metadata.name": meta.get("name", ""),
            "metadata.namespace": meta.get("namespace", ""),
        }
        for path in self.extra_fields:
            node: Any = obj
            for part in path.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            values[path] = "" if node is None else str(node)
        return values

    def discovery_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(_VERBS),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        return entry


NAMESPACES = ResourceType("", "v1", "namespaces", "namespace", "Namespace", False, ("ns",),
                          ("status.phase",))
SERVICES = ResourceType("", "v1", "services", "service", "Service", True, ("svc",),
                        ("spec.clusterIP", "spec.type"))
ENDPOINTS = ResourceType("", "v1", "endpoints", "endpoints", "Endpoints", True, ("ep",))
PODS = ResourceType("", "v1", "pods", "pod", "Pod", True, ("po",),
                    ("status.phase", "spec.nodeName", "status.podIP"))
ENDPOINT_SLICES = ResourceType("discovery.k8s.io", "v1", "endpointslices", "endpointslice",
                               "EndpointSlice", True, (), ("addressType",))
SERVICE_IMPORTS = ResourceType("multicluster.x-k8s.io", "v1alpha1", "serviceimports",
                               "serviceimport", "ServiceImport", True, ("svcim",))

ALL: tuple[ResourceType, ...] = (
    NAMESPACES, SERVICES, ENDPOINTS, PODS, ENDPOINT_SLICES, SERVICE_IMPORTS,
)

_BY_PATH = {(r.group, r.version, r.plural): r for r in ALL}
_BY_KIND = {(r.api_version, r.kind): r for r in ALL}


def by_path(group: str, version: str, plural: str) -> ResourceType | None:
    return _BY_PATH.get((group, version, plural))


def by_kind(api_version: str, kind: str) -> ResourceType | None:
    return _BY_KIND.get((api_version, kind))


def groups() -> dict[str, list[ResourceType]]:
    """Resources of each non-core API group, keyed by group name."""
    found: dict[str, list[ResourceType]] = {}
    for r in ALL:
        if r.group:
            found.setdefault(r.group, []).append(r)
    return found


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _group_document(name: str, members: list[ResourceType]) -> dict[str, Any]:
    version = {"groupVersion": members[0].api_version, "version": members[0].version}
    return {"name": name, "versions": [version], "preferredVersion": version}


def api_group_list() -> dict[str, Any]:
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group_document(name, members) for name, members in groups().items()],
    }


def api_group(name: str) -> dict[str, Any] | None:
    members = groups().get(name)
    if not members:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_document(name, members)}


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    members = [r for r in ALL if r.group == group and r.version == version]
    if not members:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": members[0].api_version,
        "resources": [r.discovery_entry() for r in members],
    }
