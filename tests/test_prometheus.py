"""prometheus end to end: twistd serving a Corefile with `prometheus 127.0.0.1:PORT`, real DNS
queries over UDP and TCP, `/metrics` read over HTTP and parsed with prometheus_client's
parser; the counters move by exactly the queries sent, with CoreDNS's labels; a reload
(SIGUSR1) keeps the listener and the counts. Also the directive's errors."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import dns.message
import dns.rcode
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kubernetai.core.registry import BlockBuilder, Registry
from kubernetai.corefile import CorefileError, parse
from kubernetai.sandbox.ports import free_port
from kubernetai.sandbox.server import Sandbox

TWISTD = str(Path(sys.executable).parent / "twistd")
SOURCE_ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# Two blocks name one /metrics address (one listener, both counted); a third has no
# prometheus (not counted, but what reaches no block is, as "dropped").
COREFILE = """\
cluster.local:{dns} {{
    bind 127.0.0.1
    prometheus 127.0.0.1:{metrics}
{extra}    kubernetai cluster.local {{
        endpoint {url}
        fallthrough
    }}
    whoami
}}
example.org:{dns} {{
    bind 127.0.0.1
    prometheus 127.0.0.1:{metrics}
    whoami
}}
example.net:{dns} {{
    bind 127.0.0.1
    whoami
}}
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Server:
    def __init__(self, directory: Path, url: str) -> None:
        self.dns, self.metrics, self.url = free_port(), free_port(), url
        self.server = f"dns://127.0.0.1:{self.dns}"
        self.corefile = directory / "Corefile"
        self.write()
        self.log = directory / "twistd.log"
        self.process = subprocess.Popen(
            [TWISTD, "--nodaemon", "--pidfile=", "kubernetai", "--corefile",
             str(self.corefile)], cwd=directory, stdout=self.log.open("w"),
            stderr=subprocess.STDOUT, env=SOURCE_ENV)
        deadline = time.monotonic() + 60
        while True:
            try:
                if udp(self.dns, "web.shared.svc.cluster.local")[1].rcode() == dns.rcode.NOERROR:
                    self.scrape()
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start: " + self.log.read_text())
            time.sleep(0.2)

    def write(self, extra: str = "") -> None:
        self.corefile.write_text(COREFILE.format(dns=self.dns, metrics=self.metrics,
                                                 url=self.url, extra=extra))

    def scrape(self) -> Samples:
        url = f"http://127.0.0.1:{self.metrics}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            assert reply.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            text = reply.read().decode()
        return {(sample.name, frozenset(sample.labels.items())): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


def moved(before: Samples, after: Samples, name: str, **match: str
          ) -> dict[frozenset[tuple[str, str]], float]:
    """How much each sample of ``name`` whose labels include ``match`` moved."""
    wanted = set(match.items())
    return {key: after[(n, key)] - before.get((n, key), 0) for (n, key) in after
            if n == name and wanted <= key and after[(n, key)] != before.get((n, key), 0)}


def by_plugin(before: Samples, after: Samples, **match: str) -> dict[str, float]:
    """How much ``coredns_dns_responses_total`` moved, by its `plugin` label."""
    return {dict(key)["plugin"]: value for key, value in
            moved(before, after, "coredns_dns_responses_total", **match).items()}


def total(before: Samples, after: Samples, name: str, **match: str) -> float:
    wanted = set(match.items())
    return sum(after[(n, key)] - before.get((n, key), 0) for (n, key) in after
               if n == name and wanted <= key)


def udp(port: int, name: str, rdtype: str = "A", **kwargs: Any
        ) -> tuple[bytes, dns.message.Message, bytes]:
    """One query over UDP: (query bytes, response, response bytes)."""
    wire = dns.message.make_query(name, rdtype, **kwargs).to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(wire, ("127.0.0.1", port))
        data = sock.recv(65535)
    return wire, dns.message.from_wire(data), data


def tcp(port: int, name: str, rdtype: str = "A") -> tuple[bytes, dns.message.Message, bytes]:
    wire = dns.message.make_query(name, rdtype).to_wire()
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(struct.pack("!H", len(wire)) + wire)
        data = b""
        while len(data) < 2 or len(data) < 2 + struct.unpack("!H", data[:2])[0]:
            chunk = sock.recv(65535)
            assert chunk
            data += chunk
    return wire, dns.message.from_wire(data[2:]), data[2:]


@pytest.fixture(scope="module")
def server(reactor_running: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    sandbox = Sandbox(bookmark_interval=1.0)
    sandbox.apply(EXAMPLES / "cluster.local")
    sandbox.start()
    started = Server(tmp_path_factory.mktemp("prometheus"), sandbox.url)
    yield started
    started.stop()
    sandbox.stop()


def test_udp_queries_counted_exactly(server: Server) -> None:
    """Seven UDP queries: the first answered by the stanza, six from the answer cache."""
    name = "Nginx.default.svc.cluster.local"  # asked by no other test here: not yet cached
    before = server.scrape()
    sent = [udp(server.dns, name) for _ in range(7)]
    assert all(r.rcode() == dns.rcode.NOERROR and r.answer for _, r, _ in sent)
    after = server.scrape()
    common = dict(server=server.server, zone="cluster.local.", view="")
    assert moved(before, after, "coredns_dns_requests_total", **common) == {
        labels(**common, proto="udp", family="1", type="A"): 7}
    assert by_plugin(before, after, **common,
                 rcode="NOERROR") == {"kubernetai": 1, "cache": 6}
    assert total(before, after, "coredns_dns_request_duration_seconds_count", **common) == 7
    assert total(before, after, "coredns_dns_request_duration_seconds_bucket", **common,
                 le="+Inf") == 7
    assert total(before, after, "coredns_dns_request_size_bytes_count", **common,
                 proto="udp") == 7
    assert total(before, after, "coredns_dns_request_size_bytes_sum", **common,
                 proto="udp") == sum(len(query) for query, _, _ in sent)
    assert total(before, after, "coredns_dns_response_size_bytes_sum", **common,
                 proto="udp") == sum(len(data) for _, _, data in sent)
    assert total(before, after, "coredns_dns_response_size_bytes_bucket", **common,
                 proto="udp", le="100") == 7                       # 71-byte answers
    assert total(before, after, "coredns_dns_do_requests_total") == 0


def test_tcp_queries_counted_exactly(server: Server) -> None:
    before = server.scrape()
    sent = [tcp(server.dns, "WEb.shared.svc.cluster.local", "AAAA") for _ in range(4)]
    after = server.scrape()
    common = dict(server=server.server, zone="cluster.local.", view="")
    assert moved(before, after, "coredns_dns_requests_total", **common) == {
        labels(**common, proto="tcp", family="1", type="AAAA"): 4}
    assert by_plugin(before, after, **common,
                 rcode="NOERROR") == {"kubernetai": 1, "cache": 3}
    assert total(before, after, "coredns_dns_response_size_bytes_sum", **common,
                 proto="tcp") == sum(len(data) for _, _, data in sent)
    assert total(before, after, "coredns_dns_request_size_bytes_count", **common,
                 proto="udp") == 0


def test_the_plugin_that_wrote_the_answer(server: Server) -> None:
    """A name the stanza does not have falls through to whoami, which answers it."""
    before = server.scrape()
    for _ in range(3):
        assert udp(server.dns, "nope.shared.svc.cluster.local", "SRV",
                   want_dnssec=True)[1].rcode() == dns.rcode.NOERROR
    after = server.scrape()
    common = dict(server=server.server, zone="cluster.local.", view="")
    assert by_plugin(before, after, **common,
                 rcode="NOERROR") == {"whoami": 3}
    assert moved(before, after, "coredns_dns_requests_total", **common) == {
        labels(**common, proto="udp", family="1", type="SRV"): 3}
    assert moved(before, after, "coredns_dns_do_requests_total") == {labels(**common): 3}


def test_blocks_sharing_the_address_and_blocks_without_prometheus(server: Server) -> None:
    before = server.scrape()
    for _ in range(2):
        udp(server.dns, "a.example.org", "TXT")      # a block that names the same address
        udp(server.dns, "a.example.net", "MX")       # a block without prometheus
        assert udp(server.dns, "a.example.com")[1].rcode() == dns.rcode.REFUSED  # no block
    after = server.scrape()
    assert moved(before, after, "coredns_dns_requests_total") == {
        labels(server=server.server, zone="example.org.", view="", proto="udp", family="1",
               type="TXT"): 2,
        labels(server=server.server, zone="dropped", view="", proto="udp", family="1",
               type="A"): 2}
    assert by_plugin(before, after, zone="dropped") == {"": 2}
    assert by_plugin(before, after, zone="example.org.") == {
        "whoami": 2}


def test_plugins_enabled_build_info_and_process_counters(server: Server) -> None:
    got = server.scrape()
    enabled = {dict(key)["name"] for (name, key), value in got.items()
               if name == "coredns_plugin_enabled" and value == 1
               and dict(key)["zone"] == "cluster.local."}
    assert enabled == {"prometheus", "kubernetai", "whoami"}
    zones = {dict(key)["zone"] for (name, key) in got if name == "coredns_plugin_enabled"}
    assert zones == {"cluster.local.", "example.org."}
    assert {dict(key)["server"] for (name, key) in got
            if name == "coredns_plugin_enabled"} == {server.server}
    ((key, value),) = [(key, v) for (name, key), v in got.items()
                       if name == "coredns_build_info"]
    assert value == 1 and dict(key)["goversion"].startswith("python3.")
    assert got[("coredns_reload_failed_total", frozenset())] == 0
    assert got[("coredns_panics_total", frozenset())] == 0
    assert got[("process_resident_memory_bytes", frozenset())] > 0


def test_reload_keeps_the_listener_and_the_counts(server: Server) -> None:
    """After SIGUSR1 (a new plugin between prometheus and the cache: `errors`), the same
    address answers, nothing was reset, counting goes on, cache hits still count as the
    cache's, and coredns_plugin_enabled names the new plugin."""
    before = server.scrape()
    server.write(extra="    errors\n")
    server.process.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 30
    while "reloaded" not in server.log.read_text():
        assert time.monotonic() < deadline, server.log.read_text()
        assert server.process.poll() is None
        time.sleep(0.2)
    middle = server.scrape()
    for key, value in before.items():
        if key[0].startswith("coredns_dns_") and key[0].endswith("_total"):
            assert middle[key] >= value, key
    for _ in range(5):
        udp(server.dns, "weB.shared.svc.cluster.local")
    after = server.scrape()
    common = dict(server=server.server, zone="cluster.local.", view="")
    assert moved(middle, after, "coredns_dns_requests_total", **common) == {
        labels(**common, proto="udp", family="1", type="A"): 5}
    assert by_plugin(middle, after, **common,
                 rcode="NOERROR") == {"kubernetai": 1, "cache": 4}
    assert after[("coredns_plugin_enabled", labels(**common, name="errors"))] == 1
    assert after[("coredns_reload_failed_total", frozenset())] == 0
    assert "Traceback" not in server.log.read_text()


def _set_up(text: str) -> BlockBuilder:
    (block,) = parse(text, "Corefile")
    return Registry().set_up_block(block, BlockBuilder(block, ("example.org.",)))


@pytest.mark.parametrize("body, line, token, message", [
    ("prometheus :9153 :9154", 2, ":9154", "Wrong argument count"),
    ("prometheus 9153", 2, "9153", "missing port in address"),
    ("prometheus {\n        tls web.yml\n    }", 3, "tls", "tls is not supported"),
    ("prometheus {\n        runtime_metrics 1\n    }", 3, "1", "Wrong argument count"),
    ("prometheus {\n        nope\n    }", 3, "nope", "unknown option: nope"),
    ("prometheus\n    prometheus :9253", 3, "prometheus", "only be used once"),
])
def test_directive_errors(body: str, line: int, token: str, message: str) -> None:
    with pytest.raises(CorefileError) as info:
        _set_up(f"example.org {{\n    {body}\n}}\n")
    assert (info.value.line, info.value.token) == (line, token)
    assert message in str(info.value)


def test_defaults_to_localhost_9153() -> None:
    builder = _set_up("example.org {\n    prometheus {\n        runtime_metrics\n    }\n}\n")
    (listener,) = builder.process_services
    assert (listener.host, listener.port, listener.key) == ("localhost", 9153,
                                                           ("prometheus", "localhost:9153"))
    assert any("runtime_metrics" in note for note in builder.warnings)
    assert [stage.name for stage in builder.stages] == ["prometheus"]
