"""The real server under systemd's protocol: READY after sync, STATUS, reload on SIGUSR1, SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import dns.exception
import dns.rcode
import pytest
from conftest import free_dns_port
from test_e2e import SOURCE_ENV, TWISTD, answers, ask, wait_for

from kubernetai.sandbox.server import Sandbox


def _service(name: str, ip: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "ns"},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]}}


class FakeSystemd:
    """The NOTIFY_SOCKET end systemd would hold: collects the datagrams the server sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []
        self.log: Path | None = None  # the server's output, shown when a wait fails

    def poll(self) -> None:
        try:
            while True:
                data = self.sock.recv(65536).decode()
                self.messages.append(dict(line.split("=", 1) for line in data.splitlines()))
        except (socket.timeout, BlockingIOError):
            pass

    def wait(self, key: str, timeout: float = 60.0, after: int = 0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            for message in self.messages[after:]:
                if key in message:
                    return message
            if time.monotonic() > deadline:
                log = self.log.read_text()[-4000:] if self.log and self.log.exists() else ""
                raise AssertionError(f"no {key} from the server: {self.messages}\n{log}")
            self.poll()

    def close(self) -> None:
        self.sock.close()


def service_requests(cluster) -> int:
    """Lists and watches of services the cluster has answered (a watch-list is a list)."""
    counts = cluster.request_counts()
    return counts.get(("list", "services"), 0) + counts.get(("watch", "services"), 0)


@pytest.fixture
def clusters(reactor_running):
    servers = {}
    for name, ip in (("a", "10.1.0.1"), ("b", "10.2.0.1")):
        server = Sandbox()
        server.apply(_service("svc", ip))
        server.start()
        servers[name] = server
    yield servers
    for server in servers.values():
        server.stop()


def corefile(clusters, *, ttl_b: int = 5, timeout: str = "5s") -> str:
    return (f"a.local b.local {{\n    bind 127.0.0.1\n"
            f"    kubernetai a.local {{\n        endpoint {clusters['a'].url}\n"
            f"        startup_timeout {timeout}\n    }}\n"
            f"    kubernetai b.local {{\n        endpoint {clusters['b'].url}\n"
            f"        ttl {ttl_b}\n    }}\n}}\n")


@pytest.fixture
def run_server(tmp_path):
    started = []

    def run(text: str, port: int | None = None) -> tuple[subprocess.Popen, FakeSystemd, int, Path]:
        """Start twistd on `text`; with `port`, the Corefile names its ports itself."""
        path = tmp_path / "Corefile"
        path.write_text(text)
        systemd = FakeSystemd(tmp_path / "notify.sock")
        override = [] if port is not None else ["--dns-port", str(port := free_dns_port())]
        env = {**SOURCE_ENV, "NOTIFY_SOCKET": str(systemd.path)}
        systemd.log = tmp_path / "twistd.log"
        with systemd.log.open("w") as output:
            process = subprocess.Popen([TWISTD, "--nodaemon", "--pidfile=", "kubernetai",
                                        "--corefile", str(path), *override],
                                       stdout=output, stderr=subprocess.STDOUT, env=env,
                                       cwd=tmp_path)
        started.append((process, systemd))
        return process, systemd, port, path
    yield run
    for process, systemd in started:
        if process.poll() is None:
            process.kill()
            process.wait(30)
        systemd.close()


def test_ready_only_after_sync_then_stopping(clusters, run_server):
    """READY=1 waits for the first sync; STATUS says which clusters synced; SIGTERM -> STOPPING=1, exit 0."""
    clusters["a"].refuse()
    process, systemd, port, _ = run_server(corefile(clusters, timeout="60s"))
    time.sleep(2.0)
    systemd.poll()
    assert not any("READY" in m for m in systemd.messages), systemd.messages
    clusters["a"].accept()
    ready = systemd.wait("READY")
    assert ready["READY"] == "1"
    assert ready["STATUS"].startswith("2/2 clusters synced")
    assert answers(ask(port, "svc.ns.svc.a.local")) == ["10.1.0.1"]
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    systemd.wait("STOPPING")


def test_ready_after_startup_timeout_with_unsynced_status(clusters, run_server):
    """A cluster that never syncs delays READY only until its startup_timeout."""
    clusters["a"].refuse()
    process, systemd, port, _ = run_server(corefile(clusters, timeout="1s"))
    ready = systemd.wait("READY")
    assert ready["STATUS"].startswith("1/2 clusters synced")
    assert "a.local" in ready["STATUS"] and "NOT synced" in ready["STATUS"]
    assert answers(ask(port, "svc.ns.svc.b.local")) == ["10.2.0.1"]
    clusters["a"].accept()


def test_reload_switches_without_failed_queries_and_keeps_warm_stanza(clusters, run_server):
    """SIGUSR1 after editing one stanza: answers switch, no query fails, the other is not re-listed."""
    process, systemd, port, path = run_server(corefile(clusters))
    systemd.wait("READY")
    lists_a = service_requests(clusters["a"])
    lists_b = service_requests(clusters["b"])

    failures: list[str] = []
    ttls: list[int] = []
    stop = threading.Event()

    def stream() -> None:
        while not stop.is_set():
            for name in ("svc.ns.svc.a.local", "svc.ns.svc.b.local"):
                try:
                    response = ask(port, name)
                    if response.rcode() != dns.rcode.NOERROR or not response.answer:
                        failures.append(f"{name}: {dns.rcode.to_text(response.rcode())}")
                    elif name.endswith("b.local"):
                        ttls.append(response.answer[0].ttl)
                except dns.exception.Timeout:
                    failures.append(f"{name}: timeout")
    thread = threading.Thread(target=stream)
    thread.start()
    try:
        time.sleep(0.5)
        path.write_text(corefile(clusters, ttl_b=42))
        before = len(systemd.messages)
        process.send_signal(signal.SIGUSR1)
        systemd.wait("RELOADING", after=before)
        systemd.wait("READY", after=before)
        wait_for(lambda: bool(ttls) and ttls[-1] == 42)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(30)
    assert failures == []
    assert 5 in ttls and ttls[-1] == 42
    assert service_requests(clusters["a"]) == lists_a  # kept warm
    assert service_requests(clusters["b"]) > lists_b   # re-created


def test_broken_reload_keeps_serving(clusters, run_server):
    """A broken Corefile on reload is reported and the running configuration keeps answering."""
    process, systemd, port, path = run_server(corefile(clusters))
    systemd.wait("READY")
    path.write_text(corefile(clusters).replace("ttl 5", "ttl 99999"))
    before = len(systemd.messages)
    process.send_signal(signal.SIGUSR1)
    message = systemd.wait("READY", after=before)
    assert "reload failed" in message["STATUS"] and "ttl must be in range" in message["STATUS"]
    assert answers(ask(port, "svc.ns.svc.b.local")) == ["10.2.0.1"]
    assert process.poll() is None


def test_busy_port_exits_1(clusters, run_server):
    """A DNS port that cannot be bound ends the server with status 1, as CoreDNS does."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        process, systemd, _, path = run_server(corefile(clusters))
        systemd.wait("READY")  # the first server got its own free port
        process.terminate()
        process.wait(30)
        busy = subprocess.run([TWISTD, "--nodaemon", "--pidfile=", "kubernetai", "--corefile",
                               str(path), "--dns-port", str(port)], env=SOURCE_ENV,
                              capture_output=True, text=True, timeout=60, cwd=path.parent)
    assert busy.returncode == 1
    assert "cannot start serving" in busy.stdout + busy.stderr


def test_busy_port_exits_1_with_no_stanza_to_wait_for(tmp_path):
    """A block of `whoami` alone opens its ports before the reactor runs: a busy one still
    ends the server with status 1 (it used to keep running, deaf)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        path = tmp_path / "Corefile"
        path.write_text(f"example.org:{port} {{\n    bind 127.0.0.1\n    whoami\n}}\n")
        busy = subprocess.run([TWISTD, "--nodaemon", "--pidfile=", "kubernetai", "--corefile",
                               str(path)], env=SOURCE_ENV, capture_output=True, text=True,
                              timeout=60, cwd=tmp_path)
    assert busy.returncode == 1
    assert "cannot start serving" in busy.stdout + busy.stderr


def test_reload_to_a_busy_port_keeps_serving(clusters, run_server):
    """A reload whose new port cannot be bound fails and leaves the old configuration serving."""
    port = free_dns_port()
    text = corefile(clusters).replace("a.local b.local {", f"a.local:{port} b.local:{port} {{")
    process, systemd, port, path = run_server(text, port=port)
    systemd.wait("READY")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        busy = taken.getsockname()[1]
        path.write_text(text + f"other.local:{busy} {{\n    bind 127.0.0.1\n"
                        f"    kubernetai {{\n        endpoint {clusters['a'].url}\n    }}\n}}\n")
        before = len(systemd.messages)
        process.send_signal(signal.SIGUSR1)
        message = systemd.wait("READY", after=before)
    assert "reload failed" in message["STATUS"]
    assert answers(ask(port, "svc.ns.svc.b.local")) == ["10.2.0.1"]
