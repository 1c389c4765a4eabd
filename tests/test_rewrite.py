"""rewrite end to end: the real server in front of a kubernetai stanza on a simulated
cluster (examples/cluster.local), asked over UDP and TCP with dnspython.

A name outside the cluster's zone is rewritten into it, answered by the stanza, and the
answer's names are mapped back (``answer auto``, ``answer name``) so that the client
sees the names it asked about; the answer cache in front keeps the rewritten answer and
drops it when the cluster changes.
"""

from __future__ import annotations

from typing import Iterator

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from conftest import EXAMPLES, wait_for
from test_e2e import answers, ask, start_server

from kubernetai.pkg import reactor_thread
from kubernetai.sandbox.server import Sandbox

COREFILE = """\
example.com example.org cluster.local {{
    bind 127.0.0.1
    errors
    rewrite continue type MX A
    rewrite name suffix .example.com. .svc.cluster.local. answer auto
    rewrite continue {{
        name regex ^(.*)-(shared)\\.example\\.org\\.$ {{1}}.{{2}}.svc.cluster.local
        answer name ^(.*)\\.(shared)\\.svc\\.cluster\\.local\\.$ {{1}}-{{2}}.example.org
    }}
    rewrite ttl suffix .shared.svc.cluster.local. 7
    kubernetai cluster.local {{
        endpoint {url}
    }}
}}
"""


@pytest.fixture(scope="module")
def cluster(reactor_running: None) -> Iterator[Sandbox]:
    server = Sandbox(bookmark_interval=1.0, history_size=50)
    server.apply(EXAMPLES / "cluster.local")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def served(cluster: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    path = tmp_path_factory.mktemp("rewrite") / "Corefile"
    path.write_text(COREFILE.format(url=cluster.url))
    service, port = start_server(path)
    wait_for(lambda: answers(ask(port, "web.shared.svc.cluster.local")), what="sync")
    yield service, port
    reactor_thread.in_reactor(service.stopService)


@pytest.fixture
def port(served: tuple) -> int:
    return int(served[1])


def records(reply: dns.message.Message, section: str = "answer") -> list[tuple[str, str, str]]:
    return sorted((rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype), rr.to_text())
                  for rrset in getattr(reply, section) for rr in rrset)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_suffix_answer_auto_maps_the_owner_back(port: int, tcp: bool) -> None:
    reply = ask(port, "web.shared.example.com", tcp=tcp)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.question[0].name.to_text() == "web.shared.example.com."
    assert records(reply) == [("web.shared.example.com.", "A", "10.96.100.10")]


def test_question_echoed_as_sent_and_answer_in_lower_case(port: int) -> None:
    """The question is the client's, case and all; the names the rule maps back are the
    lower-case ones CoreDNS's rules work with."""
    query = dns.message.make_query("Web.Shared.EXAMPLE.com", "A")
    wire = dns.query.udp(query, "127.0.0.1", port=port, timeout=5)
    assert wire.question[0].name.to_text() == "Web.Shared.EXAMPLE.com."
    assert records(wire) == [("web.shared.example.com.", "A", "10.96.100.10")]


def test_srv_targets_and_glue_are_mapped_back(port: int) -> None:
    reply = ask(port, "_http._tcp.web.shared.example.com", "SRV")
    assert reply.rcode() == dns.rcode.NOERROR
    ((owner, kind, srv),) = records(reply)
    assert (owner, kind) == ("_http._tcp.web.shared.example.com.", "SRV")
    assert srv.endswith(" 80 web.shared.example.com.")
    assert records(reply, "additional") == [("web.shared.example.com.", "A", "10.96.100.10")]


def test_nxdomain_keeps_its_soa(port: int) -> None:
    reply = ask(port, "nope.shared.example.com")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert [rrset.rdtype for rrset in reply.authority] == [dns.rdatatype.SOA]


def test_regex_groups_answer_name_and_ttl_after_continue(port: int) -> None:
    """The regex rule (continue) rewrites into the cluster; the ttl rule after it sees the
    rewritten name and clamps the TTL; ``answer name`` maps the owner back."""
    reply = ask(port, "web-shared.example.org")
    assert records(reply) == [("web-shared.example.org.", "A", "10.96.100.10")]
    assert [rrset.ttl for rrset in reply.answer] == [7]
    plain = ask(port, "web.shared.svc.cluster.local")
    assert [rrset.ttl for rrset in plain.answer] == [7]
    assert records(plain) == [("web.shared.svc.cluster.local.", "A", "10.96.100.10")]


def test_stop_rule_ends_the_list(port: int) -> None:
    """The suffix rule stops: the ttl rule after it is not applied (the stanza's 5 s)."""
    reply = ask(port, "web.shared.example.com")
    assert [rrset.ttl for rrset in reply.answer] == [5]


def test_type_rewrite_question_kept(port: int) -> None:
    reply = ask(port, "web.shared.svc.cluster.local", "MX")
    assert reply.question[0].rdtype == dns.rdatatype.MX
    assert records(reply) == [("web.shared.svc.cluster.local.", "A", "10.96.100.10")]


def test_rewritten_answer_cached_then_refreshed_on_change(served: tuple,
                                                          cluster: Sandbox) -> None:
    """The answer cache after rewrite (CoreDNS 1.14.7's order) keeps the answer to the
    rewritten question, and drops it when the cluster the stanza read it from changes;
    the client gets it mapped back to its own question."""
    service, port = served
    name = "later.shared.example.com"
    assert ask(port, name).rcode() == dns.rcode.NXDOMAIN
    hits = service.cache.hits
    reply = ask(port, name)
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.question[0].name.to_text() == name + "."
    assert service.cache.hits == hits + 1
    cluster.apply({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "later", "namespace": "shared"},
                   "spec": {"clusterIP": "10.96.77.7", "ports": [{"port": 80}]}})
    try:
        wait_for(lambda: records(ask(port, name))
                 == [("later.shared.example.com.", "A", "10.96.77.7")])
        hits = service.cache.hits
        assert records(ask(port, name)) == [("later.shared.example.com.", "A", "10.96.77.7")]
        assert service.cache.hits == hits + 1
    finally:
        cluster.delete("Service", "shared", "later")
