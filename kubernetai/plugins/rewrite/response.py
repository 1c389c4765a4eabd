"""What a rewrite does to the reply: CoreDNS's ``ResponseReverter``.

The rules that matched a query leave response rules behind (``answer auto``/``name``/
``value`` name mappings, ``ttl`` clamps, ``rcode`` swaps, ``cname`` target lookups).
They are applied as CoreDNS's reverter applies them: to every record of the authority,
answer and additional sections in that order, each record through the rules in the
reverse of the order they were collected; the message-level ``rcode`` rules once more
when the reply has no records. The records are copies: the resolvers' own (cached)
records are never changed.

The question needs no restoring: the server writes the question bytes the client sent
(the rewritten question only ever lived on the request copy the later steps saw).
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Iterator, Protocol, Sequence

from twisted.internet import defer
from twisted.logger import Logger
from twisted.names import dns
from twisted.names import error as dnserror
from twisted.python.failure import Failure

from kubernetai.core.codec import SERVFAIL, render
from kubernetai.core.negative import FallThrough, Refused, ServerFailure
from kubernetai.core.plugin import Result
from kubernetai.core.request import AD, RA, Reply, Request, context_query
from kubernetai.plugins.rewrite.matching import StringRewriter
from kubernetai.plugins.rewrite.names import labels_of, text_of

__all__ = ["Message", "ResponseRule", "NameResponse", "ValueResponse", "TTLResponse",
           "RcodeResponse", "CnameTargetResponse", "rewrite_reply"]

log = Logger()

_TYPE_OPT = 41

#: The record types whose target name ``answer value`` (and ``answer auto``) rewrites,
#: and the attribute of Twisted's record that holds it (CoreDNS's
#: ``getRecordValueForRewrite``).
_VALUE_FIELDS = {dns.SRV: "target", dns.MX: "name", dns.CNAME: "name", dns.NS: "name",
                 dns.DNAME: "name", dns.NAPTR: "replacement", dns.SOA: "mname",
                 dns.PTR: "name"}


class InvalidName(ValueError):
    """A response rule produced text that is not a domain name."""


def _name_bytes(text: str) -> bytes:
    labels = labels_of(text)
    if labels is None:
        raise InvalidName(text)
    return b".".join(labels)


class Message:
    """The reply being rewritten: its rcode and copies of its records."""

    __slots__ = ("rcode", "answers", "authority", "additional", "looked_up", "request")

    def __init__(self, reply: Reply, request: Request) -> None:
        self.rcode = reply.rcode
        self.answers = [_copy(rr) for rr in reply.answers]
        self.authority = [_copy(rr) for rr in reply.authority]
        self.additional = [_copy(rr) for rr in reply.additional if rr.type != _TYPE_OPT]
        # A cname rule asked the server about another name: what it got depends on more
        # than this question, so the reply is not kept by the answer memo.
        self.looked_up = False
        self.request = request


def _copy(rr: dns.RRHeader) -> dns.RRHeader:
    twin = copy.copy(rr)
    twin.payload = copy.copy(rr.payload)
    return twin


class ResponseRule(Protocol):
    def apply(self, message: Message, rr: dns.RRHeader | None) -> "defer.Deferred[None] | None":
        """Rewrite ``rr`` (None: the message itself, for a reply without records); a
        Deferred when the rule must first ask something (it completes the message)."""


class _Renaming:
    """A response rule that puts a name of each record through a string rewriter."""

    __slots__ = ("rewriter",)
    message_level = False

    def __init__(self, rewriter: StringRewriter) -> None:
        self.rewriter = rewriter

    def _renamed(self, text: str) -> dns.Name | None:
        """``text`` rewritten, as a name; None when the rewriter leaves it as it is."""
        new = self.rewriter.rewrite(text)
        return dns.Name(_name_bytes(new)) if new != text else None


class NameResponse(_Renaming):
    """The owner name of every record, through a string rewriter."""

    __slots__ = ()

    def apply(self, message: Message, rr: dns.RRHeader | None) -> None:
        if rr is None:
            return
        name = self._renamed(text_of(rr.name.name))
        if name is not None:
            rr.name = name


class ValueResponse(_Renaming):
    """The target name of SRV, MX, CNAME, NS, DNAME, NAPTR, SOA (primary server) and PTR
    records, through a string rewriter."""

    __slots__ = ()

    def apply(self, message: Message, rr: dns.RRHeader | None) -> None:
        if rr is None:
            return
        field = _VALUE_FIELDS.get(rr.type)
        if field is None:
            return
        value = getattr(rr.payload, field, None)
        if value is None:
            return
        text = text_of(value.name)
        if text == ".":
            return                            # CoreDNS skips an empty value
        name = self._renamed(text)
        if name is not None:
            setattr(rr.payload, field, name)


class TTLResponse:
    """``ttl``: every record's TTL clamped into [low, high]."""

    __slots__ = ("low", "high")
    message_level = False

    def __init__(self, low: int, high: int) -> None:
        self.low = low
        self.high = high

    def apply(self, message: Message, rr: dns.RRHeader | None) -> None:
        if rr is None:
            return
        if rr.ttl < self.low:
            rr.ttl = self.low
        elif rr.ttl > self.high:
            rr.ttl = self.high


class RcodeResponse:
    """``rcode``: the reply's rcode ``old`` becomes ``new`` (applied with each record, as
    CoreDNS applies it, and once for a reply without records)."""

    __slots__ = ("old", "new")
    message_level = True

    def __init__(self, old: int, new: int) -> None:
        self.old = old
        self.new = new

    def apply(self, message: Message, rr: dns.RRHeader | None) -> None:
        if message.rcode == self.old:
            message.rcode = self.new


class CnameTargetResponse:
    """``cname``: a CNAME whose target the rule matches gets the new target, and the
    records after it are replaced by what the server answers for that target (the
    question's type), as CoreDNS's ``upstream.Lookup``."""

    __slots__ = ("target_of",)
    message_level = False

    def __init__(self, target_of: Callable[[str], tuple[str, str]]) -> None:
        self.target_of = target_of

    def apply(self, message: Message, rr: dns.RRHeader | None) -> "defer.Deferred[None] | None":
        if rr is None or rr.type != dns.CNAME:
            return None
        payload: Any = rr.payload
        target = text_of(payload.name.name)
        old, new = self.target_of(target)
        if target != old:
            return None
        labels = labels_of(new)
        if labels is None:
            log.error("plugin/rewrite: upstream lookup failed: invalid name {name}", name=new)
            return None
        request = message.request
        server = getattr(request, "server", None)
        if server is None:
            return None
        name = b".".join(labels)
        query = context_query(name, request.qtype, dns.IN, request=request,
                              depth=request.depth + 1, upstream=server)
        try:
            asked: defer.Deferred[Any] = server.query(query)
        except Exception:
            asked = defer.fail()
        message.looked_up = True
        return asked.addCallbacks(_splice, _lookup_failed, callbackArgs=(message, old, name),
                                  errbackArgs=(message, old, name))


def _splice(result: Any, message: Message, old: str, name: bytes) -> None:
    """The CNAMEs up to the one that pointed at ``old`` (now pointing at ``name``), then
    the lookup's answers."""
    answers = result[0] if result else []
    kept = []
    for rr in message.answers:
        if rr.type == dns.CNAME:
            kept.append(rr)
            payload: Any = rr.payload
            if text_of(payload.name.name) == old:
                payload.name = dns.Name(name)
                break
    message.answers = kept + [_copy(rr) for rr in answers]


_NEGATIVE = (dnserror.DomainError, dnserror.DNSServerError, dnserror.DNSQueryRefusedError,
             FallThrough, Refused, ServerFailure)


def _lookup_failed(failure: Failure, message: Message, old: str, name: bytes) -> None:
    if failure.check(*_NEGATIVE):
        _splice(None, message, old, name)     # an answer without records (NXDOMAIN ...)
        return
    log.failure("plugin/rewrite: upstream lookup failed", failure)


def _rule_failed(failure: Failure) -> None:
    log.failure("plugin/rewrite: a response rule failed", failure)


def _steps(message: Message, rules: Sequence[ResponseRule]) -> Iterator["defer.Deferred[None]"]:
    """CoreDNS's ``ResponseReverter.WriteMsg`` loop; yields what a rule waits for."""
    backwards = list(reversed(rules))
    for section in ("authority", "answers", "additional"):
        for rr in list(getattr(message, section)):
            for rule in backwards:
                pending = rule.apply(message, rr)
                if pending is not None:
                    yield pending
    if not (message.authority or message.answers or message.additional):
        for rule in backwards:
            if getattr(rule, "message_level", False):
                rule.apply(message, None)


def _drive(steps: Iterator["defer.Deferred[None]"], finish: Callable[[], Reply]) -> Result:
    for pending in steps:
        if not pending.called or pending.paused:
            return pending.addCallback(lambda _: _drive(steps, finish))
        pending.addErrback(_rule_failed)
    return finish()


def decoded(reply: Reply) -> tuple[Reply, bool]:
    """A reply given as bytes, as records (and whether it was truncated)."""
    assert reply.wire
    message = dns.Message()
    message.fromStr(reply.wire)
    flags = (RA if message.recAv else 0) | (AD if message.authenticData else 0)
    records = Reply(message.rCode, bool(message.auth), message.answers, message.authority,
                    [rr for rr in message.additional if rr.type != _TYPE_OPT],
                    error=reply.error, cache=reply.cache, renewable=reply.renewable,
                    flags=flags, plugin=reply.plugin)
    records.reported = reply.reported
    return records, bool(message.trunc)


def rewrite_reply(reply: Reply, rules: Sequence[ResponseRule], request: Request,
                  sub: Request) -> Result:
    """``reply`` (to ``sub``, the rewritten request) with ``rules`` applied, as the
    reply to ``request``."""
    if reply.wire is not None:
        if not reply.wire:
            return reply                      # dropped: nothing is sent
        if not rules and reply.wire[12:12 + len(request.question)] == request.question:
            return reply                      # the bytes suit the client's question
        try:
            reply, truncated = decoded(reply)
        except Exception:
            log.failure("plugin/rewrite: a reply could not be decoded")
            return Reply(SERVFAIL, error="plugin/rewrite: a reply could not be decoded",
                         plugin="rewrite")
    else:
        truncated = False
    if not rules and not truncated:
        return reply
    message = Message(reply, sub)

    def finish() -> Reply:
        return _finished(reply, message, request, truncated)
    try:
        return _drive(_steps(message, rules), finish)
    except InvalidName as exc:
        return Reply(SERVFAIL, error=f"invalid name after response rewrite: {exc}",
                     plugin="rewrite")


def _finished(reply: Reply, message: Message, request: Request, truncated: bool) -> Reply:
    rcode = message.rcode
    cacheable = reply.cache is not None and not message.looked_up
    out = Reply(rcode & 0xF, reply.aa, message.answers, message.authority,
                message.additional, error=reply.error,
                cache=reply.cache if cacheable else None,
                renewable=reply.renewable and cacheable, flags=reply.flags,
                plugin=reply.plugin)
    out.reported = reply.reported
    out.more = reply.more  # a zone transfer's later messages go out as they are
    if rcode <= 0xF and not truncated:
        return out
    # The header holds four bits of rcode; more go in the OPT record (RFC 6891), which
    # the server writes from the client's: encode here and set them. Without an OPT,
    # miekg refuses to pack the reply and CoreDNS sends nothing.
    if rcode > 0xF and not request.opt:
        return Reply.dropped()
    wire = bytearray(render(request, rcode & 0xF, out.aa, out.answers, out.authority,
                            out.additional, out.flags))
    if rcode > 0xF:
        wire[len(wire) - len(request.opt) + 5] = rcode >> 4
    if truncated:
        wire[2] |= 0x02
    out.wire = bytes(wire)
    return out
