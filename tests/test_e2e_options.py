"""End to end, one stanza option at a time: the real server against a simulated API server."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import dns.rcode
import dns.rdatatype
import pytest
from test_e2e import answers, ask, start_server

from kubernetai.pkg import reactor_thread
from kubernetai.sandbox.server import Sandbox

NS_SHOP = {"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": "shop", "labels": {"team": "shop"}}}
NS_OPS = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ops"}}


def _service(name: str, namespace: str, ip: str, **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]}}


def _slice(service: str, namespace: str, endpoints: list[dict], **labels: str) -> dict:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{service}-abcde", "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service, **labels}},
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}


def _pod(name: str, namespace: str, ip: str, phase: str = "Running") -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]}}


OBJECTS = [
    NS_SHOP, NS_OPS,
    _service("cart", "shop", "10.96.1.1", app="cart"),
    _slice("cart", "shop", [{"addresses": ["10.244.0.5"], "conditions": {"ready": True}}]),
    _service("tools", "ops", "10.96.1.2", app="tools"),
    _slice("tools", "ops", [{"addresses": ["10.244.0.6"]}]),
    _service("idle", "shop", "10.96.1.3", app="idle"),
    _slice("idle", "shop", [{"addresses": ["10.244.0.7"], "conditions": {"ready": False}}]),
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": "shop"},
     "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}},
    _slice("db", "shop", [{"addresses": ["10.244.0.8"], "hostname": "db-0",
                           "targetRef": {"kind": "Pod", "name": "db-0", "namespace": "shop"}},
                          {"addresses": ["10.244.0.9"],
                           "targetRef": {"kind": "Pod", "name": "db-replica-x7k2p",
                                         "namespace": "shop"}}]),
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "zoned", "namespace": "shop"},
     "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}},
    _slice("zoned", "shop", [{"addresses": ["10.244.1.1"], "zone": "zone-a"},
                             {"addresses": ["10.244.2.1"], "zone": "zone-b"}]),
    _pod("db-0", "shop", "10.244.0.8"),
    _pod("db-replica-x7k2p", "shop", "10.244.0.9"),
    _pod("finished", "shop", "10.244.0.10", phase="Succeeded"),
    {"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
     "metadata": {"name": "cart", "namespace": "shop"},
     "spec": {"type": "ClusterSetIP", "ips": ["10.99.0.1"],
              "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
]


@pytest.fixture(scope="module")
def cluster(reactor_running) -> Iterator[Sandbox]:
    server = Sandbox(use_tls=True, token="demo-token")
    server.apply(OBJECTS)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def serve(cluster: Sandbox, tmp_path: Path):
    """Start a server whose one stanza has the given options; yield its port."""
    @contextlib.contextmanager
    def run(options: str, zones: str = "cluster.local", block_zones: str | None = None,
            extra: str = "") -> Iterator[int]:
        kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig")
        body = (f"{block_zones or zones} {{\n    bind 127.0.0.1\n"
                f"    kubernetai {zones} {{\n        kubeconfig {kubeconfig}\n"
                f"{options}\n    }}\n{extra}}}\n")
        path = tmp_path / "Corefile"
        path.write_text(body)
        service, port = start_server(path)
        try:
            yield port
        finally:
            reactor_thread.in_reactor(service.stopService)
    return run


def rcode(port: int, name: str, rdtype: str = "A") -> str:
    return dns.rcode.to_text(ask(port, name, rdtype).rcode())


def test_defaults(serve):
    """No options: ClusterIP answers, pods disabled, TTL 5, not-ready-only service still answers."""
    with serve("") as port:
        response = ask(port, "cart.shop.svc.cluster.local")
        assert answers(response) == ["10.96.1.1"] and response.answer[0].ttl == 5
        assert rcode(port, "10-244-0-8.shop.pod.cluster.local") == "NXDOMAIN"
        assert answers(ask(port, "idle.shop.svc.cluster.local")) == ["10.96.1.3"]


def test_ttl(serve):
    """ttl sets the answer TTL and the SOA minimum."""
    with serve("        ttl 30") as port:
        assert ask(port, "cart.shop.svc.cluster.local").answer[0].ttl == 30
        negative = ask(port, "nope.shop.svc.cluster.local")
        assert negative.authority[0][0].minimum == 30


def test_namespaces(serve):
    """namespaces limits the answers to the listed namespaces."""
    with serve("        namespaces shop") as port:
        assert answers(ask(port, "cart.shop.svc.cluster.local")) == ["10.96.1.1"]
        assert rcode(port, "tools.ops.svc.cluster.local") == "NXDOMAIN"


def test_namespace_labels(serve):
    """namespace_labels exposes only namespaces whose labels match, filtered by the server."""
    with serve("        namespace_labels team=shop") as port:
        assert answers(ask(port, "cart.shop.svc.cluster.local")) == ["10.96.1.1"]
        assert rcode(port, "tools.ops.svc.cluster.local") == "NXDOMAIN"


def test_labels(serve, cluster):
    """labels watches only the matching services (a server-side label selector)."""
    with serve("        labels app=cart") as port:
        assert answers(ask(port, "cart.shop.svc.cluster.local")) == ["10.96.1.1"]
        assert rcode(port, "tools.ops.svc.cluster.local") == "NXDOMAIN"
    assert ("watch", "services") in cluster.request_counts()  # a watch-list: no list


def test_pods_insecure_and_verified(serve):
    """insecure answers any well-formed pod name; verified only IPs of live pods."""
    with serve("        pods insecure") as port:
        assert answers(ask(port, "10-244-0-99.shop.pod.cluster.local")) == ["10.244.0.99"]
    with serve("        pods verified") as port:
        assert answers(ask(port, "10-244-0-8.shop.pod.cluster.local")) == ["10.244.0.8"]
        assert rcode(port, "10-244-0-99.shop.pod.cluster.local") == "NXDOMAIN"
        assert rcode(port, "10-244-0-10.shop.pod.cluster.local") == "NXDOMAIN"  # Succeeded


def test_endpoint_pod_names(serve):
    """endpoint_pod_names names an endpoint without hostname after its pod, not its dashed IP."""
    with serve("") as port:
        assert answers(ask(port, "10-244-0-9.db.shop.svc.cluster.local")) == ["10.244.0.9"]
    with serve("        endpoint_pod_names") as port:
        assert answers(ask(port, "db-replica-x7k2p.db.shop.svc.cluster.local")) == ["10.244.0.9"]
        # Headless SRV comes from the endpoint slice's ports (here http/8080), per endpoint.
        srv = answers(ask(port, "_http._tcp.db.shop.svc.cluster.local", "SRV"))
        assert srv == ["0 50 8080 db-0.db.shop.svc.cluster.local.",
                       "0 50 8080 db-replica-x7k2p.db.shop.svc.cluster.local."]


def test_noendpoints(serve):
    """noendpoints: headless and endpoint names are NXDOMAIN, ClusterIPs still answer."""
    with serve("        noendpoints") as port:
        assert answers(ask(port, "cart.shop.svc.cluster.local")) == ["10.96.1.1"]
        assert rcode(port, "db.shop.svc.cluster.local") == "NXDOMAIN"


def test_ignore_empty_service(serve):
    """ignore empty_service: a ClusterIP service with no ready endpoint is NXDOMAIN."""
    with serve("        ignore empty_service") as port:
        assert rcode(port, "idle.shop.svc.cluster.local") == "NXDOMAIN"
        assert answers(ask(port, "cart.shop.svc.cluster.local")) == ["10.96.1.1"]


def test_multicluster(serve):
    """multicluster serves ServiceImports under the clusterset zone."""
    with serve("        multicluster clusterset.local",
               zones="cluster.local clusterset.local") as port:
        assert answers(ask(port, "cart.shop.svc.clusterset.local")) == ["10.99.0.1"]
        assert answers(ask(port, "cart.shop.svc.cluster.local")) == ["10.96.1.1"]


def test_zonal(serve):
    """zonal: <zone>.pin._zone.<svc> narrows a headless service to one topology zone."""
    with serve("        zonal") as port:
        assert answers(ask(port, "zone-a.pin._zone.zoned.shop.svc.cluster.local")) == [
            "10.244.1.1"]
        assert answers(ask(port, "zoned.shop.svc.cluster.local")) == ["10.244.1.1", "10.244.2.1"]
        nowhere = ask(port, "zone-c.pin._zone.zoned.shop.svc.cluster.local")
        assert nowhere.rcode() == dns.rcode.NOERROR and not nowhere.answer  # pin: NODATA
        assert answers(ask(port, "zone-c.prefer._zone.zoned.shop.svc.cluster.local")) == [
            "10.244.1.1", "10.244.2.1"]


def test_fallthrough_zones(serve):
    """fallthrough ZONES passes only names in those zones; others stay NXDOMAIN here."""
    with serve("        fallthrough in-addr.arpa",
               zones="cluster.local in-addr.arpa") as port:
        # The only stanza: a passed-on name reaches no plugin and is SERVFAIL, like CoreDNS.
        assert rcode(port, "9.9.9.10.in-addr.arpa", "PTR") == "SERVFAIL"
        assert rcode(port, "nope.shop.svc.cluster.local") == "NXDOMAIN"
        assert answers(ask(port, "1.1.96.10.in-addr.arpa", "PTR")) == [
            "cart.shop.svc.cluster.local."]


def test_tls_option(cluster, tmp_path):
    """endpoint + tls CERT KEY CACERT authenticates with the client certificate."""
    files = cluster.tls_files
    path = tmp_path / "Corefile"
    path.write_text(f"cluster.local {{\n    bind 127.0.0.1\n    kubernetai {{\n"
                    f"        endpoint {cluster.url}\n"
                    f"        tls {files.client_cert} {files.client_key} {files.ca_cert}\n"
                    f"    }}\n}}\n")
    service, port = start_server(path)
    try:
        assert answers(ask(port, "cart.shop.svc.cluster.local")) == ["10.96.1.1"]
    finally:
        reactor_thread.in_reactor(service.stopService)


def test_kubeconfig_context(cluster, tmp_path):
    """kubeconfig FILE CONTEXT picks the named context of a multi-context file."""
    import yaml
    config = yaml.safe_load(cluster.write_kubeconfig(tmp_path / "base").read_text())
    config["clusters"].append({"name": "nowhere",
                               "cluster": {"server": "http://127.0.0.1:9"}})
    config["contexts"].append({"name": "broken",
                               "context": {"cluster": "nowhere", "user": "sandbox-admin"}})
    config["current-context"] = "broken"
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    corefile = tmp_path / "Corefile"
    corefile.write_text(f"cluster.local {{\n    bind 127.0.0.1\n    kubernetai {{\n"
                        f"        kubeconfig {path} sandbox\n    }}\n}}\n")
    service, port = start_server(corefile)
    try:
        assert answers(ask(port, "cart.shop.svc.cluster.local")) == ["10.96.1.1"]
    finally:
        reactor_thread.in_reactor(service.stopService)


def test_apex_records(serve):
    """The apex answers SOA; NS needs a non-loopback server address; apex A is NODATA."""
    with serve("") as port:
        soa = ask(port, "cluster.local", "SOA")
        assert soa.answer[0].rdtype == dns.rdatatype.SOA
        # Bound to 127.0.0.1 only: like CoreDNS (boundIPs skips loopback), no NS address.
        ns = ask(port, "cluster.local", "NS")
        assert ns.rcode() == dns.rcode.NOERROR and not ns.answer
        apex_a = ask(port, "cluster.local", "A")
        assert apex_a.rcode() == dns.rcode.NOERROR and not apex_a.answer
