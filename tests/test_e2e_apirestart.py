"""End to end: the API server restarts from its manifests under a running DNS server.

An operator's API server restarted from its manifests (or etcd restored from a backup)
comes back with resourceVersions below what the DNS server's informers have seen. The DNS
server must notice that the history moved, re-list, and answer from the new state: a
service the restarted server does not have is NXDOMAIN, one written after the restart is
answered. Here the real server runs in-process against a sandbox that is stopped and
replaced by a fresh one on the same port, and dnspython asks over UDP.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import dns.message
import dns.query
import dns.rcode
import pytest
from conftest import EXAMPLES, wait_for
from twisted.internet import defer

from kubernetai.app.server import KubernetaiService, load_service
from kubernetai.pkg import reactor_thread
from kubernetai.sandbox.server import Sandbox

COREFILE = """\
cluster.local {{
    bind 127.0.0.1
    kubernetai {{
        endpoint {url}
    }}
}}
"""

# How long the DNS server may take to answer from the restarted API server, with the
# production settings of the informers (the stanza does not change them): a reconnect
# (backoff from 0.2 s, doubling while the server refuses), one one-item list that shows the
# server's resourceVersion went back, and the re-list. It takes about a second; the bound
# is generous for a loaded machine and still far below the 75 s silence limit, the only
# other way a watch from a future resourceVersion (silent, as kube-apiserver keeps it)
# would be given up.
RECOVERY_BOUND = 30.0


def service(name: str, namespace: str, ip: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"name": "http",
                                                                    "port": 80}]}}


def fresh_sandbox(port: int = 0) -> Sandbox:
    """An API server loaded from the cluster.local example manifests."""
    server = Sandbox(port=port, bookmark_interval=1.0, history_size=50)
    server.apply(EXAMPLES / "cluster.local")
    return server


def start_server(corefile: Path) -> tuple[KubernetaiService, int]:
    service_ = load_service(str(corefile), port_override=0)

    def start() -> defer.Deferred:
        service_.startService()
        return service_.listening
    ports = reactor_thread.in_reactor(start)
    return service_, ports[0].getHost().port


def ask(port: int, name: str) -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=5)


def address(port: int, name: str) -> str | None:
    """The A record DNS answers for `name`, or None for NXDOMAIN."""
    response = ask(port, name)
    if response.rcode() == dns.rcode.NXDOMAIN:
        return None
    assert response.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(response.rcode())
    return " ".join(sorted(rr.to_text() for rrset in response.answer for rr in rrset))


class Servers:
    """The API servers of one test, stopped at its end whichever are still running."""

    def __init__(self) -> None:
        self.started: list[Sandbox] = []

    def start(self, server: Sandbox) -> Sandbox:
        server.start()
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.started:
            server.stop()


@pytest.fixture
def servers(reactor_running) -> Iterator[Servers]:
    made = Servers()
    yield made
    made.stop_all()


def restart_process(server: Sandbox, servers: Servers) -> Sandbox:
    """Stop the API server and start a fresh one from the manifests on the same port."""
    server.stop()
    return servers.start(fresh_sandbox(server.port))


def restart_in_place(server: Sandbox, servers: Servers) -> Sandbox:
    """The sandbox's own restart: connections dropped, refused for a second, and back at
    the state it started with."""
    server.restart(seconds=1.0)
    return server


@pytest.mark.parametrize("restart", [restart_process, restart_in_place],
                         ids=["new-process", "restart-fault"])
def test_dns_follows_an_api_server_restarted_from_its_manifests(servers, tmp_path, restart):
    """D4: after the API server restarts from its manifests (resourceVersions back near the
    start), DNS drops the services the new server lacks and answers one created after the
    restart, within a bounded time, and keeps following later changes."""
    before = servers.start(fresh_sandbox())
    before.apply(service("doomed", "shop", "10.96.66.6"))
    # A cluster that lived a while: its resourceVersions are far past a fresh start's.
    churn = service("churn", "default", "10.96.66.10")
    before.apply([{**churn, "metadata": {**churn["metadata"], "labels": {"n": str(i)}}}
                  for i in range(60)])
    path = tmp_path / "Corefile"
    path.write_text(COREFILE.format(url=before.url))
    dns_server, port = start_server(path)
    try:
        wait_for(lambda: address(port, "doomed.shop.svc.cluster.local") == "10.96.66.6",
                 what="the first sync")
        assert address(port, "web.shared.svc.cluster.local") == "10.96.100.10"
        seen = before.resource_version

        restarted_at = time.monotonic()
        after = restart(before, servers)  # back to the manifests: no doomed, no churn
        assert after.resource_version < seen
        after.apply(service("arrived", "shop", "10.96.77.7"))

        def caught_up() -> bool:
            return (address(port, "arrived.shop.svc.cluster.local") == "10.96.77.7"
                    and address(port, "doomed.shop.svc.cluster.local") is None
                    and address(port, "churn.default.svc.cluster.local") is None)
        wait_for(caught_up, timeout=RECOVERY_BOUND,
                 what="DNS to follow the restarted API server")
        print(f"DNS correct {time.monotonic() - restarted_at:.2f}s after the restart")
        assert address(port, "web.shared.svc.cluster.local") == "10.96.100.10"

        # The informers now follow the new server's own history.
        after.delete("Service", "shop", "arrived")
        after.apply(service("later", "shop", "10.96.77.8"))
        wait_for(lambda: address(port, "later.shop.svc.cluster.local") == "10.96.77.8"
                 and address(port, "arrived.shop.svc.cluster.local") is None,
                 what="a change after the recovery")
    finally:
        reactor_thread.in_reactor(dns_server.stopService)
