"""The `prometheus` step: counts every answer of its server block, as CoreDNS's metrics
handler does (``coredns_dns_requests_total`` and the rest, :class:`DNSRequests`).

It stands near the front of the pipeline (``prometheus`` in ORDER), so it sees each reply
of the block on its way out, the answer cache's included, and counts it once: the
request's server label and family (from the socket it came in on), its zone, transport,
type, DO bit and size, and the response's rcode, size, the time it took and the plugin
that wrote it.

The answer cache answers its hits before the server fills in the request (``early``)
when it is a block's first step; with `prometheus` in front that would be lost, so this
step answers early itself when the cache comes right after it: it asks the cache's
``early`` and counts what that sends. A hit then costs the lookup and one count.

Which plugin wrote a reply, CoreDNS's ``plugin`` label, is read from the reply (see
:func:`writer`): a cache hit is the cache's; an error rcode with no records is the
server's (a plugin returning SERVFAIL, REFUSED, FORMERR or NOTIMP without writing leaves
the writing to the server in CoreDNS: the label is empty); an answer that may be cached is
the resolver chain's (``kubernetai``); any other is the first handler after the chain's
(``whoami``), or the chain's if none follows it; in a block without resolvers, the last
handler's. A ``plugin`` field on the reply, set by whoever makes it, would say this
directly; until then the reply's shape does.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any, Callable, Sequence

from twisted.internet import defer

from kubernetai.core.codec import FORMERR, NOTIMP, REFUSED, SERVFAIL, render_reply
from kubernetai.core.dnsserver import client_source
from kubernetai.core.metrics import FIRST_BUCKET, TIME_BUCKETS, DNSRequests
from kubernetai.core.pipeline import ChainHandler, Stage
from kubernetai.core.plugin import (
    EARLY_FILTER,
    EARLY_TRANSPARENT,
    Next,
    Result,
    early_answer,
    position,
)
from kubernetai.core.request import Reply, Request

__all__ = ["MetricsHandler", "writer"]

_perf_counter = time.perf_counter
_SERVER_WRITES = frozenset({SERVFAIL, REFUSED, FORMERR, NOTIMP})
_HERE, _CACHE = position("prometheus"), position("cache")


class _Layout:
    """What the step knows of the pipeline it stands in, learned from a request that
    passes: its next step's ``early`` (when this step is the first), and the names
    :func:`writer` uses."""

    __slots__ = ("block", "early", "chain", "after")

    def __init__(self, block: Any, me: Any) -> None:
        self.block = block
        handlers = tuple(getattr(block, "handlers", ()))
        self.early: Callable[[Request], bytes | None] | None = None
        if len(handlers) > 1 and handlers[0] is me:
            # Nothing that acts on an early answer otherwise than it says stands between
            # this step and the one that gives it: that early answer is the block's.
            self.early = early_answer(handlers, 1)
        chain_at = next((i for i, h in enumerate(handlers) if isinstance(h, ChainHandler)),
                        None)
        if chain_at is None:
            # No resolver: what reaches the end of the pipeline answers (whoami).
            self.chain, self.after = "", (handlers[-1].name if handlers else "")
        else:
            following = handlers[chain_at + 1:]
            self.chain = handlers[chain_at].name
            self.after = following[0].name if following else ""


_UNKNOWN = _Layout(None, None)


def writer(reply: Reply, layout: _Layout) -> str:
    """CoreDNS's ``plugin`` label for ``reply``: the plugin that wrote it (see the module
    docstring)."""
    records = reply.answers or reply.authority or reply.additional
    if reply.wire is not None and reply.cache is None and not records:
        return "cache"                           # an encoded answer: a cache hit
    if reply.rcode in _SERVER_WRITES and not records:
        return ""
    if reply.cache is not None:
        return layout.chain or layout.after
    return layout.after or layout.chain


class MetricsHandler:
    """One block's `prometheus` step."""

    name = "prometheus"

    def __init__(self, requests: DNSRequests,
                 stages: Callable[[], Sequence[Stage]] | None = None) -> None:
        """``stages``: the block's other stages, once they are all set up (to know if a
        handler stands between this step and the answer cache)."""
        self.requests = requests
        self._stages = stages
        self._layout = _UNKNOWN
        # The next step's early answer, when this step is the block's first and the next
        # one has one (the answer cache): learned from the first request served.
        self._early: Callable[[Request], bytes | None] | None = None

    # -- the early path: a cache hit answered before the request is filled in ----------

    @property
    def early(self) -> Callable[[Request], bytes | None] | None:
        """What the pipeline asks first when this step is its first (read as it is
        built): :meth:`answer_early`, unless a handler of the block that acts on every
        answer stands between this step and the answer cache (`log`; `errors` does not
        act on a cache hit): then there is no early answer, and no call per query to find
        that out."""
        if self._stages is not None:
            for stage in self._stages():
                if (stage.handler is not None and stage.handler is not self
                        and _HERE < stage.position < _CACHE
                        and not getattr(stage.handler, EARLY_TRANSPARENT, False)
                        and getattr(stage.handler, EARLY_FILTER, None) is None):
                    return None
        return self.answer_early

    def answer_early(self, request: Request) -> bytes | None:
        """The cache's early answer when the cache is the next step, counted."""
        early = self._early
        if early is None:
            return None
        started = _perf_counter()
        wire = early(request)
        if wire is not None:
            duration = _perf_counter() - started
            try:
                source = request.proto.metrics
            except AttributeError:
                return wire  # not a DNS socket of ours: nothing to count
            if not source[2]:
                source = client_source(source, request.addr)
            # DNSRequests.report, inlined: this is every cache hit's path.
            key = (source, request.zone, request.qtype, request.do, wire[3] & 0xF, "cache",
                   request.size, len(wire),
                   0 if duration <= FIRST_BUCKET else bisect_left(TIME_BUCKETS, duration))
            counted = self.requests.queries.get(key)
            if counted is None:
                self.requests.add(key, duration)
            else:
                counted[0] += 1
                counted[1] += duration
        return wire

    # -- the path of every other answer --------------------------------------------------

    def serve(self, request: Request, next: Next) -> Result:
        reply = next(request)
        if reply.__class__ is Reply or isinstance(reply, Reply):
            return self._done(reply, request)  # type: ignore[arg-type]
        if isinstance(reply, defer.Deferred):
            return reply.addCallback(self._done, request)
        return reply  # not a reply: the server answers SERVFAIL and counts it dropped

    def serve_after_early(self, request: Request, next: Next) -> Result:
        """:meth:`serve`, after :meth:`answer_early` found nothing (the cache, asked
        next, knows it missed). The first request tells this step what follows it."""
        if self._early is None and request.block is not self._layout.block:
            self._early = self._learn(request.block).early
        return self.serve(request, next)

    def _learn(self, block: Any) -> _Layout:
        if block is not self._layout.block:
            self._layout = _Layout(block, self)
        return self._layout

    def _done(self, reply: Reply, request: Request) -> Reply:
        source = getattr(request.proto, "metrics", None)
        if source is None:
            return reply  # not a query a DNS socket received (explain's): not counted
        if not source[2]:
            source = client_source(source, request.addr)
        wire = reply.wire
        if reply.plugin is not None:
            plugin = reply.plugin                 # the plugin that wrote it said so
        elif wire is not None and reply.cache is None and not (
                reply.answers or reply.authority or reply.additional):
            plugin = "cache"                      # writer()'s first case, the common one
        else:
            plugin = writer(reply, self._learn(request.block))  # before it is encoded
        if wire is None:
            # Encoded here to be measured; the server sends these bytes as they are.
            wire = reply.wire = render_reply(request, reply)
        duration = _perf_counter() - request.started
        # DNSRequests.report, inlined (as in answer_early).
        # A query answered with no response (acl's drop) counts as CoreDNS counts it:
        # NOERROR, no plugin, a response of 0 bytes.
        key = (source, request.zone, request.qtype, request.do,
               wire[3] & 0xF if wire else 0, plugin, request.size, len(wire),
               0 if duration <= FIRST_BUCKET else bisect_left(TIME_BUCKETS, duration))
        counted = self.requests.queries.get(key)
        if counted is None:
            self.requests.add(key, duration)
        else:
            counted[0] += 1
            counted[1] += duration
        return reply
