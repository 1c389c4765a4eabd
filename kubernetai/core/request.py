"""What every plugin sees of a query (the request context) and what it answers (a reply).

CoreDNS hands each plugin a `request.Request` and a `context.Context`; here one
:class:`Request` is both. It is parsed once from the wire (:mod:`kubernetai.core.codec`) and
then carries what the server knows about the query: who asked and how, the question as
sent, the server block and zone it was routed to, when it arrived, and how deep an
ExternalName chase has gone. A handler answers with a :class:`Reply`.

Plugins that answer names stay Twisted Names ``IResolver``s, whose ``query(dns.Query)``
has no room for a context; the block's chain hands them a :class:`ContextQuery` instead, a
``dns.Query`` that also carries the request, so a resolver that wants the context reads
``query.request`` and one that does not sees an ordinary query.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

from twisted.names import dns

from kubernetai.core.sources import Source
from kubernetai.pkg.dnsname import presentation, presentation_dotted

__all__ = ["Request", "Reply", "ContextQuery", "context_query", "RA", "AD"]

#: Header bits of the response's fourth byte that a relayed answer may carry (RFC 1035
#: recursion available, RFC 4035 authentic data).
RA = 0x80
AD = 0x20


class Request:
    """One query and its context.

    Parsed fields: ``qname`` is the name as sent (dotted, no trailing dot, case kept);
    ``lname`` its lower-case form, used for routing; ``question`` the question section's
    wire bytes, echoed verbatim in the response; ``opt`` the response OPT record's wire
    bytes (``b""`` without EDNS); ``limit`` the size the response must fit; ``bufsize``
    the UDP size the client advertised (0 without EDNS); ``options`` the client's EDNS0
    options as sent (the OPT rdata, ``b""`` without EDNS: what ``forward`` relays and
    ``rewrite`` edits); ``do`` the DNSSEC OK bit; ``udp`` the transport. An IXFR
    request also has ``ixfr_serial``: the serial of the SOA record its authority section
    holds, None when that section is empty or holds another record (other requests lack
    the attribute: read it with ``getattr``).

    Context, set by the server before the block's plugins run: ``proto``/``addr`` (who
    asked: :meth:`peer`), ``zone`` (the server block's zone that matched, normalized),
    ``block`` (that block's pipeline), ``server`` (an ``IResolver`` that re-enters the
    server, CoreDNS's ``upstream``), ``started`` (``time.perf_counter()`` on arrival) and
    ``depth`` (ExternalName chases above this query).

    Cacheability, written by the plugins that answer: ``deps`` lists the data sources the
    answer was read from, each as a ``(slot, generation)`` pair of
    :mod:`kubernetai.core.sources`; ``nocache`` is set when a
    plugin that did not promise a cacheable answer produced it, and ``renewable`` cleared
    when one produced it that does not promise its answer depends on those sources alone.
    ``answered`` names the directive of the resolver that answered (the ``plugin`` label).
    ``fold`` (unset until a producer says, see :meth:`folds`) is True when every producer
    of the answer promised it holds for every letter case of the name, the question's
    bytes aside (the answer memo then keys it by the lower-case name).
    """

    __slots__ = ("id", "rd", "cd", "ad", "qname", "lname", "labels", "qtype", "qclass",
                 "question", "opt", "edns", "do", "limit", "udp", "size", "simple",
                 "bufsize", "options",
                 "proto", "addr", "zone", "block", "server", "started", "depth",
                 "deps", "nocache", "renewable", "observers", "answered", "fold",
                 "ixfr_serial")

    id: int
    rd: int
    cd: int
    ad: int
    qname: bytes
    lname: bytes
    labels: list[bytes]
    qtype: int
    qclass: int
    question: bytes
    opt: bytes
    edns: bool
    do: bool
    limit: int
    udp: bool
    size: int
    simple: bool
    bufsize: int
    options: bytes
    proto: Any
    addr: Any
    zone: bytes
    block: Any
    server: Any
    started: float
    depth: int
    deps: list[tuple[int, int]] | None
    nocache: bool
    renewable: bool
    observers: list[Callable[["Request", bytes], None]] | None
    answered: str | None
    fold: bool
    ixfr_serial: int | None

    def fqdn(self) -> str:
        """The lower-case query name as CoreDNS logs it: escaped, with its trailing dot.

        Everything that writes a query name to a log goes through here, so a name holding
        a newline or an ESC byte is printed as ``\\010`` / ``\\027``, never raw.
        """
        if self.simple:
            return presentation_dotted(self.lname)          # no dot inside a label
        return presentation([label.lower() for label in self.labels])

    @property
    def transport(self) -> str:
        """``"udp"`` or ``"tcp"``, as CoreDNS's ``state.Proto()``."""
        return "udp" if self.udp else "tcp"

    def peer(self) -> tuple[str, int]:
        """The client's address and port."""
        return self.proto.peer(self.addr)

    def observe(self, callback: Callable[["Request", bytes], None]) -> None:
        """Call ``callback(request, wire)`` once the response has been sent.

        What CoreDNS's plugins get by wrapping the ``ResponseWriter`` (``log`` records
        the response's size and flags this way).
        """
        if self.observers is None:
            self.observers = [callback]
        else:
            self.observers.append(callback)

    def copy(self) -> "Request":
        """A shallow copy, for a plugin that changes the question for the steps after it
        (``rewrite``) while the steps before it, and the response, keep the original.

        The copy's ``question`` bytes are the original's (the response echoes what was
        asked), so it is never ``simple``: nothing may compress names against it.
        """
        twin = Request.__new__(Request)
        for slot in Request.__slots__:
            try:
                setattr(twin, slot, getattr(self, slot))
            except AttributeError:
                pass
        twin.simple = False
        labels = getattr(self, "labels", None)
        if labels is not None:
            twin.labels = list(labels)
        return twin

    def depend(self, source: Source) -> None:
        """The answer was read from ``source`` (see :mod:`kubernetai.core.sources`)."""
        dep = source.dep()
        if self.deps is None:
            self.deps = [dep]
        elif dep not in self.deps:
            self.deps.append(dep)

    def depend_all(self, deps: Sequence[tuple[int, int]]) -> None:
        """The answer was read from these ``(slot, generation)`` pairs."""
        mine = self.deps
        if mine is None:
            self.deps = list(deps)
        else:
            for dep in deps:
                if dep not in mine:
                    mine.append(dep)

    def folds(self, foldable: bool) -> None:
        """A producer of the answer says whether it holds for every letter case of the name
        (the question's bytes aside); one that says no makes the whole answer so."""
        if getattr(self, "fold", True):
            self.fold = foldable


class Reply:
    """A handler's answer: the rcode and the three sections, or the encoded response.

    ``error`` is a plugin error for the ``errors`` plugin (``"plugin/kubernetai: no next
    plugin found"``); ``reported`` is set once something has logged it. ``cache`` says
    whether the answer may be kept: None (never), or the ``deps`` of the request it
    answered (see :class:`Request`). ``wire``, if set, is the response already encoded for
    this request (a cache hit, or a handler that rendered it); ``b""`` means no response
    is sent at all (:meth:`dropped`: ``acl``'s drop). ``renewable``: the answer is a
    function of the sources in ``cache`` alone, so once its TTL has passed the cache may
    renew it while they are unchanged instead of asking again (the same bytes would come).

    ``flags`` are header bits a relayed answer carries beyond those the server sets itself
    (:data:`RA`, :data:`AD` from an upstream: ``forward``); the server never sets RA on
    answers of its own, as CoreDNS. ``plugin`` names the plugin that wrote the answer, for
    the ``plugin`` label of ``coredns_dns_responses_total`` (None: inferred).

    ``more``, if set, gives further responses to the same query, encoded, each sent after
    ``wire`` in order on the same TCP connection (a zone transfer's messages). The server
    asks for the next one only when the connection has taken the ones before it, so a
    client that reads slowly holds a couple of them in memory, not the whole series; the
    steps before the one that made the reply see ``wire`` alone, and ``log`` and
    ``prometheus`` count the query once. Over UDP only ``wire`` is sent.
    """

    __slots__ = ("rcode", "aa", "answers", "authority", "additional", "error", "reported",
                 "cache", "renewable", "wire", "flags", "plugin", "more")

    def __init__(self, rcode: int, aa: bool = False,
                 answers: Sequence[dns.RRHeader] = (),
                 authority: Sequence[dns.RRHeader] = (),
                 additional: Sequence[dns.RRHeader] = (), *,
                 error: str | None = None,
                 cache: tuple[tuple[Any, int], ...] | None = None,
                 renewable: bool = False,
                 wire: bytes | None = None,
                 flags: int = 0,
                 plugin: str | None = None,
                 more: Iterator[bytes] | None = None) -> None:
        self.rcode = rcode
        self.aa = aa
        self.answers = answers
        self.authority = authority
        self.additional = additional
        self.error = error
        self.reported = False
        self.cache = cache
        self.renewable = renewable
        self.wire = wire
        self.flags = flags
        self.plugin = plugin
        self.more = more

    @classmethod
    def encoded(cls, wire: bytes) -> "Reply":
        """A reply that is already the response's bytes (the rcode is read from them)."""
        reply = cls.__new__(cls)
        reply.rcode = wire[3] & 0xF
        reply.aa = bool(wire[2] & 0x04)
        reply.answers = reply.authority = reply.additional = ()
        reply.error = None
        reply.reported = False
        reply.cache = None
        reply.renewable = False
        reply.wire = wire
        reply.flags = wire[3] & (RA | AD)
        reply.plugin = None
        reply.more = None
        return reply

    @classmethod
    def dropped(cls) -> "Reply":
        """No response at all: the client hears nothing (CoreDNS's plugins that return
        without writing, as ``acl``'s ``drop``)."""
        reply = cls(0, wire=b"")
        reply.plugin = ""
        return reply

    def records(self) -> tuple[Sequence[dns.RRHeader], ...]:
        return self.answers, self.authority, self.additional


class ContextQuery(dns.Query):
    """A ``dns.Query`` that carries its request context to the resolvers of a chain.

    ``request`` is the :class:`Request` being answered (None when a resolver is used on
    its own, embedded); ``depth`` counts the ExternalName chases above this query;
    ``upstream`` is where a resolver may ask about another name (the server, or the
    embedding resolver), as CoreDNS's ``upstream.Lookup``.
    """

    request: Request | None
    depth: int
    upstream: Any


def context_query(name: bytes, qtype: int, qclass: int = dns.IN, *,
                  request: Request | None = None, depth: int = 0,
                  upstream: Any = None) -> ContextQuery:
    """A :class:`ContextQuery`, built without ``dns.Query.__init__``'s name parsing."""
    query = ContextQuery.__new__(ContextQuery)
    owner = dns.Name.__new__(dns.Name)
    owner.name = name
    query.name = owner
    query.type = qtype
    query.cls = qclass
    query.request = request
    query.depth = depth
    query.upstream = upstream
    return query
