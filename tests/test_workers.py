"""`twistd kubernetai --workers 2`: two processes answer on one port, one set of informers."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Iterator

import dns.exception
import dns.message
import dns.query
import pytest
from conftest import free_dns_port, wait_for
from test_e2e import SOURCE_ENV, TWISTD, answers, ask

from kubernetai.sandbox.server import Sandbox

RESOURCES = ("services", "endpointslices", "namespaces")


def _service(name: str, ip: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "ns"},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]}}


@pytest.fixture
def cluster(reactor_running) -> Iterator[Sandbox]:
    server = Sandbox()
    server.apply(_service("svc", "10.1.0.1"))
    server.start()
    yield server
    server.stop()


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


class Server:
    def __init__(self, process: subprocess.Popen, port: int, log: Path) -> None:
        self.process, self.port, self.log = process, port, log

    def workers(self) -> list[int]:
        return children(self.process.pid)

    def listening(self) -> int:
        """How many processes said they listen on UDP (the main and each worker)."""
        return self.log.read_text().count("listening on UDP")


@pytest.fixture
def run_workers(tmp_path) -> Iterator:
    started: list[Server] = []

    def run(cluster: Sandbox, workers: int = 2) -> Server:
        port = free_dns_port()
        path = tmp_path / "Corefile"
        # health in the Corefile: a process service the workers must leave to the main.
        path.write_text(f"a.local {{\n    bind 127.0.0.1\n    health 127.0.0.1:{free_dns_port()}\n"
                        f"    kubernetai {{\n        endpoint {cluster.url}\n    }}\n}}\n")
        log = tmp_path / "twistd.log"
        with log.open("w") as output:
            process = subprocess.Popen([TWISTD, "--nodaemon", "--pidfile=", "kubernetai",
                                        "--corefile", str(path), "--dns-port", str(port),
                                        "--workers", str(workers)],
                                       stdout=output, stderr=subprocess.STDOUT,
                                       env=SOURCE_ENV, cwd=tmp_path)
        server = Server(process, port, log)
        started.append(server)
        try:
            wait_for(lambda: server.listening() >= workers, timeout=60,
                     what="every process listening")
        except BaseException:
            print(log.read_text()[-4000:])
            raise
        return server
    yield run
    for server in started:
        pids = server.workers()
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(30)
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def answered(port: int, name: str, count: int, *, tcp: bool = False,
             timeout: float = 2.0) -> list[list[str] | None]:
    """``count`` queries, each from a socket of its own (a new source port): the answers,
    None where none came in time."""
    results: list[list[str] | None] = []
    for _ in range(count):
        query = dns.message.make_query(name, "A")
        try:
            send = dns.query.tcp if tcp else dns.query.udp
            results.append(answers(send(query, "127.0.0.1", port=port, timeout=timeout)))
        except (dns.exception.Timeout, OSError):
            results.append(None)
    return results


def test_two_processes_one_informer_set(cluster, run_workers):
    """With --workers 2 a worker process shares the port, answers from the main's informers
    (the API server sees one list and one watch per resource), and sees API changes."""
    server = run_workers(cluster)
    workers = server.workers()
    assert len(workers) == 1
    assert all(result == ["10.1.0.1"] for result in answered(server.port, "svc.ns.svc.a.local",
                                                             50))
    cluster.apply(_service("new", "10.1.0.2"))
    wait_for(lambda: answers(ask(server.port, "new.ns.svc.a.local")) == ["10.1.0.2"],
             what="the change answered")
    # Every process answers the change: 200 queries, each from a new source port (the
    # kernel spreads them over both processes' sockets by source port).
    results = answered(server.port, "new.ns.svc.a.local", 200)
    assert results == [["10.1.0.2"]] * 200
    # The worker answers on its own, from what the main process fed it: with the main
    # process stopped, queries the kernel gives the worker's sockets are still answered.
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        udp = answered(server.port, "new.ns.svc.a.local", 40, timeout=0.3)
        tcp = answered(server.port, "new.ns.svc.a.local", 20, tcp=True, timeout=0.3)
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    for results in (udp, tcp):
        assert ["10.1.0.2"] in results, results
        assert all(result in (None, ["10.1.0.2"]) for result in results)
    # One informer set: one list and one watch (or one watch-list) of each resource.
    counts = cluster.request_counts()
    for resource in RESOURCES:
        lists, watches = counts.get(("list", resource), 0), counts.get(("watch", resource), 0)
        assert lists <= 1 and watches <= 1 and lists + watches >= 1, counts
    # SIGTERM stops the workers too, and the main exits 0.
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 0
    wait_for(lambda: not any(alive(pid) for pid in workers), timeout=15, what="workers gone")


def test_workers_exit_when_the_main_is_killed(cluster, run_workers):
    server = run_workers(cluster)
    workers = server.workers()
    assert workers
    server.process.kill()
    server.process.wait(30)
    wait_for(lambda: not any(alive(pid) for pid in workers), timeout=15, what="workers gone")


def test_a_worker_that_dies_is_started_again(cluster, run_workers):
    server = run_workers(cluster)
    [first] = server.workers()
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: server.workers() and server.workers() != [first], timeout=30,
             what="a new worker")
    wait_for(lambda: server.listening() >= 3, timeout=30, what="the new worker listening")
    cluster.apply(_service("later", "10.1.0.3"))
    wait_for(lambda: answers(ask(server.port, "later.ns.svc.a.local")) == ["10.1.0.3"],
             what="the change answered")
    assert answered(server.port, "later.ns.svc.a.local", 100) == [["10.1.0.3"]] * 100


def test_reload_restarts_the_workers_on_the_new_configuration(cluster, run_workers):
    server = run_workers(cluster)
    [first] = server.workers()
    path = server.log.parent / "Corefile"
    path.write_text(path.read_text().replace("a.local {", "a.local b.local {")
                    .replace("kubernetai {", "kubernetai a.local b.local {"))
    os.kill(server.process.pid, signal.SIGUSR1)
    wait_for(lambda: server.workers() and server.workers() != [first], timeout=30,
             what="a new worker")
    wait_for(lambda: server.listening() >= 3, timeout=30, what="the new worker listening")
    results = answered(server.port, "svc.ns.svc.b.local", 100)
    assert results == [["10.1.0.1"]] * 100, server.log.read_text()[-3000:]


def test_frames_split_a_big_list_and_come_back_whole():
    """A full list bigger than CHUNK goes as parts then a replace; read back, it is whole."""
    from kubernetai.app.workers import CHUNK, decode_frames, frames
    items = {f"ns/svc-{i}": ("object", i) for i in range(2 * CHUNK + 5)}
    read_end, write_end = os.pipe()
    data = b"".join(frames(("replace", 0, "services", items)))
    data += b"".join(frames(("changes", 0, "services", (("DELETED", "ns/svc-1", None),))))
    assert len(data) < 1 << 16  # fits the pipe's buffer: written before it is read
    os.write(write_end, data)
    os.close(write_end)
    messages = list(decode_frames(read_end))
    os.close(read_end)
    kinds = [message[0] for message in messages]
    assert kinds == ["part", "part", "replace", "changes"]
    merged: dict = {}
    for _, _, _, payload in messages[:3]:
        merged.update(payload)
    assert merged == items
    assert messages[3] == ("changes", 0, "services", (("DELETED", "ns/svc-1", None),))


def test_a_link_refuses_what_would_put_it_too_far_behind():
    """A worker that does not read is not buffered for without bound."""
    from kubernetai.app.workers import Link
    read_end, write_end = os.pipe()
    link = Link(write_end, limit=1 << 20)
    try:
        chunk = b"x" * (256 << 10)
        offered = [link.offer(chunk) for _ in range(8)]  # nothing reads the pipe
        assert offered[0] and not offered[-1]
    finally:
        os.close(read_end)  # the writer thread's write fails; it closes its end
        link.close()
