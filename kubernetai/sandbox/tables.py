"""The `Table` form of lists and objects, as kube-apiserver serves it to `kubectl get`.

kubectl asks for `application/json;as=Table;v=v1;g=meta.k8s.io` (with v1beta1 and plain JSON
as fall-backs) and prints the columns the server sends; without them it prints only NAME
and AGE. kube-apiserver builds those columns with the printers of
pkg/printers/internalversion/printers.go, always in their wide form (kubectl hides the
columns of priority 1 unless `-o wide`); a custom resource without printer columns gets
the apiextensions default, Name and an Age of type date. Cells are rendered the way those
printers render them: `<none>` and `<unset>` placeholders, "+ N more..." after three
entries, ages in duration.HumanDuration's short form. `includeObject` chooses what each
row carries: PartialObjectMetadata (the default), the whole object, or nothing.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping

from .resources import (
    ENDPOINT_SLICES,
    ENDPOINTS,
    NAMESPACES,
    PODS,
    SERVICE_IMPORTS,
    SERVICES,
    ResourceType,
)
from .status import ApiError

TABLE_GROUP = "meta.k8s.io"
TABLE_VERSIONS = ("v1", "v1beta1")
INCLUDE_OBJECT = ("Metadata", "Object", "None")

# Column descriptions are the API's field documentation, as the printers take them
# from the generated SwaggerDoc.
_NAME_DOC = ("Name must be unique within a namespace. Is required when creating resources, "
             "although some resources may allow a client to request the generation of an "
             "appropriate name automatically. Name is primarily intended for creation "
             "idempotence and configuration definition. Cannot be updated. More info: "
             "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names")
_AGE_DOC = ("CreationTimestamp is a timestamp representing the server time when this object "
            "was created. It is not guaranteed to be set in happens-before order across "
            "separate operations. Clients may not set this value. It is represented in "
            "RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for "
            "lists. More info: https://git.k8s.io/community/contributors/devel/"
            "sig-architecture/api-conventions.md#metadata")


@dataclass(frozen=True, slots=True)
class Column:
    """One metav1.TableColumnDefinition."""

    name: str
    type: str = "string"
    description: str = ""
    priority: int = 0
    format: str = ""

    def definition(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "format": self.format,
                "description": self.description, "priority": self.priority}


_NAME = Column("Name", format="name", description=_NAME_DOC)
_AGE = Column("Age", description=_AGE_DOC)

COLUMNS: dict[ResourceType, tuple[Column, ...]] = {
    PODS: (
        _NAME,
        Column("Ready", description="The aggregate readiness state of this pod for accepting "
                                    "traffic."),
        Column("Status", description="The aggregate status of the containers in this pod."),
        Column("Restarts", description="The number of times the containers in this pod have "
                                       "been restarted and when the last container in this "
                                       "pod has restarted."),
        _AGE,
        Column("IP", priority=1, description="podIP address allocated to the pod. Routable at "
                                             "least within the cluster. Empty if not yet "
                                             "allocated."),
        Column("Node", priority=1, description="NodeName indicates in which node this pod is "
                                               "scheduled."),
        Column("Nominated Node", priority=1,
               description="nominatedNodeName is set only when this pod preempts other pods "
                           "on the node, but it cannot be scheduled right away as preemption "
                           "victims receive their graceful termination periods."),
        Column("Readiness Gates", priority=1,
               description="If specified, all readiness gates will be evaluated for pod "
                           "readiness."),
    ),
    SERVICES: (
        _NAME,
        Column("Type", description="type determines how the Service is exposed. Defaults to "
                                   "ClusterIP."),
        Column("Cluster-IP", description="clusterIP is the IP address of the service and is "
                                         "usually assigned randomly."),
        Column("External-IP", description="externalIPs is a list of IP addresses for which "
                                          "nodes in the cluster will also accept traffic for "
                                          "this service."),
        Column("Port(s)", description="The list of ports that are exposed by this service."),
        _AGE,
        Column("Selector", priority=1,
               description="Route service traffic to pods with label keys and values "
                           "matching this selector."),
    ),
    ENDPOINTS: (
        _NAME,
        Column("Endpoints", description="The set of all endpoints is the union of all "
                                        "subsets."),
        _AGE,
    ),
    ENDPOINT_SLICES: (
        _NAME,
        Column("AddressType", description="addressType specifies the type of address carried "
                                          "by this EndpointSlice."),
        Column("Ports", description="ports specifies the list of network ports exposed by "
                                    "each endpoint in this slice."),
        Column("Endpoints", description="endpoints is a list of unique endpoints in this "
                                        "slice."),
        _AGE,
    ),
    NAMESPACES: (
        _NAME,
        Column("Status", description="The status of the namespace"),
        _AGE,
    ),
    # A custom resource definition without additionalPrinterColumns.
    SERVICE_IMPORTS: (_NAME, Column("Age", type="date", description=_AGE_DOC)),
}


@dataclass(frozen=True, slots=True)
class TableOptions:
    """What a request asked for: which Table version, and what each row carries."""

    group_version: str
    include_object: str = "Metadata"


# -- negotiation -------------------------------------------------------------------------


def negotiate(accept: str | None) -> str | None:
    """The Table version the Accept header asks for first, or None for plain JSON.

    Clauses are tried by quality, wildcards last, the first one the server can produce
    wins (apimachinery's NegotiateMediaTypeOptions): a Table in meta.k8s.io v1 or v1beta1
    as JSON, or plain JSON. Clauses asking for other conversions or media types are
    skipped; when nothing matches, the sandbox answers plain JSON.
    """
    for media, params in _clauses(accept or ""):
        kind, _, subtype = media.partition("/")
        if not (kind in ("application", "*") and subtype in ("json", "*")):
            continue
        target = params.get("as")
        if target is None:
            return None
        if (target == "Table" and params.get("g") == TABLE_GROUP
                and params.get("v") in TABLE_VERSIONS):
            return f"{TABLE_GROUP}/{params['v']}"
    return None


def _clauses(accept: str) -> list[tuple[str, dict[str, str]]]:
    parsed = []
    for position, clause in enumerate(accept.split(",")):
        media, *raw_params = [part.strip() for part in clause.split(";")]
        if not media:
            continue
        params: dict[str, str] = {}
        for raw in raw_params:
            key, _, value = raw.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        try:
            quality = float(params.pop("q", "1"))
        except ValueError:
            quality = 0.0
        if quality <= 0:
            continue
        kind, _, subtype = media.lower().partition("/")
        order = (-quality, kind == "*", subtype == "*", position)
        parsed.append((order, media.lower(), params))
    return [(media, params) for _, media, params in sorted(parsed)]


def table_options(accept: str | None, include_object: str | None) -> TableOptions | None:
    """TableOptions for a read whose Accept header asks for a Table, else None."""
    group_version = negotiate(accept)
    if group_version is None:
        return None
    include = include_object or "Metadata"
    if include not in INCLUDE_OBJECT:
        raise ApiError(400, f'unrecognized includeObject value: "{include_object}"')
    return TableOptions(group_version, include)


# -- tables ------------------------------------------------------------------------------


def table(resource: ResourceType, objects: Iterable[Mapping[str, Any]], *,
          options: TableOptions, list_meta: Mapping[str, Any], now: float,
          headers: bool = True) -> dict[str, Any]:
    """A meta.k8s.io Table of `objects` (decoded API objects) with their rows and columns.

    Without headers, columnDefinitions is null: what the watch sends after its first event.
    """
    columns = COLUMNS[resource]
    return {
        "kind": "Table",
        "apiVersion": options.group_version,
        "metadata": dict(list_meta),
        "columnDefinitions": [c.definition() for c in columns] if headers else None,
        "rows": [_row(resource, obj, options, now) for obj in objects],
    }


def object_table(resource: ResourceType, obj: Mapping[str, Any], *, options: TableOptions,
                 now: float, headers: bool = True) -> dict[str, Any]:
    """The Table of one object (a GET or a watch event), at the object's resourceVersion."""
    meta = {"resourceVersion": (obj.get("metadata") or {}).get("resourceVersion", "")}
    return table(resource, [obj], options=options, list_meta=meta, now=now, headers=headers)


def encode_objects(resource: ResourceType, bodies: Iterable[bytes], *, options: TableOptions,
                   list_meta: Mapping[str, Any], now: float) -> bytes:
    """The Table of stored objects (their JSON bodies), encoded for the wire."""
    objects = [json.loads(body) for body in bodies]
    return _dumps(table(resource, objects, options=options, list_meta=list_meta, now=now))


def watch_renderer(resource: ResourceType, options: TableOptions,
                   clock: Callable[[], float]) -> Callable[[bytes], bytes]:
    """Turns each watched object into a one-row Table; only the first carries columns."""
    sent_headers = False

    def render(body: bytes) -> bytes:
        nonlocal sent_headers
        rendered = object_table(resource, json.loads(body), options=options, now=clock(),
                                headers=not sent_headers)
        sent_headers = True
        return _dumps(rendered)
    return render


def _dumps(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _row(resource: ResourceType, obj: Mapping[str, Any], options: TableOptions,
         now: float) -> dict[str, Any]:
    row: dict[str, Any] = {"cells": _CELLS[resource](obj, now)}
    if resource is PODS:
        conditions = _pod_row_conditions(obj)
        if conditions:
            row["conditions"] = conditions
    if options.include_object == "Object":
        row["object"] = obj
    elif options.include_object == "None":
        row["object"] = None
    else:
        row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": options.group_version,
                         "metadata": obj.get("metadata") or {}}
    return row


# -- cells -------------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration: about two significant figures, short units."""
    whole = int(seconds)
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        rest = whole % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = whole // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        rest = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if rest == 0 else f"{years}y{rest}d"
    return f"{hours // 24 // 365}y"


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _since(value: Any, now: float) -> str:
    """translateTimestampSince: the age of a timestamp, or <unknown> without one."""
    stamp = _timestamp(value)
    return "<unknown>" if stamp is None else human_duration(now - stamp)


def _age(obj: Mapping[str, Any], now: float) -> str:
    return _since((obj.get("metadata") or {}).get("creationTimestamp"), now)


def _name(obj: Mapping[str, Any]) -> str:
    return (obj.get("metadata") or {}).get("name", "")


def format_labels(labels: Mapping[str, Any] | None) -> str:
    """labels.FormatLabels: sorted key=value pairs, or <none>."""
    if not labels:
        return "<none>"
    return ",".join(f"{key}={labels[key]}" for key in sorted(labels))


def _more(items: list[str], count: int, limit: int = 3) -> tuple[str, bool]:
    joined = ",".join(items[:limit])
    if count > limit:
        return f"{joined} + {count - limit} more...", True
    return joined, False


def _list_with_more(items: list[str]) -> str:
    """listWithMoreString: at most three entries, then "+ N more...", <unset> when empty."""
    text, _ = _more(items, len(items))
    return text or "<unset>"


def _namespace_cells(obj: Mapping[str, Any], now: float) -> list[Any]:
    phase = (obj.get("status") or {}).get("phase", "")
    return [_name(obj), phase, _age(obj, now)]


def _service_cells(obj: Mapping[str, Any], now: float) -> list[Any]:
    spec = obj.get("spec") or {}
    cluster_ips = spec.get("clusterIPs") or []
    ports = _port_string(spec.get("ports") or [])
    return [_name(obj), spec.get("type", ""), cluster_ips[0] if cluster_ips else "<none>",
            _service_external_ip(obj), ports or "<none>", _age(obj, now),
            format_labels(spec.get("selector"))]


def _port_string(ports: list[Mapping[str, Any]]) -> str:
    pieces = []
    for port in ports:
        protocol = port.get("protocol", "")
        node_port = port.get("nodePort") or 0
        if node_port > 0:
            pieces.append(f"{port.get('port', 0)}:{node_port}/{protocol}")
        else:
            pieces.append(f"{port.get('port', 0)}/{protocol}")
    return ",".join(pieces)


def _service_external_ip(obj: Mapping[str, Any]) -> str:
    """getServiceExternalIP, in its wide form (the server always prints wide)."""
    spec = obj.get("spec") or {}
    external = list(spec.get("externalIPs") or [])
    kind = spec.get("type", "")
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) if external else "<none>"
    if kind == "LoadBalancer":
        ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        addresses = sorted({i.get("ip") or i.get("hostname") for i in ingress
                            if i.get("ip") or i.get("hostname")})
        if external:
            return ",".join(addresses + external)
        return ",".join(addresses) if addresses else "<pending>"
    if kind == "ExternalName":
        return spec.get("externalName", "")
    return "<unknown>"


def _host_port(ip: str, port: int) -> str:
    """net.JoinHostPort: IPv6 addresses in brackets."""
    try:
        if ipaddress.ip_address(ip).version == 6:
            return f"[{ip}]:{port}"
    except ValueError:
        if ":" in ip:
            return f"[{ip}]:{port}"
    return f"{ip}:{port}"


def _endpoints_cells(obj: Mapping[str, Any], now: float) -> list[Any]:
    return [_name(obj), _format_endpoints(obj.get("subsets") or []), _age(obj, now)]


def _format_endpoints(subsets: list[Mapping[str, Any]]) -> str:
    """formatEndpoints: ready addresses (with each port), three at most, <none> without."""
    if not subsets:
        return "<none>"
    shown: list[str] = []
    count = 0
    for subset in subsets:
        addresses = [a.get("ip", "") for a in subset.get("addresses") or []]
        ports = subset.get("ports") or []
        if not ports:
            count += len(addresses)
            shown += addresses[:max(0, 3 - len(shown))]
            continue
        for port in ports:
            count += len(addresses)
            shown += [_host_port(ip, port.get("port", 0))
                      for ip in addresses][:max(0, 3 - len(shown))]
    text, _ = _more(shown, count)
    return text


def _endpoint_slice_cells(obj: Mapping[str, Any], now: float) -> list[Any]:
    ports = []
    for port in obj.get("ports") or []:
        if port.get("port") is not None:
            ports.append(str(port["port"]))
        elif port.get("name") is not None:
            ports.append(port["name"])
        else:
            ports.append("*")
    addresses = [address for endpoint in obj.get("endpoints") or []
                 for address in endpoint.get("addresses") or []]
    return [_name(obj), obj.get("addressType", ""), _list_with_more(ports),
            _list_with_more(addresses), _age(obj, now)]


def _service_import_cells(obj: Mapping[str, Any], now: float) -> list[Any]:
    """A CRD's default columns: the name, and the creationTimestamp as a date cell."""
    created = (obj.get("metadata") or {}).get("creationTimestamp")
    if not isinstance(created, str):
        return [_name(obj), None]
    stamp = _timestamp(created)
    return [_name(obj), "<invalid>" if stamp is None else human_duration(now - stamp)]


# -- pods --------------------------------------------------------------------------------


def _restartable(container: Mapping[str, Any] | None) -> bool:
    """A sidecar: an init container that keeps running (restartPolicy Always)."""
    return container is not None and container.get("restartPolicy") == "Always"


def _condition_true(status: Mapping[str, Any], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True"
               for c in status.get("conditions") or [])


def _finished_at(container_status: Mapping[str, Any]) -> float | None:
    terminated = (container_status.get("lastState") or {}).get("terminated") or {}
    return _timestamp(terminated.get("finishedAt"))


def _later(current: float | None, candidate: float | None) -> float | None:
    if candidate is None:
        return current
    return candidate if current is None or candidate > current else current


def _terminated_reason(terminated: Mapping[str, Any], prefix: str = "") -> str:
    if terminated.get("reason"):
        return prefix + terminated["reason"]
    if terminated.get("signal"):
        return f"{prefix}Signal:{terminated['signal']}"
    return f"{prefix}ExitCode:{terminated.get('exitCode', 0)}"


@dataclass(slots=True)
class _PodSummary:
    reason: str
    ready: int = 0
    restarts: int = 0
    last_restart: float | None = None


def _init_containers(pod: Mapping[str, Any],
                     summary: _PodSummary) -> tuple[bool, int, float | None]:
    """Walk init containers as printPod does: the first one not done sets the reason.

    Returns whether the pod is still initializing, and the restarts of sidecars (init
    containers that keep running) with the last of them, which count even then.
    """
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    specs = {c.get("name"): c for c in spec.get("initContainers") or []}
    sidecar_restarts, last_sidecar = 0, None
    for index, container in enumerate(status.get("initContainerStatuses") or []):
        count = int(container.get("restartCount") or 0)
        summary.restarts += count
        summary.last_restart = _later(summary.last_restart, _finished_at(container))
        sidecar = _restartable(specs.get(container.get("name")))
        if sidecar:
            sidecar_restarts += count
            last_sidecar = _later(last_sidecar, _finished_at(container))
        state = container.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting") or {}
        if terminated is not None and int(terminated.get("exitCode") or 0) == 0:
            continue
        if sidecar and container.get("started"):
            summary.ready += 1 if container.get("ready") else 0
            continue
        if terminated is not None:
            summary.reason = _terminated_reason(terminated, "Init:")
        elif waiting.get("reason") and waiting["reason"] != "PodInitializing":
            summary.reason = "Init:" + waiting["reason"]
        else:
            summary.reason = f"Init:{index}/{len(spec.get('initContainers') or [])}"
        return True, sidecar_restarts, last_sidecar
    return False, sidecar_restarts, last_sidecar


def _main_containers(pod: Mapping[str, Any], summary: _PodSummary) -> None:
    status = pod.get("status") or {}
    running = False
    for container in reversed(status.get("containerStatuses") or []):
        summary.restarts += int(container.get("restartCount") or 0)
        summary.last_restart = _later(summary.last_restart, _finished_at(container))
        state = container.get("state") or {}
        waiting, terminated = state.get("waiting") or {}, state.get("terminated")
        if waiting.get("reason"):
            summary.reason = waiting["reason"]
        elif terminated is not None:
            summary.reason = _terminated_reason(terminated)
        elif container.get("ready") and state.get("running") is not None:
            running = True
            summary.ready += 1
    if summary.reason == "Completed" and running:
        summary.reason = "Running" if _condition_true(status, "Ready") else "NotReady"


def _pod_summary(pod: Mapping[str, Any]) -> _PodSummary:
    status, meta = pod.get("status") or {}, pod.get("metadata") or {}
    phase = status.get("phase", "")
    summary = _PodSummary(reason=status.get("reason") or phase)
    if any(c.get("type") == "PodScheduled" and c.get("reason") == "SchedulingGated"
           for c in status.get("conditions") or []):
        summary.reason = "SchedulingGated"
    initializing, sidecar_restarts, last_sidecar = _init_containers(pod, summary)
    if not initializing or _condition_true(status, "Initialized"):
        summary.restarts, summary.last_restart = sidecar_restarts, last_sidecar
        _main_containers(pod, summary)
    if meta.get("deletionTimestamp") and status.get("reason") == "NodeLost":
        summary.reason = "Unknown"
    elif meta.get("deletionTimestamp") and phase not in ("Succeeded", "Failed"):
        summary.reason = "Terminating"
    return summary


def _pod_cells(pod: Mapping[str, Any], now: float) -> list[Any]:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    total = len(spec.get("containers") or []) + sum(
        1 for c in spec.get("initContainers") or [] if _restartable(c))
    summary = _pod_summary(pod)
    restarts = str(summary.restarts)
    if summary.restarts and summary.last_restart is not None:
        restarts = f"{summary.restarts} ({human_duration(now - summary.last_restart)} ago)"
    pod_ips = status.get("podIPs") or ([{"ip": status["podIP"]}] if status.get("podIP") else [])
    return [_name(pod), f"{summary.ready}/{total}", summary.reason, restarts, _age(pod, now),
            (pod_ips[0].get("ip") if pod_ips else "") or "<none>",
            spec.get("nodeName") or "<none>", status.get("nominatedNodeName") or "<none>",
            _readiness_gates(spec, status)]


def _readiness_gates(spec: Mapping[str, Any], status: Mapping[str, Any]) -> str:
    gates = spec.get("readinessGates") or []
    if not gates:
        return "<none>"
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    true = sum(1 for gate in gates if conditions.get(gate.get("conditionType")) == "True")
    return f"{true}/{len(gates)}"


def _pod_row_conditions(pod: Mapping[str, Any]) -> list[dict[str, str]]:
    phase = (pod.get("status") or {}).get("phase")
    if phase == "Succeeded":
        return [{"type": "Completed", "status": "True", "reason": "Succeeded",
                 "message": "The pod has completed successfully."}]
    if phase == "Failed":
        return [{"type": "Completed", "status": "True", "reason": "Failed",
                 "message": "The pod failed."}]
    return []


_CELLS: dict[ResourceType, Callable[[Mapping[str, Any], float], list[Any]]] = {
    PODS: _pod_cells,
    SERVICES: _service_cells,
    ENDPOINTS: _endpoints_cells,
    ENDPOINT_SLICES: _endpoint_slice_cells,
    NAMESPACES: _namespace_cells,
    SERVICE_IMPORTS: _service_import_cells,
}
