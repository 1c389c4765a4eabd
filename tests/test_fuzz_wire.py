"""Property tests of the wire path: hostile queries through the server a Corefile builds.

Hypothesis builds DNS queries the way an attacker or a broken client would (names holding
control bytes, dots inside labels, compression pointers anywhere, odd section counts, OPT
records with COOKIEs of any length and kilobytes of PADDING, random UDP sizes), raw random
bytes, and valid queries with bytes flipped, cut or inserted. Each goes to
``handleWire`` of the factory production builds (`build_factory` with a `WireCache`) from
a real Corefile over three real simulated API servers, as UDP or TCP. What must hold for
every input:

* nothing escapes ``handleWire`` and nothing is logged as a failure (no traceback);
* a request that is not dropped gets exactly one reply, and it parses with dnspython;
* the reply has the request's ID and, when it has a question, the question that was sent,
  and its answers are for that name (or where its CNAMEs lead);
* over UDP it is no larger than max(512, the UDP size the client advertised);
* a COOKIE in a reply is this client's own (never another client's, from the cache);
* the answer cache stays within its byte bound;
* every ``log`` and ``errors`` line is printable ASCII, the query name written as CoreDNS
  writes it (``\\DDD`` for bytes outside ``!``..``~``, ``\\.`` for a dot inside a label).

Runs are short and derandomized (the same inputs every run, no example database), so the
suite stays quick and stable. ``KUBERNETAI_FUZZ_EXAMPLES=N`` runs N random (not
derandomized) examples per property for a longer hunt; ``bench/fuzz_udp.py`` sends a
million packets to a running server.
"""

from __future__ import annotations

import os
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from conftest import EXAMPLES
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

import kubernetai.corefile as corefile
from kubernetai.app.server import PortPlan, build_factory, compile_corefile, connect_all
from kubernetai.core.codec import type_name
from kubernetai.core.wirecache import WireCache
from kubernetai.pkg.reactor_thread import in_reactor
from kubernetai.plugins.errors.handler import ErrorsHandler
from kubernetai.plugins.log.handler import LogHandler
from kubernetai.sandbox.server import Sandbox

# The lenient request reader is the one bench/fuzz_udp.py uses at scale.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from fuzzlib import skip_name  # noqa: E402

# Corefile.example's layout (errors and log on), plus a block whose only stanza falls
# through: its unknown names are SERVFAIL with an errors line, so errors lines get fuzzed.
COREFILE = """\
cluster.local assemblage.local conglomeration.local in-addr.arpa ip6.arpa {{
    bind 127.0.0.1
    errors
    log
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
fall.test {{
    bind 127.0.0.1
    errors
    log
    kubernetai fall.test {{
        endpoint {cluster}
        fallthrough
    }}
}}
"""

CLIENT = ("127.0.0.1", 53535)
#: The cache bound under test: small, so a few padded or large answers reach it.
CACHE_BYTES = 32 * 1024
#: How long one query may take before it counts as a hang.
HANG_SECONDS = 10.0

_EXAMPLES = int(os.environ.get("KUBERNETAI_FUZZ_EXAMPLES", "0") or 0)


def fuzz_settings(examples: int) -> settings:
    """Short and reproducible in the suite; KUBERNETAI_FUZZ_EXAMPLES for a random hunt."""
    return settings(max_examples=_EXAMPLES or examples, derandomize=not _EXAMPLES,
                    database=None, deadline=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example,
                                           HealthCheck.filter_too_much])


# ---------------------------------------------------------------------------------------
# The server under test


class Capture:
    """The protocol side of handleWire (sendWire/peer): keeps what the server sends."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendWire(self, wire: bytes, addr: Any = None) -> None:
        self.sent.append(wire)

    def peer(self, addr: Any = None) -> tuple[str, int]:
        return addr if addr is not None else CLIENT


@dataclass
class Exchange:
    """One request, what handleWire did with it, and what it wrote."""

    data: bytes
    udp: bool
    handled: bool
    replies: list[bytes]
    lines: list[str] = field(default_factory=list)       # log and errors lines
    failures: list[str] = field(default_factory=list)    # failures the server logged
    misrouted: list[str] = field(default_factory=list)   # errors no `errors` wrote


def on_reactor(fn: Callable[[], Any], timeout: float = HANG_SECONDS) -> Any:
    """fn() on the reactor thread; a call that does not return in time is a hang."""
    done = threading.Event()
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["result"] = fn()
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            box["error"] = error
        finally:
            done.set()
    reactor.callFromThread(call)
    if not done.wait(timeout):
        raise AssertionError(f"the reactor did not come back within {timeout} s: a hang")
    if "error" in box:
        raise box["error"]
    return box["result"]


class Harness:
    """The production factory of one Corefile port, its log lines and logged failures.

    The blocks' `log` and `errors` steps write to ``lines``; a plugin error that no
    `errors` step wrote reaches the factory's ``on_error`` and lands in ``misrouted``.
    """

    def __init__(self, plan: PortPlan, cache: WireCache) -> None:
        self.lines: list[str] = []
        self.failures: list[str] = []
        self.misrouted: list[str] = []
        self.cache = cache
        self.factory = build_factory(plan, reactor, cache)
        self.factory.on_error = self.misrouted.append
        writers = 0
        for block in plan.blocks:
            for handler in block.pipeline(cache).handlers:
                if isinstance(handler, (LogHandler, ErrorsHandler)):
                    handler.write = self.lines.append
                    writers += 1
        assert writers == 2 * len(plan.blocks), "every block has its log and errors"
        # The server logs an internal failure once per 10 s; every one must be seen here.
        limiter = getattr(self.factory, "_internalLog", None)
        if limiter is not None:
            limiter.interval = 0

    def observe(self, event: dict[str, Any]) -> None:
        """Twisted log observer: failures of the request path."""
        namespace = event.get("log_namespace", "")
        level = event.get("log_level")
        if namespace.startswith(("kubernetai.core", "kubernetai.plugins")) and (
                "log_failure" in event or level in (LogLevel.error, LogLevel.critical)):
            failure = event.get("log_failure")
            trace = failure.getTraceback() if failure is not None else ""
            self.failures.append(f"{formatEvent(event)}\n{trace}")

    def exchange(self, data: bytes, udp: bool) -> Exchange:
        """Hand one request to handleWire on the reactor thread and collect the outcome."""
        proto = Capture()
        result = Exchange(data, udp, False, proto.sent, self.lines, self.failures,
                          self.misrouted)

        def run() -> Exchange:
            self.lines.clear()
            self.failures.clear()
            self.misrouted.clear()
            result.handled = self.factory.handleWire(data, proto, CLIENT if udp else None,
                                                     udp)
            return self.snapshot(result)
        ex = on_reactor(run)
        if ex.handled and not ex.replies:  # an answer still on its way (a Deferred)
            deadline = time.monotonic() + HANG_SECONDS
            while not ex.replies and time.monotonic() < deadline:
                time.sleep(0.01)
                ex = on_reactor(lambda: self.snapshot(result))
        return ex

    @staticmethod
    def snapshot(ex: Exchange) -> Exchange:
        """A copy the test thread can read while the reactor goes on."""
        return Exchange(ex.data, ex.udp, ex.handled, list(ex.replies), list(ex.lines),
                        list(ex.failures), list(ex.misrouted))


def big_headless(count: int) -> list[dict[str, Any]]:
    """A headless service with `count` endpoints: answers past 512 bytes, truncation."""
    endpoints = [{"addresses": [f"10.250.0.{i + 1}"], "hostname": f"m-{i}",
                  "conditions": {"ready": True}} for i in range(count)]
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "big", "namespace": "shop"},
         "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "big-1", "namespace": "shop",
                      "labels": {"kubernetes.io/service-name": "big"}},
         "addressType": "IPv4", "endpoints": endpoints,
         "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    ]


@pytest.fixture(scope="module")
def clusters(reactor_running: None) -> Iterator[dict[str, str]]:
    """The three demo clusters in simulated API servers: first label of the zone -> URL."""
    servers = {}
    for zone in ("cluster.local", "assemblage.local", "conglomeration.local"):
        server = Sandbox()
        server.apply(EXAMPLES / zone)
        server.start()
        servers[zone.split(".")[0]] = server
    servers["cluster"].apply(big_headless(60))
    try:
        yield {name: server.url for name, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="module")
def harness(clusters: dict[str, str], tmp_path_factory: Any) -> Iterator[Harness]:
    """The factory `twistd kubernetai` would build for COREFILE, its clusters synced."""
    path = tmp_path_factory.mktemp("fuzz") / "Corefile"
    path.write_text(COREFILE.format(**clusters))
    (plan,) = compile_corefile(corefile.parse_file(path))
    connect_all([plan])
    stanzas = plan.clusters()

    def start() -> defer.Deferred:
        for cluster in stanzas:
            cluster.startService()
        return defer.gatherResults([cluster.wait_synced(30) for cluster in stanzas])
    assert all(in_reactor(start)), "the simulated clusters did not sync"
    h = Harness(plan, WireCache(max_bytes=CACHE_BYTES))
    globalLogPublisher.addObserver(h.observe)
    try:
        yield h
    finally:
        globalLogPublisher.removeObserver(h.observe)
        in_reactor(lambda: defer.gatherResults([c.stopService() for c in stanzas]))


# ---------------------------------------------------------------------------------------
# Reading the request independently of the server


@dataclass
class Scan:
    """What the properties need to know about a request, read leniently."""

    udp_size: int | None            # the last OPT record's UDP size (the one that counts)
    cookies: list[bytes]            # the COOKIE options of that OPT record


def scan(data: bytes) -> Scan | None:
    """The request's last OPT record, as any lenient parser reads it; None if it cannot."""
    last: tuple[int, bytes] | None = None
    try:
        qd, an, ns, ar = struct.unpack_from("!HHHH", data, 4)
        pos = 12
        for _ in range(qd):
            pos = skip_name(data, pos) + 4
        for index in range(an + ns + ar):
            start = skip_name(data, pos)
            rtype, rclass, _, rdlen = struct.unpack_from("!HHIH", data, start)
            pos = start + 10 + rdlen
            if pos > len(data):
                return None
            if rtype == 41 and index >= an + ns:
                last = (rclass, data[start + 10:pos])
        if pos > len(data):
            return None
    except (IndexError, ValueError, struct.error):
        return None
    if last is None:
        return Scan(None, [])
    size, rdata = last
    cookies = []
    at = 0
    while at + 4 <= len(rdata):
        code, length = struct.unpack_from("!HH", rdata, at)
        if code == 10:
            cookies.append(rdata[at + 4:at + 4 + length])
        at += 4 + length
    return Scan(size, cookies)


def sent_question(data: bytes) -> tuple[tuple[bytes, ...], int, int] | None:
    """The question of the request as dnspython reads it (name labels as sent)."""
    try:
        message = dns.message.from_wire(data, question_only=True)
    except Exception:  # noqa: BLE001 - not every request has a readable question
        return None
    if len(message.question) != 1:
        return None
    (rrset,) = message.question
    return rrset.name.labels, rrset.rdtype, rrset.rdclass


_SPECIAL = frozenset(b".'@;()\"\\ ")


def coredns_name(labels: list[bytes]) -> str:
    """A query name as CoreDNS's log and errors write it (miekg/dns presentation, lower)."""
    def byte(b: int) -> str:
        if b in _SPECIAL:
            return "\\" + chr(b)
        if b < 0x20 or b > 0x7E:
            return f"\\{b:03d}"
        return chr(b)
    text = ".".join("".join(byte(b) for b in label) for label in labels)
    return (text + ".").lower() if text else "."


# ---------------------------------------------------------------------------------------
# Properties


def check_reply(ex: Exchange) -> dns.message.Message | None:
    """The properties every request and its reply must have; the parsed reply, if any."""
    assert not ex.failures, "the server logged a failure:\n" + "\n".join(ex.failures)
    if not ex.handled:
        assert ex.replies == [], "handleWire said it dropped the request, yet replied"
        return None
    assert len(ex.replies) == 1, f"{len(ex.replies)} replies to one request"
    (reply,) = ex.replies
    try:
        message = dns.message.from_wire(reply)
    except Exception as error:  # noqa: BLE001 - any parse failure is the finding
        raise AssertionError(f"the reply does not parse: {type(error).__name__}: {error}\n"
                             f"reply: {reply.hex()}") from None
    assert reply[:2] == ex.data[:2], "the reply's ID is not the request's"
    assert message.flags & dns.flags.QR, "the reply has no QR bit"
    if ex.udp:
        request = scan(ex.data)
        advertised = request.udp_size if request and request.udp_size is not None else 0
        allowed = max(512, advertised)
        assert len(reply) <= allowed, (
            f"a {len(reply)}-byte UDP reply to a client that allows {allowed}")
    else:
        assert len(reply) <= 65535
    if message.question:
        sent = sent_question(ex.data)
        if sent is not None:
            (rrset,) = message.question
            got = (rrset.name.labels, rrset.rdtype, rrset.rdclass)
            assert got == sent, f"the reply's question {got} is not the one sent {sent}"
        # Answers are for the name asked, or for where its CNAMEs lead.
        owners = {message.question[0].name}
        for rrset in message.answer:
            assert rrset.name in owners, (
                f"an answer for {rrset.name} to a question for {message.question[0].name}")
            if rrset.rdtype == dns.rdatatype.CNAME:
                owners.update(rr.target for rr in rrset)
    cookies = [option for option in message.options if option.otype == dns.edns.COOKIE]
    if cookies:
        request = scan(ex.data)
        mine = [c[:8] for c in request.cookies] if request else []
        for option in cookies:
            assert option.client in mine, (
                f"the reply's COOKIE {option.client.hex()} is not one this client sent")
    return message


# ---------------------------------------------------------------------------------------
# Strategies

#: Labels that lead somewhere in the demo clusters, so answers (large ones too) are fuzzed.
WORDS = [b"web", b"shared", b"svc", b"reports", b"storefront", b"big", b"shop", b"_http",
         b"_tcp", b"_udp", b"_grpc", b"cart", b"web-0", b"nginx", b"default", b"pod",
         b"10-96-100-10", b"gateway", b"edge", b"kube-dns", b"kube-system", b"dns-version",
         b"m-1", b"nope", b"*", b"any", b"10", b"96", b"100"]
ZONES = [b"cluster.local", b"assemblage.local", b"conglomeration.local", b"in-addr.arpa",
         b"10.in-addr.arpa", b"ip6.arpa", b"fall.test", b"example.com", b""]
SERVED = [z for z in ZONES if z not in (b"example.com", b"")]
#: Bytes that break logs, terminals and naive name handling.
NASTY = list(b"\x00\x07\x08\t\n\r\x1b\x7f\x80\x9b\xff.\\ \"'@;()[]{}$%") + list(b"aZ-_09")
QTYPES = [1, 28, 33, 12, 16, 255, 6, 2, 5, 43, 41, 250, 251, 252, 0, 65, 99, 65535]
QCLASSES = [1, 1, 1, 1, 3, 4, 254, 255, 0]
UDP_SIZES = [0, 1, 511, 512, 513, 1232, 1400, 4096, 8192, 65535]
PADDING = [468, 1200, 4000, 7000, 20000, 60000]

label_bytes = st.one_of(
    st.sampled_from(WORDS),
    st.lists(st.sampled_from(NASTY), min_size=1, max_size=20).map(bytes),
    st.binary(min_size=1, max_size=63),
)
label = st.tuples(label_bytes, st.booleans()).map(lambda t: t[0].upper() if t[1] else t[0])


def encode_labels(labels: list[bytes]) -> bytes:
    return b"".join(bytes([len(part)]) + part for part in labels)


@st.composite
def qnames(draw: Any, zones: list[bytes] = ZONES, pointers: bool = True) -> bytes:
    """A question name in wire form: random labels under a zone, perhaps compressed."""
    zone = draw(st.sampled_from(zones))
    labels = draw(st.lists(label, max_size=5)) + [z for z in zone.split(b".") if z]
    if pointers and draw(st.integers(0, 9)) == 0:
        cut = draw(st.integers(0, len(labels)))
        prefix = encode_labels(labels[:cut])
        target = draw(st.one_of(st.integers(0, 12 + len(prefix) + 2), st.integers(0, 0x3FFF)))
        return prefix + struct.pack("!H", 0xC000 | target)
    return encode_labels(labels) + b"\x00"


options = st.one_of(
    st.tuples(st.just(10), st.one_of(st.binary(min_size=8, max_size=8),
                                     st.binary(min_size=16, max_size=40),
                                     st.binary(max_size=48))),
    st.tuples(st.just(12), st.one_of(st.integers(0, 64), st.sampled_from(PADDING))
              .map(lambda n: b"\x00" * n)),
    st.tuples(st.sampled_from([3, 5, 8, 9, 11, 15]), st.binary(max_size=16)),
    st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=16)),
)


@st.composite
def opt_records(draw: Any, wellformed: bool = False) -> bytes:
    """An OPT record: any UDP size, version, flags and options; perhaps a broken one."""
    owner = b"\x00" if wellformed or draw(st.integers(0, 9)) else draw(qnames(pointers=False))
    size = draw(st.one_of(st.sampled_from(UDP_SIZES), st.integers(0, 0xFFFF)))
    if wellformed:
        ttl = draw(st.sampled_from([0, 0x8000]))
    else:
        ttl = draw(st.one_of(st.sampled_from([0, 0x8000]), st.integers(0, 0xFFFFFFFF)))
    rdata = b"".join(struct.pack("!HH", code, len(value)) + value
                     for code, value in draw(st.lists(options, max_size=4))
                     if len(value) < 0x10000)
    if not wellformed and draw(st.integers(0, 9)) == 0:
        rdata += draw(st.binary(min_size=1, max_size=6))      # a truncated option
    rdata = rdata[:0xFFFF]
    return owner + struct.pack("!HHIH", 41, size, ttl, len(rdata)) + rdata


@st.composite
def junk_records(draw: Any) -> bytes:
    """Some resource record a query should not carry (TSIG-like, random types)."""
    name = draw(st.sampled_from([b"\x00", b"\xc0\x0c", b"\x01x\x00"]))
    rtype = draw(st.sampled_from([1, 250, 41, 6, 0xFFFF]))
    rdata = draw(st.binary(max_size=24))
    return name + struct.pack("!HHIH", rtype, draw(st.integers(0, 0xFFFF)), 0, len(rdata)) + rdata


def fit(data: bytes, udp: bool) -> bytes:
    """What a socket delivers: the server reads 8,192-byte datagrams; TCP carries 64 KiB."""
    return data[:8192] if udp else data[:65535]


@st.composite
def structured(draw: Any) -> tuple[bytes, bool]:
    """A mostly valid query over UDP or TCP, with something odd in it."""
    udp = draw(st.booleans())
    qname = draw(qnames())
    qtype = draw(st.one_of(st.sampled_from(QTYPES), st.integers(0, 0xFFFF)))
    qclass = draw(st.one_of(st.sampled_from(QCLASSES), st.integers(0, 0xFFFF)))
    answer = draw(st.lists(junk_records(), max_size=1)) if draw(st.integers(0, 9)) == 0 else []
    additional = draw(st.lists(st.one_of(opt_records(), junk_records()), max_size=2)
                      if draw(st.integers(0, 3)) == 0 else
                      st.lists(opt_records(), max_size=1))
    counts = (1, len(answer), 0, len(additional))
    if draw(st.integers(0, 9)) == 0:
        counts = draw(st.tuples(*[st.integers(0, 3)] * 4))
    flags = draw(st.one_of(st.sampled_from([0x0100, 0x0000, 0x0110, 0x0120]),
                           st.integers(0, 0xFFFF)))
    header = struct.pack("!HH4H", draw(st.integers(0, 0xFFFF)), flags, *counts)
    body = qname + struct.pack("!HH", qtype, qclass) + b"".join(answer) + b"".join(additional)
    return fit(header + body, udp), udp


@st.composite
def mutated(draw: Any) -> tuple[bytes, bool]:
    """A structured query with bytes flipped, replaced, inserted, deleted or cut off."""
    data, udp = draw(structured())
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.integers(0, 4))
        pos = draw(st.integers(0, len(buf)))
        if kind == 0 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif kind == 1 and buf:
            buf[min(pos, len(buf) - 1)] = draw(st.integers(0, 255))
        elif kind == 2:
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == 3:
            del buf[pos:pos + draw(st.integers(1, 16))]
        else:
            del buf[pos:]
    return fit(bytes(buf), udp), udp


raw = st.tuples(st.one_of(st.binary(max_size=600),
                          st.binary(min_size=12, max_size=12).map(lambda h: h + b"\x00")),
                st.booleans())
requests = st.one_of(structured(), mutated(), raw)


@st.composite
def named_queries(draw: Any) -> tuple[bytes, bool, list[bytes], int]:
    """A well-formed query for a nasty name in a served zone: (wire, udp, labels, qtype)."""
    udp = draw(st.booleans())
    zone = draw(st.sampled_from(SERVED))
    labels = draw(st.lists(label, min_size=1, max_size=3)) + zone.split(b".")
    qtype = draw(st.sampled_from([1, 28, 33, 12, 16, 255, 6, 2, 43]))
    additional = draw(st.lists(opt_records(wellformed=True), max_size=1))
    data = (struct.pack("!HH4H", draw(st.integers(0, 0xFFFF)), 0x0100, 1, 0, 0,
                        len(additional))
            + encode_labels(labels) + b"\x00" + struct.pack("!HH", qtype, 1)
            + b"".join(additional))
    return data, udp, labels, qtype


def named(labels: list[bytes], qtype: int = 1, udp: bool = True
          ) -> tuple[bytes, bool, list[bytes], int]:
    """A named_queries() value for an explicit example."""
    data = (struct.pack("!HH4H", 7, 0x0100, 1, 0, 0, 0) + encode_labels(labels) + b"\x00"
            + struct.pack("!HH", qtype, 1))
    return data, udp, labels, qtype


@st.composite
def cacheable_queries(draw: Any) -> tuple[bytes, bool]:
    """Queries whose answers are kept: served names, any case, padded and cookied OPTs."""
    udp = draw(st.booleans())
    name = draw(st.sampled_from([b"web.shared.svc.cluster.local", b"big.shop.svc.cluster.local",
                                 b"_http._tcp.big.shop.svc.cluster.local",
                                 b"nope.shared.svc.cluster.local",
                                 b"web.shared.svc.assemblage.local",
                                 b"gateway.edge.svc.conglomeration.local"]))
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    name = bytes(c ^ 0x20 if flip and chr(c).isalpha() else c for c, flip in zip(name, flips))
    qtype = draw(st.sampled_from([1, 28, 33, 16, 255]))
    size = draw(st.sampled_from([0, 512, 1232, 4096, 65535]))
    opts = b""
    if draw(st.booleans()):
        padding = draw(st.sampled_from([0, 468, 1200, 7000] + ([] if udp else [60000])))
        opts += struct.pack("!HH", 12, padding) + b"\x00" * padding
    if draw(st.booleans()):
        cookie = draw(st.binary(min_size=8, max_size=8))
        opts += struct.pack("!HH", 10, 8) + cookie
    additional = b"\x00" + struct.pack("!HHIH", 41, size, 0, len(opts)) + opts if size else b""
    data = (struct.pack("!HH4H", draw(st.integers(0, 0xFFFF)), 0x0100, 1, 0, 0,
                        1 if additional else 0)
            + encode_labels(name.split(b".")) + b"\x00" + struct.pack("!HH", qtype, 1)
            + additional)
    return fit(data, udp), udp


# ---------------------------------------------------------------------------------------
# Tests


def plain(labels: list[bytes], opt: bytes = b"") -> bytes:
    """A query for A of `labels`, with an OPT record's bytes if given (explicit examples)."""
    return (struct.pack("!HH4H", 7, 0x0100, 1, 0, 0, 1 if opt else 0) + encode_labels(labels)
            + b"\x00\x00\x01\x00\x01" + opt)


def opt(size: int, *options: tuple[int, bytes]) -> bytes:
    rdata = b"".join(struct.pack("!HH", code, len(value)) + value for code, value in options)
    return b"\x00" + struct.pack("!HHIH", 41, size, 0, len(rdata)) + rdata


WEB = [b"web", b"shared", b"svc", b"cluster", b"local"]


@fuzz_settings(500)
@given(request=requests)
# Always tried: the inputs behind the holes found so far (issue 7 and after).
@example(request=(plain(WEB, opt(1232, (12, bytes(7000)))), True))       # D2: 7 KB padding
@example(request=(plain(WEB, opt(1232, (10, b"abc"))), True))            # D3: 3-byte COOKIE
@example(request=(plain(WEB, opt(1232, (10, b""))), False))              # D3: empty COOKIE
@example(request=(b"\x01\x00\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
                  b"\xc0\x00\x00\x01\x00\x01", True))                      # pointer to the header
@example(request=(plain([b"web.shared", b"svc", b"cluster", b"local"]), True))  # dot in a label
def test_any_request_gets_a_sound_reply_or_none(harness: Harness,
                                                request: tuple[bytes, bool]) -> None:
    """No exception, no traceback; one reply that parses, with the request's ID and
    question, within the client's UDP size, echoing only the client's own COOKIE."""
    data, udp = request
    check_reply(harness.exchange(data, udp))


@fuzz_settings(300)
@given(query=named_queries())
# Always tried, whatever the draw: a forged line, an ESC sequence, an escaped space (the
# errors line must still reach its block), a dot inside a label, a byte past 0x7f.
@example(query=named([b"x\n[ERROR] plugin/errors: 2 forged. A: x", b"fall", b"test"]))
@example(query=named([b"\x1b[2J", b"web", b"shared", b"svc", b"cluster", b"local"], udp=False))
@example(query=named([b"a b", b"fall", b"test"], qtype=33))
@example(query=named([b"web.shared", b"svc", b"cluster", b"local"]))
@example(query=named([b"\x80\xff", b"in-addr", b"arpa"], qtype=12))
def test_log_lines_are_printable_and_escape_names_like_coredns(
        harness: Harness, query: tuple[bytes, bool, list[bytes], int]) -> None:
    """log and errors lines hold only printable ASCII; the name is CoreDNS's \\DDD form;
    a SERVFAIL has exactly one errors line, written by its block's errors."""
    data, udp, labels, qtype = query
    ex = harness.exchange(data, udp)
    message = check_reply(ex)
    for line in ex.lines + ex.misrouted:
        bad = [c for c in line if not " " <= c <= "~"]
        assert not bad, f"a log line holds raw bytes {bad!r}: {line!r}"
    name = coredns_name(labels)
    errors = [line for line in ex.lines if line.startswith("[ERROR] plugin/errors: ")]
    queries = [line for line in ex.lines if line not in errors]
    for line in queries:
        assert f'"{type_name(qtype)} IN {name} {"udp" if udp else "tcp"} ' in line, (
            f"the log line does not name {name!r}: {line!r}")
    for line in errors:
        assert line.startswith(f"[ERROR] plugin/errors: 2 {name} {type_name(qtype)}: "), (
            f"the errors line does not name {name!r}: {line!r}")
    assert not ex.misrouted, f"errors lines outside their block's errors: {ex.misrouted}"
    rcode = dns.rcode.to_text(message.rcode()) if message is not None else "no"
    assert len(errors) == (1 if rcode == "SERVFAIL" else 0), (
        f"{len(errors)} errors lines for {rcode} reply")


# D2 of issue 7: written against WireCache(max_bytes=...) and its `bytes` (the usage it
# counts) and `entries` (key -> (stored answer bytes, expiry, sources)).
@fuzz_settings(40)
@given(batch=st.lists(cacheable_queries(), min_size=1, max_size=20))
def test_answer_cache_stays_within_its_byte_bound(harness: Harness,
                                                  batch: list[tuple[bytes, bool]]) -> None:
    """However large the answers and the EDNS options, the cache holds at most max_bytes
    (the bytes it counts, and the bytes of the entries it really holds)."""
    cache = harness.cache
    for data, udp in batch:
        check_reply(harness.exchange(data, udp))
        usage, held, count = on_reactor(lambda: (
            cache.bytes, sum(len(key[0]) + len(entry[0]) for key, entry in cache.entries.items()),
            len(cache.entries)))
        assert usage <= cache.max_bytes, f"the cache counts {usage} > {cache.max_bytes} bytes"
        assert held <= usage, f"the cache holds {held} bytes but counts only {usage}"
        assert count <= cache.max_entries


def test_cache_fuzzing_reaches_the_bound(harness: Harness) -> None:
    """The cached answers the property test sends can fill the bound: it is not vacuous.
    (SRV answers spell their targets out, so each spelling of the name is an entry of its
    own; an A answer is kept once under the lower-case name.)"""
    cache = harness.cache
    on_reactor(cache.clear)
    for i in range(64):
        name = bytes(c ^ 0x20 if (i >> k) & 1 and chr(c).isalpha() else c
                     for k, c in enumerate(b"big.shop.svc.cluster.local"))
        data = (struct.pack("!HH4H", i, 0x0100, 1, 0, 0, 0) + encode_labels(name.split(b"."))
                + b"\x00" + struct.pack("!HH", 33, 1))
        check_reply(harness.exchange(data, False))
    assert on_reactor(lambda: cache.bytes) > CACHE_BYTES // 2
    assert on_reactor(lambda: cache.bytes) <= CACHE_BYTES
