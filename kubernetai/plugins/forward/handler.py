"""The `forward` step: a query for FROM (not in `except`) is sent to an upstream.

As CoreDNS's ``Forward.ServeDNS``: the upstreams are ordered by the policy once per query
and tried in turn, skipping those marked down (when every one is down, one picked at
random is tried anyway, counted in ``coredns_forward_healthcheck_broken_total``). An
exchange that fails (timeout, refused, garbage) starts that upstream's health check and
the next upstream is tried, for at most ``max_connect_attempts`` exchanges (twice the
number of upstreams by default) and 5 s in all; then the answer is SERVFAIL with the last
error (``read udp ...: i/o timeout``), or ``no healthy proxies``. A reply to another
question is answered FORMERR. A reply whose rcode is listed in ``failover`` sends the
query to the next upstream (the last reply is kept when every upstream gave one); one
listed in ``next`` passes the query to the next `forward` of the block.

The reply passes through as the upstream wrote it: rcode, AA, RA, AD, the answer,
authority and additional records (the OPT record aside: the server writes its own);
a truncated UDP reply comes back truncated, so the client retries over TCP, which then
goes to the upstream over TCP (with ``prefer_udp`` forward itself retries over TCP).

``max_concurrent``: a query that would make more than that many in flight is REFUSED at
once (``concurrent queries exceeded maximum N``), so a flood towards a dead upstream holds
at most N queries' state, whatever its rate.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from twisted.internet import defer
from twisted.python.failure import Failure

from kubernetai.core.codec import FORMERR, NOERROR, REFUSED, SERVFAIL, render
from kubernetai.core.plugin import Next, Result
from kubernetai.core.request import AD, RA, Reply, Request
from kubernetai.plugins.forward import metrics
from kubernetai.plugins.forward.policy import Random
from kubernetai.plugins.forward.proxy import Proxy
from kubernetai.plugins.forward.transport import UpstreamError
from kubernetai.plugins.forward.wire import Answer, asked, matches, question_wire

__all__ = ["ForwardHandler", "NO_HEALTHY", "DEADLINE"]

#: CoreDNS's ``ErrNoHealthy``.
NO_HEALTHY = "no healthy proxies"
#: How long one query may spend on upstreams in all (``defaultTimeout``).
DEADLINE = 5.0
_TC = 0x02


class ForwardHandler:
    """One `forward` directive's step."""

    name = "forward"

    def __init__(self, from_zone: bytes, proxies: Sequence[Proxy], policy: Any, *,
                 ignored: Sequence[bytes] = (), max_fails: int = 2,
                 force_tcp: bool = False, prefer_udp: bool = False,
                 max_concurrent: int = 0, concurrent_text: str = "",
                 next_rcodes: Sequence[int] = (), next_on_nodata: bool = False,
                 failover_rcodes: Sequence[int] = (), failfast: bool = False,
                 max_connect_attempts: int | None = None, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor
            reactor = global_reactor
        self.reactor = reactor
        self.from_zone = from_zone          # lower case, no trailing dot; b"" is the root
        self.ignored = tuple(ignored)
        self.proxies = tuple(proxies)
        self.policy = policy
        self.max_fails = max_fails
        self.force_tcp = force_tcp
        self.prefer_udp = prefer_udp
        self.max_concurrent = max_concurrent
        self.limit_error = f"concurrent queries exceeded maximum {concurrent_text}"
        self.next_rcodes = frozenset(next_rcodes)
        self.next_on_nodata = next_on_nodata
        self.failover_rcodes = frozenset(failover_rcodes)
        self.failfast = failfast
        self.max_connect_attempts = (2 * len(self.proxies) if max_connect_attempts is None
                                     else max_connect_attempts)
        #: Set when another `forward` of the block follows this one: `next` only passes a
        #: query on to a `forward`, as CoreDNS.
        self.next_is_forward = False
        #: Queries in flight (counted only with max_concurrent).
        self.concurrent = 0
        self.spray = Random()

    # -- which names ----------------------------------------------------------------------

    def match(self, lname: bytes) -> bool:
        """The name is FROM or below it, and not in `except` (FROM itself always is)."""
        zone = self.from_zone
        if not _in(lname, zone):
            return False
        if lname == zone:
            return True
        for ignored in self.ignored:
            if _in(lname, ignored):
                return False
        return True

    # -- the step -------------------------------------------------------------------------

    def serve(self, request: Request, next: Next) -> Result:
        if not self.match(request.lname):
            return next(request)
        if self.max_concurrent > 0:
            if self.concurrent >= self.max_concurrent:
                metrics.MAX_CONCURRENT_REJECTS.inc()
                return Reply(REFUSED, error=self.limit_error, plugin="forward")
            self.concurrent += 1
            try:
                result = _Forwarding(self, request, next).step()
            except BaseException:
                self.concurrent -= 1        # a bug raised at once: the slot is free again
                raise
            if isinstance(result, defer.Deferred):
                return result.addBoth(self._done)
            self.concurrent -= 1
            return result
        return _Forwarding(self, request, next).step()

    def _done(self, result: Any) -> Any:
        self.concurrent -= 1
        return result

    def stop(self) -> None:
        for proxy in self.proxies:
            proxy.stop()


def _in(name: bytes, zone: bytes) -> bool:
    if not zone or name == zone:
        return True
    return name.endswith(zone) and name[-len(zone) - 1:-len(zone)] == b"."


class _Forwarding:
    """One query's walk over the upstreams (the loop of ``ServeDNS``)."""

    __slots__ = ("fwd", "request", "next", "order", "i", "fails", "failovers", "attempts",
                 "deadline", "error", "question", "wanted", "sending")

    def __init__(self, fwd: ForwardHandler, request: Request, next: Next) -> None:
        self.fwd = fwd
        self.request = request
        self.next = next
        self.order = fwd.policy.order(fwd.proxies)
        self.i = 0
        self.fails = 0
        self.failovers = 0
        self.attempts = 0
        self.deadline = time.monotonic() + DEADLINE
        self.error: str | None = None
        self.question = question_wire(request)
        self.wanted = asked(self.question)
        #: True while an exchange is being started: a failure seen then is synchronous.
        self.sending = False

    def step(self) -> Result:
        fwd = self.fwd
        order = self.order
        n = len(fwd.proxies)
        cap = fwd.max_connect_attempts
        while time.monotonic() < self.deadline and (cap == 0 or self.attempts < cap):
            if self.i >= len(order):
                self.i = 0
                self.fails = 0
            proxy = order[self.i]
            self.i += 1
            if proxy.down(fwd.max_fails):
                self.fails += 1
                if self.fails < n:
                    continue
                metrics.HEALTHCHECK_BROKEN.inc()
                if fwd.failfast:
                    break
                proxy = fwd.spray.pick(fwd.proxies)
            return self._exchange(proxy, self._proto())
        return self._failed_all()

    def _proto(self) -> str:
        fwd = self.fwd
        if fwd.force_tcp:
            return "tcp"
        if fwd.prefer_udp:
            return "udp"
        return "udp" if self.request.udp else "tcp"

    def _exchange(self, proxy: Proxy, proto: str) -> defer.Deferred[Reply]:
        sent = proxy.connect(self.request, self.question, proto)
        self.sending = True
        try:
            return sent.addCallbacks(self._answered, self._failed,
                                     callbackArgs=(proxy, proto), errbackArgs=(proxy, proto))
        finally:
            self.sending = False

    def _failed(self, failure: Failure, proxy: Proxy, proto: str) -> Any:
        exc = failure.value
        if not isinstance(exc, UpstreamError):
            return failure                                 # a bug: the server says so
        if exc.cached_closed:
            return self._exchange(proxy, proto)            # a stale connection: again
        self.error = str(exc)
        fwd = self.fwd
        if fwd.max_fails != 0:
            proxy.healthcheck()
        cap = fwd.max_connect_attempts
        if cap > 0:
            self.attempts += 1
            if self.attempts >= cap:
                return self._failed_all()
        if self.fails < len(fwd.proxies):
            return self._retry()
        return self._failed_all()

    def _retry(self) -> Result:
        """The next try after a failed exchange. A failure that came at once (no socket
        to be had) waits for the reactor's next turn: with ``max_connect_attempts 0``
        such failures would otherwise recurse until the deadline, holding the reactor
        and growing the stack."""
        if not self.sending:
            return self.step()
        later: defer.Deferred[Any] = defer.Deferred()
        self.fwd.reactor.callLater(0, later.callback, None)
        return later.addCallback(lambda _: self.step())

    def _answered(self, answer: Answer, proxy: Proxy, proto: str) -> Result:
        fwd = self.fwd
        if answer.truncated and proto == "udp" and fwd.prefer_udp and not fwd.force_tcp:
            return self._exchange(proxy, "tcp")            # prefer_udp: retry over TCP
        if not matches(answer, self.wanted):
            return Reply(FORMERR, plugin="forward")
        self.error = None               # CoreDNS keeps only the last exchange's error
        rcode = answer.rcode
        if rcode in fwd.failover_rcodes:
            self.failovers += 1
            if self.failovers < len(fwd.proxies):
                return self.step()
        if fwd.next_is_forward:
            if rcode in fwd.next_rcodes:
                return self.next(self.request)
            if fwd.next_on_nodata and rcode == NOERROR and not answer.answers:
                return self.next(self.request)
        return self._reply(answer)

    def _reply(self, answer: Answer) -> Reply:
        reply = Reply(answer.rcode, bool(answer.flags3 & 0x04), answer.answers,
                      answer.authority, answer.additional, flags=answer.flags4 & (RA | AD),
                      plugin="forward")
        if answer.truncated:
            # The upstream's TC passes to the client (which then asks over TCP).
            wire = render(self.request, reply.rcode, reply.aa, reply.answers,
                          reply.authority, reply.additional, reply.flags)
            reply.wire = wire[:2] + bytes((wire[2] | _TC,)) + wire[3:]
        return reply

    def _failed_all(self) -> Reply:
        if self.error is not None:
            return Reply(SERVFAIL, error=self.error, plugin="forward")
        return Reply(SERVFAIL, error=NO_HEALTHY, plugin="forward")
