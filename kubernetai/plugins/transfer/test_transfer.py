"""The `transfer` directive's parsing (CoreDNS's messages), its address rules, the step's
decisions over a stand-in source, and when NOTIFY goes (a fake clock).

End to end (twistd, simulated clusters): ``tests/test_transfer.py``.
"""

from __future__ import annotations

import socket
from typing import Any, Iterator

import dns.flags
import dns.message
import dns.opcode
import dns.rrset
import pytest
from twisted.internet import task

from kubernetai.core.codec import REFUSED, SERVFAIL, parse_request
from kubernetai.core.registry import BlockBuilder, Registry
from kubernetai.core.request import Reply, Request
from kubernetai.corefile import CorefileError, parse
from kubernetai.plugins.transfer.handler import TransferHandler, Xfr, longest_match
from kubernetai.plugins.transfer.hostport import host_port, split_host_port
from kubernetai.plugins.transfer.notify import Notifier, notify_message


def set_up(body: str, keys: str = "example.org") -> BlockBuilder:
    (block,) = parse(f"{keys} {{\n{body}\n}}\n", "Corefile")
    zones = tuple(key.zone for key in block.keys)
    return Registry().set_up_block(block, BlockBuilder(block, zones))


def handler_of(builder: BlockBuilder) -> TransferHandler:
    (handler,) = [s.handler for s in builder.stages if isinstance(s.handler, TransferHandler)]
    return handler


def error_of(body: str) -> CorefileError:
    with pytest.raises(CorefileError) as info:
        set_up(body)
    return info.value


@pytest.mark.parametrize("body,line,message", [
    ("transfer {\n to\n}", 3,
     "plugin/transfer: Wrong argument count or unexpected line ending after 'to'"),
    ("transfer {\n to foo\n}", 3, "plugin/transfer: must specify an IP address: `foo'"),
    ("transfer {\n to 10.0.0.1 example.com:53\n}", 3,
     "plugin/transfer: must specify an IP address: `example.com'"),
    ("transfer {\n to [1::2]\n}", 3, "plugin/transfer: must specify an IP address: `[1::2]'"),
    ("transfer", 2, "plugin/transfer: plugin/transfer: 'to' is required"),
    ("transfer {\n source 10.0.0.1\n}", 2,
     "plugin/transfer: plugin/transfer: 'to' is required"),
    ("transfer {\n to *\n source\n}", 4,
     "plugin/transfer: Wrong argument count or unexpected line ending after 'source'"),
    ("transfer {\n to *\n source 10.0.0.1 10.0.0.2\n}", 4,
     "plugin/transfer: Wrong argument count or unexpected line ending after '10.0.0.2'"),
    ("transfer {\n to *\n source 10.0.0.1\n source 10.0.0.2\n}", 5,
     "plugin/transfer: plugin/transfer: source already specified"),
    ("transfer {\n to *\n source host.example\n}", 4,
     'plugin/transfer: plugin/transfer: invalid source address "host.example"'),
    ("transfer {\n to *\n from 10.0.0.1\n}", 4,
     'plugin/transfer: plugin/transfer: unknown property "from"'),
])
def test_errors_have_corednss_text(body: str, line: int, message: str) -> None:
    error = error_of(body)
    assert (error.line, error.message) == (line, message)


def test_lines_zones_and_addresses() -> None:
    builder = set_up("transfer {\n to * 10.0.0.1 5.6.7.8:1053 12:34::56 [1::2]:34\n"
                     " to fe80::1%eth0\n source 10.0.0.9\n}\n"
                     "transfer Sub.Example.ORG 10.0.0.0/8 {\n to 10.0.0.2\n}",
                     "example.org:53 example.net:53")
    handler = handler_of(builder)
    first, second = handler.xfrs
    assert first == Xfr(("example.org.", "example.net."),
                        ("*", "10.0.0.1:53", "5.6.7.8:1053", "[12:34::56]:53", "[1::2]:34",
                         "[fe80::1%eth0]:53"), "10.0.0.9")
    assert second.zones == ("sub.example.org.", "10.in-addr.arpa.")
    assert handler.zones() == ["example.org.", "example.net.", "sub.example.org.",
                               "10.in-addr.arpa."]


def test_a_zone_argument_that_cannot_be_read_is_refused() -> None:
    error = error_of("transfer :53 {\n to *\n}")
    assert error.message.startswith('plugin/transfer: invalid zone ":53"')


@pytest.mark.parametrize("text,split", [
    ("1.2.3.4:53", ("1.2.3.4", "53")), ("[::1]:53", ("::1", "53")), ("host:", ("host", "")),
    ("[fe80::1%eth0]:8", ("fe80::1%eth0", "8")), ("1.2.3.4", None), ("::1", None),
    ("[::1]", None), ("[::1]x", None), ("a]:1", None), ("[a:1", None),
])
def test_split_host_port_is_gos(text: str, split: tuple[str, str] | None) -> None:
    if split is None:
        with pytest.raises(ValueError):
            split_host_port(text)
    else:
        assert split_host_port(text) == split


@pytest.mark.parametrize("text,normal", [
    ("1.2.3.4", "1.2.3.4:53"), ("1.2.3.4:", "1.2.3.4:53"), ("5.6.7.8:1053", "5.6.7.8:1053"),
    ("12:34::56", "[12:34::56]:53"), ("[1::2]:34", "[1::2]:34"), ("::ffff:1.2.3.4",
                                                                  "[::ffff:1.2.3.4]:53"),
    ("01.2.3.4", None), ("1.2.3", None), ("foo", None), ("[1::2]", None),
])
def test_host_port_is_corednss(text: str, normal: str | None) -> None:
    if normal is None:
        with pytest.raises(ValueError, match="must specify an IP address"):
            host_port(text, "53")
    else:
        assert host_port(text, "53") == normal


def test_allowed_matches_the_host_as_written_and_ignores_the_port() -> None:
    xfr = Xfr(("example.org.",), ("10.0.0.1:5300", "[2001:db8::1]:53"))
    assert xfr.allowed("10.0.0.1") and xfr.allowed("2001:db8::1")
    assert not xfr.allowed("10.0.0.2") and not xfr.allowed("2001:db8:0::2")
    assert Xfr((".",), ("*",)).allowed("anyone")
    assert xfr.targets() == ["10.0.0.1:5300", "[2001:db8::1]:53"]
    assert Xfr((".",), ("*", "1.2.3.4:53")).targets() == ["1.2.3.4:53"]


def test_longest_match() -> None:
    root, org, other, also_org = (Xfr((".",), ("*",)), Xfr(("example.org.",), ("*",)),
                                  Xfr(("example.net.", "a.example.org."), ("*",)),
                                  Xfr(("example.org.",), ("1.1.1.1:53",)))
    xfrs = [root, org, other, also_org]
    assert longest_match(xfrs, "b.example.org.") is org          # first of equal zones
    assert longest_match(xfrs, "x.a.example.org.") is other
    assert longest_match(xfrs, "example.com.") is root
    assert longest_match(xfrs[1:], "example.com.") is None


class Source:
    """A stand-in for a stanza: holds ``zone`` with a serial and a few records."""

    def __init__(self, zone: str, serial: int = 10) -> None:
        self.zone = zone
        self.serial = serial
        self.asked: list[tuple[str, int]] = []

    def transfer(self, zone: str, serial: int) -> Any:
        self.asked.append((zone, serial))
        if not (zone == self.zone or zone.endswith("." + self.zone)):
            return None
        return _Transfer(self, zone, serial)


class _Transfer:
    def __init__(self, source: Source, zone: str, requested: int) -> None:
        self.source, self.zone, self.requested = source, zone, requested
        self.serial = source.serial

    def __iter__(self) -> Iterator[Any]:
        from twisted.names import dns as tdns
        name = self.zone.rstrip(".").encode()
        soa = tdns.RRHeader(name, tdns.SOA, tdns.IN, 5, tdns.Record_SOA(
            b"ns.dns." + name, b"hostmaster." + name, serial=self.serial), True)
        yield soa
        if self.requested and self.requested == self.serial:
            return
        yield tdns.RRHeader(b"a." + name, tdns.A, tdns.IN, 5, tdns.Record_A("192.0.2.1"), True)
        yield soa


class Peer:
    host = "127.0.0.1"

    def __init__(self, host: str) -> None:
        self.host = host

    def peer(self, addr: Any) -> tuple[str, int]:
        return self.host, 4242


def request(name: str, rdtype: str = "AXFR", *, udp: bool = False, client: str = "10.0.0.1",
            serial: int | None = None) -> Request:
    query = dns.message.make_query(name, rdtype)
    if serial is not None:
        query.authority.append(dns.rrset.from_text(name + ".", 0, "IN", "SOA",
                                                   f". . {serial} 0 0 0 0"))
    parsed = parse_request(query.to_wire(), udp)
    assert isinstance(parsed, Request)
    parsed.proto = Peer(client)
    parsed.addr = None
    return parsed


PASSED = Reply(0, False)


def step(*xfrs: Xfr, sources: tuple = ()) -> TransferHandler:
    handler = TransferHandler()
    for xfr in xfrs:
        handler.add(xfr)
    handler.sources = sources
    return handler


def serve(handler: TransferHandler, req: Request) -> Reply:
    reply = handler.serve(req, lambda r: PASSED)
    assert isinstance(reply, Reply)
    return reply


def test_the_steps_decisions_in_corednss_order() -> None:
    source = Source("example.org.")
    handler = step(Xfr(("example.org.",), ("10.0.0.1:53",)), sources=(source,))
    assert serve(handler, request("example.org", "A")) is PASSED
    assert serve(handler, request("example.org", udp=True)).rcode == REFUSED
    assert serve(handler, request("nowhere.test")) is PASSED
    refused = serve(handler, request("example.org", client="10.0.0.2"))
    assert (refused.rcode, refused.plugin, refused.aa) == (REFUSED, "transfer", False)
    assert serve(handler, request("example.org", "IXFR")).rcode == SERVFAIL
    assert source.asked == []
    reply = serve(handler, request("Example.ORG"))
    assert source.asked == [("example.org.", 0)]
    first = dns.message.from_wire(reply.wire, one_rr_per_rrset=True)
    rest = list(reply.more)
    assert first.flags & dns.flags.AA and len(first.answer) == 3 and rest == []
    noop = serve(handler, request("example.org", "IXFR", serial=10))
    message = dns.message.from_wire(noop.wire)
    assert len(message.answer) == 1 and not message.flags & dns.flags.AA
    full = serve(handler, request("example.org", "IXFR", serial=9))
    assert len(dns.message.from_wire(full.wire, one_rr_per_rrset=True).answer) == 3
    # a source that does not hold the name: the query passes on
    assert serve(step(Xfr((".",), ("*",)), sources=(source,)), request("example.com")) is PASSED


def test_the_first_source_holding_the_name_sends_it() -> None:
    first, second = Source("other.org."), Source("example.org.", serial=77)
    third = Source("example.org.", serial=99)
    handler = step(Xfr(("example.org.",), ("*",)), sources=(first, second, third))
    reply = serve(handler, request("example.org"))
    assert "77" in dns.message.from_wire(reply.wire).answer[0].to_text()
    assert third.asked == []


def test_the_source_is_found_in_the_block() -> None:
    """`transfer` set up before the stanzas still finds them (in chain order), and nothing
    else of the block."""
    builder = set_up("transfer {\n to *\n}\nkubernetai example.org {\n endpoint "
                     "http://127.0.0.1:1\n}\nkubernetai example.org {\n endpoint "
                     "http://127.0.0.1:2\n}\nlog")
    sources = handler_of(builder).sources
    assert [type(s).__name__ for s in sources] == ["StanzaResolver", "StanzaResolver"]
    assert [s.cluster.config.line for s in sources] == [5, 8]


def test_notify_message_is_miekgs_set_notify() -> None:
    message = dns.message.from_wire(notify_message("cluster.local.", 4242))
    assert message.id == 4242 and message.opcode() == dns.opcode.NOTIFY
    assert message.flags & dns.flags.AA and not message.flags & dns.flags.RD
    assert str(message.question[0]) == "cluster.local. IN SOA"
    assert message.edns < 0 and not message.answer


class CountingNotifier(Notifier):
    """Counts rounds instead of sending them."""

    def __init__(self, handler: TransferHandler, clock: task.Clock) -> None:
        super().__init__(handler, clock)
        self.sent: list[tuple[float, str, list[str]]] = []

    def send(self, zone: str, targets: list[str], source: str | None) -> None:
        self.sent.append((self.reactor.seconds(), zone, targets))


def test_notify_follows_serial_changes_coalesced() -> None:
    clock = task.Clock()
    source = Source("cluster.local.", serial=100)
    handler = step(Xfr(("cluster.local.", "other.local."), ("*", "10.0.0.5:5300")),
                   sources=(source,))
    notifier = CountingNotifier(handler, clock)
    notifier.startService()
    clock.advance(3)
    assert notifier.sent == []                    # the first reading is the baseline
    source.serial = 101
    clock.advance(1)
    assert notifier.sent == [(4.0, "cluster.local.", ["10.0.0.5:5300"])]
    # 100 changes a second for 20 s: one NOTIFY per hold (5 s)
    for _ in range(20 * 100):
        source.serial += 1
        clock.advance(0.01)
    times = [when for when, _, _ in notifier.sent]
    assert 3 <= len(times) <= 1 + 20 / notifier.hold
    assert all(b - a >= notifier.hold for a, b in zip(times, times[1:]))
    # quiet: the last changes are sent once their hold is over, then nothing more
    clock.advance(30)
    assert len(notifier.sent) == len(times) + 1
    assert notifier.sent[-1][0] - times[-1] >= notifier.hold
    notifier.stopService()


def test_notify_reaches_a_peer_and_a_refusal_is_logged(free_port: Any) -> None:
    """One real exchange over loopback with the reactor of a clock-less run: a peer that
    answers NOERROR accepts; one that answers REFUSED three times is reported with
    CoreDNS's text."""
    from kubernetai.plugins.transfer.notify import _Exchange

    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    port = peer.getsockname()[1]

    class Reactor:
        """Just enough of a reactor: real UDP sockets, timers on a fake clock."""

        def __init__(self) -> None:
            self.clock = task.Clock()
            self.ports: list[Any] = []

        def listenUDP(self, port: int, protocol: Any, interface: str = "") -> Any:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((interface or "127.0.0.1", port))
            outer = self

            class Port:
                def connect(self, host: str, to: int) -> None:
                    sock.connect((host, to))
                    protocol.transport = self

                def write(self, data: bytes) -> None:
                    sock.send(data)

                def stopListening(self) -> None:
                    sock.close()
                    outer.ports.remove(self)

                def poll(self) -> None:
                    sock.settimeout(2)
                    protocol.datagramReceived(sock.recv(4096), None)
            port_ = Port()
            self.ports.append(port_)
            return port_

        def callLater(self, *args: Any) -> Any:
            return self.clock.callLater(*args)

    def answer(rcode: int) -> None:
        import select
        select.select([peer], [], [], 2)
        data, address = peer.recvfrom(4096)
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        reply.set_rcode(rcode)
        peer.sendto(reply.to_wire(), address)

    try:
        results: list[str | None] = []
        fake = Reactor()
        exchange = _Exchange(fake, "cluster.local.", f"127.0.0.1:{port}", None)
        exchange.finished = results.append
        exchange.start()
        answer(0)
        fake.ports[0].poll()
        assert results == [None]
        exchange = _Exchange(fake, "cluster.local.", f"127.0.0.1:{port}", None)
        exchange.finished = results.append
        exchange.start()
        for _ in range(3):
            answer(5)
            fake.ports[0].poll()
        assert results[1] == ('notify for zone "cluster.local." was not accepted by '
                              f'"127.0.0.1:{port}": rcode was "REFUSED"')
        assert fake.ports == []
        exchange = _Exchange(fake, "cluster.local.", f"127.0.0.1:{port}", None)
        exchange.finished = results.append
        exchange.start()
        for _ in range(3):
            fake.clock.advance(2.0)
        assert results[2] == ('notify for zone "cluster.local." was not accepted by '
                              f'"127.0.0.1:{port}": "read udp 127.0.0.1:{port}: i/o timeout"')
        assert exchange.tries == 3
    finally:
        peer.close()
