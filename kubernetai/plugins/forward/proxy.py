"""One upstream (CoreDNS's ``proxy.Proxy``): its sockets, its health, its exchange.

An upstream is *down* once more than ``max_fails`` health checks in a row got no answer.
Health checks are not periodic: a failed exchange starts one (unless one is running), and
it repeats every ``health_check`` interval (0.5 s) until the upstream answers, which
resets the count. Any reply with a readable header counts as an answer (REFUSED and
SERVFAIL included): only the network failing marks an upstream down. The check is
``. IN NS`` (or the ``domain`` option's name), RD set unless ``no_rec``, over a fresh
socket of the upstream's protocol (UDP; TCP with ``force_tcp``; TLS for a TLS upstream),
waiting at most 1 s, as CoreDNS's ``dnsHc``.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from kubernetai.core.request import Request
from kubernetai.plugins.forward import metrics
from kubernetai.plugins.forward.transport import Transport, UpstreamError
from kubernetai.plugins.forward.wire import Answer, build_query, probe_query, rcode_name

__all__ = ["Proxy", "HealthCheck", "HEALTH_TIMEOUT", "dial_error"]

#: How long a health check waits for its answer (``dnsHc``'s read timeout).
HEALTH_TIMEOUT = 1.0
PROXY_NAME = "forward"


def dial_error(proto: str, label: str, exc: BaseException) -> str:
    """Go's text for a socket that cannot be opened (``listenUDP`` raises
    ``CannotListenError`` when descriptors run out): ``dial udp 10.0.0.1:53: socket: too
    many open files``."""
    cause = getattr(exc, "socketError", None) or exc
    text = getattr(cause, "strerror", None)
    if isinstance(text, str) and text:
        return f"dial {proto} {label}: socket: {text[:1].lower()}{text[1:]}"
    return f"dial {proto} {label}: {cause}"


class HealthCheck:
    """The probe loop of one upstream: at most one running (CoreDNS's ``up.Probe``)."""

    def __init__(self, proxy: "Proxy", reactor: Any, interval: float, recursion: bool,
                 domain: bytes, proto: str) -> None:
        self.proxy = proxy
        self.reactor = reactor
        self.interval = interval
        self.recursion = recursion
        self.domain = domain
        self.proto = proto
        self.active = False
        self.stopped = False
        self.timer: Any = None
        #: Health checks sent (tests look at it).
        self.sent = 0

    def run(self) -> None:
        """Start probing, unless a probe loop is already running."""
        if self.active or self.stopped:
            return
        self.active = True
        self._check()

    def _check(self) -> None:
        self.timer = None
        if self.stopped:
            self.active = False
            return
        self.sent += 1
        try:
            channel = self.proxy.transport.open(self.proto, probe=True)
            qid = channel.new_id()
            data = probe_query(qid, self.domain, self.recursion)
            if self.proto == "udp":
                asked = channel.query(qid, data, HEALTH_TIMEOUT, 65535, self.reactor, False)
            else:
                asked = channel.query(qid, data, HEALTH_TIMEOUT, self.reactor, False)
        except Exception:  # noqa: BLE001 - a socket that cannot open is a failed check
            asked = defer.fail()
        asked.addCallbacks(self._healthy, self._unhealthy)

    def _healthy(self, _: Any) -> None:
        self.proxy.fails = 0
        self.active = False

    def _unhealthy(self, failure: Failure) -> None:
        metrics.HEALTHCHECK_FAILURES.inc((PROXY_NAME, self.proxy.label))
        self.proxy.fails += 1
        if self.stopped:
            self.active = False
            return
        self.timer = self.reactor.callLater(self.interval, self._check)

    def stop(self) -> None:
        self.stopped = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.active = False


class Proxy:
    """One upstream: ``label`` is its ``to`` (``127.0.0.1:53``)."""

    def __init__(self, reactor: Any, host: str, port: int, label: str, *, tls: Any = None,
                 expire: float = 10.0, max_age: float = 0.0, max_idle: int = 0,
                 source: str | None = None, read_timeout: float = 2.0,
                 hc_interval: float = 0.5, hc_recursion: bool = True,
                 hc_domain: bytes = b".", force_tcp: bool = False) -> None:
        self.label = label
        self.host, self.port = host, port
        self.tls = tls
        self.read_timeout = read_timeout
        self.fails = 0
        self.transport = Transport(reactor, host, port, label, tls=tls, expire=expire,
                                   max_age=max_age, max_idle=max_idle, source=source,
                                   proxy_name=PROXY_NAME)
        proto = "tcp-tls" if tls is not None else ("tcp" if force_tcp else "udp")
        self.health = HealthCheck(self, reactor, hc_interval, hc_recursion, hc_domain, proto)

    def down(self, maxfails: int) -> bool:
        """More than ``maxfails`` health checks in a row failed (never, with 0)."""
        return maxfails != 0 and self.fails > maxfails

    def connect(self, request: Request, question: bytes, proto: str
                ) -> defer.Deferred[Answer]:
        """Send ``request`` (with ``question``) over ``proto`` and wait for its reply."""
        started = time.perf_counter()
        limit = max(request.bufsize, 512) if request.udp else 65535
        try:
            asked = self.transport.exchange(
                proto, lambda qid: build_query(request, qid, question), self.read_timeout,
                limit)
        except UpstreamError:
            return defer.fail()
        except Exception as exc:  # noqa: BLE001 - no socket to be had: a failed exchange
            return defer.fail(UpstreamError(dial_error(proto, self.label, exc)))
        return asked.addCallback(self._measured, started)

    def _measured(self, answer: Answer, started: float) -> Answer:
        metrics.REQUEST_DURATION.observe((PROXY_NAME, self.label, rcode_name(answer.rcode)),
                                         time.perf_counter() - started)
        return answer

    def healthcheck(self) -> None:
        self.health.run()

    def stop(self) -> None:
        self.health.stop()
        self.transport.stop()
