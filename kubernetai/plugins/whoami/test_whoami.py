"""whoami through twistd, over UDP and TCP, as CoreDNS's whoami answers; and its directive.

Self-contained, as a third party's plugin tests would be: the server runs in its own
process (`twistd -n kubernetai`), found through the entry point like any directive.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from kubernetai.core.registry import BlockBuilder, Registry
from kubernetai.corefile import CorefileError, parse


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, free_port: Callable[[], int]):
    directory = tmp_path_factory.mktemp("whoami")
    corefile = directory / "Corefile"
    port = free_port()
    corefile.write_text(f"example.org:{port} {{\n    bind 127.0.0.1\n    whoami\n}}\n")
    twistd = Path(sys.executable).with_name("twistd")
    process = subprocess.Popen(
        [str(twistd), "--nodaemon", "--pidfile=", "kubernetai", "--corefile", str(corefile)],
        cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        # twistd finds its plugin in twisted/plugins/ beside the package on sys.path (an
        # editable install does not expose it there).
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                dns.query.udp(dns.message.make_query("example.org", "A"), "127.0.0.1",
                              port=port, timeout=0.5)
                break
            except (dns.exception.Timeout, ConnectionRefusedError, OSError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start") from None
        yield port
    finally:
        process.terminate()
        process.wait(10)


def _ask(port: int, name: str, tcp: bool) -> tuple[dns.message.Message, int]:
    """The reply, and the client port the query was sent from."""
    family, kind = socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    with socket.socket(family, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(3)
        query = dns.message.make_query(name, "A")
        if tcp:
            sock.connect(("127.0.0.1", port))
            reply = dns.query.tcp(query, "127.0.0.1", port=port, sock=sock, timeout=3)
        else:
            reply = dns.query.udp(query, "127.0.0.1", port=port, sock=sock, timeout=3)
        return reply, sock.getsockname()[1]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_answers_with_the_client_address_port_and_transport(server: int, tcp: bool) -> None:
    reply, client_port = _ask(server, "Who.Example.Org", tcp)
    proto = "tcp" if tcp else "udp"
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AA
    assert reply.answer == [] and reply.authority == []
    address, service = reply.additional
    assert (address.name.to_text(), address.rdtype, address.ttl) == \
        ("who.example.org.", dns.rdatatype.A, 0)
    assert [r.address for r in address] == ["127.0.0.1"]
    assert (service.name.to_text(), service.rdtype, service.ttl) == \
        (f"_{proto}.who.example.org.", dns.rdatatype.SRV, 0)
    (srv,) = list(service)
    assert (srv.priority, srv.weight, srv.port, srv.target.to_text()) == (0, 0, client_port, ".")


def test_never_cached(server: int) -> None:
    """Each client gets its own port back, even for a name just asked by another."""
    ports = set()
    for _ in range(3):
        reply, client_port = _ask(server, "same.example.org", False)
        ports.add((reply.additional[1][0].port, client_port))
    assert all(answered == asked for answered, asked in ports) and len(ports) == 3


def _set_up(text: str) -> BlockBuilder:
    (block,) = parse(text, "Corefile")
    return Registry().set_up_block(block, BlockBuilder(block, ("example.org.",)))


def test_directive_takes_no_arguments() -> None:
    with pytest.raises(CorefileError) as info:
        _set_up("example.org {\n    whoami me\n}\n")
    assert (info.value.line, info.value.token) == (2, "me")


def test_directive_is_placed_after_the_resolvers() -> None:
    """In CoreDNS's plugin.cfg whoami comes after kubernetes/forward: it is last."""
    builder = _set_up("example.org {\n    whoami\n    log\n}\n")
    assert [stage.name for stage in builder.ordered()] == ["log", "whoami"]
