"""`forward` end to end: a server built from a Corefile, real sockets, a loopback upstream.

Each test starts the server in-process (the reactor thread) on a free port, with
`forward` pointing at :class:`upstream_server.UpstreamServer`s, and asks it with dnspython
over UDP and TCP: answers pass through with the upstream's rcode, flags and SOA; every
fault of the upstream becomes what CoreDNS makes of it; health checks, policies, `except`,
`next`, `failover`, `max_concurrent`, TCP retry on truncation, DoT, socket reuse and
clean-up are watched through what the upstream saw and the metrics.
"""

from __future__ import annotations

import io
import socket
import time
from pathlib import Path
from typing import Any, Iterator

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from conftest import wait_for
from upstream_server import UpstreamServer

from kubernetai.app.server import load_service
from kubernetai.core.metrics import PROCESS
from kubernetai.pkg import reactor_thread
from kubernetai.pkg.logwriter import STDOUT


@pytest.fixture
def upstream(reactor_running: None) -> Iterator[UpstreamServer]:
    server = UpstreamServer()
    reactor_thread.in_reactor(server.start)
    yield server
    reactor_thread.in_reactor(server.stop)


@pytest.fixture
def second(reactor_running: None) -> Iterator[UpstreamServer]:
    server = UpstreamServer(ZONE_B)
    reactor_thread.in_reactor(server.start)
    yield server
    reactor_thread.in_reactor(server.stop)


ZONE_B = """$ORIGIN example.org.
$TTL 60
@       IN SOA ns1.example.org. hostmaster.example.org. 7 3600 600 86400 30
@       IN NS  ns1.example.org.
www     IN A   192.0.2.20
only-b  IN A   192.0.2.22
"""


class Server:
    """A kubernetai server from Corefile text, in-process; stopped by the fixture."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.services: list[Any] = []

    def __call__(self, text: str) -> int:
        path = self.tmp / f"Corefile{len(self.services)}"
        path.write_text(text)
        service = load_service(str(path), port_override=0)

        def start() -> Any:
            service.startService()
            return service.listening
        ports = reactor_thread.in_reactor(start)
        self.services.append(service)
        return int(ports[0].getHost().port)

    def handlers(self, index: int = -1) -> list[Any]:
        from kubernetai.plugins.forward.handler import ForwardHandler
        service = self.services[index]
        return [s.handler for plan in service.plans for block in plan.blocks
                for s in block.builder.stages if isinstance(s.handler, ForwardHandler)]

    def stop(self) -> None:
        for service in self.services:
            if service.running:
                reactor_thread.in_reactor(service.stopService)


@pytest.fixture
def serve(tmp_path: Path, reactor_running: None) -> Iterator[Server]:
    server = Server(tmp_path)
    yield server
    server.stop()


def ask(port: int, name: str, rdtype: str = "A", *, tcp: bool = False, timeout: float = 10,
        **kwargs: Any) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kwargs)
    send = dns.query.tcp if tcp else dns.query.udp
    reply = send(query, "127.0.0.1", port=port, timeout=timeout)
    assert reply.id == query.id
    return reply


def addresses(reply: dns.message.Message) -> list[str]:
    return sorted(rr.to_text() for rrset in reply.answer for rr in rrset
                  if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA))


def metric(name: str, **labels: str) -> float:
    for family in PROCESS:
        if family.name == name:
            total = 0.0
            for key, value in list(family.values.items()):
                named = dict(zip(family.labelnames, key))
                if all(named.get(k) == v for k, v in labels.items()):
                    total += value if isinstance(value, (int, float)) else sum(value.counts)
            return total
    raise KeyError(name)


def corefile(*targets: Any, options: str = "", zone: str = ".") -> str:
    to = " ".join(t if isinstance(t, str) else f"127.0.0.1:{t.port}" for t in targets)
    return f"{zone}:53 {{\n    errors\n    forward . {to} {{\n{options}\n    }}\n}}\n"


# ---------------------------------------------------------------------------------------
# Answers pass through


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_outside_name_is_forwarded_with_the_upstreams_answer(upstream, serve, tcp):
    port = serve(corefile(upstream))
    reply = ask(port, "www.example.org", tcp=tcp)
    assert reply.rcode() == dns.rcode.NOERROR
    assert addresses(reply) == ["192.0.2.10"]
    assert reply.answer[0].ttl == 300
    # CoreDNS relays the upstream's header bits: AA and RA as the upstream set them.
    assert reply.flags & dns.flags.AA and reply.flags & dns.flags.RA
    assert upstream.count("www.example.org") == 1
    cname = ask(port, "alias.example.org", tcp=tcp)
    assert [rrset.rdtype for rrset in cname.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_nxdomain_and_nodata_keep_the_upstreams_soa(upstream, serve, tcp):
    port = serve(corefile(upstream))
    missing = ask(port, "nothing.example.org", tcp=tcp)
    assert missing.rcode() == dns.rcode.NXDOMAIN and not missing.answer
    (soa,) = missing.authority
    assert soa.rdtype == dns.rdatatype.SOA and soa.name.to_text() == "example.org."
    assert soa[0].serial == 2024010101 and soa.ttl == 60
    nodata = ask(port, "ns1.example.org", "AAAA", tcp=tcp)
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert [rrset.rdtype for rrset in nodata.authority] == [dns.rdatatype.SOA]
    refused = ask(port, "elsewhere.test", tcp=tcp)           # outside the upstream's zone
    assert refused.rcode() == dns.rcode.REFUSED


def test_query_is_relayed_as_the_client_sent_it(upstream, serve):
    """Fresh ID, the name's case, RD/CD, and the client's EDNS (size, DO, options)."""
    port = serve(corefile(upstream))
    cookie = dns.edns.GenericOption(dns.edns.COOKIE, b"abcdefgh")
    query = dns.message.make_query("WwW.ExAmPlE.oRg", "A", use_edns=0, payload=1400,
                                   want_dnssec=True, options=[cookie])
    query.flags |= dns.flags.CD
    reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=10)
    assert reply.question[0].name.to_text() == "WwW.ExAmPlE.oRg."
    assert addresses(reply) == ["192.0.2.10"] and reply.flags & dns.flags.CD
    wire, proto = upstream.queries[-1]
    relayed = dns.message.from_wire(wire)
    assert proto == "udp"
    assert relayed.question[0].name.to_text() == "WwW.ExAmPlE.oRg."
    assert relayed.flags & dns.flags.RD and relayed.flags & dns.flags.CD
    assert relayed.edns == 0 and relayed.payload == 1400
    assert relayed.ednsflags & dns.flags.DO
    assert [(o.otype, o.to_wire()) for o in relayed.options] == [(dns.edns.COOKIE, b"abcdefgh")]
    ids = set()
    for _ in range(5):
        ask(port, "www.example.org")
        ids.add(dns.message.from_wire(upstream.queries[-1][0]).id)
    assert len(ids) >= 4                                     # random, not the client's
    plain = ask(port, "www.example.org")
    assert dns.message.from_wire(upstream.queries[-1][0]).edns == -1 and plain.edns == -1


def test_only_names_under_from_and_not_excepted_are_forwarded(upstream, serve):
    port = serve(f".:53 {{\n    forward example.org 127.0.0.1:{upstream.port} {{\n"
                 "        except ns1.example.org\n    }\n}\n")
    assert addresses(ask(port, "www.example.org")) == ["192.0.2.10"]
    for name in ("ns1.example.org", "a.ns1.example.org", "example.net"):
        reply = ask(port, name)
        assert reply.rcode() == dns.rcode.SERVFAIL            # no next plugin
        assert upstream.count(name) == 0
    assert ask(port, "example.org", "NS").rcode() == dns.rcode.NOERROR  # FROM itself


# ---------------------------------------------------------------------------------------
# Faults


@pytest.fixture
def errors_output() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    STDOUT.use(buffer)
    yield buffer
    STDOUT.use(None)


@pytest.mark.parametrize("fault,rcode,error", [
    ("drop", dns.rcode.SERVFAIL, r"read udp 127\.0\.0\.1:\d+->127\.0\.0\.1:{port}: i/o timeout"),
    ("noise", dns.rcode.SERVFAIL, r"read udp 127\.0\.0\.1:\d+->127\.0\.0\.1:{port}: i/o timeout"),
    ("wrong_id", dns.rcode.SERVFAIL, r"read udp .*: i/o timeout"),
    ("slow", dns.rcode.SERVFAIL, r"read udp .*: i/o timeout"),
    ("garbage", dns.rcode.SERVFAIL, r"dns: bad rdata"),
    ("refused", dns.rcode.REFUSED, None),
    ("servfail", dns.rcode.SERVFAIL, None),
    ("wrong_question", dns.rcode.FORMERR, None),
])
def test_upstream_faults(upstream, serve, errors_output, fault, rcode, error):
    """What CoreDNS makes of each: a failed exchange is SERVFAIL with the error logged by
    `errors` (and a health check started); an upstream's rcode passes through; a reply
    to another question is FORMERR."""
    import re
    port = serve(corefile(upstream, options="        read_timeout 300ms"))
    upstream.fault = fault
    upstream.delay = 1.0
    started = time.monotonic()
    reply = ask(port, "www.example.org")
    assert reply.rcode() == rcode and not reply.answer
    assert time.monotonic() - started < 4.5
    if error is None:
        time.sleep(0.2)
        assert "www.example.org" not in errors_output.getvalue()
        return
    pattern = (r"\[ERROR\] plugin/errors: 2 www\.example\.org\. A: "
               + error.replace("{port}", str(upstream.port)))
    wait_for(lambda: re.search(pattern, errors_output.getvalue()), 5, pattern)
    # Two attempts (max_connect_attempts defaults to twice the upstreams), then the
    # health check probes the upstream with `. IN NS`.
    assert upstream.count("www.example.org") == 2
    wait_for(lambda: upstream.count(".", "NS") >= 1, 5, "a health check")


def test_truncated_reply_is_retried_over_tcp(upstream, serve):
    """A UDP client gets the upstream's TC answer and retries over TCP, which forward
    takes to the upstream over TCP; prefer_udp does that retry itself."""
    port = serve(corefile(upstream))
    upstream.fault = "truncated"
    truncated = ask(port, "www.example.org")
    assert truncated.flags & dns.flags.TC and not truncated.answer
    assert truncated.rcode() == dns.rcode.NOERROR
    reply, used_tcp = dns.query.udp_with_fallback(
        dns.message.make_query("www.example.org", "A"), "127.0.0.1", port=port, timeout=10)
    assert used_tcp and addresses(reply) == ["192.0.2.10"]
    assert [proto for _, proto in upstream.queries] == ["udp", "udp", "tcp"]

    upstream.reset()
    port = serve(corefile(upstream, options="        prefer_udp"))
    reply = ask(port, "www.example.org", tcp=True)
    assert addresses(reply) == ["192.0.2.10"] and not reply.flags & dns.flags.TC
    assert [proto for _, proto in upstream.queries] == ["udp", "tcp"]


def test_large_answers_follow_the_clients_size(upstream, serve):
    """The client's EDNS size goes upstream, so a large answer comes back whole; without
    EDNS the upstream truncates at 512 bytes and the client sees TC."""
    port = serve(corefile(upstream))
    big = ask(port, "big.example.org", use_edns=0, payload=4096)
    assert len(addresses(big)) == 60 and not big.flags & dns.flags.TC
    small = ask(port, "big.example.org")
    assert small.flags & dns.flags.TC
    assert len(ask(port, "big.example.org", tcp=True).answer[0]) == 60


@pytest.mark.parametrize("fault,name,count", [
    ("oversize", "big.example.org", 60), ("cut", "www.example.org", 1)])
def test_a_reply_too_big_or_cut_short_comes_back_truncated(upstream, serve, fault, name,
                                                          count):
    """An upstream that ignores the client's size (a 60-record answer to a client without
    EDNS, no TC), or whose counts promise more records than it sent: CoreDNS answers an
    empty reply with TC and the question (``truncateResponse``), so the client retries
    over TCP, and gets the whole answer there."""
    port = serve(corefile(upstream))
    upstream.fault = fault
    query = dns.message.make_query(name, "A")
    reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=10)
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.TC
    assert reply.question == query.question and not reply.answer
    reply, used_tcp = dns.query.udp_with_fallback(
        dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=10)
    assert used_tcp and reply.rcode() == dns.rcode.NOERROR
    assert len(addresses(reply)) == count
    assert [proto for _, proto in upstream.queries] == ["udp", "udp", "tcp"]


def test_force_tcp_uses_tcp_for_udp_clients(upstream, serve):
    port = serve(corefile(upstream, options="        force_tcp"))
    assert addresses(ask(port, "www.example.org")) == ["192.0.2.10"]
    assert [proto for _, proto in upstream.queries] == ["tcp"]


# ---------------------------------------------------------------------------------------
# max_concurrent


def test_max_concurrent_refuses_beyond_the_limit(upstream, serve, errors_output):
    port = serve(corefile(upstream, options="        max_concurrent 3"))
    upstream.fault = "slow"
    upstream.delay = 1.0
    rejects = metric("coredns_forward_max_concurrent_rejects_total")
    sockets = []
    try:
        for i in range(10):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.settimeout(10)
            sock.sendto(dns.message.make_query("www.example.org", "A", id=i).to_wire(),
                        ("127.0.0.1", port))
            sockets.append(sock)
        rcodes = sorted(dns.message.from_wire(s.recv(4096)).rcode() for s in sockets)
    finally:
        for sock in sockets:
            sock.close()
    assert rcodes.count(dns.rcode.REFUSED) == 7 and rcodes.count(dns.rcode.NOERROR) == 3
    assert metric("coredns_forward_max_concurrent_rejects_total") == rejects + 7
    wait_for(lambda: "5 www.example.org. A: concurrent queries exceeded maximum 3"
             in errors_output.getvalue(), 5, "the errors line")
    upstream.fault = None
    assert addresses(ask(port, "www.example.org")) == ["192.0.2.10"]   # the slots are free


def test_a_flood_to_a_dead_upstream_holds_at_most_max_concurrent(upstream, serve):
    """Memory is bounded by max_concurrent: queries in flight never exceed it."""
    port = serve(corefile(upstream, options="        max_concurrent 20\n"
                                            "        read_timeout 500ms"))
    (handler,) = serve.handlers()
    upstream.fault = "drop"
    peak = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i in range(2000):
            sock.sendto(dns.message.make_query(f"n{i}.example.org", "A").to_wire(),
                        ("127.0.0.1", port))
            if i % 100 == 0:
                peak = max(peak, reactor_thread.in_reactor(lambda: handler.concurrent))
    assert 0 < peak <= 20
    wait_for(lambda: reactor_thread.in_reactor(lambda: handler.concurrent) == 0, 10,
             "the flood to drain")


def _no_sockets(handler: Any) -> list[int]:
    """Make every socket the handler's upstreams open fail as when descriptors run out
    (``listenUDP`` raises CannotListenError); returns a list counting the attempts."""
    import errno
    import os

    from twisted.internet.error import CannotListenError
    opened = [0]

    def fail(*args: Any, **kwargs: Any) -> Any:
        opened[0] += 1
        raise CannotListenError("0.0.0.0", 0, OSError(errno.EMFILE, os.strerror(errno.EMFILE)))
    for proxy in handler.proxies:
        proxy.transport.open = fail
    return opened


def test_a_socket_that_cannot_open_is_servfail_and_frees_its_slot(upstream, serve,
                                                                  errors_output):
    """No socket to be had: each query is SERVFAIL with Go's dial error, and its
    max_concurrent slot is given back (none is REFUSED once the limit would have leaked)."""
    port = serve(corefile(upstream, options="        max_concurrent 3"))
    (handler,) = serve.handlers()
    reactor_thread.in_reactor(_no_sockets, handler)
    rcodes = [ask(port, f"n{i}.example.org").rcode() for i in range(8)]
    assert rcodes == [dns.rcode.SERVFAIL] * 8
    assert reactor_thread.in_reactor(lambda: handler.concurrent) == 0
    line = f"n7.example.org. A: dial udp 127.0.0.1:{upstream.port}: socket: too many open files"
    wait_for(lambda: line in errors_output.getvalue(), 5, "the errors line")


def test_a_step_that_raises_at_once_frees_its_slot(upstream, serve):
    """A bug raised while starting an exchange still gives the max_concurrent slot back."""
    port = serve(corefile(upstream, options="        max_concurrent 3"))
    (handler,) = serve.handlers()

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug")

    def patch() -> None:
        for proxy in handler.proxies:
            proxy.connect = broken
    reactor_thread.in_reactor(patch)
    rcodes = [ask(port, f"n{i}.example.org").rcode() for i in range(6)]
    assert dns.rcode.REFUSED not in rcodes and set(rcodes) == {dns.rcode.SERVFAIL}
    assert reactor_thread.in_reactor(lambda: handler.concurrent) == 0


def test_immediate_failures_without_an_attempt_cap_never_hold_the_reactor(
        upstream, serve, errors_output, monkeypatch):
    """max_connect_attempts 0 and an exchange that fails at once: the query keeps trying
    until the deadline, one try per reactor turn (no recursion), while the server goes
    on answering other queries."""
    import sys
    import threading

    from kubernetai.plugins.forward import handler as handler_module
    monkeypatch.setattr(handler_module, "DEADLINE", 1.5)
    port = serve(corefile(upstream, options="        max_connect_attempts 0\n"
                                            "        max_fails 0"))
    (handler,) = serve.handlers()
    opened = reactor_thread.in_reactor(_no_sockets, handler)
    result: dict[str, Any] = {}

    def spin() -> None:
        started = time.monotonic()
        result["reply"] = ask(port, "www.example.org")
        result["took"] = time.monotonic() - started
    thread = threading.Thread(target=spin)
    thread.start()
    lags = []
    while thread.is_alive() and len(lags) < 200:
        started = time.monotonic()
        reactor_thread.in_reactor(lambda: None)
        lags.append(time.monotonic() - started)
        time.sleep(0.02)
    thread.join(10)
    assert result["reply"].rcode() == dns.rcode.SERVFAIL
    assert result["took"] >= 1.0                          # tried until the deadline
    assert opened[0] > sys.getrecursionlimit()            # far past any stack depth
    assert len(lags) >= 5 and max(lags) < 1.0             # the reactor kept turning
    wait_for(lambda: "www.example.org. A: dial udp" in errors_output.getvalue(), 5, "line")


# ---------------------------------------------------------------------------------------
# Health checks and policies


def test_an_upstream_going_down_and_coming_back(upstream, second, serve):
    """The first (sequential) upstream stops answering: queries fail over to the second,
    health checks mark it down (max_fails 2: the third failed check) so it is skipped at
    once; when it answers a check again it is used again."""
    port = serve(corefile(upstream, second, options="        policy sequential\n"
                                                     "        read_timeout 300ms"))
    assert addresses(ask(port, "www.example.org")) == ["192.0.2.10"]
    failures = metric("coredns_proxy_healthcheck_failures_total",
                      to=f"127.0.0.1:{upstream.port}")
    upstream.fault = "drop"
    assert addresses(ask(port, "www.example.org")) == ["192.0.2.20"]     # after a timeout
    (handler,) = serve.handlers()
    first = handler.proxies[0]
    wait_for(lambda: first.down(2), 10, "the upstream to be marked down")
    assert metric("coredns_proxy_healthcheck_failures_total",
                  to=f"127.0.0.1:{upstream.port}") >= failures + 3
    asked = upstream.count("www.example.org")
    assert addresses(ask(port, "www.example.org")) == ["192.0.2.20"]
    assert upstream.count("www.example.org") == asked                   # skipped, not asked
    upstream.fault = None
    wait_for(lambda: not first.down(2), 5, "a health check to find it back")
    assert addresses(ask(port, "www.example.org")) == ["192.0.2.10"]


def test_all_upstreams_down_picks_one_at_random(upstream, second, serve):
    port = serve(corefile(upstream, second, options="        read_timeout 200ms\n"
                                                     "        health_check 100ms"))
    (handler,) = serve.handlers()
    upstream.fault = second.fault = "drop"
    ask(port, "www.example.org")
    wait_for(lambda: all(p.down(2) for p in handler.proxies), 10, "both down")
    broken = metric("coredns_forward_healthcheck_broken_total")
    before = upstream.count("www.example.org") + second.count("www.example.org")
    assert ask(port, "www.example.org").rcode() == dns.rcode.SERVFAIL
    assert metric("coredns_forward_healthcheck_broken_total") > broken
    assert upstream.count("www.example.org") + second.count("www.example.org") > before


def test_failfast_all_unhealthy_upstreams(upstream, serve, errors_output):
    port = serve(corefile(upstream, options="        read_timeout 200ms\n"
                                            "        failfast_all_unhealthy_upstreams"))
    (handler,) = serve.handlers()
    upstream.fault = "drop"
    ask(port, "www.example.org")
    wait_for(lambda: handler.proxies[0].down(2), 10, "down")
    asked = upstream.count("www.example.org")
    assert ask(port, "www.example.org").rcode() == dns.rcode.SERVFAIL
    assert upstream.count("www.example.org") == asked                   # failed fast
    wait_for(lambda: "A: no healthy proxies" in errors_output.getvalue(), 5, "the line")


def test_max_fails_0_never_checks(upstream, serve):
    port = serve(corefile(upstream, options="        read_timeout 200ms\n        max_fails 0"))
    upstream.fault = "drop"
    ask(port, "www.example.org")
    time.sleep(0.5)
    assert upstream.count(".", "NS") == 0


@pytest.mark.parametrize("policy,first,second_share", [
    ("sequential", 4, 0), ("round_robin", 2, 2)])
def test_policies(upstream, second, serve, policy, first, second_share):
    port = serve(corefile(upstream, second, options=f"        policy {policy}"))
    for _ in range(4):
        ask(port, "www.example.org")
    assert (upstream.count("www.example.org"), second.count("www.example.org")) == \
        (first, second_share)


def test_random_policy_uses_both(upstream, second, serve):
    port = serve(corefile(upstream, second))
    for _ in range(40):
        ask(port, "www.example.org")
    assert upstream.count("www.example.org") > 3 and second.count("www.example.org") > 3


def test_next_passes_an_rcode_on_to_the_next_forward(upstream, second, serve):
    port = serve(f".:53 {{\n    forward . 127.0.0.1:{upstream.port} {{\n        next NXDOMAIN\n"
                 f"    }}\n    forward . 127.0.0.1:{second.port}\n}}\n")
    assert addresses(ask(port, "only-b.example.org")) == ["192.0.2.22"]
    assert upstream.count("only-b.example.org") == 1
    assert addresses(ask(port, "www.example.org")) == ["192.0.2.10"]
    assert second.count("www.example.org") == 0


def test_next_is_ignored_without_a_following_forward(upstream, serve):
    port = serve(corefile(upstream, options="        next NXDOMAIN"))
    assert ask(port, "only-b.example.org").rcode() == dns.rcode.NXDOMAIN


def test_failover_tries_another_upstream_on_an_rcode(upstream, second, serve):
    port = serve(corefile(upstream, second, options="        policy sequential\n"
                                                     "        failover SERVFAIL REFUSED"))
    upstream.fault = "servfail"
    assert addresses(ask(port, "www.example.org")) == ["192.0.2.20"]
    second.fault = "refused"
    assert ask(port, "www.example.org").rcode() == dns.rcode.REFUSED   # the last answer


# ---------------------------------------------------------------------------------------
# Sockets


def test_sockets_are_reused_and_expire(upstream, serve):
    port = serve(corefile(upstream, options="        expire 500ms"))
    to = f"127.0.0.1:{upstream.port}"
    hits = metric("coredns_proxy_conn_cache_hits_total", to=to, proto="tcp")
    for _ in range(5):
        ask(port, "www.example.org", tcp=True)
    assert upstream.tcp_connections == 1                      # one persistent connection
    assert metric("coredns_proxy_conn_cache_hits_total", to=to, proto="tcp") == hits + 4
    assert metric("coredns_proxy_conn_cache_misses_total", to=to, proto="tcp") >= 1
    for _ in range(5):
        ask(port, "www.example.org")
    assert metric("coredns_proxy_conn_cache_hits_total", to=to, proto="udp") >= 4
    wait_for(lambda: upstream.open_connections() == 0, 5, "the idle connection to close")
    (handler,) = serve.handlers()
    wait_for(lambda: reactor_thread.in_reactor(
        lambda: handler.proxies[0].transport.open_sockets()) == 0, 5, "UDP sockets closed")
    ask(port, "www.example.org", tcp=True)
    assert upstream.tcp_connections == 2


def test_concurrent_tcp_queries_are_pipelined_on_one_connection(upstream, serve):
    port = serve(corefile(upstream, options="        force_tcp"))
    upstream.fault = "slow"
    upstream.delay = 0.3
    socks = []
    for _ in range(10):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(10)
        sock.sendto(dns.message.make_query("www.example.org", "A").to_wire(),
                    ("127.0.0.1", port))
        socks.append(sock)
    replies = [dns.message.from_wire(s.recv(4096)) for s in socks]
    for sock in socks:
        sock.close()
    assert all(addresses(r) == ["192.0.2.10"] for r in replies)
    assert upstream.tcp_connections == 1


def test_stopping_the_server_closes_the_upstream_sockets(upstream, serve):
    port = serve(corefile(upstream, options="        read_timeout 200ms"))
    ask(port, "www.example.org", tcp=True)
    ask(port, "www.example.org")
    (handler,) = serve.handlers()
    proxy = handler.proxies[0]
    upstream.fault = "drop"
    ask(port, "www.example.org")                  # starts a health check loop
    assert reactor_thread.in_reactor(lambda: proxy.transport.open_sockets()) >= 1
    reactor_thread.in_reactor(serve.services[-1].stopService)
    wait_for(lambda: reactor_thread.in_reactor(lambda: proxy.transport.open_sockets()) == 0,
             5, "sockets closed")
    assert proxy.health.stopped and proxy.health.timer is None
    checks = proxy.health.sent
    time.sleep(0.8)
    assert proxy.health.sent == checks
    wait_for(lambda: upstream.open_connections() == 0, 5, "the TCP connection closed")


# ---------------------------------------------------------------------------------------
# DNS over TLS


@pytest.fixture
def tls_upstream(upstream, tmp_path):
    from kubernetai.sandbox.tls import generate, server_tls_options
    files = generate(tmp_path / "pki")
    reactor_thread.in_reactor(upstream.start_tls, server_tls_options(files))
    return upstream, files


def test_dns_over_tls(tls_upstream, serve):
    upstream, files = tls_upstream
    port = serve(corefile(f"tls://127.0.0.1:{upstream.tls_port}",
                          options=f"        tls {files.ca_cert}"))
    for tcp in (False, True, False):
        assert addresses(ask(port, "www.example.org", tcp=tcp)) == ["192.0.2.10"]
    assert upstream.tcp_connections == 1 and upstream.count("www.example.org") == 3
    to = f"127.0.0.1:{upstream.tls_port}"
    assert metric("coredns_proxy_conn_cache_hits_total", to=to, proto="tcp-tls") >= 2


def test_dns_over_tls_with_servername_and_a_client_certificate(tls_upstream, serve):
    upstream, files = tls_upstream
    port = serve(corefile(f"tls://127.0.0.1:{upstream.tls_port}",
                          options=f"        tls {files.client_cert} {files.client_key} "
                                  f"{files.ca_cert}\n        tls_servername localhost"))
    assert addresses(ask(port, "www.example.org")) == ["192.0.2.10"]


def test_dns_over_tls_refuses_an_untrusted_upstream(tls_upstream, serve, errors_output,
                                                   tmp_path):
    from kubernetai.sandbox.tls import generate
    upstream, _ = tls_upstream
    other = generate(tmp_path / "other")
    port = serve(corefile(f"tls://127.0.0.1:{upstream.tls_port}",
                          options=f"        tls {other.ca_cert}"))
    assert ask(port, "www.example.org").rcode() == dns.rcode.SERVFAIL
    wait_for(lambda: "www.example.org. A: tls: " in errors_output.getvalue(), 5, "the line")
    assert upstream.count("www.example.org") == 0


def test_metrics_have_coredns_names(upstream, serve):
    port = serve(corefile(upstream))
    ask(port, "www.example.org")
    ask(port, "nothing.example.org")
    to = f"127.0.0.1:{upstream.port}"
    family = next(m for m in PROCESS if m.name == "coredns_proxy_request_duration_seconds")
    assert family.labelnames == ("proxy_name", "to", "rcode")
    assert metric("coredns_proxy_request_duration_seconds", proxy_name="forward", to=to,
                  rcode="NOERROR") >= 1
    assert metric("coredns_proxy_request_duration_seconds", to=to, rcode="NXDOMAIN") >= 1


def test_a_reload_stops_the_replaced_configurations_upstreams(upstream, second, serve,
                                                             tmp_path):
    from kubernetai.app.load import load_plans
    port = serve(corefile(upstream, options="        force_tcp"))
    assert addresses(ask(port, "www.example.org")) == ["192.0.2.10"]
    (old,) = serve.handlers()
    assert upstream.open_connections() == 1
    path = tmp_path / "Corefile.new"
    path.write_text(corefile(second, options="        force_tcp"))
    service = serve.services[-1]
    reactor_thread.in_reactor(service.retarget, load_plans(str(path), port_override=0))
    new_port = service.ports[0].getHost().port
    assert addresses(ask(new_port, "www.example.org")) == ["192.0.2.20"]
    wait_for(lambda: upstream.open_connections() == 0, 5, "the old connection closed")
    assert reactor_thread.in_reactor(lambda: old.proxies[0].transport.open_sockets()) == 0
    assert second.open_connections() == 1


# ---------------------------------------------------------------------------------------
# Hostile replies


def _pointer_chains(chain: int) -> bytes:
    """A reply of 65,535 bytes: thousands of TXT records, each owned by a name that is a
    chain of ``chain`` compression pointers (the chain lives in a first NULL record)."""
    import struct
    question = b"\x03www\x07example\x03org\x00" + struct.pack("!HH", 1, 1)
    base = 12 + len(question) + 12
    body = bytearray(b"\x01a\x00")
    previous = base
    for _ in range(chain):
        offset = base + len(body)
        body += bytes([0xC0 | (previous >> 8), previous & 0xFF])
        previous = offset
    first = b"\xc0\x0c" + struct.pack("!HHIH", 10, 1, 30, len(body)) + bytes(body)
    record = (bytes([0xC0 | (previous >> 8), previous & 0xFF])
              + struct.pack("!HHIH", 16, 1, 30, 1) + b"\x00")
    count = (65535 - 12 - len(question) - len(first)) // len(record)
    return (struct.pack("!HBBHHHH", 1, 0x81, 0x80, 1, 1 + count, 0, 0) + question + first
            + record * count)


def test_a_reply_of_chained_compression_pointers_is_rejected_cheaply():
    """Each name within miekg's rules (126 pointers), but 5,000 of them: the reply's
    pointer budget runs out long before the end, instead of ~600,000 jumps on the
    reactor. An ordinary compressed reply of as many records still parses."""
    from kubernetai.plugins.forward.wire import MalformedReply, parse_reply
    hostile = _pointer_chains(120)
    started = time.perf_counter()
    with pytest.raises(MalformedReply, match="too many compression pointers"):
        parse_reply(hostile)
    assert time.perf_counter() - started < 0.25          # ~0.01 s; 0.3 s+ unbounded
    plain = parse_reply(_pointer_chains(1))
    assert len(plain.answers) > 5000 and plain.question == (b"www.example.org", 1, 1)


def test_counts_beyond_what_the_bytes_hold_are_a_cut_reply_at_once():
    """65,535 records promised in a few bytes: known cut before any record is read, and
    the question is kept for the truncated answer."""
    import struct

    from kubernetai.plugins.forward.wire import MalformedReply, parse_reply
    question = b"\x03www\x07example\x03org\x00" + struct.pack("!HH", 1, 1)
    record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 30, 4) + b"\x01\x02\x03\x04"
    data = struct.pack("!HBBHHHH", 1, 0x81, 0x80, 1, 65535, 0, 0) + question + record
    with pytest.raises(MalformedReply) as caught:
        parse_reply(data)
    assert caught.value.cut and caught.value.question == (b"www.example.org", 1, 1)
