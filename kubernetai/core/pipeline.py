"""One server block's plugins as one pipeline: handlers in ORDER, the resolvers as a chain.

:class:`BlockPipeline` sorts what the block's directives contributed by
:func:`~kubernetai.core.plugin.position` (Corefile order breaking ties), joins every
resolver into one :class:`BlockChain` (a Twisted ``ResolverChain``) standing where the
first of them stands, and binds each handler to the one after it. A query enters at the
first handler; the chain's answer comes back up through the handlers before it; a name
the chain passes on (a ``DomainError``: ``fallthrough``, or a name outside every stanza's
zones) goes on to the handlers after it; past the last, the answer is CoreDNS's
SERVFAIL ``plugin/NAME: no next plugin found``.

The chain maps the resolvers' exception contract (:mod:`kubernetai.core.negative`) onto
replies, and records who answered: an answer may be kept by the answer cache only if the
resolver that produced it says so (a ``cacheable`` attribute set true).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from twisted.internet import defer
from twisted.internet.interfaces import IResolver
from twisted.names import dns
from twisted.names import error as dnserror
from twisted.names.resolve import ResolverChain
from twisted.python.failure import Failure

from kubernetai.core.codec import NOERROR, NXDOMAIN, REFUSED, SERVFAIL
from kubernetai.core.negative import AuthoritativeNameError, FallThrough, Refused, ServerFailure
from kubernetai.core.plugin import EARLY_TRANSPARENT, Handler, Next, Result
from kubernetai.core.request import Reply, Request, context_query

__all__ = ["BlockChain", "ChainHandler", "BlockPipeline", "Stage"]

def _consumed(failure: Failure) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Stage:
    """What one directive contributed: a handler or a resolver, and where it acts."""

    name: str
    position: float
    index: int            # the directive's place in the Corefile (ties keep that order)
    handler: Handler | None = None
    resolver: IResolver | None = None
    # Added by the server, not written in the Corefile (the answer cache): it does not
    # name the end of the pipeline in "plugin/NAME: no next plugin found".
    implicit: bool = False


class BlockChain(ResolverChain):
    """The block's resolvers, asked in order until one answers or fails with more than a
    ``DomainError`` (as a ``ResolverChain``); it also notes, on the query's request, when
    the one that answered did not promise a cacheable answer."""

    def __init__(self, resolvers: Sequence[IResolver]) -> None:
        super().__init__(list(resolvers))

    def query(self, query: dns.Query, timeout: Any = None) -> defer.Deferred[Any]:
        return self._ask(query, timeout, 0)

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> defer.Deferred[Any]:
        return self._ask(dns.Query(name, type, cls), timeout, 0)

    def _ask(self, query: dns.Query, timeout: Any, index: int) -> defer.Deferred[Any]:
        resolvers = self.resolvers
        last = len(resolvers) - 1
        while index <= last:
            resolver = resolvers[index]
            try:
                asked = resolver.query(query, timeout)
            except Exception:
                asked = defer.fail()
            if not asked.called or asked.paused:
                return asked.addCallbacks(self._answered, self._failed,
                                          callbackArgs=(query, resolver),
                                          errbackArgs=(query, timeout, index))
            result = asked.result
            if isinstance(result, Failure) and result.check(dnserror.DomainError):
                if index == last:
                    return asked
                asked.addErrback(_consumed)
                index += 1
                continue
            _produced(query, resolver)
            return asked
        return defer.fail(dnserror.DomainError())

    def _answered(self, result: Any, query: dns.Query, resolver: IResolver) -> Any:
        _produced(query, resolver)
        return result

    def _failed(self, failure: Failure, query: dns.Query, timeout: Any,
                index: int) -> Any:
        if failure.check(dnserror.DomainError):
            if index + 1 < len(self.resolvers):
                return self._ask(query, timeout, index + 1)
            return failure
        _produced(query, self.resolvers[index])
        return failure


def _produced(query: dns.Query, resolver: IResolver) -> None:
    """``resolver`` answered ``query``: its request may be cached only if it says so."""
    request = getattr(query, "request", None)
    if request is not None:
        if not getattr(resolver, "cacheable", False):
            request.nocache = True
        if not getattr(resolver, "renewable", False):
            request.renewable = False


class ChainHandler:
    """The pipeline's step that asks the block's resolvers, and the rcode policy for what
    they answer (the resolver contract of :mod:`kubernetai.core.negative`)."""

    def __init__(self, chain: BlockChain, name: str, *, followed: bool) -> None:
        self.chain = chain
        self.name = name
        # Handlers follow the chain: a name it passes on goes to them.
        self.followed = followed
        # One resolver (the usual block): asked directly, the chain's loop saved. Its
        # answers are marked uncacheable up front unless it promises otherwise; a name it
        # passes on is answered by a handler, whose reply carries its own permission.
        only = chain.resolvers[0] if len(chain.resolvers) == 1 else None
        self._only = only
        self._only_cacheable = bool(getattr(only, "cacheable", False))
        self._only_renewable = bool(getattr(only, "renewable", False))

    def serve(self, request: Request, next: Next) -> Result:
        query = context_query(request.qname, request.qtype, request.qclass,
                              request=request, depth=request.depth, upstream=request.server)
        only = self._only
        if only is not None:
            if not self._only_cacheable:
                request.nocache = True
            if not self._only_renewable:
                request.renewable = False
            try:
                asked = only.query(query)
            except Exception:
                asked = defer.fail()
        else:
            asked = self.chain.query(query)
        if asked.called and not asked.paused:
            result = asked.result
            if isinstance(result, Failure):
                asked.addErrback(_consumed)
                return self.failed(result, request, next)
            return self.resolved(result, request)
        return asked.addCallbacks(self.resolved, self.failed, callbackArgs=(request,),
                                  errbackArgs=(request, next))

    @staticmethod
    def resolved(result: Any, request: Request) -> Reply:
        answers, authority, additional = result
        aa = False
        for rr in answers:
            if rr.auth:
                aa = True
                break
        else:
            for rr in authority:
                if rr.auth:
                    aa = True
                    break
        deps = request.deps
        return Reply(NOERROR, aa, answers, authority, additional,
                     cache=None if request.nocache else (tuple(deps) if deps else ()),
                     renewable=request.renewable)

    def failed(self, failure: Failure, request: Request, next: Next) -> Result:
        exc = failure.value
        if isinstance(exc, AuthoritativeNameError):
            return Reply(NXDOMAIN, True, (), exc.authority, cache=_cacheable(request),
                         renewable=request.renewable)
        if isinstance(exc, FallThrough):
            if self.followed:
                return next(request)
            return Reply(SERVFAIL, error=exc.message)
        if isinstance(exc, ServerFailure):
            return Reply(SERVFAIL, bool(exc.authority), (), exc.authority, error=exc.message)
        if isinstance(exc, (Refused, dnserror.DNSQueryRefusedError)):
            return Reply(REFUSED)
        if isinstance(exc, dnserror.DNSServerError):
            return Reply(SERVFAIL)                   # an upstream's SERVFAIL, not NXDOMAIN
        if isinstance(exc, dnserror.DomainError):
            if self.followed:
                return next(request)
            return Reply(NXDOMAIN)                   # stock DNSServerFactory behaviour
        if isinstance(exc, dnserror.AuthoritativeDomainError):
            return Reply(NXDOMAIN)
        return failure.raiseException()              # a bug: the server answers SERVFAIL


def _cacheable(request: Request) -> tuple[tuple[Any, int], ...] | None:
    if request.nocache:
        return None
    deps = request.deps
    return tuple(deps) if deps else ()


def _bind(serve: Callable[[Request, Next], Result], following: Next) -> Next:
    """``serve`` with its next step bound: what the step before it calls as ``next``."""
    def step(request: Request) -> Result:
        return serve(request, following)
    return step


def _pass_on(request: Request, next: Next) -> Result:
    return next(request)


class _NoNext:
    """Past the last handler: CoreDNS's ``plugin.NextOrFailure`` with no next."""

    __slots__ = ("error",)

    def __init__(self, name: str) -> None:
        self.error = f"plugin/{name}: no next plugin found"

    def __call__(self, request: Request) -> Reply:
        return Reply(SERVFAIL, error=self.error)


class BlockPipeline:
    """A server block's plugins, bound together; see the module docstring.

    It is also an ``IResolver`` (``query`` only) over the block's chain, which is what an
    ExternalName chase into this block asks, as CoreDNS's ``upstream`` re-enters the
    server.
    """

    def __init__(self, stages: Sequence[Stage], *, default_name: str = "kubernetai",
                 wrap: Callable[[Handler], Handler] | None = None) -> None:
        """``wrap``, if given, replaces every handler (the chain's step included) by what
        it returns before they are bound: ``explain`` builds a traced copy of a block this
        way, so the pipeline the server runs carries no tracing at all."""
        ordered = sorted(stages, key=lambda s: (s.position, s.index))
        # What the pipeline was built from, in order (a traced copy is built from them).
        self.stages: tuple[Stage, ...] = tuple(ordered)
        resolvers = [s for s in ordered if s.resolver is not None]
        handlers: list[Handler] = []
        self.chain: BlockChain | None = None
        chain_at = len(ordered)
        if resolvers:
            chain_at = ordered.index(resolvers[0])
            self.chain = BlockChain([s.resolver for s in resolvers])  # type: ignore[misc]
        before = [s.handler for s in ordered[:chain_at] if s.handler is not None]
        after = [s.handler for s in ordered[chain_at:] if s.handler is not None]
        handlers = list(before)
        if self.chain is not None:
            handlers.append(ChainHandler(self.chain, resolvers[-1].name, followed=bool(after)))
        handlers += after
        if wrap is not None:
            handlers = [wrap(handler) for handler in handlers]
        self.handlers: tuple[Handler, ...] = tuple(handlers)
        named = [s.name for s in ordered if not s.implicit]
        last = named[-1] if named else default_name
        following: Next = _NoNext(last)
        for handler in reversed(handlers[1:]):
            following = _bind(handler.serve, following)
        # The server calls entry(request, entry_next): the first step costs no extra call.
        self.entry: Callable[[Request, Next], Result] = (
            handlers[0].serve if handlers else _pass_on)
        self.entry_next: Next = following
        # The early answer (a cache hit) is the block's when nothing before the handler
        # that gives it would act on it: handlers that say so are passed over.
        lead = 0
        while lead + 1 < len(handlers) and getattr(handlers[lead], EARLY_TRANSPARENT, False):
            lead += 1
        self.early: Callable[[Request], bytes | None] | None = (
            getattr(handlers[lead], "early", None) if handlers else None)
        if self.early is not None and lead == 0:
            self.entry = handlers[0].serve_after_early  # type: ignore[attr-defined]

    def serve(self, request: Request) -> Result:
        """Run the pipeline for ``request``."""
        if self.early is not None:
            wire = self.early(request)
            if wire is not None:
                return Reply.encoded(wire)
        return self.entry(request, self.entry_next)

    def query(self, query: dns.Query, timeout: Any = None) -> defer.Deferred[Any]:
        if self.chain is None:
            return defer.fail(FallThrough())
        return self.chain.query(query, timeout)
