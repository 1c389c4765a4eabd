"""ready: `/ready` through twistd against simulated API servers, the listener in-process
(monitor modes, several blocks on one address), and the directive's errors."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from conftest import free_dns_port, wait_for
from test_e2e import SOURCE_ENV, TWISTD, answers, ask
from test_supervisor import _service

from kubernetai.app.load import compile_corefile, process_services_of
from kubernetai.core.registry import BlockBuilder, Registry
from kubernetai.corefile import CorefileError, parse
from kubernetai.pkg.reactor_thread import in_reactor
from kubernetai.plugins.ready.service import ReadyService
from kubernetai.sandbox.server import Sandbox


def get(port: int, path: str = "/ready") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def try_get(port: int, path: str = "/ready") -> tuple[int, str] | None:
    """`get`, or None while nothing listens there."""
    try:
        return get(port, path)
    except OSError:
        return None


@pytest.fixture
def clusters(reactor_running: None) -> Iterator[dict[str, Sandbox]]:
    servers = {}
    for name, ip in (("a", "10.1.0.1"), ("b", "10.2.0.1")):
        server = Sandbox()
        server.apply(_service("svc", ip))
        server.start()
        servers[name] = server
    yield servers
    for server in servers.values():
        server.stop()


class Twistd:
    """`twistd kubernetai` on a Corefile in `directory`, its output in twistd.log."""

    def __init__(self, directory: Path, text: str) -> None:
        self.corefile = directory / "Corefile"
        self.corefile.write_text(text)
        self.log = directory / "twistd.log"
        with self.log.open("w") as output:
            self.process = subprocess.Popen(
                [TWISTD, "--nodaemon", "--pidfile=", "kubernetai", "--corefile",
                 str(self.corefile)], stdout=output, stderr=subprocess.STDOUT,
                env=SOURCE_ENV, cwd=directory)

    def output(self) -> str:
        return self.log.read_text()

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
        def check() -> Any:
            assert self.process.poll() is None, f"the server exited: {self.output()}"
            return predicate()
        try:
            return wait_for(check, timeout=timeout, what=what)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.output()[-4000:]}") from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


@pytest.fixture
def twistd(tmp_path: Path) -> Iterator[Callable[[str], Twistd]]:
    started: list[Twistd] = []

    def run(text: str) -> Twistd:
        started.append(Twistd(tmp_path, text))
        return started[-1]
    yield run
    for server in started:
        server.stop()


def two_stanzas(clusters: dict[str, Sandbox], dns: int, ready: str,
                extra: str = "", b_timeout: str = "60s") -> str:
    """Two stanzas, each with its own API server: a's on line 4, b's on line 7 (with a
    one-line `ready` and no `extra`)."""
    return (f"a.local:{dns} b.local:{dns} {{\n"
            f"    bind 127.0.0.1\n"
            f"    {ready}\n"
            f"{extra}"
            f"    kubernetai a.local {{\n        endpoint {clusters['a'].url}\n    }}\n"
            f"    kubernetai b.local {{\n        endpoint {clusters['b'].url}\n"
            f"        startup_timeout {b_timeout}\n    }}\n}}\n")


def test_names_the_cluster_not_synced_then_ok(clusters, twistd):
    """Two clusters, one API server down: 503 naming exactly that stanza; once its API
    server is back and it has synced, 200 OK."""
    clusters["b"].refuse()
    dns, ready = free_dns_port(), free_dns_port()
    server = twistd(two_stanzas(clusters, dns, f"ready 127.0.0.1:{ready}"))
    server.wait(lambda: try_get(ready) == (503, "kubernetai(Corefile:7 b.local.)"),
                what="/ready to name the stanza of b only")
    for _ in range(3):  # it stays so while b's API server is down
        assert get(ready) == (503, "kubernetai(Corefile:7 b.local.)")
        time.sleep(0.3)
    assert "plugin/ready: Plugins not ready: \"kubernetai(Corefile:7 b.local.)\"" \
        in server.output()
    clusters["b"].accept()
    server.wait(lambda: get(ready) == (200, "OK"), what="/ready to say OK")
    server.wait(lambda: answers(ask(dns, "svc.ns.svc.b.local")) == ["10.2.0.1"],
                what="b to answer")
    assert get(ready, "/health")[0] == 404


def test_both_not_ready_are_sorted_and_comma_joined(clusters, twistd):
    clusters["a"].refuse()
    clusters["b"].refuse()
    dns, ready = free_dns_port(), free_dns_port()
    server = twistd(two_stanzas(clusters, dns, f"ready 127.0.0.1:{ready}")
                    .replace("kubernetai a.local {\n", "kubernetai a.local {\n"
                             "        startup_timeout 60s\n"))
    expected = "kubernetai(Corefile:4 a.local.),kubernetai(Corefile:8 b.local.)"
    server.wait(lambda: try_get(ready) == (503, expected), what="both stanzas named")
    clusters["a"].accept()
    server.wait(lambda: get(ready) == (503, "kubernetai(Corefile:8 b.local.)"),
                what="only b named")
    clusters["b"].accept()
    server.wait(lambda: get(ready) == (200, "OK"), what="OK")


def test_a_stanza_past_its_startup_timeout_counts_as_ready(clusters, twistd):
    """As the server then serves what it has: ready after startup_timeout."""
    clusters["b"].refuse()
    dns, ready = free_dns_port(), free_dns_port()
    server = twistd(two_stanzas(clusters, dns, f"ready 127.0.0.1:{ready}", b_timeout="2s"))
    server.wait(lambda: try_get(ready) == (200, "OK"), what="OK after b's startup_timeout")
    clusters["b"].accept()


def test_continuously_a_synced_stanza_stays_ready_while_its_api_server_is_away(
        clusters, twistd):
    """As CoreDNS's kubernetes plugin (HasSynced stays true): a synced stanza keeps
    answering from its cache, so it stays ready even with `monitor continuously`; a replica
    must not leave the Service because the API server, which every replica shares, is down."""
    dns, ready = free_dns_port(), free_dns_port()
    server = twistd(two_stanzas(clusters, dns,
                                f"ready 127.0.0.1:{ready} {{\n"
                                "        monitor continuously\n    }"))
    server.wait(lambda: try_get(ready) == (200, "OK"), what="OK")
    clusters["b"].refuse()
    for _ in range(5):
        time.sleep(0.4)
        assert get(ready) == (200, "OK")
    assert answers(ask(dns, "svc.ns.svc.b.local")) == ["10.2.0.1"]  # from its cache
    clusters["b"].accept()


def test_lameduck_answers_503_shutting_down(clusters, twistd):
    """After SIGTERM, while health's lameduck keeps DNS and /health up, /ready says 503."""
    dns, ready, health = free_dns_port(), free_dns_port(), free_dns_port()
    server = twistd(two_stanzas(
        clusters, dns, f"ready 127.0.0.1:{ready}",
        extra=f"    health 127.0.0.1:{health} {{\n        lameduck 5s\n    }}\n"))
    server.wait(lambda: try_get(ready) == (200, "OK"), what="OK")
    server.wait(lambda: answers(ask(dns, "svc.ns.svc.a.local")) == ["10.1.0.1"],
                what="DNS")
    asked = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.wait(lambda: get(ready) == (503, "Shutting down"), what="503 in lameduck",
                timeout=2)
    assert get(health, "/health") == (200, "OK")
    assert answers(ask(dns, "svc.ns.svc.a.local")) == ["10.1.0.1"]
    assert time.monotonic() - asked < 5  # all of that within the lameduck
    assert server.process.wait(30) == 0


# -- in-process: the listener over real HTTP, fed by stand-in plugins ----------------------


class Flag:
    def __init__(self, value: bool) -> None:
        self.value = value
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.value


@pytest.fixture
def listen(reactor_running: None) -> Iterator[Callable[[ReadyService], int]]:
    running: list[ReadyService] = []

    def start(service: ReadyService) -> int:
        in_reactor(service.startService)
        running.append(service)
        return service.listening[0].getHost().port
    yield start
    for service in running:
        in_reactor(service.stopService)


@pytest.mark.parametrize("continuously", [False, True])
def test_monitor_modes(listen, continuously):
    """until-ready: once ready, a plugin is not asked again; continuously: asked every time,
    so it can go back to 503."""
    flag = Flag(False)
    service = ReadyService("127.0.0.1:0", continuously, [("erratic", flag)])
    port = listen(service)
    assert get(port) == (503, "erratic")
    flag.value = True
    assert get(port) == (200, "OK")
    asked = flag.asked
    flag.value = False
    if continuously:
        assert get(port) == (503, "erratic")
        assert flag.asked == asked + 1
    else:
        assert get(port) == (200, "OK")
        assert flag.asked == asked


def test_a_reload_asks_again_and_lameduck_says_shutting_down(listen):
    flag = Flag(True)
    service = ReadyService("127.0.0.1:0", False, [("erratic", flag)])
    port = listen(service)
    assert get(port) == (200, "OK")
    flag.value = False
    assert get(port) == (200, "OK")
    newer = ReadyService("127.0.0.1:0", False, [("erratic", flag)])
    service.adopt(newer)  # a reload keeping the listener
    assert get(port) == (503, "erratic")
    service.stopping()
    assert get(port) == (503, "Shutting down")


def test_a_plugin_that_raises_is_not_ready(listen):
    def broken() -> bool:
        raise RuntimeError("boom")
    port = listen(ReadyService("127.0.0.1:0", True, [("broken", broken)]))
    assert get(port) == (503, "broken")


def test_the_list_is_read_when_asked(listen):
    """`ready` is set up before the plugins of its block: they join the list afterwards."""
    readiness: list = []
    port = listen(ReadyService("127.0.0.1:0", False, readiness))
    assert get(port) == (200, "OK")
    readiness.append(("late", Flag(False)))
    assert get(port) == (503, "late")


def test_blocks_on_one_address_share_a_listener_others_have_their_own():
    """Two blocks naming one address: one listener reporting on both blocks' plugins; a block
    with `ready` elsewhere reports only its own; a block without `ready` is not asked."""
    text = ("a.local:1053 {\n    ready 127.0.0.1:18181\n    kubernetai {\n"
            "        endpoint http://127.0.0.1:1\n    }\n}\n"
            "b.local:1053 {\n    ready 127.0.0.1:18181 {\n        monitor continuously\n"
            "    }\n    kubernetai {\n        endpoint http://127.0.0.1:1\n    }\n}\n"
            "c.local:1053 {\n    ready 127.0.0.1:18182\n    kubernetai {\n"
            "        endpoint http://127.0.0.1:1\n    }\n}\n"
            "d.local:1053 {\n    kubernetai {\n        endpoint http://127.0.0.1:1\n    }\n}\n")
    plans = compile_corefile(parse(text, "Corefile"))
    services = process_services_of(plans)
    shared, alone = services[("ready", "127.0.0.1:18181")], services[("ready", "127.0.0.1:18182")]
    assert shared.continuously  # one block asks for it
    assert shared.not_ready() == ["kubernetai(Corefile:11 b.local.)",  # sorted as text
                                  "kubernetai(Corefile:3 a.local.)"]
    assert alone.not_ready() == ["kubernetai(Corefile:17 c.local.)"]


def _set_up(text: str) -> BlockBuilder:
    (block,) = parse(text, "Corefile")
    return Registry().set_up_block(block, BlockBuilder(block, ("example.org.",)))


@pytest.mark.parametrize("body, line, token, message", [
    ("ready :8181 :8182", 2, ":8182", "Wrong argument count or unexpected line ending after "
                                      "':8182'"),
    ("ready 8181", 2, "8181", "ready: address 8181: missing port in address"),
    ("ready {\n        monitor\n    }", 3, "monitor",
     "Wrong argument count or unexpected line ending after 'monitor'"),
    ("ready {\n        monitor until-ready continuously\n    }", 3, "continuously",
     "Wrong argument count or unexpected line ending after 'continuously'"),
    ("ready {\n        monitor always\n    }", 3, "always", "monitor type 'always' not supported"),
    ("ready {\n        lameduck 5s\n    }", 3, "lameduck", "ready: unknown property 'lameduck'"),
    ("ready\n    ready :8182", 3, "ready", "can only be used once per Server Block"),
])
def test_directive_errors(body: str, line: int, token: str, message: str) -> None:
    with pytest.raises(CorefileError) as info:
        _set_up(f"example.org {{\n    {body}\n}}\n")
    assert (info.value.line, info.value.token) == (line, token)
    assert message in str(info.value)


def test_defaults() -> None:
    (ready,) = _set_up("example.org {\n    ready\n}\n").process_services
    assert (ready.host, ready.port, ready.continuously, ready.key) == \
        ("", 8181, False, ("ready", ":8181"))
    (ready,) = _set_up("example.org {\n    ready localhost:8091 {\n"
                       "        monitor continuously\n    }\n}\n").process_services
    assert (ready.host, ready.port, ready.continuously) == ("localhost", 8091, True)


def test_a_taken_ready_port_ends_the_server_with_one_line(twistd):
    """As CoreDNS: a listener that cannot bind is fatal (exit 1), said in one line."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        server = twistd(f"example.org:{free_dns_port()} {{\n    bind 127.0.0.1\n"
                        f"    ready 127.0.0.1:{busy}\n    whoami\n}}\n")
        assert server.process.wait(30) == 1
    output = server.output()
    assert f"cannot start serving: Couldn't listen on 127.0.0.1:{busy}" in output
    assert "Traceback" not in output
