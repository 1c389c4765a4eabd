"""Replies of several messages on one TCP connection (``Reply.more``): written in order, made
one at a time as the client reads, never buffered without bound.

The protocol runs synchronously over a transport that behaves as Twisted's TCP transport
does towards its producer: past a 64 KiB buffer it pauses the producer at once, and
resumes it once the client has taken everything (``drain``). A handler answers every
query of the block with a series of ~60 KB messages made by a generator that counts what
it made.
"""

from __future__ import annotations

import struct
from typing import Any, Iterator

import dns.message
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from kubernetai.core.dnsserver import KubernetaiServerFactory
from kubernetai.core.pipeline import BlockPipeline, Stage
from kubernetai.core.plugin import position
from kubernetai.core.request import Reply, Request

MESSAGES = 40
SIZE = 60_000


class Producing(StringTransport):
    """Pauses its producer past ``mark`` bytes unread; ``drain`` is the client reading."""

    mark = 65536

    def __init__(self) -> None:
        super().__init__()
        self.read: list[bytes] = []
        self.protocol: Any = None
        self.aborted = False

    def write(self, data: bytes) -> None:
        super().write(data)
        self._check()

    def writeSequence(self, data: Any) -> None:
        super().writeSequence(data)
        self._check()

    def _check(self) -> None:
        if self.producer is not None and len(self.io.getvalue()) > self.mark:
            self.producer.pauseProducing()

    def buffered(self) -> int:
        return len(self.io.getvalue())

    def drain(self) -> None:
        self.read.append(self.value())
        self.clear()
        if self.producer is not None:
            self.producer.resumeProducing()

    def abortConnection(self) -> None:
        if not self.aborted:
            self.aborted = True
            super().abortConnection()
            self.protocol.connectionLost(None)


class Series:
    """The block's only step: answers with ``MESSAGES`` messages, counting what it made."""

    name = "transfer"

    def __init__(self) -> None:
        self.made = 0
        self.closed = False
        self.observed: list[bytes] = []
        self.fail_at: int | None = None

    def serve(self, request: Request, next: Any) -> Reply:
        request.observe(lambda req, wire: self.observed.append(wire))
        if request.lname.startswith(b"plain"):
            return Reply(0, True)
        reply = Reply.encoded(self.message(request, 0))
        reply.more = self.rest(request)
        return reply

    def message(self, request: Request, index: int) -> bytes:
        self.made += 1
        if self.fail_at is not None and index == self.fail_at:
            raise RuntimeError("a message could not be made")
        pad = struct.pack("!H", index) + b"x" * (SIZE - 2)
        # a header and the question, then an opaque body (the client counts bytes only)
        return (struct.pack("!HBBHHHH", request.id, 0x84, 0, 1, 0, 0, 0) + request.question
                + pad)

    def rest(self, request: Request) -> Iterator[bytes]:
        try:
            for index in range(1, MESSAGES):
                yield self.message(request, index)
        finally:
            self.closed = True


class StreamTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.step = Series()
        block = BlockPipeline([Stage("transfer", position("transfer"), 0, handler=self.step)])
        self.factory = KubernetaiServerFactory({"example.test": block}, reactor=self.clock)
        self.proto = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
        self.transport = Producing()
        self.transport.protocol = self.proto
        self.proto.makeConnection(self.transport)

    def ask(self, name: str = "zone.example.test") -> dns.message.Message:
        query = dns.message.make_query(name, "AXFR")
        wire = query.to_wire()
        self.proto.dataReceived(struct.pack("!H", len(wire)) + wire)
        return query

    def received(self) -> list[bytes]:
        data = b"".join(self.transport.read) + self.transport.value()
        out = []
        while data:
            (n,) = struct.unpack("!H", data[:2])
            out.append(data[2:2 + n])
            data = data[2 + n:]
        return out

    def test_a_client_that_does_not_read_holds_two_messages(self) -> None:
        self.ask()
        self.assertEqual(self.step.made, 2)
        self.assertLess(self.transport.buffered(), 2 * (SIZE + 100))
        self.clock.advance(4)
        self.assertEqual(self.step.made, 2)  # nothing more made while nobody reads
        self.assertFalse(self.transport.disconnecting)

    def test_all_messages_in_order_as_the_client_reads(self) -> None:
        query = self.ask()
        rounds = 0
        while self.step.made < MESSAGES or self.transport.buffered():
            self.clock.advance(1)
            self.transport.drain()
            rounds += 1
            self.assertLess(self.transport.buffered(), 2 * (SIZE + 100))
        got = self.received()
        self.assertEqual(len(got), MESSAGES)
        self.assertEqual([struct.unpack_from("!H", m, len(m) - SIZE)[0] for m in got],
                         list(range(MESSAGES)))
        self.assertTrue(all(struct.unpack_from("!H", m)[0] == query.id for m in got))
        self.assertGreater(rounds, MESSAGES // 3)
        # log/prometheus-style observers hear of the query once, with the first message
        self.assertEqual(self.step.observed, [got[0]])
        self.assertTrue(self.step.closed)
        self.assertFalse(self.transport.disconnecting)

    def test_no_query_is_read_during_a_series_and_it_is_answered_after(self) -> None:
        self.ask()
        plain = self.ask("plain.example.test")
        self.assertEqual(self.transport.producerState, "paused")   # reading stopped
        while self.step.made < MESSAGES or self.transport.buffered():
            self.transport.drain()
        got = self.received()
        self.assertEqual(len(got), MESSAGES + 1)
        self.assertEqual(dns.message.from_wire(got[-1]).id, plain.id)
        self.assertEqual(self.transport.producerState, "producing")

    def test_pipelined_series_follow_each_other_whole(self) -> None:
        first = self.ask()
        second = self.ask()
        for _ in range(200):
            self.transport.drain()
        got = self.received()
        self.assertEqual(len(got), 2 * MESSAGES)
        ids = [struct.unpack_from("!H", m)[0] for m in got]
        self.assertEqual(ids, [first.id] * MESSAGES + [second.id] * MESSAGES)

    def test_a_client_that_stops_reading_is_disconnected_after_the_write_timeout(self) -> None:
        self.ask()
        self.transport.drain()
        self.clock.advance(self.proto.writeTimeout - 0.1)
        self.assertFalse(self.transport.aborted)
        self.clock.advance(0.2)
        self.assertTrue(self.transport.aborted)
        self.assertTrue(self.step.closed)        # the generator was let go
        self.assertEqual(len(self.step.observed), 1)
        self.assertLess(self.step.made, 6)

    def test_a_message_that_cannot_be_made_cuts_the_connection(self) -> None:
        self.step.fail_at = 3
        self.ask()
        for _ in range(5):
            if self.transport.aborted:
                break
            self.transport.drain()
        self.assertTrue(self.transport.aborted)
        self.assertEqual(len(self.received()), 3)
        self.flushLoggedErrors(RuntimeError)

    def test_over_udp_only_the_first_message_goes(self) -> None:
        sent: list[bytes] = []

        class Port:
            def write(self, data: bytes, addr: Any) -> None:
                sent.append(data)

            def getHost(self) -> Any:
                return IPv4Address("UDP", "127.0.0.1", 53)
        udp = self.factory.buildDatagramProtocol()
        udp.transport = Port()
        query = dns.message.make_query("zone.example.test", "AXFR").to_wire()
        udp.datagramReceived(query, ("127.0.0.1", 5353))
        self.assertEqual(len(sent), 1)
        self.assertEqual(self.step.made, 1)         # the rest is never made
        self.assertEqual(len(self.step.observed), 1)
