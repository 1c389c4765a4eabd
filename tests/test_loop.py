"""loop: the start-up probe, the halt on a forwarding loop, and the directive.

End to end under twistd: `forward` is another plugin, so the server that sends the probe
back to itself here uses a relay directive defined in this file (:class:`RelayDirective`),
registered for the twistd process through an entry point in a throw-away ``dist-info``
(exactly as a third party's plugin would be found). Placed right after `loop`, where
`forward` stands, it sends each query that reaches it to an address over UDP and answers
with what comes back: aimed at the server's own port it makes the loop CoreDNS's README
describes; aimed at a small upstream in this process it is a healthy forwarder.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol

from kubernetai.core.codec import parse_request
from kubernetai.core.registry import BlockBuilder, Registry
from kubernetai.core.request import Reply, Request
from kubernetai.corefile import CorefileError, Directive, parse
from kubernetai.plugins.loop.handler import HINFO, LoopHandler, probe_name
from kubernetai.plugins.loop.probe import LoopProbe, probe_query
from kubernetai.sandbox.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).parent / "twistd")
FATAL = re.compile(r'\[FATAL\] plugin/loop: Loop \((127\.0\.0\.1:\d+) -> (\S+)\) detected for '
                   r'zone "(\S+)", see https://coredns\.io/plugins/loop#troubleshooting\. '
                   r'Query: "HINFO (\d+)\.(\d+)\.(\S*)"')


# --- the relay directive (loaded by the twistd process, from this module) -------------------

class _Relay(DatagramProtocol):
    def __init__(self, done: defer.Deferred[bytes], id_: int) -> None:
        self.done, self.id = done, id_

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if len(data) >= 12 and struct.unpack_from("!H", data)[0] == self.id \
                and not self.done.called:
            self.done.callback(data)


class RelayHandler:
    """Sends the query on over UDP and answers with the reply (SERVFAIL after 2 s)."""

    name = "looprelay"

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def serve(self, request: Request, next: Any) -> Any:
        from twisted.internet import reactor
        id_ = secrets.randbelow(0x10000)
        query = struct.pack("!HBBHHHH", id_, request.rd, 0, 1, 0, 0, 0) + request.question
        done: defer.Deferred[bytes] = defer.Deferred()
        port = reactor.listenUDP(0, _Relay(done, id_), interface="127.0.0.1")
        port.write(query, (self.host, self.port))
        timer = reactor.callLater(2.0, lambda: done.called or done.callback(b""))

        def answered(data: bytes) -> Reply:
            port.stopListening()
            if timer.active():
                timer.cancel()
            if not data:
                return Reply(2)
            return Reply.encoded(struct.pack("!H", request.id) + data[2:])
        return done.addCallback(answered)


class RelayDirective:
    name = "looprelay"
    after = "loop"
    once = True

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        host, port = directive.args[0].rsplit(":", 1)
        builder.add_handler(RelayHandler(host, int(port)))


# --- twistd ------------------------------------------------------------------------------

def _twistd(directory: Path, corefile: str) -> tuple[subprocess.Popen[bytes], Path]:
    """twistd serving ``corefile``, with the relay directive installed for it."""
    info = directory / "kubernetai_looprelay-0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kubernetai-looprelay\n"
                                   "Version: 0\n")
    (info / "entry_points.txt").write_text("[kubernetai.directives]\n"
                                           "looprelay = test_loop:RelayDirective\n")
    (directory / "Corefile").write_text(corefile)
    log = directory / "twistd.log"
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), str(directory)])
    process = subprocess.Popen(
        [TWISTD, "--nodaemon", "--pidfile=", "kubernetai", "--corefile",
         str(directory / "Corefile")], cwd=directory, stdout=log.open("w"),
        stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": path})
    return process, log


def _ask(port: int, name: str, qtype: int = 1, timeout: float = 3.0) -> bytes:
    labels = [label for label in name.rstrip(".").split(".") if label]
    question = b"".join(bytes((len(x),)) + x.encode() for x in labels) + b"\0"
    query = struct.pack("!HBBHHHH", 4242, 1, 0, 1, 0, 0, 0) + question + struct.pack(
        "!HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(query, ("127.0.0.1", port))
        return sock.recv(65535)


class Upstream:
    """A UDP server on loopback answering REFUSED to everything, noting each question."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.seen: list[tuple[str, int]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(65535)
            except OSError:
                continue
            request = parse_request(data, True)
            if not isinstance(request, Request):
                continue
            self.seen.append((request.qname.decode() + ".", request.qtype))
            self.sock.sendto(data[:2] + bytes((0x81, 0x05)) + data[4:12]
                             + request.question, addr)

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


def test_a_server_forwarding_to_itself_halts_with_coredns_message(tmp_path: Path) -> None:
    port = free_port()
    process, log = _twistd(tmp_path, f".:{port} {{\n    bind 127.0.0.1\n    loop\n"
                                     f"    looprelay 127.0.0.1:{port}\n}}\n")
    try:
        code = process.wait(40)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert code == 1, text
    found = FATAL.search(text)
    assert found, text
    assert found.group(2) == f"127.0.0.1:{port}"
    assert found.group(3) == "."
    assert found.group(6) == ""                       # HINFO <n>.<n>. for the root zone
    assert int(found.group(4)) < 1 << 62 and int(found.group(5)) < 1 << 62
    assert text.count("[FATAL]") == 1


def test_no_loop_one_probe_then_the_step_steps_aside(tmp_path: Path,
                                                     upstream: Upstream) -> None:
    port = free_port()
    process, log = _twistd(tmp_path, f"Example.ORG:{port} {{\n    bind 127.0.0.1\n    loop\n"
                                     f"    looprelay 127.0.0.1:{upstream.port}\n}}\n")
    try:
        deadline = time.monotonic() + 30
        while not upstream.seen:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        (name, qtype), = upstream.seen
        assert qtype == HINFO
        assert re.fullmatch(r"\d+\.\d+\.example\.org\.", name), name
        # The probe was answered (REFUSED): the step now passes everything on, even the
        # probe's own name three times.
        time.sleep(0.5)
        for _ in range(3):
            reply = _ask(port, name, HINFO)
            assert reply[3] & 0xF == 5
        assert _ask(port, "www.example.org")[3] & 0xF == 5
        time.sleep(0.5)
        assert process.poll() is None, log.read_text()
        assert len(upstream.seen) == 5
        assert "[FATAL]" not in log.read_text()
    finally:
        process.terminate()
        process.wait(20)


# --- the step, in process -------------------------------------------------------------------

class _Peer:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def peer(self, addr: Any) -> tuple[str, int]:
        return self.host, self.port


def _request(name: str, qtype: int = HINFO, host: str = "127.0.0.1") -> Request:
    request = parse_request(probe_query(name, 7)[:-4] + struct.pack("!HH", qtype, 1), True)
    assert isinstance(request, Request)
    request.proto, request.addr = _Peer(host, 40000), None
    return request


def _passed(request: Request) -> Reply:
    return Reply(0)


def test_the_third_arrival_halts_with_the_line() -> None:
    lines: list[str] = []
    handler = LoopHandler("example.org.", halt=lines.append)
    handler.address = ":1053"
    for _ in range(2):
        handler.serve(_request(handler.qname), _passed)
    assert lines == []
    handler.serve(_request(handler.qname.upper(), host="::ffff:127.0.0.1"), _passed)
    assert lines == [
        '[FATAL] plugin/loop: Loop (127.0.0.1:40000 -> :1053) detected for zone '
        '"example.org.", see https://coredns.io/plugins/loop#troubleshooting. '
        f'Query: "HINFO {handler.qname}"']


def test_what_the_step_does_not_count() -> None:
    lines: list[str] = []
    handler = LoopHandler(".", halt=lines.append)
    for _ in range(5):
        handler.serve(_request(handler.qname, qtype=1), _passed)            # not HINFO
        handler.serve(_request("1.2.example.org"), _passed)                 # another name
    assert handler.seen == 0 and lines == []
    zoned = LoopHandler("example.org.", halt=lines.append)
    other = probe_name("example.org.").replace("example.org.", "example.net.")
    zoned.qname, zoned._probe = other, other.rstrip(".").encode()
    for _ in range(5):
        zoned.serve(_request(other), _passed)                               # out of zone
    assert zoned.seen == 0 and lines == []
    handler.serve(_request(handler.qname), _passed)
    handler.serve(_request(handler.qname), _passed)
    handler.reset()                                  # a failed exchange starts the count again
    handler.serve(_request(handler.qname), _passed)
    handler.serve(_request(handler.qname), _passed)
    assert lines == []
    handler.disable()
    for _ in range(5):
        handler.serve(_request(handler.qname), _passed)
    assert lines == []


def test_probe_name_shape() -> None:
    assert re.fullmatch(r"\d+\.\d+\.", probe_name("."))
    assert re.fullmatch(r"\d+\.\d+\.cluster\.local\.", probe_name("Cluster.Local."))
    assert probe_name(".") != probe_name(".")


class _FakeServer:
    """What the probe reads of a KubernetaiService: its groups, and ``listening``."""

    def __init__(self, builder: Any, port: int) -> None:
        group = type("Group", (), {"port": port, "address": "127.0.0.1",
                                   "blocks": [type("Plan", (), {"builder": builder})()]})()
        self._servers = [(group, None)]
        self.listening: defer.Deferred[list[Any]] = defer.Deferred()

    def servers(self) -> list[Any]:
        return self._servers


def test_probe_retries_until_answered_then_disables(reactor_running: None) -> None:
    """Over real sockets: refused at first (the count is reset each time), then answered
    by a responder that appears later; the step turns itself off."""
    from twisted.internet import reactor

    from kubernetai.pkg import reactor_thread
    handler = LoopHandler(".", halt=lambda line: None)
    builder = object()
    port = free_port()
    probe = LoopProbe(handler, builder, reactor, pause=0.05, timeout=0.5, deadline=20)
    fake = _FakeServer(builder, port)

    def start() -> None:
        probe.serving(fake)
        probe.startService()
        fake.listening.callback([])
    reactor_thread.in_reactor(start)
    deadline = time.monotonic() + 10
    while probe.tries < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert not handler.off
    assert handler.address == f"127.0.0.1:{port}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.settimeout(5)
        data, addr = sock.recvfrom(512)
        assert data[12:] == probe_query(handler.qname, 0)[12:]
        assert data[2] == 0x01                       # RD, as miekg's SetQuestion
        sock.sendto(data[:2] + b"\x81\x83" + data[4:], addr)
        while not handler.off:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    reactor_thread.in_reactor(probe.stopService)


@pytest.mark.parametrize("body, message, token", [
    ("loop now", "Wrong argument count or unexpected line ending after 'now'", "now"),
    ("loop {\n        x\n    }", "Unexpected token '{', expecting argument", "{"),
    ("loop\n    loop", "this plugin can only be used once per Server Block: 'loop'", "loop"),
])
def test_directive_errors(body: str, message: str, token: str) -> None:
    (block,) = parse(f". {{\n    {body}\n}}\n")
    with pytest.raises(CorefileError) as caught:
        Registry().set_up_block(block, BlockBuilder(block, (".",)))
    assert caught.value.message == message
    assert caught.value.token == token


def test_the_step_stands_before_forward_and_probes_the_first_zone() -> None:
    (block,) = parse("example.org 10.0.0.0/24 {\n    loop\n    whoami\n}\n")
    builder = Registry().set_up_block(block, BlockBuilder(block, ("example.org.",
                                                                  "0.0.10.in-addr.arpa.")))
    (stage,) = [s for s in builder.stages if s.name == "loop"]
    assert re.fullmatch(r"\d+\.\d+\.example\.org\.", stage.handler.qname)
    assert [s.name for s in builder.ordered()] == ["loop", "whoami"]
    (probe,) = builder.process_services
    assert probe.key[0] == "loop"


def test_forward_to_itself_halts(tmp_path: Path) -> None:
    """The real thing: `forward . 127.0.0.1:PORT` of the server's own port."""
    port = free_port()
    process, log = _twistd(tmp_path, f".:{port} {{\n    bind 127.0.0.1\n    loop\n"
                                     f"    forward . 127.0.0.1:{port}\n}}\n")
    try:
        code = process.wait(40)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert code == 1, text
    found = FATAL.search(text)
    assert found and found.group(2) == f"127.0.0.1:{port}", text
