"""How many TCP connections a server holds, and which one to close to make room.

Go raises the open-file limit at start-up and CoreDNS closes idle connections on timers;
a Python server left at the usual soft limit of 1,024 descriptors would run out of them
to a client that merely opens connections. So the limit is raised, and connections are
capped in total and per client address, closing the longest-idle one when a cap is hit.
"""

from __future__ import annotations

import resource
from collections import OrderedDict
from typing import Any

from kubernetai.pkg.ratelog import RateLimitedLog

__all__ = ["TCPConnections", "raise_fd_limit", "default_max_tcp_connections"]


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard one; return the soft limit.

    Go raises it at start-up, so CoreDNS can hold as many TCP connections as the hard
    limit allows; Python leaves it at the (often 1,024) soft default.
    """
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ValueError, OSError):
        return 1024
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # a seccomp filter without @resources: keep soft
            pass
    return int(soft)


def default_max_tcp_connections() -> int:
    """At most 10,000 connections, and never more than half the open-file limit.

    The other half is left for UDP sockets, API-server connections, log files and the
    accept() that finds the cap reached: a server out of descriptors cannot even close a
    connection politely, and every other client of it fails.
    """
    return max(16, min(10_000, raise_fd_limit() // 2))


class TCPConnections:
    """The open TCP connections of a server, in order of last activity.

    A connection past a cap (in total, or from one client address) is made room for by
    closing the connection that has been idle longest (no answer outstanding); only if
    none is idle is the new one refused. So a client holding thousands of idle
    connections cannot keep others out, and a busy connection is never cut.
    """

    #: how many of the least recently active connections to look at for an idle one.
    scan = 64

    def __init__(self, max_total: int | None = None, max_per_client: int = 256) -> None:
        self.max_total = default_max_tcp_connections() if max_total is None else max_total
        self.max_per_client = max_per_client
        self._all: OrderedDict[Any, None] = OrderedDict()
        self._byHost: dict[str, OrderedDict[Any, None]] = {}
        self.evicted = 0
        self.refused = 0
        self.rejectLog = RateLimitedLog()

    def __len__(self) -> int:
        return len(self._all)

    def count(self, host: str) -> int:
        mine = self._byHost.get(host)
        return len(mine) if mine else 0

    def admit(self, host: str) -> bool:
        """Whether a new connection from ``host`` may be served (closing an idle one)."""
        mine = self._byHost.get(host)
        if mine is not None and len(mine) >= self.max_per_client and not self._evict(mine):
            self.refused += 1
            return False
        if len(self._all) >= self.max_total and not self._evict(self._all):
            self.refused += 1
            return False
        return True

    def _evict(self, connections: OrderedDict[Any, None]) -> bool:
        for proto, _ in zip(connections, range(self.scan)):
            if proto.idle():
                self.remove(proto)
                self.evicted += 1
                proto.evict()
                return True
        return False

    def add(self, proto: Any) -> None:
        self._all[proto] = None
        self._byHost.setdefault(proto.host, OrderedDict())[proto] = None

    def active(self, proto: Any) -> None:
        """``proto`` received a query: it is the most recently active now."""
        if proto in self._all:
            self._all.move_to_end(proto)
            self._byHost[proto.host].move_to_end(proto)

    def remove(self, proto: Any) -> None:
        if self._all.pop(proto, 0) is None:
            mine = self._byHost[proto.host]
            del mine[proto]
            if not mine:
                del self._byHost[proto.host]

