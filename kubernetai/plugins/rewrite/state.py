"""The question being rewritten, as the rules see it while they run.

The client's :class:`~kubernetai.core.request.Request` is never changed: the rules work
on this state (the name as presentation text, as CoreDNS's rules see it; type, class,
EDNS0 options), and only if one of them changed something does the handler give the
steps after it a copy of the request carrying the result (:meth:`State.apply`).
"""

from __future__ import annotations

import struct
from typing import Any

from kubernetai.core.request import Request
from kubernetai.pkg.dnsname import presentation
from kubernetai.plugins.rewrite.edns0wire import encode_options, parse_options
from kubernetai.plugins.rewrite.names import dotted, labels_of

__all__ = ["State", "STOP", "CONTINUE", "DEFAULT_UDP_SIZE"]

STOP, CONTINUE = "stop", "continue"

#: The UDP size of the OPT record an edns0 rule adds to a query that had none
#: (miekg's ``SetEdns0(4096, false)`` in CoreDNS's ``setupEdns0Opt``).
DEFAULT_UDP_SIZE = 4096

_TYPE_CLASS = struct.Struct("!HH")


class State:
    """The question as rewritten so far."""

    __slots__ = ("request", "name", "qtype", "qclass", "options", "renamed", "_lname")

    def __init__(self, request: Request) -> None:
        self.request = request
        #: the question name, presentation form with trailing dot, case as it is now
        #: (CoreDNS's ``state.QName()``)
        self.name = presentation(request.labels)
        self.qtype = request.qtype
        self.qclass = request.qclass
        #: the EDNS0 options as ``[code, data]`` pairs once an edns0 rule looked at them
        self.options: list[list[Any]] | None = None
        self.renamed = False
        self._lname: str | None = None

    def lname(self) -> str:
        """The name lower-cased (CoreDNS's ``state.Name()``): what rules match."""
        if self._lname is None:
            self._lname = self.name.lower()
        return self._lname

    def rename(self, name: str) -> None:
        self.name = name
        self.renamed = True
        self._lname = None

    def edns_options(self) -> list[list[Any]]:
        """The options, an OPT record being added if the query had none."""
        if self.options is None:
            self.options = parse_options(self.request.options)
        return self.options

    def changed(self) -> bool:
        request = self.request
        return (self.renamed or self.qtype != request.qtype or self.qclass != request.qclass
                or self.options is not None)

    def apply(self, labels: list[bytes] | None) -> Request:
        """A copy of the request with the rewritten question (``labels``: the new name's,
        when it was renamed)."""
        request = self.request
        sub = request.copy()
        if labels is not None:
            qname = dotted(labels)
            sub.labels = labels
            sub.qname = qname
            sub.lname = qname.lower()
        sub.qtype = self.qtype
        sub.qclass = self.qclass
        # The copy's own question (the rewritten name, type and class): the answer cache
        # after this step keeps and serves it as any other question, and the reply,
        # written for it, is read back for the client's question (`rewrite_reply`).
        wire = b"".join([bytes((len(label),)) + label for label in sub.labels]) + b"\0"
        sub.question = wire + _TYPE_CLASS.pack(self.qtype, self.qclass)
        sub.simple = (request.simple and len(wire) <= 255 and b"\0" not in sub.qname
                      and all(0 < len(label) < 64 for label in sub.labels))
        if self.options is not None:
            sub.options = encode_options(self.options)
            if not request.edns:
                sub.edns = True
                sub.bufsize = DEFAULT_UDP_SIZE
        return sub

    def labels(self) -> list[bytes] | None:
        """The new name's labels; None if it is not a domain name."""
        return labels_of(self.name)
