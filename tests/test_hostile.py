"""Hostile clients (issue 7: D1, D2, D3, D9): what a query can make the server do.

Each test sends what an attacker would over a real socket to a real server: names that
forge log lines, EDNS options that bloat answers and the cache, malformed cookies, and
floods of held TCP connections.
"""

from __future__ import annotations

import queue
import re
import socket
import struct
import subprocess
import threading
import time
from typing import Any, Iterator

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import pytest
from conftest import free_dns_port, wait_for
from test_dnsserver import Server, ZoneResolver, recv_tcp_message
from test_e2e import SOURCE_ENV, TWISTD, sandboxes  # noqa: F401 - fixture
from twisted.internet import defer
from twisted.logger import globalLogPublisher
from twisted.names import dns as tdns

from kubernetai.core.dnsserver import KubernetaiServerFactory, block_of, listen
from kubernetai.core.tcp import default_max_tcp_connections
from kubernetai.core.wirecache import WireCache
from kubernetai.pkg import reactor_thread
from kubernetai.pkg.dnsname import presentation

PRINTABLE_LINE = re.compile(r"^[\x20-\x7e]*$")


# ---------------------------------------------------------------------------------------
# D1: names are escaped before they reach a log line


class Output:
    """A subprocess's merged stdout/stderr, read by a thread into a queue of lines."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: queue.Queue[bytes] = queue.Queue()
        self.seen: list[bytes] = []
        threading.Thread(target=self._read, args=(process.stdout,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in iter(stream.readline, b""):
            self.lines.put(line)

    def until(self, needle: bytes, timeout: float = 15.0) -> bytes:
        """The first line (from now on, or already seen) that holds ``needle``."""
        for line in self.seen:
            if needle in line:
                return line
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.append(line)
            if needle in line:
                return line
        raise AssertionError(f"no line with {needle!r} in:\n" + b"".join(self.seen).decode(
            "ascii", "backslashreplace")[-3000:])


LOGGING_COREFILE = """\
cluster.local:{port} {{
    bind 127.0.0.1
    errors
    log
    kubernetai cluster.local {{
        endpoint {url}
        fallthrough
    }}
}}
"""


@pytest.fixture(scope="module")
def logging_server(sandboxes, tmp_path_factory) -> Iterator[tuple[int, Output]]:
    """twistd with `log` and `errors`, its output captured as bytes."""
    path = tmp_path_factory.mktemp("hostile") / "Corefile"
    port = free_dns_port()
    path.write_text(LOGGING_COREFILE.format(port=port, url=sandboxes["cluster.local"].url))
    process = subprocess.Popen([TWISTD, "--nodaemon", "--pidfile=", "kubernetai",
                                "--corefile", str(path)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, cwd=path.parent, env=SOURCE_ENV)
    output = Output(process)
    try:
        def up() -> bool:
            try:
                q = dns.message.make_query("web.shared.svc.cluster.local", "A")
                return bool(dns.query.udp(q, "127.0.0.1", port=port, timeout=1).answer)
            except (dns.exception.Timeout, OSError):
                return False
        wait_for(up, timeout=30, what="the server to answer")
        yield port, output
    finally:
        process.terminate()
        process.wait(30)


def _hostile_query(labels: list[bytes], rdtype: str = "A") -> dns.message.Message:
    name = dns.name.Name(labels + [b"shared", b"svc", b"cluster", b"local", b""])
    return dns.message.make_query(name, rdtype)


def test_control_bytes_in_names_are_escaped_in_log_and_errors(logging_server):
    """A newline or ESC in a query name is written \\DDD: no forged line, no raw escape."""
    port, output = logging_server
    forged = b"x\n[ERROR] plugin/errors: 2 forged. A: boom\x1b[2J"
    query = _hostile_query([forged, b"dot.inside"])
    response = dns.query.udp(query, "127.0.0.1", port=port, timeout=5)
    # Falls through the only stanza: SERVFAIL and an errors line with the name in it.
    assert response.rcode() == dns.rcode.SERVFAIL
    info = output.until(f" - {query.id} ".encode())
    error = output.until(b"A: plugin/kubernetai: no next plugin found")
    expected = (r"x\010[error]\ plugin/errors:\ 2\ forged\.\ a:\ boom\027[2j."
                r"dot\.inside.shared.svc.cluster.local.")
    assert expected.encode() in info
    # The escaped spaces do not hide the name's block: the line is its `errors` line.
    assert b"[ERROR] plugin/errors: 2 " + expected.encode() + b" A: " in error
    assert all(PRINTABLE_LINE.match(line.decode("latin-1").rstrip("\n"))
               for line in output.seen), output.seen
    assert not any(line.startswith(b"[ERROR] plugin/errors: 2 forged") for line in output.seen)


def test_unknown_types_write_no_log_line(logging_server):
    """Types with no Twisted lookup method (HTTPS, TYPE65000) log only the query line."""
    port, output = logging_server
    ids = []
    for rdtype in ("HTTPS", "TYPE65000", "SVCB"):
        query = dns.message.make_query("web.shared.svc.cluster.local", rdtype)
        assert dns.query.udp(query, "127.0.0.1", port=port, timeout=5).rcode() == 0
        ids.append(query.id)
    for query_id in ids:
        output.until(f" - {query_id} ".encode())
    assert not [line for line in output.seen if b"unknown type" in line.lower()]


def test_compression_pointer_in_question_is_written_out(server: Server) -> None:
    """A question name pointing into the header is echoed as the name it read, not as a
    pointer that would land on the reply's own header bytes."""
    query = bytes.fromhex("0100 0100 0001 0000 0000 0000 c000 0001 0001".replace(" ", ""))
    wire = server.raw_udp(query)
    assert wire is not None
    reply = dns.message.from_wire(wire)
    assert reply.id == 0x0100 and reply.question[0].name.labels == (b"\x00", b"\x00", b"")


def test_dot_inside_a_label_is_not_a_separator(server: Server) -> None:
    """`web\\.cluster.local` is three labels, not web.cluster.local; `a.cluster\\.local`
    is in no zone."""
    inner = dns.message.make_query(dns.name.Name([b"web.x", b"cluster", b"local", b""]), "A")
    reply = dns.message.from_wire(server.raw_udp(inner.to_wire()))
    assert reply.rcode() == dns.rcode.NXDOMAIN and not reply.answer
    assert reply.question[0].name.labels[0] == b"web.x"
    outside = dns.message.make_query(dns.name.Name([b"a", b"cluster.local", b""]), "A")
    assert dns.message.from_wire(server.raw_udp(outside.to_wire())).rcode() == dns.rcode.REFUSED


def test_presentation_matches_miekg():
    """Special bytes get a backslash, unprintable ones \\DDD, as miekg's sprintName."""
    assert presentation([b"a.b", b"c d", b"@;()\"'\\", b"\x00\x7f\xff", b"ok"]) == (
        r"a\.b.c\ d.\@\;\(\)\"\'\\.\000\127\255.ok.")
    assert presentation([]) == "."


# ---------------------------------------------------------------------------------------
# D2 and D3: EDNS options a client sends cannot bloat answers or the cache


@pytest.fixture
def server(reactor_running: None) -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.stop()


def _option(code: int, data: bytes) -> dns.edns.GenericOption:
    return dns.edns.GenericOption(code, data)


@pytest.mark.parametrize("length", [0, 3, 7, 9, 15, 41])
def test_malformed_cookie_is_formerr(server: Server, length: int) -> None:
    """RFC 7873: a COOKIE too short for a client cookie, or of no legal length, is FORMERR."""
    wire = server.raw_udp(dns.message.make_query(
        "web.cluster.local", "A", use_edns=0, options=[_option(10, b"c" * length)]).to_wire())
    assert wire is not None
    reply = dns.message.from_wire(wire)
    assert reply.rcode() == dns.rcode.FORMERR


@pytest.mark.parametrize("length", [8, 16, 40])
def test_client_cookie_echoed_alone(server: Server, length: int) -> None:
    """A legal COOKIE gets its 8-byte client cookie back, once, whatever server part came."""
    cookie = bytes(range(1, length + 1))
    reply = server.udp("web.cluster.local", use_edns=0,
                       options=[_option(10, cookie), _option(10, cookie)])
    assert [(o.otype, o.to_wire()) for o in reply.options] == [(10, cookie[:8])]


def test_padding_and_repeated_options_do_not_enlarge_udp_answers(server: Server) -> None:
    """5 KB of padding and 500 NSID options: the answer stays within the 1,232 asked for."""
    options = [_option(12, bytes(5000))] + [_option(3, b"")] * 500
    query = dns.message.make_query("web.cluster.local", "A", use_edns=0, payload=1232,
                                   options=options)
    wire = server.raw_udp(query.to_wire(max_size=65535))
    assert wire is not None and len(wire) <= 1232
    reply = dns.message.from_wire(wire)
    assert reply.answer and sorted((o.otype, o.to_wire()) for o in reply.options) == [
        (3, b""), (12, b"")]


def test_tcp_padding_flood_keeps_the_cache_small(reactor_running: None) -> None:
    """3,000 TCP queries with 60 KB of padding each: small answers, a cache of a few KB."""
    cache = WireCache()
    factory = KubernetaiServerFactory({"cluster.local": ZoneResolver()}, cache=cache)
    ports = reactor_thread.in_reactor(listen, factory, "127.0.0.1", 0)
    try:
        port = ports[0].getHost().port
        padding = _option(12, bytes(60_000))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            for i in range(3000):
                query = dns.message.make_query(f"web.n{i % 300}.cluster.local", "A",
                                               use_edns=0, options=[padding])
                data = query.to_wire(max_size=65535)
                s.sendall(struct.pack("!H", len(data)) + data)
                reply = recv_tcp_message(s)
                assert len(reply) < 200
        assert len(cache.entries) == 300
        assert cache.bytes < 300 * 400
    finally:
        reactor_thread.in_reactor(lambda: defer.gatherResults(
            [defer.maybeDeferred(p.stopListening) for p in ports]))


# ---------------------------------------------------------------------------------------
# D9: TCP connections are capped, the idle ones go first


class Pending:
    """A zone whose queries are never answered: connections asking it stay busy."""

    def __init__(self) -> None:
        self.waiting: list[defer.Deferred] = []

    def query(self, query: tdns.Query, timeout: Any = None) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.waiting.append(d)
        return d


def _closed_by_peer(s: socket.socket, timeout: float = 5.0) -> bool:
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    return s


def _ask_tcp(s: socket.socket, name: str) -> dns.message.Message:
    query = dns.message.make_query(name, "A")
    dns.query.send_tcp(s, query)
    return dns.message.from_wire(recv_tcp_message(s))


def test_per_client_cap_closes_that_clients_oldest_idle_connection(reactor_running) -> None:
    """The 11th connection of a client with a cap of 10 closes its oldest idle one."""
    srv = Server(max_tcp_per_client=10, max_tcp_connections=100)
    held = []
    try:
        for _ in range(10):
            held.append(_connect(srv.port))
            _ask_tcp(held[-1], "web.cluster.local")
        other = _connect(srv.port, "127.0.0.2")           # another client is not counted
        newest = _connect(srv.port)
        assert _ask_tcp(newest, "web.cluster.local").answer
        assert _closed_by_peer(held[0])
        assert _ask_tcp(held[1], "web.cluster.local").answer
        assert _ask_tcp(other, "web.cluster.local").answer
        assert srv.factory.tcpConnections.evicted == 1
    finally:
        for s in held:
            s.close()
        srv.stop()


def _reset(s: socket.socket, timeout: float = 5.0) -> bool:
    """Read until the peer resets the connection: not a polite close after a drain."""
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
        return False
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_evicted_non_reader_is_really_closed(reactor_running) -> None:
    """A client that pipelines and never reads, once evicted, loses its socket at once."""
    srv = Server(max_tcp_per_client=2, max_tcp_connections=100)
    try:
        reader = _connect(srv.port)
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        query = dns.message.make_query("mixed.cluster.local", "A").to_wire()
        reader.sendall((struct.pack("!H", len(query)) + query) * 2000)
        wait_for(lambda: srv.factory.tcpConnections.count("127.0.0.1") == 1, timeout=5,
                 what="the non-reader counted")
        time.sleep(0.5)
        (stuck,) = list(srv.factory.tcpConnections._all)
        second = _connect(srv.port)
        third = _connect(srv.port)        # evicts the oldest idle one: the non-reader
        assert _ask_tcp(third, "web.cluster.local").answer
        # Closed on the server's side although its answers were never read (a polite
        # close would wait for them to drain, forever).
        wait_for(lambda: not stuck.transport.connected, timeout=5, what="the evicted socket closed")
        assert _reset(reader)
        second.close()
        third.close()
    finally:
        srv.stop()


def test_total_cap_refuses_only_when_none_is_idle(reactor_running) -> None:
    """At the total cap an idle connection makes room; with every one busy, refused."""
    srv = Server(max_tcp_per_client=100, max_tcp_connections=5)
    pending = Pending()
    srv.factory.router = type(srv.factory.router)({"cluster.local": block_of(srv.main),
                                                   "pending.test": block_of(pending)})
    events: list[dict] = []
    observer = events.append
    globalLogPublisher.addObserver(observer)
    held = []
    try:
        for i in range(5):
            held.append(_connect(srv.port, f"127.0.0.{i + 1}"))
        for s in held[1:]:
            dns.query.send_tcp(s, dns.message.make_query("slow.pending.test", "A"))
        wait_for(lambda: len(pending.waiting) == 4, timeout=5)
        newcomer = _connect(srv.port, "127.0.0.9")
        assert _ask_tcp(newcomer, "web.cluster.local").answer    # held[0] was idle
        assert _closed_by_peer(held[0])
        dns.query.send_tcp(newcomer, dns.message.make_query("slow.pending.test", "A"))
        wait_for(lambda: len(pending.waiting) == 5, timeout=5)
        refused = [_connect(srv.port, "127.0.0.10") for _ in range(20)]
        assert all(_closed_by_peer(s) for s in refused)
        assert srv.factory.tcpConnections.refused == 20
        for s in held[1:]:
            assert not _closed_by_peer(s, timeout=0.05)        # busy ones are never cut
        lines = [e for e in events if "connection from" in str(e.get("log_format", ""))]
        assert 1 <= len(lines) <= 2, lines                      # rate-limited
        for s in refused:
            s.close()
    finally:
        globalLogPublisher.removeObserver(observer)
        for s in held:
            s.close()
        reactor_thread.in_reactor(lambda: [d.callback(([], [], [])) for d in pending.waiting
                                           if not d.called])
        srv.stop()


def test_first_query_must_come_within_the_read_timeout(reactor_running) -> None:
    """A connection that sends nothing (or half a query) is closed after the read timeout."""
    srv = Server(tcp_read_timeout=0.3, tcp_idle_timeout=5)
    try:
        silent = _connect(srv.port)
        partial = _connect(srv.port)
        partial.sendall(b"\x00\x30\x12")
        start = time.monotonic()
        assert _closed_by_peer(silent) and _closed_by_peer(partial)
        assert time.monotonic() - start < 3
        busy = _connect(srv.port)
        assert _ask_tcp(busy, "web.cluster.local").answer
        assert not _closed_by_peer(busy, timeout=0.6)           # then the idle timeout
        silent.close()
        partial.close()
        busy.close()
    finally:
        srv.stop()


def test_held_connections_cost_no_udp_answers(reactor_running) -> None:
    """Clients holding ten times the cap in connections: UDP and new TCP still answered."""
    srv = Server(max_tcp_connections=50, max_tcp_per_client=50)
    held = []
    try:
        for i in range(500):
            try:
                held.append(_connect(srv.port, f"127.0.{1 + i // 200}.{1 + i % 200}"))
            except OSError:
                break
        assert srv.udp("web.cluster.local").answer
        assert srv.tcp("web.cluster.local").answer
        wait_for(lambda: len(srv.factory.tcpConnections) <= 50, timeout=5)
    finally:
        for s in held:
            s.close()
        srv.stop()


def test_connection_bookkeeping_survives_churn(reactor_running) -> None:
    """Every closed connection leaves the caps' tables: none leaks."""
    srv = Server(max_tcp_connections=8, max_tcp_per_client=4)
    try:
        for _ in range(5):
            socks = [_connect(srv.port, f"127.0.0.{1 + i % 3}") for i in range(12)]
            for s in socks:
                s.close()
        wait_for(lambda: len(srv.factory.tcpConnections) == 0, timeout=5)
        assert not srv.factory.tcpConnections._byHost
    finally:
        srv.stop()


def test_fd_limit_raised_to_hard_limit() -> None:
    """Like a Go binary, the server may use every descriptor the hard limit allows."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = default_max_tcp_connections()
    soft_after, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft_after == (hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20))
    assert 16 <= cap <= max(16, soft_after // 2)
    assert KubernetaiServerFactory({}).tcpConnections.max_total == cap
