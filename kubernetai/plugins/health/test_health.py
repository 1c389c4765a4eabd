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


# -- the self-check and its two metrics ----------------------------------------------------


def _checks() -> tuple[int, float]:
    """Checks timed so far (the histogram's count) and failures counted."""
    from kubernetai.plugins.health.selfcheck import DURATION, FAILURES
    series = DURATION.values.get(())
    return (sum(series.counts) if series else 0), FAILURES.values.get((), 0)


def test_the_self_check_times_health_once_a_second() -> None:
    """coredns_health_request_duration_seconds gets one observation per second, in CoreDNS's
    SlimTimeBuckets; nothing fails."""
    from kubernetai.pkg.reactor_thread import ensure_running, in_reactor
    from kubernetai.plugins.health.selfcheck import BUCKETS, DURATION, FAILURES
    from kubernetai.plugins.health.service import HealthService
    assert BUCKETS == (0.00025, 0.0025, 0.025, 0.25, 2.5)
    assert (DURATION.name, DURATION.labelnames, FAILURES.name) == (
        "coredns_health_request_duration_seconds", (), "coredns_health_request_failures_total")
    ensure_running()
    health = HealthService("127.0.0.1:0", 0.0)
    in_reactor(health.startService)
    try:
        timed, failed = _checks()
        time.sleep(3.5)
        now_timed, now_failed = _checks()
        assert 2 <= now_timed - timed <= 4
        assert now_failed == failed
    finally:
        in_reactor(health.stopService)
    stopped = _checks()
    time.sleep(1.5)
    assert _checks() == stopped  # no checks once stopped


def test_a_failed_self_check_is_counted_and_logged(free_port: Callable[[], int]) -> None:
    from twisted.logger import globalLogPublisher

    from kubernetai.pkg.reactor_thread import ensure_running, in_reactor
    from kubernetai.plugins.health.selfcheck import SelfCheck
    ensure_running()
    seen: list[dict] = []
    globalLogPublisher.addObserver(seen.append)
    from twisted.internet import reactor
    check = SelfCheck(reactor, "127.0.0.1", free_port())  # nothing listens there
    try:
        timed, failed = _checks()
        in_reactor(check.start)
        deadline = time.monotonic() + 10
        while _checks()[1] == failed:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert _checks()[0] > timed  # a failure is timed too
    finally:
        in_reactor(check.stop)
        globalLogPublisher.removeObserver(seen.append)
    from twisted.logger import formatEvent
    lines = [formatEvent(event) for event in seen]
    assert any(line.startswith('plugin/health: Local health request to "http://127.0.0.1:')
               and "/health\" failed: " in line for line in lines), lines


@pytest.mark.parametrize("host, url", [
    ("", "http://localhost:8080/health"), ("0.0.0.0", "http://localhost:8080/health"),
    ("::1", "http://[::1]:8080/health"), ("127.0.0.2", "http://127.0.0.2:8080/health"),
])
def test_where_the_self_check_asks(host: str, url: str) -> None:
    from kubernetai.plugins.health.selfcheck import SelfCheck
    assert SelfCheck(None, host, 8080).url == url


def test_go_seconds() -> None:
    from kubernetai.plugins.health.selfcheck import go_seconds
    assert (go_seconds(1.5), go_seconds(2.000123), go_seconds(3.0)) == ("1.5s", "2.000123s", "3s")
