"""Fixtures for the tests kept in the plugin folders (a plugin's tests beside its code)."""

from __future__ import annotations

import socket
from typing import Callable

import pytest


def _free_port() -> int:
    """A loopback port free for both UDP and TCP right now, for a server in a subprocess."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    return _free_port
