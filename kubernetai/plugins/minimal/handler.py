"""The `minimal` step: a positive answer goes out with its answer section only.

It stands after the answer cache (``minimal`` in ORDER), so it changes what the plugins
after it answer before the cache keeps it, as CoreDNS's minimal does inside its cache.
What comes back is typed as CoreDNS types it (:mod:`~kubernetai.plugins.minimal.typify`):
NXDOMAIN, NODATA, SERVFAIL/NOTIMP, other errors and delegations pass unchanged; a NOERROR
answer loses its authority and additional sections (the OPT record is the client's, as the
server writes it for any reply); a zone transfer's answer (META) passes unchanged with
CoreDNS's plugin error, which `errors` logs. A reply carrying a plugin error is passed on
as it is, as CoreDNS's minimal returns the error of the plugin after it.

A reply already encoded (``Reply.wire``, e.g. an upstream's answer relayed) is read in
place: the header's counts are rewritten and the bytes after the answer section replaced
by the request's OPT record. One that does not parse, or no response at all (``drop``),
passes as it is.
"""

from __future__ import annotations

import struct

from kubernetai.core.plugin import Next, Result, then
from kubernetai.core.request import Reply, Request
from kubernetai.pkg.dnsname import presentation
from kubernetai.plugins.minimal.typify import META, NOERROR, of_records, read_wire

__all__ = ["MinimalHandler"]

_COUNTS = struct.Struct("!HH")


class MinimalHandler:
    name = "minimal"

    def serve(self, request: Request, next: Next) -> Result:
        return then(next(request), lambda reply: minimize(request, reply))


def minimize(request: Request, reply: Reply) -> Reply:
    """``reply`` as `minimal` lets it out (see the module doc)."""
    if reply.error is not None:
        return reply
    wire = reply.wire
    if wire is None:
        kind = of_records(request.qtype, reply.rcode, reply.answers, reply.authority)
        end = 0
    elif not wire:
        return reply
    else:
        shape = read_wire(wire)
        if shape is None:
            return reply
        kind, end = shape.kind, shape.answer_end
    if kind == NOERROR:
        if wire is None and not (reply.authority or reply.additional):
            return reply                                   # nothing to take out
        return _stripped(request, reply, end)
    if kind == META:
        name = presentation(request.labels)
        return _copy(reply, error=f'plugin/minimal: unhandled response type "{kind}" '
                                  f'for "{name}"')
    return reply


def _stripped(request: Request, reply: Reply, end: int) -> Reply:
    wire = reply.wire
    if wire is None:
        return _copy(reply, authority=(), additional=())
    opt = request.opt
    encoded = (wire[:8] + _COUNTS.pack(0, 1 if opt else 0) + wire[12:end] + opt)
    return _copy(reply, wire=encoded)


def _copy(reply: Reply, **changes: object) -> Reply:
    """A new reply with ``changes``; the one given may be shared, so it is not changed."""
    fields = {slot: getattr(reply, slot) for slot in Reply.__slots__ if slot != "reported"}
    fields.update(changes)
    rcode = fields.pop("rcode")
    copy = Reply(rcode, **fields)  # type: ignore[arg-type]
    copy.reported = reply.reported
    return copy
