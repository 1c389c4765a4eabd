"""The synthetic cluster generator and the demo clusters under examples/."""

from __future__ import annotations

import collections
import ipaddress
import json
import pathlib
import re
import types

import pytest
import yaml

from kubernetai.sandbox import synthetic
from kubernetai.sandbox.synthetic import (
    SCALE_SPEC,
    SyntheticSpec,
    format_spec,
    generate,
    parse_spec,
)

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
IANA_SVC_NAME = re.compile(r"^(?=.*[a-z])(?!.*--)[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SERVER_FILLED = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields")

SERVICE_NET = ipaddress.ip_network("10.96.0.0/12")
POD_NET = ipaddress.ip_network("10.128.0.0/9")


def by_kind(objects):
    kinds = collections.defaultdict(list)
    for obj in objects:
        kinds[obj["kind"]].append(obj)
    return kinds


def key(obj):
    return obj["metadata"].get("namespace"), obj["metadata"]["name"]


def check_cluster_consistent(objects):
    """Assertions shared by synthetic and demo clusters: slices point at real objects."""
    kinds = by_kind(objects)
    namespaces = {o["metadata"]["name"] for o in kinds["Namespace"]}
    services = {key(o): o for o in kinds["Service"]}
    pods = {key(o): o for o in kinds["Pod"]}
    assert len(services) == len(kinds["Service"]), "duplicate service"
    assert len(pods) == len(kinds["Pod"]), "duplicate pod"
    for obj in objects:
        meta = obj["metadata"]
        for field in SERVER_FILLED:
            assert field not in meta, (key(obj), field)
        if obj["kind"] != "Namespace":
            assert meta["namespace"] in namespaces, key(obj)
    for es in kinds["EndpointSlice"]:
        ns = es["metadata"]["namespace"]
        svc_name = es["metadata"]["labels"]["kubernetes.io/service-name"]
        assert (ns, svc_name) in services, f"slice {key(es)} for missing service {svc_name}"
        svc = services[ns, svc_name]
        family = {"IPv4": 4, "IPv6": 6}[es["addressType"]]
        assert es["addressType"] in svc["spec"]["ipFamilies"], key(es)
        target_ports = {(p.get("name", ""), p.get("protocol", "TCP")): p.get("targetPort", p["port"])
                        for p in svc["spec"]["ports"]}
        assert {(p["name"], p["protocol"]): p["port"] for p in es["ports"]} == target_ports, key(es)
        for ep in es["endpoints"]:
            (address,) = ep["addresses"]
            assert ipaddress.ip_address(address).version == family, (key(es), address)
            assert isinstance(ep["conditions"]["ready"], bool)
            if "hostname" in ep:
                assert DNS1123_LABEL.match(ep["hostname"]), ep["hostname"]
            ref = ep.get("targetRef")
            if ref is None:
                continue
            assert ref["kind"] == "Pod"
            assert ref["namespace"] == ns
            pod = pods.get((ns, ref["name"]))
            assert pod is not None, f"slice {key(es)} targets missing pod {ref['name']}"
            assert address in [p["ip"] for p in pod["status"]["podIPs"]], (key(es), address)
            assert ep["nodeName"] == pod["spec"]["nodeName"]
            selector = svc["spec"].get("selector") or {}
            assert selector.items() <= pod["metadata"]["labels"].items(), (key(es), ref)
            if "hostname" in ep:
                assert pod["spec"]["hostname"] == ep["hostname"]
                assert pod["spec"]["subdomain"] == svc_name
    return kinds


# --- parse_spec ---------------------------------------------------------------------------------

PARSE_CASES = [
    ("", SyntheticSpec()),
    ("  ", SyntheticSpec()),
    ("pods=7", SyntheticSpec(pods=7)),
    ("namespaces=10,services=10000,headless=1000,endpoints=5,headless_endpoints=50,pods=100000",
     SyntheticSpec(10, 10000, 1000, 5, 50, 100000)),
    (" services = 20 , headless = 0 ,", SyntheticSpec(services=20, headless=0)),
    ("endpoints_per_service=2,endpoints-per-headless=3", SyntheticSpec(endpoints_per_service=2,
                                                                       endpoints_per_headless=3)),
    ("Headless-Endpoints=9,SEED=42", SyntheticSpec(endpoints_per_headless=9, seed=42)),
    ("pods=100_000", SyntheticSpec(pods=100_000)),
    ("scale", SCALE_SPEC),
    ("Scale, seed=3", SyntheticSpec(100, 10_000, 1_000, 4, 14, 100_000, 3)),
    ("pods=5,scale", SyntheticSpec(100, 10_000, 1_000, 4, 14, 5)),
]


@pytest.mark.parametrize("text, expected", PARSE_CASES)
def test_parse_spec(text, expected):
    """parse_spec reads key=value lists, with aliases, spacing and defaults for missing keys."""
    assert parse_spec(text) == expected


@pytest.mark.parametrize("text, mentions", [
    ("bogus=1", "bogus"),
    ("scales", "scales"),
    ("pods", "pods"),
    ("pods=lots", "lots"),
    ("pods=1.5", "1.5"),
    ("pods=", "pods"),
    ("pods=1,pods=2", "twice"),
    ("pods=-1", "pods"),
    ("namespaces=0", "namespaces"),
    ("services=5", "headless"),
    ("endpoints=1001", "endpoints_per_service"),
    ("headless_endpoints=5000", "endpoints_per_headless"),
    ("services=2000000,headless=0", "services"),
    ("pods=4000000", "pod"),
])
def test_parse_spec_errors(text, mentions):
    """parse_spec raises ValueError naming the bad key or value."""
    with pytest.raises(ValueError, match=re.escape(mentions)):
        parse_spec(text)


@pytest.mark.parametrize("value", [True, 1.0, "3", None])
def test_spec_rejects_non_integers(value):
    """SyntheticSpec itself rejects counts that are not plain integers."""
    with pytest.raises(ValueError, match="pods"):
        SyntheticSpec(pods=value)


@pytest.mark.parametrize("spec", [SyntheticSpec(), SCALE_SPEC, SyntheticSpec(3, 4, 1, 0, 2, 9, 7)])
def test_format_spec_round_trips(spec):
    """format_spec writes text that parse_spec reads back to the same spec."""
    assert parse_spec(format_spec(spec)) == spec


def test_scale_spec_is_the_documented_one():
    """SCALE_SPEC is the spec the module docstring names, with 50,000 endpoints in total."""
    assert format_spec(SCALE_SPEC).rsplit(",seed=", 1)[0] in synthetic.__doc__
    assert SCALE_SPEC.total_endpoints == 50_000
    assert (SCALE_SPEC.services, SCALE_SPEC.pods) == (10_000, 100_000)


# --- generate -----------------------------------------------------------------------------------

SPECS = [
    SyntheticSpec(),
    SyntheticSpec(namespaces=3, services=17, headless=5, endpoints_per_service=3,
                  endpoints_per_headless=4, pods=200, seed=5),
    # fewer pods than endpoints: the rest get fresh addresses and no targetRef
    SyntheticSpec(namespaces=2, services=10, headless=3, endpoints_per_service=4,
                  endpoints_per_headless=3, pods=11),
    SyntheticSpec(namespaces=1, services=6, headless=6, endpoints_per_headless=2, pods=0),
    SyntheticSpec(namespaces=4, services=5, headless=0, endpoints_per_service=0, pods=30),
    SyntheticSpec(namespaces=2, services=0, headless=0, pods=5),
]


@pytest.fixture(scope="module", params=SPECS, ids=format_spec)
def generated(request):
    return request.param, list(generate(request.param))


def test_generate_streams():
    """generate returns a lazy iterator, not a list."""
    assert isinstance(generate(SCALE_SPEC), types.GeneratorType)


def test_generate_is_deterministic(generated):
    """The same spec yields the same objects in the same order."""
    spec, objects = generated
    assert list(generate(spec)) == objects


def test_seed_changes_names_not_shape():
    """A different seed renames objects but keeps counts and addresses."""
    a = list(generate(SyntheticSpec(seed=1)))
    b = list(generate(SyntheticSpec(seed=2)))
    assert [o["kind"] for o in a] == [o["kind"] for o in b]
    assert [key(o) for o in a] != [key(o) for o in b]
    assert ([o["spec"]["clusterIP"] for o in a if o["kind"] == "Service"]
            == [o["spec"]["clusterIP"] for o in b if o["kind"] == "Service"])


def test_objects_are_independent():
    """Mutating one generated object leaves the others untouched."""
    pods = [o for o in generate(SyntheticSpec(pods=3)) if o["kind"] == "Pod"]
    pods[0]["spec"]["containers"][0]["ports"].append({"containerPort": 1})
    pods[0]["metadata"]["labels"]["x"] = "y"
    assert pods[1]["spec"]["containers"][0]["ports"][-1] != {"containerPort": 1}
    assert "x" not in pods[1]["metadata"]["labels"]


def test_kind_order(generated):
    """Namespaces come first, then services, endpointslices and pods."""
    _, objects = generated
    order = ["Namespace", "Service", "EndpointSlice", "Pod"]
    ranks = [order.index(o["kind"]) for o in objects]
    assert ranks == sorted(ranks)


def test_counts_match_spec(generated):
    """Each kind appears as often as the spec says, endpoints included."""
    spec, objects = generated
    kinds = by_kind(objects)
    assert set(kinds) <= {"Namespace", "Service", "EndpointSlice", "Pod"}
    assert len(kinds["Namespace"]) == spec.namespaces
    assert len(kinds["Service"]) == spec.services
    headless = [s for s in kinds["Service"] if s["spec"]["clusterIP"] == "None"]
    assert len(headless) == spec.headless
    assert len(kinds["EndpointSlice"]) == spec.services
    assert len(kinds["Pod"]) == spec.pods
    headless_names = {key(s) for s in headless}
    for es in kinds["EndpointSlice"]:
        svc = es["metadata"]["namespace"], es["metadata"]["labels"]["kubernetes.io/service-name"]
        want = (spec.endpoints_per_headless if svc in headless_names
                else spec.endpoints_per_service)
        assert len(es["endpoints"]) == want
        assert all(ep["conditions"]["ready"] for ep in es["endpoints"])
        assert all(("hostname" in ep) == (svc in headless_names) for ep in es["endpoints"])
    assert sum(len(es["endpoints"]) for es in kinds["EndpointSlice"]) == spec.total_endpoints


def test_ips_unique_and_in_range(generated):
    """Service IPs are unique in 10.96.0.0/12; pod and endpoint IPs unique in 10.128.0.0/9."""
    spec, objects = generated
    kinds = by_kind(objects)
    service_ips = [s["spec"]["clusterIP"] for s in kinds["Service"]
                   if s["spec"]["clusterIP"] != "None"]
    assert len(set(service_ips)) == len(service_ips)
    for ip in service_ips:
        assert ipaddress.ip_address(ip) in SERVICE_NET
        assert ip not in ("10.96.0.1", "10.96.0.10")
    for s in kinds["Service"]:
        assert s["spec"]["clusterIPs"] == [s["spec"]["clusterIP"]]
    pod_ips = [p["status"]["podIP"] for p in kinds["Pod"]]
    assert len(set(pod_ips)) == len(pod_ips)
    for p in kinds["Pod"]:
        assert ipaddress.ip_address(p["status"]["podIP"]) in POD_NET
        assert p["status"]["podIPs"] == [{"ip": p["status"]["podIP"]}]
        assert p["status"]["hostIPs"] == [{"ip": p["status"]["hostIP"]}]
        assert ipaddress.ip_address(p["status"]["hostIP"]) not in POD_NET
    endpoint_ips = [ep["addresses"][0] for es in kinds["EndpointSlice"] for ep in es["endpoints"]]
    assert len(set(endpoint_ips)) == len(endpoint_ips)
    backed = [ip for ip in endpoint_ips if ip in set(pod_ips)]
    assert len(backed) == min(spec.pods, spec.total_endpoints)
    for ip in endpoint_ips:
        assert ipaddress.ip_address(ip) in POD_NET


def test_slices_reference_services_and_pods(generated):
    """Every slice names an existing service; every targetRef names an existing, matching pod."""
    spec, objects = generated
    kinds = check_cluster_consistent(objects)
    refs = [ep for es in kinds["EndpointSlice"] for ep in es["endpoints"] if "targetRef" in ep]
    assert len(refs) == min(spec.pods, spec.total_endpoints)


def test_names_and_ports_valid(generated):
    """Names are DNS labels (services DNS-1035), port names IANA service names."""
    _, objects = generated
    named_multiport = 0
    for obj in objects:
        name = obj["metadata"]["name"]
        assert len(name) <= 63 and DNS1123_LABEL.match(name), name
        if obj["kind"] == "Service":
            assert DNS1035_LABEL.match(name), name
            ports = obj["spec"]["ports"]
            assert ports
            for p in ports:
                if "name" in p:
                    assert len(p["name"]) <= 15 and IANA_SVC_NAME.match(p["name"]), p
                else:
                    assert len(ports) == 1, "only a lone port may be unnamed"
            named_multiport += len(ports) > 1
        if obj["kind"] == "Pod":
            (container,) = obj["spec"]["containers"]
            assert container["name"] and container["image"]
            assert obj["status"]["phase"] == "Running"
            assert obj["spec"]["nodeName"]
    if sum(o["kind"] == "Service" for o in objects) >= 20:
        assert named_multiport, "expected some multi-port services"


def test_port_layouts_cover_udp_and_grpc():
    """The default spec includes multi-port services with http, grpc and dns/UDP ports."""
    ports = {(p.get("name"), p["port"], p["protocol"])
             for o in generate(SyntheticSpec(services=200, headless=20))
             if o["kind"] == "Service" for p in o["spec"]["ports"]}
    assert {("http", 80, "TCP"), ("grpc", 9090, "TCP"), ("dns", 53, "UDP")} <= ports


def test_scale_spec():
    """SCALE_SPEC yields 10,000 services, 10,000 slices, 50,000 endpoints, 100,000 pods."""
    counts = collections.Counter()
    endpoints = 0
    pod_ips = set()
    for obj in generate(SCALE_SPEC):
        counts[obj["kind"]] += 1
        if obj["kind"] == "EndpointSlice":
            endpoints += len(obj["endpoints"])
        elif obj["kind"] == "Pod":
            pod_ips.add(obj["status"]["podIP"])
    assert counts == {"Namespace": 100, "Service": 10_000, "EndpointSlice": 10_000,
                      "Pod": 100_000}
    assert endpoints == 50_000
    assert len(pod_ips) == 100_000


def test_main_writes_json_lines(capsys):
    """The command line writes one JSON object per line."""
    assert synthetic.main(["services=2,headless=1,pods=3", "--format", "json"]) == 0
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert objects == list(generate(parse_spec("services=2,headless=1,pods=3")))


def test_main_writes_yaml(capsys):
    """The command line's default output is multi-document YAML of the same objects."""
    assert synthetic.main(["namespaces=2,services=3,headless=1,pods=4"]) == 0
    objects = list(yaml.safe_load_all(capsys.readouterr().out))
    assert objects == list(generate(parse_spec("namespaces=2,services=3,headless=1,pods=4")))


def test_main_rejects_bad_spec(capsys):
    """The command line reports a bad spec as a usage error."""
    with pytest.raises(SystemExit) as exit_info:
        synthetic.main(["nope=1"])
    assert exit_info.value.code == 2
    assert "nope" in capsys.readouterr().err


# --- examples/ ----------------------------------------------------------------------------------

CLUSTERS = ("cluster.local", "assemblage.local", "conglomeration.local")
SERVICE_CIDRS = {
    "cluster.local": ["10.96.0.0/16"],
    "assemblage.local": ["10.97.0.0/16"],
    "conglomeration.local": ["10.98.0.0/16", "fd00:98::/64"],
}
POD_CIDRS = {
    "cluster.local": ["10.244.0.0/16"],
    "assemblage.local": ["10.245.0.0/16"],
    "conglomeration.local": ["10.246.0.0/16", "fd00:246::/56"],
}
API_VERSIONS = {
    "Namespace": "v1",
    "Service": "v1",
    "Endpoints": "v1",
    "Pod": "v1",
    "EndpointSlice": "discovery.k8s.io/v1",
    "ServiceImport": "multicluster.x-k8s.io/v1alpha1",
}


def in_any(ip, cidrs):
    return any(ipaddress.ip_address(ip) in ipaddress.ip_network(c) for c in cidrs)


@pytest.fixture(scope="module")
def demo():
    """{cluster: [objects]} from every YAML file under examples/."""
    clusters = {}
    for cluster in sorted(p for p in EXAMPLES.iterdir() if p.is_dir()):
        objects = []
        files = sorted(cluster.rglob("*.yaml")) + sorted(cluster.rglob("*.yml"))
        assert files, f"{cluster} has no manifests"
        for path in files:
            for doc in yaml.safe_load_all(path.read_text()):
                if doc is not None:
                    objects.append(doc)
        clusters[cluster.name] = objects
    return clusters


def services(demo, cluster):
    return {key(o): o for o in demo[cluster] if o["kind"] == "Service"}


def test_examples_are_the_three_clusters(demo):
    """examples/ holds one directory per demo cluster, named after its zone."""
    assert sorted(demo) == sorted(CLUSTERS)


def test_examples_objects_well_formed(demo):
    """Every document has apiVersion, kind and metadata.name, and a known kind."""
    for cluster, objects in demo.items():
        for obj in objects:
            assert isinstance(obj, dict), (cluster, obj)
            assert obj["apiVersion"] == API_VERSIONS[obj["kind"]], (cluster, obj["kind"])
            assert obj["metadata"]["name"], (cluster, obj)
            assert DNS1123_LABEL.match(obj["metadata"]["name"]), obj["metadata"]["name"]


def test_examples_consistent(demo):
    """Each demo cluster's slices name existing services and targetRef existing pods."""
    for _cluster, objects in demo.items():
        check_cluster_consistent(objects)


def test_examples_standard_services(demo):
    """Each cluster has default/kube-system namespaces, kubernetes at .1 and kube-dns at .10."""
    for cluster in CLUSTERS:
        namespaces = {o["metadata"]["name"] for o in demo[cluster] if o["kind"] == "Namespace"}
        assert {"default", "kube-system"} <= namespaces
        svcs = services(demo, cluster)
        base = SERVICE_CIDRS[cluster][0].split(".0.0/")[0]
        assert svcs["default", "kubernetes"]["spec"]["clusterIP"] == f"{base}.0.1"
        kube_dns = svcs["kube-system", "kube-dns"]
        assert kube_dns["spec"]["clusterIP"] == f"{base}.0.10"
        assert {(p["name"], p["port"], p["protocol"]) for p in kube_dns["spec"]["ports"]} >= {
            ("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")}


def test_examples_addresses_tell_clusters_apart(demo):
    """Service and pod IPs lie in their cluster's own CIDRs and are unique per cluster."""
    for cluster, objects in demo.items():
        seen = []
        for obj in objects:
            if obj["kind"] == "Service" and obj["spec"]["type"] != "ExternalName":
                for ip in obj["spec"]["clusterIPs"]:
                    if ip != "None":
                        assert in_any(ip, SERVICE_CIDRS[cluster]), (cluster, key(obj), ip)
                        seen.append(ip)
                assert obj["spec"]["clusterIP"] == obj["spec"]["clusterIPs"][0]
            if obj["kind"] == "Pod":
                ips = [p["ip"] for p in obj["status"]["podIPs"]]
                assert ips[0] == obj["status"]["podIP"]
                for ip in ips:
                    assert in_any(ip, POD_CIDRS[cluster]), (cluster, key(obj), ip)
                seen.extend(ips)
        assert len(seen) == len(set(seen)), f"duplicate address in {cluster}"


def test_examples_dual_stack_service(demo):
    """A PreferDualStack service has one v4 and one v6 ClusterIP and a slice for each family."""
    found = []
    for cluster, objects in demo.items():
        for (ns, name), svc in services(demo, cluster).items():
            spec = svc["spec"]
            if spec.get("ipFamilies") != ["IPv4", "IPv6"]:
                continue
            assert spec["ipFamilyPolicy"] == "PreferDualStack"
            assert [ipaddress.ip_address(ip).version for ip in spec["clusterIPs"]] == [4, 6]
            families = {o["addressType"] for o in objects if o["kind"] == "EndpointSlice"
                        and o["metadata"]["namespace"] == ns
                        and o["metadata"]["labels"]["kubernetes.io/service-name"] == name}
            assert families == {"IPv4", "IPv6"}
            found.append((cluster, ns, name))
    assert found


def slices_of(objects, ns, name):
    return [o for o in objects if o["kind"] == "EndpointSlice"
            and o["metadata"]["namespace"] == ns
            and o["metadata"]["labels"]["kubernetes.io/service-name"] == name]


def test_examples_statefulset_headless_service(demo):
    """A headless service has ready endpoints with hostnames <set>-0, <set>-1... and their pods."""
    found = []
    for cluster, objects in demo.items():
        for (ns, name), svc in services(demo, cluster).items():
            if svc["spec"].get("clusterIP") != "None":
                continue
            endpoints = [ep for es in slices_of(objects, ns, name) for ep in es["endpoints"]]
            hostnames = [ep.get("hostname") for ep in endpoints if ep["conditions"]["ready"]]
            if len(hostnames) >= 2 and all(hostnames):
                prefix = hostnames[0].rsplit("-", 1)[0]
                assert hostnames == [f"{prefix}-{i}" for i in range(len(hostnames))]
                assert all(ep["targetRef"]["name"] == ep["hostname"] for ep in endpoints)
                found.append((cluster, ns, name))
    assert found


def test_examples_external_names(demo):
    """ExternalName services point into another demo cluster's zone and outside all of them."""
    targets = {}
    for cluster in CLUSTERS:
        for k, svc in services(demo, cluster).items():
            if svc["spec"]["type"] == "ExternalName":
                assert "clusterIP" not in svc["spec"]
                targets[cluster, k] = svc["spec"]["externalName"]
    cross = [(c, t) for (c, _), t in targets.items()
             if any(t.endswith("." + z) for z in CLUSTERS if z != c)]
    external = [t for t in targets.values() if not any(t.endswith("." + z) for z in CLUSTERS)]
    assert cross and "www.example.com" in external
    # the cross-cluster target is a real service in that cluster
    for _cluster, target in cross:
        name, ns, _svc, zone = target.split(".", 3)
        assert (ns, name) in services(demo, zone), target


def test_examples_multi_port_service(demo):
    """Some service besides kube-dns has several named ports (SRV records)."""
    found = [(c, k) for c in CLUSTERS for k, s in services(demo, c).items()
             if k != ("kube-system", "kube-dns") and len(s["spec"].get("ports", [])) >= 3
             and all(p.get("name") for p in s["spec"]["ports"])]
    assert found


def test_examples_shared_namespace_and_service(demo):
    """A namespace exists in two clusters and a service in it has a different IP in each."""
    namespace_sets = {c: {o["metadata"]["name"] for o in demo[c] if o["kind"] == "Namespace"}
                      for c in CLUSTERS}
    assert "shared" in namespace_sets["cluster.local"] & namespace_sets["assemblage.local"]
    both = services(demo, "cluster.local").keys() & services(demo, "assemblage.local").keys()
    both -= {("default", "kubernetes"), ("kube-system", "kube-dns")}
    assert ("shared", "web") in both
    ips = {c: services(demo, c)["shared", "web"]["spec"]["clusterIP"]
           for c in ("cluster.local", "assemblage.local")}
    assert ips["cluster.local"] != ips["assemblage.local"]
    # and one that only the second cluster has, reached only through fallthrough
    only_second = services(demo, "assemblage.local").keys() - services(demo, "cluster.local").keys()
    assert any(ns == "shared" for ns, _ in only_second)


def test_examples_not_ready_service(demo):
    """A service's only endpoints are not ready (conditions.ready false)."""
    found = []
    for cluster, objects in demo.items():
        for (ns, name) in services(demo, cluster):
            endpoints = [ep for es in slices_of(objects, ns, name) for ep in es["endpoints"]]
            if endpoints and not any(ep["conditions"]["ready"] for ep in endpoints):
                found.append((cluster, ns, name))
    assert found


def test_examples_endpoint_pod_names(demo):
    """A headless service has endpoints without hostname whose targetRef names a pod."""
    found = []
    for cluster, objects in demo.items():
        for (ns, name), svc in services(demo, cluster).items():
            if svc["spec"].get("clusterIP") != "None":
                continue
            endpoints = [ep for es in slices_of(objects, ns, name) for ep in es["endpoints"]]
            if endpoints and all("hostname" not in ep and "targetRef" in ep for ep in endpoints):
                found.append((cluster, ns, name))
    assert found


def test_examples_service_import(demo):
    """One cluster has a ClusterSetIP ServiceImport for a service exported by two clusters."""
    imports = [(c, o) for c in CLUSTERS for o in demo[c] if o["kind"] == "ServiceImport"]
    assert len(imports) == 1
    cluster, imp = imports[0]
    assert imp["spec"]["type"] == "ClusterSetIP"
    assert imp["spec"]["ips"] and all(ipaddress.ip_address(ip) for ip in imp["spec"]["ips"])
    assert imp["spec"]["ports"]
    exporters = [c["cluster"] for c in imp["status"]["clusters"]]
    for exporter in exporters:
        svc = services(demo, exporter)[key(imp)]
        assert ({(p["name"], p["port"], p["protocol"]) for p in svc["spec"]["ports"]}
                == {(p["name"], p["port"], p["protocol"]) for p in imp["spec"]["ports"]})


def test_examples_readme_lists_every_service(demo):
    """examples/README.md names every demo service under its cluster's heading."""
    readme = (EXAMPLES / "README.md").read_text()
    sections = re.split(r"^## ", readme, flags=re.M)
    for cluster in CLUSTERS:
        (section,) = [s for s in sections if s.startswith(f"`{cluster}`")]
        for ns, name in services(demo, cluster):
            assert f"`{ns}/{name}`" in section, (cluster, ns, name)
