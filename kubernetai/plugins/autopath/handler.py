"""The `autopath` step: a question under the client's first search domain is answered for
the first name of its search path that exists, as CoreDNS's *autopath* does.

A client with ``ndots:5`` asks ``web.default.svc.cluster.local``, then
``web.svc.cluster.local``, ``web.cluster.local``, ... until one is not NXDOMAIN. Here the
first question is enough: its base (``web``, the name without the first search domain) is
tried with each search domain in turn, through the steps after this one, and the first
reply that is not NXDOMAIN (nor an error the steps returned without answering) goes back,
with a CNAME from the name asked to the name answered when they differ. If every name is
NXDOMAIN, the first reply goes back as it was.

The search path is the `autopath` line's resolv.conf, or, with ``@PLUGIN``, what that
plugin says for this client: for ``@kubernetai``, the first stanza (Corefile order) whose
cluster has a pod with the client's address gives its namespace's path. Kubernetai in Go
asks every stanza and gives up unless all of them know the pod.

A cache hit for the first name, answered early, passes :meth:`AutopathHandler.filter_early`:
it stands as it is when autopath would send it unchanged (no search path for this client,
a name outside the first search domain, or a positive answer owned by the name asked),
and otherwise the request goes the whole way.
"""

from __future__ import annotations

import struct
from typing import Any, Sequence

from twisted.internet import defer
from twisted.names import dns

from kubernetai.core.codec import FORMERR, NOTIMP, NXDOMAIN, REFUSED, SERVFAIL, render
from kubernetai.core.plugin import Next, Result
from kubernetai.core.request import AD, RA, Reply, Request
from kubernetai.pkg.dnsname import in_zone, presentation
from kubernetai.plugins.autopath.metrics import SUCCESS

__all__ = ["AutopathHandler", "cnamed"]

#: Rcodes a step returns without having answered (CoreDNS's ``ClientWrite`` is false).
_UNWRITTEN = frozenset((SERVFAIL, REFUSED, FORMERR, NOTIMP))
_COUNTS = struct.Struct("!HHHH")
_RR_FIXED = struct.Struct("!HHIH")
_QUESTION_TAIL = struct.Struct("!HH")


class AutopathHandler:
    """One block's `autopath` step (see the module doc)."""

    name = "autopath"

    def __init__(self, zones: Sequence[str], search: Sequence[str],
                 plugin: str | None = None) -> None:
        self.zones = sorted(zones, key=len, reverse=True)
        self.search = list(search)
        self.plugin = plugin
        #: The block's steps of ``@PLUGIN`` (each with ``autopath(request)``), set once
        #: the block is set up.
        self.sources: tuple[Any, ...] = ()

    # -- the search path ------------------------------------------------------------

    def search_path(self, request: Request) -> list[str] | None:
        """This client's search path for ``request``, or None to leave it alone."""
        name = _fqdn(request.lname)
        if not any(in_zone(name, zone) for zone in self.zones):
            return None
        if self.plugin is not None:
            for source in self.sources:
                path = source.autopath(request)
                if path:
                    break
            else:
                return None
        else:
            path = self.search
        if not path or not _first_in(name, path[0]):
            return None
        return path

    # -- the whole way --------------------------------------------------------------

    def serve(self, request: Request, next: Next) -> Result:
        path = self.search_path(request)
        if path is None:
            return next(request)
        cut = len(_labels(path[0]))
        if len(request.labels) <= cut:
            # The name as the client wrote it, escaped (\DDD): it goes to the log.
            return Reply(SERVFAIL, error=f"trimzone: overshot qname: "
                         f"{presentation(request.labels)}for "
                         f"zone {path[0]}", plugin=self.name)
        base = request.labels[:len(request.labels) - cut]
        tries = [base + _labels(domain) for domain in path]
        return self._walk(request, next, tries, 0, None)

    def _walk(self, request: Request, next: Next, tries: list[list[bytes]], i: int,
              first: Reply | None) -> Result:
        while i < len(tries):
            if i and not _fits(tries[i]):
                i += 1                    # no such name can exist: as NXDOMAIN
                continue
            sub = _asking(request, tries[i])
            result = next(sub)
            if isinstance(result, defer.Deferred):
                return result.addCallback(self._resume, request, next, tries, i, first, sub)
            done, first = self._judge(request, sub, result, i, first)
            if done is not None:
                return done
            i += 1
        assert first is not None
        return first

    def _resume(self, reply: Reply, request: Request, next: Next,
                tries: list[list[bytes]], i: int, first: Reply | None,
                sub: Request) -> Result:
        done, first = self._judge(request, sub, reply, i, first)
        if done is not None:
            return done
        return self._walk(request, next, tries, i + 1, first)

    def _judge(self, request: Request, sub: Request, reply: Reply, i: int,
               first: Reply | None) -> tuple[Reply | None, Reply | None]:
        """(the reply to send, or None to try the next name; the first try's reply)."""
        if i == 0:
            first = reply
        if sub is not request:
            request.answered = sub.answered
            request.observers = sub.observers
        if reply.error is not None or reply.wire == b"":
            return reply, first           # an error (or nothing to send): as it is
        if reply.rcode == NXDOMAIN or _unwritten(reply):
            return None, first
        SUCCESS.inc((_server(request),))
        return cnamed(request, reply, sub is not request), first

    # -- a cache hit ----------------------------------------------------------------

    def filter_early(self, request: Request, wire: bytes) -> bytes | None:
        """The hit as it is when autopath would send it unchanged; None to go the whole
        way (see the module doc)."""
        path = self.search_path(request)
        if path is None:
            return wire
        cut = len(_labels(path[0]))
        if (len(request.labels) <= cut
                or request.labels[-cut:] != _labels(path[0])   # not the name tried first
                or wire[3] & 0xF == NXDOMAIN
                or not _owned_by(wire, request.lname)):
            return None
        SUCCESS.inc((_server(request),))
        return wire


def cnamed(request: Request, reply: Reply, other_name: bool = True) -> Reply:
    """``reply`` with CoreDNS's CNAME in front: from the name asked (its case kept) to the
    owner of the first answer record that another name owns, with that record's TTL.
    Unless ``other_name`` (the reply is to another name than the one asked: it is built
    again, so that its question is the client's), the reply as it is when every answer
    record is the name asked's."""
    if reply.more is not None:
        return reply                      # a zone transfer's messages: sent as they are
    if not other_name and reply.wire is not None and _owned_by(reply.wire, request.lname):
        return reply
    answers, authority, additional, rcode, aa, flags = _sections(reply)
    truncated = reply.wire is not None and bool(reply.wire[2] & 0x02)
    asked = request.lname
    for record in answers:
        owner = record.name.name
        if owner.lower() != asked:
            cname = dns.RRHeader(request.qname, dns.CNAME, dns.IN, record.ttl,
                                 dns.Record_CNAME(owner, record.ttl), auth=True)
            answers.insert(0, cname)
            break
    else:
        if not other_name:
            return reply
    out = Reply(rcode, aa, answers, authority, additional, flags=flags, plugin=reply.plugin)
    if truncated:  # the reply tried was cut to the client's size: so is this one
        wire = bytearray(render(request, rcode, aa, answers, authority, additional, flags))
        wire[2] |= 0x02
        out.wire = bytes(wire)
    return out


def _sections(reply: Reply) -> tuple[list[Any], list[Any], list[Any], int, bool, int]:
    """The reply's records, rcode, AA and relayed flags, read from its bytes if it holds
    none (an answer encoded further down: the cache's, an upstream's)."""
    wire = reply.wire
    if wire is None or reply.answers or reply.authority or reply.additional:
        return (list(reply.answers), list(reply.authority), list(reply.additional),
                reply.rcode, reply.aa, reply.flags)
    message = dns.Message()
    message.fromStr(wire)
    additional = [record for record in message.additional if record.type != dns.OPT]
    return (list(message.answers), list(message.authority), additional, reply.rcode,
            bool(message.auth), wire[3] & (RA | AD))


def _unwritten(reply: Reply) -> bool:
    """A step's error rcode with nothing written: a reply to try past (CoreDNS's
    ``!ClientWrite(rcode)``); a written SERVFAIL (a stanza not synced yet, with its SOA)
    or an upstream's REFUSED counts as an answer."""
    return (reply.rcode in _UNWRITTEN and reply.wire is None
            and not (reply.answers or reply.authority or reply.additional))


def _asking(request: Request, labels: list[bytes]) -> Request:
    """The request for one name of the search path: the client's own when it is the name
    asked (so the answer cache keeps serving it), else a copy asking ``labels``."""
    if labels == request.labels:
        return request
    sub = request.copy()
    sub.labels = labels
    sub.qname = b".".join([label.replace(b".", b"\0") for label in labels])
    sub.lname = sub.qname.lower()
    # Its own question, so the answer cache keeps and serves each name tried (CoreDNS's
    # cache stands after autopath too); the reply to the client is built again with the
    # client's question (`cnamed`).
    sub.question = (b"".join([bytes((len(label),)) + label for label in labels]) + b"\0"
                    + _QUESTION_TAIL.pack(request.qtype, request.qclass))
    sub.simple = request.simple and b"\0" not in sub.qname and len(sub.question) <= 259
    return sub


def _fits(labels: list[bytes]) -> bool:
    """A name of these labels can be written (at most 255 octets, labels of 1-63)."""
    return (sum(len(label) + 1 for label in labels) + 1 <= 255
            and all(0 < len(label) < 64 for label in labels))


def _labels(domain: str) -> list[bytes]:
    """A search domain's labels (``""`` and ``"."``: none)."""
    text = domain.rstrip(".")
    return [label.encode("latin-1") for label in text.split(".")] if text else []


def _fqdn(lname: bytes) -> str:
    return lname.decode("latin-1") + "." if lname else "."


def _first_in(name: str, first: str) -> bool:
    """CoreDNS's ``firstInSearchPath``: the name is the first search domain or below it."""
    return bool(first) and (name == first or in_zone(name, first))


def _server(request: Request) -> str:
    source = getattr(request.proto, "metrics", None)
    return source[0] if source else ""


def _owned_by(wire: bytes, lname: bytes) -> bool:
    """Every answer record of the response ``wire`` is owned by ``lname`` (any case)."""
    try:
        qdcount, ancount = _COUNTS.unpack_from(wire, 4)[:2]
        offset = 12
        for _ in range(qdcount):
            offset = _skip_name(wire, offset) + 4
        for _ in range(ancount):
            owner, offset = _read_name(wire, offset)
            if owner.lower() != lname:
                return False
            rdlength = _RR_FIXED.unpack_from(wire, offset)[3]
            offset += _RR_FIXED.size + rdlength
    except (struct.error, IndexError, ValueError):
        return False
    return True


def _skip_name(wire: bytes, offset: int) -> int:
    while True:
        length = wire[offset]
        if length >= 0xC0:
            return offset + 2
        offset += 1 + length
        if length == 0:
            return offset


def _read_name(wire: bytes, offset: int) -> tuple[bytes, int]:
    """The dotted name at ``offset`` (compression followed) and the offset after it."""
    labels: list[bytes] = []
    end = None
    hops = 0
    while True:
        length = wire[offset]
        if length >= 0xC0:
            if end is None:
                end = offset + 2
            hops += 1
            if hops > 64:
                raise ValueError("compression loop")
            offset = ((length & 0x3F) << 8) | wire[offset + 1]
            continue
        if length == 0:
            break
        labels.append(wire[offset + 1:offset + 1 + length].replace(b".", b"\0"))
        offset += 1 + length
    return b".".join(labels), (end if end is not None else offset + 1)
