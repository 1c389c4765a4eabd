"""The `rewrite` step: the block's rewrite rules, applied in Corefile order.

As CoreDNS's ``Rewrite.ServeDNS``: each rule is tried in turn; one that applies may
change the question (name, type, class, EDNS0 options) and leaves response rules; a
``stop`` rule that applied ends the list. A name that is no longer a domain name is
answered SERVFAIL (``invalid name after rewrite: NAME``, logged by ``errors``).

The client's request is never changed: the steps after this one get a copy with the
rewritten question (:meth:`State.apply`), and what they record on it that the steps
before need (the answer's data sources and cacheability, response observers) is copied
back when they return. The reply goes through the response rules
(:func:`~kubernetai.plugins.rewrite.response.rewrite_reply`); its question is the one
the client sent, because the server writes the client's question bytes.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, cast

from kubernetai.core.codec import SERVFAIL
from kubernetai.core.plugin import Next, Result, then
from kubernetai.core.request import Reply, Request
from kubernetai.plugins.rewrite.response import rewrite_reply
from kubernetai.plugins.rewrite.state import STOP, State

__all__ = ["RewriteHandler"]


class RewriteHandler:
    name = "rewrite"

    def __init__(self, rules: Sequence[Any] = ()) -> None:
        self.rules: list[Any] = list(rules)

    def serve(self, request: Request, next: Next) -> Result:
        state = State(request)
        responses: list[Any] = []
        labels = None
        for rule in self.rules:
            left = rule.rewrite(state)
            if left is None:
                continue
            if state.renamed:
                labels = state.labels()
                if labels is None:
                    return Reply(SERVFAIL, error=f"invalid name after rewrite: {state.name}",
                                 plugin=self.name)
            responses.extend(left)
            if rule.mode == STOP:
                break
        if not state.changed():
            if not responses:
                return next(request)
            return then(next(request), _as_reply(
                lambda reply: rewrite_reply(reply, responses, request, request)))
        sub = state.apply(labels if state.renamed else None)

        def answered(reply: Reply) -> Result:
            # What the steps after recorded on the copy, the steps before read.
            request.deps = sub.deps
            request.nocache = sub.nocache
            request.renewable = sub.renewable
            request.observers = sub.observers
            return rewrite_reply(reply, responses, request, sub)
        return then(next(sub), _as_reply(answered))

    def filter_early(self, request: Request, wire: bytes) -> bytes | None:
        """A cache hit, answered early, stands when no rule applies to the question (the
        steps after this one saw it as it is); else the request goes the whole way."""
        state = State(request)
        for rule in self.rules:
            if rule.rewrite(state) is not None:
                return None
        return wire


def _as_reply(function: Callable[[Reply], Result]) -> Callable[[Reply], Reply]:
    """For :func:`then`: a function of the reply that may answer with a Deferred (a
    ``cname`` rule's lookup), which a Deferred's callback chain waits for."""
    return cast(Callable[[Reply], Reply], function)
