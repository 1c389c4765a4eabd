"""Just enough OpenAPI v3 for kubectl to trust the sandbox with writes.

Before `kubectl create`/`apply`, kubectl asks /openapi/v3 whether the server validates
fields itself (the `fieldValidation` query parameter on the resource's PATCH operation);
if it does, kubectl leaves validation to the server instead of downloading full schemas.
The sandbox describes exactly that and no more: it does not validate object schemas.
"""

from __future__ import annotations

from typing import Any

from .resources import ALL, ResourceType


def _group_version_key(resource: ResourceType) -> str:
    return resource.group_version_path.lstrip("/")


def root() -> dict[str, Any]:
    keys = sorted({_group_version_key(r) for r in ALL})
    return {"paths": {key: {"serverRelativeURL": f"/openapi/v3/{key}"} for key in keys}}


def group_version(key: str) -> dict[str, Any] | None:
    members = [r for r in ALL if _group_version_key(r) == key]
    if not members:
        return None
    paths: dict[str, Any] = {}
    for resource in members:
        scope = "/namespaces/{namespace}" if resource.namespaced else ""
        item = f"{resource.group_version_path}{scope}/{resource.plural}/{{name}}"
        paths[item] = {"patch": _operation(resource, "patch")}
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }


def _operation(resource: ResourceType, action: str) -> dict[str, Any]:
    return {
        "operationId": f"{action}{resource.kind}",
        "parameters": [{"name": "fieldValidation", "in": "query",
                        "schema": {"type": "string", "uniqueItems": True}}],
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": resource.group,
                                            "version": resource.version,
                                            "kind": resource.kind},
    }
