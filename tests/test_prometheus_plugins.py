"""`coredns_dns_responses_total`'s `plugin` label for the plugins of issue 10, and a query
answered with no response at all (acl's drop), through a real server and a real scrape."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Iterator

import dns.message
import dns.query
import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor

from kubernetai.app.load import load_plans
from kubernetai.app.server import KubernetaiService
from kubernetai.pkg.reactor_thread import in_reactor
from kubernetai.sandbox.ports import free_port
from kubernetai.sandbox.server import Sandbox

COREFILE = """\
example.org:{dns} {{
    bind 127.0.0.1
    prometheus 127.0.0.1:{metrics}
    acl {{
        drop net 127.0.0.2
    }}
    hosts {{
        192.0.2.1 h.example.org
        fallthrough
    }}
    kubernetai example.org {{
        endpoint {url}
        fallthrough
    }}
    whoami
}}
"""

Responses = dict[tuple[str, str], float]


class Running:
    def __init__(self, dns_port: int, metrics: int) -> None:
        self.dns, self.metrics = dns_port, metrics

    def responses(self) -> Responses:
        """coredns_dns_responses_total by (rcode, plugin)."""
        url = f"http://127.0.0.1:{self.metrics}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
        # The metrics are the process's: other tests' servers are in them too.
        server = f"dns://127.0.0.1:{self.dns}"
        return {(sample.labels["rcode"], sample.labels["plugin"]): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "coredns_dns_responses_total"
                and sample.labels["server"] == server}


@pytest.fixture(scope="module")
def server(reactor_running: None, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Running]:
    dns_port, metrics = free_port(), free_port()
    path: Path = tmp_path_factory.mktemp("plugins") / "Corefile"
    sandbox = Sandbox(bookmark_interval=1.0)
    sandbox.start()
    path.write_text(COREFILE.format(dns=dns_port, metrics=metrics, url=sandbox.url))
    service = KubernetaiService(load_plans(str(path)), reactor=reactor)

    def start() -> object:
        service.startService()
        return service.listening
    in_reactor(start)
    try:
        yield Running(dns_port, metrics)
    finally:
        in_reactor(service.stopService)
        in_reactor(sandbox.stop)


def ask(server: Running, name: str, source: str = "127.0.0.1") -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=server.dns,
                         timeout=3, source=source)


def moved(before: Responses, after: Responses) -> Responses:
    return {key: value - before.get(key, 0) for key, value in after.items()
            if value != before.get(key, 0)}


def test_the_resolver_that_answered_names_the_answer(server: Running) -> None:
    """hosts, the first of the chain's resolvers (before a stanza), is the label of what it
    answers; what both pass on is whoami's."""
    before = server.responses()
    assert [rr.to_text() for rrset in ask(server, "h.example.org").answer
            for rr in rrset] == ["192.0.2.1"]
    ask(server, "other.example.org")
    assert moved(before, server.responses()) == {("NOERROR", "hosts"): 1,
                                                 ("NOERROR", "whoami"): 1}


def test_a_dropped_query_is_counted_with_no_response(server: Running) -> None:
    """acl's drop sends nothing; CoreDNS still counts the query: NOERROR, no plugin."""
    before = server.responses()
    with pytest.raises(dns.exception.Timeout):
        ask(server, "h.example.org", source="127.0.0.2")
    assert moved(before, server.responses()) == {("NOERROR", ""): 1}
    assert ask(server, "h.example.org").rcode() == 0
