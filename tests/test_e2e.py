"""End to end: the real server, three simulated API servers, dnspython over UDP and TCP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from conftest import EXAMPLES, free_dns_port, wait_for
from twisted.internet import defer

from kubernetai.app.server import KubernetaiService, load_service
from kubernetai.pkg import reactor_thread
from kubernetai.sandbox.server import Sandbox

CLUSTERS = ("cluster.local", "assemblage.local", "conglomeration.local")
# twistd finds plugins in twisted/plugins/ on sys.path: put this source tree there, so the
# test runs the plugin of the code under test (an editable install does not expose it).
TWISTD = str(Path(sys.executable).parent / "twistd")
SOURCE_ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}

# Corefile.example's layout, with the sandboxes' ports filled in.
COREFILE = """\
cluster.local assemblage.local conglomeration.local in-addr.arpa ip6.arpa {{
    bind 127.0.0.1
    errors
    kubernetai cluster.local in-addr.arpa ip6.arpa {{
        endpoint {cluster}
        pods insecure
        fallthrough cluster.local in-addr.arpa ip6.arpa
    }}
    kubernetai assemblage.local cluster.local in-addr.arpa ip6.arpa {{
        endpoint {assemblage}
        endpoint_pod_names
        fallthrough in-addr.arpa ip6.arpa
    }}
    kubernetai conglomeration.local in-addr.arpa ip6.arpa {{
        endpoint {conglomeration}
    }}
}}
"""

# The same three clusters all serving cluster.local: fallthrough in stanza order.
SAME_ZONE = """\
cluster.local {{
    bind 127.0.0.1
    kubernetai {{
        endpoint {cluster}
        fallthrough
    }}
    kubernetai {{
        endpoint {assemblage}
        fallthrough
    }}
    kubernetai {{
        endpoint {conglomeration}
    }}
}}
"""


def _big_headless(count: int) -> list[dict]:
    endpoints = [{"addresses": [f"10.250.{i // 250}.{i % 250 + 1}"], "hostname": f"m-{i}",
                  "conditions": {"ready": True}} for i in range(count)]
    return [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "big", "namespace": "shop"},
         "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "big-1", "namespace": "shop",
                      "labels": {"kubernetes.io/service-name": "big"}},
         "addressType": "IPv4", "endpoints": endpoints,
         "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    ]


@pytest.fixture(scope="module")
def sandboxes(reactor_running) -> Iterator[dict[str, Sandbox]]:
    """One simulated API server per demo cluster (module scope: tests restore what they change)."""
    servers = {}
    for name in CLUSTERS:
        server = Sandbox(bookmark_interval=1.0, history_size=50)
        server.apply(EXAMPLES / name)
        server.start()
        servers[name] = server
    servers["cluster.local"].apply(_big_headless(500))
    yield servers
    for server in servers.values():
        server.stop()


def urls(sandboxes: dict[str, Sandbox]) -> dict[str, str]:
    """Corefile template values: the first label of each cluster's name -> its API URL."""
    return {name.split(".")[0]: server.url for name, server in sandboxes.items()}


def start_server(corefile: Path) -> tuple[KubernetaiService, int]:
    service = load_service(str(corefile), port_override=0)

    def start() -> defer.Deferred:
        service.startService()
        return service.listening
    ports = reactor_thread.in_reactor(start)
    return service, ports[0].getHost().port


@pytest.fixture(scope="module")
def server(sandboxes, tmp_path_factory) -> Iterator[int]:
    """The DNS server built from Corefile.example's layout; yields its port."""
    path = tmp_path_factory.mktemp("e2e") / "Corefile"
    path.write_text(COREFILE.format(**urls(sandboxes)))
    service, port = start_server(path)
    yield port
    reactor_thread.in_reactor(service.stopService)


def ask(port: int, name: str, rdtype: str = "A", *, tcp: bool = False,
        **kwargs) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kwargs)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, "127.0.0.1", port=port, timeout=5)


def answers(response: dns.message.Message) -> list[str]:
    return sorted(rr.to_text() for rrset in response.answer for rr in rrset)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_cluster_ip_service(server, tcp):
    """A ClusterIP service answers A with AA set, over UDP and TCP."""
    response = ask(server, "web.shared.svc.cluster.local", tcp=tcp)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert answers(response) == ["10.96.100.10"]
    assert response.answer[0].ttl == 5


def test_fallthrough_to_the_next_cluster(server):
    """A name the first cluster does not have falls through to the next stanza's cluster."""
    assert answers(ask(server, "reports.shared.svc.cluster.local")) == ["10.97.100.20"]
    assert answers(ask(server, "web.shared.svc.assemblage.local")) == ["10.97.100.10"]


def test_fallthrough_across_three_stanzas_same_zone(sandboxes, tmp_path):
    """Three stanzas on one zone: each name is answered by the first cluster that has it."""
    path = tmp_path / "Corefile"
    path.write_text(SAME_ZONE.format(**urls(sandboxes)))
    service, port = start_server(path)
    try:
        assert answers(ask(port, "web.shared.svc.cluster.local")) == ["10.96.100.10"]
        assert answers(ask(port, "reports.shared.svc.cluster.local")) == ["10.97.100.20"]
        assert answers(ask(port, "gateway.edge.svc.cluster.local", "AAAA")) == ["fd00:98::30:10"]
        missing = ask(port, "nothing.edge.svc.cluster.local")
        assert missing.rcode() == dns.rcode.NXDOMAIN
        assert missing.authority[0].rdtype == dns.rdatatype.SOA
    finally:
        reactor_thread.in_reactor(service.stopService)


def test_nxdomain_has_aa_and_soa(server):
    """NXDOMAIN is authoritative with the zone SOA (minimum = ttl) in the authority section."""
    response = ask(server, "nope.shared.svc.conglomeration.local")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA
    soa = response.authority[0]
    assert soa.name.to_text() == "conglomeration.local."
    record = soa[0]
    assert record.mname.to_text() == "ns.dns.conglomeration.local."
    assert record.rname.to_text() == "hostmaster.conglomeration.local."
    assert (record.refresh, record.retry, record.expire, record.minimum) == (7200, 1800, 86400, 5)
    assert abs(record.serial - time.time()) < 3600


def test_nodata_for_missing_type(server):
    """An IPv4-only service asked for AAAA is NODATA: NOERROR, no answer, SOA, AA."""
    response = ask(server, "web.shared.svc.cluster.local", "AAAA")
    assert response.rcode() == dns.rcode.NOERROR and not response.answer
    assert response.authority[0].rdtype == dns.rdatatype.SOA
    assert response.flags & dns.flags.AA


def test_srv_with_glue(server):
    """SRV for a named port targets the service name, with its A record as glue."""
    response = ask(server, "_grpc._tcp.cart.shop.svc.cluster.local", "SRV")
    assert answers(response) == ["0 100 9090 cart.shop.svc.cluster.local."]
    glue = [(rrset.name.to_text(), rr.to_text()) for rrset in response.additional
            for rr in rrset]
    assert ("cart.shop.svc.cluster.local.", "10.96.20.20") in glue


def test_headless_service_and_endpoint_hostnames(server):
    """A headless service answers every ready endpoint; a hostname answers its own IP."""
    assert answers(ask(server, "nginx.default.svc.cluster.local")) == [
        "10.244.1.10", "10.244.1.11", "10.244.2.10"]
    assert answers(ask(server, "web-0.nginx.default.svc.cluster.local")) == ["10.244.1.10"]


def test_dual_stack_service(server):
    """A dual-stack service answers A with its IPv4 and AAAA with its IPv6 ClusterIP."""
    assert answers(ask(server, "gateway.edge.svc.conglomeration.local")) == ["10.98.30.10"]
    assert answers(ask(server, "gateway.edge.svc.conglomeration.local", "AAAA")) == [
        "fd00:98::30:10"]


def test_external_name_chased_across_zones(server):
    """An ExternalName into another zone of the server is answered with CNAME and target."""
    response = ask(server, "storefront.shared.svc.assemblage.local")
    assert answers(response) == ["10.96.20.10", "frontend.shop.svc.cluster.local."]
    assert response.answer[0].rdtype == dns.rdatatype.CNAME


def test_external_name_loop_across_zones_is_bounded(server, sandboxes):
    """Two ExternalNames pointing at each other across zones end in a bounded CNAME chain."""
    def external(name: str, target: str) -> dict:
        return {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "shop"},
                "spec": {"type": "ExternalName", "externalName": target}}
    sandboxes["cluster.local"].apply(external("loop1", "loop2.shop.svc.conglomeration.local"))
    sandboxes["conglomeration.local"].apply(external("loop2", "loop1.shop.svc.cluster.local"))
    try:
        wait_for(lambda: ask(server, "loop2.shop.svc.conglomeration.local").answer)
        response = ask(server, "loop1.shop.svc.cluster.local", tcp=True)
        assert response.rcode() == dns.rcode.NOERROR
        assert 2 <= len(response.answer) <= 12  # CoreDNS stops such a chain after 10 hops
        assert all(rrset.rdtype == dns.rdatatype.CNAME for rrset in response.answer)
    finally:
        sandboxes["cluster.local"].delete("Service", "shop", "loop1")
        sandboxes["conglomeration.local"].delete("Service", "shop", "loop2")


def test_non_ascii_name_is_nxdomain(server):
    """A name with non-ASCII bytes is simply not found (NXDOMAIN), not a server failure."""
    query = dns.message.make_query(dns.name.from_text("caf\\233.shared.svc.cluster.local"), "A")
    response = dns.query.udp(query, "127.0.0.1", port=server, timeout=5)
    assert response.rcode() == dns.rcode.NXDOMAIN


def test_ptr_for_service_ip(server):
    """PTR of a ClusterIP names the service; unknown IPs fall through to NXDOMAIN."""
    assert answers(ask(server, "20.100.97.10.in-addr.arpa", "PTR")) == [
        "reports.shared.svc.assemblage.local."]
    assert ask(server, "99.99.99.10.in-addr.arpa", "PTR").rcode() == dns.rcode.NXDOMAIN


def test_pods_insecure(server):
    """pods insecure answers a-b-c-d.<ns>.pod.<zone> with that IP."""
    assert answers(ask(server, "10-244-1-10.default.pod.cluster.local")) == ["10.244.1.10"]


def test_dns_version_and_case(server):
    """dns-version TXT is 1.1.0; names match case-insensitively and the question is echoed."""
    assert answers(ask(server, "dns-version.cluster.local", "TXT")) == ['"1.1.0"']
    response = ask(server, "WEB.Shared.SVC.Cluster.Local")
    assert answers(response) == ["10.96.100.10"]
    assert response.question[0].name.to_text() == "WEB.Shared.SVC.Cluster.Local."


def test_outside_every_zone_is_refused(server):
    """A name outside every zone of the server block is REFUSED."""
    assert ask(server, "www.example.com").rcode() == dns.rcode.REFUSED


def test_large_headless_truncates_on_udp_whole_records(server):
    """500 endpoints: UDP without EDNS gets TC and whole records; TCP gets all 500."""
    udp = ask(server, "big.shop.svc.cluster.local")
    assert udp.flags & dns.flags.TC
    assert 0 < len(answers(udp)) < 500
    edns = ask(server, "big.shop.svc.cluster.local", use_edns=0, payload=4096)
    assert edns.flags & dns.flags.TC and edns.edns == 0
    assert len(answers(edns)) > len(answers(udp))
    full = ask(server, "big.shop.svc.cluster.local", tcp=True)
    assert len(answers(full)) == 500 and not full.flags & dns.flags.TC


def test_api_changes_show_in_dns(server, sandboxes):
    """A service created through the API appears, and disappears once deleted."""
    cluster = sandboxes["conglomeration.local"]
    cluster.apply({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "fresh", "namespace": "edge"},
                   "spec": {"clusterIP": "10.98.77.7", "ports": [{"port": 80}]}})
    name = "fresh.edge.svc.conglomeration.local"
    wait_for(lambda: answers(ask(server, name)) == ["10.98.77.7"])
    cluster.delete("Service", "edge", "fresh")
    wait_for(lambda: ask(server, name).rcode() == dns.rcode.NXDOMAIN)


def test_recovers_from_410_and_cut_watch(server, sandboxes):
    """After expired history (410) and a cut watch, later changes still reach DNS."""
    cluster = sandboxes["assemblage.local"]
    for step, fault in enumerate((cluster.expire_history, cluster.cut_watches)):
        fault()
        ip = f"10.97.88.{step + 1}"
        cluster.apply({"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": "after-fault", "namespace": "shared"},
                       "spec": {"clusterIP": ip, "ports": [{"port": 80}]}})
        wait_for(lambda ip=ip: answers(ask(server, "after-fault.shared.svc.assemblage.local"))
                 == [ip])
        cluster.delete("Service", "shared", "after-fault")
        wait_for(lambda: ask(server, "after-fault.shared.svc.assemblage.local").rcode()
                 == dns.rcode.NXDOMAIN)


def test_one_cluster_down_others_answer(server, sandboxes):
    """With one API server refusing connections, every cluster keeps answering from cache."""
    down = sandboxes["conglomeration.local"]
    down.refuse()
    try:
        assert answers(ask(server, "web.shared.svc.cluster.local")) == ["10.96.100.10"]
        assert answers(ask(server, "gateway.edge.svc.conglomeration.local")) == ["10.98.30.10"]
    finally:
        down.accept()


def test_unsynced_name_error_is_servfail(tmp_path, reactor_running):
    """Before its first sync, a stanza without fallthrough answers a name error SERVFAIL."""
    path = tmp_path / "Corefile"
    path.write_text("cluster.local {\n    bind 127.0.0.1\n    kubernetai {\n"
                    "        endpoint http://127.0.0.1:9\n        startup_timeout 0.2s\n"
                    "    }\n}\n")
    service, port = start_server(path)
    try:
        response = ask(port, "web.shared.svc.cluster.local")
        assert response.rcode() == dns.rcode.SERVFAIL
    finally:
        reactor_thread.in_reactor(service.stopService)


def test_twistd_plugin(sandboxes, tmp_path):
    """`twistd -n kubernetai --corefile` serves the Corefile; a bad one exits with file:line."""
    path = tmp_path / "Corefile"
    path.write_text(COREFILE.format(**urls(sandboxes)))
    port = free_dns_port()
    process = subprocess.Popen([TWISTD, "--nodaemon", "--pidfile=",
                                "kubernetai", "--corefile", str(path), "--dns-port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=tmp_path, env=SOURCE_ENV)
    try:
        def answered() -> bool:
            try:
                return answers(ask(port, "web.shared.svc.cluster.local")) == ["10.96.100.10"]
            except (dns.exception.Timeout, OSError):
                return False
        wait_for(answered, timeout=30)
    finally:
        process.terminate()
        process.wait(30)
    bad = tmp_path / "Bad"
    bad.write_text("cluster.local {\n    kubernetai {\n        ttl 99999\n    }\n}\n")
    result = subprocess.run([TWISTD, "--nodaemon", "--pidfile=",
                             "kubernetai", "--corefile", str(bad)],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path,
                            env=SOURCE_ENV)
    assert result.returncode == 1
    assert result.stderr == f"{bad}:3: kubernetai: ttl must be in range [0, 3600]: 99999\n"


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_demo_command(tmp_path):
    """`kubernetai demo` serves the three demo clusters and prints dig, curl and explain
    lines that work."""
    process = subprocess.Popen([sys.executable, "-m", "kubernetai", "demo", "--dns-port", "0",
                                "--api-ports", "0,0,0", "--http-ports", "0,0,0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=Path(__file__).resolve().parent.parent)
    try:
        port = None
        lines = []
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, f"demo exited: {process.stderr.read()[-2000:]}"
            lines.append(line)
            if line.startswith("DNS server on 127.0.0.1 port "):
                port = int(line.split()[5])
        assert port, lines
        tries = []
        while not any(line.strip().startswith("kubernetai explain") for line in tries):
            line = process.stdout.readline()
            assert line, f"demo exited: {tries}"
            tries.append(line)
        dig_lines = [line for line in tries if line.strip().startswith("dig ")]
        assert "reports.shared.svc.cluster.local" in "".join(dig_lines)
        assert answers(ask(port, "reports.shared.svc.cluster.local")) == ["10.97.100.20"]
        assert answers(ask(port, "web.shared.svc.cluster.local")) == ["10.96.100.10"]
        urls = {line.split()[1].rsplit("/", 1)[1]: line.split()[1]
                for line in tries if line.strip().startswith("curl ")}
        assert sorted(urls) == ["health", "metrics", "ready"]
        assert http_get(urls["health"]) == (200, "OK")
        wait_for(lambda: http_get(urls["ready"]) == (200, "OK"), timeout=15,
                 what="the demo's /ready")
        status, metrics = http_get(urls["metrics"])
        assert status == 200 and 'coredns_dns_requests_total{' in metrics
        explain = next(line for line in tries if line.strip().startswith("kubernetai explain"))
        result = subprocess.run([sys.executable, "-m", "kubernetai", *explain.split()[1:],
                                 "--json"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["answer"] == [
            "reports.shared.svc.cluster.local. 5 IN A 10.97.100.20"]
    finally:
        process.terminate()
        process.wait(30)
