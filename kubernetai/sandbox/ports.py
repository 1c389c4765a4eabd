"""A free loopback port, for a server the tests or benchmarks start in another process."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from pathlib import Path

__all__ = ["free_port"]

#: Ports are drawn from here up to the start of the kernel's ephemeral range.
FLOOR = 10_000
#: ... if that leaves at least this many ports to draw from.
MIN_SPAN = 1_000
_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port() -> int:
    """A port on 127.0.0.1 free for both UDP and TCP right now.

    Both must be checked: a port free for UDP may still be the local end of some TCP
    connection, and then a DNS server cannot listen on it. The port is released before it
    is returned, so something else could take it before the caller's server binds it.
    That is why it is drawn at random from below the kernel's ephemeral range (Linux):
    the ports the system hands to every outgoing connection and every ``bind(0)`` come
    from that range, and one of them taking the port in between made a test server fail
    with "Address already in use". Elsewhere, the system's choice.
    """
    for port in _candidates():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            try:
                udp.bind(("127.0.0.1", port))
                port = udp.getsockname()[1]
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port on 127.0.0.1 free for both UDP and TCP")


def _candidates() -> Iterator[int]:
    low = _ephemeral_low()
    if low is not None and low - FLOOR >= MIN_SPAN:
        for _ in range(200):
            yield random.randrange(FLOOR, low)
    for _ in range(50):
        yield 0


def _ephemeral_low() -> int | None:
    try:
        return int(_EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
