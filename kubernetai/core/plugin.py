"""The plugin contract: the handler a query passes through, and the one order they run in.

A server block's directives become a pipeline, as CoreDNS's plugin chain: each handler is
called with the request and the next handler, and may answer (return a
:class:`~kubernetai.core.request.Reply`), pass on (return ``next(request)``), or wrap what
comes back. Either may be a Deferred: a handler that must wait (an upstream exchange)
returns one, and one that answers from memory returns the reply itself, so the common path
costs no Deferred. :func:`then` applies a function to either.

The plugins that answer names (each ``kubernetai`` stanza; later ``hosts``, ``forward``)
are Twisted Names ``IResolver``s instead; the block joins them, in this order, into one
``ResolverChain`` that is a handler of the pipeline (:mod:`kubernetai.core.pipeline`).

The order does not come from the Corefile but from :data:`ORDER`, CoreDNS's ``plugin.cfg``
(1.14.7: ``rewrite``, ``autopath``, ``acl``, then ``cache``) with ``kubernetai`` added right
after ``kubernetes``, as the Go kubernetai is built.
A directive not in it (a third party's) names the plugin it follows in its ``after``
attribute. Within one directive name, Corefile order is kept: several ``kubernetai``
stanzas are asked in the order written.
"""

from __future__ import annotations

from typing import Callable, Protocol, Union, runtime_checkable

from twisted.internet import defer

from kubernetai.core.request import Reply, Request

__all__ = ["ORDER", "Handler", "EarlyHandler", "EARLY_TRANSPARENT", "EARLY_FILTER", "Next",
           "Result", "then", "position", "early_answer"]

#: CoreDNS's plugin.cfg, in the order a query meets the plugins.
ORDER: tuple[str, ...] = (
    "root", "metadata", "geoip", "cancel", "proxyproto", "quic", "grpc_server", "https",
    "https3", "timeouts", "multisocket", "reload", "nsid", "bufsize", "bind", "debug",
    "trace", "ready", "health", "pprof", "shed", "prometheus", "errors", "log", "dnstap",
    "local", "dns64", "any", "chaos", "loadbalance", "tsig", "rewrite", "autopath", "acl",
    "cache", "header", "dnssec", "tls", "minimal", "template", "transfer", "hosts",
    "route53", "azure", "clouddns", "k8s_external", "kubernetes", "kubernetai", "file",
    "auto", "secondary", "etcd", "loop", "forward", "grpc", "erratic", "whoami", "on",
    "sign", "view", "nomad",
)
_INDEX = {name: index for index, name in enumerate(ORDER)}

Result = Union[Reply, "defer.Deferred[Reply]"]
Next = Callable[[Request], Result]


@runtime_checkable
class Handler(Protocol):
    """One plugin's step of the pipeline."""

    #: the directive's name; errors of the pipeline's end name it (``plugin/NAME: ...``).
    name: str

    def serve(self, request: Request, next: Next) -> Result:
        """Answer ``request``, or return ``next(request)`` (perhaps wrapped)."""


class EarlyHandler(Handler, Protocol):
    """A handler that may answer from the parsed question alone (the answer cache).

    When it is the first step of a pipeline, the server asks ``early`` before it fills in
    the rest of the request's context: nothing before it could have seen the request, so
    the answer is the same, and a hit costs no more than the lookup.
    """

    def early(self, request: Request) -> bytes | None:
        """The encoded response for ``request``, or None to go through ``serve``."""

    def serve_after_early(self, request: Request, next: Next) -> Result:
        """``serve``, called when ``early`` has just returned None for this request."""


#: A handler with this attribute set true does nothing for an answer given early (a cache
#: hit carries no plugin error, so `errors` has nothing to write or recover): when it
#: stands before the handler that answers early, the server still answers early.
EARLY_TRANSPARENT = "early_transparent"

#: A handler with this method, ``filter_early(request, wire) -> bytes | None``, changes an
#: answer given early the way its ``serve`` would change it (``loadbalance`` shuffles a
#: cache hit), or returns None to send the request the whole way instead (``any`` for an
#: ANY question): when it stands before the handler that answers early, the early answer
#: passes through it.
EARLY_FILTER = "filter_early"

Early = Callable[[Request], "bytes | None"]


def early_answer(handlers: "tuple[Handler, ...] | list[Handler]", start: int = 0
                 ) -> Early | None:
    """The early answer of the steps from ``handlers[start]`` on: the first one with an
    ``early`` method, reached past handlers that are transparent to an early answer or
    filter it (nearest the answer first, as the reply comes back up); None if a handler
    that acts otherwise on every answer stands before it."""
    filters = []
    for handler in handlers[start:]:
        early = getattr(handler, "early", None)
        if early is not None:
            break
        if getattr(handler, EARLY_TRANSPARENT, False):
            continue
        filtering = getattr(handler, EARLY_FILTER, None)
        if filtering is None:
            return None
        filters.append(filtering)
    else:
        return None
    if not filters:
        return early
    filters.reverse()

    def filtered(request: Request) -> bytes | None:
        wire = early(request)
        for filtering in filters:
            if wire is None:
                return None
            wire = filtering(request, wire)
        return wire
    return filtered


def then(result: Result, function: Callable[[Reply], Reply]) -> Result:
    """``function`` applied to a reply, now if there is one, or when the Deferred fires."""
    if isinstance(result, defer.Deferred):
        return result.addCallback(function)
    return function(result)


def position(name: str, after: str | None = None) -> float:
    """Where a directive acts: its index in :data:`ORDER`, or just after ``after``'s.

    Raises KeyError for a name that is in neither (the registry reports it).
    """
    if name in _INDEX:
        return float(_INDEX[name])
    if after is None:
        raise KeyError(name)
    return _INDEX[after] + 0.5
