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

A block's only resolver may also have ``resolve(query)``: ``query`` answered without a
Deferred when the answer is at hand (the records tuple, or the exception ``query``'s
Deferred would fail with), else the Deferred. The chain step then asks that instead of
``query``: an uncached answer costs no Deferred, callback or ``Failure``.
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
from kubernetai.core.negative import (
    AuthoritativeEmpty,
    AuthoritativeNameError,
    FallThrough,
    Refused,
    ServerFailure,
)
from kubernetai.core.plugin import Handler, Next, Result, early_answer
from kubernetai.core.request import Reply, Request, context_query
from kubernetai.core.sources import Deps

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

    def __init__(self, resolvers: Sequence[IResolver],
                 names: Sequence[str] | None = None) -> None:
        super().__init__(list(resolvers))
        # The directive of each resolver: the `plugin` label of what it answers.
        self.names: list[str | None] = list(names) if names is not None else [
            None] * len(self.resolvers)

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
                                          callbackArgs=(query, index),
                                          errbackArgs=(query, timeout, index))
            result = asked.result
            if isinstance(result, Failure) and result.check(dnserror.DomainError):
                if index == last:
                    return asked
                asked.addErrback(_consumed)
                index += 1
                continue
            _produced(query, resolver, self.names[index])
            return asked
        return defer.fail(dnserror.DomainError())

    def _answered(self, result: Any, query: dns.Query, index: int) -> Any:
        _produced(query, self.resolvers[index], self.names[index])
        return result

    def _failed(self, failure: Failure, query: dns.Query, timeout: Any,
                index: int) -> Any:
        if failure.check(dnserror.DomainError):
            if index + 1 < len(self.resolvers):
                return self._ask(query, timeout, index + 1)
            return failure
        _produced(query, self.resolvers[index], self.names[index])
        return failure


def _produced(query: dns.Query, resolver: IResolver, name: str | None) -> None:
    """``resolver`` (of directive ``name``) answered ``query``: its request may be cached
    only if it says so, and the answer is that plugin's."""
    request = getattr(query, "request", None)
    if request is not None:
        request.answered = name
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
        self._only_resolve: Callable[[Any], Any] | None = getattr(only, "resolve", None)

    def serve(self, request: Request, next: Next) -> Result:
        query = context_query(request.qname, request.qtype, request.qclass,
                              request=request, depth=request.depth, upstream=request.server)
        only = self._only
        if only is not None:
            if not self._only_cacheable:
                request.nocache = True
            if not self._only_renewable:
                request.renewable = False
            request.answered = self.name
            resolve = self._only_resolve
            if resolve is not None:
                try:
                    asked = resolve(query)
                except Exception:
                    return self.failed(Failure(), request, next)
                if asked.__class__ is tuple:
                    return self.resolved(asked, request)
                if isinstance(asked, Exception):
                    return self.negative(asked, request, next)
            else:
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
            else:
                aa = answers.__class__ is AuthoritativeEmpty
        deps = request.deps
        return Reply(NOERROR, aa, answers, authority, additional,
                     cache=None if request.nocache else (tuple(deps) if deps else ()),
                     renewable=request.renewable, plugin=getattr(request, "answered", None))

    def failed(self, failure: Failure, request: Request, next: Next) -> Result:
        return self.negative(failure.value, request, next, failure)

    def negative(self, exc: BaseException, request: Request, next: Next,
                 failure: Failure | None = None) -> Result:
        """The reply for a resolver's failure ``exc`` (``failure``, if it came as one)."""
        if isinstance(exc, AuthoritativeNameError):
            return Reply(NXDOMAIN, True, (), exc.authority, cache=_cacheable(request),
                         renewable=request.renewable,
                         plugin=getattr(request, "answered", None))
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
        if failure is None:
            raise exc                                # a bug: the server answers SERVFAIL
        return failure.raiseException()


def _as_lookup(reply: Reply) -> Any:
    """A reply as an ``IResolver`` answer (records), or the failure its rcode means."""
    if reply.rcode == NOERROR:
        return list(reply.answers), list(reply.authority), list(reply.additional)
    if reply.rcode == NXDOMAIN:
        raise dnserror.DNSNameError()
    if reply.rcode == REFUSED:
        raise Refused()
    raise ServerFailure(reply.error or "")


def _cacheable(request: Request) -> Deps | None:
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
            self.chain = BlockChain([s.resolver for s in resolvers],  # type: ignore[misc]
                                    [s.name for s in resolvers])
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
        # What a name the chain passes on meets next (forward), for lookups that enter
        # at the chain (:meth:`query`): None when nothing follows it.
        self.past_chain: Next | None = None
        chain_index = len(before) if self.chain is not None else -1
        for index in range(len(handlers) - 1, 0, -1):
            if index == chain_index and after:
                self.past_chain = following
            following = _bind(handlers[index].serve, following)
        if chain_index == 0 and after:
            self.past_chain = following
        # The server calls entry(request, entry_next): the first step costs no extra call.
        self.entry: Callable[[Request, Next], Result] = (
            handlers[0].serve if handlers else _pass_on)
        self.entry_next: Next = following
        # The early answer (a cache hit) is the block's when nothing before the handler
        # that gives it would act on it otherwise than it says it would (transparent, or
        # a filter of the early answer).
        self.early: Callable[[Request], bytes | None] | None = early_answer(handlers)
        if self.early is not None and getattr(handlers[0], "early", None) is not None:
            self.entry = handlers[0].serve_after_early  # type: ignore[attr-defined]

    def serve(self, request: Request) -> Result:
        """Run the pipeline for ``request``."""
        if self.early is not None:
            wire = self.early(request)
            if wire is not None:
                return Reply.encoded(wire)
        return self.entry(request, self.entry_next)

    def query(self, query: dns.Query, timeout: Any = None) -> defer.Deferred[Any]:
        """A lookup from inside the server (an ExternalName's target): the block's chain,
        then, for a name the chain passes on, the handlers after it (``forward``), as
        CoreDNS's ``upstream.Lookup`` re-enters the server."""
        if self.chain is None:
            return defer.fail(FallThrough())
        asked = self.chain.query(query, timeout)
        if self.past_chain is None or getattr(query, "request", None) is None:
            return asked
        return asked.addErrback(self._past_chain, query)

    def _past_chain(self, failure: Failure, query: Any) -> Any:
        failure.trap(FallThrough, dnserror.DomainError)
        if isinstance(failure.value, dnserror.AuthoritativeDomainError):
            return failure
        request: Request = query.request
        # What comes from past the chain (an upstream's answer) is not the clusters'
        # alone: the answer that asked for it is not kept by the answer memo.
        request.nocache = True
        request.renewable = False
        sub = request.copy()
        name = query.name.name
        if name.endswith(b"."):
            name = name[:-1]         # a request's name has no final dot
        sub.qname = name
        sub.lname = name.lower()
        sub.labels = name.split(b".") if name else []
        sub.qtype = query.type
        sub.qclass = query.cls
        sub.depth = getattr(query, "depth", request.depth)
        sub.udp = False
        sub.limit = 65535
        sub.observers = None
        assert self.past_chain is not None
        result = self.past_chain(sub)
        if isinstance(result, defer.Deferred):
            return result.addCallback(_as_lookup)
        return _as_lookup(result)
