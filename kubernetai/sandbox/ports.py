"""A free loopback port, for a server the tests or benchmarks start in another process."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port() -> int:
    """A port on 127.0.0.1 free for both UDP and TCP right now.

    Both must be checked: a port free for UDP may still be the local end of some TCP
    connection (client ports come from the same range), and then a DNS server cannot listen
    on it. The port is released before it is returned: another process could take it first,
    which the callers' start-up checks then report.
    """
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
    raise RuntimeError("no port on 127.0.0.1 free for both UDP and TCP")
