"""`autopath @kubernetai` end to end: twistd, two simulated clusters, dnspython clients.

Two stanzas serve `cluster.local`, each from its own simulated API server with `pods
verified`. The clients ask from three loopback addresses: 127.0.0.2 is a pod of the first
cluster (namespace `team-a`), 127.0.0.3 a pod of the second only (namespace `team-b`),
127.0.0.4 a pod of neither. Go's kubernetai gives autopath only to a client that every
stanza knows; here the first stanza that knows it gives the search path, so the second
client gets it too, and the third gets the ordinary answer.

`hosts` answers `example.org` (and the host's own search domains, if this machine's
resolv.conf has any: autopath tries them too), NXDOMAIN for what it does not list.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any, Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from twistd_process import TwistdServer

from kubernetai.pkg.reactor_thread import in_reactor
from kubernetai.pkg.resolvconf import read_search
from kubernetai.sandbox.ports import free_port
from kubernetai.sandbox.server import Sandbox

COREFILE = """\
.:{dns} {{
    errors
    autopath @kubernetai
    ready 127.0.0.1:{ready}
    prometheus 127.0.0.1:{metrics}
    hosts {hosts} {hosts_zones} {{
        192.0.2.10 www.example.org
    }}
    kubernetai cluster.local {{
        endpoint {first}
        pods verified
        fallthrough
    }}
    kubernetai cluster.local {{
        endpoint {second}
        pods verified
    }}
}}
"""

A_CLIENT, B_CLIENT, NO_CLIENT = "127.0.0.2", "127.0.0.3", "127.0.0.4"


def service(name: str, namespace: str, ip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]}}


def pod(name: str, namespace: str, ip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


class Running:
    def __init__(self, directory: Path) -> None:
        self.first = Sandbox(bookmark_interval=1.0)
        self.first.apply([namespace("team-a"), namespace("other"),
                          service("web", "other", "10.96.1.10"),
                          pod("client-a", "team-a", A_CLIENT)])
        self.second = Sandbox(bookmark_interval=1.0)
        self.second.apply([namespace("team-b"), service("api", "team-b", "10.96.2.20"),
                           pod("client-b", "team-b", B_CLIENT)])
        self.first.start()
        self.second.start()
        self.host_search = read_search("/etc/resolv.conf") if Path(
            "/etc/resolv.conf").exists() else []
        self.dns, self.ready, self.metrics = free_port(), free_port(), free_port()
        hosts = directory / "hosts"
        hosts.write_text("")
        corefile = directory / "Corefile"
        corefile.write_text(COREFILE.format(
            dns=self.dns, ready=self.ready, metrics=self.metrics, hosts=hosts,
            hosts_zones=" ".join(["example.org", *self.host_search]),
            first=self.first.url, second=self.second.url))
        try:
            self.server = TwistdServer(corefile, self.ready, timeout=60)
        except RuntimeError:
            self.stop_clusters()
            raise

    def ask(self, name: str, source: str, rdtype: str = "A", *,
            tcp: bool = False) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype)
        if tcp:
            return dns.query.tcp(query, "127.0.0.1", port=self.dns, timeout=10, source=source)
        return dns.query.udp(query, "127.0.0.1", port=self.dns, timeout=10, source=source)

    def successes(self) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics",
                                    timeout=5) as reply:
            text = reply.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("coredns_autopath_success_total{"))

    def stop(self) -> None:
        self.server.stop()
        self.stop_clusters()

    def stop_clusters(self) -> None:
        in_reactor(self.first.stop)
        in_reactor(self.second.stop)


@pytest.fixture(scope="module")
def server(reactor_running: None, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Running]:
    running = Running(tmp_path_factory.mktemp("autopath"))
    yield running
    running.stop()


def answer(response: dns.message.Message) -> list[tuple[str, int, str, str]]:
    return [(rrset.name.to_text(), rrset.ttl, dns.rdatatype.to_text(rrset.rdtype), rr.to_text())
            for rrset in response.answer for rr in rrset]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_client_of_the_first_cluster(server: Running, tcp: bool) -> None:
    """`web.other` asked in team-a's search domain: the CNAME to the name found (in
    `svc.cluster.local`, the second search domain), then its record; the question as asked."""
    before = server.successes()
    reply = server.ask("web.other.team-a.svc.cluster.local.", A_CLIENT, tcp=tcp)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AA
    assert reply.question[0].name.to_text() == "web.other.team-a.svc.cluster.local."
    assert answer(reply) == [
        ("web.other.team-a.svc.cluster.local.", 5, "CNAME", "web.other.svc.cluster.local."),
        ("web.other.svc.cluster.local.", 5, "A", "10.96.1.10")]
    assert server.successes() == before + 1


def test_client_known_to_the_second_cluster_only(server: Running) -> None:
    """The first stanza does not know 127.0.0.3; the second does (team-b): its search path
    is used, and the name is found in the first cluster through the chain."""
    reply = server.ask("web.other.team-b.svc.cluster.local.", B_CLIENT)
    assert answer(reply) == [
        ("web.other.team-b.svc.cluster.local.", 5, "CNAME", "web.other.svc.cluster.local."),
        ("web.other.svc.cluster.local.", 5, "A", "10.96.1.10")]
    # Its own namespace's name is answered as it is (the first name tried), no CNAME.
    own = server.ask("api.team-b.svc.cluster.local.", B_CLIENT)
    assert answer(own) == [("api.team-b.svc.cluster.local.", 5, "A", "10.96.2.20")]


def test_client_no_cluster_knows_gets_the_ordinary_answer(server: Running) -> None:
    """127.0.0.4 is no pod: no search path, the name asked is answered as it is."""
    before = server.successes()
    reply = server.ask("web.other.team-a.svc.cluster.local.", NO_CLIENT)
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert answer(reply) == []
    assert [rrset.rdtype for rrset in reply.authority] == [dns.rdatatype.SOA]
    assert server.successes() == before


def test_the_bare_name_is_tried_last(server: Running) -> None:
    """A name outside the cluster, asked in the search domain: every cluster name is
    NXDOMAIN, then the name itself (``""``, the last element) is answered by `hosts`."""
    reply = server.ask("www.example.org.team-a.svc.cluster.local.", A_CLIENT)
    assert answer(reply) == [
        ("www.example.org.team-a.svc.cluster.local.", 3600, "CNAME", "www.example.org."),
        ("www.example.org.", 3600, "A", "192.0.2.10")]


def test_nothing_found_gives_the_first_reply(server: Running) -> None:
    """Every name NXDOMAIN: the first name's reply as it was (its SOA), no CNAME, no count."""
    before = server.successes()
    reply = server.ask("nothing.example.org.team-a.svc.cluster.local.", A_CLIENT)
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert answer(reply) == []
    (soa,) = reply.authority
    assert soa.name.to_text() == "cluster.local."
    assert server.successes() == before


def test_name_outside_the_first_search_domain_is_left_alone(server: Running) -> None:
    """Only a name under the client's first search domain is completed."""
    reply = server.ask("web.other.svc.cluster.local.", A_CLIENT)
    assert answer(reply) == [("web.other.svc.cluster.local.", 5, "A", "10.96.1.10")]
    reply = server.ask("web.other.team-b.svc.cluster.local.", A_CLIENT)
    assert reply.rcode() == dns.rcode.NXDOMAIN


def test_repeated_questions_keep_their_answers(server: Running) -> None:
    """Asked again (the answer cache now holds the names tried), the same answer."""
    first = answer(server.ask("web.other.team-a.svc.cluster.local.", A_CLIENT))
    for _ in range(3):
        assert answer(server.ask("web.other.team-a.svc.cluster.local.", A_CLIENT)) == first
    assert answer(server.ask("web.other.team-a.svc.cluster.local.", NO_CLIENT)) == []
