"""The soak's truth: what each simulated API server holds, and the DNS answers it implies.

`bench/soak.py` changes three API servers through their REST API and must then say, for any
name, what the DNS server ought to answer. This module keeps that truth (`Truth`: the
Services and EndpointSlices each API server confirmed) and derives answers from it with a
small, separate model of CoreDNS's kubernetes plugin (`expect`), written from the plugin's
rules, not from kubernetai's code, so that the soak checks the server rather than repeating
it. The model covers what the soak creates and what the demo and synthetic clusters hold:
ClusterIP (single and dual stack), headless and ExternalName services, named ports, ready
and not-ready endpoints with and without hostnames, and `endpoint_pod_names`.

`Mutator` picks the changes: each is a short list of REST writes (`Write`) on a bounded
pool of service names, so the universe of names ever used stays bounded and every name
that should not exist can be checked to answer NXDOMAIN.
"""

from __future__ import annotations

import copy
import ipaddress
import random
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable

import dns.rcode
import dns.rdatatype

SERVICE_LABEL = "kubernetes.io/service-name"
A, AAAA, SRV, CNAME = (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.SRV,
                       dns.rdatatype.CNAME)
NOERROR, NXDOMAIN = dns.rcode.NOERROR, dns.rcode.NXDOMAIN

SERVICES_PATH = "/api/v1"
SLICES_PATH = "/apis/discovery.k8s.io/v1"
# The named ports a pool ClusterIP service may have; SRV names are checked for all of them.
POOL_PORTS = (("http", 80, "TCP"), ("grpc", 9090, "TCP"), ("dns", 53, "UDP"))
HEADLESS_PORT = ("web", 8080, "TCP")
HOSTNAMES = tuple(f"h-{i}" for i in range(6))
ADDRESSES_PER_SERVICE = 16  # pool endpoint IPs come from a fixed set of 16 per service


@dataclass(frozen=True, slots=True)
class Expect:
    """One expected answer: the rcode, the record data (normalised text) and the TTL."""

    rcode: int
    records: frozenset[str] = frozenset()
    ttl: int | None = None

    def describe(self) -> str:
        if self.rcode != NOERROR:
            return dns.rcode.to_text(self.rcode)
        return ("NODATA" if not self.records else ", ".join(sorted(self.records))) + (
            f" ttl={self.ttl}" if self.ttl is not None and self.records else "")


NX = Expect(NXDOMAIN)


@dataclass(frozen=True, slots=True)
class Port:
    name: str
    number: int
    protocol: str


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One address of a ready endpoint, with what names it."""

    ip: str
    hostname: str
    pod: str
    ports: tuple[Port, ...]


def _ports(raw: Any) -> tuple[Port, ...]:
    """Ports as CoreDNS keeps them: none at all becomes one unnamed port -1."""
    if not raw:
        return (Port("", -1, ""),)
    return tuple(Port(p.get("name") or "", -1 if p.get("port") is None else int(p["port"]),
                      p.get("protocol") or "") for p in raw)


def _match(port: str, proto: str, p: Port) -> bool:
    if port and port not in (p.name, p.name.lower()):
        return False
    return not proto or proto == p.protocol.lower()


def label_of(endpoint: Endpoint, pod_names: bool) -> str:
    """The first label of an endpoint's DNS name: hostname, pod name, or dashed IP."""
    if endpoint.hostname:
        return endpoint.hostname
    if pod_names and endpoint.pod:
        return endpoint.pod
    if ":" in endpoint.ip:
        dashed = endpoint.ip.replace(":", "-")
        return dashed + "0" if dashed.endswith("-") else dashed
    return endpoint.ip.replace(".", "-")


def _family(ip: str) -> int | None:
    try:
        return A if ipaddress.ip_address(ip).version == 4 else AAAA
    except ValueError:
        return None


def normal_ip(text: str) -> str:
    return str(ipaddress.ip_address(text))


def key_of(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


class Truth:
    """What one API server holds, as confirmed by its answers to the soak's requests."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, Any]] = {}
        self.slices: dict[str, dict[str, Any]] = {}
        self.initial: set[str] = set()       # service keys of the manifests
        self.seen: set[str] = set()          # every service key that ever existed
        self.seen_endpoints: dict[str, set[Endpoint]] = {}
        self._by_service: dict[str, set[str]] | None = None
        # When each service (or one of its slices) last changed, and when everything did
        # (a reset); monotonic seconds. Answers may lag a change, not an old truth.
        self.changed: dict[str, float] = {}
        self.reset_at = 0.0

    def last_change(self, service_key: str) -> float:
        return max(self.changed.get(service_key, 0.0), self.reset_at)

    def reset(self, services: Iterable[dict[str, Any]], slices: Iterable[dict[str, Any]]) -> None:
        """Replace everything with fresh lists (start-up, and after an API server restart)."""
        self.services = {key_of(s): s for s in services}
        self.slices = {key_of(s): s for s in slices}
        self._by_service = None
        self.reset_at = time.monotonic()
        self.initial = set(self.services)
        self.seen |= self.initial
        for key in self.services:
            self._remember(key)

    def replace(self, services: Iterable[dict[str, Any]],
                slices: Iterable[dict[str, Any]]) -> list[str]:
        """Take fresh lists as the truth; return the keys that differed (the truth drifted)."""
        fresh = ({key_of(s): s for s in services}, {key_of(s): s for s in slices})
        drift = [f"{kind} {key}" for kind, old, new in
                 (("service", self.services, fresh[0]), ("slice", self.slices, fresh[1]))
                 for key in sorted(set(old) | set(new))
                 if _rv(old.get(key)) != _rv(new.get(key))]
        self.services, self.slices = fresh
        self._by_service = None
        if drift:
            self.reset_at = time.monotonic()
        self.seen |= set(self.services)
        for key in self.services:
            self._remember(key)
        return drift

    def put(self, kind: str, obj: dict[str, Any]) -> None:
        key = key_of(obj)
        if kind == "services":
            self.services[key] = obj
            self.seen.add(key)
            self.changed[key] = time.monotonic()
        else:
            old = self.slices.get(key)
            self.slices[key] = obj
            self._by_service = None
            self._remember(_slice_service(obj))
            self.changed[_slice_service(obj)] = time.monotonic()
            if old is not None:
                self.changed[_slice_service(old)] = time.monotonic()

    def remove(self, kind: str, key: str) -> None:
        if kind == "services":
            if self.services.pop(key, None) is not None:
                self.changed[key] = time.monotonic()
            return
        old = self.slices.pop(key, None)
        if old is not None:
            self._by_service = None
            self.changed[_slice_service(old)] = time.monotonic()

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        return (self.services if kind == "services" else self.slices).get(key)

    def slices_of(self, service_key: str) -> list[dict[str, Any]]:
        if self._by_service is None:
            index: dict[str, set[str]] = {}
            for key, obj in self.slices.items():
                index.setdefault(_slice_service(obj), set()).add(key)
            self._by_service = index
        return [self.slices[k] for k in sorted(self._by_service.get(service_key, ()))]

    def endpoints(self, service_key: str) -> list[Endpoint]:
        """Ready addresses of the service's slices (`ready` missing counts as ready)."""
        out = []
        for obj in self.slices_of(service_key):
            ports = _ports(obj.get("ports"))
            for ep in obj.get("endpoints") or ():
                if (ep.get("conditions") or {}).get("ready") is False:
                    continue
                ref = (ep.get("targetRef") or {}).get("name") or ""
                pod = ref if len(ref) < 64 else ""
                for ip in ep.get("addresses") or ():
                    out.append(Endpoint(ip, ep.get("hostname") or "", pod, ports))
        return out

    def _remember(self, service_key: str) -> None:
        """Every endpoint ever seen: its names must answer NXDOMAIN once it is gone."""
        seen = self.seen_endpoints.setdefault(service_key, set())
        seen.update(Endpoint(e.ip, e.hostname, e.pod, ()) for e in self.endpoints(service_key))


def _rv(obj: dict[str, Any] | None) -> str | None:
    return None if obj is None else obj["metadata"].get("resourceVersion")


def _slice_service(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', '')}/{(meta.get('labels') or {}).get(SERVICE_LABEL, '')}"


# -- the answer model -------------------------------------------------------------------


def expect(truth: Truth, zone: str, qname: str, qtype: int, *, ttl: int,
           pod_names: bool) -> Expect | None:
    """What CoreDNS's kubernetes plugin answers for `qname`/`qtype`; None: not modelled.

    `qname` is lower case and fully qualified, inside `zone` (no trailing dot on `zone`).
    Only service names are modelled: `svc.ns.svc`, `endpoint.svc.ns.svc` and
    `_port._proto.svc.ns.svc`.
    """
    labels = qname[:-len(zone) - 2].split(".")
    if labels[-1] != "svc":
        return None
    endpoint = port = proto = ""
    if len(labels) == 4:
        endpoint = labels[0]
    elif len(labels) == 5:
        port, proto = labels[0].removeprefix("_"), labels[1].removeprefix("_")
    elif len(labels) != 3:
        return None
    name, namespace = labels[-3], labels[-2]
    service = truth.services.get(f"{namespace}/{name}")
    if service is None:
        return NX
    spec = service.get("spec") or {}
    owner = f"{name}.{namespace}.svc.{zone}."
    if spec.get("type") == "ExternalName":
        return _external(spec.get("externalName") or "", qtype, ttl,
                         bool(endpoint or port or proto))
    ips = spec.get("clusterIPs") or [spec.get("clusterIP") or ""]
    if ips[0] == "None" or endpoint:
        found = []
        for ep in truth.endpoints(f"{namespace}/{name}"):
            label = label_of(ep, pod_names)
            if endpoint and endpoint not in (label, label.lower()):
                continue
            found += [(ep.ip, p.number, f"{label}.{owner}") for p in ep.ports
                      if _match(port, proto, p)]
    else:
        found = [(ip, p.number, owner) for p in _ports(spec.get("ports"))
                 if _match(port, proto, p) for ip in ips]
    if not found:
        return NX
    return _records(found, qtype, ttl)


def _external(target: str, qtype: int, ttl: int, qualified: bool) -> Expect | None:
    if qualified or _family(target) is not None:
        return NX
    if qtype == CNAME:
        return Expect(NOERROR, frozenset({target.rstrip(".").lower() + "."}), ttl)
    if qtype == SRV:
        return Expect(NOERROR)
    return None  # A/AAAA chase the target through the rest of the server: not modelled


def _records(found: list[tuple[str, int, str]], qtype: int, ttl: int) -> Expect | None:
    if qtype in (A, AAAA):
        data = {normal_ip(ip) for ip, _, _ in found if _family(ip) == qtype}
    elif qtype == SRV:
        data = {f"{number} {target}" for _, number, target in found if number != -1}
    elif qtype == CNAME:
        data = set()
    else:
        return None
    return Expect(NOERROR, frozenset(data), ttl)


def queries(truth: Truth, zone: str, *, pod_names: bool,
            pool_keys: Iterable[str] = ()) -> list[tuple[str, int]]:
    """Every (name, type) the soak checks in one cluster's zone.

    For each service ever seen (and each pool name): its name (CNAME for an ExternalName,
    else A, plus AAAA where it has IPv6 data); SRV for its named ports and the pool's port
    names; and the name of every endpoint it ever had.
    """
    out: list[tuple[str, int]] = []
    for key in sorted(truth.seen | set(pool_keys)):
        namespace, name = key.split("/")
        owner = f"{name}.{namespace}.svc.{zone}."
        service = truth.services.get(key)
        spec = (service or {}).get("spec") or {}
        out.append((owner, CNAME if spec.get("type") == "ExternalName" else A))
        if any(":" in ip for ip in spec.get("clusterIPs") or ()) or any(
                ":" in e.ip for e in truth.endpoints(key)):
            out.append((owner, AAAA))
        ports = {(p.get("name"), (p.get("protocol") or "TCP").lower())
                 for p in spec.get("ports") or () if p.get("name")}
        ports |= {(n, proto.lower()) for n, _, proto in POOL_PORTS} if key in pool_keys else set()
        out += [(f"_{n}._{proto}.{owner}", SRV) for n, proto in sorted(ports)]
        labels = {label_of(e, pod_names) for e in truth.seen_endpoints.get(key, ())}
        for label in sorted(labels):
            out.append((f"{label}.{owner}", A))
    return out


def fallthrough_expect(first: Truth, second: Truth, zone: str, qname: str, *,
                       first_ttl: int, second_ttl: int, first_pods: bool,
                       second_pods: bool) -> tuple[int, Expect | None]:
    """(query type, answer) for a name served by `first` with fallthrough to `second`.

    The first stanza answers unless it has no such name (NXDOMAIN); the type asked is CNAME
    when the answering cluster's service is an ExternalName, A otherwise.
    """
    key = "/".join(reversed(qname[:-len(zone) - 2].split(".")[:2]))
    for truth, ttl, pods in ((first, first_ttl, first_pods), (second, second_ttl, second_pods)):
        service = truth.services.get(key)
        qtype = CNAME if service and (service.get("spec") or {}).get(
            "type") == "ExternalName" else A
        got = expect(truth, zone, qname, qtype, ttl=ttl, pod_names=pods)
        if got is None or got.rcode != NXDOMAIN or truth is second:
            return qtype, got
    raise AssertionError("unreachable")


# -- changes ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Write:
    """One REST write: method, path, body; `kind`/`key` name the object it changes."""

    method: str
    path: str
    kind: str
    key: str
    body: dict[str, Any] | None = None


@dataclass(slots=True)
class Profile:
    """How one cluster's pool services look."""

    dual_stack: bool = False      # explicit IPv4+IPv6 ClusterIPs and IPv6 endpoints
    pod_refs: bool = False        # endpoints carry targetRef pod names
    ip_prefix: int = 0            # second octet block for this cluster's pool addresses


@dataclass
class Mutator:
    """Chooses the next change to one cluster, from the truth, with a seeded RNG."""

    truth: Truth
    rng: random.Random
    pool: list[str]               # "ns/name" keys the soak may create
    profile: Profile = field(default_factory=Profile)
    target: float = 0.6           # fraction of the pool kept alive on average

    def __post_init__(self) -> None:
        self._slots = {key: index for index, key in enumerate(self.pool)}

    def next_change(self) -> tuple[str, list[Write]]:
        """(what, writes) for one change; the writes run in order, stopping at a failure."""
        present = [k for k in self.pool if k in self.truth.services]
        absent = [k for k in self.pool if k not in self.truth.services]
        roll = self.rng.random()
        if roll < 0.35:
            fill = len(present) / max(1, len(self.pool))
            if absent and (not present or self.rng.random() < 0.5 + (self.target - fill)):
                return self._create(self.rng.choice(absent))
            return self._delete(self.rng.choice(present))
        if roll < 0.70 and present:
            return self._endpoints(self.rng.choice(present))
        if roll < 0.80 and present:
            return self._modify(self.rng.choice(present))
        initial = sorted(self.truth.initial & set(self.truth.services))
        if roll < 0.97 and initial:
            return self._endpoints(self.rng.choice(initial))
        if initial and roll < 0.985:
            return self._delete(self.rng.choice(initial))
        return self._label(self.rng.choice(present or initial or self.pool))

    # -- the changes ----------------------------------------------------------------

    def _create(self, key: str) -> tuple[str, list[Write]]:
        kind = self.rng.choices(("cip", "headless", "ext"), (6, 3, 1))[0]
        namespace, name = key.split("/")
        meta = {"name": name, "namespace": namespace, "labels": {"app": name, "soak": "yes"}}
        spec: dict[str, Any]
        if kind == "ext":
            spec = {"type": "ExternalName", "externalName": self._external_target()}
        elif kind == "headless":
            spec = {"clusterIP": "None", "selector": {"app": name},
                    "ports": [_port_spec(*HEADLESS_PORT)]}
        else:
            spec = {"selector": {"app": name}, "ports": self._service_ports()}
            if self.profile.dual_stack and self.rng.random() < 0.5:
                spec["clusterIPs"] = self._dual_ips(key)
                spec["clusterIP"] = spec["clusterIPs"][0]
                spec["ipFamilyPolicy"] = "PreferDualStack"
        body = {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}
        writes = [Write("POST", collection_path("services", namespace), "services", key, body)]
        if kind != "ext":
            writes += [self._slice_write(key, family, headless=kind == "headless")
                       for family in self._families(spec)]
        return f"create-{kind}", writes

    def _delete(self, key: str) -> tuple[str, list[Write]]:
        writes = [Write("DELETE", item_path("services", key), "services", key)]
        writes += [Write("DELETE", item_path("endpointslices", key_of(s)), "endpointslices",
                         key_of(s)) for s in self.truth.slices_of(key)]
        return "delete", writes

    def _endpoints(self, key: str) -> tuple[str, list[Write]]:
        """New endpoints for one slice of the service (or a new slice if it has none)."""
        service = self.truth.services[key]
        spec = service.get("spec") or {}
        if spec.get("type") == "ExternalName":
            return self._modify(key)
        slices = self.truth.slices_of(key)
        if not slices:
            headless = spec.get("clusterIP") == "None"
            return "endpoints-new-slice", [self._slice_write(key, "IPv4", headless=headless)]
        current = self.rng.choice(slices)
        if self.rng.random() < 0.1:
            return "endpoints-delete-slice", [Write(
                "DELETE", item_path("endpointslices", key_of(current)), "endpointslices",
                key_of(current))]
        body = _copy_for_put(current)
        body["endpoints"] = self._endpoint_list(key, body.get("addressType", "IPv4"),
                                                hostnames=spec.get("clusterIP") == "None")
        return "endpoints", [Write("PUT", item_path("endpointslices", key_of(current)),
                                   "endpointslices", key_of(current), body)]

    def _modify(self, key: str) -> tuple[str, list[Write]]:
        """A DNS-visible change of the Service: its ports, or its ExternalName target."""
        body = _copy_for_put(self.truth.services[key])
        spec = body.setdefault("spec", {})
        if spec.get("type") == "ExternalName":
            spec["externalName"] = self._external_target()
            what = "modify-external"
        elif spec.get("clusterIP") == "None":
            return self._label(key)
        else:
            spec["ports"] = self._service_ports()
            what = "modify-ports"
        return what, [Write("PUT", item_path("services", key), "services", key, body)]

    def _label(self, key: str) -> tuple[str, list[Write]]:
        """A change DNS must ignore: a label bump (merge patch)."""
        if key not in self.truth.services:
            return self._create(key)
        patch = {"metadata": {"labels": {"soak-touch": str(self.rng.randrange(10**6))}}}
        return "label", [Write("PATCH", item_path("services", key), "services", key, patch)]

    # -- object parts ---------------------------------------------------------------

    def _slice_write(self, key: str, family: str, *, headless: bool) -> Write:
        namespace, name = key.split("/")
        slice_name = f"{name}-soak-{family.lower()}"
        ports = ([_port_spec(*HEADLESS_PORT)] if headless
                 else [_port_spec(n, p, proto) for n, p, proto in POOL_PORTS])
        body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": slice_name, "namespace": namespace,
                             "labels": {SERVICE_LABEL: name, "soak": "yes"}},
                "addressType": family, "ports": ports,
                "endpoints": self._endpoint_list(key, family, hostnames=True)}
        return Write("POST", collection_path("endpointslices", namespace), "endpointslices",
                     f"{namespace}/{slice_name}", body)

    def _endpoint_list(self, key: str, family: str, *, hostnames: bool) -> list[dict[str, Any]]:
        count = self.rng.randint(0, 4)
        picks = self.rng.sample(range(ADDRESSES_PER_SERVICE), count)
        names = self.rng.sample(HOSTNAMES, count)
        endpoints = []
        for index, host in zip(picks, names):
            ep: dict[str, Any] = {"addresses": [self._endpoint_ip(key, family, index)],
                                  "conditions": {"ready": self.rng.random() < 0.85}}
            if hostnames and self.rng.random() < 0.6:
                ep["hostname"] = host
            if self.profile.pod_refs and self.rng.random() < 0.7:
                ep["targetRef"] = {"kind": "Pod", "namespace": key.split("/")[0],
                                   "name": f"{key.split('/')[1]}-pod-{index}"}
            endpoints.append(ep)
        return endpoints

    def _endpoint_ip(self, key: str, family: str, index: int) -> str:
        slot, prefix = self._slot(key), self.profile.ip_prefix
        if family == "IPv6":
            return f"fd00:200:{prefix:x}:{slot:x}::{index + 1:x}"
        return f"10.{200 + prefix}.{slot // 16}.{(slot % 16) * 16 + index}"

    def _dual_ips(self, key: str) -> list[str]:
        slot, prefix = self._slot(key), self.profile.ip_prefix
        return [f"10.{210 + prefix}.{slot // 250}.{slot % 250 + 1}",
                f"fd00:210:{prefix:x}::{slot:x}"]

    def _slot(self, key: str) -> int:
        """A number below 4096 for a service: its pool index, so pool addresses are unique."""
        if key in self._slots:
            return self._slots[key]
        return zlib.crc32(key.encode()) % 4096

    def _families(self, spec: dict[str, Any]) -> list[str]:
        if self.profile.dual_stack and (len(spec.get("clusterIPs") or ()) == 2
                                        or self.rng.random() < 0.3):
            return ["IPv4", "IPv6"]
        return ["IPv4"]

    def _service_ports(self) -> list[dict[str, Any]]:
        chosen = self.rng.sample(POOL_PORTS, self.rng.randint(1, len(POOL_PORTS)))
        return [_port_spec(*p) for p in chosen]

    def _external_target(self) -> str:
        return f"ext-{self.rng.randrange(1000)}.example.com"


def _port_spec(name: str, number: int, protocol: str) -> dict[str, Any]:
    return {"name": name, "port": number, "protocol": protocol}


def _copy_for_put(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy to PUT back: keeps metadata.resourceVersion, so a stale truth shows as 409."""
    return copy.deepcopy(obj)


def collection_path(kind: str, namespace: str) -> str:
    base = SERVICES_PATH if kind == "services" else SLICES_PATH
    return f"{base}/namespaces/{namespace}/{kind}"


def item_path(kind: str, key: str) -> str:
    namespace, name = key.split("/")
    return f"{collection_path(kind, namespace)}/{name}"
