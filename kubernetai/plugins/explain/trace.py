"""How a block answers one question, found by asking a traced copy of its pipeline.

The pipeline the server runs carries no tracing: :func:`explain_block` builds a second
:class:`~kubernetai.core.pipeline.BlockPipeline` from the same stages, each handler
wrapped (``BlockPipeline(stages, wrap=...)``) and each resolver of the chain wrapped, and
in the answer cache's place a probe that reads and keeps nothing (asking must not fill
the cache, and a hit would hide how the answer is made) but notes whether the cache
would keep the reply. The question then runs through that copy with a request built as the server
builds one (:func:`question_request`), and the wrappers write down what each step did:
passed on, answered (with which rcode), or, for a stanza, why it fell through (the
``reason`` the resolver gives its ``FallThrough``, read only here). What is in the answer
cache for the question is read without touching it (:func:`cache_state`).

Nothing is sent and nothing is logged: a response observer (``log``) never fires, since
no response goes out, and a plugin error is marked reported on its way back up (so
``errors`` writes no line); the explanation shows it instead.
"""

from __future__ import annotations

import socket
import struct
from typing import Any, Callable

from twisted.internet import defer
from twisted.internet.interfaces import IResolver
from twisted.names import dns
from twisted.names import error as dnserror
from twisted.python.failure import Failure
from zope.interface import implementer

from kubernetai.core import sources
from kubernetai.core.codec import NOERROR, NXDOMAIN, RCODE_NAMES, SERVFAIL, parse_request, type_name
from kubernetai.core.negative import (
    REASON_CLASS,
    REASON_NAME_ERROR,
    REASON_NOT_SYNCED,
    REASON_OUTSIDE_ZONES,
    AuthoritativeNameError,
    FallThrough,
    Refused,
    ServerFailure,
)
from kubernetai.core.pipeline import BlockPipeline, ChainHandler, Stage
from kubernetai.core.plugin import Handler, Next, Result, then
from kubernetai.core.request import Reply, Request
from kubernetai.core.wirecache import WireCacheHandler, message_ttl
from kubernetai.pkg.dnsname import presentation_dotted

__all__ = ["QuestionError", "question_request", "explain_block", "cache_state", "rcode_name",
           "parse_type", "record_text"]

Step = dict[str, Any]

#: EDNS0 UDP size of the question explained (what dig sends).
EXPLAIN_UDP_SIZE = 1232


class QuestionError(ValueError):
    """The name or type cannot be asked (the endpoint answers 400 with the message)."""


def rcode_name(rcode: int) -> str:
    return RCODE_NAMES.get(rcode, f"RCODE{rcode}")


def parse_type(text: str) -> int:
    """A query type from its name (``A``, ``srv``, ``TYPE65``) or number."""
    upper = text.strip().upper()
    if upper.isdigit():
        value = int(upper)
    elif upper.startswith("TYPE") and upper[4:].isdigit():
        value = int(upper[4:])
    elif upper in _TYPES:
        value = _TYPES[upper]
    else:
        raise QuestionError(f"unknown query type {text!r}")
    if not 0 < value < 65536:
        raise QuestionError(f"query type out of range: {text!r}")
    return value


# Type names as the server prints them (``type_name``), back to their numbers.
_TYPES = {type_name(code): code for code in [*range(1, 512), 32768, 32769]}


def _labels(name: str) -> list[bytes]:
    try:
        raw = name.encode("ascii")
    except UnicodeEncodeError:
        raise QuestionError("the name must be ASCII (write internationalized names in their "
                            "xn-- form)") from None
    raw = raw.rstrip(b".") if raw.strip(b".") else b""
    labels = raw.split(b".") if raw else []
    if any(not label for label in labels):
        raise QuestionError(f"empty label in {name!r}")
    if any(len(label) > 63 for label in labels):
        raise QuestionError(f"a label of {name!r} is longer than 63 bytes")
    if sum(len(label) + 1 for label in labels) + 1 > 255:
        raise QuestionError(f"{name!r} is longer than 255 bytes")
    return labels


def question_request(name: str, qtype: int, peer: tuple[str, int]) -> Request:
    """The :class:`Request` the server would have for ``name``/``qtype`` asked over UDP
    with EDNS0 (as dig asks), from ``peer``: parsed from the wire by the server's own
    parser, so the name is keyed and routed as a real query's."""
    labels = _labels(name)
    wire = (struct.pack("!HBBHHHH", 0, 0x01, 0, 1, 0, 0, 1)
            + b"".join(bytes([len(label)]) + label for label in labels) + b"\0"
            + struct.pack("!HH", qtype, dns.IN)
            + b"\0" + struct.pack("!HHIH", dns.OPT, EXPLAIN_UDP_SIZE, 0, 0))
    request = parse_request(wire, True)
    if not isinstance(request, Request):
        raise QuestionError(f"the server would not take this question ({name!r})")
    request.proto = _Peer(peer)
    request.addr = peer
    return request


class _Peer:
    """The request's ``proto``: the explain client is the asker; nothing is sent."""

    def __init__(self, peer: tuple[str, int]) -> None:
        self._peer = peer

    def peer(self, addr: Any) -> tuple[str, int]:
        return self._peer

    def sendWire(self, wire: bytes, addr: Any) -> None:  # noqa: N802 - the server's name
        return None


# -- presenting records -------------------------------------------------------------------


def _name(name: Any) -> str:
    return presentation_dotted(name.name if isinstance(name, dns.Name) else name)


def record_text(rr: dns.RRHeader) -> str:
    """One record in zone-file form (``web.ns.svc.a.local. 5 IN A 10.1.0.1``)."""
    payload: Any = rr.payload
    kind = rr.type
    if kind == dns.A:
        data = payload.dottedQuad()
    elif kind == dns.AAAA:
        data = socket.inet_ntop(socket.AF_INET6, payload.address)
    elif kind in (dns.CNAME, dns.NS, dns.PTR, dns.DNAME):
        data = _name(payload.name)
    elif kind == dns.SRV:
        data = f"{payload.priority} {payload.weight} {payload.port} {_name(payload.target)}"
    elif kind == dns.TXT:
        data = " ".join('"' + part.decode("latin-1").replace('"', '\\"') + '"'
                        for part in payload.data)
    elif kind == dns.SOA:
        data = (f"{_name(payload.mname)} {_name(payload.rname)} {payload.serial} "
                f"{payload.refresh} {payload.retry} {payload.expire} {payload.minimum}")
    else:
        data = str(payload)
    return f"{_name(rr.name)} {rr.ttl} {dns.QUERY_CLASSES.get(rr.cls, rr.cls)} " \
        f"{type_name(kind)} {data}"


# -- the traced copy ----------------------------------------------------------------------


class _Trace:
    """What one traced pipeline saw: its handler steps and its chain's resolver steps."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.resolvers: list[Step] = []
        self.chases: list[Step] = []
        # Seconds the answer cache would keep the reply (0: not kept); None: no cache.
        self.keep: int | None = None


class _TracedHandler:
    """A handler as it was, writing down whether it answered or passed the query on."""

    def __init__(self, handler: Handler, trace: _Trace) -> None:
        self.handler = handler
        self.name = handler.name
        self.trace = trace

    def serve(self, request: Request, next: Next) -> Result:
        step: Step = {"plugin": self.name, "kind": _kind(self.handler),
                      "outcome": "answered"}
        if isinstance(self.handler, _CacheProbe):
            step["why"] = "explain neither reads nor fills the answer cache"
        self.trace.steps.append(step)

        def traced_next(request: Request) -> Result:
            step["outcome"] = "passed on"
            return _settled(next(request), None)

        try:
            result = self.handler.serve(request, traced_next)
        except Exception as error:
            step["outcome"] = "raised"
            step["error"] = repr(error)
            raise
        return _settled(result, step)


def _kind(handler: Any) -> str:
    if isinstance(handler, ChainHandler):
        return "chain"
    return "cache" if isinstance(handler, _CacheProbe) else "handler"


def _settled(result: Result, step: Step | None) -> Result:
    """Note the rcode a step gave back, and mark a plugin error reported: the
    explanation shows it, ``errors`` does not log it."""
    def note(reply: Reply) -> Reply:
        if isinstance(reply, Reply):
            if step is not None:
                step["rcode"] = rcode_name(reply.rcode)
            reply.reported = True
        return reply

    def failed(failure: Failure) -> Failure:
        if step is not None:
            step["outcome"] = "raised"
            step["error"] = failure.getErrorMessage()
        return failure

    if isinstance(result, defer.Deferred):
        return result.addCallbacks(note, failed)
    return note(result)


@implementer(IResolver)
class _TracedResolver:
    """A resolver of the chain as it was, writing down what it answered or why it
    passed the name on; what the chain reads of it (``cacheable``...) is its own."""

    def __init__(self, resolver: Any, name: str, trace: _Trace) -> None:
        self.resolver = resolver
        self.name = name
        self.trace = trace

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.resolver, attribute)

    def query(self, query: dns.Query, timeout: Any = None) -> defer.Deferred[Any]:
        step = describe(self.resolver, self.name)
        self.trace.resolvers.append(step)
        try:
            asked = self.resolver.query(query, timeout)
        except Exception:
            asked = defer.fail()
        return asked.addBoth(_resolved, step)


def describe(resolver: Any, name: str) -> Step:
    """A resolver as the explanation names it: a stanza says which one it is."""
    step: Step = {"plugin": name}
    about = getattr(resolver, "describe", None)
    if about is not None:
        try:
            step.update(about())
        except Exception as error:  # noqa: BLE001 - the explanation goes on without it
            step["describe_error"] = repr(error)
    return step


def _resolved(result: Any, step: Step) -> Any:
    if not isinstance(result, Failure):
        answers, authority, _ = result
        step["outcome"] = "answered"
        step["rcode"] = "NOERROR"
        if not answers:
            step["why"] = "no records of this type (NODATA)" if authority else "empty answer"
        return result
    error = result.value
    if isinstance(error, FallThrough) or isinstance(error, dnserror.DomainError) and \
            not isinstance(error, dnserror.AuthoritativeDomainError):
        step["outcome"] = "fell through"
        step["reason"], step["why"] = _fell_through_because(error, step)
    elif isinstance(error, AuthoritativeNameError) or \
            isinstance(error, dnserror.AuthoritativeDomainError):
        step["outcome"] = "answered"
        step["rcode"] = "NXDOMAIN"
        step["why"] = _name_error_because(step)
    elif isinstance(error, ServerFailure):
        step["outcome"] = "answered"
        step["rcode"] = "SERVFAIL"
        if error.reason == REASON_NOT_SYNCED:
            step["reason"] = REASON_NOT_SYNCED
            step["why"] = "name error before its cache synced (no fallthrough): SERVFAIL, " \
                "as CoreDNS answers until the first sync"
        else:
            step["why"] = error.message or "server failure"
    elif isinstance(error, (Refused, dnserror.DNSQueryRefusedError)):
        step["outcome"] = "answered"
        step["rcode"] = "REFUSED"
        step["why"] = "refused (a zone transfer, or a name it does not serve)"
    else:
        step["outcome"] = "failed"
        step["why"] = f"{type(error).__name__}: {result.getErrorMessage()}"
    return result


def _fell_through_because(error: Exception, step: Step) -> tuple[str, str]:
    reason = getattr(error, "reason", "")
    if reason == REASON_OUTSIDE_ZONES:
        zones = " ".join(step.get("zones", ())) or "?"
        return reason, f"the name is outside its zones ({zones})"
    if reason == REASON_NAME_ERROR:
        if step.get("synced") is False:
            return REASON_NOT_SYNCED, "name error while its cache has not synced (the " \
                "name may yet exist there), and `fallthrough` covers the name"
        return reason, "name error (the cluster has no such name), and `fallthrough` " \
            "covers the name"
    if reason == REASON_CLASS:
        return reason, "the class is not IN"
    message = getattr(error, "message", None) or (str(error.args[0]) if error.args else "")
    return "other", "passed the name on" + (f" ({message})" if message else "")


def _name_error_because(step: Step) -> str:
    fall = step.get("fallthrough")
    if fall:
        return "name error; `fallthrough` covers only " + " ".join(fall)
    if fall is not None:
        return "name error, and no `fallthrough`: NXDOMAIN ends the search"
    return "name error"


class _TracedServer:
    """The request's ``server`` (where an ExternalName is chased): the chase is
    asked of a traced copy of the block that serves the target, and written down."""

    def __init__(self, router: Any, trace: _Trace) -> None:
        self.router = router
        self.trace = trace

    def query(self, query: dns.Query, timeout: Any = None) -> defer.Deferred[Any]:
        name = query.name.name.rstrip(b".")
        chase: Step = {"name": presentation_dotted(name), "type": type_name(query.type)}
        self.trace.chases.append(chase)
        entry = self.router.entry(name.lower(), query.type)
        if entry is None:
            chase["rcode"] = "REFUSED"
            chase["why"] = "no server block serves the name"
            return defer.fail(Refused())
        zone, block = entry
        chase["zone"] = _zone_text(zone)
        inner = _Trace()
        traced = _traced_copy(block, inner, self) if isinstance(block, BlockPipeline) else block
        chase["resolvers"] = inner.resolvers

        def done(result: Any) -> Any:
            if isinstance(result, Failure):
                chase["rcode"] = _failure_rcode(result)
            else:
                chase["rcode"] = "NOERROR"
                chase["answer"] = [record_text(rr) for rr in result[0]]
            return result
        return defer.maybeDeferred(traced.query, query, timeout).addBoth(done)


def _failure_rcode(failure: Failure) -> str:
    if failure.check(AuthoritativeNameError, dnserror.AuthoritativeDomainError):
        return "NXDOMAIN"
    if failure.check(Refused, dnserror.DNSQueryRefusedError):
        return "REFUSED"
    if failure.check(dnserror.DomainError):
        return "passed on"
    return "SERVFAIL"


def _zone_text(zone: bytes) -> str:
    return presentation_dotted(zone) if zone else "."


class _CacheProbe:
    """In the answer cache's place: passes every query on, reads and keeps nothing, and
    notes whether the reply coming back is one the cache would keep, and for how long."""

    name = "cache"

    def __init__(self, trace: _Trace) -> None:
        self.trace = trace

    def serve(self, request: Request, next: Next) -> Result:
        return then(next(request), lambda reply: self._seen(reply, request))

    def _seen(self, reply: Reply, request: Request) -> Reply:
        # WireCacheHandler._store's test (a truncated answer is not kept either: the
        # explained question's size is never that small).
        keep = (request.simple and reply.cache is not None and reply.wire is None
                and reply.rcode in (NOERROR, NXDOMAIN))
        ttl = message_ttl(reply) if keep else 0
        self.trace.keep = ttl if ttl > 0 else 0
        return reply


def _traced_copy(pipeline: BlockPipeline, trace: _Trace, server: Any) -> BlockPipeline:
    """``pipeline`` rebuilt from its stages with every step traced, and a probe that
    keeps nothing in the answer cache's place."""
    stages = []
    for stage in pipeline.stages:
        if isinstance(stage.handler, WireCacheHandler):
            stage = Stage(stage.name, stage.position, stage.index,
                          handler=_CacheProbe(trace), implicit=stage.implicit)
        if stage.resolver is not None:
            stage = Stage(stage.name, stage.position, stage.index,
                          resolver=_TracedResolver(stage.resolver, stage.name,
                                                   trace),  # type: ignore[arg-type]
                          implicit=stage.implicit)
        stages.append(stage)
    return BlockPipeline(stages, wrap=lambda handler: _TracedHandler(handler, trace))


# -- running the question -----------------------------------------------------------------


def explain_block(pipeline: BlockPipeline, request: Request, zone: bytes, router: Any,
                  ) -> defer.Deferred[dict[str, Any]]:
    """Run ``request`` through a traced copy of ``pipeline`` (the block ``router``
    chose for it, for ``zone``); fires with the explanation (see README.md)."""
    trace = _Trace()
    server = _TracedServer(router, trace)
    traced = _traced_copy(pipeline, trace, server)
    request.zone = zone
    request.block = pipeline
    request.server = server
    request.started = 0.0
    request.depth = 0
    request.deps = None
    request.nocache = False
    request.renewable = True
    request.observers = None
    try:
        result: Any = traced.serve(request)
    except Exception as error:  # noqa: BLE001 - the server answers SERVFAIL for a bug
        result = Reply(SERVFAIL, error=f"a plugin raised {error!r}")
    if not isinstance(result, defer.Deferred):
        result = defer.succeed(result)

    def failed(failure: Failure) -> Reply:
        return Reply(SERVFAIL, error=f"a plugin failed: {failure.getErrorMessage()}")

    return result.addErrback(failed).addCallback(
        lambda reply: _explanation(reply, request, pipeline, traced, trace))


def _explanation(reply: Reply, request: Request, pipeline: BlockPipeline,
                 traced: BlockPipeline, trace: _Trace) -> dict[str, Any]:
    answers, authority, additional = _sections(reply)
    steps = _all_steps(traced, trace)
    return {
        "steps": steps,
        "answered_by": _answered_by(steps),
        "rcode": rcode_name(reply.rcode),
        "authoritative": bool(reply.aa),
        "answer": [record_text(rr) for rr in answers],
        "authority": [record_text(rr) for rr in authority],
        "additional": [record_text(rr) for rr in additional],
        "error": reply.error,
        "chases": trace.chases,
        "cache": cache_state(pipeline, request, trace.keep),
    }


def _sections(reply: Reply) -> tuple[Any, Any, Any]:
    """The reply's records: its sections, or, for a reply made of bytes alone, the
    bytes' (a reply a plugin encoded also keeps its sections, which are not truncated)."""
    if reply.wire is None or reply.answers or reply.authority or reply.additional:
        return reply.answers, reply.authority, reply.additional
    message = dns.Message()
    message.fromStr(reply.wire)
    return message.answers, message.authority, message.additional


def _all_steps(traced: BlockPipeline, trace: _Trace) -> list[Step]:
    """Every step of the block, those the query did not reach included."""
    steps: list[Step] = []
    seen = iter(trace.steps)
    for handler in traced.handlers:
        step = next(seen, None)
        if step is None:
            step = {"plugin": handler.name, "kind": _kind(getattr(handler, "handler", handler)),
                    "outcome": "not reached"}
        if step["kind"] == "chain":
            step["resolvers"] = _all_resolvers(traced, trace)
        steps.append(step)
    return steps


def _all_resolvers(traced: BlockPipeline, trace: _Trace) -> list[Step]:
    asked = list(trace.resolvers)
    chain = traced.chain.resolvers if traced.chain is not None else []
    for resolver in chain[len(asked):]:
        step = describe(resolver.resolver, resolver.name)
        step["outcome"] = "not reached"
        asked.append(step)
    return asked


def _answered_by(steps: list[Step]) -> Step | None:
    """The step that made the answer: the resolver that answered, or the handler."""
    for step in reversed(steps):
        if step["outcome"] != "answered":
            continue
        if step["kind"] == "chain":
            for resolver in step.get("resolvers", ()):
                if resolver.get("outcome") == "answered":
                    return {k: v for k, v in resolver.items() if k not in ("outcome",)}
            return {"plugin": step["plugin"],
                    "why": "every resolver passed the name on, and no plugin follows them"}
        return {"plugin": step["plugin"]}
    return None


# -- the answer cache, read only ----------------------------------------------------------


def cache_state(pipeline: BlockPipeline, request: Request, keep: int | None = None,
                clock: Callable[[], float] | None = None) -> dict[str, Any]:
    """What the block's answer cache holds for the question now, read without changing
    it (no hit counted, nothing renewed or dropped); with ``keep`` (seconds the cache
    would keep this answer, 0 for not at all), whether this answer may be kept."""
    handler = next((s.handler for s in pipeline.stages
                    if isinstance(s.handler, WireCacheHandler)), None)
    if handler is None:
        return {"in_cache": False, "state": "no-cache", "hit": False}
    state: dict[str, Any] = {"in_cache": False, "state": "absent", "hit": False}
    if keep is not None:
        state["cacheable"] = keep > 0
        if keep > 0:
            state["keep_for"] = keep
    if not request.simple:
        state["state"] = "not-kept"      # the cache only keeps names that map back to bytes
        return state
    cache = handler.cache
    entry = handler.entry_for(request)
    if entry is None:
        return state
    stored, expires, deps, renew = entry
    now = (clock or cache.clock)()
    changed = sources.changed(deps)
    state["in_cache"] = True
    state["rcode"] = rcode_name(stored[3] & 0xF)
    state["answers"] = struct.unpack_from("!H", stored, 6)[0]
    state["ttl_left"] = round(expires - now, 3)
    if changed:
        state["state"] = "stale"         # a source changed: the next query asks again
    elif expires > now:
        state["state"] = "fresh"
        state["hit"] = True
    elif renew:
        state["state"] = "renewable"     # expired, sources unchanged: renewed on the next hit
        state["hit"] = True
    else:
        state["state"] = "expired"
    return state
