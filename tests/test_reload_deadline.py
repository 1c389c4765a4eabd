"""A reload that cannot finish is abandoned in bounded time and never disables reloading (D5).

Reading a Corefile for a reload can block: an imported FIFO, a `tls` file that is a FIFO,
or a kubeconfig `exec` credential plugin that never answers (the official Python client runs
it while loading the kubeconfig, with no time limit). The plugin is the hang used here: it
is honest (cloud CLIs do wait on networks and prompts) and does not depend on what the
Corefile reader accepts. It waits for a file the test creates, so the test also sees what an
abandoned reload does when it finally wakes up: nothing.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import free_dns_port, wait_for
from test_e2e import answers, ask
from test_supervisor import clusters, corefile, run_server  # noqa: F401 - fixtures
from twisted.internet import defer

from kubernetai.app.supervisor import MAX_ABANDONED, RELOAD_FAILED, Supervisor
from kubernetai.pkg.reactor_thread import in_reactor

#: Seconds the fake credential plugin waits for the test at most, so that it never
#: outlives the test by long even if the test dies before letting it go.
PLUGIN_PATIENCE = 120


class HangingCredentials:
    """A kubeconfig whose `exec` plugin blocks until `release()` (or PLUGIN_PATIENCE s)."""

    def __init__(self, directory: Path, server_url: str) -> None:
        self.released = directory / "release"
        self.started = directory / "plugin-started"
        plugin = directory / "hanging-plugin.sh"
        credential = json.dumps({"apiVersion": "client.authentication.k8s.io/v1beta1",
                                 "kind": "ExecCredential", "status": {"token": "t"}})
        plugin.write_text(
            "#!/bin/sh\n"
            f": > '{self.started}'\n"
            "i=0\n"
            f"while [ ! -e '{self.released}' ] && [ $i -lt {PLUGIN_PATIENCE * 10} ]; do\n"
            "    sleep 0.1; i=$((i + 1))\n"
            "done\n"
            f"echo '{credential}'\n")
        plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
        self.kubeconfig = directory / "hanging.kubeconfig"
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "b", "cluster": {"server": server_url}}],
            "users": [{"name": "u", "user": {"exec": {
                "apiVersion": "client.authentication.k8s.io/v1beta1",
                "command": str(plugin), "interactiveMode": "Never"}}}],
            "contexts": [{"name": "c", "context": {"cluster": "b", "user": "u"}}],
            "current-context": "c"}))

    def corefile(self, clusters: dict, *, ttl_b: int) -> str:
        """The test Corefile with stanza b connecting through the hanging kubeconfig."""
        return corefile(clusters, ttl_b=ttl_b).replace(
            f"endpoint {clusters['b'].url}", f"kubeconfig {self.kubeconfig}")

    def release(self) -> None:
        self.released.touch()


@pytest.fixture
def hanging(tmp_path: Path, clusters) -> Iterator[HangingCredentials]:  # noqa: F811
    credentials = HangingCredentials(tmp_path, clusters["b"].url)
    try:
        yield credentials
    finally:
        credentials.release()


def b_ttl(port: int) -> int:
    response = ask(port, "svc.ns.svc.b.local")
    assert answers(response) == ["10.2.0.1"], response
    return response.answer[0].ttl


def reload(process: Any, systemd: Any, timeout: float = 90.0) -> dict[str, str]:
    """SIGUSR1, then the READY=1 that must follow the RELOADING=1; returns that message."""
    before = len(systemd.messages)
    process.send_signal(signal.SIGUSR1)
    systemd.wait("RELOADING", after=before, timeout=timeout)
    return systemd.wait("READY", after=before, timeout=timeout)


def test_hung_reload_is_abandoned_and_the_next_one_works(clusters, run_server,  # noqa: F811
                                                          hanging):
    """A reload stuck in a credential plugin: abandoned, READY=1 with STATUS, old config serving,
    the next SIGUSR1 reloads, and the stuck one cannot switch anything when it wakes up."""
    process, systemd, port, path = run_server(corefile(clusters))
    systemd.wait("READY")
    assert b_ttl(port) == 5

    path.write_text(hanging.corefile(clusters, ttl_b=42))
    message = reload(process, systemd)
    assert hanging.started.exists()  # it really was the plugin that hung
    assert "reload failed" in message["STATUS"] and "abandoned" in message["STATUS"]
    assert b_ttl(port) == 5  # the old configuration still answers

    path.write_text(corefile(clusters, ttl_b=7))
    message = reload(process, systemd)
    assert message["STATUS"].startswith("2/2 clusters synced"), message
    wait_for(lambda: b_ttl(port) == 7, what="the second reload to switch")

    hanging.release()  # the abandoned reload now reads a complete configuration (ttl 42)
    wait_for(lambda: "is discarded" in systemd.log.read_text(), timeout=30,
             what="the abandoned reload to wake up")
    for _ in range(20):
        assert b_ttl(port) == 7
    assert process.poll() is None


def test_sigterm_during_a_hung_reload_exits_promptly(clusters, run_server,  # noqa: F811
                                                      hanging):
    """A reload blocked reading its configuration does not hold up shutdown."""
    process, systemd, port, path = run_server(corefile(clusters))
    systemd.wait("READY")
    path.write_text(hanging.corefile(clusters, ttl_b=42))
    before = len(systemd.messages)
    process.send_signal(signal.SIGUSR1)
    systemd.wait("RELOADING", after=before)
    wait_for(hanging.started.exists, timeout=30, what="the plugin to start")
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    systemd.wait("STOPPING")


def test_reload_of_a_corefile_importing_a_fifo(clusters, run_server, tmp_path):  # noqa: F811
    """A Corefile importing a FIFO (refused, or abandoned when reading blocks) fails the reload
    with READY=1, and the next reload works."""
    process, systemd, port, path = run_server(corefile(clusters))
    systemd.wait("READY")
    fifo = tmp_path / "snippet"
    os.mkfifo(fifo)
    try:
        path.write_text(f"import {fifo}\n" + corefile(clusters, ttl_b=42))
        message = reload(process, systemd)
        assert "reload failed" in message["STATUS"]
        assert b_ttl(port) == 5
        path.write_text(corefile(clusters, ttl_b=7))
        message = reload(process, systemd)
        assert message["STATUS"].startswith("2/2 clusters synced"), message
        wait_for(lambda: b_ttl(port) == 7, what="the next reload to switch")
    finally:
        _unblock(fifo)


def _unblock(fifo: Path) -> None:
    """Let a reader still blocked opening the FIFO go (it then reads an empty file)."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass  # nobody is reading it


# -- in-process: the counter, the cap on stuck threads -------------------------------------


@pytest.fixture
def supervised(clusters, tmp_path) -> Iterator[tuple[Supervisor, Path, int]]:  # noqa: F811
    """A Supervisor in this process (no signals), on a free port, with a 1 s read deadline."""
    path = tmp_path / "Corefile"
    path.write_text(corefile(clusters))
    port = free_dns_port()
    supervisor = in_reactor(Supervisor, str(path), port_override=port, read_timeout=1.0,
                            status_interval=3600)
    in_reactor(supervisor.startService)

    def listening() -> defer.Deferred:
        done: defer.Deferred = defer.Deferred()
        supervisor.server.listening.addBoth(lambda result: (done.callback(result), result)[1])
        return done
    in_reactor(listening)
    try:
        yield supervisor, path, port
    finally:
        in_reactor(supervisor.stopService)


def test_abandoned_reads_are_counted_and_capped(supervised, clusters, hanging):  # noqa: F811
    """Each abandoned reload counts as a failure; while MAX_ABANDONED reads are still stuck, a
    reload is refused at once instead of starting yet another thread."""
    supervisor, path, port = supervised
    plans = supervisor.server.plans
    counted = RELOAD_FAILED.values.get((), 0)
    path.write_text(hanging.corefile(clusters, ttl_b=42))
    for attempt in range(1, MAX_ABANDONED + 1):
        assert in_reactor(supervisor.reload) is False
        assert supervisor.reload_failures == attempt
        assert RELOAD_FAILED.values[()] == counted + attempt  # coredns_reload_failed_total
        assert "abandoned" in supervisor.last_reload_error
    stuck = [t for t in threading.enumerate() if t.name == "kubernetai-reload"]
    assert len(stuck) >= MAX_ABANDONED
    assert in_reactor(supervisor.reload) is False
    assert supervisor.reload_failures == MAX_ABANDONED + 1
    assert "still blocked" in supervisor.last_reload_error
    assert "still blocked" in supervisor.status()

    hanging.release()
    wait_for(lambda: not any(t.is_alive() for t in stuck), timeout=30,
             what="the stuck reads to finish")
    in_reactor(lambda: None)  # their late results have been seen (and dropped)
    assert supervisor.server.plans is plans  # none of them switched anything
    assert b_ttl(port) == 5

    path.write_text(corefile(clusters, ttl_b=7))
    assert in_reactor(supervisor.reload) is True
    assert supervisor.reload_failures == MAX_ABANDONED + 1
    assert supervisor.last_reload_error is None
    assert "reload failed" not in supervisor.status()
    assert b_ttl(port) == 7
