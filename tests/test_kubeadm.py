"""The kubeadm Corefile, `kubernetai` written for `kubernetes`, run by twistd end to end.

One server process runs kubeadm's default Corefile (only the addresses are this test's: free
ports on 127.0.0.1, the stanza's `endpoint`, and `forward`'s upstream, a Twisted Names
authority this test starts on loopback) beside the server blocks a kubeadm
`stubDomains` translation adds, and a block with `rewrite` and `hosts`. Everything is asked
over real UDP and TCP sockets with dnspython, and the upstream counts what reaches it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from conftest import wait_for
from twistd_process import TwistdServer
from upstream_server import UpstreamServer

from kubernetai.pkg.reactor_thread import in_reactor
from kubernetai.sandbox.ports import free_port
from kubernetai.sandbox.server import Sandbox

TWISTD = str(Path(sys.executable).parent / "twistd")
ROOT = Path(__file__).resolve().parent.parent
SOURCE_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
EXAMPLES = ROOT / "examples"

ZONE = """$ORIGIN example.org.
$TTL 300
@       IN SOA ns1.example.org. hostmaster.example.org. 2024010101 3600 600 86400 60
@       IN NS  ns1.example.org.
ns1     IN A   192.0.2.53
www     IN A   192.0.2.10
multi   IN A   192.0.2.1
multi   IN A   192.0.2.2
multi   IN A   192.0.2.3
multi   IN A   192.0.2.4
multi   IN A   192.0.2.5
"""

STUB_ZONE = """$ORIGIN consul.local.
$TTL 60
@       IN SOA ns.consul.local. admin.consul.local. 1 3600 600 86400 30
@       IN NS  ns.consul.local.
ns      IN A   10.150.0.53
web     IN A   10.150.0.10
"""

# kubeadm's Corefile (cmd/kubeadm/app/phases/addons/dns/manifests.go), `kubernetai` for
# `kubernetes`; then a stubDomains block and a block of this test's.
COREFILE = """\
.:{dns} {{
    errors
    health 127.0.0.1:{health} {{
       lameduck 5s
    }}
    ready 127.0.0.1:{ready}
    kubernetai cluster.local in-addr.arpa ip6.arpa {{
       endpoint {url}
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }}
    prometheus 127.0.0.1:{metrics}
    forward . 127.0.0.1:{upstream} {{
       max_concurrent 1000
    }}
    cache 30 {{
       disable success cluster.local
       disable denial cluster.local
    }}
    loop
    reload
    loadbalance
}}
consul.local:{dns} {{
    errors
    cache 30
    forward . 127.0.0.1:{stub} {{
       max_concurrent 4
       health_check 0.2s
    }}
}}
corp.test:{dns} {{
    rewrite name suffix .corp.test .svc.cluster.local answer auto
    hosts {hosts} cluster.local {{
       fallthrough
    }}
    kubernetai cluster.local {{
       endpoint {url}
    }}
}}
"""


def external(name: str, target: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "shared"},
            "spec": {"type": "ExternalName", "externalName": target}}


class Running:
    """The sandbox, both upstreams and the twistd process serving the Corefile."""

    def __init__(self, directory: Path) -> None:
        self.sandbox = Sandbox(bookmark_interval=1.0)
        self.sandbox.apply(EXAMPLES / "cluster.local")
        self.sandbox.apply([external("outside", "www.example.org")])
        self.sandbox.start()
        self.upstream = UpstreamServer(ZONE)
        self.stub = UpstreamServer(STUB_ZONE)
        self.upstream_port = in_reactor(self.upstream.start)
        self.stub_port = in_reactor(self.stub.start)
        self.dns, self.health, self.ready, self.metrics = (free_port() for _ in range(4))
        self.corefile = directory / "Corefile"
        hosts = directory / "hosts"
        hosts.write_text("10.9.9.10 web.shared.svc.cluster.local\n")
        self.corefile.write_text(COREFILE.format(hosts=hosts,
            dns=self.dns, health=self.health, ready=self.ready, metrics=self.metrics,
            url=self.sandbox.url, upstream=self.upstream_port, stub=self.stub_port))
        try:
            self.server = TwistdServer(self.corefile, self.ready, timeout=60, env=SOURCE_ENV)
        except RuntimeError:
            self.stop_peers()
            raise
        self.log = self.server.log
        self.process = self.server.process

    def ask(self, name: str, rdtype: str = "A", *, tcp: bool = False,
            timeout: float = 10) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype)
        if tcp:
            return dns.query.tcp(query, "127.0.0.1", port=self.dns, timeout=timeout)
        return dns.query.udp(query, "127.0.0.1", port=self.dns, timeout=timeout)

    def stop(self) -> None:
        self.server.stop()
        self.stop_peers()

    def stop_peers(self) -> None:
        in_reactor(self.upstream.stop)
        in_reactor(self.stub.stop)
        in_reactor(self.sandbox.stop)


@pytest.fixture(scope="module")
def server(reactor_running: None, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Running]:
    running = Running(tmp_path_factory.mktemp("kubeadm"))
    yield running
    running.stop()


def records(response: dns.message.Message, section: str = "answer") -> list[tuple[str, int, str]]:
    return [(rrset.name.to_text(), rrset.ttl, rr.to_text())
            for rrset in getattr(response, section) for rr in rrset]


def addresses(response: dns.message.Message) -> list[str]:
    return [rr.to_text() for rrset in response.answer if rrset.rdtype == dns.rdatatype.A
            for rr in rrset]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_cluster_names_ttl_30_never_cached(server: Running, tcp: bool) -> None:
    """The stanza answers with TTL 30, and `disable success/denial cluster.local` keeps
    `cache` from counting it down; a change in the cluster is seen at once."""
    cluster_ip = server.sandbox.get("Service", "shared", "web")["spec"]["clusterIP"]
    name = "web.shared.svc.cluster.local."
    first = server.ask(name, tcp=tcp)
    assert first.rcode() == dns.rcode.NOERROR and first.flags & dns.flags.AA
    assert records(first) == [(name, 30, cluster_ip)]
    time.sleep(1.2)
    assert records(server.ask(name, tcp=tcp)) == [(name, 30, cluster_ip)]  # no countdown
    fresh = f"new{'t' if tcp else 'u'}.shared.svc.cluster.local."
    missing = server.ask(fresh, tcp=tcp)
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert [rrset.ttl for rrset in missing.authority] == [30]
    service = server.sandbox.apply([{
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": fresh.split(".")[0], "namespace": "shared"},
        "spec": {"ports": [{"name": "http", "port": 80}]}}])
    assert service
    deadline = time.monotonic() + 10
    while server.ask(fresh, tcp=tcp).rcode() != dns.rcode.NOERROR:
        assert time.monotonic() < deadline, "the new service was never answered"
        time.sleep(0.05)
    assert server.upstream.count(fresh.rstrip(".")) == 0      # never forwarded


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_outside_names_forwarded_with_the_upstreams_rcode_and_soa(server: Running,
                                                                   tcp: bool) -> None:
    """A name outside the cluster passes the stanza (no fallthrough needed: it is outside
    its zones) and goes to the upstream: its rcode, records and SOA come back, the header
    flags as the upstream set them (AA and RA: CoreDNS's forward writes the upstream's
    message as it is), TTLs capped at the cache's 30 s."""
    label = "tcp" if tcp else "udp"
    found = server.ask("www.example.org.", tcp=tcp)
    assert found.rcode() == dns.rcode.NOERROR
    assert found.flags & dns.flags.AA and found.flags & dns.flags.RA
    assert addresses(found) == ["192.0.2.10"]
    assert found.answer[0].ttl <= 30
    missing = server.ask(f"nope-{label}.example.org.", tcp=tcp)
    assert missing.rcode() == dns.rcode.NXDOMAIN
    (soa,) = missing.authority
    assert soa.rdtype == dns.rdatatype.SOA and soa.name.to_text() == "example.org."
    nodata = server.ask("www.example.org.", "TXT", tcp=tcp)
    assert (nodata.rcode(), nodata.answer) == (dns.rcode.NOERROR, [])
    assert [rrset.rdtype for rrset in nodata.authority] == [dns.rdatatype.SOA]


def test_cache_hits_do_not_reach_the_upstream_and_count_down(server: Running) -> None:
    name = "www.example.org"
    server.upstream.reset()
    first = server.ask(name + ".", "AAAA")
    asked = server.upstream.count(name, "AAAA")
    assert asked == 1 and first.answer == [] and first.authority  # NODATA, from upstream
    server.ask("www.example.org.")
    before = server.upstream.count(name)
    first_ttl = server.ask("www.example.org.").answer[0].ttl
    time.sleep(2.1)
    for tcp in (False, True):
        later = server.ask("www.example.org.", tcp=tcp)
        assert addresses(later) == ["192.0.2.10"]
        assert later.answer[0].ttl <= first_ttl - 2
        assert later.flags & dns.flags.AA              # a cache hit says AA, as CoreDNS
    assert server.upstream.count(name) == before       # all hits
    assert server.upstream.count(name, "AAAA") == 1


def test_loadbalance_changes_the_order(server: Running) -> None:
    """round_robin shuffles the A records of every answer, cache hits included."""
    orders = {tuple(addresses(server.ask("multi.example.org."))) for _ in range(30)}
    assert len(orders) > 1
    assert {frozenset(order) for order in orders} == {
        frozenset(f"192.0.2.{n}" for n in range(1, 6))}
    assert server.upstream.count("multi.example.org") == 1


def test_externalname_to_an_outside_name_is_chased_through_forward(server: Running) -> None:
    """An ExternalName's target outside the cluster is looked up through the rest of the
    server (forward), as CoreDNS's upstream lookup: the CNAME, then the target's address."""
    response = server.ask("outside.shared.svc.cluster.local.")
    assert response.rcode() == dns.rcode.NOERROR
    assert [(rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype))
            for rrset in response.answer] == [
        ("outside.shared.svc.cluster.local.", "CNAME"), ("www.example.org.", "A")]
    assert addresses(response) == ["192.0.2.10"]


def test_stub_domain_block_forwards_to_its_own_upstream(server: Running) -> None:
    response = server.ask("web.consul.local.", tcp=True)
    assert addresses(response) == ["10.150.0.10"]
    assert server.stub.count("web.consul.local") >= 1
    assert server.upstream.count("web.consul.local") == 0


def test_max_concurrent_refuses_the_rest(server: Running) -> None:
    """Beyond `max_concurrent 4` queries in flight to a silent upstream: REFUSED at once;
    the four in flight end as SERVFAIL when the upstream does not answer."""
    server.stub.fault = "drop"
    try:
        with ThreadPoolExecutor(max_workers=12) as pool:
            futures = [pool.submit(server.ask, f"q{n}.consul.local.", timeout=15)
                       for n in range(12)]
            rcodes = sorted(future.result().rcode() for future in futures)
    finally:
        server.stub.fault = None
    assert rcodes.count(dns.rcode.REFUSED) >= 8
    assert set(rcodes) <= {dns.rcode.REFUSED, dns.rcode.SERVFAIL}
    wait_for(lambda: "concurrent queries exceeded maximum 4" in server.log.read_text(),
             what="the max_concurrent errors line")


def test_an_upstream_going_down_and_coming_back(server: Running) -> None:
    """A dead upstream gives SERVFAIL, logged by `errors`; health checks find it back."""
    server.stub.fault = "drop"
    try:
        down = server.ask("down.consul.local.", timeout=15)
        assert down.rcode() == dns.rcode.SERVFAIL
    finally:
        server.stub.fault = None
    deadline = time.monotonic() + 15
    while True:
        back = server.ask("web.consul.local.", "AAAA")
        if back.rcode() == dns.rcode.NOERROR:
            break
        assert time.monotonic() < deadline, "the upstream never came back"
        time.sleep(0.2)
    wait_for(lambda: "[ERROR] plugin/errors: 2 down.consul.local. A:" in server.log.read_text(),
             what="the errors line")


def test_hosts_before_kubernetai_and_rewrite_answer_auto(server: Running) -> None:
    """`rewrite ... answer auto` maps corp.test onto the cluster and back; `hosts` is asked
    before the stanza (its entry wins), and falls through to it for what it lacks."""
    pinned = server.ask("web.shared.corp.test.")
    assert records(pinned) == [("web.shared.corp.test.", 3600, "10.9.9.10")]
    cluster_ip = server.sandbox.get("Service", "shop", "frontend")["spec"]["clusterIP"]
    passed = server.ask("frontend.shop.corp.test.", tcp=True)
    assert records(passed) == [("frontend.shop.corp.test.", 5, cluster_ip)]
    assert [q.name.to_text() for q in passed.question] == ["frontend.shop.corp.test."]


def test_loop_halts_a_self_forwarding_server(tmp_path: Path) -> None:
    """`forward . <itself>` with `loop`: CoreDNS's FATAL line, exit status 1."""
    port = free_port()
    corefile = tmp_path / "Corefile"
    corefile.write_text(f".:{port} {{\n    forward . 127.0.0.1:{port}\n    loop\n}}\n")
    process = subprocess.run(
        [TWISTD, "--nodaemon", "--pidfile=", "kubernetai", "--corefile", str(corefile)],
        cwd=tmp_path, env=SOURCE_ENV, capture_output=True, text=True, timeout=60)
    assert process.returncode == 1
    assert ('[FATAL] plugin/loop: Loop (127.0.0.1:' in process.stdout + process.stderr)
    assert 'detected for zone ".", see https://coredns.io/plugins/loop#troubleshooting.' \
        in process.stdout + process.stderr


def test_upstream_tcp_connections_are_reused(server: Running) -> None:
    """Queries that reach the upstream over TCP (a TCP client's misses) share one
    connection, not one each; the server still answers after everything above."""
    opened = server.upstream.tcp_connections
    for n in range(5):
        response = server.ask(f"reuse{n}.example.org.", tcp=True)
        assert response.rcode() == dns.rcode.NXDOMAIN       # asked upstream: a miss
        assert server.upstream.count(f"reuse{n}.example.org") == 1
    assert server.upstream.tcp_connections - opened <= 1
    assert addresses(server.ask("www.example.org.", tcp=True)) == ["192.0.2.10"]
