"""`kubernetai rbac`: the ClusterRoles a Corefile's `kubernetai` stanzas need, as YAML.

What a stanza asks its API server for is decided in one place,
`kubernetai.plugins.kubernetai.controller.watched_for` (services and namespaces always,
EndpointSlices unless `noendpoints`, pods with `pods verified`, ServiceImports with
`multicluster`); the ClusterRoles are derived from it, so a deployment's RBAC cannot drift
from what the code lists and watches (`tests/test_rbac.py` runs a server against a
simulated API server enforcing exactly this output).

One ClusterRole per API server connection, because each connection is one identity that a
binding grants to: the in-cluster service account, an `endpoint` URL, or a `kubeconfig`
file and context. Stanzas sharing a connection share its ClusterRole, which holds the union
of their needs. Nothing is connected to and no credential is read: the kubeconfig and
certificate files a Corefile names need not exist where the command runs (in CI, say).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GROUP_ORDER", "RoleDoc", "Rule", "VERBS", "add_command", "render", "rules_for"]

VERBS = ("list", "watch")
# API groups in the order their rules are written; a group not listed here would follow.
GROUP_ORDER = ("", "discovery.k8s.io", "multicluster.x-k8s.io")
LABELS = {"app.kubernetes.io/name": "kubernetai"}
DEFAULT_NAME = "kubernetai"


@dataclass(frozen=True, slots=True)
class Rule:
    """One PolicyRule: these resources of one API group, listed and watched."""

    api_group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...] = VERBS

    def manifest(self) -> dict[str, Any]:
        return {"apiGroups": [self.api_group], "resources": list(self.resources),
                "verbs": list(self.verbs)}


@dataclass(slots=True)
class RoleDoc:
    """The ClusterRole of one API server connection and the stanzas that use it."""

    connection: str  # "in-cluster", "endpoint URL" or "kubeconfig PATH [CONTEXT]"
    stanzas: list[str] = field(default_factory=list)  # "FILE:LINE ZONES...", Corefile order
    rules: list[Rule] = field(default_factory=list)

    def manifest(self, name: str) -> dict[str, Any]:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name, "labels": dict(LABELS)},
            "rules": [rule.manifest() for rule in self.rules],
        }


def rules_for(plans: Iterable[Any], *, blocks: Sequence[Any] | None = None) -> list[RoleDoc]:
    """One RoleDoc per distinct connection of the plans' `kubernetai` stanzas, in the order
    the connections are first used.

    `plans` are `kubernetai.app.load` PortPlans (compiled, not necessarily connected). A
    plan lists its blocks by port; `blocks`, the parsed server blocks, puts them back in
    Corefile order (without it, plan order, which is Corefile order on a single port).
    """
    from kubernetai.plugins.kubernetai.controller import watched_for

    docs: dict[tuple[str, ...], RoleDoc] = {}
    needs: dict[tuple[str, ...], dict[str, set[str]]] = {}
    for config in _stanza_configs(plans, blocks):
        key, label = connection_of(config)
        doc = docs.setdefault(key, RoleDoc(label))
        doc.stanzas.append(f"{config.filename}:{config.line} {' '.join(config.zones)}")
        groups = needs.setdefault(key, {})
        for watched in watched_for(config).values():
            groups.setdefault(api_group(watched.resource), set()).add(watched.resource)
    for key, doc in docs.items():
        groups = needs[key]
        order = [g for g in GROUP_ORDER if g in groups] + sorted(set(groups) - set(GROUP_ORDER))
        doc.rules = [Rule(group, tuple(sorted(groups[group]))) for group in order]
    return list(docs.values())


def render(docs: Sequence[RoleDoc], name: str = DEFAULT_NAME) -> str:
    """The YAML stream: each ClusterRole after one comment line per stanza using it; the
    first named `name`, the next ones `name-2`, `name-3`, ..."""
    import yaml

    parts = []
    for index, doc in enumerate(docs):
        role = name if index == 0 else f"{name}-{index + 1}"
        comments = "".join(f"# {_printable(stanza)} ({_printable(doc.connection)})\n"
                           for stanza in doc.stanzas)
        parts.append(comments + yaml.safe_dump(doc.manifest(role), sort_keys=False,
                                               default_flow_style=False))
    return "---\n".join(parts)


def connection_of(config: Any) -> tuple[tuple[str, ...], str]:
    """(what tells connections apart, how to name it) for one stanza's options.

    As `kube_client_config` chooses: `kubeconfig` first (its file, wherever it is written
    from, and context), then `endpoint`, else in-cluster.
    """
    if config.kubeconfig is not None:
        path, context = config.kubeconfig
        label = f"kubeconfig {path}" + (f" {context}" if context else "")
        return ("kubeconfig", os.path.normpath(os.path.abspath(path)), context or ""), label
    if config.endpoint is not None:
        return ("endpoint", config.endpoint), f"endpoint {config.endpoint}"
    return ("in-cluster",), "in-cluster"


def api_group(resource: str) -> str:
    """The API group of a resource the informers watch, from the path they request."""
    from kubernetai.plugins.kubernetai.k8sapi import PATHS

    parts = PATHS[resource].strip("/").split("/")
    return "" if parts[0] == "api" else parts[1]


def _stanza_configs(plans: Iterable[Any], blocks: Sequence[Any] | None) -> list[Any]:
    """Every `kubernetai` stanza's options, once each, in Corefile order."""
    from kubernetai.plugins.kubernetai.controller import Cluster

    builders: list[Any] = []
    for plan in plans:
        for served in plan.blocks:
            if not any(served.builder is b for b in builders):
                builders.append(served.builder)
    if blocks is not None:
        index = {id(block): i for i, block in enumerate(blocks)}
        builders.sort(key=lambda builder: index.get(id(builder.block), len(index)))
    clusters: list[Any] = []
    for builder in builders:
        for entry in builder.sources:
            source = entry.source
            if isinstance(source, Cluster) and not any(source is c for c in clusters):
                clusters.append(source)
    return [cluster.config for cluster in clusters]


def _printable(text: str) -> str:
    """A file name or URL fit for a one-line YAML comment."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# -- the command ----------------------------------------------------------------------


def add_command(subparsers: Any) -> None:
    """Register `rbac` on the console script's subparsers."""
    rbac = subparsers.add_parser(
        "rbac", help="print the ClusterRole(s) a Corefile's stanzas need",
        description="Print, as a YAML stream, one ClusterRole per API server connection "
                    "the Corefile's kubernetai stanzas use (in-cluster, endpoint URL or "
                    "kubeconfig), with exactly the resources and verbs they list and watch. "
                    "Connects nowhere and reads no credentials. Exit 1 with FILE:LINE: "
                    "message on a Corefile error.")
    rbac.add_argument("--corefile", required=True, metavar="FILE", help="the Corefile")
    rbac.add_argument("--name", default=DEFAULT_NAME, type=_role_name, metavar="NAME",
                      help="the first ClusterRole's name; the next ones get NAME-2, "
                           f"NAME-3, ... (default {DEFAULT_NAME})")
    rbac.set_defaults(run=run_rbac)


def _role_name(text: str) -> str:
    """An argparse type: a name kube-apiserver takes for a ClusterRole (a path segment)."""
    if text in ("", ".", "..") or any(c in "/%" or c.isspace() or not c.isprintable()
                                      for c in text):
        raise argparse.ArgumentTypeError(
            f"not a ClusterRole name: {text!r} (no '/', '%' or spaces; not '.' or '..')")
    return text


def run_rbac(args: argparse.Namespace) -> int:
    """Print the ClusterRoles for `args.corefile`; 1 and FILE:LINE: message if it is wrong."""
    import kubernetai.corefile as corefile
    from kubernetai.app.load import compile_corefile

    try:
        blocks = corefile.parse_file(args.corefile)
        if not blocks:
            raise corefile.CorefileError(str(args.corefile), 1, "no server blocks in the Corefile")
        # Set up as `check` does, but not connected: no credentials are needed.
        plans = compile_corefile(blocks)
    except corefile.CorefileError as error:
        print(error, file=sys.stderr)
        return 1
    docs = rules_for(plans, blocks=blocks)
    if not docs:
        print(f"{args.corefile}: no kubernetai stanza: no API server access is needed",
              file=sys.stderr)
        return 0
    sys.stdout.write(render(docs, args.name))
    return 0
