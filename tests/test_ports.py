"""Free ports for the servers tests start: bindable for UDP and TCP, and outside the range
the kernel hands to outgoing connections (which could take a port before the server
binds it)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from kubernetai.sandbox import ports


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        udp.bind(("127.0.0.1", port))
        tcp.bind(("127.0.0.1", port))
    return True


def test_a_port_below_the_ephemeral_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    span = tmp_path / "ip_local_port_range"
    span.write_text("32768\t60999\n")
    monkeypatch.setattr(ports, "_EPHEMERAL", span)
    found = {ports.free_port() for _ in range(20)}
    assert all(ports.FLOOR <= port < 32768 and _bindable(port) for port in found)
    assert len(found) > 1  # drawn at random, not the same port for every caller


def test_a_port_in_use_is_not_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    span = tmp_path / "ip_local_port_range"
    span.write_text(f"{ports.FLOOR + 50} 60999\n")
    monkeypatch.setattr(ports, "_EPHEMERAL", span)
    monkeypatch.setattr(ports, "MIN_SPAN", 50)
    held = []
    try:
        for port in range(ports.FLOOR, ports.FLOOR + 50):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            held.append(sock)
        port = ports.free_port()  # every port of the narrow range taken: the system's
        assert not ports.FLOOR <= port < ports.FLOOR + 50 and _bindable(port)
    finally:
        for sock in held:
            sock.close()


def test_without_the_kernels_range_the_system_chooses(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "_EPHEMERAL", tmp_path / "absent")
    assert _bindable(ports.free_port())
