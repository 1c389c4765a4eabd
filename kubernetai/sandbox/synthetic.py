"""Synthetic Kubernetes clusters of any size, for scale tests and benchmarks.

The sandbox runs no controllers, so a cluster has to arrive complete: every Service with its
EndpointSlice, every endpoint pointing at a Pod that really exists. :func:`generate` streams
such a cluster as plain dicts shaped like API server output (apiVersion, kind, metadata,
spec, status), without the fields the server fills in itself (uid, resourceVersion,
creationTimestamp).

Describe a cluster with a :class:`SyntheticSpec`, or with the text form :func:`parse_spec`
reads::

    namespaces=100,services=10000,headless=1000,endpoints=4,headless_endpoints=14,pods=100000

That text is :data:`SCALE_SPEC` (``parse_spec("scale")`` for short), the benchmark scale:
100 namespaces, 10,000 Services (9,000 ClusterIP + 1,000 headless), 10,000 EndpointSlices
holding 9,000 x 4 + 1,000 x 14 = 50,000 endpoints, and 100,000 Pods. Generating it takes
about a second.

What comes out, in this order:

* ``namespaces`` Namespaces.
* ``services`` Services, spread round-robin over the namespaces. ``headless`` of them are
  headless (``clusterIP: None``), spread evenly among the rest. ClusterIP services get
  addresses from 10.96.0.0/12, starting at 10.96.1.0 so that 10.96.0.1 (``kubernetes``)
  and 10.96.0.10 (``kube-dns``) stay free. Port layouts vary: single ``http``, ``http`` +
  ``https``, ``grpc`` + ``metrics``, ``dns`` 53/UDP + ``dns-tcp`` 53/TCP, a single unnamed
  port; headless services look like databases (``postgres``, ``redis``, ``kafka``,
  zookeeper's ``client``/``peer``/``leader-election``).
* one EndpointSlice per Service (label ``kubernetes.io/service-name``, addressType IPv4),
  listing ``endpoints`` ready endpoints for a ClusterIP service and ``headless_endpoints``
  for a headless one. Headless endpoints carry a ``hostname`` (``<service>-0``,
  ``<service>-1``... as a StatefulSet's would). Slice ports carry the target (container)
  port numbers, as the EndpointSlice controller writes them. A slice holds at most 1,000
  endpoints, the API's limit, so there is always exactly one slice per service.
* ``pods`` Pods. The first ones back the endpoints, one pod per endpoint, in the service's
  namespace, labelled to match its selector and named like a Deployment's pods
  (``<service>-<hash>-<suffix>``) or a StatefulSet's (``<service>-<ordinal>``, with
  ``spec.hostname``/``spec.subdomain``). The endpoint's address is the pod's IP and its
  ``targetRef`` names the pod. Pods beyond that are unrelated workloads (batch jobs) spread
  over the namespaces. If there are fewer pods than endpoints, the remaining endpoints get
  fresh pod-network IPs and no ``targetRef`` or ``nodeName``.

Pod IPs come from 10.128.0.0/9: the cluster has one node per 100 pods (``node-00000``...,
host IPs from 10.0.0.0/16), each node owns a /24 of the pod network, and consecutive pods
go to different nodes. Every IP, service or pod, is unique.

Output is deterministic: the same spec always yields the same objects, in the same order.
The ``seed`` changes names, port layouts and name suffixes, never the counts or IP plan.
Run the module to write a cluster to stdout, e.g.
``python -m kubernetai.sandbox.synthetic 'services=50,pods=200' > cluster.yaml``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass
from typing import Any, Iterator

__all__ = ["SyntheticSpec", "SCALE_SPEC", "parse_spec", "format_spec", "generate", "main"]

# API validation: an EndpointSlice holds at most 1000 endpoints.
MAX_ENDPOINTS_PER_SLICE = 1000
_SERVICE_BASE = (10 << 24) | (96 << 16)          # 10.96.0.0/12
_SERVICE_FIRST = 256                              # first synthetic ClusterIP: 10.96.1.0
MAX_SERVICES = 1_000_000                          # 10.96.1.0 ... 10.111.67.63, inside the /12
_POD_BASE = (10 << 24) | (128 << 16)              # 10.128.0.0/9
_NODE_SUBNETS = 1 << 15                           # /24 per node inside the /9
_PODS_PER_NODE = 100
MAX_POD_IPS = _NODE_SUBNETS * _PODS_PER_NODE      # 3,276,800
_NODE_BASE = (10 << 24) + 10                      # host IPs 10.0.0.10 ...

# kube's rand.String alphabet (no vowels, no confusable characters), as in generated names.
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_SUFFIX_SPACE = len(_ALPHABET) ** 5               # 14,348,907 > MAX_POD_IPS

_NAMESPACE_WORDS = ("payments", "search", "billing", "identity", "catalog", "media",
                    "ledger", "telemetry", "ads", "support", "storefront", "logistics")
_SERVICE_WORDS = ("api", "web", "frontend", "checkout", "cart", "auth", "orders",
                  "gateway", "ranking", "profile", "notifier", "pricing", "resolver")
_HEADLESS_WORDS = ("postgres", "redis", "kafka", "zookeeper")
_JOB_WORDS = ("backup", "report", "migrate", "reindex", "cleanup", "export")

# (name, port, protocol, targetPort); name None = a single unnamed port.
_Port = tuple[str | None, int, str, int]
_CLUSTERIP_PORTS: tuple[tuple[_Port, ...], ...] = (
    (("http", 80, "TCP", 8080),),
    (("http", 80, "TCP", 8080), ("https", 443, "TCP", 8443)),
    (("grpc", 9090, "TCP", 9090), ("metrics", 9102, "TCP", 9102)),
    (("http", 80, "TCP", 8080), ("grpc", 9090, "TCP", 9090), ("metrics", 9102, "TCP", 9102)),
    (("dns", 53, "UDP", 5353), ("dns-tcp", 53, "TCP", 5353)),
    ((None, 8080, "TCP", 8080),),
)
_HEADLESS_PORTS: dict[str, tuple[_Port, ...]] = {
    "postgres": (("postgres", 5432, "TCP", 5432),),
    "redis": (("redis", 6379, "TCP", 6379), ("sentinel", 26379, "TCP", 26379)),
    "kafka": (("kafka", 9092, "TCP", 9092),),
    "zookeeper": (("client", 2181, "TCP", 2181), ("peer", 2888, "TCP", 2888),
                  ("leader-election", 3888, "TCP", 3888)),
}
_IMAGES = {
    "postgres": "docker.io/library/postgres:16.4",
    "redis": "docker.io/library/redis:7.4",
    "kafka": "docker.io/apache/kafka:3.8.0",
    "zookeeper": "docker.io/library/zookeeper:3.9",
}
_MANAGED_BY = "endpointslice-controller.k8s.io"


@dataclass(frozen=True, slots=True)
class SyntheticSpec:
    """The shape of a synthetic cluster; see the module docstring for what each count means."""

    namespaces: int = 10
    services: int = 100          # total services, including the headless ones
    headless: int = 10           # how many of them are headless (clusterIP: None)
    endpoints_per_service: int = 5   # ready endpoints in each ClusterIP service's EndpointSlice
    endpoints_per_headless: int = 5  # endpoints (with hostnames) in each headless service's slice
    pods: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"synthetic spec: {f.name} must be an integer, got {value!r}")
            if f.name != "seed" and value < 0:
                raise ValueError(f"synthetic spec: {f.name} must not be negative, got {value}")
        if self.namespaces < 1:
            raise ValueError("synthetic spec: namespaces must be at least 1")
        if self.headless > self.services:
            raise ValueError(f"synthetic spec: headless={self.headless} is more than "
                             f"services={self.services}")
        if self.services > MAX_SERVICES:
            raise ValueError(f"synthetic spec: services={self.services} does not fit the "
                             f"service CIDR (at most {MAX_SERVICES})")
        for name in ("endpoints_per_service", "endpoints_per_headless"):
            if getattr(self, name) > MAX_ENDPOINTS_PER_SLICE:
                raise ValueError(f"synthetic spec: {name}={getattr(self, name)} is more than "
                                 f"an EndpointSlice holds ({MAX_ENDPOINTS_PER_SLICE})")
        if max(self.total_endpoints, self.pods) > MAX_POD_IPS:
            raise ValueError(f"synthetic spec: {max(self.total_endpoints, self.pods)} pod "
                             f"addresses needed, the pod network holds {MAX_POD_IPS}")

    @property
    def cluster_ip_services(self) -> int:
        return self.services - self.headless

    @property
    def total_endpoints(self) -> int:
        """Endpoints over all EndpointSlices."""
        return (self.cluster_ip_services * self.endpoints_per_service
                + self.headless * self.endpoints_per_headless)


# The benchmark scale; see the module docstring.
SCALE_SPEC = SyntheticSpec(namespaces=100, services=10_000, headless=1_000,
                           endpoints_per_service=4, endpoints_per_headless=14, pods=100_000)

# Text keys; the long field names are accepted too, with - or _.
_KEYS = {
    "namespaces": "namespaces",
    "services": "services",
    "headless": "headless",
    "endpoints": "endpoints_per_service",
    "endpoints_per_service": "endpoints_per_service",
    "headless_endpoints": "endpoints_per_headless",
    "endpoints_per_headless": "endpoints_per_headless",
    "pods": "pods",
    "seed": "seed",
}
_SHORT = {"endpoints_per_service": "endpoints", "endpoints_per_headless": "headless_endpoints"}


def parse_spec(text: str) -> SyntheticSpec:
    """Read ``key=value,key=value``; keys left out keep their defaults.

    Keys: namespaces, services, headless, endpoints, headless_endpoints, pods, seed.
    The word ``scale`` stands for :data:`SCALE_SPEC` (``scale,seed=3`` varies it).
    Raises ValueError naming the offending item.
    """
    base: dict[str, int] = {}
    values: dict[str, int] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep and key.lower() == "scale":
            base = dataclasses.asdict(SCALE_SPEC)
            continue
        if not sep:
            raise ValueError(f"synthetic spec: {item!r} is not key=value")
        field = _KEYS.get(key.lower().replace("-", "_"))
        if field is None:
            raise ValueError(f"synthetic spec: unknown key {key!r} "
                             f"(known: {', '.join(k for k in _KEYS if k not in _SHORT)})")
        if field in values:
            raise ValueError(f"synthetic spec: {key!r} given twice")
        try:
            values[field] = int(raw, 10)
        except ValueError:
            raise ValueError(f"synthetic spec: {key}={raw!r} is not an integer") from None
    return SyntheticSpec(**{**base, **values})


def format_spec(spec: SyntheticSpec) -> str:
    """The text form of a spec, which :func:`parse_spec` reads back."""
    return ",".join(f"{_SHORT.get(f.name, f.name)}={getattr(spec, f.name)}"
                    for f in dataclasses.fields(spec))


# --- naming and addressing, all pure functions of (spec, index) ------------------------------

def _ip4(n: int) -> str:
    return f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def _hash(seed: int, *parts: object) -> int:
    data = "/".join(map(str, (seed, *parts))).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _encode(n: int, length: int) -> str:
    chars = []
    for _ in range(length):
        n, r = divmod(n, len(_ALPHABET))
        chars.append(_ALPHABET[r])
    return "".join(chars)


def _suffix(seed: int, k: int) -> str:
    """A 5-character name suffix, distinct for every k below the pod address space."""
    # The multiplier is coprime to 27**5 (not a multiple of 3), so k -> a*k + c is a
    # bijection modulo 27**5; being large, it scatters consecutive k over all digits.
    return _encode((k * 8_868_343 + seed * 104_729 + 12_345) % _SUFFIX_SPACE, 5)


class _Layout:
    """Where every service, endpoint and pod of a spec goes, computed on demand."""

    def __init__(self, spec: SyntheticSpec) -> None:
        self.spec = spec
        self.ns_width = len(str(max(spec.namespaces - 1, 0)))
        self.svc_width = max(3, len(str(max(spec.services - 1, 0))))
        self.addresses = max(spec.total_endpoints, spec.pods)
        self.nodes = max(1, -(-self.addresses // _PODS_PER_NODE))
        self.node_width = max(5, len(str(self.nodes - 1)))
        self.namespace_names = [self._namespace_name(i) for i in range(spec.namespaces)]

    def _namespace_name(self, i: int) -> str:
        word = _NAMESPACE_WORDS[_hash(self.spec.seed, "ns", i) % len(_NAMESPACE_WORDS)]
        return f"{word}-{i:0{self.ns_width}d}"

    def is_headless(self, i: int) -> bool:
        s = self.spec
        return s.services > 0 and (i + 1) * s.headless // s.services != i * s.headless // s.services

    def first_endpoint(self, i: int) -> int:
        """Global index of service i's first endpoint (= the pod backing it)."""
        s = self.spec
        headless_before = i * s.headless // s.services if s.services else 0
        return (headless_before * s.endpoints_per_headless
                + (i - headless_before) * s.endpoints_per_service)

    def service(self, i: int) -> tuple[str, str, bool]:
        """(namespace, name, headless) of service i."""
        headless = self.is_headless(i)
        words = _HEADLESS_WORDS if headless else _SERVICE_WORDS
        word = words[_hash(self.spec.seed, "svc", i) % len(words)]
        return (self.namespace_names[i % self.spec.namespaces],
                f"{word}-{i:0{self.svc_width}d}", headless)

    def ports(self, i: int, name: str, headless: bool) -> tuple[_Port, ...]:
        if headless:
            return _HEADLESS_PORTS[name.rsplit("-", 1)[0]]
        return _CLUSTERIP_PORTS[_hash(self.spec.seed, "ports", i) % len(_CLUSTERIP_PORTS)]

    def replica_set_hash(self, name: str) -> str:
        return _encode(_hash(self.spec.seed, "rs", name), 10)

    def pod_name(self, service: str, headless: bool, ordinal: int, k: int) -> str:
        if headless:
            return f"{service}-{ordinal}"
        return f"{service}-{self.replica_set_hash(service)}-{_suffix(self.spec.seed, k)}"

    def node(self, k: int) -> int:
        return k % self.nodes

    def node_name(self, node: int) -> str:
        return f"node-{node:0{self.node_width}d}"

    def pod_ip(self, k: int) -> str:
        node, slot = k % self.nodes, k // self.nodes
        return _ip4(_POD_BASE + (node << 8) + 2 + slot)

    def host_ip(self, node: int) -> str:
        return _ip4(_NODE_BASE + node)


def _service_ip(i: int) -> str:
    return _ip4(_SERVICE_BASE + _SERVICE_FIRST + i)


# --- objects ------------------------------------------------------------------------------------

def _namespace(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def _service(layout: _Layout, i: int) -> dict[str, Any]:
    namespace, name, headless = layout.service(i)
    ports = []
    for port_name, port, protocol, target in layout.ports(i, name, headless):
        entry: dict[str, Any] = {"port": port, "protocol": protocol, "targetPort": target}
        if port_name is not None:
            entry = {"name": port_name, **entry}
        ports.append(entry)
    ip = "None" if headless else _service_ip(i)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip,
            "clusterIPs": [ip],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "selector": {"app": name},
            "ports": ports,
            "sessionAffinity": "None",
            "internalTrafficPolicy": "Cluster",
        },
        "status": {"loadBalancer": {}},
    }


def _endpoint_slice(layout: _Layout, i: int) -> dict[str, Any]:
    spec = layout.spec
    namespace, name, headless = layout.service(i)
    count = spec.endpoints_per_headless if headless else spec.endpoints_per_service
    first = layout.first_endpoint(i)
    endpoints = []
    for ordinal in range(count):
        k = first + ordinal
        endpoint: dict[str, Any] = {
            "addresses": [layout.pod_ip(k)],
            "conditions": {"ready": True, "serving": True, "terminating": False},
        }
        if headless:
            endpoint["hostname"] = f"{name}-{ordinal}"
        if k < spec.pods:
            endpoint["nodeName"] = layout.node_name(layout.node(k))
            endpoint["targetRef"] = {"kind": "Pod", "namespace": namespace,
                                     "name": layout.pod_name(name, headless, ordinal, k)}
        endpoints.append(endpoint)
    ports = [{"name": port_name or "", "port": target, "protocol": protocol}
             for port_name, _, protocol, target in layout.ports(i, name, headless)]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-{_encode(_hash(spec.seed, 'slice', i), 5)}",
            "generateName": f"{name}-",
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": _MANAGED_BY,
            },
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    }


def _pod(layout: _Layout, k: int, namespace: str, name: str, labels: dict[str, str],
         container: dict[str, Any], extra_spec: dict[str, Any] | None = None,
         restart_policy: str = "Always") -> dict[str, Any]:
    node = layout.node(k)
    ip, host_ip = layout.pod_ip(k), layout.host_ip(node)
    spec: dict[str, Any] = {"containers": [container]}
    if extra_spec:
        spec.update(extra_spec)
    spec["nodeName"] = layout.node_name(node)
    spec["restartPolicy"] = restart_policy
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": spec,
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
        },
    }


def _backing_pods(layout: _Layout) -> Iterator[dict[str, Any]]:
    """One pod per endpoint, service by service, until the pods run out."""
    spec = layout.spec
    k = 0
    for i in range(spec.services):
        if k >= spec.pods:
            return
        namespace, name, headless = layout.service(i)
        count = spec.endpoints_per_headless if headless else spec.endpoints_per_service
        port_specs = layout.ports(i, name, headless)
        word = name.rsplit("-", 1)[0]
        image = _IMAGES.get(word, f"registry.example.com/synthetic/{word}:1.0.0")
        rs_hash = None if headless else layout.replica_set_hash(name)
        for ordinal in range(count):
            if k >= spec.pods:
                return
            pod_name = layout.pod_name(name, headless, ordinal, k)
            # Fresh dicts for every pod: consumers may mutate what they receive.
            ports = [{"containerPort": target, "protocol": protocol,
                      **({"name": port_name} if port_name else {})}
                     for port_name, _, protocol, target in port_specs]
            container = {"name": word, "image": image, "ports": ports}
            if headless:
                labels = {"app": name, "statefulset.kubernetes.io/pod-name": pod_name,
                          "apps.kubernetes.io/pod-index": str(ordinal)}
                extra = {"hostname": pod_name, "subdomain": name}
            else:
                labels = {"app": name, "pod-template-hash": rs_hash}
                extra = None
            yield _pod(layout, k, namespace, pod_name, labels, container, extra)
            k += 1


def _other_pods(layout: _Layout) -> Iterator[dict[str, Any]]:
    """Pods no service selects: batch jobs, spread over the namespaces."""
    spec = layout.spec
    for k in range(spec.total_endpoints, spec.pods):
        word = _JOB_WORDS[_hash(spec.seed, "job", k) % len(_JOB_WORDS)]
        name = f"{word}-{_suffix(spec.seed, k)}"
        container = {"name": word, "image": f"registry.example.com/synthetic/{word}:1.0.0"}
        yield _pod(layout, k, layout.namespace_names[k % spec.namespaces], name,
                   {"app": word, "job-name": word}, container, restart_policy="Never")


def generate(spec: SyntheticSpec) -> Iterator[dict]:
    """Stream the cluster ``spec`` describes: namespaces, services, endpointslices, pods."""
    layout = _Layout(spec)
    for name in layout.namespace_names:
        yield _namespace(name)
    for i in range(spec.services):
        yield _service(layout, i)
    for i in range(spec.services):
        yield _endpoint_slice(layout, i)
    yield from _backing_pods(layout)
    yield from _other_pods(layout)


def main(argv: list[str] | None = None) -> int:
    """Write a synthetic cluster to stdout as multi-document YAML or JSON lines."""
    parser = argparse.ArgumentParser(
        prog="python -m kubernetai.sandbox.synthetic",
        description="Write a synthetic Kubernetes cluster (namespaces, services, "
                    "endpointslices, pods) to stdout.")
    parser.add_argument("spec", nargs="?", default="",
                        help="key=value,... (namespaces, services, headless, endpoints, "
                             "headless_endpoints, pods, seed); 'scale' for SCALE_SPEC")
    parser.add_argument("--format", choices=("yaml", "json"), default="yaml",
                        help="yaml: multi-document YAML (default); json: one object per line")
    args = parser.parse_args(argv)
    try:
        spec = parse_spec(args.spec)
    except ValueError as e:
        parser.error(str(e))
    out = sys.stdout
    try:
        if args.format == "json":
            for obj in generate(spec):
                out.write(json.dumps(obj, separators=(",", ":")))
                out.write("\n")
        else:
            import yaml

            for n, obj in enumerate(generate(spec)):
                if n:
                    out.write("---\n")
                yaml.safe_dump(obj, out, sort_keys=False)
        out.flush()
    except BrokenPipeError:
        # The reader (`| head`) went away; keep the interpreter's final flush quiet.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
