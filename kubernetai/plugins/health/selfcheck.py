"""health's self-check: ask our own `/health` once a second and time the answer.

CoreDNS's health plugin does this to tell an overloaded process from a healthy one: the
request goes through the same event loop as every DNS query, so its duration grows when
the loop falls behind. It exports the two metrics defined here (no `server` label: being
overloaded is the process's symptom, not a server block's). A request that gets no answer
within 3 s, or cannot connect, counts as a failure; an answer slower than 1 s is logged.

The request is a few bytes of HTTP/1.1 on a plain TCP connection, not Twisted's `Agent`,
whose connection factory would log a "Starting factory" line every second in an embedding
application.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from kubernetai.core.metrics import PROCESS, exponential_buckets

log = Logger()

INTERVAL = 1.0   # seconds between checks (CoreDNS's ticker)
TIMEOUT = 3.0    # CoreDNS's client timeout
SLOW = 1.0       # an answer slower than this is logged

#: CoreDNS's SlimTimeBuckets: 0.25 ms to 2.5 s.
BUCKETS = exponential_buckets(0.00025, 10, 5)

DURATION = PROCESS.histogram("coredns_health_request_duration_seconds",
                             "Histogram of the time (in seconds) each request took.", (),
                             BUCKETS)
FAILURES = PROCESS.counter("coredns_health_request_failures_total",
                           "The number of times the health check failed.")
FAILURES.inc((), 0)  # shown as 0 from the start, as CoreDNS's


class CheckFailed(Exception):
    """The self-check got no HTTP answer."""


class _Probe(protocol.Protocol):
    """Sends one GET and fires ``done`` with the status line once the headers are in."""

    def __init__(self, request: bytes, done: defer.Deferred[bytes]) -> None:
        self.request = request
        self.done = done
        self.buffer = b""

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" in self.buffer or len(self.buffer) > 65536:
            self._finish()
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self._finish()

    def _finish(self) -> None:
        if self.done.called:
            return
        status = self.buffer.split(b"\r\n", 1)[0]
        if status.startswith(b"HTTP/"):
            self.done.callback(status)
        else:
            self.done.errback(CheckFailed("connection closed before an HTTP answer"))


class _ProbeFactory(protocol.ClientFactory):
    noisy = False  # no "Starting factory" line each second

    def __init__(self, request: bytes, done: defer.Deferred[bytes]) -> None:
        self.request = request
        self.done = done

    def buildProtocol(self, addr: Any) -> _Probe:
        return _Probe(self.request, self.done)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        if not self.done.called:
            self.done.errback(reason)


def url_host(host: str) -> str:
    """Where to ask: the listener's host, or localhost when it listens everywhere."""
    if not host or host in ("::", "0.0.0.0"):
        return "localhost"
    return host


class SelfCheck:
    """Asks ``http://HOST:PORT/health`` every INTERVAL while started."""

    def __init__(self, reactor: Any, host: str, port: int) -> None:
        self.reactor = reactor
        self.host = url_host(host)
        self.port = port
        bracketed = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{bracketed}:{port}/health"
        self.request = (f"GET /health HTTP/1.1\r\nHost: {bracketed}:{port}\r\n"
                        "User-Agent: kubernetai-health\r\nConnection: close\r\n\r\n").encode()
        self._loop = LoopingCall(self.check)
        self._loop.clock = reactor
        self._pending: defer.Deferred[None] | None = None
        self._connector: Any = None

    def start(self) -> None:
        self._loop.start(INTERVAL, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
        if self._connector is not None:  # a check in flight is dropped, not counted
            self._connector.disconnect()

    def check(self) -> defer.Deferred[None] | None:
        """One check (skipped while the last one is still waiting, as a Go ticker drops
        ticks); the Deferred fires once it is counted."""
        if self._pending is not None:
            return None
        started = time.perf_counter()
        done: defer.Deferred[bytes] = defer.Deferred()
        self._connector = self.reactor.connectTCP(self.host, self.port,
                                                  _ProbeFactory(self.request, done),
                                                  timeout=TIMEOUT)
        timer = self.reactor.callLater(TIMEOUT, self._expire, done)
        pending = done.addBoth(self._count, started, timer)
        self._pending = pending
        return pending

    def _expire(self, done: defer.Deferred[bytes]) -> None:
        connector = self._connector
        if not done.called:
            done.errback(CheckFailed(f"no answer within {TIMEOUT:g}s"))
        if connector is not None:
            connector.disconnect()

    def _count(self, outcome: Any, started: float, timer: Any) -> None:
        self._pending = None
        self._connector = None
        if timer.active():
            timer.cancel()
        if not self._loop.running:
            return  # stopped meanwhile: CoreDNS does not count a cancelled request
        elapsed = time.perf_counter() - started
        DURATION.observe((), elapsed)
        if isinstance(outcome, bytes):
            if elapsed > SLOW:
                log.warn('plugin/health: Local health request to "{url}" took more than 1s: '
                         "{elapsed}", url=self.url, elapsed=go_seconds(elapsed))
            return
        FAILURES.inc()
        error = getattr(outcome, "value", outcome)
        log.warn('plugin/health: Local health request to "{url}" failed: {error}',
                 url=self.url, error=error)


def go_seconds(seconds: float) -> str:
    """A duration as Go prints one of a second or more (``1.5s``, ``2.000123s``)."""
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    return f"{text}s"
