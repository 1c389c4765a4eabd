"""`transfer` end to end: twistd, simulated API servers, raw TCP and dnspython clients.

One server process listens on 127.0.0.1 with one block: `transfer cluster.local big.local {
to 127.0.0.1:PORT }` (PORT is this test's NOTIFY listener) and three stanzas. The first
serves `cluster.local` and `example.local` from a small fixed cluster, exposing the
namespaces `shop` and `other` only; the second serves `cluster.local` from the same
cluster with every namespace (a transfer never reads it: the first stanza whose zones
match is the source); the third serves `big.local` from a synthetic cluster of 3,000
Services.

The expected zone is written out record by record from CoreDNS's ``xfr.go`` rules
(see ``kubernetai/plugins/kubernetai/xfr.py``). The server binds only 127.0.0.1, which is
not an address a stanza names in its NS records (loopback never is), so the zone has no
NS records and no glue, as CoreDNS's with no usable address (``tests/test_transfer_xfr.py``
has them).
"""

from __future__ import annotations

import io
import socket
import struct
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from test_dnsserver import recv_exact
from twistd_process import TwistdServer

from kubernetai.pkg.reactor_thread import in_reactor
from kubernetai.sandbox import synthetic
from kubernetai.sandbox.ports import free_port
from kubernetai.sandbox.server import Sandbox

BIG = "namespaces=20,services=3000,headless=300,endpoints=3,headless_endpoints=4,pods=0"

COREFILE = """\
.:{dns} {{
    bind 127.0.0.1
    ready 127.0.0.1:{ready}
    prometheus 127.0.0.1:{metrics}
    log
    transfer cluster.local big.local {{
        to 127.0.0.1:{notify}
    }}
    kubernetai cluster.local example.local {{
        endpoint {url}
        namespaces shop other
        ttl 7
        fallthrough cluster.local
    }}
    kubernetai cluster.local {{
        endpoint {url}
    }}
    kubernetai big.local {{
        endpoint {big}
    }}
}}
"""


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def service(ns: str, name: str, ips: list[str] | None, ports: list[tuple] = (),
            **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"ports": [{"port": port, "protocol": proto,
                                       **({"name": pname} if pname else {})}
                                      for pname, port, proto in ports], **spec}
    if ips is not None:
        body["clusterIP"] = ips[0]
        body["clusterIPs"] = ips
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": body}


def slice_of(ns: str, svc: str, name: str, endpoints: list[dict], ports: list[tuple]
             ) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": ns,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": [{"port": port, "protocol": proto, **({"name": pname} if pname else {})}
                      for pname, port, proto in ports]}


CLUSTER = [
    namespace("shop"), namespace("other"), namespace("hidden"),
    # a ClusterIP service with a named and an unnamed port
    service("shop", "web", ["10.96.5.10"], [("http", 80, "TCP"), (None, 8080, "TCP")]),
    # a headless service: one endpoint with a hostname, one without, one not ready
    service("shop", "db", ["None"], [("pg", 5432, "TCP"), (None, 9187, "TCP")]),
    slice_of("shop", "db", "db-abcde", [
        {"addresses": ["10.244.1.5"], "hostname": "db-0", "conditions": {"ready": True}},
        {"addresses": ["10.244.1.6"], "conditions": {"ready": True}},
        {"addresses": ["10.244.1.7"], "hostname": "db-2", "conditions": {"ready": False}},
    ], [("pg", 5432, "TCP"), (None, 9187, "TCP")]),
    service("shop", "dual", ["10.96.5.20", "fd00::20"], [("http", 80, "TCP")]),
    service("shop", "ext", None, type="ExternalName", externalName="api.example.com"),
    service("shop", "extip", None, type="ExternalName", externalName="192.0.2.7"),
    service("shop", "noports", ["10.96.5.30"]),
    # the same name in another exposed namespace: by namespace after the name
    service("other", "web", ["10.96.6.10"], [("http", 80, "UDP")]),
    # a namespace the first stanza does not expose
    service("hidden", "secret", ["10.96.7.10"], [("http", 80, "TCP")]),
]


def expected_zone(serial: int) -> list[str]:
    """The transfer of `cluster.local.` by xfr.go's rules: SOA, services by name (then
    namespace), SOA; TTL 7, the SOA's own min(7, 300)."""
    z = "svc.cluster.local."
    soa = (f"cluster.local. 7 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. "
           f"{serial} 7200 1800 86400 7")
    return [
        soa,
        f"db.shop.{z} 7 IN A 10.244.1.5",
        f"db-0.db.shop.{z} 7 IN A 10.244.1.5",
        f"_pg._tcp.db.shop.{z} 7 IN SRV 0 50 5432 db-0.db.shop.{z}",
        f"db.shop.{z} 7 IN A 10.244.1.6",
        f"10-244-1-6.db.shop.{z} 7 IN A 10.244.1.6",
        f"_pg._tcp.db.shop.{z} 7 IN SRV 0 50 5432 10-244-1-6.db.shop.{z}",
        f"dual.shop.{z} 7 IN A 10.96.5.20",
        f"dual.shop.{z} 7 IN AAAA fd00::20",
        f"dual.shop.{z} 7 IN SRV 0 100 80 dual.shop.{z}",
        f"_http._tcp.dual.shop.{z} 7 IN SRV 0 100 80 dual.shop.{z}",
        f"ext.shop.{z} 7 IN CNAME api.example.com.",
        f"noports.shop.{z} 7 IN A 10.96.5.30",
        f"noports.shop.{z} 7 IN SRV 0 100 65535 noports.shop.{z}",
        f"web.other.{z} 7 IN A 10.96.6.10",
        f"web.other.{z} 7 IN SRV 0 100 80 web.other.{z}",
        f"_http._udp.web.other.{z} 7 IN SRV 0 100 80 web.other.{z}",
        f"web.shop.{z} 7 IN A 10.96.5.10",
        f"web.shop.{z} 7 IN SRV 0 100 80 web.shop.{z}",
        f"_http._tcp.web.shop.{z} 7 IN SRV 0 100 80 web.shop.{z}",
        f"web.shop.{z} 7 IN SRV 0 100 8080 web.shop.{z}",
        soa,
    ]


class Notifies:
    """A peer's UDP socket on 127.0.0.1 that answers NOTIFY with NOERROR and keeps them."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def receive(self, timeout: float) -> list[dns.message.Message]:
        """The NOTIFYs that arrive within ``timeout`` seconds (stops at the first
        quiet 0.5 s after one came)."""
        got: list[dns.message.Message] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(0.5 if got else max(0.05, deadline - time.monotonic()))
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                if got:
                    break
                continue
            message = dns.message.from_wire(data)
            reply = dns.message.make_response(message)
            self.sock.sendto(reply.to_wire(), peer)
            got.append(message)
        return got

    def close(self) -> None:
        self.sock.close()


class Running:
    def __init__(self, directory: Path) -> None:
        self.cluster = Sandbox(bookmark_interval=1.0)
        self.cluster.apply(CLUSTER)
        self.big = Sandbox(bookmark_interval=1.0)
        self.big.load_synthetic(BIG)
        self.cluster.start()
        self.big.start()
        self.notifies = Notifies()
        self.dns, self.ready, self.metrics = free_port(), free_port(), free_port()
        corefile = directory / "Corefile"
        corefile.write_text(COREFILE.format(
            dns=self.dns, ready=self.ready, metrics=self.metrics, notify=self.notifies.port,
            url=self.cluster.url, big=self.big.url))
        try:
            self.server = TwistdServer(corefile, self.ready)
        except RuntimeError:
            self.stop_peers()
            raise

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics",
                                    timeout=5) as reply:
            return reply.read().decode()

    def stop(self) -> None:
        self.server.stop()
        self.stop_peers()

    def stop_peers(self) -> None:
        self.notifies.close()
        in_reactor(self.cluster.stop)
        in_reactor(self.big.stop)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory,
            reactor_running: None) -> Iterator[Running]:
    server = Running(tmp_path_factory.mktemp("transfer"))
    try:
        yield server
    finally:
        server.stop()


def transfer(port: int, zone: str, rdtype: str = "AXFR", *, source: str = "127.0.0.1",
             serial: int | None = None, edns: bool = False) -> list[bytes]:
    """The response messages of one transfer over TCP, as sent (raw), up to the closing
    SOA (or the one message of a refusal or an up-to-date IXFR)."""
    query = dns.message.make_query(zone, rdtype, use_edns=0 if edns else None)
    if serial is not None:
        query.authority.append(dns.rrset.from_text(zone, 0, "IN", "SOA",
                                                   f". . {serial} 0 0 0 0"))
    wire = query.to_wire()
    messages = []
    soas = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30,
                                  source_address=(source, 0)) as sock:
        sock.sendall(struct.pack("!H", len(wire)) + wire)
        while True:
            size = struct.unpack("!H", recv_exact(sock, 2))[0]
            data = recv_exact(sock, size)
            messages.append(data)
            message = dns.message.from_wire(data, xfr=True, one_rr_per_rrset=True)
            assert message.id == query.id
            if message.rcode() != dns.rcode.NOERROR:
                return messages
            soas += sum(1 for rrset in message.answer if rrset.rdtype == dns.rdatatype.SOA)
            if soas >= 2 or (len(messages) == 1 and len(message.answer) == 1 and soas == 1):
                return messages


def records(messages: list[bytes]) -> list[str]:
    out = []
    for data in messages:
        message = dns.message.from_wire(data, xfr=True, one_rr_per_rrset=True)
        out += [" ".join(rrset.to_text().split()) for rrset in message.answer]
    return out


def serial_of(messages: list[bytes]) -> int:
    return int(records(messages)[0].split()[6])


def test_axfr_is_xfr_go_record_by_record(running: Running):
    sent = transfer(running.dns, "cluster.local.", edns=True)
    serial = serial_of(sent)
    assert serial > 1_600_000_000  # the time of the cluster's last change
    assert records(sent) == expected_zone(serial)
    for data in sent:
        message = dns.message.from_wire(data, xfr=True)
        assert message.flags & dns.flags.AA and message.flags & dns.flags.QR
        assert message.rcode() == dns.rcode.NOERROR
        assert message.opt is not None and message.payload == 1232  # the client's OPT echoed
        assert not message.authority and not message.additional
        assert str(message.question[0]) == "cluster.local. IN AXFR"


def test_names_are_not_compressed(running: Running):
    """CoreDNS's Transfer.Out writes the messages without name compression: each message is
    its header, question and records written out in full."""
    for data in transfer(running.dns, "cluster.local."):
        message = dns.message.from_wire(data, xfr=True, one_rr_per_rrset=True)
        written = io.BytesIO()
        for rrset in message.answer:
            rrset.to_wire(written)          # no compression table: names in full
        question = message.question[0].name.to_wire() + b"\0\xfc\0\x01"
        assert data == data[:12] + question + written.getvalue()


def test_dnspython_takes_the_zone(running: Running):
    """An ordinary secondary's client (dnspython's xfr) reads the transfer as a zone."""
    import dns.zone
    zone = dns.zone.from_xfr(dns.query.xfr("127.0.0.1", "cluster.local.", port=running.dns,
                                           lifetime=30),
                             check_origin=False)  # no NS on loopback (see the module)
    assert zone.get_rdataset("web.shop.svc", "A")[0].address == "10.96.5.10"
    assert {rdata.target.to_text() for rdata in zone.get_rdataset("_pg._tcp.db.shop.svc",
                                                                   "SRV")} == {
        "db-0.db.shop.svc", "10-244-1-6.db.shop.svc"}


def test_ixfr(running: Running):
    current = serial_of(transfer(running.dns, "cluster.local."))
    up_to_date = transfer(running.dns, "cluster.local.", "IXFR", serial=current, edns=True)
    assert len(up_to_date) == 1
    message = dns.message.from_wire(up_to_date[0])
    assert message.rcode() == dns.rcode.NOERROR and not message.flags & dns.flags.AA
    assert records(up_to_date) == [expected_zone(current)[0]]
    assert message.opt is not None
    older = transfer(running.dns, "cluster.local.", "IXFR", serial=current - 100)
    assert records(older) == expected_zone(current)


def test_ixfr_without_a_soa_is_servfail(running: Running):
    query = dns.message.make_query("cluster.local.", "IXFR")
    reply = dns.query.tcp(query, "127.0.0.1", port=running.dns, timeout=10)
    assert reply.rcode() == dns.rcode.SERVFAIL


@pytest.mark.parametrize("zone", ["cluster.local.", "example.local.", "nowhere.test."])
def test_transfers_over_udp_are_refused(running: Running, zone: str):
    for rdtype in ("AXFR", "IXFR"):
        query = dns.message.make_query(zone, rdtype, use_edns=0)
        reply = dns.query.udp(query, "127.0.0.1", port=running.dns, timeout=10)
        assert reply.rcode() == dns.rcode.REFUSED
        assert not reply.answer and not reply.flags & dns.flags.AA
        assert reply.opt is not None


def test_a_client_outside_to_is_refused(running: Running):
    sent = transfer(running.dns, "cluster.local.", source="127.0.0.2", edns=True)
    assert len(sent) == 1
    reply = dns.message.from_wire(sent[0])
    assert reply.rcode() == dns.rcode.REFUSED
    assert not reply.answer and not reply.flags & dns.flags.AA
    assert reply.opt is not None
    # and a name below the zone is the same zone to the `to` check
    sent = transfer(running.dns, "sub.cluster.local.", source="127.0.0.2")
    assert dns.message.from_wire(sent[0]).rcode() == dns.rcode.REFUSED


def test_a_zone_no_transfer_line_names_is_answered_by_the_stanza(running: Running):
    """`example.local` is a stanza zone but no `transfer` zone: the query passes on and the
    stanza answers REFUSED, as CoreDNS's kubernetes plugin answers AXFR/IXFR."""
    for rdtype in ("AXFR", "IXFR"):
        sent = transfer(running.dns, "example.local.", rdtype, serial=1 if rdtype == "IXFR"
                        else None)
        reply = dns.message.from_wire(sent[0])
        assert reply.rcode() == dns.rcode.REFUSED
        assert not reply.flags & dns.flags.AA


def test_the_server_answers_other_queries_on_the_same_connection_afterwards(running: Running):
    query = dns.message.make_query("cluster.local.", "AXFR")
    follow = dns.message.make_query("web.shop.svc.cluster.local.", "A")
    with socket.create_connection(("127.0.0.1", running.dns), timeout=30) as sock:
        for message in (query, follow):  # pipelined: the A query waits for the transfer
            wire = message.to_wire()
            sock.sendall(struct.pack("!H", len(wire)) + wire)
        replies = []
        while True:
            size = struct.unpack("!H", recv_exact(sock, 2))[0]
            replies.append(dns.message.from_wire(recv_exact(sock, size), xfr=True))
            if replies[-1].id == follow.id:
                break
    assert [reply.id for reply in replies[:-1]] == [query.id] * (len(replies) - 1)
    assert replies[-1].answer[0][0].address == "10.96.5.10"


def expected_big_count() -> int:
    """The records of big.local's transfer, counted from the synthetic cluster by
    xfr.go's rules (2 SOAs; per ClusterIP service an A and an SRV per port, twice for a
    named one; per ready address of a headless service two A records and an SRV per
    named port of its slice)."""
    objects = list(synthetic.generate(synthetic.parse_spec(BIG)))
    slices = {(o["metadata"]["namespace"], o["metadata"]["labels"]["kubernetes.io/service-name"]):
              o for o in objects if o["kind"] == "EndpointSlice"}
    count = 2
    for obj in objects:
        if obj["kind"] != "Service":
            continue
        spec = obj["spec"]
        if spec["clusterIP"] != "None":
            count += 1 + sum(2 if port.get("name") else 1 for port in spec["ports"])
            continue
        es = slices[(obj["metadata"]["namespace"], obj["metadata"]["name"])]
        named = sum(1 for port in es["ports"] if port.get("name"))
        count += len(es["endpoints"]) * (2 + named)
    return count


def test_a_big_zone_comes_in_messages_of_at_most_63000_bytes_of_records(running: Running):
    started = time.monotonic()
    sent = transfer(running.dns, "big.local.", edns=True)
    took = time.monotonic() - started
    assert len(sent) >= 5
    question = len(dns.message.make_query("big.local.", "AXFR").question[0].name.to_wire()) + 4
    overhead = 12 + question + 11  # header, question, OPT
    lines = records(sent)
    assert len(lines) == expected_big_count()
    assert lines[0].split()[3] == lines[-1].split()[3] == "SOA"
    for data in sent:
        assert len(data) - overhead <= 63000  # CoreDNS's limit is on the records' bytes
        assert len(data) < 63000 + 512
    for data in sent[:-1]:
        assert len(data) - overhead > 62000  # each message is filled before it is cut
    assert took < 60


def axfr_requests(running: Running) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in running.metrics_text().splitlines()
               if line.startswith("coredns_dns_requests_total{") and 'type="AXFR"' in line)


def test_log_and_prometheus_count_a_transfer_once(running: Running):
    lines = running.server.log.read_text().count('"AXFR IN big.local. tcp')
    requests = axfr_requests(running)
    sent = transfer(running.dns, "big.local.")
    assert len(sent) > 1
    deadline = time.monotonic() + 10
    while running.server.log.read_text().count('"AXFR IN big.local. tcp') == lines:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.3)
    assert running.server.log.read_text().count('"AXFR IN big.local. tcp') == lines + 1
    assert axfr_requests(running) == requests + 1
    assert "plugin/transfer: Outgoing transfer of" in running.server.log.read_text()


def test_a_change_moves_the_serial_and_sends_notify(running: Running):
    first = serial_of(transfer(running.dns, "cluster.local."))
    running.notifies.receive(2.0)  # any NOTIFY of start-up (the first sync) is not this one
    while int(time.time()) <= first:  # the serial counts seconds
        time.sleep(0.05)
    running.cluster.apply([service("shop", "new", ["10.96.5.40"], [("http", 80, "TCP")])])
    got = running.notifies.receive(15.0)
    assert got, "no NOTIFY after the change"
    notify = got[0]
    assert notify.opcode() == dns.opcode.NOTIFY and notify.flags & dns.flags.AA
    assert not notify.flags & dns.flags.RD
    assert str(notify.question[0]) == "cluster.local. IN SOA"
    assert not notify.answer and notify.opt is None
    sent = transfer(running.dns, "cluster.local.")
    assert serial_of(sent) > first
    assert "new.shop.svc.cluster.local. 7 IN A 10.96.5.40" in records(sent)
    up_to_date = transfer(running.dns, "cluster.local.", "IXFR", serial=first)
    assert len(records(up_to_date)) > 2  # the old serial gets the whole zone
