"""The `acl` step: the block's rules applied to each query, before the answer cache.

``allow`` (or no rule stopping the query) passes it on; ``block`` answers REFUSED and
``filter`` an empty NOERROR, each with the Extended DNS Error CoreDNS adds (RFC 8914:
15 Blocked, 17 Filtered) in an OPT record; ``drop`` sends nothing. The OPT record is the
one CoreDNS's reply carries once its server has fitted it to the request
(``SetEdns0(4096, true)`` then ``SizeAndDo``): the client's UDP size, or 4096 for a
client without EDNS (CoreDNS adds the OPT even then), the DO bit set whatever the client
sent, and the EDE option alone.

A cache hit, answered early, passes through :meth:`AclHandler.filter_early`: an allowed
client gets it as it is; any other goes the whole way through :meth:`serve`, which
refuses, filters or drops it.
"""

from __future__ import annotations

import struct

from twisted.logger import Logger

from kubernetai.core.codec import NOERROR, REFUSED, render
from kubernetai.core.plugin import Next, Result
from kubernetai.core.request import Reply, Request
from kubernetai.plugins.acl.metrics import ALLOWED, BLOCKED, DROPPED, FILTERED
from kubernetai.plugins.acl.rules import BLOCK, DROP, FILTER, Rule, client_address, decide

__all__ = ["AclHandler", "ede_opt", "EDE_BLOCKED", "EDE_FILTERED"]

log = Logger()

#: RFC 8914 info codes (miekg ``ExtendedErrorCodeBlocked`` / ``...Filtered``).
EDE_BLOCKED, EDE_FILTERED = 15, 17
_OPTION_EDE = 15
_TYPE_OPT = 41
_DO = 0x8000
_OPT = struct.Struct("!BHHIH")       # root name, type, UDP size, ttl (flags), rdlength
_OPTION = struct.Struct("!HHH")      # code, length, info code
_U16 = struct.Struct("!H")


def ede_opt(request: Request, info: int) -> bytes:
    """The OPT record of a block or filter reply to ``request`` (see the module doc)."""
    size = _U16.unpack_from(request.opt, 3)[0] if request.opt else 4096
    return _OPT.pack(0, _TYPE_OPT, size, _DO, _OPTION.size) + _OPTION.pack(_OPTION_EDE, 2, info)


def _server(request: Request) -> str:
    source = getattr(request.proto, "metrics", None)
    return source[0] if source else ""


class AclHandler:
    """One block's `acl` step: every `acl` line of the block, in Corefile order."""

    name = "acl"

    def __init__(self) -> None:
        self.rules: tuple[Rule, ...] = ()

    def add(self, rule: Rule) -> None:
        self.rules += (rule,)

    def _decide(self, request: Request) -> tuple[int, str]:
        try:
            host = request.peer()[0]
        except Exception:  # noqa: BLE001 - no socket peer: blocked, as an unreadable one
            host = "?"
        address = client_address(host)
        action, zone = decide(self.rules, request.lname, request.qtype, address)
        if address is None and zone:
            log.error("plugin/acl: Blocking request. Unable to parse source "
                      "address: {host}", host=host)
        return action, zone

    def serve(self, request: Request, next: Next) -> Result:
        action, zone = self._decide(request)
        if action == BLOCK:
            BLOCKED.inc((_server(request), zone, ""))
            return _answer(request, REFUSED, EDE_BLOCKED)
        if action == FILTER:
            FILTERED.inc((_server(request), zone, ""))
            return _answer(request, NOERROR, EDE_FILTERED)
        if action == DROP:
            DROPPED.inc((_server(request), zone, ""))
            return Reply.dropped()
        ALLOWED.inc((_server(request), ""))
        return next(request)

    def filter_early(self, request: Request, wire: bytes) -> bytes | None:
        """A cache hit for an allowed client as it is; None (the whole way, :meth:`serve`)
        for one this step refuses, filters or drops."""
        action, _ = self._decide(request)
        if action == BLOCK or action == FILTER or action == DROP:
            return None
        ALLOWED.inc((_server(request), ""))
        return wire


def _answer(request: Request, rcode: int, info: int) -> Reply:
    """REFUSED or empty NOERROR, not authoritative, with the EDE OPT record."""
    twin = request.copy()
    twin.opt = ede_opt(request, info)
    reply = Reply.encoded(render(twin, rcode))
    reply.plugin = "acl"
    return reply
