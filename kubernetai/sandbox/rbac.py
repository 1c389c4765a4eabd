"""RBAC in the sandbox: the rules of ClusterRoles, and kube-apiserver's 403 for the rest.

`kubernetai sandbox --rbac FILE` loads the ClusterRoles of FILE and lets the sandbox's one
user, the service account ``kube-system:kubernetai``, do only what the union of their rules
allows, as if a ClusterRoleBinding bound each of them to it. That is how the tests prove
that the ClusterRole `kubernetai rbac` prints is enough for a server to sync, and that
nothing more is needed (every request outside it would be counted as a 403).

Requests are matched the way kube-apiserver's RBAC authorizer matches them
(`rbac/v1` ``VerbMatches``, ``APIGroupMatches``, ``ResourceMatches``,
``ResourceNameMatches``), with the request attributes its RequestInfo resolver gives
(`attributes`), before the request is routed: a resource the sandbox does not serve is
refused with 403 too, as kube-apiserver authorizes before it looks. Paths that name no
resource (discovery, health) are allowed to everyone (system:discovery,
system:public-info-viewer). Not modelled: ``nonResourceURLs`` rules (ignored),
``aggregationRule`` (the rules written are the rules used), Roles and RoleBindings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .status import ApiError

# Who the sandbox's requests come from, as the 403 message names them: the service account
# deploy/ binds the ClusterRole to.
USER = "system:serviceaccount:kube-system:kubernetai"
API_VERSION = "rbac.authorization.k8s.io/v1"


class RbacError(ValueError):
    """A file that holds no usable ClusterRole; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Attributes:
    """What RBAC decides on: a resource request as kube-apiserver's RequestInfo reads it."""

    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str | None = None
    name: str | None = None

    @property
    def combined(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


@dataclass(frozen=True, slots=True)
class Rule:
    """One PolicyRule of a ClusterRole (resource rules only)."""

    verbs: frozenset[str]
    api_groups: frozenset[str]
    resources: frozenset[str]
    resource_names: frozenset[str] = frozenset()

    def allows(self, request: Attributes) -> bool:
        """Whether this rule covers the request, `*` matching any verb, group or resource
        (and ``*/SUB`` any resource's subresource SUB)."""
        if not (_matches(self.verbs, request.verb)
                and _matches(self.api_groups, request.group)):
            return False
        if not (_matches(self.resources, request.combined)
                or (request.subresource and f"*/{request.subresource}" in self.resources)):
            return False
        return not self.resource_names or (
            bool(request.name) and request.name in self.resource_names)


@dataclass(frozen=True, slots=True)
class Policy:
    """The union of some ClusterRoles' rules: what the sandbox's user may do."""

    roles: tuple[str, ...]
    rules: tuple[Rule, ...]

    def allows(self, request: Attributes) -> bool:
        return any(rule.allows(request) for rule in self.rules)


_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch",
          "DELETE": "delete"}
# Paths under a namespace that are its own subresources, not resources in it.
_NAMESPACE_SUBRESOURCES = ("status", "finalize")


def attributes(method: str, path: str, query: Mapping[str, str]) -> Attributes | None:
    """A request's RBAC attributes, or None for a path that names no resource (discovery,
    health, ...), which everyone may read.

    As kube-apiserver's RequestInfo resolver, independent of what the server serves:
    ``/api/VERSION/...`` or ``/apis/GROUP/VERSION/...``, then ``namespaces/NS/`` for a
    namespaced path, the resource, the object's name and a subresource. A GET without a name
    is a list, or a watch with ``watch=true``; a request on one namespace object is in that
    namespace; a list or watch whose fieldSelector requires exactly ``metadata.name=X``
    names X.
    """
    parts = [part for part in path.strip("/").split("/") if part]
    if len(parts) >= 3 and parts[0] == "api":
        group, rest = "", parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        return None
    verb = _VERBS.get(method.upper(), method.lower())
    if rest[0] == "watch" and len(rest) > 1:  # the deprecated /watch/ prefix
        verb, rest = "watch", rest[1:]
    namespace = None
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else None
    subresource = rest[2] if len(rest) > 2 else ""
    if name is None and verb == "get":
        verb = "watch" if str(query.get("watch", "")).lower() in ("1", "true") else "list"
        if query.get("fieldSelector"):
            name = _required_name(query["fieldSelector"])
    elif name is None and verb == "delete":
        verb = "deletecollection"
    return Attributes(verb, group, resource, subresource, namespace, name)


def _required_name(field_selector: str) -> str | None:
    """X of a ``metadata.name=X`` (or ``==``) requirement, if X is a valid path segment."""
    for term in field_selector.split(","):
        key, _, value = term.partition("==") if "==" in term else term.partition("=")
        value = value.strip()
        if key.strip() == "metadata.name" and value not in ("", ".", "..") \
                and "/" not in value and "%" not in value:
            return value
    return None


def forbidden(request: Attributes) -> ApiError:
    """The 403 Status kube-apiserver answers a request RBAC does not allow with.

    As apiserver's ``responsewriters.Forbidden`` writes it: ``apierrors.NewForbidden`` of the
    group-qualified resource and the name, its message the authorizer's sentence.
    """
    scope = (f"in the namespace {_quoted(request.namespace)}" if request.namespace
             else "at the cluster scope")
    reason = (f"User {_quoted(USER)} cannot {request.verb} resource "
              f"{_quoted(request.combined)} in API group {_quoted(request.group)} {scope}")
    qualified = f"{request.resource}.{request.group}" if request.group else request.resource
    subject = f"{qualified} {_quoted(request.name)}" if request.name else qualified
    details: dict[str, Any] = {}
    if request.name:
        details["name"] = request.name
    if request.group:
        details["group"] = request.group
    details["kind"] = request.resource
    return ApiError(403, f"{subject} is forbidden: {reason}", details=details)


def load(paths: Sequence[str | Path]) -> Policy:
    """The union of the ClusterRoles in these YAML files (other kinds are skipped)."""
    import yaml

    roles: list[str] = []
    rules: list[Rule] = []
    for path in paths:
        try:
            text = Path(path).read_text()
            documents = list(yaml.safe_load_all(text))
        except (OSError, UnicodeDecodeError) as error:
            raise RbacError(f"{path}: cannot read: {error}") from None
        except yaml.YAMLError as error:
            raise RbacError(f"{path}: not YAML: {error}") from None
        found = from_documents(documents, str(path))
        roles += found.roles
        rules += found.rules
    return Policy(tuple(roles), tuple(rules))


def from_documents(documents: Iterable[Any], where: str = "rbac") -> Policy:
    """The union of the ClusterRoles among parsed YAML documents (Lists are opened)."""
    roles: list[str] = []
    rules: list[Rule] = []
    for document in _flatten(documents):
        if document.get("kind") != "ClusterRole":
            continue
        name = str((document.get("metadata") or {}).get("name") or "")
        if document.get("apiVersion") != API_VERSION:
            raise RbacError(f"{where}: ClusterRole {name!r}: apiVersion must be {API_VERSION}")
        roles.append(name)
        for index, rule in enumerate(document.get("rules") or []):
            parsed = _rule(rule, f"{where}: ClusterRole {name!r} rule {index + 1}")
            if parsed is not None:
                rules.append(parsed)
    if not roles:
        raise RbacError(f"{where}: no ClusterRole ({API_VERSION}) in it")
    return Policy(tuple(roles), tuple(rules))


def _flatten(documents: Iterable[Any]) -> Iterable[Mapping[str, Any]]:
    for document in documents:
        if not isinstance(document, Mapping):
            continue  # an empty document between two `---`
        if str(document.get("kind", "")).endswith("List") and "items" in document:
            yield from _flatten(document.get("items") or [])
        else:
            yield document


def _rule(rule: Any, where: str) -> Rule | None:
    """A PolicyRule as RBAC validation accepts it; None for a non-resource rule."""
    if not isinstance(rule, Mapping):
        raise RbacError(f"{where}: not a mapping")
    verbs = _strings(rule, "verbs", where)
    if not verbs:
        raise RbacError(f"{where}: verbs must have at least one entry")
    resources = _strings(rule, "resources", where)
    if not resources and rule.get("nonResourceURLs"):
        return None  # non-resource URLs (discovery) are allowed to everyone here
    groups = _strings(rule, "apiGroups", where)
    if not groups:
        raise RbacError(f"{where}: resource rules must supply at least one api group")
    return Rule(frozenset(verbs), frozenset(groups), frozenset(resources),
                frozenset(_strings(rule, "resourceNames", where)))


def _strings(rule: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = rule.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RbacError(f"{where}: {key} must be a list of strings")
    return value


def _matches(allowed: frozenset[str], requested: str) -> bool:
    return "*" in allowed or requested in allowed


def _quoted(text: str | None) -> str:
    """Go's %q for the names that appear here (ASCII names, a quote or backslash escaped)."""
    return json.dumps(text or "", ensure_ascii=False)
