"""health through twistd: /health over real HTTP, lameduck after SIGTERM, a reload that
keeps the listener; and the directive's errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

import dns.message
import dns.query
import dns.rcode
import pytest

from kubernetai.core.registry import BlockBuilder, Registry
from kubernetai.corefile import CorefileError, parse

SOURCE = str(Path(__file__).resolve().parents[3])  # twistd finds its plugin beside the package


def _get(port: int, path: str = "/health") -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _dns(port: int) -> int:
    reply = dns.query.udp(dns.message.make_query("who.example.org", "A"), "127.0.0.1",
                          port=port, timeout=2)
    return reply.rcode()


class Server:
    """twistd kubernetai on a Corefile with health (lameduck 2s) and whoami."""

    def __init__(self, directory: Path, free_port: Callable[[], int],
                 lameduck: str = "2s") -> None:
        self.dns_port, self.http_port = free_port(), free_port()
        self.corefile = directory / "Corefile"
        self.write(lameduck)
        self.log = directory / "twistd.log"
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("twistd")), "--nodaemon", "--pidfile=",
             "kubernetai", "--corefile", str(self.corefile)],
            cwd=directory, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": SOURCE})
        deadline = time.monotonic() + 30
        while True:
            try:
                if _get(self.http_port)[0] == 200 and _dns(self.dns_port) == dns.rcode.NOERROR:
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start: " + self.log.read_text())
            time.sleep(0.2)

    def write(self, lameduck: str, extra: str = "") -> None:
        self.corefile.write_text(
            f"example.org:{self.dns_port} {{\n    bind 127.0.0.1\n"
            f"    health 127.0.0.1:{self.http_port} {{\n        lameduck {lameduck}\n    }}\n"
            f"    whoami\n{extra}}}\n")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def server(tmp_path: Path, free_port: Callable[[], int]):
    started = Server(tmp_path, free_port)
    yield started
    started.stop()


def test_health_answers_ok_and_nothing_else(server: Server) -> None:
    assert _get(server.http_port) == (200, b"OK")
    assert _get(server.http_port, "/ready")[0] == 404


def test_lameduck_keeps_serving_after_sigterm_then_exits_0(server: Server) -> None:
    """After SIGTERM the process answers DNS and /health for the lameduck, then stops."""
    asked = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert _get(server.http_port) == (200, b"OK")
    assert _dns(server.dns_port) == dns.rcode.NOERROR
    time.sleep(1.0)
    assert _get(server.http_port) == (200, b"OK")     # 1.5 s in: still in lameduck
    assert server.process.wait(20) == 0
    assert time.monotonic() - asked >= 2.0
    assert "Going into lameduck mode for 2s" in server.log.read_text()


def test_the_listener_outlives_a_reload(server: Server) -> None:
    """SIGUSR1 with health still in the Corefile keeps its listener (no second bind that
    would fail on the port it holds), and takes the new lameduck."""
    server.write("1s", extra="    log\n")
    server.process.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 20
    while "reloaded" not in server.log.read_text():
        assert time.monotonic() < deadline, server.log.read_text()
        time.sleep(0.2)
    assert _get(server.http_port) == (200, b"OK")
    assert "reload failed" not in server.log.read_text()
    asked = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(20) == 0
    assert "Going into lameduck mode for 1s" in server.log.read_text()
    assert time.monotonic() - asked >= 1.0


def _set_up(text: str) -> BlockBuilder:
    (block,) = parse(text, "Corefile")
    return Registry().set_up_block(block, BlockBuilder(block, ("example.org.",)))


@pytest.mark.parametrize("body, line, token, message", [
    ("health :8080 :8081", 2, ":8081", "Wrong argument count"),
    ("health 8080", 2, "8080", "missing port in address"),
    ("health {\n        lameduck\n    }", 3, "lameduck", "Wrong argument count"),
    ("health {\n        lameduck 5\n    }", 3, "5", "unable to parse lameduck duration"),
    ("health {\n        ready\n    }", 3, "ready", "unknown property 'ready'"),
])
def test_directive_errors(body: str, line: int, token: str, message: str) -> None:
    with pytest.raises(CorefileError) as info:
        _set_up(f"example.org {{\n    {body}\n}}\n")
    assert (info.value.line, info.value.token) == (line, token)
    assert message in str(info.value)


def test_defaults_to_port_8080_without_lameduck() -> None:
    (health,) = _set_up("example.org {\n    health\n}\n").process_services
    assert (health.host, health.port, health.lameduck) == ("", 8080, 0.0)
